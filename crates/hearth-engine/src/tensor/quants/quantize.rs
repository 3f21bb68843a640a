//! Quantization: f32 rows to GGML blocks, the inverse of [`super::dequantize_row`], for writing GGUF files.
//!
//! Two standards are followed, one per family:
//! - F16, BF16, Q8_0, Q5_0, Q4_0, Q4_1 reproduce `gguf.quants.quantize` of the Python `gguf` package (0.19) bit for
//!   bit: the same f32 operations in the same order (checked against fixtures written by
//!   `scripts/make_quant_fixtures.py --quantize`). These are the types llama.cpp's own converter writes, so a
//!   hearth-converted file holds the same bytes as a `convert_hf_to_gguf.py` one.
//! - Q4_K and Q6_K follow llama.cpp's reference (no importance matrix) scheme, which the `gguf` package does not
//!   implement: Q4_K fits each 32-weight sub-block with a weighted least-squares search over scale and offset,
//!   then quantizes the 8 scales and 8 offsets to 6 bits against the block's largest; Q6_K fits each
//!   16-weight sub-block symmetrically with a small search around the max-abs scale, then stores the scales as
//!   i8 against the largest. C compilers may fuse multiply-adds in llama.cpp's build, so the bytes can differ
//!   in rare ties; the tests bound the round-trip error against llama.cpp's instead of comparing bits.
//!
//! Non-finite inputs give unspecified (but memory-safe) codes, as in both references.

use half::f16;

use super::f16_to_f32;
use crate::tensor::DType;

/// Whether [`quantize_row`] can write `dtype`.
pub fn can_quantize(dtype: DType) -> bool {
    matches!(
        dtype,
        DType::F32
            | DType::F16
            | DType::BF16
            | DType::Q8_0
            | DType::Q5_0
            | DType::Q4_0
            | DType::Q4_1
            | DType::Q4_K
            | DType::Q6_K
    )
}

/// Quantizes `src` (whole blocks of `dtype`) into `dst`, which must hold exactly `dtype.bytes_for(src.len())`
/// bytes. Panics on a type [`can_quantize`] refuses or on wrong lengths (callers size the buffers).
pub fn quantize_row(dtype: DType, src: &[f32], dst: &mut [u8]) {
    let need = dtype
        .bytes_for(src.len())
        .unwrap_or_else(|| panic!("{dtype}: {} values are not whole blocks", src.len()));
    assert_eq!(dst.len(), need, "{dtype}: output buffer size");
    let be = dtype.block_elems();
    let bb = dtype.block_bytes();
    let block_fn: fn(&[f32], &mut [u8]) = match dtype {
        DType::F32 => {
            for (d, v) in dst.chunks_exact_mut(4).zip(src) {
                d.copy_from_slice(&v.to_le_bytes());
            }
            return;
        }
        DType::F16 => {
            // Round to nearest even, overflow to infinity: numpy's astype(float16).
            for (d, v) in dst.chunks_exact_mut(2).zip(src) {
                d.copy_from_slice(&f16::from_f32(*v).to_bits().to_le_bytes());
            }
            return;
        }
        DType::BF16 => {
            for (d, v) in dst.chunks_exact_mut(2).zip(src) {
                d.copy_from_slice(&f32_to_bf16(*v).to_le_bytes());
            }
            return;
        }
        DType::Q8_0 => q8_0,
        DType::Q5_0 => q5_0,
        DType::Q4_0 => q4_0,
        DType::Q4_1 => q4_1,
        DType::Q4_K => q4_k,
        DType::Q6_K => q6_k,
        other => panic!("no quantizer for {other}"),
    };
    for (x, y) in src.chunks_exact(be).zip(dst.chunks_exact_mut(bb)) {
        block_fn(x, y);
    }
}

/// f32 to bf16 bits as ggml (and the `gguf` package) round: NaN made quiet, otherwise round to nearest even.
pub fn f32_to_bf16(v: f32) -> u16 {
    let n = v.to_bits();
    if n & 0x7fff_ffff > 0x7f80_0000 {
        return ((n >> 16) | 64) as u16;
    }
    ((n as u64 + (0x7fff + ((n >> 16) & 1)) as u64) >> 16) as u16
}

fn put_f16(dst: &mut [u8], v: f32) {
    dst[..2].copy_from_slice(&f16::from_f32(v).to_bits().to_le_bytes());
}

/// The f32 value an f16 store of `v` reads back as.
fn via_f16(v: f32) -> f32 {
    f16_to_f32(f16::from_f32(v).to_bits())
}

/// Q8_0 (34 bytes per 32): d = max|x| / 127, q = round-half-away(x / d) as i8.
fn q8_0(x: &[f32], y: &mut [u8]) {
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if d == 0.0 { 0.0 } else { 1.0 / d };
    put_f16(y, d);
    for (q, v) in y[2..34].iter_mut().zip(x) {
        *q = ((v * id).round() as i8) as u8;
    }
}

