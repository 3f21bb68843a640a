//! Dequantization: the scalar reference for every weight type.
//!
//! Every function here reproduces `gguf.quants.dequantize` from the Python `gguf` package bit for bit: the
//! same f32 operations in the same order (e.g. a K-quant weight is `(d * scale) * q - (dmin * min)`, each
//! product rounded to f32 on its own, never fused). The fixtures in `tests/fixtures/quants/` (made by
//! `scripts/make_quant_fixtures.py`) pin that down; fast kernels in `backend::cpu` are checked against these
//! functions within a tolerance instead.

mod kquants;
mod legacy;
pub mod quantize;

use super::DType;

#[cfg_attr(
    not(any(target_arch = "x86_64", target_arch = "aarch64")),
    allow(unused_imports)
)]
pub(crate) use kquants::{k4_scale_min, q3_k_scales};

/// Converts IEEE half-precision bits to f32 exactly, keeping NaN payloads as numpy does (no quieting), so
/// that dequantized values match the `gguf` package bit for bit even for NaN inputs. Block types use it for
/// their f16 scales.
#[inline]
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h & 0x8000) as u32) << 16;
    let exp = ((h >> 10) & 0x1f) as u32;
    let man = (h & 0x3ff) as u32;
    match exp {
        // Zero or subnormal: man * 2^-24 is exact in f32.
        0 => f32::from_bits(sign | (man as f32 * (1.0 / 16_777_216.0)).to_bits()),
        0x1f => f32::from_bits(sign | 0x7f80_0000 | (man << 13)),
        _ => f32::from_bits(sign | ((exp + 112) << 23) | (man << 13)),
    }
}

/// Reads the little-endian f16 at `b[off..off + 2]` as f32.
#[inline]
pub(crate) fn f16_at(b: &[u8], off: usize) -> f32 {
    f16_to_f32(u16::from_le_bytes([b[off], b[off + 1]]))
}

/// Dequantizes one row (whole blocks) of `dtype` from `src` into `dst` (`dst.len()` elements).
///
/// This is the bit-exact reference that loaders and tests rely on. `src` must hold at least
/// `dtype.bytes_for(dst.len())` bytes and `dst.len()` must be a multiple of the block size.
pub fn dequantize_row(dtype: DType, src: &[u8], dst: &mut [f32]) {
    let (be, bb) = (dtype.block_elems(), dtype.block_bytes());
    assert!(
        dst.len().is_multiple_of(be),
        "{dtype} row of {} elements is not whole blocks of {be}",
        dst.len()
    );
    let n_blocks = dst.len() / be;
    assert!(
        src.len() >= n_blocks * bb,
        "{dtype} row needs {} bytes, got {}",
        n_blocks * bb,
        src.len()
    );
    match dtype {
        DType::F32 => {
            for (d, s) in dst.iter_mut().zip(src.chunks_exact(4)) {
                *d = f32::from_le_bytes([s[0], s[1], s[2], s[3]]);
            }
        }
        DType::F16 => {
            for (d, s) in dst.iter_mut().zip(src.chunks_exact(2)) {
                *d = f16_to_f32(u16::from_le_bytes([s[0], s[1]]));
            }
        }
        DType::BF16 => {
            // bf16 is the top half of an f32: a shift, exact for every input (NaN payloads kept).
            for (d, s) in dst.iter_mut().zip(src.chunks_exact(2)) {
                *d = f32::from_bits((u16::from_le_bytes([s[0], s[1]]) as u32) << 16);
            }
        }
        DType::Mlx(m) => {
            for (blk, out) in src.chunks_exact(bb).zip(dst.chunks_exact_mut(be)) {
                m.dequantize_block(blk, out);
            }
        }
        _ => {
            let block_fn: fn(&[u8], &mut [f32]) = match dtype {
                DType::Q4_0 => legacy::q4_0,
                DType::Q4_1 => legacy::q4_1,
                DType::Q5_0 => legacy::q5_0,
                DType::Q5_1 => legacy::q5_1,
                DType::Q8_0 => legacy::q8_0,
                DType::Q2_K => kquants::q2_k,
                DType::Q3_K => kquants::q3_k,
                DType::Q4_K => kquants::q4_k,
                DType::Q5_K => kquants::q5_k,
                DType::Q6_K => kquants::q6_k,
                DType::F32 | DType::F16 | DType::BF16 | DType::Mlx(_) => unreachable!(),
            };
            for (blk, out) in src.chunks_exact(bb).zip(dst.chunks_exact_mut(be)) {
                block_fn(blk, out);
            }
        }
    }
}
