//! AVX2 kernels for 4- and 8-bit MLX affine weights against [`Q8Row`] tokens, bit-identical to
//! `qdot::qdot_mlx` (the scalar reference; other widths run it directly).
//!
//! As in `blocks32.rs`: eight 32-weight sub-blocks at a time, their codes decoded once into 32 bytes each,
//! then per token eight i32 partial-sum vectors reduced to one lane per sub-block and the f32 terms computed
//! lane-wise (sub-block `b` in lane `b % 8`). A sub-block takes its group's scale and bias.
//! - 4 bits: MLX packs code `i` at bits `4i` (byte `k` holds codes `2k` (low) and `2k+1` (high)), so the
//!   two nibble vectors are interleaved back into order; `maddubs` of codes (< 16) and activations is exact.
//! - 8 bits: codes reach 255, and a `maddubs` pair could saturate, so codes are shifted to `c - 128` (a sign
//!   flip of the top bit) and multiplied with the sign trick; `isum = sum((c - 128) * qx) + 128 * sums[b]`.

use std::arch::x86_64::*;

use super::blocks32::reduce8;
use super::TOKEN_GROUP;
use crate::backend::cpu::avx2::hsum;
use crate::backend::cpu::qdot::{by_token_groups, qdot_mlx, Q8Row, QK8};
use crate::tensor::mlx::MlxFloat;
use crate::tensor::mlx_blocks::MlxBlocks;

/// 32 sequential 4-bit codes (16 bytes at `p`, low nibble first) as 32 bytes in order.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn codes4(p: *const u8) -> __m256i {
    let q = _mm_loadu_si128(p as *const __m128i);
    let m4 = _mm_set1_epi8(0x0f);
    let lo = _mm_and_si128(q, m4);
    let hi = _mm_and_si128(_mm_srli_epi16(q, 4), m4);
    _mm256_set_m128i(_mm_unpackhi_epi8(lo, hi), _mm_unpacklo_epi8(lo, hi))
}

/// 64 sequential 4-bit codes (32 bytes at `p`) as two vectors of 32 bytes in order.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn codes4_pair(p: *const u8) -> (__m256i, __m256i) {
    let q = _mm256_loadu_si256(p as *const __m256i);
    let m4 = _mm256_set1_epi8(0x0f);
    let lo = _mm256_and_si256(q, m4);
    let hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
    // Per 128-bit lane: codes 0..16 | 32..48, then 16..32 | 48..64.
    let a = _mm256_unpacklo_epi8(lo, hi);
    let c = _mm256_unpackhi_epi8(lo, hi);
    (
        _mm256_permute2x128_si256(a, c, 0x20),
        _mm256_permute2x128_si256(a, c, 0x31),
    )
}

/// The scales and biases of eight sub-blocks as two vectors, from the `u32` (bf16/f16 pair) or the two
/// `f32`s at the start of each sub-block's group block `p[j]`. Built in registers: writing eight scalars to
/// memory and loading them as one vector stalls on store forwarding (measured: a third of the kernel's time).
#[inline(always)]
unsafe fn scales_biases(float: MlxFloat, p: [*const u8; 8]) -> (__m256, __m256) {
    let h = |j: usize| (p[j] as *const i32).read_unaligned();
    match float {
        MlxFloat::BF16 | MlxFloat::F16 => split_halves(
            float,
            _mm256_setr_epi32(h(0), h(1), h(2), h(3), h(4), h(5), h(6), h(7)),
        ),
        MlxFloat::F32 => {
            let s = |j: usize| (p[j] as *const f32).read_unaligned();
            let b = |j: usize| (p[j].add(4) as *const f32).read_unaligned();
            (
                _mm256_setr_ps(s(0), s(1), s(2), s(3), s(4), s(5), s(6), s(7)),
                _mm256_setr_ps(b(0), b(1), b(2), b(3), b(4), b(5), b(6), b(7)),
            )
        }
    }
}