/// Index of the first value of largest magnitude, and that value with its sign.
fn signed_absmax(x: &[f32]) -> f32 {
    let mut best = 0usize;
    for (i, v) in x.iter().enumerate() {
        if v.abs() > x[best].abs() {
            best = i;
        }
    }
    x[best]
}

/// Q4_0 (18 bytes per 32): d = (signed max-magnitude value) / -8 so that value maps to code 0;
/// q = min(15, trunc(x / d + 8.5)). Weight i is the low nibble of byte i, weight i + 16 the high one.
fn q4_0(x: &[f32], y: &mut [u8]) {
    let d = signed_absmax(x) / -8.0;
    let id = if d == 0.0 { 0.0 } else { 1.0 / d };
    put_f16(y, d);
    let code = |v: f32| ((v * id + 8.5).trunc() as u8).min(15);
    for i in 0..16 {
        y[2 + i] = code(x[i]) | (code(x[i + 16]) << 4);
    }
}

/// Q5_0 (22 bytes per 32): like Q4_0 with 5-bit codes: d = (signed max-magnitude value) / -16,
/// q = min(31, trunc(x / d + 16.5)); low nibbles as Q4_0, bit 4 of weight i is bit i of the u32 `qh`.
fn q5_0(x: &[f32], y: &mut [u8]) {
    let d = signed_absmax(x) / -16.0;
    let id = if d == 0.0 { 0.0 } else { 1.0 / d };
    put_f16(y, d);
    let code = |v: f32| ((v * id + 16.5).trunc() as u8).min(31);
    let mut qh = 0u32;
    for i in 0..16 {
        let (a, b) = (code(x[i]), code(x[i + 16]));
        y[6 + i] = (a & 0x0f) | ((b & 0x0f) << 4);
        qh |= ((a >> 4) as u32) << i | ((b >> 4) as u32) << (i + 16);
    }
    y[2..6].copy_from_slice(&qh.to_le_bytes());
}

/// Q4_1 (20 bytes per 32): d = (max - min) / 15, m = min; q = min(15, trunc((x - min) / d + 0.5)).
fn q4_1(x: &[f32], y: &mut [u8]) {
    let max = x.iter().fold(f32::NEG_INFINITY, |a, &v| a.max(v));
    let min = x.iter().fold(f32::INFINITY, |a, &v| a.min(v));
    let d = (max - min) / 15.0;
    let id = if d == 0.0 { 0.0 } else { 1.0 / d };
    put_f16(y, d);
    put_f16(&mut y[2..], min);
    let code = |v: f32| (((v - min) * id + 0.5).trunc() as u8).min(15);
    for i in 0..16 {
        y[4 + i] = code(x[i]) | (code(x[i + 16]) << 4);
    }
}

/// Round to nearest, ties to even (what ggml's float-to-int trick computes for |v| < 2^22).
#[inline]
fn nearest(v: f32) -> i32 {
    v.round_ties_even() as i32
}

