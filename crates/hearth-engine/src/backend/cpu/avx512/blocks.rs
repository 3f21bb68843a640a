//! AVX-512 decoding of GGML block types into f32 lanes, 16 weights per zmm register.
//!
//! Byte layouts are documented beside the scalar reference (`tensor/quants/legacy.rs`, `kquants.rs`) and
//! repeated briefly here. Every weight is the reference's f32 expression of its quant (a product, then a
//! separate add or subtract, never fused), so dequantizing is bit-exact. Where a block's weights take few
//! distinct values, those values are computed once per block or sub-block into a table (e.g. `d * (q - 8)`
//! for the 16 codes of Q4_0) and each weight is looked up with `vpermps`/`vpermt2ps`: the same rounded
//! numbers, fewer instructions than converting and scaling every lane. The `dot` kernels feed the weights
//! through `float.rs`'s summation order (4 accumulators over 64 weights, a lone 32-weight block into the
//! first two), so they are bit-identical with `f32_dot` over the dequantized row.

use std::arch::x86_64::*;

use super::float::reduce;

/// Defines `$dot(row, x) -> f32` and `$deq(row, out)` for a type of 32-weight blocks of `$bb` bytes, whose
/// block at a pointer decodes with `$block` to `[__m512; 2]`. Blocks go in pairs through the four
/// accumulators; an odd last block goes into the first two, as `f32_dot`'s 32-element step does.
///
/// Callers pass `x.len()` (resp. `out.len()`) a multiple of 32 and `row` with the blocks it needs.
macro_rules! blocks32 {
    ($dot:ident, $deq:ident, $bb:expr, $block:ident) => {
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")]
        pub(super) unsafe fn $dot(row: &[u8], x: &[f32]) -> f32 {
            let nb = x.len() / 32;
            debug_assert!(x.len().is_multiple_of(32) && row.len() >= nb * $bb);
            let (rp, xp) = (row.as_ptr(), x.as_ptr());
            let mut acc = [_mm512_setzero_ps(); 4];
            let mut b = 0;
            while b + 2 <= nb {
                let w = $block(rp.add(b * $bb));
                let v = $block(rp.add((b + 1) * $bb));
                let xb = xp.add(32 * b);
                acc[0] = _mm512_fmadd_ps(w[0], _mm512_loadu_ps(xb), acc[0]);
                acc[1] = _mm512_fmadd_ps(w[1], _mm512_loadu_ps(xb.add(16)), acc[1]);
                acc[2] = _mm512_fmadd_ps(v[0], _mm512_loadu_ps(xb.add(32)), acc[2]);
                acc[3] = _mm512_fmadd_ps(v[1], _mm512_loadu_ps(xb.add(48)), acc[3]);
                b += 2;
            }
            if b < nb {
                let w = $block(rp.add(b * $bb));
                let xb = xp.add(32 * b);
                acc[0] = _mm512_fmadd_ps(w[0], _mm512_loadu_ps(xb), acc[0]);
                acc[1] = _mm512_fmadd_ps(w[1], _mm512_loadu_ps(xb.add(16)), acc[1]);
            }
            reduce(acc)
        }

        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")]
        pub(super) unsafe fn $deq(row: &[u8], out: &mut [f32]) {
            let nb = out.len() / 32;
            debug_assert!(out.len().is_multiple_of(32) && row.len() >= nb * $bb);
            let (rp, op) = (row.as_ptr(), out.as_mut_ptr());
            for b in 0..nb {
                let w = $block(rp.add(b * $bb));
                _mm512_storeu_ps(op.add(32 * b), w[0]);
                _mm512_storeu_ps(op.add(32 * b + 16), w[1]);
            }
        }
    };
}

