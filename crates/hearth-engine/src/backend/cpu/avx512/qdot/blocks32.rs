//! AVX-512 kernels for the 32-weight block types (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1) against [`Q8Row`] tokens.
//!
//! Sixteen blocks at a time, the codes are decoded once into eight 64-byte vectors (blocks `2j` and
//! `2j + 1` in vector `j`); per token, `vpdpbusd` (or `vpmaddubsw` + `vpmaddwd`) gives sixteen i32 partial
//! sums per vector, which a transposing reduction turns (exactly) into one i32 per block, in block order.
//! The sixteen f32 terms are then computed lane-wise with the reference's operations, and added to the
//! eight accumulator lanes in two steps (blocks `b0..b0+8`, then `b0+8..b0+16`), so block `b` still lands in
//! lane `b % 8` in block order. A last partial group pads its missing blocks with zero codes and scales,
//! whose `+0.0` terms leave the lanes unchanged (see `avx2/qdot/blocks32.rs`).

/// Defines `$name::<N>(row, tokens, out)` for a 32-weight block type of `$bb` bytes, compiled for
/// `$feat`: `$codes` decodes a block's 32 codes (a 256-bit vector) from its pointer `$p`; `$dot` gives
/// sixteen i32 partial sums of `code * qx` for two blocks' codes `$u` and activations `$x`; `$off` is the
/// code offset (the exact isum is `sum(code * qx) - $off * sums[b]`); `$min` says whether an f16 min follows
/// the f16 scale.
macro_rules! qdot_kernel {
    ($feat:literal, $name:ident, $bb:expr, $off:expr, $min:expr, |$p:ident| $codes:expr,
     |$u:ident, $x:ident| $dot:expr) => {
        #[target_feature(enable = $feat)]
        pub(in crate::backend::cpu::avx512) unsafe fn $name<const N: usize>(
            row: &[u8],
            xs: &[Q8Row],
            out: &mut [f32],
        ) {
            debug_assert!(xs.len() == N && out.len() == N);
            let nb = xs[0].d.len();
            let rp = row.as_ptr();
            let xq: [*const i8; N] = std::array::from_fn(|t| xs[t].qs.as_ptr());
            let dxp: [*const f32; N] = std::array::from_fn(|t| xs[t].d.as_ptr());
            let sxp: [*const i32; N] = std::array::from_fn(|t| xs[t].sums.as_ptr());
            let offv = _mm512_set1_epi32($off);
            let mut acc = [_mm256_setzero_ps(); N];
            // One group of `n` (1..=16) blocks from `b0`, for every token.
            macro_rules! group {
                ($b0:expr, $n:expr) => {{
                    let (b0, n): (usize, usize) = ($b0, $n);
                    let mut codes = [_mm512_setzero_si512(); 8];
                    let code = |b: usize| {
                        let $p: *const u8 = rp.add(b * $bb);
                        let c: __m256i = $codes;
                        c
                    };
                    for (j, c) in codes.iter_mut().enumerate().take(n / 2) {
                        let (lo, hi) = (code(b0 + 2 * j), code(b0 + 2 * j + 1));
                        *c = _mm512_inserti64x4::<1>(_mm512_zextsi256_si512(lo), hi);
                    }
                    if n % 2 == 1 {
                        codes[n / 2] = _mm512_zextsi256_si512(code(b0 + n - 1));
                    }
                    // The f16 scale (low half) and min (high half) of each block, by one gather.
                    let mask = ((1u32 << n) - 1) as __mmask16;
                    let at = _mm512_mullo_epi32(
                        _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                        _mm512_set1_epi32($bb),
                    );
                    let g = _mm512_mask_i32gather_epi32::<1>(
                        _mm512_setzero_si512(),
                        mask,
                        at,
                        rp.add(b0 * $bb) as *const _,
                    );
                    let dw = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(g));
                    let mw = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32::<16>(g)));
                    for t in 0..N {
                        let xp = xq[t].add(b0 * QK8);
                        let mut v = [_mm512_setzero_si512(); 8];
                        for j in 0..n.div_ceil(2) {
                            let $u = codes[j];
                            let $x = if 2 * j + 1 < n {
                                _mm512_loadu_si512(xp.add(2 * j * QK8) as *const _)
                            } else {
                                _mm512_zextsi256_si512(_mm256_loadu_si256(
                                    xp.add(2 * j * QK8) as *const __m256i
                                ))
                            };
                            v[j] = $dot;
                        }
                        let dx = _mm512_maskz_loadu_ps(mask, dxp[t].add(b0));
                        let sx = _mm512_maskz_loadu_epi32(mask, sxp[t].add(b0));
                        let mut isum = reduce16(&v);
                        if $off != 0 {
                            isum = _mm512_sub_epi32(isum, _mm512_mullo_epi32(sx, offv));
                        }
                        let mut term =
                            _mm512_mul_ps(_mm512_mul_ps(dw, dx), _mm512_cvtepi32_ps(isum));
                        if $min {
                            let m = _mm512_mul_ps(mw, dx);
                            term = _mm512_add_ps(term, _mm512_mul_ps(m, _mm512_cvtepi32_ps(sx)));
                        }
                        let lo = _mm512_castps512_ps256(term);
                        let hi = _mm512_extractf32x8_ps::<1>(term);
                        acc[t] = _mm256_add_ps(_mm256_add_ps(acc[t], lo), hi);
                    }
                }};
            }
            let full = nb / 16 * 16;
            for b0 in (0..full).step_by(16) {
                group!(b0, 16);
            }
            if full < nb {
                group!(full, nb - full);
            }
            for (o, a) in out.iter_mut().zip(acc) {
                *o = super::super::hsum8(a);
            }
        }
    };
}

