//! NEON integer dot products of 4- and 8-bit MLX affine blocks against [`Q8Row`] activations, bit-identical
//! to `qdot::qdot_mlx` (other widths run that reference directly).
//!
//! As `qdot.rs` does for Q4_1: each 32-weight sub-block's exact sum of `code * qx` (by `sdot` or widening
//! multiplies), four sub-blocks reduced into one vector, their f32 terms computed lane-wise with the
//! sub-block's group scale and bias in the roles of Q4_1's scale and min; lane `b % 8` as in the reference.
//! 4-bit codes are unpacked in order (MLX puts code `2k` in the low nibble of byte `k`); 8-bit codes are
//! shifted to `c - 128` to fit signed bytes, and `128 * sums[b]` is added back to the exact sum.

use std::arch::aarch64::*;

use super::qdot::{dot32, ByteDot, Sdot, Widening};
use super::Neon;
use crate::backend::cpu::qdot::{qdot_mlx, reduce_lanes, term_min, Q8Row, QK8};
use crate::tensor::mlx_blocks::MlxBlocks;

impl Neon {
    /// `qdot_mlx(m, row, xq)`; the caller has checked `m` is affine and `row` holds the blocks.
    pub(in crate::backend::cpu) fn qdot_mlx(self, m: MlxBlocks, row: &[u8], xq: &Q8Row) -> f32 {
        let bits = m.quant.bits();
        if bits != 4 && bits != 8 {
            return qdot_mlx(m, row, xq);
        }
        // SAFETY: the token proves NEON, and `dotprod` only where the CPU reported it; the caller checked
        // `row` holds the blocks of `xq`.
        unsafe {
            if self.dotprod {
                qdot_mlx_sdot(m, row, xq)
            } else {
                qdot_mlx_widening(m, row, xq)
            }
        }
    }
}

#[target_feature(enable = "neon,dotprod")]
unsafe fn qdot_mlx_sdot(m: MlxBlocks, row: &[u8], xq: &Q8Row) -> f32 {
    qdot_mlx_with::<Sdot>(m, row, xq)
}

#[target_feature(enable = "neon")]
unsafe fn qdot_mlx_widening(m: MlxBlocks, row: &[u8], xq: &Q8Row) -> f32 {
    qdot_mlx_with::<Widening>(m, row, xq)
}

#[inline(always)]
unsafe fn qdot_mlx_with<D: ByteDot>(m: MlxBlocks, row: &[u8], xq: &Q8Row) -> f32 {
    let eight = m.quant.bits() == 8;
    let shift = (m.block_elems() / QK8).trailing_zeros();
    let low = (1usize << shift) - 1;
    let (hb, bb) = (m.header_bytes(), m.block_bytes());
    let sub = if eight { 32 } else { 16 };
    let nb = xq.d.len();
    let (rp, xp) = (row.as_ptr(), xq.qs.as_ptr());
    // Sub-block b's exact sum of (code - offset) * qx, offset 0 (4-bit) or 128 (8-bit).
    let sub_dot = |b: usize| -> int32x4_t {
        let p = rp.add((b >> shift) * bb + hb + (b & low) * sub);
        let x = xp.add(b * QK8);
        if eight {
            let flip = vdupq_n_u8(0x80);
            let c = [
                vreinterpretq_s8_u8(veorq_u8(vld1q_u8(p), flip)),
                vreinterpretq_s8_u8(veorq_u8(vld1q_u8(p.add(16)), flip)),
            ];
            dot32::<D>(c, x)
        } else {
            let q = vld1q_u8(p);
            let lo = vandq_u8(q, vdupq_n_u8(0x0f));
            let hi = vshrq_n_u8::<4>(q);
            let c = [
                vreinterpretq_s8_u8(vzip1q_u8(lo, hi)),
                vreinterpretq_s8_u8(vzip2q_u8(lo, hi)),
            ];
            dot32::<D>(c, x)
        }
    };
    let scale_bias =
        |b: usize| m.scale_bias(std::slice::from_raw_parts(rp.add((b >> shift) * bb), hb));
    let mut acc = [vdupq_n_f32(0.0); 2];
    let groups = nb / 8;
    for g in 0..groups {
        for (half, a) in acc.iter_mut().enumerate() {
            let b0 = 8 * g + 4 * half;
            let v: [int32x4_t; 4] = std::array::from_fn(|j| sub_dot(b0 + j));
            let sx = vld1q_s32(xq.sums.as_ptr().add(b0));
            let mut isum = vpaddq_s32(vpaddq_s32(v[0], v[1]), vpaddq_s32(v[2], v[3]));
            if eight {
                isum = vaddq_s32(isum, vshlq_n_s32::<7>(sx));
            }
            let (mut s, mut bi) = ([0f32; 4], [0f32; 4]);
            for j in 0..4 {
                (s[j], bi[j]) = scale_bias(b0 + j);
            }
            let dx = vld1q_f32(xq.d.as_ptr().add(b0));
            let t = vmulq_f32(vmulq_f32(vld1q_f32(s.as_ptr()), dx), vcvtq_f32_s32(isum));
            let mb = vmulq_f32(vld1q_f32(bi.as_ptr()), dx);
            *a = vaddq_f32(*a, vaddq_f32(t, vmulq_f32(mb, vcvtq_f32_s32(sx))));
        }
    }
    let mut lanes = [0.0f32; 8];
    vst1q_f32(lanes.as_mut_ptr(), acc[0]);
    vst1q_f32(lanes.as_mut_ptr().add(4), acc[1]);
    for b in groups * 8..nb {
        let mut isum = vaddvq_s32(sub_dot(b));
        if eight {
            isum += 128 * xq.sums[b];
        }
        let (s, bi) = scale_bias(b);
        lanes[b % 8] += term_min(s, bi, xq.d[b], isum, xq.sums[b]);
    }
    reduce_lanes(lanes)
}
