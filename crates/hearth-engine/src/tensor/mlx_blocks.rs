//! MLX-quantized weights as hearth holds them in memory: one self-contained block per quantization group.
//!
//! A checkpoint keeps a quantized `[out, in]` matrix as three arrays (`X.weight` packed codes, `X.scales`,
//! `X.biases`; see [`super::mlx`]). A kernel reading three streams per row pays three sets of address
//! arithmetic and prefetch streams, and every other weight type in hearth is "a row is whole blocks of bytes".
//! So the loader repacks each group once, at load time, into a block of the same bytes:
//!
//! ```text
//! affine:            [scale: float][bias: float][codes: group_size * bits / 8 bytes]
//! mxfp4/nvfp4/mxfp8: [scale: 1 byte (E8M0 or E4M3)][codes: group_size * bits / 8 bytes]
//! ```
//!
//! The codes keep MLX's little-endian bitstream order (code `i` of the group at bit `i * bits`); a group is
//! always whole bytes (32 codes of 1 bit are 4 bytes), so blocks never share a byte. The block costs exactly
//! the checkpoint's bytes per group: 4-bit, groups of 64, bf16 scales is 36 bytes per 64 weights (4.5 bits),
//! the same as GGUF Q4_0.
//!
//! Values: affine `w = scale * q + bias` computed in f32 (a multiply, then an add, never fused, so every SIMD
//! level reproduces it exactly). mlx's own `dequantize` rounds both steps to the scales' dtype; hearth keeps
//! f32 as mlx's quantized matmul kernels do, which is at least as close to the original weights. The fp modes'
//! products (E2M1 or E4M3 times a power of two or an E4M3 scale) are exact in f32, equal to mlx's.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use super::mlx::{e4m3_to_f32, fp_scale, read_code, MlxFloat, MlxMode, MlxQuant, FP4_E2M1_VALUES};

/// The in-memory block type of an MLX-quantized tensor: its quantization and the dtype of its affine scales
/// and biases (ignored by the fp modes, whose scales are bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MlxBlocks {
    pub quant: MlxQuant,
    pub float: MlxFloat,
}

impl MlxBlocks {
    /// The block type for `quant`; the fp modes store byte scales, so their `float` is normalised to f32 (two
    /// tensors of the same fp format are the same type whatever their checkpoint's float dtype).
    pub fn new(quant: MlxQuant, float: MlxFloat) -> MlxBlocks {
        let float = if quant.has_biases() {
            float
        } else {
            MlxFloat::F32
        };
        MlxBlocks { quant, float }
    }

    /// Weights per block: the group size.
    pub fn block_elems(self) -> usize {
        self.quant.group_size()
    }

    /// Bytes before the codes: scale and bias (affine) or the scale byte.
    pub fn header_bytes(self) -> usize {
        if self.quant.has_biases() {
            2 * self.float.size()
        } else {
            1
        }
    }

    /// Bytes of one group's codes.
    pub fn code_bytes(self) -> usize {
        self.quant.group_size() * self.quant.bits() as usize / 8
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        self.header_bytes() + self.code_bytes()
    }