/// Eight 16-bit (scale, bias) pairs, one per 32-bit lane, as a vector of scales and one of biases.
#[inline(always)]
unsafe fn split_halves(float: MlxFloat, v: __m256i) -> (__m256, __m256) {
    match float {
        MlxFloat::BF16 => (
            _mm256_castsi256_ps(_mm256_slli_epi32(v, 16)),
            _mm256_castsi256_ps(_mm256_and_si256(v, _mm256_set1_epi32(-65536))),
        ),
        _ => {
            // Per 128-bit lane: the four scales' halves to the low 8 bytes, the biases' to the high 8.
            let split = _mm256_shuffle_epi8(
                v,
                _mm256_setr_epi8(
                    0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15, //
                    0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15,
                ),
            );
            let v = _mm256_permute4x64_epi64(split, 0b11_01_10_00);
            (
                _mm256_cvtph_ps(_mm256_castsi256_si128(v)),
                _mm256_cvtph_ps(_mm256_extracti128_si256(v, 1)),
            )
        }
    }
}

/// `out[t]` for `N` tokens; `BITS` is 4 or 8. The caller checked `row` and the tokens.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn qdot_mlx_n<const BITS: usize, const N: usize>(
    m: MlxBlocks,
    row: &[u8],
    xs: &[Q8Row],
    out: &mut [f32],
) {
    debug_assert!(xs.len() == N && out.len() == N);
    let nb = xs[0].d.len();
    // Sub-blocks per group: 1, 2 or 4 (shifts, not divisions, in the loop).
    let shift = (m.block_elems() / QK8).trailing_zeros();
    let low = (1usize << shift) - 1;
    let (hb, bb) = (m.header_bytes(), m.block_bytes());
    let sub = QK8 * BITS / 8;
    let rp = row.as_ptr();
    let xq: [*const i8; N] = std::array::from_fn(|t| xs[t].qs.as_ptr());
    let dxp: [*const f32; N] = std::array::from_fn(|t| xs[t].d.as_ptr());
    let sxp: [*const i32; N] = std::array::from_fn(|t| xs[t].sums.as_ptr());
    let ones = _mm256_set1_epi16(1);
    let flip = _mm256_set1_epi8(-128);
    let mut acc = [_mm256_setzero_ps(); N];
    // One group of `n` (1..=8) sub-blocks from `b0`, for every token (a macro, not a closure: a closure
    // would not inherit this function's target features, and its intrinsics would become calls).
    macro_rules! group {
        ($b0:expr, $n:expr) => {{
        let (b0, n): (usize, usize) = ($b0, $n);
        let mut codes = [_mm256_setzero_si256(); 8];
        // A missing sub-block (n < 8) reads the first one's header; its activations are zero-padded
        // below, so its term is (+0.0) and leaves its lane unchanged.
        let (dw, mw) = if m.float != MlxFloat::F32 && shift >= 1 {
            // 2 or 4 distinct groups: load their headers once, then spread them over the sub-blocks.
            let per = 1usize << shift;
            let g0 = b0 >> shift;
            let valid = n.div_ceil(per);
            let h = |k: usize| {
                let k = if k < valid { k } else { 0 };
                (rp.add((g0 + k) * bb) as *const i32).read_unaligned()
            };
            let v = _mm_setr_epi32(h(0), h(1), h(2), h(3));
            let idx = if shift == 1 {
                _mm256_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3)
            } else {
                _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1)
            };
            split_halves(m.float, _mm256_permutevar8x32_epi32(_mm256_castsi128_si256(v), idx))
        } else {
            let hdr: [*const u8; 8] =
                std::array::from_fn(|j| rp.add(((b0 + if j < n { j } else { 0 }) >> shift) * bb));
            scales_biases(m.float, hdr)
        };
        let at = |b: usize| rp.add((b >> shift) * bb + hb + (b & low) * sub);
        if BITS == 4 && shift >= 1 {
            // Groups of 64 or 128: sub-blocks 2i and 2i+1 share a group and 32 contiguous code bytes,
            // decoded together.
            let mut j = 0;
            while j < n {
                if j + 1 < n {
                    (codes[j], codes[j + 1]) = codes4_pair(at(b0 + j));
                } else {
                    codes[j] = codes4(at(b0 + j));
                }
                j += 2;
            }
        } else {
            for (j, c) in codes.iter_mut().enumerate().take(n) {
                let p = at(b0 + j);
                *c = if BITS == 4 {
                    codes4(p)
                } else {
                    _mm256_xor_si256(_mm256_loadu_si256(p as *const __m256i), flip)
                };
            }
        }
        for t in 0..N {
            let xp = xq[t].add(b0 * QK8);
            let mut v = [_mm256_setzero_si256(); 8];
            for j in 0..n {
                let x = _mm256_loadu_si256(xp.add(j * QK8) as *const __m256i);
                let c = codes[j];
                v[j] = if BITS == 4 {
                    _mm256_madd_epi16(_mm256_maddubs_epi16(c, x), ones)
                } else {
                    // |c - 128| as unsigned bytes times x with the sign of (c - 128): pairs stay below
                    // 2 * 128 * 127.
                    _mm256_madd_epi16(
                        _mm256_maddubs_epi16(_mm256_abs_epi8(c), _mm256_sign_epi8(x, c)),
                        ones,
                    )
                };
            }
            let (dx, sx) = if n == 8 {
                (
                    _mm256_loadu_ps(dxp[t].add(b0)),
                    _mm256_loadu_si256(sxp[t].add(b0) as *const __m256i),
                )
            } else {
                let (mut d, mut s) = ([0f32; 8], [0i32; 8]);
                std::ptr::copy_nonoverlapping(dxp[t].add(b0), d.as_mut_ptr(), n);
                std::ptr::copy_nonoverlapping(sxp[t].add(b0), s.as_mut_ptr(), n);
                (
                    _mm256_loadu_ps(d.as_ptr()),
                    _mm256_loadu_si256(s.as_ptr() as *const __m256i),
                )
            };
            let mut isum = reduce8(&v);
            if BITS == 8 {
                isum = _mm256_add_epi32(isum, _mm256_slli_epi32(sx, 7));
            }
            let term = _mm256_add_ps(
                _mm256_mul_ps(_mm256_mul_ps(dw, dx), _mm256_cvtepi32_ps(isum)),
                _mm256_mul_ps(_mm256_mul_ps(mw, dx), _mm256_cvtepi32_ps(sx)),
            );
            acc[t] = _mm256_add_ps(acc[t], term);
        }
    }};
    }
    let full = nb / 8 * 8;
    for b0 in (0..full).step_by(8) {
        group!(b0, 8);
    }
    if full < nb {
        group!(full, nb - full);
    }
    for (o, a) in out.iter_mut().zip(acc) {
        *o = hsum(a);
    }
}