/// Defines `$dot` and `$deq` for a K-quant type of 256-weight super-blocks of `$bb` bytes: `$head(blk)`
/// computes what the block's weights share (scales), `$step(blk, &head, s)` decodes weights
/// `64s .. 64s + 64` (s = 0..4) to `[__m512; 4]`, which go through the four accumulators.
macro_rules! blocks256 {
    ($dot:ident, $deq:ident, $bb:expr, $head:ident, $step:ident) => {
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")]
        pub(super) unsafe fn $dot(row: &[u8], x: &[f32]) -> f32 {
            let nb = x.len() / 256;
            debug_assert!(x.len().is_multiple_of(256) && row.len() >= nb * $bb);
            let mut acc = [_mm512_setzero_ps(); 4];
            for b in 0..nb {
                let blk = row.as_ptr().add(b * $bb);
                let h = $head(blk);
                for s in 0..4 {
                    let w = $step(blk, &h, s);
                    let xs = x.as_ptr().add(256 * b + 64 * s);
                    for (k, ak) in acc.iter_mut().enumerate() {
                        *ak = _mm512_fmadd_ps(w[k], _mm512_loadu_ps(xs.add(16 * k)), *ak);
                    }
                }
            }
            reduce(acc)
        }

        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")]
        pub(super) unsafe fn $deq(row: &[u8], out: &mut [f32]) {
            let nb = out.len() / 256;
            debug_assert!(out.len().is_multiple_of(256) && row.len() >= nb * $bb);
            for b in 0..nb {
                let blk = row.as_ptr().add(b * $bb);
                let h = $head(blk);
                for s in 0..4 {
                    let w = $step(blk, &h, s);
                    let op = out.as_mut_ptr().add(256 * b + 64 * s);
                    for (k, wk) in w.iter().enumerate() {
                        _mm512_storeu_ps(op.add(16 * k), *wk);
                    }
                }
            }
        }
    };
}

/// The f16 at `p` (unaligned) as f32 (exact for every finite value; NaNs quieted). Broadcast rather than
/// inserted into a register: an insert would merge with, and wait for, whatever the register last held.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")]
unsafe fn h2f(p: *const u8) -> f32 {
    let bits = (p as *const i16).read_unaligned();
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_set1_epi16(bits)))
}

/// The f16 at `p` as f32 in every lane.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")]
unsafe fn h2f_splat(p: *const u8) -> __m512 {
    _mm512_cvtph_ps(_mm256_set1_epi16((p as *const i16).read_unaligned()))
}

/// Sixteen bytes at `p` (unaligned), zero-extended to i32 lanes.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")]
unsafe fn zext16(p: *const u8) -> __m512i {
    _mm512_cvtepu8_epi32(_mm_loadu_si128(p as *const __m128i))
}

/// `v >> c` per i32 lane (`c` usually a constant once the caller's loop is unrolled).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")]
unsafe fn srl(v: __m512i, c: usize) -> __m512i {
    _mm512_srl_epi32(v, _mm_cvtsi32_si128(c as i32))
}

/// `v << c` per i32 lane.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")]
unsafe fn sll(v: __m512i, c: usize) -> __m512i {
    _mm512_sll_epi32(v, _mm_cvtsi32_si128(c as i32))
}

/// Bit `from` of each lane of `v` moved to bit `to` (other bits shifted along, to be masked or ignored).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")]
unsafe fn move_bit(v: __m512i, from: usize, to: usize) -> __m512i {
    if from >= to {
        srl(v, from - to)
    } else {
        sll(v, to - from)
    }
}

/// Bits where `c` is set from `a`, the others from `b` (one `vpternlogd`).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")]
unsafe fn select(a: __m512i, b: __m512i, c: __m512i) -> __m512i {
    _mm512_ternarylogic_epi32(a, b, c, 0xe4)
}

/// `start, start + 1, ..., start + 15` as f32 lanes (exact small integers).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")]
unsafe fn ramp(start: f32) -> __m512 {
    let iota = _mm512_setr_ps(
        0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0, 13.0, 14.0, 15.0,
    );
    _mm512_add_ps(iota, _mm512_set1_ps(start))
}

/// Table of `d * c + m` for the 16 values `c` of `codes` (product rounded, then the add: the reference's
/// order for `d * q + m`).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")]
unsafe fn table_add(d: __m512, codes: __m512, m: __m512) -> __m512 {
    _mm512_add_ps(_mm512_mul_ps(d, codes), m)
}

/// Table of `d * c - m` (the K-quants' `dl * q - ml`).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")]
unsafe fn table_sub(d: f32, codes: __m512, m: f32) -> __m512 {
    _mm512_sub_ps(_mm512_mul_ps(_mm512_set1_ps(d), codes), _mm512_set1_ps(m))
}

