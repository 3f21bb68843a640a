//! AVX2 decoding of GGML block types, 32 weights (four `__m256`) per run, through `block_kernels!`.
//!
//! Byte layouts are documented beside the scalar reference (`tensor/quants/legacy.rs`, `kquants.rs`) and
//! repeated briefly here. Each weight is computed with the reference's f32 operations (a product, then
//! a separate add or subtract; never fused), so dequantizing here is bit-exact with the reference.

use std::arch::x86_64::*;

use super::{h2f, u8x8};
use crate::tensor::quants::{k4_scale_min, q3_k_scales};

/// The 32 nibbles of 16 bytes at `p` as i32 lanes in block order: low nibbles of bytes 0..16 (weights
/// 0..16), then high nibbles (weights 16..32).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn nibbles32(p: *const u8) -> [__m256i; 4] {
    let q = _mm_loadu_si128(p as *const __m128i);
    let m4 = _mm_set1_epi8(0x0f);
    let lo = _mm_and_si128(q, m4);
    let hi = _mm_and_si128(_mm_srli_epi16(q, 4), m4);
    [
        _mm256_cvtepu8_epi32(lo),
        _mm256_cvtepu8_epi32(_mm_srli_si128(lo, 8)),
        _mm256_cvtepu8_epi32(hi),
        _mm256_cvtepu8_epi32(_mm_srli_si128(hi, 8)),
    ]
}

/// Bit 4 of each of the 32 weights of a Q5_0/Q5_1 block: bit `e` of `qh` moved to bit 4 of lane `e`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q5_high_bits(qh: u32) -> [__m256i; 4] {
    let iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    let one = _mm256_set1_epi32(1);
    let bits = |k: u32| {
        _mm256_slli_epi32(
            _mm256_and_si256(
                _mm256_srlv_epi32(_mm256_set1_epi32((qh >> (8 * k)) as i32), iota),
                one,
            ),
            4,
        )
    };
    [bits(0), bits(1), bits(2), bits(3)]
}

/// `d * (q - off)` per lane (Q4_0, Q5_0): the integer offset is exact, then one rounding, as the reference.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn scale_offset(q: [__m256i; 4], d: f32, off: i32) -> [__m256; 4] {
    let (dv, ov) = (_mm256_set1_ps(d), _mm256_set1_epi32(off));
    q.map(|v| _mm256_mul_ps(dv, _mm256_cvtepi32_ps(_mm256_sub_epi32(v, ov))))
}

/// `d * q + m` per lane (Q4_1, Q5_1): product rounded, then the add.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn scale_min(q: [__m256i; 4], d: f32, m: f32) -> [__m256; 4] {
    let (dv, mv) = (_mm256_set1_ps(d), _mm256_set1_ps(m));
    q.map(|v| _mm256_add_ps(_mm256_mul_ps(dv, _mm256_cvtepi32_ps(v)), mv))
}

/// `dl * q - ml` per lane with (dl, ml) for lanes 0..16 and (dl2, ml2) for lanes 16..32 (K-quant sub-blocks
/// of 16 weights; pass the same pair twice for 32-weight sub-blocks).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn k_weights(q: [__m256i; 4], dl: [f32; 2], ml: [f32; 2]) -> [__m256; 4] {
    let d0 = _mm256_set1_ps(dl[0]);
    let d1 = _mm256_set1_ps(dl[1]);
    let m0 = _mm256_set1_ps(ml[0]);
    let m1 = _mm256_set1_ps(ml[1]);
    let f = |v: __m256i, d: __m256, m: __m256| {
        _mm256_sub_ps(_mm256_mul_ps(d, _mm256_cvtepi32_ps(v)), m)
    };
    [
        f(q[0], d0, m0),
        f(q[1], d0, m0),
        f(q[2], d1, m1),
        f(q[3], d1, m1),
    ]
}

/// `dl * q` per lane, (dl[0] for lanes 0..16, dl[1] for 16..32): Q3_K and Q6_K have no mins.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn k_weights_nomin(q: [__m256i; 4], dl: [f32; 2]) -> [__m256; 4] {
    let d0 = _mm256_set1_ps(dl[0]);
    let d1 = _mm256_set1_ps(dl[1]);
    let f = |v: __m256i, d: __m256| _mm256_mul_ps(d, _mm256_cvtepi32_ps(v));
    [f(q[0], d0), f(q[1], d0), f(q[2], d1), f(q[3], d1)]
}