/// Fits `x ≈ scale * q - offset` (q in 0..=nmax, offset ≥ 0) minimizing the `w`-weighted squared error: start
/// from the min/max grid, then try `nstep + 1` slightly different grid densities, each followed by the
/// closed-form weighted least-squares scale and offset for the codes it produced, and keep the best.
/// Writes the codes to `l` and returns `(scale, offset)`.
fn fit_affine(
    x: &[f32],
    w: &[f32],
    nmax: i32,
    rmin: f32,
    rdelta: f32,
    nstep: i32,
    l: &mut [u8],
) -> (f32, f32) {
    let n = x.len();
    let (mut min, mut max) = (x[0], x[0]);
    let mut sum_w = w[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        min = min.min(x[i]);
        max = max.max(x[i]);
        sum_w += w[i];
        sum_x += w[i] * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        l.fill(0);
        return (0.0, -min);
    }
    let nmax_f = nmax as f32;
    let mut iscale = nmax_f / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best = 0f32;
    for i in 0..n {
        let q = nearest(iscale * (x[i] - min)).clamp(0, nmax);
        l[i] = q as u8;
        let diff = scale * q as f32 + min - x[i];
        best += w[i] * (diff * diff);
    }
    let mut aux = [0u8; 32];
    for step in 0..=nstep {
        iscale = (rmin + rdelta * step as f32 + nmax_f) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0f32, 0f32, 0f32);
        for i in 0..n {
            let q = nearest(iscale * (x[i] - min)).clamp(0, nmax);
            aux[i] = q as u8;
            let q = q as f32;
            sum_l += w[i] * q;
            sum_l2 += w[i] * q * q;
            sum_xl += w[i] * q * x[i];
        }
        let det = sum_w * sum_l2 - sum_l * sum_l;
        if det > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut err = 0f32;
            for i in 0..n {
                let diff = this_scale * aux[i] as f32 + this_min - x[i];
                err += w[i] * (diff * diff);
            }
            if err < best {
                l[..n].copy_from_slice(&aux[..n]);
                best = err;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// Q4_K (144 bytes per 256): eight 32-weight sub-blocks, each `w = d*sc*q - dmin*m` with q 4 bits and sc, m
/// 6 bits. Layout as [`super::kquants`] reads it.
fn q4_k(x: &[f32], y: &mut [u8]) {
    let mut l = [0u8; 256];
    let mut scales = [0f32; 8];
    let mut mins = [0f32; 8];
    let mut weights = [0f32; 32];
    for j in 0..8 {
        let xs = &x[32 * j..32 * j + 32];
        let mut sum_x2 = 0f32;
        for v in xs {
            sum_x2 += v * v;
        }
        // Weight each value by its own magnitude plus the sub-block's RMS: large weights matter more.
        let av_x = (sum_x2 / 32.0).sqrt();
        for (wt, v) in weights.iter_mut().zip(xs) {
            *wt = av_x + v.abs();
        }
        (scales[j], mins[j]) =
            fit_affine(xs, &weights, 15, -1.0, 0.1, 20, &mut l[32 * j..32 * j + 32]);
    }
    let max_scale = scales.iter().fold(0f32, |a, &s| if s > a { s } else { a });
    let max_min = mins.iter().fold(0f32, |a, &s| if s > a { s } else { a });
    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let mut sc = [0u8; 8];
    let mut mn = [0u8; 8];
    for j in 0..8 {
        sc[j] = (nearest(inv_scale * scales[j]) as u8).min(63);
        mn[j] = (nearest(inv_min * mins[j]) as u8).min(63);
    }
    put_f16(&mut y[0..], max_scale / 63.0);
    put_f16(&mut y[2..], max_min / 63.0);
    let packed = &mut y[4..16];
    packed.fill(0);
    for j in 0..8 {
        if j < 4 {
            packed[j] = sc[j];
            packed[j + 4] = mn[j];
        } else {
            packed[j + 4] = (sc[j] & 0x0f) | ((mn[j] & 0x0f) << 4);
            packed[j - 4] |= (sc[j] >> 4) << 6;
            packed[j] |= (mn[j] >> 4) << 6;
        }
    }
    // Requantize against the stored (rounded) factors, so codes match what a reader reconstructs.
    let d = f16_to_f32(u16::from_le_bytes([y[0], y[1]]));
    let dmin = f16_to_f32(u16::from_le_bytes([y[2], y[3]]));
    for j in 0..8 {
        let (s, m) = super::k4_scale_min(&y[4..16], j);
        let dl = d * s as f32;
        if dl == 0.0 {
            continue;
        }
        let ml = dmin * m as f32;
        for i in 0..32 {
            l[32 * j + i] = nearest((x[32 * j + i] + ml) / dl).clamp(0, 15) as u8;
        }
    }
    // Sub-blocks 2c and 2c+1 share bytes qs[32c..32c+32] as low and high nibbles.
    let qs = &mut y[16..144];
    for c in 0..4 {
        for i in 0..32 {
            qs[32 * c + i] = l[64 * c + i] | (l[64 * c + 32 + i] << 4);
        }
    }
}

/// Fits `x ≈ scale * q` with q in `-nmax..nmax` (nmax = 32 for Q6_K), weighting each value by its square:
/// start from the grid that puts the max-magnitude value on -nmax, then try 18 nearby grid densities, each
/// with its least-squares scale, and keep the one that explains the most. Writes `q + nmax` to `l`.
fn fit_symmetric(x: &[f32], nmax: i32, l: &mut [u8]) -> f32 {
    let max = signed_absmax(x);
    if max.abs() < 1e-15 {
        l.fill(0);
        return 0.0;
    }
    let nmax_f = nmax as f32;
    let code = |iscale: f32, v: f32| nearest(iscale * v).clamp(-nmax, nmax - 1);
    let sums = |iscale: f32| {
        let (mut sumlx, mut suml2) = (0f32, 0f32);
        for &v in x {
            let q = code(iscale, v) as f32;
            let w = v * v;
            sumlx += w * v * q;
            suml2 += w * q * q;
        }
        (sumlx, suml2)
    };
    let iscale = -nmax_f / max;
    for (o, &v) in l.iter_mut().zip(x) {
        *o = (code(iscale, v) + nmax) as u8;
    }
    let (sumlx, suml2) = sums(iscale);
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for step in (-9..=9).filter(|&s| s != 0) {
        let iscale = -(nmax_f + 0.1 * step as f32) / max;
        let (sumlx, suml2) = sums(iscale);
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            for (o, &v) in l.iter_mut().zip(x) {
                *o = (code(iscale, v) + nmax) as u8;
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// Q6_K (210 bytes per 256): sixteen 16-weight sub-blocks, `w = d * sc * (q - 32)` with q 6 bits and sc an
/// i8. Layout as [`super::kquants`] reads it.
fn q6_k(x: &[f32], y: &mut [u8]) {
    let mut l = [0u8; 256];
    let mut scales = [0f32; 16];
    let (mut max_scale, mut max_abs) = (0f32, 0f32);
    for (ib, s) in scales.iter_mut().enumerate() {
        *s = fit_symmetric(&x[16 * ib..16 * ib + 16], 32, &mut l[16 * ib..16 * ib + 16]);
        if s.abs() > max_abs {
            max_abs = s.abs();
            max_scale = *s;
        }
    }
    y.fill(0);
    if max_abs < 1e-15 {
        return;
    }
    let iscale = -128.0 / max_scale;
    put_f16(&mut y[208..], 1.0 / iscale);
    let d = via_f16(1.0 / iscale);
    for (ib, s) in scales.iter().enumerate() {
        let q = nearest(iscale * s).min(127) as i8;
        y[192 + ib] = q as u8;
        let dl = d * q as f32;
        if dl == 0.0 {
            continue;
        }
        for i in 0..16 {
            l[16 * ib + i] = (nearest(x[16 * ib + i] / dl).clamp(-32, 31) + 32) as u8;
        }
    }
    // Per half h (128 weights): weight h*128 + n keeps its low nibble in ql[h*64 + n%64] (nibble n/64) and
    // its top 2 bits in qh[h*32 + n%32] (bit pair n/32).
    for h in 0..2 {
        for i in 0..32 {
            let q = |k: usize| l[128 * h + 32 * k + i];
            y[64 * h + i] = (q(0) & 0x0f) | ((q(2) & 0x0f) << 4);
            y[64 * h + 32 + i] = (q(1) & 0x0f) | ((q(3) & 0x0f) << 4);
            y[128 + 32 * h + i] =
                (q(0) >> 4) | ((q(1) >> 4) << 2) | ((q(2) >> 4) << 4) | ((q(3) >> 4) << 6);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::quants::dequantize_row;

    fn wave(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                ((s >> 8) as f32 / (1u32 << 24) as f32 - 0.5) * 0.2
            })
            .collect()
    }

    fn rel_rms(dtype: DType, x: &[f32]) -> f32 {
        let mut q = vec![0u8; dtype.bytes_for(x.len()).unwrap()];
        quantize_row(dtype, x, &mut q);
        let mut back = vec![0f32; x.len()];
        dequantize_row(dtype, &q, &mut back);
        let e: f32 = x.iter().zip(&back).map(|(a, b)| (a - b) * (a - b)).sum();
        let s: f32 = x.iter().map(|a| a * a).sum();
        (e / s).sqrt()
    }

    #[test]
    fn round_trips_within_each_types_resolution() {
        // Uniform data: relative RMS error of a b-bit uniform grid is about 2^-b (plus scale rounding).
        let x = wave(4096, 7);
        for (dt, bound) in [
            (DType::F16, 1e-3),
            (DType::BF16, 4e-3),
            (DType::Q8_0, 0.01),
            (DType::Q5_0, 0.06),
            (DType::Q6_K, 0.03),
            (DType::Q4_K, 0.09),
            (DType::Q4_1, 0.09),
            (DType::Q4_0, 0.12),
        ] {
            let e = rel_rms(dt, &x);
            assert!(e < bound, "{dt}: relative RMS error {e} >= {bound}");
        }
    }

    #[test]
    fn zeros_stay_zero() {
        let x = vec![0f32; 256];
        for dt in [
            DType::Q8_0,
            DType::Q4_0,
            DType::Q4_1,
            DType::Q4_K,
            DType::Q6_K,
        ] {
            let mut q = vec![0u8; dt.bytes_for(256).unwrap()];
            quantize_row(dt, &x, &mut q);
            let mut back = vec![1f32; 256];
            dequantize_row(dt, &q, &mut back);
            assert!(back.iter().all(|&v| v == 0.0), "{dt}");
        }
    }

    #[test]
    fn bf16_rounds_to_nearest_even_and_quiets_nan() {
        assert_eq!(f32_to_bf16(1.0), 0x3f80);
        assert_eq!(f32_to_bf16(f32::from_bits(0x3f80_8000)), 0x3f80); // tie, even stays
        assert_eq!(f32_to_bf16(f32::from_bits(0x3f81_8000)), 0x3f82); // tie, odd rounds up
        assert_eq!(f32_to_bf16(f32::from_bits(0x7f80_0001)), 0x7fc0);
    }
}
