//! AVX2 dequantization of 4- and 8-bit MLX affine blocks (the f32 path: `--activations f32`, embeddings,
//! multi-token products over decoded rows). Each weight is `scale * q + bias` as a multiply then an add, the
//! scalar reference's operations, so the result is bit-identical; other widths and the fp modes run the
//! scalar reference.

use std::arch::x86_64::*;

use crate::tensor::mlx::{MlxFloat, MlxMode};
use crate::tensor::mlx_blocks::MlxBlocks;

/// Dequantizes `out.len()` weights (whole blocks of `m`) from `row`.
///
/// # Safety
/// The CPU has AVX2, FMA and F16C; `row` holds the blocks (checked by the caller).
#[target_feature(enable = "avx2,fma,f16c")]
pub(in crate::backend::cpu) unsafe fn deq_mlx(m: MlxBlocks, row: &[u8], out: &mut [f32]) {
    let bits = m.quant.bits();
    if m.quant.mode() != MlxMode::Affine || (bits != 4 && bits != 8) {
        return crate::tensor::quants::dequantize_row(crate::tensor::DType::Mlx(m), row, out);
    }
    let (gs, hb, bb) = (m.block_elems(), m.header_bytes(), m.block_bytes());
    let m4 = _mm_set1_epi8(0x0f);
    for (g, o) in out.chunks_exact_mut(gs).enumerate() {
        let blk = row.as_ptr().add(g * bb);
        let (s, b) = match m.float {
            MlxFloat::BF16 => {
                let v = (blk as *const u32).read_unaligned();
                (f32::from_bits(v << 16), f32::from_bits(v & 0xffff_0000))
            }
            _ => m.scale_bias(std::slice::from_raw_parts(blk, hb)),
        };
        let (sv, bv) = (_mm256_set1_ps(s), _mm256_set1_ps(b));
        let codes = blk.add(hb);
        let op = o.as_mut_ptr();
        // 16 codes at a time as bytes in order, then two runs of 8 floats.
        for k in 0..gs / 16 {
            let q = if bits == 4 {
                let raw = _mm_loadl_epi64(codes.add(8 * k) as *const __m128i);
                let lo = _mm_and_si128(raw, m4);
                let hi = _mm_and_si128(_mm_srli_epi16(raw, 4), m4);
                _mm_unpacklo_epi8(lo, hi)
            } else {
                _mm_loadu_si128(codes.add(16 * k) as *const __m128i)
            };
            for (h, part) in [q, _mm_srli_si128(q, 8)].into_iter().enumerate() {
                let f = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(part));
                let w = _mm256_add_ps(_mm256_mul_ps(sv, f), bv);
                _mm256_storeu_ps(op.add(16 * k + 8 * h), w);
            }
        }
    }
}
