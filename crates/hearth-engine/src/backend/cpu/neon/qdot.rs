//! NEON integer dot products against 8-bit quantized activations, bit-identical to the scalar reference in
//! `backend/cpu/qdot.rs` (whose module docs give the layout and the accumulation order), and the activation
//! quantizers.
//!
//! A block's 32 weight codes become two `int8x16_t` of signed codes (offsets such as Q4_0's `- 8` applied in
//! the bytes, where they fit); their products with the activations are summed exactly into i32 lanes, by
//! `sdot` where the CPU has `dotprod`, else by widening multiplies (`smull` to i16, each product fits, then
//! `sadalp` into i32). Both give the same exact block sums, so both give the reference's result. For the
//! 32-weight types, four blocks' sums are reduced into one vector and their f32 terms computed lane-wise with
//! the reference's operations; block `b` lands in lane `b % 8` as in the reference, and blocks past the last
//! group of eight are added one at a time. The K-quant kernels reduce each 256-block to exact i32 sums and
//! share the reference's f32 term code.

use std::arch::aarch64::*;
use std::arch::asm;

use super::blocks::{codes5, nibbles, offset};
use super::{f16x4_bits, h2f, Neon};
use crate::backend::cpu::qdot::{
    q4_k_msum, q4_k_scales, q6_k_offset, q8_scale, reduce_lanes, term, term_min, term_q4_k, Q8KRow,
    Q8Row, QK8, QK_K,
};
use crate::tensor::DType;

impl Neon {
    /// `qdot(dtype, row, xq)`; the caller has checked `dtype` is supported and `row` holds the blocks.
    pub(in crate::backend::cpu) fn qdot(self, dtype: DType, row: &[u8], xq: &Q8Row) -> f32 {
        debug_assert!(row.len() >= dtype.bytes_for(xq.len()).unwrap_or(usize::MAX));
        debug_assert!(xq.d.len() * QK8 == xq.qs.len() && xq.sums.len() == xq.d.len());
        // SAFETY: the token proves NEON, and `dotprod` only where the CPU reported it; the caller checked
        // `row` holds the blocks of `xq`.
        unsafe {
            if self.dotprod {
                qdot_sdot(dtype, row, xq)
            } else {
                qdot_widening(dtype, row, xq)
            }
        }
    }

