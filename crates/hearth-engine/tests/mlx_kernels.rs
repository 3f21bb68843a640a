//! Kernels for MLX-quantized weights (`DType::Mlx`): the 8-bit-activation integer path (`qdot` with MLX affine
//! blocks) at every level this CPU runs is bit-identical to the scalar reference `qdot_mlx`, one token or
//! many, one row or a tile of rows; it stays within the 8-bit rounding bound of the exact dot product; and the
//! f32 path (`dot`, `dequantize`) at every level equals `f32_dot(dequantize(row), x)` at that level and the
//! scalar reference within float rounding.

use hearth_engine::backend::cpu::dot_scalar;
use hearth_engine::backend::cpu::levels::LevelKernels;
use hearth_engine::backend::cpu::qdot::{kernel_sets, qdot_mlx, quantize_q8_scalar, Q8Row};
use hearth_engine::tensor::mlx::{quantize_row, MlxFloat, MlxMode, MlxQuant};
use hearth_engine::tensor::mlx_blocks::MlxBlocks;
use hearth_engine::tensor::quants::dequantize_row;
use hearth_engine::tensor::DType;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

/// Every MLX format hearth loads, over the three scale dtypes for affine.
fn formats() -> Vec<MlxBlocks> {
    let mut v = Vec::new();
    for bits in [2, 3, 4, 5, 6, 8] {
        for gs in [32, 64, 128] {
            for float in [MlxFloat::F32, MlxFloat::F16, MlxFloat::BF16] {
                v.push(MlxBlocks::new(MlxQuant::affine(bits, gs).unwrap(), float));
            }
        }
    }
    for (mode, bits, gs) in [
        (MlxMode::Mxfp4, 4, 32),
        (MlxMode::Nvfp4, 4, 16),
        (MlxMode::Mxfp8, 8, 32),
    ] {
        v.push(MlxBlocks::new(
            MlxQuant::new(mode, bits, gs).unwrap(),
            MlxFloat::F32,
        ));
    }
    v
}

/// A row of `n` random weights quantized by the bit-exact mlx quantizer and repacked into blocks.
fn random_row(rng: &mut Rng, m: MlxBlocks, n: usize) -> Vec<u8> {
    let q = m.quant;
    let float = m.float;
    // Values exact in the scale dtype, as real checkpoints are.
    let w: Vec<f32> = (0..n).map(|_| float.round(0.05 * rng.unit())).collect();
    let mut packed = vec![0u8; 4 * q.packed_words_per_row(n).unwrap()];
    let mut scales = vec![0u8; q.scale_bytes_per_row(n, float).unwrap()];
    let mut biases = vec![0u8; q.bias_bytes_per_row(n, float).unwrap()];
    let hb = q.has_biases();
    quantize_row(
        &q,
        float,
        &w,
        &mut packed,
        &mut scales,
        hb.then_some(&mut biases[..]),
    )
    .unwrap();
    let mut row = vec![0u8; DType::Mlx(m).bytes_for(n).unwrap()];
    m.repack_row(&packed, &scales, hb.then_some(&biases[..]), &mut row);
    row
}

fn random_x(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let scale = 10f32.powf(2.0 * ((i / 32) as f32 * 0.37).sin());
            scale * rng.unit()
        })
        .collect()
}

fn q8(x: &[f32]) -> Q8Row {
    let mut q = Q8Row::new();
    quantize_q8_scalar(x, &mut q);
    q
}

