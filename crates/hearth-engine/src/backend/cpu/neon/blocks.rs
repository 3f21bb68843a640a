//! NEON decoding of GGML block types, 32 weights (eight `float32x4_t`) per run, through `block_kernels!`.
//!
//! Byte layouts are documented beside the scalar reference (`tensor/quants/legacy.rs`, `kquants.rs`) and
//! repeated briefly here. A run's 32 integer codes are built as two `int8x16_t` (weights 0..16 and 16..32),
//! widened exactly to f32, and scaled with the reference's f32 operations (a product, then a separate add or
//! subtract; never fused), so dequantizing here is bit-exact with the reference.

use std::arch::aarch64::*;

use super::h2f;
use crate::tensor::quants::{k4_scale_min, q3_k_scales};

/// Sixteen signed bytes as four f32 vectors (exact).
#[inline]
#[target_feature(enable = "neon")]
unsafe fn i8x16_to_f32(v: int8x16_t) -> [float32x4_t; 4] {
    let (lo, hi) = (vmovl_s8(vget_low_s8(v)), vmovl_high_s8(v));
    [
        vcvtq_f32_s32(vmovl_s16(vget_low_s16(lo))),
        vcvtq_f32_s32(vmovl_high_s16(lo)),
        vcvtq_f32_s32(vmovl_s16(vget_low_s16(hi))),
        vcvtq_f32_s32(vmovl_high_s16(hi)),
    ]
}

/// A run's 32 codes (`c[0]`: weights 0..16, `c[1]`: 16..32) as eight f32 vectors in weight order.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn codes_to_f32(c: [int8x16_t; 2]) -> [float32x4_t; 8] {
    let (a, b) = (i8x16_to_f32(c[0]), i8x16_to_f32(c[1]));
    [a[0], a[1], a[2], a[3], b[0], b[1], b[2], b[3]]
}

/// Unsigned codes minus `off`, as signed bytes (every code here minus its offset fits in an i8).
#[inline]
#[target_feature(enable = "neon")]
pub(super) unsafe fn offset(c: [uint8x16_t; 2], off: i8) -> [int8x16_t; 2] {
    c.map(|v| vsubq_s8(vreinterpretq_s8_u8(v), vdupq_n_s8(off)))
}

/// The 32 nibbles of the 16 bytes at `p` in block order: low nibbles are weights 0..16, high 16..32.
#[inline]
#[target_feature(enable = "neon")]
pub(super) unsafe fn nibbles(p: *const u8) -> [uint8x16_t; 2] {
    let q = vld1q_u8(p);
    [vandq_u8(q, vdupq_n_u8(0x0f)), vshrq_n_u8::<4>(q)]
}

/// The 32 five-bit codes of a Q5_0/Q5_1 block: nibbles at `qs`, plus bit `e` of the little-endian u32 at
/// `qh` as bit 4 of weight `e`.
#[inline]
#[target_feature(enable = "neon")]
pub(super) unsafe fn codes5(qh: *const u8, qs: *const u8) -> [uint8x16_t; 2] {
    let h = vreinterpretq_u8_u32(vdupq_n_u32(u32::from_le(
        (qh as *const u32).read_unaligned(),
    )));
    // Byte k of `h` spread over the eight lanes of weights 8k..8k+8, then lane e tests bit e % 8.
    const SPREAD: [[u8; 16]; 2] = [
        [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1],
        [2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3],
    ];
    let bit = vreinterpretq_u8_u64(vdupq_n_u64(0x8040_2010_0804_0201));
    let n = nibbles(qs);
    [0, 1].map(|k| {
        let spread = vqtbl1q_u8(h, vld1q_u8(SPREAD[k].as_ptr()));
        vorrq_u8(n[k], vandq_u8(vtstq_u8(spread, bit), vdupq_n_u8(0x10)))
    })
}

/// The 32 bytes at `p`, each shifted right by `shift` and masked with `mask`.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn bits32(p: *const u8, shift: usize, mask: u8) -> [uint8x16_t; 2] {
    let s = vdupq_n_s8(-(shift as i8));
    [0, 16].map(|o| vandq_u8(vshlq_u8(vld1q_u8(p.add(o)), s), vdupq_n_u8(mask)))
}

/// `a | (b << SHIFT)` bytewise, for assembling codes from separately stored bit fields.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn merge<const SHIFT: i32>(a: [uint8x16_t; 2], b: [uint8x16_t; 2]) -> [uint8x16_t; 2] {
    [0, 1].map(|k| vorrq_u8(a[k], vshlq_n_u8::<SHIFT>(b[k])))
}

/// `d * q` per lane (Q4_0, Q5_0 and Q8_0 after their integer offsets).
#[inline]
#[target_feature(enable = "neon")]
unsafe fn scale(q: [int8x16_t; 2], d: f32) -> [float32x4_t; 8] {
    codes_to_f32(q).map(|v| vmulq_n_f32(v, d))
}

