//! AVX2 integer dot products against 8-bit quantized activations, bit-identical to the scalar reference in
//! `backend/cpu/qdot.rs` (whose module docs give the layout and the accumulation order).
//!
//! A block's 32 weight codes become 32 bytes; `_mm256_maddubs_epi16` (unsigned weights times signed
//! activations, pairs summed in i16 without saturation for these ranges) and `_mm256_madd_epi16` with ones
//! give eight i32 partial sums. Eight blocks at a time, the partial sums are reduced (exactly, in integers)
//! to one i32 per block, one lane per block, and the f32 terms are computed lane-wise with the scalar
//! reference's operations: block `b` lands in lane `b % 8`, as in the reference. Blocks past the last whole
//! group of eight run as a partial group (types without a min) or one at a time (Q4_1, Q5_1: faster there).
//! The K-quant kernels reduce each 256-block to exact i32 sums and share the reference's f32 term code.

use std::arch::x86_64::*;

use super::{h2f, hsum, Avx2};
use crate::backend::cpu::qdot::{
    q4_k_msum, q4_k_scales, q6_k_offset, q8_scale, reduce_lanes, term, term_min, term_q4_k, Q8KRow,
    Q8Row, QK8, QK_K,
};
use crate::tensor::DType;

impl Avx2 {
    /// `qdot(dtype, row, xq)`; the caller has checked `dtype` is supported and `row` holds the blocks.
    pub(in crate::backend::cpu) fn qdot(self, dtype: DType, row: &[u8], xq: &Q8Row) -> f32 {
        debug_assert!(row.len() >= dtype.bytes_for(xq.len()).unwrap_or(usize::MAX));
        debug_assert!(xq.d.len() * QK8 == xq.qs.len() && xq.sums.len() == xq.d.len());
        // SAFETY: the token proves the features; the caller checked `row` holds the blocks of `xq`.
        unsafe {
            match dtype {
                DType::Q8_0 => qdot_q8_0(row, xq),
                DType::Q4_0 => qdot_q4_0(row, xq),
                DType::Q4_1 => qdot_q4_1(row, xq),
                DType::Q5_0 => qdot_q5_0(row, xq),
                DType::Q5_1 => qdot_q5_1(row, xq),
                _ => unreachable!("qdot: unsupported {dtype}"),
            }
        }
    }

    /// `qdot_k(dtype, row, xq)`; the caller has checked `dtype` is supported and `row` holds the blocks.
    pub(in crate::backend::cpu) fn qdot_k(self, dtype: DType, row: &[u8], xq: &Q8KRow) -> f32 {
        debug_assert!(row.len() >= dtype.bytes_for(xq.len()).unwrap_or(usize::MAX));
        debug_assert!(xq.d.len() * QK_K == xq.qs.len() && xq.bsums.len() == 16 * xq.d.len());
        // SAFETY: as in `qdot`.
        unsafe {
            match dtype {
                DType::Q4_K => qdot_q4_k(row, xq),
                DType::Q5_K => qdot_q5_k(row, xq),
                DType::Q6_K => qdot_q6_k(row, xq),
                _ => unreachable!("qdot_k: unsupported {dtype}"),
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

/// Lane `j` of the result is the sum of the eight lanes of `v[j]` (exact integer sums).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn reduce8(v: &[__m256i; 8]) -> __m256i {
    let h01 = _mm256_hadd_epi32(v[0], v[1]);
    let h23 = _mm256_hadd_epi32(v[2], v[3]);
    let h45 = _mm256_hadd_epi32(v[4], v[5]);
    let h67 = _mm256_hadd_epi32(v[6], v[7]);
    let h0 = _mm256_hadd_epi32(h01, h23);
    let h1 = _mm256_hadd_epi32(h45, h67);
    _mm256_add_epi32(
        _mm256_permute2x128_si256(h0, h1, 0x20),
        _mm256_permute2x128_si256(h0, h1, 0x31),
    )
}

/// Eight i32 partial sums of `u[i] * x[i]` for 32 unsigned bytes `u` (< 128) and 32 activations at `x`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn udot32(u: __m256i, x: *const i8) -> __m256i {
    let xv = _mm256_loadu_si256(x as *const __m256i);
    _mm256_madd_epi16(_mm256_maddubs_epi16(u, xv), _mm256_set1_epi16(1))
}

/// The 32 nibbles of the 16 bytes at `p` in block order (low nibbles: weights 0..16, high: 16..32).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn nibbles(p: *const u8) -> __m256i {
    let q = _mm_loadu_si128(p as *const __m128i);
    let m4 = _mm_set1_epi8(0x0f);
    let lo = _mm_and_si128(q, m4);
    let hi = _mm_and_si128(_mm_srli_epi16(q, 4), m4);
    _mm256_set_m128i(hi, lo)
}

/// The 5-bit codes of a Q5 block: nibbles at `qs` plus bit `i` of the little-endian u32 at `qh` as bit 4.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn codes5(qh: *const u8, qs: *const u8) -> __m256i {
    let h = (qh as *const u32).read_unaligned();
    let spread = _mm256_shuffle_epi8(
        _mm256_set1_epi32(h as i32),
        _mm256_setr_epi8(
            0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, //
            2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3,
        ),
    );
    let bit = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
    let set = _mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit);
    _mm256_or_si256(nibbles(qs), _mm256_and_si256(set, _mm256_set1_epi8(0x10)))
}

