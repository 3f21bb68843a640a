//! AVX2 kernels for the K-quant types (Q2_K .. Q6_K) against [`Q8KRow`] tokens.
//!
//! A 256-weight block becomes eight runs of 32 unsigned codes, each in activation order, with an i16
//! scale vector per run (one scale per 16-lane half for the types with 16-weight sub-blocks). Per token,
//! `maddubs` then `madd` by the scales gives scaled i32 partial sums (at most `2 * 63 * 127 * 63` per lane),
//! summed exactly; the code offsets and mins are `sum_s w[s] * bsums[s]` over the sixteen activation sums
//! (two vector multiplies), and the block's f32 term is the reference's (`term`, `term_q4_k`), added into
//! lane `b % 8` as there.

use std::arch::x86_64::*;

use super::hsum_i32;
use crate::backend::cpu::avx2::h2f;
use crate::backend::cpu::qdot::{
    q3_k_packed_scales, q4_k_packed_scales, reduce_lanes, term, term_q4_k, Q8KRow, QK_K,
};

/// A run's scale vector for 16-weight sub-blocks: `lo` in the low 128 bits, `hi` in the high.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn scales16(lo: i32, hi: i32) -> __m256i {
    _mm256_set_m128i(_mm_set1_epi16(hi as i16), _mm_set1_epi16(lo as i16))
}

/// `v >> n` in each 16-bit lane, for a run-dependent `n`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn srl16(v: __m256i, n: usize) -> __m256i {
    _mm256_srl_epi16(v, _mm_cvtsi32_si128(n as i32))
}

/// The sixteen bytes of `v` as i32 lanes, sign- or zero-extended, in two vectors.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn widen16(v: __m128i, signed: bool) -> [__m256i; 2] {
    let hi = _mm_unpackhi_epi64(v, v);
    if signed {
        [_mm256_cvtepi8_epi32(v), _mm256_cvtepi8_epi32(hi)]
    } else {
        [_mm256_cvtepu8_epi32(v), _mm256_cvtepu8_epi32(hi)]
    }
}

/// A Q4_K/Q5_K block's scales (one byte each, for the runs' broadcasts) and the sixteen activation-sum
/// weights of its mins (`mins[s / 2]`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn k4_scales(p: *const u8) -> (u64, [__m256i; 2]) {
    let (sc, mins) = q4_k_packed_scales(std::slice::from_raw_parts(p.add(4), 12));
    let m = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128(mins as i64));
    let w = [
        _mm256_permutevar8x32_epi32(m, _mm256_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3)),
        _mm256_permutevar8x32_epi32(m, _mm256_setr_epi32(4, 4, 5, 5, 6, 6, 7, 7)),
    ];
    (sc, w)
}

/// A decoded block: eight runs of 32 codes and their scale vectors, the f16 scales, and the weights of
/// the sixteen activation sums (`min`: `msum = sum_s w[s] * bsums[s]`; else the isum's offset, subtracted).
struct Block {
    codes: [__m256i; 8],
    scales: [__m256i; 8],
    d: f32,
    dmin: f32,
    w: [__m256i; 2],
}