/// The 32 bytes at `p` as four vectors of eight i32 lanes, each shifted right by `shift` and masked.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn bits32(p: *const u8, shift: u32, mask: i32) -> [__m256i; 4] {
    let (s, m) = (_mm_cvtsi32_si128(shift as i32), _mm256_set1_epi32(mask));
    let f = |k: usize| _mm256_and_si256(_mm256_srl_epi32(u8x8(p.add(8 * k)), s), m);
    [f(0), f(1), f(2), f(3)]
}

// Q4_0, 18 bytes: [0..2] d (f16), [2..18] 32 nibbles. w = d * (q - 8).
block_kernels!(dot_q4_0, deq_q4_0, 18, 1, |blk| h2f(blk), |d, _r| {
    scale_offset(nibbles32(blk.add(2)), d, 8)
});

// Q4_1, 20 bytes: [0..2] d, [2..4] m (f16), [4..20] 32 nibbles. w = d * q + m.
block_kernels!(
    dot_q4_1,
    deq_q4_1,
    20,
    1,
    |blk| (h2f(blk), h2f(blk.add(2))),
    |h, _r| { scale_min(nibbles32(blk.add(4)), h.0, h.1) }
);

// Q5_0, 22 bytes: [0..2] d, [2..6] qh (u32, bit e = weight e's bit 4), [6..22] nibbles. w = d * (q - 16).
block_kernels!(dot_q5_0, deq_q5_0, 22, 1, |blk| h2f(blk), |d, _r| {
    let (lo, hi) = (
        nibbles32(blk.add(6)),
        q5_high_bits((blk.add(2) as *const u32).read_unaligned().to_le()),
    );
    let q = [0, 1, 2, 3].map(|k| _mm256_or_si256(lo[k], hi[k]));
    scale_offset(q, d, 16)
});

// Q5_1, 24 bytes: [0..2] d, [2..4] m, [4..8] qh, [8..24] nibbles. w = d * q + m.
block_kernels!(
    dot_q5_1,
    deq_q5_1,
    24,
    1,
    |blk| (h2f(blk), h2f(blk.add(2))),
    |h, _r| {
        let (lo, hi) = (
            nibbles32(blk.add(8)),
            q5_high_bits((blk.add(4) as *const u32).read_unaligned().to_le()),
        );
        let q = [0, 1, 2, 3].map(|k| _mm256_or_si256(lo[k], hi[k]));
        scale_min(q, h.0, h.1)
    }
);

// Q8_0, 34 bytes: [0..2] d, [2..34] 32 x i8. w = q * d.
block_kernels!(
    dot_q8_0,
    deq_q8_0,
    34,
    1,
    |blk| _mm256_set1_ps(h2f(blk)),
    |d, _r| {
        let f = |k: usize| {
            let q = _mm256_cvtepi8_epi32(_mm_loadl_epi64(blk.add(2 + 8 * k) as *const __m128i));
            _mm256_mul_ps(_mm256_cvtepi32_ps(q), d)
        };
        [f(0), f(1), f(2), f(3)]
    }
);

// Q2_K, 84 bytes: [0..16] scales (low nibble scale, high nibble min, per 16 weights), [16..80] qs (2 bits;
// run r = j*4 + l is bits 2l of qs[j*32 .. j*32+32]), [80..82] d, [82..84] dmin.
// w = (d * scale) * q - (dmin * min).
block_kernels!(
    dot_q2_k,
    deq_q2_k,
    84,
    8,
    |blk| (h2f(blk.add(80)), h2f(blk.add(82))),
    |h, r| {
        let (d, dmin) = h;
        let (s0, s1) = (*blk.add(2 * r), *blk.add(2 * r + 1));
        let q = bits32(blk.add(16 + (r / 4) * 32), 2 * (r % 4) as u32, 3);
        k_weights(
            q,
            [d * (s0 & 15) as f32, d * (s1 & 15) as f32],
            [dmin * (s0 >> 4) as f32, dmin * (s1 >> 4) as f32],
        )
    }
);

