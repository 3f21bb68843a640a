//! MLX's quantized weight formats (`mx.quantize` / `mx.dequantize`), scalar and bit-exact with mlx 0.32.
//!
//! MLX stores a quantized `[out, in]` linear weight as three tensors: `X.weight` (u32 words holding the packed
//! codes of each row, a little-endian bitstream), `X.scales` (one per group of `group_size` codes) and, in
//! affine mode only, `X.biases`. This module is the numeric layer the MLX loader, kernels and `hearth convert`
//! build on: a validated description of a format ([`MlxQuant`]), the byte sizes of one row, and one-row
//! reference [`quantize_row`] / [`dequantize_row`] that reproduce mlx's CPU results bit for bit (checked
//! against committed fixtures written by `scripts/make_mlx_fixtures.py`).
//!
//! Modes:
//! - affine: `w ≈ scale * q + bias`, q of 1..8 bits (not 7); scales and biases in the checkpoint's float
//!   dtype. 3-, 5- and 6-bit codes cross byte and word boundaries (one continuous bitstream per row).
//! - mxfp4: E2M1 codes, one E8M0 (power of two) scale byte per 32 codes, no bias.
//! - nvfp4: E2M1 codes, one E4M3 scale byte per 16 codes, no bias.
//! - mxfp8: E4M3 codes (one byte each), one E8M0 scale byte per 32 codes, no bias.
//!
//! Packed words are taken and produced as little-endian bytes (`4 * words` of them) rather than `&[u32]`, so
//! a row can be read straight from a memory-mapped file at any alignment.

use half::{bf16, f16};

/// The quantization scheme of an MLX weight, as written in `config.json`'s `quantization.mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MlxMode {
    Affine,
    Mxfp4,
    Nvfp4,
    Mxfp8,
}

impl MlxMode {
    /// Parses mlx's mode name (`"affine"`, `"mxfp4"`, `"nvfp4"`, `"mxfp8"`), as config files spell it.
    pub fn from_name(name: &str) -> Result<MlxMode, MlxQuantError> {
        Ok(match name {
            "affine" => MlxMode::Affine,
            "mxfp4" => MlxMode::Mxfp4,
            "nvfp4" => MlxMode::Nvfp4,
            "mxfp8" => MlxMode::Mxfp8,
            _ => return Err(MlxQuantError::UnknownMode(name.to_string())),
        })
    }

    /// mlx's name for the mode, for writing config files.
    pub fn name(self) -> &'static str {
        match self {
            MlxMode::Affine => "affine",
            MlxMode::Mxfp4 => "mxfp4",
            MlxMode::Nvfp4 => "nvfp4",
            MlxMode::Mxfp8 => "mxfp8",
        }
    }

    /// mlx's defaults `(bits, group_size)` when a config leaves them out.
    pub fn defaults(self) -> (u8, usize) {
        match self {
            MlxMode::Affine => (4, 64),
            MlxMode::Mxfp4 => (4, 32),
            MlxMode::Nvfp4 => (4, 16),
            MlxMode::Mxfp8 => (8, 32),
        }
    }
}

/// The float dtype of affine scales and biases in a checkpoint (mlx keeps them in the weights' own dtype),
/// which is also the dtype mlx computes a dequantized affine row in, and the dtype of the source weights
/// whose rounding the fp modes' quantizer reproduces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MlxFloat {
    F32,
    F16,
    BF16,
}

impl MlxFloat {
    /// Bytes of one value.
    pub fn size(self) -> usize {
        match self {
            MlxFloat::F32 => 4,
            MlxFloat::F16 | MlxFloat::BF16 => 2,
        }
    }

    /// `x` rounded to this dtype (nearest, ties to even) and widened back: one mlx arithmetic step's result.
    pub fn round(self, x: f32) -> f32 {
        match self {
            MlxFloat::F32 => x,
            MlxFloat::F16 => f16::from_f32(x).to_f32(),
            MlxFloat::BF16 => bf16::from_f32(x).to_f32(),
        }
    }