/// Defines `$name::<N>(row, tokens, out)` for a K-quant type of `$bb`-byte blocks: `$decode` turns the block
/// pointer `$blk` into a [`Block`]; `$min` picks the term with a min (`term_q4_k`) over the one without.
macro_rules! qdot_k_kernel {
    ($name:ident, $bb:expr, $min:expr, |$blk:ident| $decode:expr) => {
        #[target_feature(enable = "avx2,fma,f16c")]
        pub(super) unsafe fn $name<const N: usize>(row: &[u8], xs: &[Q8KRow], out: &mut [f32]) {
            debug_assert!(xs.len() == N && out.len() == N);
            let qp: [*const i8; N] = std::array::from_fn(|t| xs[t].qs.as_ptr());
            let dp: [*const f32; N] = std::array::from_fn(|t| xs[t].d.as_ptr());
            let bp: [*const i32; N] = std::array::from_fn(|t| xs[t].bsums.as_ptr());
            let mut lanes = [[0.0f32; 8]; N];
            for b in 0..xs[0].d.len() {
                let $blk: *const u8 = row.as_ptr().add(b * $bb);
                let blk: Block = $decode;
                for t in 0..N {
                    let xp = qp[t].add(b * QK_K);
                    let mut acc = _mm256_setzero_si256();
                    for r in 0..8 {
                        let xv = _mm256_loadu_si256(xp.add(32 * r) as *const __m256i);
                        let p = _mm256_madd_epi16(
                            _mm256_maddubs_epi16(blk.codes[r], xv),
                            blk.scales[r],
                        );
                        acc = _mm256_add_epi32(acc, p);
                    }
                    let bs = bp[t].add(16 * b) as *const __m256i;
                    let wb = _mm256_add_epi32(
                        _mm256_mullo_epi32(blk.w[0], _mm256_loadu_si256(bs)),
                        _mm256_mullo_epi32(blk.w[1], _mm256_loadu_si256(bs.add(1))),
                    );
                    let dx = *dp[t].add(b);
                    lanes[t][b % 8] += if $min {
                        term_q4_k(blk.d, blk.dmin, dx, hsum_i32(acc), hsum_i32(wb))
                    } else {
                        term(blk.d, dx, hsum_i32(_mm256_sub_epi32(acc, wb)))
                    };
                }
            }
            for (o, l) in out.iter_mut().zip(lanes) {
                *o = reduce_lanes(l);
            }
        }
    };
}

// Q2_K: run `r = 4j + l` is bits `2l..2l+2` of the 32 bytes `qs[32j..]`; 4-bit scales and mins per 16.
qdot_k_kernel!(qdot_q2_k, 84, true, |p| {
    let sc = std::slice::from_raw_parts(p, 16);
    let m3 = _mm256_set1_epi8(3);
    let q = [0, 1].map(|j| _mm256_loadu_si256(p.add(16 + 32 * j) as *const __m256i));
    let packed = _mm_loadu_si128(p as *const __m128i);
    Block {
        codes: std::array::from_fn(|r| _mm256_and_si256(srl16(q[r / 4], 2 * (r % 4)), m3)),
        scales: std::array::from_fn(|r| {
            scales16((sc[2 * r] & 15) as i32, (sc[2 * r + 1] & 15) as i32)
        }),
        d: h2f(p.add(80)),
        dmin: h2f(p.add(82)),
        w: widen16(
            _mm_and_si128(_mm_srli_epi16::<4>(packed), _mm_set1_epi8(15)),
            false,
        ),
    }
});

// Q3_K: as Q2_K's low bits (from `qs` at 32), plus bit `r` of `hmask[i]` as the code's bit 2 (the stored
// code is `q + 4`, so the offset is `4 * sum_s sc_s * bsums[s]`).
qdot_k_kernel!(qdot_q3_k, 110, false, |p| {
    let (lo, hi) = q3_k_packed_scales(std::slice::from_raw_parts(p.add(96), 12));
    let sc = |k: usize| ((if k < 8 { lo } else { hi }) >> (8 * (k % 8))) as u8 as i32 - 32;
    let signed = _mm_sub_epi8(_mm_set_epi64x(hi as i64, lo as i64), _mm_set1_epi8(32));
    let (m3, one) = (_mm256_set1_epi8(3), _mm256_set1_epi8(1));
    let h = _mm256_loadu_si256(p as *const __m256i);
    let q = [0, 1].map(|j| _mm256_loadu_si256(p.add(32 + 32 * j) as *const __m256i));
    Block {
        codes: std::array::from_fn(|r| {
            let low = _mm256_and_si256(srl16(q[r / 4], 2 * (r % 4)), m3);
            let high = _mm256_and_si256(srl16(h, r), one);
            _mm256_or_si256(low, _mm256_slli_epi16(high, 2))
        }),
        scales: std::array::from_fn(|r| scales16(sc(2 * r), sc(2 * r + 1))),
        d: h2f(p.add(108)),
        dmin: 0.0,
        w: widen16(signed, true).map(|v| _mm256_slli_epi32::<2>(v)),
    }
});

