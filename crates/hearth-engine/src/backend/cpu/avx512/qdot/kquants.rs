//! AVX-512 kernels for the K-quant types (Q2_K .. Q6_K) against [`Q8KRow`] tokens.
//!
//! A 256-weight block becomes four 64-byte vectors of unsigned codes in activation order, each with an i16
//! scale vector (one scale per sub-block, spread over its lanes by `vpermw`). Per token, `vpmaddubsw` then
//! `vpdpwssd` (VNNI) or `vpmaddwd` + add gives the scaled i32 partial sums, summed exactly; the code
//! offsets and mins are `sum_s w[s] * bsums[s]`, and the block's f32 term is the reference's (`term`,
//! `term_q4_k`), added into lane `b % 8` as there. Layouts as in `avx2/qdot/kquants.rs`.

/// `IDX[r]` spreads scale `k * r + m / (32 / k)` over i16 lane `m` of run `r`: `k` = 2 for 32-weight
/// sub-blocks (two per 64-byte run), 4 for 16-weight ones.
const fn spread(k: usize) -> [[i16; 32]; 4] {
    let mut idx = [[0i16; 32]; 4];
    let mut r = 0;
    while r < 4 {
        let mut m = 0;
        while m < 32 {
            idx[r][m] = (k * r + m / (32 / k)) as i16;
            m += 1;
        }
        r += 1;
    }
    idx
}
const SPREAD32: [[i16; 32]; 4] = spread(2);
const SPREAD16: [[i16; 32]; 4] = spread(4);

