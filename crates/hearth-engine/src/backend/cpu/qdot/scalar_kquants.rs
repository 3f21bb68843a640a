//! The scalar reference kernels for the K-quant types (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K) against [`Q8KRow`]
//! activations, and the integer helpers the SIMD levels share. Block layouts are documented in
//! `tensor/quants/kquants.rs`; the per-block integer sums and f32 terms are given at [`super::qdot_k`].

use super::scalar_blocks32::{f16, idot, reduce_lanes, term};
use super::{Q8KRow, QK_K};
use crate::tensor::quants::q3_k_scales;

/// Q2_K's, Q4_K's and Q5_K's per-block f32 term from its exact integer sums.
#[inline]
pub(in crate::backend::cpu) fn term_q4_k(d: f32, dmin: f32, dx: f32, isum: i32, msum: i32) -> f32 {
    (d * dx) * isum as f32 - (dmin * dx) * msum as f32
}

/// `sum_g m_g * (bsums[2g] + bsums[2g + 1])` for a Q4_K block's mins `m` and its 16 activation sums.
#[inline]
pub(in crate::backend::cpu) fn q4_k_msum(mins: [u8; 8], bsums: &[i32]) -> i32 {
    (0..8)
        .map(|g| mins[g] as i32 * (bsums[2 * g] + bsums[2 * g + 1]))
        .sum()
}

/// The eight (scale, min) pairs of a Q4_K block's 12 packed scale bytes.
#[inline]
pub(in crate::backend::cpu) fn q4_k_scales(s: &[u8]) -> ([u8; 8], [u8; 8]) {
    let p: [(u8, u8); 8] = std::array::from_fn(|g| crate::tensor::quants::k4_scale_min(s, g));
    (p.map(|v| v.0), p.map(|v| v.1))
}

/// A Q4_K/Q5_K block's eight 6-bit scales and eight mins (12 packed bytes at `s`), one per byte of two
/// u64s: the same values as `k4_scale_min`, unpacked with 32-bit word operations so that SIMD kernels can
/// move them into vectors without a round trip through memory.
#[inline]
#[cfg(target_arch = "x86_64")]
pub(in crate::backend::cpu) fn q4_k_packed_scales(s: &[u8]) -> (u64, u64) {
    let word = |i: usize| u32::from_le_bytes([s[i], s[i + 1], s[i + 2], s[i + 3]]);
    let (a, b, c) = (word(0), word(4), word(8));
    let (m6, m4, m2) = (0x3f3f_3f3f, 0x0f0f_0f0f, 0x0303_0303);
    let sc_hi = (c & m4) | (((a >> 6) & m2) << 4);
    let min_hi = ((c >> 4) & m4) | (((b >> 6) & m2) << 4);
    (
        (a & m6) as u64 | (sc_hi as u64) << 32,
        (b & m6) as u64 | (min_hi as u64) << 32,
    )
}

/// A Q3_K block's sixteen 6-bit scales plus 32 (so in `0..64`; subtract 32 for the signed scale), one per
/// byte of two u64s (scales 0..8, 8..16), from its 12 packed bytes at `s`: the same values as
/// `q3_k_scales`, unpacked with word operations for the SIMD kernels.
#[inline]
#[cfg(target_arch = "x86_64")]
pub(in crate::backend::cpu) fn q3_k_packed_scales(s: &[u8]) -> (u64, u64) {
    let low = u64::from_le_bytes(std::array::from_fn(|i| s[i]));
    let c = u32::from_le_bytes([s[8], s[9], s[10], s[11]]);
    let (m4, m2) = (0x0f0f_0f0f_0f0f_0f0f, 0x0303_0303);
    let high = |sh: u32| ((c >> sh) & m2) as u64;
    (
        (low & m4) | (high(0) | high(2) << 32) << 4,
        ((low >> 4) & m4) | (high(4) | high(6) << 32) << 4,
    )
}

/// Runs `f(block bytes, block index) -> term` over the blocks of `bb` bytes that `xq` covers and
/// accumulates the terms as the 32-block kernels do (block `b` into lane `b % 8`).
#[inline]
fn accumulate_k(row: &[u8], bb: usize, xq: &Q8KRow, f: impl Fn(&[u8], usize) -> f32) -> f32 {
    let mut lanes = [0.0f32; 8];
    for (b, blk) in row.chunks_exact(bb).take(xq.d.len()).enumerate() {
        lanes[b % 8] += f(blk, b);
    }
    reduce_lanes(lanes)
}

fn xblock(xq: &Q8KRow, b: usize) -> (&[i8], &[i32]) {
    (
        &xq.qs[b * QK_K..(b + 1) * QK_K],
        &xq.bsums[b * 16..b * 16 + 16],
    )
}

/// The 2-bit field of weight `e` (0..256) in a 64-byte K-quant `qs` (layout in `tensor/quants/kquants.rs`).
#[inline]
fn crumb(qs: &[u8], e: usize) -> i32 {
    let (j, l, i) = (e / 128, (e % 128) / 32, e % 32);
    ((qs[j * 32 + i] >> (2 * l)) & 3) as i32
}

