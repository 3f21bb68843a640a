//! AVX2 integer dot products against 8-bit quantized activations, bit-identical to the scalar reference in
//! `backend/cpu/qdot/` (whose module docs give the layout and the accumulation order).
//!
//! Every kernel takes one weight row and a group of `N` tokens (a const generic: 1 for decode, up to
//! [`TOKEN_GROUP`] for prefill). It decodes a stretch of weight codes once into registers (spilled to L1 when
//! they do not fit), then runs each token's integer dot products and f32 terms against them; per token the
//! operations are those of the single-token case, so the group size never changes a result.
//! `blocks32.rs` holds the 32-weight block types, `kquants.rs` the K-quants.

mod blocks32;
mod kquants;
mod mlx;

use mlx::qdot_mlx_rows;

use std::arch::x86_64::*;

use super::Avx2;
use crate::backend::cpu::qdot::{by_token_groups, q8_scale, Q8KRow, Q8Row, QK8};
use crate::tensor::DType;

/// Tokens per kernel call in a multi-token product: each weight block is decoded once per this many tokens.
/// examples/qdot_bench.rs measured 8 fastest per token for every type (over 2 and 4; noisy, one core).
const TOKEN_GROUP: usize = 8;

impl Avx2 {
    /// `out[t] = qdot(dtype, row, &xq[t])`; the caller has checked `dtype` is supported, the tokens agree
    /// in length, `out` has one slot per token and `row` holds the blocks.
    pub(in crate::backend::cpu) fn qdot_multi(
        self,
        dtype: DType,
        row: &[u8],
        xq: &[Q8Row],
        out: &mut [f32],
    ) {
        debug_assert!(xq.len() == out.len() && !xq.is_empty());
        debug_assert!(row.len() >= dtype.bytes_for(xq[0].len()).unwrap_or(usize::MAX));
        use blocks32::*;
        // SAFETY: the token proves the features; the caller checked `row` holds the blocks of every token.
        unsafe {
            match dtype {
                DType::Q8_0 => by_token_groups!(TOKEN_GROUP, qdot_q8_0, row, xq, out),
                DType::Q4_0 => by_token_groups!(TOKEN_GROUP, qdot_q4_0, row, xq, out),
                DType::Q4_1 => by_token_groups!(TOKEN_GROUP, qdot_q4_1, row, xq, out),
                DType::Q5_0 => by_token_groups!(TOKEN_GROUP, qdot_q5_0, row, xq, out),
                DType::Q5_1 => by_token_groups!(TOKEN_GROUP, qdot_q5_1, row, xq, out),
                DType::Mlx(m) => {
                    let rb = dtype.bytes_for(xq[0].len()).expect("checked by the caller");
                    qdot_mlx_rows(m, &row[..rb], rb, xq, out)
                }
                _ => unreachable!("qdot: unsupported {dtype}"),
            }
        }
    }

    /// `out[t] = qdot_k(dtype, row, &xq[t])`, with the caller's checks as in [`Avx2::qdot_multi`].
    pub(in crate::backend::cpu) fn qdot_k_multi(
        self,
        dtype: DType,
        row: &[u8],
        xq: &[Q8KRow],
        out: &mut [f32],
    ) {
        debug_assert!(xq.len() == out.len() && !xq.is_empty());
        debug_assert!(row.len() >= dtype.bytes_for(xq[0].len()).unwrap_or(usize::MAX));
        use kquants::*;
        // SAFETY: as in `qdot_multi`.
        unsafe {
            match dtype {
                DType::Q2_K => by_token_groups!(TOKEN_GROUP, qdot_q2_k, row, xq, out),
                DType::Q3_K => by_token_groups!(TOKEN_GROUP, qdot_q3_k, row, xq, out),
                DType::Q4_K => by_token_groups!(TOKEN_GROUP, qdot_q4_k, row, xq, out),
                DType::Q5_K => by_token_groups!(TOKEN_GROUP, qdot_q5_k, row, xq, out),
                DType::Q6_K => by_token_groups!(TOKEN_GROUP, qdot_q6_k, row, xq, out),
                _ => unreachable!("qdot_k: unsupported {dtype}"),
            }
        }
    }

    /// `out[r * xq.len() + t] = qdot(Mlx(m), row r, &xq[t])` for a run of rows of `row_bytes` bytes (the
    /// caller checked the rows and tokens, as for `qdot_multi_rows`).
    pub(in crate::backend::cpu) fn qdot_mlx_rows(
        self,
        m: crate::tensor::mlx_blocks::MlxBlocks,
        bytes: &[u8],
        row_bytes: usize,
        xq: &[Q8Row],
        out: &mut [f32],
    ) {
        debug_assert!(!xq.is_empty() && bytes.len() >= row_bytes * (out.len() / xq.len()));
        // SAFETY: the token proves the features; the caller checked the rows and the tokens.
        unsafe { qdot_mlx_rows(m, bytes, row_bytes, xq, out) }
    }

    /// `quantize_q8(x, out)` with `out` already sized for `x` (a multiple of 32 values).
    pub(in crate::backend::cpu) fn quantize_q8(self, x: &[f32], out: &mut Q8Row) {
        assert!(
            out.qs.len() == x.len()
                && out.d.len() * QK8 == x.len()
                && out.sums.len() == out.d.len()
        );
        // SAFETY: the token proves the features; the sizes were checked above.
        unsafe { quantize_q8(x, out) }
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn quantize_q8(x: &[f32], out: &mut Q8Row) {
    let sign = _mm256_set1_ps(-0.0);
    let perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for b in 0..out.d.len() {
        let p = x.as_ptr().add(b * QK8);
        let v = [0, 8, 16, 24].map(|o| _mm256_loadu_ps(p.add(o)));
        let a = v.map(|v| _mm256_andnot_ps(sign, v));
        let m = _mm256_max_ps(_mm256_max_ps(a[0], a[1]), _mm256_max_ps(a[2], a[3]));
        let m = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
        let m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
        let (d, id) = q8_scale(_mm_cvtss_f32(m));
        let idv = _mm256_set1_ps(id);
        let q = v.map(|v| {
            _mm256_cvtps_epi32(_mm256_round_ps(
                _mm256_mul_ps(v, idv),
                _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC,
            ))
        });
        let s = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
        let packed = _mm256_packs_epi16(
            _mm256_packs_epi32(q[0], q[1]),
            _mm256_packs_epi32(q[2], q[3]),
        );
        let packed = _mm256_permutevar8x32_epi32(packed, perm);
        _mm256_storeu_si256(out.qs.as_mut_ptr().add(b * QK8) as *mut __m256i, packed);
        out.d[b] = d;
        out.sums[b] = hsum_i32(s);
    }
}

/// The sum of eight i32 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn hsum_i32(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    let s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 1));
    _mm_cvtsi128_si32(s)
}