/// Defines, for one feature set, the shared helpers and the five kernels (`VNNI` must be in scope).
macro_rules! kquant_kernels {
    ($feat:literal) => {
        use std::arch::x86_64::*;

        use super::super::h2f;
        use super::{SPREAD16, SPREAD32};
        use crate::backend::cpu::qdot::{
            q3_k_packed_scales, q4_k_packed_scales, reduce_lanes, term, term_q4_k, Q8KRow, QK_K,
        };

        /// A decoded block: four runs of 64 codes and their scale vectors, the f16 scales, and the
        /// weights of the sixteen activation sums (`min`: `msum = sum_s w[s] * bsums[s]`; else the isum's
        /// offset).
        struct Block {
            codes: [__m512i; 4],
            scales: [__m512i; 4],
            d: f32,
            dmin: f32,
            w: __m512i,
        }

        /// A Q4_K/Q5_K block's eight scales as i16 lanes 0..8 and the sixteen activation-sum weights of
        /// its mins (`mins[s / 2]`), unpacked without a trip through memory.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn k4_scales(p: *const u8) -> (__m512i, __m512i) {
            let (sc, mins) = q4_k_packed_scales(std::slice::from_raw_parts(p.add(4), 12));
            let sc16 = _mm512_zextsi256_si512(_mm256_zextsi128_si256(_mm_cvtepu8_epi16(
                _mm_cvtsi64_si128(sc as i64),
            )));
            let m = _mm512_zextsi256_si512(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128(mins as i64)));
            let pairs = _mm512_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
            (sc16, _mm512_permutexvar_epi32(pairs, m))
        }

        /// The four runs' scale vectors from up to 32 i16 scales in `sc` and a spread table.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn spread_scales(sc: __m512i, idx: &[[i16; 32]; 4]) -> [__m512i; 4] {
            std::array::from_fn(|r| {
                _mm512_permutexvar_epi16(_mm512_loadu_si512(idx[r].as_ptr() as *const _), sc)
            })
        }

        /// `[lo, hi]` as one 512-bit vector.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn join(lo: __m256i, hi: __m256i) -> __m512i {
            _mm512_inserti64x4::<1>(_mm512_zextsi256_si512(lo), hi)
        }

        /// `v >> n` in each 16-bit lane, for a run-dependent `n`.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn srl16(v: __m256i, n: usize) -> __m256i {
            _mm256_srl_epi16(v, _mm_cvtsi32_si128(n as i32))
        }

        /// Defines `$name::<N>(row, tokens, out)` for `$bb`-byte blocks: `$decode` turns the block pointer
        /// `$blk` into a [`Block`]; `$min` picks `term_q4_k` over `term`.
        macro_rules! kernel {
            ($name:ident, $bb:expr, $min:expr, |$blk:ident| $decode:expr) => {
                #[target_feature(enable = $feat)]
                pub(in crate::backend::cpu::avx512) unsafe fn $name<const N: usize>(
                    row: &[u8],
                    xs: &[Q8KRow],
                    out: &mut [f32],
                ) {
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
                            let mut acc = _mm512_setzero_si512();
                            for r in 0..4 {
                                let xv = _mm512_loadu_si512(xp.add(64 * r) as *const _);
                                let p = _mm512_maddubs_epi16(blk.codes[r], xv);
                                acc = if VNNI {
                                    _mm512_dpwssd_epi32(acc, p, blk.scales[r])
                                } else {
                                    _mm512_add_epi32(acc, _mm512_madd_epi16(p, blk.scales[r]))
                                };
                            }
                            let bs = _mm512_loadu_si512(bp[t].add(16 * b) as *const _);
                            let wb = _mm512_mullo_epi32(blk.w, bs);
                            let dx = *dp[t].add(b);
                            lanes[t][b % 8] += if $min {
                                let isum = _mm512_reduce_add_epi32(acc);
                                term_q4_k(blk.d, blk.dmin, dx, isum, _mm512_reduce_add_epi32(wb))
                            } else {
                                term(
                                    blk.d,
                                    dx,
                                    _mm512_reduce_add_epi32(_mm512_sub_epi32(acc, wb)),
                                )
                            };
                        }
                    }
                    for (o, l) in out.iter_mut().zip(lanes) {
                        *o = reduce_lanes(l);
                    }
                }
            };
        }

        // Q2_K: run `2j` is bits 0..2 (low half) and 2..4 (high half) of `qs[32j..]`, run `2j + 1` bits
        // 4..6 and 6..8; 4-bit scales and mins per 16 weights.
        kernel!(qdot_q2_k, 84, true, |p| {
            let m3 = _mm512_set1_epi8(3);
            let sc = _mm_loadu_si128(p as *const __m128i);
            let sc16 = _mm512_zextsi256_si512(_mm256_and_si256(
                _mm256_cvtepu8_epi16(sc),
                _mm256_set1_epi16(15),
            ));
            let z = [0, 1].map(|j| {
                let q = _mm256_loadu_si256(p.add(16 + 32 * j) as *const __m256i);
                join(q, _mm256_srli_epi16::<2>(q))
            });
            Block {
                codes: std::array::from_fn(|r| {
                    let v = z[r / 2];
                    _mm512_and_si512(
                        if r % 2 == 0 {
                            v
                        } else {
                            _mm512_srli_epi16::<4>(v)
                        },
                        m3,
                    )
                }),
                scales: spread_scales(sc16, &SPREAD16),
                d: h2f(p.add(80)),
                dmin: h2f(p.add(82)),
                w: _mm512_cvtepu8_epi32(_mm_and_si128(_mm_srli_epi16::<4>(sc), _mm_set1_epi8(15))),
            }
        });

        // Q3_K: Q2_K's low bits (from `qs` at 32) plus bit `e / 32` of `hmask[e % 32]` as bit 2 (the
        // stored code is `q + 4`: offset `4 * sum_s sc_s * bsums[s]`).
        kernel!(qdot_q3_k, 110, false, |p| {
            let (m3, one) = (_mm512_set1_epi8(3), _mm512_set1_epi8(1));
            let (lo, hi) = q3_k_packed_scales(std::slice::from_raw_parts(p.add(96), 12));
            let sc = _mm_sub_epi8(_mm_set_epi64x(hi as i64, lo as i64), _mm_set1_epi8(32));
            let sc16 = _mm512_zextsi256_si512(_mm256_cvtepi8_epi16(sc));
            let h = _mm256_loadu_si256(p as *const __m256i);
            let z = [0, 1].map(|j| {
                let q = _mm256_loadu_si256(p.add(32 + 32 * j) as *const __m256i);
                join(q, _mm256_srli_epi16::<2>(q))
            });
            Block {
                codes: std::array::from_fn(|r| {
                    let v = z[r / 2];
                    let low = _mm512_and_si512(
                        if r % 2 == 0 {
                            v
                        } else {
                            _mm512_srli_epi16::<4>(v)
                        },
                        m3,
                    );
                    let high = _mm512_and_si512(join(srl16(h, 2 * r), srl16(h, 2 * r + 1)), one);
                    _mm512_or_si512(low, _mm512_slli_epi16::<2>(high))
                }),
                scales: spread_scales(sc16, &SPREAD16),
                d: h2f(p.add(108)),
                dmin: 0.0,
                w: _mm512_slli_epi32::<2>(_mm512_cvtepi8_epi32(sc)),
            }
        });

        // Q4_K: run `j` is the low (first half) and high (second half) nibbles of `qs[32j..]`.
        kernel!(qdot_q4_k, 144, true, |p| {
            let m4 = _mm512_set1_epi8(0x0f);
            let (sc16, w) = k4_scales(p);
            Block {
                codes: std::array::from_fn(|r| {
                    let q = _mm256_loadu_si256(p.add(16 + 32 * r) as *const __m256i);
                    _mm512_and_si512(join(q, _mm256_srli_epi16::<4>(q)), m4)
                }),
                scales: spread_scales(sc16, &SPREAD32),
                d: h2f(p),
                dmin: h2f(p.add(2)),
                w,
            }
        });

        // Q5_K: as Q4_K, with bit 4 of weight `g*32 + i` from bit `g` of `qh[i]`.
        kernel!(qdot_q5_k, 176, true, |p| {
            let (m4, one) = (_mm512_set1_epi8(0x0f), _mm512_set1_epi8(1));
            let (sc16, w) = k4_scales(p);
            let h = _mm256_loadu_si256(p.add(16) as *const __m256i);
            Block {
                codes: std::array::from_fn(|r| {
                    let q = _mm256_loadu_si256(p.add(48 + 32 * r) as *const __m256i);
                    let low = _mm512_and_si512(join(q, _mm256_srli_epi16::<4>(q)), m4);
                    let high = _mm512_and_si512(join(srl16(h, 2 * r), srl16(h, 2 * r + 1)), one);
                    _mm512_or_si512(low, _mm512_slli_epi16::<4>(high))
                }),
                scales: spread_scales(sc16, &SPREAD32),
                d: h2f(p),
                dmin: h2f(p.add(2)),
                w,
            }
        });

        // Q6_K: in half `j`, `ql[64j..][..64]` holds runs `4j` and `4j + 1` in its low nibbles and runs
        // `4j + 2`, `4j + 3` in its high ones; `qh[32j..]` shifted by 0, 2, 4, 6 gives their top bits. The
        // codes are `q + 32`.
        kernel!(qdot_q6_k, 210, false, |p| {
            let (m4, m3) = (_mm512_set1_epi8(0x0f), _mm512_set1_epi8(3));
            let sc = _mm_loadu_si128(p.add(192) as *const __m128i);
            let sc16 = _mm512_zextsi256_si512(_mm256_cvtepi8_epi16(sc));
            let ql = [0, 1].map(|j| _mm512_loadu_si512(p.add(64 * j) as *const _));
            let qh = [0, 1].map(|j| {
                let h = _mm256_loadu_si256(p.add(128 + 32 * j) as *const __m256i);
                join(h, _mm256_srli_epi16::<2>(h))
            });
            Block {
                codes: std::array::from_fn(|r| {
                    let (l, h) = (ql[r / 2], qh[r / 2]);
                    let (l, h) = if r % 2 == 0 {
                        (l, h)
                    } else {
                        (_mm512_srli_epi16::<4>(l), _mm512_srli_epi16::<4>(h))
                    };
                    let high = _mm512_slli_epi16::<4>(_mm512_and_si512(h, m3));
                    _mm512_or_si512(_mm512_and_si512(l, m4), high)
                }),
                scales: spread_scales(sc16, &SPREAD16),
                d: h2f(p.add(208)),
                dmin: 0.0,
                w: _mm512_slli_epi32::<5>(_mm512_cvtepi8_epi32(sc)),
            }
        });
    };
}

/// The kernels for AVX-512 with VNNI.
pub(super) mod vnni {
    const VNNI: bool = true;
    kquant_kernels!("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,fma,f16c");
}

/// The kernels for AVX-512 without VNNI.
pub(super) mod bw {
    const VNNI: bool = false;
    kquant_kernels!("avx512f,avx512bw,avx512vl,avx512dq,fma,f16c");
}