/// Lanes `t[idx & 15]`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")]
unsafe fn look(idx: __m512i, t: __m512) -> __m512 {
    _mm512_permutexvar_ps(idx, t)
}

/// Lanes `lo[idx & 15]` where bit `i` of `hi_bits` is clear, `hi[idx & 15]` where it is set (bit 4 of a
/// Q5_0/Q5_1 code given as a mask).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")]
unsafe fn look5(idx: __m512i, lo: __m512, hi: __m512, hi_bits: u32) -> __m512 {
    _mm512_mask_permutexvar_ps(
        _mm512_permutexvar_ps(idx, lo),
        hi_bits as __mmask16,
        idx,
        hi,
    )
}

// Q4_0, 18 bytes: [0..2] d (f16), [2..18] 32 nibbles (weight i low nibble of byte i, weight i + 16 its high
// nibble). w = d * (q - 8).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")]
unsafe fn q4_0(blk: *const u8) -> [__m512; 2] {
    let t = _mm512_mul_ps(h2f_splat(blk), ramp(-8.0));
    let v = zext16(blk.add(2));
    [look(v, t), look(_mm512_srli_epi32(v, 4), t)]
}
blocks32!(dot_q4_0, deq_q4_0, 18, q4_0);

// Q4_1, 20 bytes: [0..2] d, [2..4] m (f16), [4..20] 32 nibbles. w = d * q + m.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")]
unsafe fn q4_1(blk: *const u8) -> [__m512; 2] {
    let t = table_add(h2f_splat(blk), ramp(0.0), h2f_splat(blk.add(2)));
    let v = zext16(blk.add(4));
    [look(v, t), look(_mm512_srli_epi32(v, 4), t)]
}
blocks32!(dot_q4_1, deq_q4_1, 20, q4_1);

// Q5_0, 22 bytes: [0..2] d, [2..6] qh (u32, bit e = weight e's bit 4), [6..22] nibbles. w = d * (q - 16).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")]
unsafe fn q5_0(blk: *const u8) -> [__m512; 2] {
    let d = h2f_splat(blk);
    let (lo, hi) = (_mm512_mul_ps(d, ramp(-16.0)), _mm512_mul_ps(d, ramp(0.0)));
    let qh = (blk.add(2) as *const u32).read_unaligned().to_le();
    let v = zext16(blk.add(6));
    [
        look5(v, lo, hi, qh),
        look5(_mm512_srli_epi32(v, 4), lo, hi, qh >> 16),
    ]
}
blocks32!(dot_q5_0, deq_q5_0, 22, q5_0);

// Q5_1, 24 bytes: [0..2] d, [2..4] m, [4..8] qh, [8..24] nibbles. w = d * q + m.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")]
unsafe fn q5_1(blk: *const u8) -> [__m512; 2] {
    let (d, m) = (h2f_splat(blk), h2f_splat(blk.add(2)));
    let (lo, hi) = (table_add(d, ramp(0.0), m), table_add(d, ramp(16.0), m));
    let qh = (blk.add(4) as *const u32).read_unaligned().to_le();
    let v = zext16(blk.add(8));
    [
        look5(v, lo, hi, qh),
        look5(_mm512_srli_epi32(v, 4), lo, hi, qh >> 16),
    ]
}
blocks32!(dot_q5_1, deq_q5_1, 24, q5_1);

// Q8_0, 34 bytes: [0..2] d, [2..34] 32 x i8. w = q * d.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")]
unsafe fn q8_0(blk: *const u8) -> [__m512; 2] {
    let d = h2f_splat(blk);
    let f = |p: *const u8| {
        let q = _mm512_cvtepi8_epi32(_mm_loadu_si128(p as *const __m128i));
        _mm512_mul_ps(_mm512_cvtepi32_ps(q), d)
    };
    [f(blk.add(2)), f(blk.add(18))]
}
blocks32!(dot_q8_0, deq_q8_0, 34, q8_0);

/// Sixteen per-sub-block factors `d * scale` of a K-quant block from its scales `q` (i32 lanes), stored so
/// that a step can broadcast one.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")]
unsafe fn factors16(q: __m512i, d: f32) -> [f32; 16] {
    let mut out = [0f32; 16];
    _mm512_storeu_ps(
        out.as_mut_ptr(),
        _mm512_mul_ps(_mm512_set1_ps(d), _mm512_cvtepi32_ps(q)),
    );
    out
}