    /// Value `i` of little-endian `bytes` (which hold at least `i + 1` values), exactly widened to f32.
    pub fn read(self, bytes: &[u8], i: usize) -> f32 {
        match self {
            MlxFloat::F32 => {
                f32::from_le_bytes(bytes[4 * i..4 * i + 4].try_into().expect("4 bytes"))
            }
            MlxFloat::F16 => f16::from_le_bytes([bytes[2 * i], bytes[2 * i + 1]]).to_f32(),
            MlxFloat::BF16 => bf16::from_le_bytes([bytes[2 * i], bytes[2 * i + 1]]).to_f32(),
        }
    }

    /// Stores `x` (rounded to nearest, ties to even, as a C++ cast does) as value `i` of `bytes`.
    pub fn write(self, bytes: &mut [u8], i: usize, x: f32) {
        match self {
            MlxFloat::F32 => bytes[4 * i..4 * i + 4].copy_from_slice(&x.to_le_bytes()),
            MlxFloat::F16 => {
                bytes[2 * i..2 * i + 2].copy_from_slice(&f16::from_f32(x).to_le_bytes())
            }
            MlxFloat::BF16 => {
                bytes[2 * i..2 * i + 2].copy_from_slice(&bf16::from_f32(x).to_le_bytes())
            }
        }
    }
}

/// Why an MLX format description or a row's buffers were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MlxQuantError {
    #[error("unknown MLX quantization mode {0:?} (expected affine, mxfp4, nvfp4 or mxfp8)")]
    UnknownMode(String),
    #[error("MLX {mode} quantization does not support {bits} bits (supported: {supported})")]
    Bits {
        mode: &'static str,
        bits: u8,
        supported: &'static str,
    },
    #[error(
        "MLX {mode} quantization does not support group size {group_size} (supported: {supported})"
    )]
    GroupSize {
        mode: &'static str,
        group_size: usize,
        supported: &'static str,
    },
    #[error("a row of {cols} values is not whole groups of {group_size} packed into whole u32 words at {bits} bits")]
    RowLength {
        cols: usize,
        group_size: usize,
        bits: u8,
    },
    #[error("{what}: expected {expected} bytes, got {got}")]
    BufferLength {
        what: &'static str,
        expected: usize,
        got: usize,
    },
    #[error("{0} mode has no biases, but biases were given")]
    UnexpectedBiases(&'static str),
    #[error("affine mode needs biases, but none were given")]
    MissingBiases,
}

/// A validated MLX quantization format: mode, bits per code and codes per scale.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MlxQuant {
    mode: MlxMode,
    bits: u8,
    group_size: usize,
}

impl MlxQuant {
    /// Checks `(mode, bits, group_size)` against what mlx's `quantize` accepts: affine takes bits 1, 2, 3, 4,
    /// 5, 6 or 8 with groups of 32, 64 or 128; mxfp4 is 4 bits in groups of 32, nvfp4 4 bits in groups of 16,
    /// mxfp8 8 bits in groups of 32.
    pub fn new(mode: MlxMode, bits: u8, group_size: usize) -> Result<MlxQuant, MlxQuantError> {
        let name = mode.name();
        match mode {
            MlxMode::Affine => {
                if !matches!(bits, 1..=6 | 8) {
                    return Err(MlxQuantError::Bits {
                        mode: name,
                        bits,
                        supported: "1, 2, 3, 4, 5, 6, 8",
                    });
                }
                if !matches!(group_size, 32 | 64 | 128) {
                    return Err(MlxQuantError::GroupSize {
                        mode: name,
                        group_size,
                        supported: "32, 64, 128",
                    });
                }
            }
            MlxMode::Mxfp4 | MlxMode::Nvfp4 | MlxMode::Mxfp8 => {
                let (want_bits, want_group) = mode.defaults();
                if bits != want_bits {
                    let supported = if want_bits == 4 { "4" } else { "8" };
                    return Err(MlxQuantError::Bits {
                        mode: name,
                        bits,
                        supported,
                    });
                }
                if group_size != want_group {
                    let supported = if want_group == 16 { "16" } else { "32" };
                    return Err(MlxQuantError::GroupSize {
                        mode: name,
                        group_size,
                        supported,
                    });
                }
            }
        }
        Ok(MlxQuant {
            mode,
            bits,
            group_size,
        })
    }