/// Defines, for one feature set, the shared helpers and the five kernels (`VNNI` must be in scope).
macro_rules! blocks32_kernels {
    ($feat:literal) => {
        use std::arch::x86_64::*;

        use crate::backend::cpu::qdot::{Q8Row, QK8};

        /// Within each 128-bit lane, `[a0 + a1, a2 + a3, b0 + b1, b2 + b3]`.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn hadd(a: __m512i, b: __m512i) -> __m512i {
            let (fa, fb) = (_mm512_castsi512_ps(a), _mm512_castsi512_ps(b));
            _mm512_add_epi32(
                _mm512_castps_si512(_mm512_shuffle_ps::<0x88>(fa, fb)),
                _mm512_castps_si512(_mm512_shuffle_ps::<0xDD>(fa, fb)),
            )
        }

        /// Lane `b` of the result is the sum of block `b`'s eight lanes, where `v[j]` holds block `2j` in
        /// its low 256 bits and block `2j + 1` in its high 256 bits (exact integer sums).
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn reduce16(v: &[__m512i; 8]) -> __m512i {
            let h0 = hadd(hadd(v[0], v[1]), hadd(v[2], v[3]));
            let h1 = hadd(hadd(v[4], v[5]), hadd(v[6], v[7]));
            // 128-bit lanes of h0: [b0 b2 b4 b6 low halves], [.. high halves], [b1 b3 b5 b7 ..], [..].
            let s = _mm512_add_epi32(
                _mm512_shuffle_i32x4::<0x88>(h0, h1),
                _mm512_shuffle_i32x4::<0xDD>(h0, h1),
            );
            // s = [b0 b2 b4 b6 | b1 b3 b5 b7 | b8 b10 b12 b14 | b9 b11 b13 b15]
            let order = _mm512_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7, 8, 12, 9, 13, 10, 14, 11, 15);
            _mm512_permutexvar_epi32(order, s)
        }

        /// Sixteen i32 partial sums of `u[i] * x[i]` for 64 unsigned bytes `u` and 64 activations `x`
        /// (VNNI: any `u`; otherwise `u` at most 128, so that a `vpmaddubsw` pair fits i16).
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn udot64(u: __m512i, x: __m512i) -> __m512i {
            if VNNI {
                _mm512_dpbusd_epi32(_mm512_setzero_si512(), u, x)
            } else {
                _mm512_madd_epi16(_mm512_maddubs_epi16(u, x), _mm512_set1_epi16(1))
            }
        }

        /// The 32 nibbles of the 16 bytes at `p` in block order (low nibbles: weights 0..16, high: 16..32).
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn nibbles(p: *const u8) -> __m256i {
            let q = _mm_loadu_si128(p as *const __m128i);
            let m4 = _mm_set1_epi8(0x0f);
            let lo = _mm_and_si128(q, m4);
            let hi = _mm_and_si128(_mm_srli_epi16::<4>(q), m4);
            _mm256_set_m128i(hi, lo)
        }

        /// The 5-bit codes of a Q5 block: nibbles at `qs` plus bit `i` of the little-endian u32 at `qh` as
        /// bit 4.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn codes5(qh: *const u8, qs: *const u8) -> __m256i {
            let h = (qh as *const u32).read_unaligned();
            let set = _mm256_movm_epi8(h);
            _mm256_or_si256(nibbles(qs), _mm256_and_si256(set, _mm256_set1_epi8(0x10)))
        }

        // Q8_0: with VNNI the code is `w + 128` (offset 128, `vpdpbusd` never saturates); without, |w|
        // (128 for -128) times x with w's sign.
        qdot_kernel!(
            $feat,
            qdot_q8_0,
            34,
            if VNNI { 128 } else { 0 },
            false,
            |p| {
                let w = _mm256_loadu_si256(p.add(2) as *const __m256i);
                if VNNI {
                    _mm256_xor_si256(w, _mm256_set1_epi8(-128))
                } else {
                    w
                }
            },
            |w, x| {
                if VNNI {
                    udot64(w, x)
                } else {
                    let neg = _mm512_movepi8_mask(w);
                    udot64(
                        _mm512_abs_epi8(w),
                        _mm512_mask_sub_epi8(x, neg, _mm512_setzero_si512(), x),
                    )
                }
            }
        );
        qdot_kernel!(
            $feat,
            qdot_q4_0,
            18,
            8,
            false,
            |p| nibbles(p.add(2)),
            |u, x| udot64(u, x)
        );
        qdot_kernel!(
            $feat,
            qdot_q4_1,
            20,
            0,
            true,
            |p| nibbles(p.add(4)),
            |u, x| udot64(u, x)
        );
        qdot_kernel!(
            $feat,
            qdot_q5_0,
            22,
            16,
            false,
            |p| codes5(p.add(2), p.add(6)),
            |u, x| udot64(u, x)
        );
        qdot_kernel!(
            $feat,
            qdot_q5_1,
            24,
            0,
            true,
            |p| codes5(p.add(4), p.add(8)),
            |u, x| udot64(u, x)
        );

        mlx_kernels!($feat);
    };
}

/// The kernels for AVX-512 with VNNI.
pub(super) mod vnni {
    const VNNI: bool = true;
    blocks32_kernels!("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,fma,f16c");
}

/// The kernels for AVX-512 without VNNI.
pub(super) mod bw {
    const VNNI: bool = false;
    blocks32_kernels!("avx512f,avx512bw,avx512vl,avx512dq,fma,f16c");
}
