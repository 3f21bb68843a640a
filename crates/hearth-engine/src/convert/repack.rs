//! GGUF blocks carried over to MLX without requantizing: every GGML type whose 32-weight groups are
//! `scale * code + bias` with one scale and one bias per group is an MLX affine format with groups of 32.
//!
//! | GGUF | weight | MLX form (groups of 32) |
//! | --- | --- | --- |
//! | Q4_0 | `d * (q - 8)` | 4-bit, scale `d`, bias `-8d` (f16) |
//! | Q4_1 | `d * q + m` | 4-bit, scale `d`, bias `m` (f16) |
//! | Q5_0 | `d * (q - 16)` | 5-bit, scale `d`, bias `-16d` (f16) |
//! | Q5_1 | `d * q + m` | 5-bit, scale `d`, bias `m` (f16) |
//! | Q8_0 | `d * q`, q signed | 8-bit, code `q + 128`, scale `d`, bias `-128d` (f16) |
//! | Q4_K | `(d * sc) * q - dmin * m` per 32 | 4-bit, scale `d * sc`, bias `-(dmin * m)` (f32) |
//! | Q5_K | as Q4_K with a fifth bit | 5-bit, as Q4_K (f32) |
//!
//! The scales and biases are exact in the dtype named (a K-quant's `d * sc` needs up to 17 bits of mantissa,
//! so f32), and hearth's dequantization of the MLX form (`scale * q + bias` in f32) then equals the GGUF
//! reference's exactly: for the legacy types both sides compute the exact value `d * (q - k)` (a zero may
//! come out +0 where GGUF gives -0); for the K-quants both round `(d * sc) * q - dmin * m` once, the same way. Q2_K, Q3_K and Q6_K scale 16-weight sub-blocks, which
//! MLX's group sizes (32, 64, 128) cannot hold; they are dequantized (or requantized with `-q`).

use crate::tensor::mlx::{write_code, MlxFloat, MlxQuant};
use crate::tensor::quants::{f16_to_f32, k4_scale_min};
use crate::tensor::DType;

/// The MLX format and scale dtype that hold `dtype` exactly, if any.
pub fn mlx_form(dtype: DType) -> Option<(MlxQuant, MlxFloat)> {
    let (bits, float) = match dtype {
        DType::Q4_0 | DType::Q4_1 => (4, MlxFloat::F16),
        DType::Q5_0 | DType::Q5_1 => (5, MlxFloat::F16),
        DType::Q8_0 => (8, MlxFloat::F16),
        DType::Q4_K => (4, MlxFloat::F32),
        DType::Q5_K => (5, MlxFloat::F32),
        _ => return None,
    };
    Some((MlxQuant::affine(bits, 32).expect("valid"), float))
}

/// Whether every scale and bias of `row`'s MLX form is exact in `float`, from the block headers alone. Every
/// value is an f16, a power-of-two multiple of one, or (K-quants) an f32 product, so only the legacy types'
/// biases `-8d`, `-16d` and `-128d` can fail, by overflowing f16.
pub fn exact_in(dtype: DType, row: &[u8], float: MlxFloat) -> bool {
    let k = match dtype {
        DType::Q4_0 => 8.0,
        DType::Q5_0 => 16.0,
        DType::Q8_0 => 128.0,
        _ => return true,
    };
    float == MlxFloat::F32
        || row.chunks_exact(dtype.block_bytes()).all(|blk| {
            let bias = -k * h(blk, 0);
            float.round(bias) == bias
        })
}

/// One group of 32: its codes (0..2^bits), scale and bias.
struct Group {
    codes: [u32; 32],
    scale: f32,
    bias: f32,
}

fn h(b: &[u8], off: usize) -> f32 {
    f16_to_f32(u16::from_le_bytes([b[off], b[off + 1]]))
}

/// The groups of one GGUF block of `dtype`.
fn groups(dtype: DType, blk: &[u8], out: &mut Vec<Group>) {
    let nib = |qs: &[u8], i: usize| -> u32 {
        if i < 16 {
            (qs[i] & 15) as u32
        } else {
            (qs[i - 16] >> 4) as u32
        }
    };
    let qh = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    match dtype {
        DType::Q4_0 => {
            let d = h(blk, 0);
            out.push(Group {
                codes: std::array::from_fn(|i| nib(&blk[2..18], i)),
                scale: d,
                bias: -8.0 * d,
            });
        }
        DType::Q4_1 => out.push(Group {
            codes: std::array::from_fn(|i| nib(&blk[4..20], i)),
            scale: h(blk, 0),
            bias: h(blk, 2),
        }),
        DType::Q5_0 => {
            let (d, hb) = (h(blk, 0), qh(&blk[2..6]));
            out.push(Group {
                codes: std::array::from_fn(|i| nib(&blk[6..22], i) | ((hb >> i) & 1) << 4),
                scale: d,
                bias: -16.0 * d,
            });
        }
        DType::Q5_1 => {
            let hb = qh(&blk[4..8]);
            out.push(Group {
                codes: std::array::from_fn(|i| nib(&blk[8..24], i) | ((hb >> i) & 1) << 4),
                scale: h(blk, 0),
                bias: h(blk, 2),
            });
        }
        DType::Q8_0 => {
            let d = h(blk, 0);
            out.push(Group {
                codes: std::array::from_fn(|i| (blk[2 + i] as i8 as i32 + 128) as u32),
                scale: d,
                bias: -128.0 * d,
            });
        }
        DType::Q4_K | DType::Q5_K => {
            let (d, dmin) = (h(blk, 0), h(blk, 2));
            let scales = &blk[4..16];
            let five = dtype == DType::Q5_K;
            let (qh5, qs) = if five {
                (&blk[16..48], &blk[48..176])
            } else {
                (&blk[0..0], &blk[16..144])
            };
            for g in 0..8 {
                let (sc, m) = k4_scale_min(scales, g);
                let q32 = &qs[(g / 2) * 32..(g / 2) * 32 + 32];
                let shift = 4 * (g % 2);
                out.push(Group {
                    codes: std::array::from_fn(|i| {
                        let lo = ((q32[i] >> shift) & 15) as u32;
                        if five {
                            lo | (((qh5[i] >> g) & 1) as u32) << 4
                        } else {
                            lo
                        }
                    }),
                    scale: d * sc as f32,
                    bias: -(dmin * m as f32),
                });
            }
        }
        _ => unreachable!("mlx_form checked the type"),
    }
}

