//! AVX-512 integer dot products against 8-bit quantized activations, bit-identical to the scalar reference
//! in `backend/cpu/qdot/` (whose module docs give the layout and the accumulation order) and so to the AVX2
//! kernels.
//!
//! Each kernel exists twice, from one macro: in `vnni` (compiled with AVX512-VNNI: `vpdpbusd` multiplies
//! unsigned codes by signed activations and sums four products into i32 in one instruction, `vpdpwssd` fuses
//! the K-quants' scale multiply-add) and in `bw` (AVX-512BW `vpmaddubsw` + `vpmaddwd`, for CPUs without
//! VNNI). As at the AVX2 level, every kernel takes one weight row and `N` tokens, decodes the weight codes
//! once per block (or group of blocks) and runs every token against them with the single-token operations.
//! `blocks32.rs` holds the 32-weight block types, `kquants.rs` the K-quants.

#[macro_use]
mod mlx;
mod blocks32;
mod kquants;

use std::arch::x86_64::*;

use super::Avx512;
use crate::backend::cpu::qdot::{by_token_groups, q8_scale, Q8KRow, Q8Row, QK8, QK_K};
use crate::tensor::DType;

/// Tokens per kernel call in a multi-token product: each weight block is decoded once per this many tokens.
/// examples/qdot_bench.rs measured 8 fastest per token for every type (over 2 and 4; noisy, one core).
const TOKEN_GROUP: usize = 8;

impl Avx512 {
    /// `out[r * xq.len() + t] = qdot(Mlx(m), row r, &xq[t])` for a run of rows of `row_bytes` bytes (4- and
    /// 8-bit affine; the caller checked the rows and tokens, as for `qdot_multi_rows`).
    pub(in crate::backend::cpu) fn qdot_mlx_rows(
        self,
        m: crate::tensor::mlx_blocks::MlxBlocks,
        bytes: &[u8],
        row_bytes: usize,
        xq: &[Q8Row],
        out: &mut [f32],
    ) {
        debug_assert!(matches!(m.quant.bits(), 4 | 8) && !xq.is_empty());
        debug_assert!(bytes.len() >= row_bytes * (out.len() / xq.len()));
        // SAFETY: the token proves the features (VNNI only where `vnni` says so); the caller checked the rows
        // and the tokens.
        unsafe {
            if self.vnni {
                blocks32::vnni::qdot_mlx_rows(m, bytes, row_bytes, xq, out)
            } else {
                blocks32::bw::qdot_mlx_rows(m, bytes, row_bytes, xq, out)
            }
        }
    }

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
        macro_rules! run {
            () => {
                match dtype {
                    DType::Q8_0 => by_token_groups!(TOKEN_GROUP, qdot_q8_0, row, xq, out),
                    DType::Q4_0 => by_token_groups!(TOKEN_GROUP, qdot_q4_0, row, xq, out),
                    DType::Q4_1 => by_token_groups!(TOKEN_GROUP, qdot_q4_1, row, xq, out),
                    DType::Q5_0 => by_token_groups!(TOKEN_GROUP, qdot_q5_0, row, xq, out),
                    DType::Q5_1 => by_token_groups!(TOKEN_GROUP, qdot_q5_1, row, xq, out),
                    _ => unreachable!("qdot: unsupported {dtype}"),
                }
            };
        }
        if let DType::Mlx(m) = dtype {
            if !matches!(m.quant.bits(), 4 | 8) {
                for (o, q) in out.iter_mut().zip(xq) {
                    *o = crate::backend::cpu::qdot::qdot_mlx(m, row, q);
                }
                return;
            }
            let rb = dtype.bytes_for(xq[0].len()).expect("checked by the caller");
            self.qdot_mlx_rows(m, &row[..rb], rb, xq, out);
            return;
        }
        // SAFETY: the token proves the features (VNNI only where `vnni` says so); the caller checked that
        // `row` holds the blocks of every token.
        unsafe {
            if self.vnni {
                use blocks32::vnni::*;
                run!()
            } else {
                use blocks32::bw::*;
                run!()
            }
        }
    }

    /// `out[t] = qdot_k(dtype, row, &xq[t])`, with the caller's checks as in [`Avx512::qdot_multi`].
    pub(in crate::backend::cpu) fn qdot_k_multi(
        self,
        dtype: DType,
        row: &[u8],
        xq: &[Q8KRow],
        out: &mut [f32],
    ) {
        debug_assert!(xq.len() == out.len() && !xq.is_empty());
        debug_assert!(row.len() >= dtype.bytes_for(xq[0].len()).unwrap_or(usize::MAX));
        macro_rules! run {
            () => {
                match dtype {
                    DType::Q2_K => by_token_groups!(TOKEN_GROUP, qdot_q2_k, row, xq, out),
                    DType::Q3_K => by_token_groups!(TOKEN_GROUP, qdot_q3_k, row, xq, out),
                    DType::Q4_K => by_token_groups!(TOKEN_GROUP, qdot_q4_k, row, xq, out),
                    DType::Q5_K => by_token_groups!(TOKEN_GROUP, qdot_q5_k, row, xq, out),
                    DType::Q6_K => by_token_groups!(TOKEN_GROUP, qdot_q6_k, row, xq, out),
                    _ => unreachable!("qdot_k: unsupported {dtype}"),
                }
            };
        }
        // SAFETY: as in `qdot_multi`.
        unsafe {
            if self.vnni {
                use kquants::vnni::*;
                run!()
            } else {
                use kquants::bw::*;
                run!()
            }
        }
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

    /// `quantize_q8k(x, out)` with `out` already sized for `x` (a multiple of 256 values).
    pub(in crate::backend::cpu) fn quantize_q8k(self, x: &[f32], out: &mut Q8KRow) {
        assert!(
            out.qs.len() == x.len()
                && out.d.len() * QK_K == x.len()
                && out.bsums.len() == 16 * out.d.len()
        );
        // SAFETY: the token proves the features; the sizes were checked above.
        unsafe { quantize_q8k(x, out) }
    }
}