    /// Like [`MlxQuant::new`], filling a missing bits or group size with mlx's default for the mode (as
    /// `mx.quantize` does when a config names only some of them).
    pub fn with_defaults(
        mode: MlxMode,
        bits: Option<u8>,
        group_size: Option<usize>,
    ) -> Result<MlxQuant, MlxQuantError> {
        let (b, g) = mode.defaults();
        MlxQuant::new(mode, bits.unwrap_or(b), group_size.unwrap_or(g))
    }

    /// Affine format with `bits` per code and `group_size` codes per scale/bias pair.
    pub fn affine(bits: u8, group_size: usize) -> Result<MlxQuant, MlxQuantError> {
        MlxQuant::new(MlxMode::Affine, bits, group_size)
    }

    pub fn mode(&self) -> MlxMode {
        self.mode
    }

    pub fn bits(&self) -> u8 {
        self.bits
    }

    pub fn group_size(&self) -> usize {
        self.group_size
    }

    /// Whether the format stores biases (affine only).
    pub fn has_biases(&self) -> bool {
        self.mode == MlxMode::Affine
    }

    /// Checks that a row of `cols` values is whole groups and packs into whole u32 words.
    pub fn check_row(&self, cols: usize) -> Result<(), MlxQuantError> {
        if !cols.is_multiple_of(self.group_size) || !(cols * self.bits as usize).is_multiple_of(32)
        {
            return Err(MlxQuantError::RowLength {
                cols,
                group_size: self.group_size,
                bits: self.bits,
            });
        }
        Ok(())
    }

    /// u32 words of packed codes in a row of `cols` values (the last dimension of `X.weight`).
    pub fn packed_words_per_row(&self, cols: usize) -> Result<usize, MlxQuantError> {
        self.check_row(cols)?;
        Ok(cols * self.bits as usize / 32)
    }

    /// Scales (and, in affine mode, biases) in a row of `cols` values: one per group.
    pub fn groups_per_row(&self, cols: usize) -> Result<usize, MlxQuantError> {
        self.check_row(cols)?;
        Ok(cols / self.group_size)
    }

    /// Bytes of one row's scales: `float`-sized values in affine mode, one byte each (E8M0 or E4M3) otherwise.
    pub fn scale_bytes_per_row(
        &self,
        cols: usize,
        float: MlxFloat,
    ) -> Result<usize, MlxQuantError> {
        let per = if self.has_biases() { float.size() } else { 1 };
        Ok(self.groups_per_row(cols)? * per)
    }

    /// Bytes of one row's biases: as many as its scales in affine mode, none otherwise.
    pub fn bias_bytes_per_row(&self, cols: usize, float: MlxFloat) -> Result<usize, MlxQuantError> {
        if self.has_biases() {
            self.scale_bytes_per_row(cols, float)
        } else {
            self.check_row(cols).map(|_| 0)
        }
    }

    /// Checks every buffer of one row against `cols` (the row's value count).
    fn check_buffers(
        &self,
        cols: usize,
        float: MlxFloat,
        packed: usize,
        scales: usize,
        biases: Option<usize>,
    ) -> Result<(), MlxQuantError> {
        let len = |what, expected, got| {
            if expected == got {
                Ok(())
            } else {
                Err(MlxQuantError::BufferLength {
                    what,
                    expected,
                    got,
                })
            }
        };
        len("packed codes", 4 * self.packed_words_per_row(cols)?, packed)?;
        len("scales", self.scale_bytes_per_row(cols, float)?, scales)?;
        match (self.has_biases(), biases) {
            (true, Some(b)) => len("biases", self.bias_bytes_per_row(cols, float)?, b),
            (true, None) => Err(MlxQuantError::MissingBiases),
            (false, Some(_)) => Err(MlxQuantError::UnexpectedBiases(self.mode.name())),
            (false, None) => Ok(()),
        }
    }
}

/// E2M1 code → value, in mlx's table order (code 8 is -0).
pub const FP4_E2M1_VALUES: [f32; 16] = [
    0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0,
];