/// Defines `$name(row, xq) -> f32` for a 32-weight block type of `$bb` bytes: `$blk` gives a block's eight
/// i32 partial sums of `code * qx` from the block pointer `$p` and activation pointer `$x`; `$off` is the
/// code offset (the exact isum is `sum(code * qx) - $off * sums[b]`); `$min` says whether an f16 min
/// follows the f16 scale.
macro_rules! qdot_kernel {
    ($name:ident, $bb:expr, $off:expr, $min:expr, |$p:ident, $x:ident| $blk:expr) => {
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn $name(row: &[u8], xq: &Q8Row) -> f32 {
            let nb = xq.d.len();
            let rp = row.as_ptr();
            let xp = xq.qs.as_ptr();
            let offv = _mm256_set1_epi32($off);
            let mut acc = _mm256_setzero_ps();
            let groups = nb / 8;
            for g in 0..groups {
                let b0 = g * 8;
                let mut v = [_mm256_setzero_si256(); 8];
                for (j, vj) in v.iter_mut().enumerate() {
                    let $p: *const u8 = rp.add((b0 + j) * $bb);
                    let $x: *const i8 = xp.add((b0 + j) * QK8);
                    *vj = $blk;
                }
                let sx = _mm256_loadu_si256(xq.sums.as_ptr().add(b0) as *const __m256i);
                let mut isum = reduce8(&v);
                if $off != 0 {
                    isum = _mm256_sub_epi32(isum, _mm256_mullo_epi32(sx, offv));
                }
                let f16s = |o: usize| {
                    let h: [i16; 8] = std::array::from_fn(|j| {
                        (rp.add((b0 + j) * $bb + o) as *const i16).read_unaligned()
                    });
                    _mm256_cvtph_ps(_mm_loadu_si128(h.as_ptr() as *const __m128i))
                };
                let dx = _mm256_loadu_ps(xq.d.as_ptr().add(b0));
                let mut t = _mm256_mul_ps(_mm256_mul_ps(f16s(0), dx), _mm256_cvtepi32_ps(isum));
                if $min {
                    let m = _mm256_mul_ps(f16s(2), dx);
                    t = _mm256_add_ps(t, _mm256_mul_ps(m, _mm256_cvtepi32_ps(sx)));
                }
                acc = _mm256_add_ps(acc, t);
            }
            let rem = nb - groups * 8;
            if rem > 0 && !$min {
                // Types without a min (measured faster there; with a min the per-block tail below is
                // faster). A partial group: lanes past `rem` get isum = 0 and zero scales, so their term is +0.0 and
                // adding it leaves the lane unchanged (a lane is never -0.0: it starts at +0.0 and a sum
                // that cancels rounds to +0.0), exactly as the reference, which adds nothing there.
                let b0 = groups * 8;
                let mut v = [_mm256_setzero_si256(); 8];
                let (mut sxa, mut dwa, mut mwa, mut dxa) =
                    ([0i32; 8], [0f32; 8], [0f32; 8], [0f32; 8]);
                for j in 0..rem {
                    let $p: *const u8 = rp.add((b0 + j) * $bb);
                    let $x: *const i8 = xp.add((b0 + j) * QK8);
                    v[j] = $blk;
                    sxa[j] = xq.sums[b0 + j];
                    dxa[j] = xq.d[b0 + j];
                    dwa[j] = h2f($p);
                    if $min {
                        mwa[j] = h2f($p.add(2));
                    }
                }
                let sx = _mm256_loadu_si256(sxa.as_ptr() as *const __m256i);
                let mut isum = reduce8(&v);
                if $off != 0 {
                    isum = _mm256_sub_epi32(isum, _mm256_mullo_epi32(sx, offv));
                }
                let dx = _mm256_loadu_ps(dxa.as_ptr());
                let dw = _mm256_loadu_ps(dwa.as_ptr());
                let mut t = _mm256_mul_ps(_mm256_mul_ps(dw, dx), _mm256_cvtepi32_ps(isum));
                if $min {
                    let m = _mm256_mul_ps(_mm256_loadu_ps(mwa.as_ptr()), dx);
                    t = _mm256_add_ps(t, _mm256_mul_ps(m, _mm256_cvtepi32_ps(sx)));
                }
                acc = _mm256_add_ps(acc, t);
            }
            if groups * 8 == nb || !$min {
                return hsum(acc);
            }
            let mut lanes = [0.0f32; 8];
            _mm256_storeu_ps(lanes.as_mut_ptr(), acc);
            for b in groups * 8..nb {
                let $p: *const u8 = rp.add(b * $bb);
                let $x: *const i8 = xp.add(b * QK8);
                let sx = xq.sums[b];
                let isum = hsum_i32($blk) - $off * sx;
                let dw = h2f($p);
                lanes[b % 8] += if $min {
                    term_min(dw, h2f($p.add(2)), xq.d[b], isum, sx)
                } else {
                    term(dw, xq.d[b], isum)
                };
            }
            reduce_lanes(lanes)
        }
    };
}