#[test]
fn integer_path_is_bit_identical_at_every_level() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let levels = kernel_sets();
    let mut checked = 0;
    for m in formats()
        .into_iter()
        .filter(|m| m.quant.mode() == MlxMode::Affine)
    {
        let dtype = DType::Mlx(m);
        for blocks in [1, 3, 8, 9, 17] {
            let n = blocks * m.block_elems();
            let rows: Vec<Vec<u8>> = (0..3).map(|_| random_row(&mut rng, m, n)).collect();
            let xs: Vec<Q8Row> = (0..11).map(|_| q8(&random_x(&mut rng, n))).collect();
            // want[r][t] from the scalar reference
            let want: Vec<Vec<f32>> = rows
                .iter()
                .map(|r| xs.iter().map(|x| qdot_mlx(m, r, x)).collect())
                .collect();
            for k in &levels {
                for (r, row) in rows.iter().enumerate() {
                    for nt in [1, 2, 3, 5, 8, 11] {
                        let mut out = vec![0f32; nt];
                        k.qdot_multi(dtype, row, &xs[..nt], &mut out);
                        for t in 0..nt {
                            assert_eq!(
                                out[t].to_bits(),
                                want[r][t].to_bits(),
                                "{} {} n={n} tokens={nt} t={t}",
                                k.name(),
                                m.name()
                            );
                        }
                    }
                }
                // A tile of three rows against four tokens.
                let flat: Vec<u8> = rows.concat();
                let mut out = vec![0f32; 3 * 4];
                k.qdot_multi_rows(dtype, &flat, rows[0].len(), &xs[..4], &mut out);
                for r in 0..3 {
                    for t in 0..4 {
                        assert_eq!(
                            out[r * 4 + t].to_bits(),
                            want[r][t].to_bits(),
                            "{} tile",
                            k.name()
                        );
                    }
                }
                checked += 1;
            }
        }
    }
    assert!(checked >= 54 * 5, "{checked}");
}

#[test]
fn integer_path_is_within_the_8_bit_rounding_bound() {
    let mut rng = Rng(42);
    let mut worst = 0f64;
    for m in formats()
        .into_iter()
        .filter(|m| m.quant.mode() == MlxMode::Affine)
    {
        let n = 4 * 128;
        let row = random_row(&mut rng, m, n);
        let mut w = vec![0f32; n];
        dequantize_row(DType::Mlx(m), &row, &mut w);
        let x = random_x(&mut rng, n);
        let xq = q8(&x);
        let exact: f64 = w.iter().zip(&x).map(|(a, b)| *a as f64 * *b as f64).sum();
        // Each activation moves by at most half its block's step d/2.
        let bound: f64 = (0..n / 32)
            .map(|b| {
                xq.d[b] as f64 / 2.0
                    * w[b * 32..(b + 1) * 32]
                        .iter()
                        .map(|v| v.abs() as f64)
                        .sum::<f64>()
            })
            .sum::<f64>()
            + 1e-5
                * w.iter()
                    .zip(&x)
                    .map(|(a, b)| (*a as f64 * *b as f64).abs())
                    .sum::<f64>();
        let got = qdot_mlx(m, &row, &xq) as f64;
        assert!(
            (got - exact).abs() <= bound,
            "{}: {got} vs {exact} (bound {bound})",
            m.name()
        );
        worst = worst.max((got - exact).abs() / bound);
    }
    eprintln!("worst error / bound: {worst:.3}");
}

#[test]
fn float_path_matches_at_every_level() {
    let mut rng = Rng(7);
    for m in formats() {
        let dtype = DType::Mlx(m);
        for blocks in [1, 5, 12] {
            let n = blocks * m.block_elems().max(32);
            let row = random_row(&mut rng, m, n);
            let x = random_x(&mut rng, n);
            let mut reference = vec![0f32; n];
            dequantize_row(dtype, &row, &mut reference);
            let slow = dot_scalar(dtype, &row, &x);
            let mag: f32 = reference.iter().zip(&x).map(|(a, b)| (a * b).abs()).sum();
            for k in LevelKernels::available() {
                let mut deq = vec![0f32; n];
                k.dequantize(dtype, &row, &mut deq);
                assert_eq!(
                    deq.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    reference.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    "{} {} dequantize",
                    k.name(),
                    m.name()
                );
                let d = k.dot(dtype, &row, &x);
                assert_eq!(
                    d.to_bits(),
                    k.f32_dot(&deq, &x).to_bits(),
                    "{} {}",
                    k.name(),
                    m.name()
                );
                assert!(
                    (d - slow).abs() <= 1e-5 * mag + 1e-30,
                    "{} {}: {d} vs {slow}",
                    k.name(),
                    m.name()
                );
            }
        }
    }
}