/// The value of an E4M3 byte (the OCP "fn" variant: no infinities, 0x7F/0xFF are NaN, max 448).
pub fn e4m3_to_f32(b: u8) -> f32 {
    let sign = if b & 0x80 != 0 { -1.0f32 } else { 1.0 };
    let exp = ((b >> 3) & 0xF) as i32;
    let man = (b & 7) as f32;
    if exp == 15 && b & 7 == 7 {
        return f32::NAN;
    }
    let mag = if exp == 0 {
        man * (2.0f32).powi(-9)
    } else {
        (1.0 + man / 8.0) * (2.0f32).powi(exp - 7)
    };
    sign * mag
}

/// An f32 rounded to an E4M3 byte as mlx rounds it: nearest, ties to even; magnitudes of 448 and above (and
/// NaN) saturate to ±448 rather than becoming NaN; magnitudes of 2^-10 and below flush to ±0.
pub fn f32_to_e4m3(x: f32) -> u8 {
    let bits = x.to_bits();
    let sign = ((bits >> 24) & 0x80) as u8;
    let mag_bits = bits & 0x7FFF_FFFF;
    // 448 and above (NaN's bits compare above too) saturate to the largest finite code.
    if mag_bits >= 448f32.to_bits() {
        return sign | 0x7E;
    }
    let mag = f32::from_bits(mag_bits);
    let code = if mag < 2f32.powi(-6) {
        // Subnormal range: multiples of 2^-9, rounded to nearest even multiple by the f32 addition below.
        ((mag + 2f32.powi(14)).to_bits() - 2f32.powi(14).to_bits()) as u8
    } else {
        // Normal: keep 3 mantissa bits, round to nearest even, rebias the exponent from 127 to 7.
        let odd = (mag_bits >> 20) & 1;
        let rounded =
            mag_bits.wrapping_add(((7u32.wrapping_sub(127)) << 23).wrapping_add(0x7FFFF) + odd);
        (rounded >> 20) as u8
    };
    sign | code
}

/// The value of an E8M0 scale byte: 2^(b - 127) (255 gives +inf, as mlx's power does).
pub fn e8m0_to_f32(b: u8) -> f32 {
    (2.0f32).powi(b as i32 - 127)
}

/// Reads code `i` of a little-endian bitstream of `bits`-bit codes.
pub(crate) fn read_code(packed: &[u8], bits: usize, i: usize) -> u32 {
    let bit = i * bits;
    let byte = bit / 8;
    let mut window = 0u32;
    for k in 0..2.min(packed.len() - byte) {
        window |= (packed[byte + k] as u32) << (8 * k);
    }
    (window >> (bit % 8)) & ((1u32 << bits) - 1)
}

/// ORs code `i` (already `bits` wide) into a little-endian bitstream.
pub(crate) fn write_code(packed: &mut [u8], bits: usize, i: usize, code: u32) {
    let bit = i * bits;
    let byte = bit / 8;
    let window = code << (bit % 8);
    for k in 0..2.min(packed.len() - byte) {
        packed[byte + k] |= (window >> (8 * k)) as u8;
    }
}