qdot_kernel!(qdot_q8_0, 34, 0, false, |p, x| {
    let w = _mm256_loadu_si256(p.add(2) as *const __m256i);
    let xv = _mm256_loadu_si256(x as *const __m256i);
    // |w| as unsigned bytes (128 for -128) times x with w's sign: pairs stay below 2 * 128 * 127.
    _mm256_madd_epi16(
        _mm256_maddubs_epi16(_mm256_abs_epi8(w), _mm256_sign_epi8(xv, w)),
        _mm256_set1_epi16(1),
    )
});
qdot_kernel!(qdot_q4_0, 18, 8, false, |p, x| udot32(nibbles(p.add(2)), x));
qdot_kernel!(qdot_q4_1, 20, 0, true, |p, x| udot32(nibbles(p.add(4)), x));
qdot_kernel!(qdot_q5_0, 22, 16, false, |p, x| udot32(
    codes5(p.add(2), p.add(6)),
    x
));
qdot_kernel!(qdot_q5_1, 24, 0, true, |p, x| udot32(
    codes5(p.add(4), p.add(8)),
    x
));

/// Q4_K: per 32-byte group `j`, low nibbles are sub-block `2j`, high nibbles `2j + 1`; `maddubs` then
/// `madd` by the sub-block's scale gives the scaled i32 partial sums directly (at most 2 * 15 * 127 * 63
/// per lane). The per-block f32 term and lane accumulation are the reference's.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn qdot_q4_k(row: &[u8], xq: &Q8KRow) -> f32 {
    let m4 = _mm256_set1_epi8(0x0f);
    let mut lanes = [0.0f32; 8];
    for b in 0..xq.d.len() {
        let blk = row.as_ptr().add(b * 144);
        let (sc, mins) = q4_k_scales(std::slice::from_raw_parts(blk.add(4), 12));
        let x = xq.qs.as_ptr().add(b * QK_K);
        let mut acc = _mm256_setzero_si256();
        for j in 0..4 {
            let q = _mm256_loadu_si256(blk.add(16 + 32 * j) as *const __m256i);
            let lo = _mm256_and_si256(q, m4);
            let hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
            let x0 = _mm256_loadu_si256(x.add(64 * j) as *const __m256i);
            let x1 = _mm256_loadu_si256(x.add(64 * j + 32) as *const __m256i);
            let p0 = _mm256_madd_epi16(
                _mm256_maddubs_epi16(lo, x0),
                _mm256_set1_epi16(sc[2 * j] as i16),
            );
            let p1 = _mm256_madd_epi16(
                _mm256_maddubs_epi16(hi, x1),
                _mm256_set1_epi16(sc[2 * j + 1] as i16),
            );
            acc = _mm256_add_epi32(acc, _mm256_add_epi32(p0, p1));
        }
        let msum = q4_k_msum(mins, &xq.bsums[b * 16..b * 16 + 16]);
        lanes[b % 8] += term_q4_k(h2f(blk), h2f(blk.add(2)), xq.d[b], hsum_i32(acc), msum);
    }
    reduce_lanes(lanes)
}

