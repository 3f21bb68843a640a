//! GGML's K-quant super-blocks of 256 weights: Q2_K, Q3_K, Q4_K, Q5_K, Q6_K.
//!
//! Each function dequantizes one super-block (`blk` = its bytes, `out` = its 256 values) with the f32
//! operations of `gguf.quants` in the Python `gguf` package, in its order: the per-sub-block factors
//! `d * scale` and `dmin * min` are rounded to f32 first, then `factor * q - min_factor`.
//!
//! A recurring bit layout: 2-bit fields come from 32-byte groups `qs[j*32 .. j*32+32]`, where weight
//! `j*128 + l*32 + i` (l = 0..4, i = 0..32) is bits `2l..2l+2` of `qs[j*32 + i]`.

use super::f16_at;

/// Q2_K, 84 bytes: `[0..16]` scales (low nibble: scale, high nibble: min, one per 16 weights),
/// `[16..80]` qs (256 x 2 bits, layout above), `[80..82]` d (f16), `[82..84]` dmin (f16).
/// w = (d * scale) * q - (dmin * min).
pub(super) fn q2_k(blk: &[u8], out: &mut [f32]) {
    let scales = &blk[0..16];
    let qs = &blk[16..80];
    let d = f16_at(blk, 80);
    let dmin = f16_at(blk, 82);
    for (g, &sc) in scales.iter().enumerate() {
        let dl = d * (sc & 0x0f) as f32;
        let ml = dmin * (sc >> 4) as f32;
        for k in 0..16 {
            let e = g * 16 + k;
            let (j, l, i) = (e / 128, (e % 128) / 32, e % 32);
            let q = (qs[j * 32 + i] >> (2 * l)) & 3;
            out[e] = dl * q as f32 - ml;
        }
    }
}

/// The sixteen 6-bit scales of a Q3_K block, minus 32. Of the 12 packed bytes, bytes 0..8 hold the low
/// 4 bits of scales 0..8 (bits 0-3) and of scales 8..16 (bits 4-7); byte `8 + k%4` holds scale k's top
/// 2 bits at bits `2*(k/4) .. 2*(k/4)+2`.
pub(crate) fn q3_k_scales(s: &[u8]) -> [i32; 16] {
    let mut out = [0i32; 16];
    for (k, o) in out.iter_mut().enumerate() {
        let low = if k < 8 { s[k] & 0x0f } else { s[k - 8] >> 4 };
        let high = (s[8 + k % 4] >> (2 * (k / 4))) & 3;
        *o = (low | (high << 4)) as i32 - 32;
    }
    out
}

/// Q3_K, 110 bytes: `[0..32]` hmask (bit `e/32` of `hmask[e%32]` is weight e's high bit, 1 meaning +0 and
/// 0 meaning -4), `[32..96]` qs (low 2 bits, layout above), `[96..108]` scales (16 x 6 bits, signed by
/// -32, see `q3_k_scales`), `[108..110]` d (f16). w = (d * scale) * q with q = low - 4 * !high.
pub(super) fn q3_k(blk: &[u8], out: &mut [f32]) {
    let hmask = &blk[0..32];
    let qs = &blk[32..96];
    let scales = q3_k_scales(&blk[96..108]);
    let d = f16_at(blk, 108);
    for (g, &sc) in scales.iter().enumerate() {
        let dl = d * sc as f32;
        for k in 0..16 {
            let e = g * 16 + k;
            let (j, l, i) = (e / 128, (e % 128) / 32, e % 32);
            let low = ((qs[j * 32 + i] >> (2 * l)) & 3) as i32;
            let high = (hmask[i] >> (e / 32)) & 1;
            let q = if high == 1 { low } else { low - 4 };
            out[e] = dl * q as f32;
        }
    }
}