/// Dequantizes one row as `mx.dequantize` does on the CPU.
///
/// `packed` holds the row's u32 words as little-endian bytes. In affine mode `scales` and `biases` are
/// little-endian values of dtype `float` and each output is `round(round(q * scale) + bias)` with both steps
/// rounded to `float` (mlx multiplies then adds in the scales' dtype, no fused multiply-add); the results are
/// exact in `float` and widened to f32 here. In the fp modes `scales` are the E8M0/E4M3 bytes, `biases` must
/// be None, `float` is unused, and the outputs are mlx's float32 outputs (`dtype=mx.float32`; its default
/// bfloat16 output is the same value rounded).
pub fn dequantize_row(
    q: &MlxQuant,
    float: MlxFloat,
    packed: &[u8],
    scales: &[u8],
    biases: Option<&[u8]>,
    out: &mut [f32],
) -> Result<(), MlxQuantError> {
    let cols = out.len();
    q.check_buffers(
        cols,
        float,
        packed.len(),
        scales.len(),
        biases.map(<[u8]>::len),
    )?;
    let bits = q.bits as usize;
    let gs = q.group_size;
    match q.mode {
        MlxMode::Affine => {
            let biases = biases.expect("checked: affine has biases");
            for (g, chunk) in out.chunks_mut(gs).enumerate() {
                let scale = float.read(scales, g);
                let bias = float.read(biases, g);
                for (j, o) in chunk.iter_mut().enumerate() {
                    let code = read_code(packed, bits, g * gs + j) as f32;
                    *o = float.round(float.round(code * scale) + bias);
                }
            }
        }
        MlxMode::Mxfp4 | MlxMode::Nvfp4 => {
            for (g, chunk) in out.chunks_mut(gs).enumerate() {
                let scale = fp_scale(q.mode, scales[g]);
                for (j, o) in chunk.iter_mut().enumerate() {
                    *o = FP4_E2M1_VALUES[read_code(packed, 4, g * gs + j) as usize] * scale;
                }
            }
        }
        MlxMode::Mxfp8 => {
            for (g, chunk) in out.chunks_mut(gs).enumerate() {
                let scale = e8m0_to_f32(scales[g]);
                for (j, o) in chunk.iter_mut().enumerate() {
                    *o = e4m3_to_f32(packed[g * gs + j]) * scale;
                }
            }
        }
    }
    Ok(())
}

/// A fp mode's scale byte as a float: E4M3 for nvfp4, E8M0 for the mx modes.
pub(crate) fn fp_scale(mode: MlxMode, b: u8) -> f32 {
    if mode == MlxMode::Nvfp4 {
        e4m3_to_f32(b)
    } else {
        e8m0_to_f32(b)
    }
}

/// Quantizes one row as `mx.quantize` does on the CPU, for weights of dtype `float` (`input` holds them
/// widened to f32, so every value must be exact in `float`).
///
/// Writes the row's packed words (little-endian bytes), its scales (affine: `float` values; fp modes: one
/// byte each) and, in affine mode, its biases (`float` values). Affine follows mlx's CPU quantizer: min/max
/// in f32; the scale is `(max - min) / (2^bits - 1)` (at least 1e-7), signed towards the larger-magnitude
/// edge and then re-derived as `edge / round(edge / scale)` so that edge is hit exactly with bias = edge;
/// codes are `round((w - bias) / scale)` clamped to the code range, rounding ties to even, all with the
/// unrounded f32 scale; only the stored scale and bias are rounded to `float`. The fp modes take the group's
/// absolute maximum over the element format's largest value (6 or 448), rounded to `float` (so a tiny
/// group's scale underflows to zero in f16, as in mlx); nvfp4 stores that as E4M3, the mx modes store the
/// exponent `ceil(log2(.))` as E8M0 (rounding up, so no element clips; zero gives exponent 0); each weight
/// divided by the stored scale is then rounded to the nearest E2M1 or E4M3 value.
pub fn quantize_row(
    q: &MlxQuant,
    float: MlxFloat,
    input: &[f32],
    packed: &mut [u8],
    scales: &mut [u8],
    biases: Option<&mut [u8]>,
) -> Result<(), MlxQuantError> {
    let cols = input.len();
    q.check_buffers(
        cols,
        float,
        packed.len(),
        scales.len(),
        biases.as_ref().map(|b| b.len()),
    )?;
    packed.fill(0);
    match q.mode {
        MlxMode::Affine => {
            let biases = biases.expect("checked: affine has biases");
            quantize_affine(q, float, input, packed, scales, biases)
        }
        _ => quantize_fp(q, float, input, packed, scales),
    }
    Ok(())
}