    /// `qdot_k(dtype, row, xq)`; the caller has checked `dtype` is supported and `row` holds the blocks.
    pub(in crate::backend::cpu) fn qdot_k(self, dtype: DType, row: &[u8], xq: &Q8KRow) -> f32 {
        debug_assert!(row.len() >= dtype.bytes_for(xq.len()).unwrap_or(usize::MAX));
        debug_assert!(xq.d.len() * QK_K == xq.qs.len() && xq.bsums.len() == 16 * xq.d.len());
        // SAFETY: as in `qdot`.
        unsafe {
            if self.dotprod {
                qdot_k_sdot(dtype, row, xq)
            } else {
                qdot_k_widening(dtype, row, xq)
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
        // SAFETY: the token proves NEON; the sizes were checked above.
        unsafe { quantize_q8(x, out) }
    }

    /// `quantize_q8k(x, out)` with `out` already sized for `x` (a multiple of 256 values).
    pub(in crate::backend::cpu) fn quantize_q8k(self, x: &[f32], out: &mut Q8KRow) {
        assert!(
            out.qs.len() == x.len()
                && out.d.len() * QK_K == x.len()
                && out.bsums.len() == 16 * out.d.len()
        );
        // SAFETY: the token proves NEON; the sizes were checked above.
        unsafe { quantize_q8k(x, out) }
    }
}

/// How a kernel sums products of signed bytes exactly into i32 lanes.
pub(super) trait ByteDot {
    /// `acc` plus the sixteen products `a[i] * b[i]`, spread over its four lanes (which lane holds which
    /// product differs between implementations; the lanes' total is exact in both).
    unsafe fn dot16(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t;
}

/// `sdot` (the `dotprod` extension): four products per lane in one instruction.
pub(super) struct Sdot;

impl ByteDot for Sdot {
    /// Only inlined into `#[target_feature(enable = "neon,dotprod")]` functions (the `*_sdot` entry points).
    #[inline(always)]
    unsafe fn dot16(mut acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
        // SAFETY: reads and writes registers only; the callers run only where `dotprod` was detected.
        asm!(
            "sdot {acc:v}.4s, {a:v}.16b, {b:v}.16b",
            acc = inout(vreg) acc,
            a = in(vreg) a,
            b = in(vreg) b,
            options(pure, nomem, nostack)
        );
        acc
    }
}

/// Base NEON: `smull` (each i8 x i8 product fits an i16, even -128 x -128), then `sadalp` adds pairs into
/// the i32 lanes.
pub(super) struct Widening;

impl ByteDot for Widening {
    #[inline(always)]
    unsafe fn dot16(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
        let acc = vpadalq_s16(acc, vmull_s8(vget_low_s8(a), vget_low_s8(b)));
        vpadalq_s16(acc, vmull_high_s8(a, b))
    }
}

/// Partial sums of 32 codes (`c[0]`: 0..16, `c[1]`: 16..32) times the 32 activations at `x`.
#[inline(always)]
pub(super) unsafe fn dot32<D: ByteDot>(c: [int8x16_t; 2], x: *const i8) -> int32x4_t {
    let acc = D::dot16(vdupq_n_s32(0), c[0], vld1q_s8(x));
    D::dot16(acc, c[1], vld1q_s8(x.add(16)))
}

/// Unsigned codes (all below 128) as signed bytes.
#[inline(always)]
unsafe fn signed(c: [uint8x16_t; 2]) -> [int8x16_t; 2] {
    c.map(|v| vreinterpretq_s8_u8(v))
}

#[target_feature(enable = "neon,dotprod")]
unsafe fn qdot_sdot(dtype: DType, row: &[u8], xq: &Q8Row) -> f32 {
    qdot_with::<Sdot>(dtype, row, xq)
}

#[target_feature(enable = "neon")]
unsafe fn qdot_widening(dtype: DType, row: &[u8], xq: &Q8Row) -> f32 {
    qdot_with::<Widening>(dtype, row, xq)
}

#[inline(always)]
unsafe fn qdot_with<D: ByteDot>(dtype: DType, row: &[u8], xq: &Q8Row) -> f32 {
    match dtype {
        DType::Q8_0 => blocks32::<34, false>(row, xq, |p, x| {
            let w = [
                vld1q_s8(p.add(2) as *const i8),
                vld1q_s8(p.add(18) as *const i8),
            ];
            dot32::<D>(w, x)
        }),
        DType::Q4_0 => {
            blocks32::<18, false>(row, xq, |p, x| dot32::<D>(offset(nibbles(p.add(2)), 8), x))
        }
        DType::Q4_1 => {
            blocks32::<20, true>(row, xq, |p, x| dot32::<D>(signed(nibbles(p.add(4))), x))
        }
        DType::Q5_0 => blocks32::<22, false>(row, xq, |p, x| {
            dot32::<D>(offset(codes5(p.add(2), p.add(6)), 16), x)
        }),
        DType::Q5_1 => blocks32::<24, true>(row, xq, |p, x| {
            dot32::<D>(signed(codes5(p.add(4), p.add(8))), x)
        }),
        _ => unreachable!("qdot: unsupported {dtype}"),
    }
}

/// The f32 terms of the four blocks of `BB` bytes from `rp` (f16 scale at offset 0, with `MIN` an f16 min at
/// offset 2), given their exact sums `isum`, the activation scales at `dx` and block sums at `sx`.
#[inline(always)]
unsafe fn terms4<const BB: usize, const MIN: bool>(
    rp: *const u8,
    isum: int32x4_t,
    dx: *const f32,
    sx: *const i32,
) -> float32x4_t {
    let f16s = |o: usize| {
        let h: [u16; 4] =
            std::array::from_fn(|j| (rp.add(j * BB + o) as *const u16).read_unaligned());
        f16x4_bits(vld1_u16(h.as_ptr()))
    };
    let dx = vld1q_f32(dx);
    let t = vmulq_f32(vmulq_f32(f16s(0), dx), vcvtq_f32_s32(isum));
    if MIN {
        let m = vmulq_f32(f16s(2), dx);
        vaddq_f32(t, vmulq_f32(m, vcvtq_f32_s32(vld1q_s32(sx))))
    } else {
        t
    }
}

/// `qdot` for a 32-weight block type of `BB` bytes: `blk(block, activations)` gives a block's exact partial
/// sums of `code * qx` (offsets already applied to the codes); `MIN` says the f16 scale is followed by an
/// f16 min whose term uses the activations' block sums.
#[inline(always)]
unsafe fn blocks32<const BB: usize, const MIN: bool>(
    row: &[u8],
    xq: &Q8Row,
    blk: impl Fn(*const u8, *const i8) -> int32x4_t,
) -> f32 {
    let nb = xq.d.len();
    let (rp, xp) = (row.as_ptr(), xq.qs.as_ptr());
    let mut acc = [vdupq_n_f32(0.0); 2];
    let groups = nb / 8;
    for g in 0..groups {
        for (half, a) in acc.iter_mut().enumerate() {
            let b0 = 8 * g + 4 * half;
            let v: [int32x4_t; 4] =
                std::array::from_fn(|j| blk(rp.add((b0 + j) * BB), xp.add((b0 + j) * QK8)));
            // Lane j: block b0 + j's exact sum.
            let isum = vpaddq_s32(vpaddq_s32(v[0], v[1]), vpaddq_s32(v[2], v[3]));
            let t = terms4::<BB, MIN>(
                rp.add(b0 * BB),
                isum,
                xq.d.as_ptr().add(b0),
                xq.sums.as_ptr().add(b0),
            );
            *a = vaddq_f32(*a, t);
        }
    }
    let mut lanes = [0.0f32; 8];
    vst1q_f32(lanes.as_mut_ptr(), acc[0]);
    vst1q_f32(lanes.as_mut_ptr().add(4), acc[1]);
    for b in groups * 8..nb {
        let p = rp.add(b * BB);
        let isum = vaddvq_s32(blk(p, xp.add(b * QK8)));
        lanes[b % 8] += if MIN {
            term_min(h2f(p), h2f(p.add(2)), xq.d[b], isum, xq.sums[b])
        } else {
            term(h2f(p), xq.d[b], isum)
        };
    }
    reduce_lanes(lanes)
}

#[target_feature(enable = "neon,dotprod")]
unsafe fn qdot_k_sdot(dtype: DType, row: &[u8], xq: &Q8KRow) -> f32 {
    qdot_k_with::<Sdot>(dtype, row, xq)
}

#[target_feature(enable = "neon")]
unsafe fn qdot_k_widening(dtype: DType, row: &[u8], xq: &Q8KRow) -> f32 {
    qdot_k_with::<Widening>(dtype, row, xq)
}

#[inline(always)]
unsafe fn qdot_k_with<D: ByteDot>(dtype: DType, row: &[u8], xq: &Q8KRow) -> f32 {
    match dtype {
        DType::Q4_K => qdot_q4_k::<D>(row, xq),
        DType::Q5_K => qdot_q5_k::<D>(row, xq),
        DType::Q6_K => qdot_q6_k::<D>(row, xq),
        _ => unreachable!("qdot_k: unsupported {dtype}"),
    }
}

/// Q4_K and Q5_K share everything but their codes: `codes(block, g)` gives sub-block `g`'s 32 codes. Per
/// 256-block, `isum = sum_g sc_g * dot(codes_g, x_g)` exactly, then the reference's term.
#[inline(always)]
unsafe fn qdot_q4_k_like<D: ByteDot, const BB: usize>(
    row: &[u8],
    xq: &Q8KRow,
    codes: impl Fn(*const u8, usize) -> [int8x16_t; 2],
) -> f32 {
    let mut lanes = [0.0f32; 8];
    for b in 0..xq.d.len() {
        let blk = row.as_ptr().add(b * BB);
        let (sc, mins) = q4_k_scales(std::slice::from_raw_parts(blk.add(4), 12));
        let x = xq.qs.as_ptr().add(b * QK_K);
        let mut acc = vdupq_n_s32(0);
        for (g, &s) in sc.iter().enumerate() {
            acc = vmlaq_n_s32(acc, dot32::<D>(codes(blk, g), x.add(32 * g)), s as i32);
        }
        let msum = q4_k_msum(mins, &xq.bsums[b * 16..b * 16 + 16]);
        lanes[b % 8] += term_q4_k(h2f(blk), h2f(blk.add(2)), xq.d[b], vaddvq_s32(acc), msum);
    }
    reduce_lanes(lanes)
}

/// Sub-block `g`'s nibbles of the 32 bytes at `p`: low nibbles for even `g`, high for odd.
#[inline(always)]
unsafe fn k_nibbles(p: *const u8, g: usize) -> [uint8x16_t; 2] {
    [0, 16].map(|o| {
        let q = vld1q_u8(p.add(o));
        if g.is_multiple_of(2) {
            vandq_u8(q, vdupq_n_u8(0x0f))
        } else {
            vshrq_n_u8::<4>(q)
        }
    })
}

/// Q4_K: sub-block `g` is the low (even `g`) or high nibbles of `qs[(g/2)*32 ..][..32]`.
#[inline(always)]
unsafe fn qdot_q4_k<D: ByteDot>(row: &[u8], xq: &Q8KRow) -> f32 {
    qdot_q4_k_like::<D, 144>(row, xq, |blk, g| {
        signed(k_nibbles(blk.add(16 + 32 * (g / 2)), g))
    })
}

/// Q5_K: as Q4_K (at `qs` = byte 48), with bit 4 of weight `g*32 + i` taken from bit `g` of `qh[i]`.
#[inline(always)]
unsafe fn qdot_q5_k<D: ByteDot>(row: &[u8], xq: &Q8KRow) -> f32 {
    qdot_q4_k_like::<D, 176>(row, xq, |blk, g| {
        let lo = k_nibbles(blk.add(48 + 32 * (g / 2)), g);
        let bit = vdupq_n_u8(1 << g);
        let c: [uint8x16_t; 2] = std::array::from_fn(|k| {
            let h = vld1q_u8(blk.add(16 + 16 * k));
            vorrq_u8(lo[k], vandq_u8(vtstq_u8(h, bit), vdupq_n_u8(0x10)))
        });
        signed(c)
    })
}

/// Q6_K: in half `j`, the 32-byte groups `ql[j*64..]` (A), `ql[j*64+32..]` (B) and `qh[j*32..]` (H) give
/// weights `j*128 + 32k + i` as `(A or B) nibble | ((H >> 2k) & 3) << 4` for k = 0 (A low), 1 (B low),
/// 2 (A high), 3 (B high); each half of such a run is one 16-weight sub-block with its own scale. The codes
/// are unsigned (0..64); the `- 32` offset is removed from the exact sum.
#[inline(always)]
unsafe fn qdot_q6_k<D: ByteDot>(row: &[u8], xq: &Q8KRow) -> f32 {
    let mut lanes = [0.0f32; 8];
    for b in 0..xq.d.len() {
        let blk = row.as_ptr().add(b * 210);
        let scales = std::slice::from_raw_parts(blk.add(192), 16);
        let x = xq.qs.as_ptr().add(b * QK_K);
        let mut acc = vdupq_n_s32(0);
        for j in 0..2 {
            for k in 0..4 {
                let ql = blk.add(64 * j + 32 * (k % 2));
                let qh = blk.add(128 + 32 * j);
                for h in 0..2 {
                    let q = vld1q_u8(ql.add(16 * h));
                    let lo = if k < 2 {
                        vandq_u8(q, vdupq_n_u8(0x0f))
                    } else {
                        vshrq_n_u8::<4>(q)
                    };
                    let hi = vandq_u8(
                        vshlq_u8(vld1q_u8(qh.add(16 * h)), vdupq_n_s8(-2 * k as i8)),
                        vdupq_n_u8(3),
                    );
                    let c = vreinterpretq_s8_u8(vorrq_u8(lo, vshlq_n_u8::<4>(hi)));
                    let e = 128 * j + 32 * k + 16 * h;
                    let s = D::dot16(vdupq_n_s32(0), c, vld1q_s8(x.add(e)));
                    acc = vmlaq_n_s32(acc, s, scales[e / 16] as i8 as i32);
                }
            }
        }
        let isum = vaddvq_s32(acc) - q6_k_offset(scales, &xq.bsums[b * 16..b * 16 + 16]);
        lanes[b % 8] += term(h2f(blk.add(208)), xq.d[b], isum);
    }
    reduce_lanes(lanes)
}

/// The largest `|v|` over `v`, ignoring NaNs as `f32::max` does (the reference's fold).
#[inline]
#[target_feature(enable = "neon")]
unsafe fn amax(v: &[float32x4_t]) -> f32 {
    let m = v
        .iter()
        .fold(vdupq_n_f32(0.0), |m, &x| vmaxnmq_f32(m, vabsq_f32(x)));
    vmaxnmvq_f32(m)
}

/// Sixteen values times `id`, rounded to nearest (ties to even) and saturated to i8, as the reference's
/// `(v * id).round_ties_even() as i8`.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn quantize16(v: &[float32x4_t], id: f32) -> int8x16_t {
    let q: [int32x4_t; 4] = std::array::from_fn(|k| vcvtnq_s32_f32(vmulq_n_f32(v[k], id)));
    let h0 = vcombine_s16(vqmovn_s32(q[0]), vqmovn_s32(q[1]));
    let h1 = vcombine_s16(vqmovn_s32(q[2]), vqmovn_s32(q[3]));
    vcombine_s8(vqmovn_s16(h0), vqmovn_s16(h1))
}

#[target_feature(enable = "neon")]
unsafe fn quantize_q8(x: &[f32], out: &mut Q8Row) {
    for b in 0..out.d.len() {
        let p = x.as_ptr().add(b * QK8);
        let v: [float32x4_t; 8] = std::array::from_fn(|k| vld1q_f32(p.add(4 * k)));
        let (d, id) = q8_scale(amax(&v));
        let qp = out.qs.as_mut_ptr().add(b * QK8);
        let mut s = 0i32;
        for h in 0..2 {
            let q = quantize16(&v[4 * h..4 * h + 4], id);
            vst1q_s8(qp.add(16 * h), q);
            s += vaddlvq_s8(q) as i32;
        }
        out.d[b] = d;
        out.sums[b] = s;
    }
}

#[target_feature(enable = "neon")]
unsafe fn quantize_q8k(x: &[f32], out: &mut Q8KRow) {
    for b in 0..out.d.len() {
        let p = x.as_ptr().add(b * QK_K);
        let v: [float32x4_t; 64] = std::array::from_fn(|k| vld1q_f32(p.add(4 * k)));
        let (d, id) = q8_scale(amax(&v));
        out.d[b] = d;
        let qp = out.qs.as_mut_ptr().add(b * QK_K);
        for s in 0..16 {
            let q = quantize16(&v[4 * s..4 * s + 4], id);
            vst1q_s8(qp.add(16 * s), q);
            out.bsums[b * 16 + s] = vaddlvq_s8(q) as i32;
        }
    }
}