/// `out[r * xq.len() + t] = qdot_mlx(m, row r, &xq[t])` for the `out.len() / xq.len()` rows of `row_bytes`
/// bytes at the start of `bytes`: tokens [`TOKEN_GROUP`] at a time (then 4, 2, 1), each weight sub-block decoded once
/// per group of tokens. One call per run of rows: the per-call setup, paid per row, was a third of a short
/// row's time (SmolLM2 decode went from 0.6x to 1.0x of Q4_0 at the AVX-512 level when this moved there).
///
/// # Safety
/// The CPU has AVX2, FMA and F16C; `m` is affine; `bytes` holds the rows and each row the blocks of every
/// token (checked by the caller).
#[target_feature(enable = "avx2,fma,f16c")]
pub(in crate::backend::cpu) unsafe fn qdot_mlx_rows(
    m: MlxBlocks,
    bytes: &[u8],
    row_bytes: usize,
    xq: &[Q8Row],
    out: &mut [f32],
) {
    let bits = m.quant.bits();
    let nt = xq.len();
    for (row, out) in bytes.chunks_exact(row_bytes).zip(out.chunks_exact_mut(nt)) {
        match bits {
            4 => by_token_groups!(TOKEN_GROUP, qdot_mlx_n::<4>(m, row), xq, out),
            8 => by_token_groups!(TOKEN_GROUP, qdot_mlx_n::<8>(m, row), xq, out),
            _ => {
                for (o, q) in out.iter_mut().zip(xq) {
                    *o = qdot_mlx(m, row, q);
                }
            }
        }
    }
}
