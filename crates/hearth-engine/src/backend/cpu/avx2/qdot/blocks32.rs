//! AVX2 kernels for the 32-weight block types (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1) against [`Q8Row`] tokens.
//!
//! A block's 32 weight codes become 32 bytes; `_mm256_maddubs_epi16` (unsigned codes times signed
//! activations, pairs summed in i16 without saturation for these ranges) and `_mm256_madd_epi16` with ones
//! give eight i32 partial sums. Eight blocks at a time the codes are decoded once, then for each token the
//! partial sums are reduced (exactly, in integers) to one i32 per block, one lane per block, and the f32
//! terms are computed lane-wise with the scalar reference's operations: block `b` lands in lane `b % 8`.
//! A last partial group pads its missing blocks with zero codes and scales: their term is `+0.0`, and adding
//! it leaves a lane unchanged (a lane is never `-0.0`: it starts at `+0.0` and a sum that cancels rounds to
//! `+0.0`), exactly as the reference, which adds nothing there.

use std::arch::x86_64::*;

use crate::backend::cpu::avx2::hsum;
use crate::backend::cpu::qdot::{Q8Row, QK8};

/// Lane `j` of the result is the sum of the eight lanes of `v[j]` (exact integer sums).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn reduce8(v: &[__m256i; 8]) -> __m256i {
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

/// Eight i32 partial sums of `u[i] * x[i]` for 32 unsigned bytes `u` (at most 128) and 32 activations
/// `x` (in -127..=127, so a pair stays below `i16::MAX`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn udot32(u: __m256i, x: __m256i) -> __m256i {
    _mm256_madd_epi16(_mm256_maddubs_epi16(u, x), _mm256_set1_epi16(1))
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

/// Defines `$name::<N>(row, tokens, out)` (`N` tokens, `out[t]` for token `t`) for a 32-weight block type
/// of `$bb` bytes: `$codes` decodes a block's 32 codes from its pointer `$p`; `$dot` gives eight i32 partial
/// sums of `code * qx` from codes `$u` and activations `$x`; `$off` is the code offset (the exact isum is
/// `sum(code * qx) - $off * sums[b]`); `$min` says whether an f16 min follows the f16 scale.
macro_rules! qdot_kernel {
    ($name:ident, $bb:expr, $off:expr, $min:expr, |$p:ident| $codes:expr, |$u:ident, $x:ident| $dot:expr) => {
        #[target_feature(enable = "avx2,fma,f16c")]
        pub(super) unsafe fn $name<const N: usize>(row: &[u8], xs: &[Q8Row], out: &mut [f32]) {
            debug_assert!(xs.len() == N && out.len() == N);
            let nb = xs[0].d.len();
            let rp = row.as_ptr();
            let xq: [*const i8; N] = std::array::from_fn(|t| xs[t].qs.as_ptr());
            let dxp: [*const f32; N] = std::array::from_fn(|t| xs[t].d.as_ptr());
            let sxp: [*const i32; N] = std::array::from_fn(|t| xs[t].sums.as_ptr());
            let offv = _mm256_set1_epi32($off);
            let mut acc = [_mm256_setzero_ps(); N];
            // One group of `n` (1..=8) blocks from `b0`, for every token.
            macro_rules! group {
                ($b0:expr, $n:expr) => {{
                let (b0, n): (usize, usize) = ($b0, $n);
                let mut codes = [_mm256_setzero_si256(); 8];
                for (j, c) in codes.iter_mut().enumerate().take(n) {
                    let $p: *const u8 = rp.add((b0 + j) * $bb);
                    *c = $codes;
                }
                // The f16 scales and mins through a small array (a gather measured no faster here, and
                // is slow on older AVX2 cores).
                let (mut dwh, mut mwh) = ([0u16; 8], [0u16; 8]);
                for j in 0..n {
                    let p = rp.add((b0 + j) * $bb);
                    dwh[j] = (p as *const u16).read_unaligned();
                    if $min {
                        mwh[j] = (p.add(2) as *const u16).read_unaligned();
                    }
                }
                let dw = _mm256_cvtph_ps(_mm_loadu_si128(dwh.as_ptr() as *const __m128i));
                let mw = _mm256_cvtph_ps(_mm_loadu_si128(mwh.as_ptr() as *const __m128i));
                for t in 0..N {
                    let xp = xq[t].add(b0 * QK8);
                    let mut v = [_mm256_setzero_si256(); 8];
                    for j in 0..n {
                        let $u = codes[j];
                        let $x = _mm256_loadu_si256(xp.add(j * QK8) as *const __m256i);
                        v[j] = $dot;
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
                    if $off != 0 {
                        isum = _mm256_sub_epi32(isum, _mm256_mullo_epi32(sx, offv));
                    }
                    let mut term = _mm256_mul_ps(_mm256_mul_ps(dw, dx), _mm256_cvtepi32_ps(isum));
                    if $min {
                        let m = _mm256_mul_ps(mw, dx);
                        term = _mm256_add_ps(term, _mm256_mul_ps(m, _mm256_cvtepi32_ps(sx)));
                    }
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
    };
}

qdot_kernel!(
    qdot_q8_0,
    34,
    0,
    false,
    |p| _mm256_loadu_si256(p.add(2) as *const __m256i),
    |w, x| {
        // |w| as unsigned bytes (128 for -128) times x with w's sign: pairs stay below 2 * 128 * 127.
        udot32(_mm256_abs_epi8(w), _mm256_sign_epi8(x, w))
    }
);
qdot_kernel!(qdot_q4_0, 18, 8, false, |p| nibbles(p.add(2)), |u, x| {
    udot32(u, x)
});
qdot_kernel!(
    qdot_q4_1,
    20,
    0,
    true,
    |p| nibbles(p.add(4)),
    |u, x| udot32(u, x)
);
qdot_kernel!(
    qdot_q5_0,
    22,
    16,
    false,
    |p| codes5(p.add(2), p.add(6)),
    |u, x| udot32(u, x)
);
qdot_kernel!(
    qdot_q5_1,
    24,
    0,
    true,
    |p| codes5(p.add(4), p.add(8)),
    |u, x| udot32(u, x)
);