/// Scale and min (6 bits each) of sub-block `g` (0..8) from the 12 packed bytes `s` of a Q4_K/Q5_K block:
/// sub-blocks 0..4 take the low 6 bits of `s[g]` (scale) and `s[g+4]` (min); sub-blocks 4..8 take their
/// low 4 bits from `s[g+4]` (scale: low nibble, min: high nibble) and their top 2 bits from the top 2 bits
/// of `s[g-4]` (scale) and `s[g]` (min).
#[inline]
pub(crate) fn k4_scale_min(s: &[u8], g: usize) -> (u8, u8) {
    if g < 4 {
        (s[g] & 0x3f, s[g + 4] & 0x3f)
    } else {
        (
            (s[g + 4] & 0x0f) | ((s[g - 4] >> 6) << 4),
            (s[g + 4] >> 4) | ((s[g] >> 6) << 4),
        )
    }
}

/// Q4_K, 144 bytes: `[0..2]` d (f16), `[2..4]` dmin (f16), `[4..16]` scales/mins (8 x 6 bits each, see
/// `k4_scale_min`), `[16..144]` qs: sub-block g (32 weights) is the low (g even) or high (g odd) nibbles of
/// `qs[(g/2)*32 .. (g/2)*32+32]`. w = (d * scale) * q - (dmin * min).
pub(super) fn q4_k(blk: &[u8], out: &mut [f32]) {
    let d = f16_at(blk, 0);
    let dmin = f16_at(blk, 2);
    let scales = &blk[4..16];
    let qs = &blk[16..144];
    for g in 0..8 {
        let (sc, m) = k4_scale_min(scales, g);
        let dl = d * sc as f32;
        let ml = dmin * m as f32;
        let q32 = &qs[(g / 2) * 32..(g / 2) * 32 + 32];
        let shift = 4 * (g % 2);
        for (o, &q) in out[g * 32..g * 32 + 32].iter_mut().zip(q32) {
            *o = dl * ((q >> shift) & 0x0f) as f32 - ml;
        }
    }
}

/// Q5_K, 176 bytes: `[0..2]` d, `[2..4]` dmin (f16), `[4..16]` scales/mins as Q4_K, `[16..48]` qh (bit g of
/// `qh[i]` is bit 4 of weight `g*32 + i`), `[48..176]` qs (low nibbles as Q4_K).
/// w = (d * scale) * q - (dmin * min).
pub(super) fn q5_k(blk: &[u8], out: &mut [f32]) {
    let d = f16_at(blk, 0);
    let dmin = f16_at(blk, 2);
    let scales = &blk[4..16];
    let qh = &blk[16..48];
    let qs = &blk[48..176];
    for g in 0..8 {
        let (sc, m) = k4_scale_min(scales, g);
        let dl = d * sc as f32;
        let ml = dmin * m as f32;
        let q32 = &qs[(g / 2) * 32..(g / 2) * 32 + 32];
        let shift = 4 * (g % 2);
        for i in 0..32 {
            let q = ((q32[i] >> shift) & 0x0f) | (((qh[i] >> g) & 1) << 4);
            out[g * 32 + i] = dl * q as f32 - ml;
        }
    }
}

/// Q6_K, 210 bytes: `[0..128]` ql (low 4 bits), `[128..192]` qh (high 2 bits), `[192..208]` scales (16 x i8,
/// one per 16 weights), `[208..210]` d (f16). In half j (weights `j*128 .. j*128+128`), weight `j*128 + n`
/// has low bits `(ql[j*64 + n%64] >> 4*(n/64)) & 15` and high bits `(qh[j*32 + n%32] >> 2*(n/32)) & 3`.
/// w = (d * scale) * (q - 32).
pub(super) fn q6_k(blk: &[u8], out: &mut [f32]) {
    let ql = &blk[0..128];
    let qh = &blk[128..192];
    let scales = &blk[192..208];
    let d = f16_at(blk, 208);
    for (g, &sc) in scales.iter().enumerate() {
        let dl = d * (sc as i8) as f32;
        for k in 0..16 {
            let e = g * 16 + k;
            let (j, n) = (e / 128, e % 128);
            let lo = (ql[j * 64 + n % 64] >> (4 * (n / 64))) & 0x0f;
            let hi = (qh[j * 32 + n % 32] >> (2 * (n / 32))) & 3;
            let q = (lo | (hi << 4)) as i32 - 32;
            out[e] = dl * q as f32;
        }
    }
}