// Q2_K, 84 bytes: [0..16] scales (per 16 weights: low nibble scale, high nibble min), [16..80] qs (weight
// j*128 + l*32 + i is bits 2l of qs[j*32 + i]), [80..82] d, [82..84] dmin. w = (d * scale) * q - (dmin * min).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")]
unsafe fn q2_k_head(blk: *const u8) -> ([f32; 16], [f32; 16]) {
    let s = zext16(blk);
    let dl = factors16(_mm512_and_si512(s, _mm512_set1_epi32(15)), h2f(blk.add(80)));
    let ml = factors16(_mm512_srli_epi32(s, 4), h2f(blk.add(82)));
    (dl, ml)
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")]
unsafe fn q2_k_step(blk: *const u8, h: &([f32; 16], [f32; 16]), s: usize) -> [__m512; 4] {
    let (j, l0) = (s / 2, 2 * (s % 2));
    let qs = blk.add(16 + 32 * j);
    let q = [zext16(qs), zext16(qs.add(16))];
    // Codes 0..3 repeated four times: the lookup ignores the next field's bits (2 and 3 of the index).
    let codes = _mm512_setr_ps(
        0.0, 1.0, 2.0, 3.0, 0.0, 1.0, 2.0, 3.0, 0.0, 1.0, 2.0, 3.0, 0.0, 1.0, 2.0, 3.0,
    );
    std::array::from_fn(|k| {
        let g = 4 * s + k;
        let t = table_sub(h.0[g], codes, h.1[g]);
        look(srl(q[k % 2], 2 * (l0 + k / 2)), t)
    })
}
blocks256!(dot_q2_k, deq_q2_k, 84, q2_k_head, q2_k_step);

// Q3_K, 110 bytes: [0..32] hmask (bit r of hmask[i] = high bit of weight r*32 + i; 1 means +0, 0 means -4),
// [32..96] qs (low 2 bits, layout as Q2_K), [96..108] 16 x 6-bit scales (minus 32), [108..110] d.
// w = (d * scale) * q.
/// The 12 scale bytes at `p` zero-extended to i32 lanes 0..12 (lanes 12..16 zero, bytes not read).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")]
unsafe fn scale_bytes12(p: *const u8) -> __m512i {
    _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(0x0fff, p as *const i8))
}

/// Lanes `(v[idx] >> shift) & mask`, per lane.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")]
unsafe fn field(v: __m512i, idx: [i32; 16], shift: [i32; 16], mask: [i32; 16]) -> __m512i {
    let ld = |a: [i32; 16]| _mm512_loadu_si512(a.as_ptr() as *const __m512i);
    let picked = _mm512_permutexvar_epi32(ld(idx), v);
    _mm512_and_si512(_mm512_srlv_epi32(picked, ld(shift)), ld(mask))
}