/// Q5_K: as Q4_K, with bit 4 of weight `g*32 + i` taken from bit `g` of `qh[i]` (the 32-byte vector H).
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn qdot_q5_k(row: &[u8], xq: &Q8KRow) -> f32 {
    let m4 = _mm256_set1_epi8(0x0f);
    let one = _mm256_set1_epi8(1);
    let mut lanes = [0.0f32; 8];
    for b in 0..xq.d.len() {
        let blk = row.as_ptr().add(b * 176);
        let (sc, mins) = q4_k_scales(std::slice::from_raw_parts(blk.add(4), 12));
        let h = _mm256_loadu_si256(blk.add(16) as *const __m256i);
        let x = xq.qs.as_ptr().add(b * QK_K);
        let mut acc = _mm256_setzero_si256();
        for j in 0..4 {
            let q = _mm256_loadu_si256(blk.add(48 + 32 * j) as *const __m256i);
            let bit = |g: usize| {
                let v = _mm256_srl_epi16(h, _mm_cvtsi32_si128(g as i32));
                _mm256_slli_epi16(_mm256_and_si256(v, one), 4)
            };
            let lo = _mm256_or_si256(_mm256_and_si256(q, m4), bit(2 * j));
            let hi = _mm256_or_si256(
                _mm256_and_si256(_mm256_srli_epi16(q, 4), m4),
                bit(2 * j + 1),
            );
            let x0 = _mm256_loadu_si256(x.add(64 * j) as *const __m256i);
            let x1 = _mm256_loadu_si256(x.add(64 * j + 32) as *const __m256i);
            let p0 = _mm256_madd_epi16(
                _mm256_maddubs_epi16(lo, x0),
                _mm256_set1_epi16(sc[2 * j] as i16),
            );
            let p1 = _mm256_madd_epi16(
                _mm256_maddubs_epi16(hi, x1),
                _mm256_set1_epi16(sc[2 * j + 1] as i16),
            );
            acc = _mm256_add_epi32(acc, _mm256_add_epi32(p0, p1));
        }
        let msum = q4_k_msum(mins, &xq.bsums[b * 16..b * 16 + 16]);
        lanes[b % 8] += term_q4_k(h2f(blk), h2f(blk.add(2)), xq.d[b], hsum_i32(acc), msum);
    }
    reduce_lanes(lanes)
}

/// Q6_K: in half `j`, the 32-byte vectors `ql[j*64..][..32]` (A), `ql[j*64+32..][..32]` (B) and
/// `qh[j*32..][..32]` (H) give weights `j*128 + 32k + i` as `(A or B) nibble | (H >> 2k) & 3 << 4` for
/// k = 0 (A low), 1 (B low), 2 (A high), 3 (B high); each 32-weight run spans two 16-weight sub-blocks, whose
/// scales multiply the two 128-bit halves in `madd`. The `- 32` offset is removed from the exact sum.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn qdot_q6_k(row: &[u8], xq: &Q8KRow) -> f32 {
    let m4 = _mm256_set1_epi8(0x0f);
    let m2 = _mm256_set1_epi8(0x03);
    let mut lanes = [0.0f32; 8];
    for b in 0..xq.d.len() {
        let blk = row.as_ptr().add(b * 210);
        let scales = std::slice::from_raw_parts(blk.add(192), 16);
        let x = xq.qs.as_ptr().add(b * QK_K);
        let mut acc = _mm256_setzero_si256();
        for j in 0..2 {
            let a = _mm256_loadu_si256(blk.add(64 * j) as *const __m256i);
            let bq = _mm256_loadu_si256(blk.add(64 * j + 32) as *const __m256i);
            let h = _mm256_loadu_si256(blk.add(128 + 32 * j) as *const __m256i);
            let lows = [
                _mm256_and_si256(a, m4),
                _mm256_and_si256(bq, m4),
                _mm256_and_si256(_mm256_srli_epi16(a, 4), m4),
                _mm256_and_si256(_mm256_srli_epi16(bq, 4), m4),
            ];
            for (k, lo) in lows.into_iter().enumerate() {
                let hi =
                    _mm256_and_si256(_mm256_srlv_epi32(h, _mm256_set1_epi32(2 * k as i32)), m2);
                let q = _mm256_or_si256(lo, _mm256_slli_epi16(hi, 4));
                let s = 8 * j + 2 * k;
                let scv = _mm256_set_m128i(
                    _mm_set1_epi16(scales[s + 1] as i8 as i16),
                    _mm_set1_epi16(scales[s] as i8 as i16),
                );
                let xv = _mm256_loadu_si256(x.add(128 * j + 32 * k) as *const __m256i);
                acc = _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(q, xv), scv));
            }
        }
        let isum = hsum_i32(acc) - q6_k_offset(scales, &xq.bsums[b * 16..b * 16 + 16]);
        lanes[b % 8] += term(h2f(blk.add(208)), xq.d[b], isum);
    }
    reduce_lanes(lanes)
}