    /// A short name for listings and errors: `MLX_Q4_G64_BF16` (affine), `MLX_MXFP4`, `MLX_NVFP4`, `MLX_MXFP8`.
    pub fn name(self) -> &'static str {
        // At most 7 bit widths x 3 group sizes x 3 float types + 3 fp formats exist, so interning each
        // name once (leaked) is bounded and lets `DType::name` stay `&'static str`.
        static NAMES: OnceLock<Mutex<HashMap<MlxBlocks, &'static str>>> = OnceLock::new();
        let mut names = NAMES
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        names.entry(self).or_insert_with(|| {
            let s = match self.quant.mode() {
                MlxMode::Affine => format!(
                    "MLX_Q{}_G{}_{}",
                    self.quant.bits(),
                    self.quant.group_size(),
                    match self.float {
                        MlxFloat::F32 => "F32",
                        MlxFloat::F16 => "F16",
                        MlxFloat::BF16 => "BF16",
                    }
                ),
                m => format!("MLX_{}", m.name().to_ascii_uppercase()),
            };
            Box::leak(s.into_boxed_str())
        })
    }

    /// The affine scale and bias of a block.
    #[inline]
    pub fn scale_bias(self, blk: &[u8]) -> (f32, f32) {
        (self.float.read(blk, 0), self.float.read(blk, 1))
    }

    /// Dequantizes one block (`out.len() == group_size`): the scalar reference the kernels match.
    pub fn dequantize_block(self, blk: &[u8], out: &mut [f32]) {
        let bits = self.quant.bits() as usize;
        let codes = &blk[self.header_bytes()..self.block_bytes()];
        match self.quant.mode() {
            MlxMode::Affine => {
                let (s, b) = self.scale_bias(blk);
                let w = |q: u32| s * q as f32 + b;
                // The common widths unpack whole bytes (loops the compiler vectorises); the rest read the
                // bitstream. The same operations either way.
                match bits {
                    8 => out
                        .iter_mut()
                        .zip(codes)
                        .for_each(|(o, &c)| *o = w(c as u32)),
                    4 => {
                        for (o, &c) in out.chunks_exact_mut(2).zip(codes) {
                            o[0] = w((c & 15) as u32);
                            o[1] = w((c >> 4) as u32);
                        }
                    }
                    2 => {
                        for (o, &c) in out.chunks_exact_mut(4).zip(codes) {
                            for (k, v) in o.iter_mut().enumerate() {
                                *v = w(((c >> (2 * k)) & 3) as u32);
                            }
                        }
                    }
                    _ => {
                        for (i, o) in out.iter_mut().enumerate() {
                            *o = w(read_code(codes, bits, i));
                        }
                    }
                }
            }
            MlxMode::Mxfp4 | MlxMode::Nvfp4 => {
                let s = fp_scale(self.quant.mode(), blk[0]);
                for (i, o) in out.iter_mut().enumerate() {
                    *o = FP4_E2M1_VALUES[read_code(codes, 4, i) as usize] * s;
                }
            }
            MlxMode::Mxfp8 => {
                let s = fp_scale(MlxMode::Mxfp8, blk[0]);
                for (o, &c) in out.iter_mut().zip(codes) {
                    *o = e4m3_to_f32(c) * s;
                }
            }
        }
    }

    /// The unsigned code `i` of a block's group (affine modes; 0..2^bits).
    #[inline]
    pub fn code(self, blk: &[u8], i: usize) -> u32 {
        read_code(&blk[self.header_bytes()..], self.quant.bits() as usize, i)
    }

    /// Builds one row of blocks from a checkpoint row's arrays: `packed` (the row's u32 words as
    /// little-endian bytes), `scales` and, in affine mode, `biases` (each `scale_bytes_per_row` long).
    /// `out` holds `groups * block_bytes` bytes.
    pub fn repack_row(self, packed: &[u8], scales: &[u8], biases: Option<&[u8]>, out: &mut [u8]) {
        let (hb, cb, bb) = (self.header_bytes(), self.code_bytes(), self.block_bytes());
        let sb = if self.quant.has_biases() {
            self.float.size()
        } else {
            1
        };
        for (g, blk) in out.chunks_exact_mut(bb).enumerate() {
            blk[..sb].copy_from_slice(&scales[g * sb..(g + 1) * sb]);
            if let Some(b) = biases {
                blk[sb..2 * sb].copy_from_slice(&b[g * sb..(g + 1) * sb]);
            }
            blk[hb..].copy_from_slice(&packed[g * cb..(g + 1) * cb]);
        }
    }

    /// The inverse of [`MlxBlocks::repack_row`]: a row of blocks back to the checkpoint's three arrays (for
    /// writing MLX files).
    pub fn unpack_row(
        self,
        row: &[u8],
        packed: &mut [u8],
        scales: &mut [u8],
        biases: Option<&mut [u8]>,
    ) {
        let (hb, cb, bb) = (self.header_bytes(), self.code_bytes(), self.block_bytes());
        let sb = if self.quant.has_biases() {
            self.float.size()
        } else {
            1
        };
        let mut biases = biases;
        for (g, blk) in row.chunks_exact(bb).enumerate() {
            scales[g * sb..(g + 1) * sb].copy_from_slice(&blk[..sb]);
            if let Some(b) = biases.as_deref_mut() {
                b[g * sb..(g + 1) * sb].copy_from_slice(&blk[sb..2 * sb]);
            }
            packed[g * cb..(g + 1) * cb].copy_from_slice(&blk[hb..]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::mlx::{dequantize_row, quantize_row};

    /// Repacking then dequantizing a block equals mlx's dequantization of the three arrays, up to mlx's extra
    /// rounding of affine products to the scales' dtype (exact for f32 scales and for the fp modes).
    #[test]
    fn blocks_match_the_three_array_form() {
        let mut seed = 7u64;
        let mut rnd = move || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((seed >> 33) as f32 / (1u64 << 31) as f32) - 0.5
        };
        let cols = 256;
        let x: Vec<f32> = (0..cols).map(|_| rnd()).collect();
        let formats = [
            (MlxMode::Affine, 2, 32),
            (MlxMode::Affine, 3, 64),
            (MlxMode::Affine, 4, 64),
            (MlxMode::Affine, 5, 32),
            (MlxMode::Affine, 6, 128),
            (MlxMode::Affine, 8, 64),
            (MlxMode::Mxfp4, 4, 32),
            (MlxMode::Nvfp4, 4, 16),
            (MlxMode::Mxfp8, 8, 32),
        ];
        for (mode, bits, gs) in formats {
            let q = MlxQuant::new(mode, bits, gs).unwrap();
            let float = MlxFloat::F32;
            let mut packed = vec![0u8; 4 * q.packed_words_per_row(cols).unwrap()];
            let mut scales = vec![0u8; q.scale_bytes_per_row(cols, float).unwrap()];
            let mut biases = vec![0u8; q.bias_bytes_per_row(cols, float).unwrap()];
            let has_b = q.has_biases();
            quantize_row(
                &q,
                float,
                &x,
                &mut packed,
                &mut scales,
                has_b.then_some(&mut biases[..]),
            )
            .unwrap();
            let mut want = vec![0f32; cols];
            dequantize_row(
                &q,
                float,
                &packed,
                &scales,
                has_b.then_some(&biases[..]),
                &mut want,
            )
            .unwrap();
            let blocks = MlxBlocks::new(q, float);
            let mut row = vec![0u8; cols / gs * blocks.block_bytes()];
            blocks.repack_row(&packed, &scales, has_b.then_some(&biases[..]), &mut row);
            let mut got = vec![0f32; cols];
            for (blk, out) in row
                .chunks_exact(blocks.block_bytes())
                .zip(got.chunks_exact_mut(gs))
            {
                blocks.dequantize_block(blk, out);
            }
            assert_eq!(
                got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                want.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                "{}",
                blocks.name()
            );
            let (mut p2, mut s2, mut b2) = (
                vec![0u8; packed.len()],
                vec![0u8; scales.len()],
                vec![0u8; biases.len()],
            );
            blocks.unpack_row(&row, &mut p2, &mut s2, has_b.then_some(&mut b2[..]));
            assert_eq!((p2, s2, b2), (packed, scales, biases), "{}", blocks.name());
        }
    }
}