/// `d * scale` of a Q3_K block's 16 sub-blocks: the 6-bit scales (see `tensor::quants::q3_k_scales`) decoded
/// in one register.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")]
unsafe fn q3_k_head(blk: *const u8) -> [f32; 16] {
    let b = scale_bytes12(blk.add(96));
    // Low 4 bits: byte k % 8, low nibble for k < 8, high nibble after.
    let low = field(
        b,
        [0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 2, 3, 4, 5, 6, 7],
        [0, 0, 0, 0, 0, 0, 0, 0, 4, 4, 4, 4, 4, 4, 4, 4],
        [15; 16],
    );
    // Top 2 bits: bits 2 * (k / 4) of byte 8 + k % 4.
    let high = field(
        b,
        [8, 9, 10, 11, 8, 9, 10, 11, 8, 9, 10, 11, 8, 9, 10, 11],
        [0, 0, 0, 0, 2, 2, 2, 2, 4, 4, 4, 4, 6, 6, 6, 6],
        [3; 16],
    );
    let sc = _mm512_sub_epi32(
        _mm512_or_si512(low, _mm512_slli_epi32(high, 4)),
        _mm512_set1_epi32(32),
    );
    factors16(sc, h2f(blk.add(108)))
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")]
unsafe fn q3_k_step(blk: *const u8, dl: &[f32; 16], s: usize) -> [__m512; 4] {
    let (j, l0) = (s / 2, 2 * (s % 2));
    let qs = blk.add(32 + 32 * j);
    let q = [zext16(qs), zext16(qs.add(16))];
    let hm = [zext16(blk), zext16(blk.add(16))];
    // Index = low 2 bits | high bit << 2, so code = index - 4; repeated twice (bit 3 of the index is noise).
    let codes = _mm512_setr_ps(
        -4.0, -3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0, -4.0, -3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0,
    );
    let low_bits = _mm512_set1_epi32(3);
    std::array::from_fn(|k| {
        let (l, half) = (l0 + k / 2, k % 2);
        let r = 4 * j + l;
        let idx = select(srl(q[half], 2 * l), move_bit(hm[half], r, 2), low_bits);
        look(idx, _mm512_mul_ps(_mm512_set1_ps(dl[4 * s + k]), codes))
    })
}
blocks256!(dot_q3_k, deq_q3_k, 110, q3_k_head, q3_k_step);

/// Per 32-weight sub-block `d * scale` (lanes 0..8) and `dmin * min` (lanes 8..16) of a Q4_K/Q5_K block
/// (header at `blk`; the packing is described at `tensor::quants::k4_scale_min`), decoded in one register.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")]
unsafe fn k4_head(blk: *const u8) -> __m512 {
    let b = scale_bytes12(blk.add(4));
    // Sub-blocks 0..4: the low 6 bits of byte g (scale) or g + 4 (min). 4..8: the scale's or min's nibble
    // of byte g + 4.
    let low = field(
        b,
        [0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 8, 9, 10, 11],
        [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 4, 4, 4],
        [
            63, 63, 63, 63, 15, 15, 15, 15, 63, 63, 63, 63, 15, 15, 15, 15,
        ],
    );
    // Sub-blocks 4..8: bits 4..6 from the top 2 bits of byte g - 4 (scale) or g (min), here shifted
    // right by 2 and masked in place.
    let high = field(
        b,
        [0, 0, 0, 0, 0, 1, 2, 3, 0, 0, 0, 0, 4, 5, 6, 7],
        [2; 16],
        [
            0, 0, 0, 0, 0x30, 0x30, 0x30, 0x30, 0, 0, 0, 0, 0x30, 0x30, 0x30, 0x30,
        ],
    );
    let d = _mm512_mask_blend_ps(0xff00, h2f_splat(blk), h2f_splat(blk.add(2)));
    _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_or_si512(low, high)))
}

/// Lane `i` of `v` in every lane.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")]
unsafe fn lane(v: __m512, i: usize) -> __m512 {
    _mm512_permutexvar_ps(_mm512_set1_epi32(i as i32), v)
}

/// Sub-block `g`'s table `(d * scale) * q - (dmin * min)` for q = `start ..` from a `k4_head`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")]
unsafe fn k4_table(h: __m512, g: usize, start: f32) -> __m512 {
    _mm512_sub_ps(_mm512_mul_ps(lane(h, g), ramp(start)), lane(h, 8 + g))
}

// Q4_K, 144 bytes: [0..2] d, [2..4] dmin, [4..16] 8 x (6-bit scale, 6-bit min), [16..144] qs: sub-block g
// (32 weights) is the low (g even) or high (g odd) nibbles of qs[(g/2)*32 ..][..32].
// w = (d * scale) * q - (dmin * min).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")]
unsafe fn q4_k_step(blk: *const u8, h: &__m512, s: usize) -> [__m512; 4] {
    let qs = blk.add(16 + 32 * s);
    let (v0, v1) = (zext16(qs), zext16(qs.add(16)));
    let (g0, g1) = (2 * s, 2 * s + 1);
    let t0 = k4_table(*h, g0, 0.0);
    let t1 = k4_table(*h, g1, 0.0);
    [
        look(v0, t0),
        look(v1, t0),
        look(_mm512_srli_epi32(v0, 4), t1),
        look(_mm512_srli_epi32(v1, 4), t1),
    ]
}
blocks256!(dot_q4_k, deq_q4_k, 144, k4_head, q4_k_step);