/// `round_ties_even(v * id)` in sixteen i32 lanes (the reference's f32 product, then exact rounding).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")]
unsafe fn round16(v: __m512, id: __m512) -> __m512i {
    _mm512_cvt_roundps_epi32::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm512_mul_ps(
        v, id,
    ))
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")]
unsafe fn quantize_q8(x: &[f32], out: &mut Q8Row) {
    for b in 0..out.d.len() {
        let p = x.as_ptr().add(b * QK8);
        let v = [0, 16].map(|o| _mm512_loadu_ps(p.add(o)));
        let amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v[0]), _mm512_abs_ps(v[1])));
        let (d, id) = q8_scale(amax);
        let idv = _mm512_set1_ps(id);
        let q = v.map(|v| round16(v, idv));
        let qp = out.qs.as_mut_ptr().add(b * QK8);
        // Values in -127..=127: the truncating narrow is exact.
        _mm_storeu_si128(qp as *mut __m128i, _mm512_cvtepi32_epi8(q[0]));
        _mm_storeu_si128(qp.add(16) as *mut __m128i, _mm512_cvtepi32_epi8(q[1]));
        out.d[b] = d;
        out.sums[b] = _mm512_reduce_add_epi32(_mm512_add_epi32(q[0], q[1]));
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")]
unsafe fn quantize_q8k(x: &[f32], out: &mut Q8KRow) {
    for b in 0..out.d.len() {
        let p = x.as_ptr().add(b * QK_K);
        let v: [__m512; 16] = std::array::from_fn(|s| _mm512_loadu_ps(p.add(16 * s)));
        let mut m = _mm512_abs_ps(v[0]);
        for vs in &v[1..] {
            m = _mm512_max_ps(m, _mm512_abs_ps(*vs));
        }
        let (d, id) = q8_scale(_mm512_reduce_max_ps(m));
        let idv = _mm512_set1_ps(id);
        let qp = out.qs.as_mut_ptr().add(b * QK_K);
        for (s, vs) in v.into_iter().enumerate() {
            let q = round16(vs, idv);
            _mm_storeu_si128(qp.add(16 * s) as *mut __m128i, _mm512_cvtepi32_epi8(q));
            out.bsums[16 * b + s] = _mm512_reduce_add_epi32(q);
        }
        out.d[b] = d;
    }
}

/// The sum of a vector's eight lanes as `((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7))`, the
/// reference's lane reduction.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")]
unsafe fn hsum8(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    _mm_cvtss_f32(s)
}

/// The f16 at `p` (unaligned) as f32, through F16C (exact for every finite value).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")]
unsafe fn h2f(p: *const u8) -> f32 {
    let bits = (p as *const u16).read_unaligned();
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
}