fn quantize_affine(
    q: &MlxQuant,
    float: MlxFloat,
    input: &[f32],
    packed: &mut [u8],
    scales: &mut [u8],
    biases: &mut [u8],
) {
    let bits = q.bits as usize;
    let n_bins = ((1u32 << bits) - 1) as f32;
    let eps = 1e-7f32;
    for (g, group) in input.chunks(q.group_size).enumerate() {
        let (mut w_min, mut w_max) = (f32::INFINITY, f32::NEG_INFINITY);
        for &w in group {
            w_max = w_max.max(w);
            w_min = w_min.min(w);
        }
        let (scale, bias) = if bits == 1 {
            ((w_max - w_min).max(eps), w_min)
        } else {
            let min_is_edge = w_min.abs() > w_max.abs();
            let step = ((w_max - w_min) / n_bins).max(eps);
            let (step, edge) = if min_is_edge {
                (step, w_min)
            } else {
                (-step, w_max)
            };
            let q0 = (edge / step).round_ties_even();
            if q0 != 0.0 {
                (edge / q0, edge)
            } else {
                (step, 0.0)
            }
        };
        for (j, &w) in group.iter().enumerate() {
            let code = ((w - bias) / scale).round_ties_even().clamp(0.0, n_bins);
            write_code(packed, bits, g * q.group_size + j, code as u32);
        }
        float.write(scales, g, scale);
        float.write(biases, g, bias);
    }
}

fn quantize_fp(q: &MlxQuant, float: MlxFloat, input: &[f32], packed: &mut [u8], scales: &mut [u8]) {
    let max_code = if q.bits == 4 { 6.0f32 } else { 448.0 };
    for (g, group) in input.chunks(q.group_size).enumerate() {
        let amax = group.iter().fold(f32::NEG_INFINITY, |m, &w| m.max(w.abs()));
        let raw = float.round(amax / max_code);
        // The divisor each weight is scaled by before it is rounded to a code, in `float`.
        let divisor = if q.mode == MlxMode::Nvfp4 {
            let b = f32_to_e4m3(raw);
            scales[g] = b;
            float.round(e4m3_to_f32(b))
        } else {
            let e = if raw == 0.0 {
                0
            } else {
                raw.log2().ceil() as i32
            };
            scales[g] = (e + 127) as u8;
            float.round((2.0f32).powf(e as f32))
        };
        for (j, &w) in group.iter().enumerate() {
            let x = float.round(w / divisor);
            let i = g * q.group_size + j;
            if q.bits == 4 {
                write_code(packed, 4, i, nearest_e2m1(x));
            } else {
                packed[i] = f32_to_e4m3(x);
            }
        }
    }
}

/// The E2M1 code nearest `x` as mlx picks it: the first table entry (in [`FP4_E2M1_VALUES`] order) with the
/// smallest `|x - value|` in f32, so ties between neighbours go to the smaller magnitude and zero is +0.
fn nearest_e2m1(x: f32) -> u32 {
    let mut best = 0u32;
    let mut best_d = (x - FP4_E2M1_VALUES[0]).abs();
    for (k, &v) in FP4_E2M1_VALUES.iter().enumerate().skip(1) {
        let d = (x - v).abs();
        if d < best_d {
            best = k as u32;
            best_d = d;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e4m3_round_trips_every_finite_byte() {
        for b in 0u8..=255 {
            if b & 0x7F == 0x7F {
                assert!(e4m3_to_f32(b).is_nan());
                continue;
            }
            let v = e4m3_to_f32(b);
            let back = f32_to_e4m3(v);
            // -0 and +0 differ only in the sign bit, which f32_to_e4m3 keeps.
            assert_eq!(back, b, "byte {b:#04x} value {v}");
        }
        assert_eq!(e4m3_to_f32(0x7E), 448.0);
        assert_eq!(f32_to_e4m3(1000.0), 0x7E);
        assert_eq!(f32_to_e4m3(-1000.0), 0xFE);
    }

    #[test]
    fn bitstream_codes_round_trip_at_every_width() {
        for bits in 1..=8usize {
            let n = 64;
            let mut buf = vec![0u8; n * bits / 8];
            let codes: Vec<u32> = (0..n as u32)
                .map(|i| (i.wrapping_mul(2654435761u32) >> 7) & ((1 << bits) - 1))
                .collect();
            for (i, &c) in codes.iter().enumerate() {
                write_code(&mut buf, bits, i, c);
            }
            for (i, &c) in codes.iter().enumerate() {
                assert_eq!(read_code(&buf, bits, i), c, "bits {bits} code {i}");
            }
        }
    }
}