/// Q2_K (84-byte blocks) against `xq`; scalar reference. `isum = sum_s sc_s * sum_{i in s} q_i qx_i` over
/// the sixteen 16-weight sub-blocks (4-bit scales, 2-bit codes), `msum = sum_s m_s * bsums[s]`.
pub fn qdot_q2_k(row: &[u8], xq: &Q8KRow) -> f32 {
    accumulate_k(row, 84, xq, |blk, b| {
        let (scales, qs) = (&blk[0..16], &blk[16..80]);
        let (x, bsums) = xblock(xq, b);
        let mut isum = 0i32;
        let mut msum = 0i32;
        for (s, &sc) in scales.iter().enumerate() {
            let run = idot((16 * s..16 * s + 16).map(|e| crumb(qs, e)), &x[16 * s..]);
            isum += (sc & 15) as i32 * run;
            msum += (sc >> 4) as i32 * bsums[s];
        }
        term_q4_k(f16(blk, 80), f16(blk, 82), xq.d[b], isum, msum)
    })
}

/// Q3_K (110-byte blocks) against `xq`; scalar reference. `isum = sum_s sc_s * sum_{i in s} q_i qx_i` over
/// the sixteen 16-weight sub-blocks, with the signed 6-bit scales and the signed codes `q = low - 4 * !high`.
pub fn qdot_q3_k(row: &[u8], xq: &Q8KRow) -> f32 {
    accumulate_k(row, 110, xq, |blk, b| {
        let (hmask, qs) = (&blk[0..32], &blk[32..96]);
        let scales = q3_k_scales(&blk[96..108]);
        let (x, _) = xblock(xq, b);
        let mut isum = 0i32;
        for (s, &sc) in scales.iter().enumerate() {
            let codes = (16 * s..16 * s + 16).map(|e| {
                let high = (hmask[e % 32] >> (e / 32)) & 1;
                crumb(qs, e) - if high == 1 { 0 } else { 4 }
            });
            isum += sc * idot(codes, &x[16 * s..]);
        }
        term(f16(blk, 108), xq.d[b], isum)
    })
}

/// Q4_K (144-byte blocks) against `xq`; scalar reference.
pub fn qdot_q4_k(row: &[u8], xq: &Q8KRow) -> f32 {
    accumulate_k(row, 144, xq, |blk, b| {
        let (sc, mins) = q4_k_scales(&blk[4..16]);
        let (x, bsums) = xblock(xq, b);
        let mut isum = 0i32;
        for g in 0..8 {
            let q32 = &blk[16 + (g / 2) * 32..16 + (g / 2) * 32 + 32];
            let shift = 4 * (g % 2);
            let s = idot(
                q32.iter().map(|&q| ((q >> shift) & 15) as i32),
                &x[g * 32..g * 32 + 32],
            );
            isum += sc[g] as i32 * s;
        }
        let msum = q4_k_msum(mins, bsums);
        term_q4_k(f16(blk, 0), f16(blk, 2), xq.d[b], isum, msum)
    })
}

/// Q5_K (176-byte blocks) against `xq`; scalar reference.
pub fn qdot_q5_k(row: &[u8], xq: &Q8KRow) -> f32 {
    accumulate_k(row, 176, xq, |blk, b| {
        let (sc, mins) = q4_k_scales(&blk[4..16]);
        let (qh, qs) = (&blk[16..48], &blk[48..176]);
        let (x, bsums) = xblock(xq, b);
        let mut isum = 0i32;
        for g in 0..8 {
            let q32 = &qs[(g / 2) * 32..(g / 2) * 32 + 32];
            let shift = 4 * (g % 2);
            let codes = q32
                .iter()
                .zip(qh)
                .map(|(&q, &h)| (((q >> shift) & 15) | (((h >> g) & 1) << 4)) as i32);
            isum += sc[g] as i32 * idot(codes, &x[g * 32..g * 32 + 32]);
        }
        let msum = q4_k_msum(mins, bsums);
        term_q4_k(f16(blk, 0), f16(blk, 2), xq.d[b], isum, msum)
    })
}

/// `32 * sum_s sc_s * bsums[s]`: the offset part of a Q6_K block's isum.
#[inline]
pub(in crate::backend::cpu) fn q6_k_offset(scales: &[u8], bsums: &[i32]) -> i32 {
    32 * (0..16)
        .map(|s| scales[s] as i8 as i32 * bsums[s])
        .sum::<i32>()
}

/// Q6_K (210-byte blocks) against `xq`; scalar reference.
pub fn qdot_q6_k(row: &[u8], xq: &Q8KRow) -> f32 {
    accumulate_k(row, 210, xq, |blk, b| {
        let (ql, qh, scales) = (&blk[0..128], &blk[128..192], &blk[192..208]);
        let (x, bsums) = xblock(xq, b);
        let mut isum = 0i32;
        for (s, &sc) in scales.iter().enumerate() {
            let mut run = 0i32;
            for k in 0..16 {
                let e = s * 16 + k;
                let (j, n) = (e / 128, e % 128);
                let lo = (ql[j * 64 + n % 64] >> (4 * (n / 64))) & 15;
                let hi = (qh[j * 32 + n % 32] >> (2 * (n / 32))) & 3;
                run += (lo | (hi << 4)) as i32 * x[e] as i32;
            }
            isum += sc as i8 as i32 * run;
        }
        isum -= q6_k_offset(scales, bsums);
        term(f16(blk, 208), xq.d[b], isum)
    })
}