// Q3_K, 110 bytes: [0..32] hmask (bit r of hmask[i] = high bit of weight r*32 + i; 1 means +0, 0 means -4),
// [32..96] qs (low 2 bits, same layout as Q2_K), [96..108] 16 x 6-bit scales (minus 32), [108..110] d.
// w = (d * scale) * q.
block_kernels!(
    dot_q3_k,
    deq_q3_k,
    110,
    8,
    |blk| {
        let d = h2f(blk.add(108));
        q3_k_scales(std::slice::from_raw_parts(blk.add(96), 12)).map(|s| d * s as f32)
    },
    |dl, r| {
        let low = bits32(blk.add(32 + (r / 4) * 32), 2 * (r % 4) as u32, 3);
        let high = bits32(blk, r as u32, 1);
        let four = _mm256_set1_epi32(4);
        let q = [0, 1, 2, 3].map(|k| {
            _mm256_sub_epi32(_mm256_or_si256(low[k], _mm256_slli_epi32(high[k], 2)), four)
        });
        k_weights_nomin(q, [dl[2 * r], dl[2 * r + 1]])
    }
);

/// Per sub-block `d * scale` and `dmin * min` of a Q4_K/Q5_K block (header at `blk`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn k4_head(blk: *const u8) -> ([f32; 8], [f32; 8]) {
    let (d, dmin) = (h2f(blk), h2f(blk.add(2)));
    let s = std::slice::from_raw_parts(blk.add(4), 12);
    let (mut dl, mut ml) = ([0f32; 8], [0f32; 8]);
    for g in 0..8 {
        let (sc, m) = k4_scale_min(s, g);
        dl[g] = d * sc as f32;
        ml[g] = dmin * m as f32;
    }
    (dl, ml)
}

// Q4_K, 144 bytes: [0..2] d, [2..4] dmin, [4..16] 8 x (6-bit scale, 6-bit min), [16..144] qs: sub-block g
// (32 weights) is the low (g even) or high (g odd) nibbles of qs[(g/2)*32 ..][..32].
// w = (d * scale) * q - (dmin * min).
block_kernels!(dot_q4_k, deq_q4_k, 144, 8, |blk| k4_head(blk), |h, g| {
    let q = bits32(blk.add(16 + (g / 2) * 32), 4 * (g % 2) as u32, 15);
    k_weights(q, [h.0[g]; 2], [h.1[g]; 2])
});

// Q5_K, 176 bytes: [0..16] as Q4_K, [16..48] qh (bit g of qh[i] = bit 4 of weight g*32 + i),
// [48..176] qs as Q4_K's. w = (d * scale) * q - (dmin * min).
block_kernels!(dot_q5_k, deq_q5_k, 176, 8, |blk| k4_head(blk), |h, g| {
    let lo = bits32(blk.add(48 + (g / 2) * 32), 4 * (g % 2) as u32, 15);
    let hi = bits32(blk.add(16), g as u32, 1);
    let q = [0, 1, 2, 3].map(|k| _mm256_or_si256(lo[k], _mm256_slli_epi32(hi[k], 4)));
    k_weights(q, [h.0[g]; 2], [h.1[g]; 2])
});

// Q6_K, 210 bytes: [0..128] ql, [128..192] qh, [192..208] 16 x i8 scales, [208..210] d. Run r = j*4 + s
// (half j, quarter s): low 4 bits from ql[j*64 + (s%2)*32 ..][..32] >> 4*(s/2), high 2 bits from
// qh[j*32 ..][..32] >> 2s. w = (d * scale) * (q - 32).
block_kernels!(
    dot_q6_k,
    deq_q6_k,
    210,
    8,
    |blk| {
        let d = h2f(blk.add(208));
        std::array::from_fn::<f32, 16, _>(|k| d * (*blk.add(192 + k) as i8) as f32)
    },
    |dl, r| {
        let (j, s) = (r / 4, r % 4);
        let lo = bits32(blk.add(j * 64 + (s % 2) * 32), 4 * (s / 2) as u32, 15);
        let hi = bits32(blk.add(128 + j * 32), 2 * s as u32, 3);
        let off = _mm256_set1_epi32(32);
        let q = [0, 1, 2, 3]
            .map(|k| _mm256_sub_epi32(_mm256_or_si256(lo[k], _mm256_slli_epi32(hi[k], 4)), off));
        k_weights_nomin(q, [dl[2 * r], dl[2 * r + 1]])
    }
);