// Q5_K, 176 bytes: [0..16] as Q4_K, [16..48] qh (bit g of qh[i] = bit 4 of weight g*32 + i),
// [48..176] qs as Q4_K's. w = (d * scale) * q - (dmin * min).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")]
unsafe fn q5_k_step(blk: *const u8, h: &__m512, s: usize) -> [__m512; 4] {
    let qs = blk.add(48 + 32 * s);
    let v = [zext16(qs), zext16(qs.add(16))];
    let qh = [zext16(blk.add(16)), zext16(blk.add(32))];
    let nibble = _mm512_set1_epi32(15);
    std::array::from_fn(|k| {
        let (g, half) = (2 * s + k / 2, k % 2);
        let low = if k < 2 {
            v[half]
        } else {
            _mm512_srli_epi32(v[half], 4)
        };
        // 5-bit index: bits 0..3 the nibble, bit 4 from qh (higher bits are ignored by the lookup).
        let idx = select(low, move_bit(qh[half], g, 4), nibble);
        let (lo, hi) = (k4_table(*h, g, 0.0), k4_table(*h, g, 16.0));
        _mm512_permutex2var_ps(lo, idx, hi)
    })
}
blocks256!(dot_q5_k, deq_q5_k, 176, k4_head, q5_k_step);

// Q6_K, 210 bytes: [0..128] ql, [128..192] qh, [192..208] 16 x i8 scales, [208..210] d. Weight j*128 + n has
// low 4 bits (ql[j*64 + n%64] >> 4*(n/64)) & 15 and high 2 bits (qh[j*32 + n%32] >> 2*(n/32)) & 3.
// w = (d * scale) * (q - 32).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")]
unsafe fn q6_k_head(blk: *const u8) -> [f32; 16] {
    let sc = _mm512_cvtepi8_epi32(_mm_loadu_si128(blk.add(192) as *const __m128i));
    factors16(sc, h2f(blk.add(208)))
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")]
unsafe fn q6_k_step(blk: *const u8, dl: &[f32; 16], s: usize) -> [__m512; 4] {
    let (j, upper) = (s / 2, s % 2 == 1);
    // The 64 codes as bytes, built 64 at a time: weights n = 64*(s%2) .. +64 of half j.
    let ql = _mm512_loadu_si512(blk.add(64 * j) as *const __m512i);
    let low = if upper { _mm512_srli_epi16(ql, 4) } else { ql };
    // qh[j*32 ..][..32] in both 256-bit halves; bits 2*(n/32) .. +2 of each byte moved to bits 4..6
    // (16-bit shifts by at most 4 fill each byte's bits 4..6 from its own bits), then masked.
    let qh = _mm512_broadcast_i64x4(_mm256_loadu_si256(blk.add(128 + 32 * j) as *const __m256i));
    let (by2, by4) = (0x0002_0002_0002_0002, 0x0004_0004_0004_0004);
    let high = if upper {
        // n/32 = 2 in the lower half (already in place), 3 in the upper (shift right 2).
        _mm512_srlv_epi16(qh, _mm512_set_epi64(by2, by2, by2, by2, 0, 0, 0, 0))
    } else {
        // n/32 = 0 in the lower half (shift left 4), 1 in the upper (shift left 2).
        _mm512_sllv_epi16(qh, _mm512_set_epi64(by2, by2, by2, by2, by4, by4, by4, by4))
    };
    let high = _mm512_and_si512(high, _mm512_set1_epi8(0x30));
    let q = select(low, high, _mm512_set1_epi8(0x0f));
    let q = _mm512_sub_epi8(q, _mm512_set1_epi8(32));
    let quarters = [
        _mm512_castsi512_si128(q),
        _mm512_extracti32x4_epi32(q, 1),
        _mm512_extracti32x4_epi32(q, 2),
        _mm512_extracti32x4_epi32(q, 3),
    ];
    std::array::from_fn(|k| {
        let codes = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(quarters[k]));
        _mm512_mul_ps(_mm512_set1_ps(dl[4 * s + k]), codes)
    })
}
blocks256!(dot_q6_k, deq_q6_k, 210, q6_k_head, q6_k_step);