/// Rewrites one GGUF row of `dtype` (`cols` weights) as its MLX form's packed codes, scales and biases in
/// `float` (the form's dtype, or f32). Returns whether every scale and bias was exact in `float` (checked
/// beforehand, cheaply, by [`exact_in`]).
pub fn repack_row(
    dtype: DType,
    row: &[u8],
    float: MlxFloat,
    packed: &mut [u8],
    scales: &mut [u8],
    biases: &mut [u8],
) -> bool {
    let (q, _) = mlx_form(dtype).expect("checked by the caller");
    let bits = q.bits() as usize;
    let mut gs = Vec::with_capacity(8);
    packed.fill(0);
    let mut exact = true;
    let mut g = 0;
    for blk in row.chunks_exact(dtype.block_bytes()) {
        gs.clear();
        groups(dtype, blk, &mut gs);
        for grp in &gs {
            for (i, &c) in grp.codes.iter().enumerate() {
                write_code(packed, bits, g * 32 + i, c);
            }
            float.write(scales, g, grp.scale);
            float.write(biases, g, grp.bias);
            exact &= float.read(scales, g) == grp.scale && float.read(biases, g) == grp.bias;
            g += 1;
        }
    }
    exact
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::mlx_blocks::MlxBlocks;
    use crate::tensor::quants::dequantize_row;

    /// Random blocks of every carried type: the MLX form dequantizes to exactly the GGUF reference's values.
    #[test]
    fn repacked_rows_dequantize_exactly() {
        let mut seed = 0x1234_5678_9abc_def0u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for dtype in [
            DType::Q4_0,
            DType::Q4_1,
            DType::Q5_0,
            DType::Q5_1,
            DType::Q8_0,
            DType::Q4_K,
            DType::Q5_K,
        ] {
            let cols = 512;
            let mut row: Vec<u8> = (0..dtype.bytes_for(cols).unwrap())
                .map(|_| next() as u8)
                .collect();
            // Finite, moderate f16 scales where the block keeps them.
            let bb = dtype.block_bytes();
            let offs: &[usize] = match dtype {
                DType::Q4_0 | DType::Q5_0 | DType::Q8_0 => &[0],
                _ => &[0, 2],
            };
            for blk in row.chunks_exact_mut(bb) {
                for &o in offs {
                    let v = half::f16::from_f32(((next() % 2000) as f32 - 1000.0) * 1e-5);
                    blk[o..o + 2].copy_from_slice(&v.to_le_bytes());
                }
            }
            let mut want = vec![0f32; cols];
            dequantize_row(dtype, &row, &mut want);
            let (q, float) = mlx_form(dtype).unwrap();
            let mut packed = vec![0u8; 4 * q.packed_words_per_row(cols).unwrap()];
            let mut scales = vec![0u8; q.scale_bytes_per_row(cols, float).unwrap()];
            let mut biases = vec![0u8; scales.len()];
            assert!(repack_row(
                dtype,
                &row,
                float,
                &mut packed,
                &mut scales,
                &mut biases
            ));
            let blocks = MlxBlocks::new(q, float);
            let mut mrow = vec![0u8; cols / 32 * blocks.block_bytes()];
            blocks.repack_row(&packed, &scales, Some(&biases), &mut mrow);
            let mut got = vec![0f32; cols];
            dequantize_row(DType::Mlx(blocks), &mrow, &mut got);
            for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                // Equal values; only a zero's sign may differ (`d * 0` against `d * 8 - 8 * d`).
                assert!(a == b, "{dtype} weight {i}: {a} vs {b}");
            }
        }
    }

    /// The header-only check agrees with writing the scales: a Q8_0 scale of 1000 makes `-128 * d` overflow
    /// f16 (f32 is then used), a scale of 100 does not.
    #[test]
    fn exactness_is_decided_from_the_headers() {
        for (d, want) in [(100.0f32, true), (1000.0, false)] {
            let mut row = vec![0u8; 34];
            row[..2].copy_from_slice(&half::f16::from_f32(d).to_le_bytes());
            assert_eq!(exact_in(DType::Q8_0, &row, MlxFloat::F16), want, "d = {d}");
            assert!(exact_in(DType::Q8_0, &row, MlxFloat::F32));
            let (mut p, mut sc, mut b) = (vec![0u8; 32], vec![0u8; 2], vec![0u8; 2]);
            assert_eq!(
                repack_row(DType::Q8_0, &row, MlxFloat::F16, &mut p, &mut sc, &mut b),
                want
            );
        }
    }
}
