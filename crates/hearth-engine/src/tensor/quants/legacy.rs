//! GGML's original 32-weight block types: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0.
//!
//! Each function dequantizes one block (`blk` = the block's bytes, `out` = its 32 values) with the same f32
//! operations, in the same order, as `gguf.quants` in the Python `gguf` package. In every 4-bit and 5-bit
//! type, weight `i` (0..16) is the low nibble of `qs[i]` and weight `i + 16` its high nibble.

use super::f16_at;

/// Q4_0, 18 bytes: `[0..2]` d (f16), `[2..18]` qs (32 x 4 bits). w = d * (q - 8).
pub(super) fn q4_0(blk: &[u8], out: &mut [f32]) {
    let d = f16_at(blk, 0);
    let qs = &blk[2..18];
    for i in 0..16 {
        out[i] = d * ((qs[i] & 0x0f) as i32 - 8) as f32;
        out[i + 16] = d * ((qs[i] >> 4) as i32 - 8) as f32;
    }
}

/// Q4_1, 20 bytes: `[0..2]` d (f16), `[2..4]` m (f16), `[4..20]` qs (32 x 4 bits). w = d * q + m.
pub(super) fn q4_1(blk: &[u8], out: &mut [f32]) {
    let d = f16_at(blk, 0);
    let m = f16_at(blk, 2);
    let qs = &blk[4..20];
    for i in 0..16 {
        out[i] = d * (qs[i] & 0x0f) as f32 + m;
        out[i + 16] = d * (qs[i] >> 4) as f32 + m;
    }
}

/// The fifth bits of a Q5 block: bit `i` of the little-endian u32 is weight `i`'s bit 4.
#[inline]
fn qh_u32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// Q5_0, 22 bytes: `[0..2]` d (f16), `[2..6]` qh (u32 of high bits), `[6..22]` qs (low nibbles).
/// w = d * (q - 16) with q = nibble | (qh bit << 4).
pub(super) fn q5_0(blk: &[u8], out: &mut [f32]) {
    let d = f16_at(blk, 0);
    let qh = qh_u32(&blk[2..6]);
    let qs = &blk[6..22];
    for i in 0..16 {
        let lo = (qs[i] & 0x0f) as u32 | ((qh >> i) & 1) << 4;
        let hi = (qs[i] >> 4) as u32 | ((qh >> (i + 16)) & 1) << 4;
        out[i] = d * (lo as i32 - 16) as f32;
        out[i + 16] = d * (hi as i32 - 16) as f32;
    }
}

/// Q5_1, 24 bytes: `[0..2]` d (f16), `[2..4]` m (f16), `[4..8]` qh (u32 of high bits), `[8..24]` qs.
/// w = d * q + m with q = nibble | (qh bit << 4).
pub(super) fn q5_1(blk: &[u8], out: &mut [f32]) {
    let d = f16_at(blk, 0);
    let m = f16_at(blk, 2);
    let qh = qh_u32(&blk[4..8]);
    let qs = &blk[8..24];
    for i in 0..16 {
        let lo = (qs[i] & 0x0f) as u32 | ((qh >> i) & 1) << 4;
        let hi = (qs[i] >> 4) as u32 | ((qh >> (i + 16)) & 1) << 4;
        out[i] = d * lo as f32 + m;
        out[i + 16] = d * hi as f32 + m;
    }
}

/// Q8_0, 34 bytes: `[0..2]` d (f16), `[2..34]` qs (32 x i8). w = q * d.
pub(super) fn q8_0(blk: &[u8], out: &mut [f32]) {
    let d = f16_at(blk, 0);
    for (o, &q) in out[..32].iter_mut().zip(&blk[2..34]) {
        *o = (q as i8) as f32 * d;
    }
}
