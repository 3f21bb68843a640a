//! The scalar reference kernels for the 32-weight block types (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1) against
//! [`Q8Row`] activations, and the f32 term and lane helpers every level shares (the numerics contract is in
//! the parent module's docs).

use super::{Q8Row, QK8};
use crate::tensor::quants::f16_to_f32;

/// A block's f32 term without a min: `(dw * dx) * isum`.
#[inline]
pub(in crate::backend::cpu) fn term(dw: f32, dx: f32, isum: i32) -> f32 {
    (dw * dx) * isum as f32
}

/// A block's f32 term with a min: `(dw * dx) * isum + (mw * dx) * sx`.
#[inline]
pub(in crate::backend::cpu) fn term_min(dw: f32, mw: f32, dx: f32, isum: i32, sx: i32) -> f32 {
    (dw * dx) * isum as f32 + (mw * dx) * sx as f32
}

/// The fixed reduction of the eight accumulator lanes (the same as the SIMD horizontal sums).
#[inline]
pub(in crate::backend::cpu) fn reduce_lanes(l: [f32; 8]) -> f32 {
    let r = [l[0] + l[4], l[1] + l[5], l[2] + l[6], l[3] + l[7]];
    (r[0] + r[2]) + (r[1] + r[3])
}

/// Runs `f(block bytes, block index) -> term` over the `xq.blocks()` blocks of `bb` bytes and accumulates
/// the terms in the documented order.
#[inline]
fn accumulate(row: &[u8], bb: usize, xq: &Q8Row, f: impl Fn(&[u8], usize) -> f32) -> f32 {
    let mut lanes = [0.0f32; 8];
    for b in 0..xq.blocks() {
        lanes[b % 8] += f(&row[b * bb..(b + 1) * bb], b);
    }
    reduce_lanes(lanes)
}

/// The little-endian f16 at `b[off..]` as f32.
pub(super) fn f16(b: &[u8], off: usize) -> f32 {
    f16_to_f32(u16::from_le_bytes([b[off], b[off + 1]]))
}

/// The 32 codes of a 4-bit block's 16 bytes: low nibbles are weights 0..16, high nibbles 16..32.
#[inline]
fn nibbles(qs: &[u8]) -> [i32; 32] {
    std::array::from_fn(|i| {
        if i < 16 {
            (qs[i] & 15) as i32
        } else {
            (qs[i - 16] >> 4) as i32
        }
    })
}

/// The 32 codes of a 5-bit block: nibbles plus bit `i` of the little-endian `qh` as bit 4.
#[inline]
fn codes5(qh: &[u8], qs: &[u8]) -> [i32; 32] {
    let h = u32::from_le_bytes([qh[0], qh[1], qh[2], qh[3]]);
    let n = nibbles(qs);
    std::array::from_fn(|i| n[i] | ((((h >> i) & 1) as i32) << 4))
}

/// The exact integer dot product of the codes `q` with the activations `x`.
#[inline]
pub(super) fn idot(q: impl Iterator<Item = i32>, x: &[i8]) -> i32 {
    q.zip(x).map(|(a, &b)| a * b as i32).sum()
}

fn xblock(xq: &Q8Row, b: usize) -> &[i8] {
    &xq.qs[b * QK8..(b + 1) * QK8]
}

/// Q8_0 (34-byte blocks: f16 d, 32 x i8) against `xq`; scalar reference.
pub fn qdot_q8_0(row: &[u8], xq: &Q8Row) -> f32 {
    accumulate(row, 34, xq, |blk, b| {
        let isum = idot(blk[2..34].iter().map(|&v| v as i8 as i32), xblock(xq, b));
        term(f16(blk, 0), xq.d[b], isum)
    })
}

/// Q4_0 (18-byte blocks: f16 d, 16 bytes of nibbles; w = d * (q - 8)) against `xq`; scalar reference.
pub fn qdot_q4_0(row: &[u8], xq: &Q8Row) -> f32 {
    accumulate(row, 18, xq, |blk, b| {
        let isum = idot(
            nibbles(&blk[2..18]).into_iter().map(|q| q - 8),
            xblock(xq, b),
        );
        term(f16(blk, 0), xq.d[b], isum)
    })
}

/// Q4_1 (20-byte blocks: f16 d, f16 m, 16 bytes of nibbles; w = d * q + m) against `xq`; scalar reference.
pub fn qdot_q4_1(row: &[u8], xq: &Q8Row) -> f32 {
    accumulate(row, 20, xq, |blk, b| {
        let isum = idot(nibbles(&blk[4..20]).into_iter(), xblock(xq, b));
        term_min(f16(blk, 0), f16(blk, 2), xq.d[b], isum, xq.sums[b])
    })
}

/// Q5_0 (22-byte blocks: f16 d, u32 qh, 16 bytes of nibbles; w = d * (q - 16)) against `xq`; scalar
/// reference.
pub fn qdot_q5_0(row: &[u8], xq: &Q8Row) -> f32 {
    accumulate(row, 22, xq, |blk, b| {
        let q = codes5(&blk[2..6], &blk[6..22]);
        let isum = idot(q.into_iter().map(|q| q - 16), xblock(xq, b));
        term(f16(blk, 0), xq.d[b], isum)
    })
}

/// Q5_1 (24-byte blocks: f16 d, f16 m, u32 qh, 16 bytes of nibbles; w = d * q + m) against `xq`; scalar
/// reference.
pub fn qdot_q5_1(row: &[u8], xq: &Q8Row) -> f32 {
    accumulate(row, 24, xq, |blk, b| {
        let q = codes5(&blk[4..8], &blk[8..24]);
        let isum = idot(q.into_iter(), xblock(xq, b));
        term_min(f16(blk, 0), f16(blk, 2), xq.d[b], isum, xq.sums[b])
    })
}