// Q4_K: per 32-byte group `j`, low nibbles are run `2j`, high nibbles run `2j + 1`.
qdot_k_kernel!(qdot_q4_k, 144, true, |p| {
    let (sc, w) = k4_scales(p);
    let m4 = _mm256_set1_epi8(0x0f);
    let q = [0, 1, 2, 3].map(|j| _mm256_loadu_si256(p.add(16 + 32 * j) as *const __m256i));
    Block {
        codes: std::array::from_fn(|r| _mm256_and_si256(srl16(q[r / 2], 4 * (r % 2)), m4)),
        scales: std::array::from_fn(|r| _mm256_set1_epi16((sc >> (8 * r)) as u8 as i16)),
        d: h2f(p),
        dmin: h2f(p.add(2)),
        w,
    }
});

// Q5_K: as Q4_K, with bit 4 of weight `r*32 + i` taken from bit `r` of `qh[i]`.
qdot_k_kernel!(qdot_q5_k, 176, true, |p| {
    let (sc, w) = k4_scales(p);
    let (m4, one) = (_mm256_set1_epi8(0x0f), _mm256_set1_epi8(1));
    let h = _mm256_loadu_si256(p.add(16) as *const __m256i);
    let q = [0, 1, 2, 3].map(|j| _mm256_loadu_si256(p.add(48 + 32 * j) as *const __m256i));
    Block {
        codes: std::array::from_fn(|r| {
            let low = _mm256_and_si256(srl16(q[r / 2], 4 * (r % 2)), m4);
            let high = _mm256_and_si256(srl16(h, r), one);
            _mm256_or_si256(low, _mm256_slli_epi16(high, 4))
        }),
        scales: std::array::from_fn(|r| _mm256_set1_epi16((sc >> (8 * r)) as u8 as i16)),
        d: h2f(p),
        dmin: h2f(p.add(2)),
        w,
    }
});

// Q6_K: in half `j`, the 32-byte vectors `ql[j*64..]` (A), `ql[j*64+32..]` (B) and `qh[j*32..]` (H) give
// run `4j + k` as `(A, B, A >> 4, B >> 4)[k] & 15 | ((H >> 2k) & 3) << 4`; the codes are `q + 32`.
qdot_k_kernel!(qdot_q6_k, 210, false, |p| {
    let sc = std::slice::from_raw_parts(p.add(192), 16);
    let (m4, m3) = (_mm256_set1_epi8(0x0f), _mm256_set1_epi8(3));
    let ql = [0, 1, 2, 3].map(|i| _mm256_loadu_si256(p.add(32 * i) as *const __m256i));
    let qh = [0, 1].map(|j| _mm256_loadu_si256(p.add(128 + 32 * j) as *const __m256i));
    Block {
        codes: std::array::from_fn(|r| {
            let (j, k) = (r / 4, r % 4);
            let low = _mm256_and_si256(srl16(ql[2 * j + k % 2], 4 * (k / 2)), m4);
            let high = _mm256_and_si256(srl16(qh[j], 2 * k), m3);
            _mm256_or_si256(low, _mm256_slli_epi16(high, 4))
        }),
        scales: std::array::from_fn(|r| {
            scales16(sc[2 * r] as i8 as i32, sc[2 * r + 1] as i8 as i32)
        }),
        d: h2f(p.add(208)),
        dmin: 0.0,
        w: widen16(_mm_loadu_si128(sc.as_ptr() as *const __m128i), true)
            .map(|v| _mm256_slli_epi32::<5>(v)),
    }
});