/// `d * q + m` per lane (Q4_1, Q5_1): product rounded, then the add.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn scale_min(q: [uint8x16_t; 2], d: f32, m: f32) -> [float32x4_t; 8] {
    let mv = vdupq_n_f32(m);
    codes_to_f32(offset(q, 0)).map(|v| vaddq_f32(vmulq_n_f32(v, d), mv))
}

/// `dl * q - ml` per lane with (dl[0], ml[0]) for weights 0..16 and (dl[1], ml[1]) for 16..32 (K-quant
/// sub-blocks of 16 weights; pass the same pair twice for 32-weight sub-blocks).
#[inline]
#[target_feature(enable = "neon")]
unsafe fn k_weights(q: [uint8x16_t; 2], dl: [f32; 2], ml: [f32; 2]) -> [float32x4_t; 8] {
    let w = codes_to_f32(offset(q, 0));
    let m = [vdupq_n_f32(ml[0]), vdupq_n_f32(ml[1])];
    std::array::from_fn(|k| vsubq_f32(vmulq_n_f32(w[k], dl[k / 4]), m[k / 4]))
}

/// `dl * q` per lane (dl[0] for weights 0..16, dl[1] for 16..32): Q3_K and Q6_K have no mins.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn k_weights_nomin(q: [int8x16_t; 2], dl: [f32; 2]) -> [float32x4_t; 8] {
    let w = codes_to_f32(q);
    std::array::from_fn(|k| vmulq_n_f32(w[k], dl[k / 4]))
}

// Q4_0, 18 bytes: [0..2] d (f16), [2..18] 32 nibbles. w = d * (q - 8).
block_kernels!(dot_q4_0, deq_q4_0, 18, 1, |blk| h2f(blk), |d, _r| {
    scale(offset(nibbles(blk.add(2)), 8), d)
});

// Q4_1, 20 bytes: [0..2] d, [2..4] m (f16), [4..20] 32 nibbles. w = d * q + m.
block_kernels!(
    dot_q4_1,
    deq_q4_1,
    20,
    1,
    |blk| (h2f(blk), h2f(blk.add(2))),
    |h, _r| { scale_min(nibbles(blk.add(4)), h.0, h.1) }
);

// Q5_0, 22 bytes: [0..2] d, [2..6] qh (u32, bit e = weight e's bit 4), [6..22] nibbles. w = d * (q - 16).
block_kernels!(dot_q5_0, deq_q5_0, 22, 1, |blk| h2f(blk), |d, _r| {
    scale(offset(codes5(blk.add(2), blk.add(6)), 16), d)
});

// Q5_1, 24 bytes: [0..2] d, [2..4] m, [4..8] qh, [8..24] nibbles. w = d * q + m.
block_kernels!(
    dot_q5_1,
    deq_q5_1,
    24,
    1,
    |blk| (h2f(blk), h2f(blk.add(2))),
    |h, _r| { scale_min(codes5(blk.add(4), blk.add(8)), h.0, h.1) }
);

// Q8_0, 34 bytes: [0..2] d, [2..34] 32 x i8. w = q * d.
block_kernels!(dot_q8_0, deq_q8_0, 34, 1, |blk| h2f(blk), |d, _r| {
    scale(
        [
            vld1q_s8(blk.add(2) as *const i8),
            vld1q_s8(blk.add(18) as *const i8),
        ],
        d,
    )
});

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
        let q = bits32(blk.add(16 + (r / 4) * 32), 2 * (r % 4), 3);
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
        let low = bits32(blk.add(32 + (r / 4) * 32), 2 * (r % 4), 3);
        let high = bits32(blk, r, 1);
        k_weights_nomin(offset(merge::<2>(low, high), 4), [dl[2 * r], dl[2 * r + 1]])
    }
);

/// Per sub-block `d * scale` and `dmin * min` of a Q4_K/Q5_K block (header at `blk`).
#[inline]
#[target_feature(enable = "neon")]
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
    let q = bits32(blk.add(16 + (g / 2) * 32), 4 * (g % 2), 15);
    k_weights(q, [h.0[g]; 2], [h.1[g]; 2])
});

// Q5_K, 176 bytes: [0..16] as Q4_K, [16..48] qh (bit g of qh[i] = bit 4 of weight g*32 + i),
// [48..176] qs as Q4_K's. w = (d * scale) * q - (dmin * min).
block_kernels!(dot_q5_k, deq_q5_k, 176, 8, |blk| k4_head(blk), |h, g| {
    let lo = bits32(blk.add(48 + (g / 2) * 32), 4 * (g % 2), 15);
    let hi = bits32(blk.add(16), g, 1);
    k_weights(merge::<4>(lo, hi), [h.0[g]; 2], [h.1[g]; 2])
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
        let lo = bits32(blk.add(j * 64 + (s % 2) * 32), 4 * (s / 2), 15);
        let hi = bits32(blk.add(128 + j * 32), 2 * s, 3);
        k_weights_nomin(offset(merge::<4>(lo, hi), 32), [dl[2 * r], dl[2 * r + 1]])
    }
);
