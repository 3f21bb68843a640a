//! Integer dot products against 8-bit activations (`backend::cpu::qdot`): the fast kernels are
//! bit-identical to the scalar reference, and the result is close to the exact f32 dot product.

use half::f16;
use hearth_engine::backend::cpu::qdot::{
    qdot, qdot_k, qdot_k_scalar, qdot_scalar, quantize_q8, quantize_q8_scalar, quantize_q8k,
    supports, supports_k, Q8KRow, Q8Row,
};
use hearth_engine::tensor::quants::dequantize_row;
use hearth_engine::tensor::DType;

const TYPES: [DType; 5] = [
    DType::Q8_0,
    DType::Q4_0,
    DType::Q4_1,
    DType::Q5_0,
    DType::Q5_1,
];
const COLS: [usize; 8] = [32, 64, 224, 256, 288, 576, 1536, 32 * 17];

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Uniform in [-1, 1).
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
    fn byte(&mut self) -> u8 {
        (self.next() >> 32) as u8
    }
}

fn put_f16(out: &mut Vec<u8>, v: f32) {
    out.extend_from_slice(&f16::from_f32(v).to_le_bytes());
}

/// A random row of `n` weights: scales around 1e-2, mins negative, codes uniform.
fn random_row(rng: &mut Rng, dtype: DType, n: usize) -> Vec<u8> {
    let mut row = Vec::with_capacity(dtype.bytes_for(n).unwrap());
    for _ in 0..n / 32 {
        let d = 0.005 + 0.01 * rng.unit().abs();
        put_f16(&mut row, d);
        match dtype {
            DType::Q4_1 | DType::Q5_1 => put_f16(&mut row, -8.0 * d * (1.0 + 0.5 * rng.unit())),
            _ => {}
        }
        let nq = match dtype {
            DType::Q8_0 => 32,
            DType::Q5_0 | DType::Q5_1 => 4 + 16,
            _ => 16,
        };
        for _ in 0..nq {
            row.push(rng.byte());
        }
    }
    assert_eq!(row.len(), dtype.bytes_for(n).unwrap());
    row
}

/// Random activations with per-block magnitudes spanning several decades, some all-zero blocks, some
/// blocks with a single outlier.
fn random_x(rng: &mut Rng, n: usize) -> Vec<f32> {
    let mut x = Vec::with_capacity(n);
    for _ in 0..n / 32 {
        let kind = rng.next() % 8;
        let scale = 10f32.powf(3.0 * rng.unit());
        for i in 0..32 {
            x.push(match kind {
                0 => 0.0,
                1 if i == 7 => 50.0 * scale,
                _ => scale * rng.unit(),
            });
        }
    }
    x
}

fn quantize_both(x: &[f32]) -> Q8Row {
    let mut fast = Q8Row::new();
    let mut slow = Q8Row::new();
    quantize_q8(x, &mut fast);
    quantize_q8_scalar(x, &mut slow);
    assert_eq!(fast.qs, slow.qs, "quantized values");
    assert_eq!(fast.sums, slow.sums, "block sums");
    let (fd, sd): (Vec<u32>, Vec<u32>) = (
        fast.d.iter().map(|v| v.to_bits()).collect(),
        slow.d.iter().map(|v| v.to_bits()).collect(),
    );
    assert_eq!(fd, sd, "block scales");
    fast
}

#[test]
fn fast_kernels_are_bit_identical_to_the_reference() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut xq = Q8Row::new();
    for dtype in TYPES {
        assert!(supports(dtype));
        for n in COLS {
            let x = random_x(&mut rng, n);
            let q = quantize_both(&x);
            quantize_q8(&x, &mut xq); // reuse of a buffer sized for another length
            assert_eq!(xq.qs, q.qs);
            for r in 0..7 {
                let row = random_row(&mut rng, dtype, n);
                let a = qdot(dtype, &row, &xq);
                let b = qdot_scalar(dtype, &row, &xq);
                assert_eq!(
                    a.to_bits(),
                    b.to_bits(),
                    "{dtype} n={n} row {r}: {a} vs {b}"
                );
            }
        }
    }
}

/// The error is that of rounding `x` to 8 bits: at most half a step `d_b / 2` per activation, so
/// `|qdot - exact| <= sum_b (d_b / 2) * sum_{i in b} |w_i|` (asserted, with 1e-5 * sum|w x| + 1e-6 of
/// room for f32 rounding). Without outliers (uniform blocks) the error relative to `sum |w x|` is also
/// checked against 5e-3 (measured worst is printed).
#[test]
fn close_to_the_exact_dot_product() {
    let mut rng = Rng(12345);
    let mut w = Vec::new();
    let (mut worst_step, mut worst_rel) = (0f64, 0f64);
    for dtype in TYPES {
        for n in COLS {
            for trial in 0..12 {
                let mut x = random_x(&mut rng, n);
                if trial % 2 == 0 {
                    // Uniform blocks, no outliers or zeros.
                    let s = 10f32.powf(2.0 * rng.unit());
                    x.iter_mut().for_each(|v| *v = s * rng.unit());
                }
                let row = random_row(&mut rng, dtype, n);
                let mut xq = Q8Row::new();
                quantize_q8(&x, &mut xq);
                w.resize(n, 0.0);
                dequantize_row(dtype, &row, &mut w);
                let exact: f64 = w.iter().zip(&x).map(|(&a, &b)| a as f64 * b as f64).sum();
                let mag: f64 = w
                    .iter()
                    .zip(&x)
                    .map(|(&a, &b)| (a as f64 * b as f64).abs())
                    .sum();
                let step: f64 = w
                    .chunks(32)
                    .zip(&xq.d)
                    .map(|(wb, &d)| 0.5 * d as f64 * wb.iter().map(|v| v.abs() as f64).sum::<f64>())
                    .sum();
                let got = qdot(dtype, &row, &xq) as f64;
                let err = (got - exact).abs();
                assert!(
                    err <= step + 1e-5 * mag + 1e-6,
                    "{dtype} n={n}: got {got}, exact {exact}, half-step bound {step}"
                );
                if step > 0.0 {
                    worst_step = worst_step.max(err / step);
                }
                if trial % 2 == 0 {
                    assert!(
                        err <= 5e-3 * mag + 1e-6,
                        "{dtype} n={n}: got {got}, exact {exact}, sum|wx| {mag}"
                    );
                    worst_rel = worst_rel.max(err / mag);
                }
            }
        }
    }
    eprintln!(
        "worst error / half-step bound = {worst_step:.3}; uniform x: worst error / sum|w x| = {worst_rel:.3e}"
    );
}

#[test]
fn zero_and_extreme_activations() {
    let mut rng = Rng(777);
    // All-zero row: d = 0 must give zeros, never NaN.
    let x = vec![0.0f32; 96];
    let xq = quantize_both(&x);
    assert!(xq.d.iter().all(|&d| d == 0.0));
    assert!(xq.qs.iter().all(|&q| q == 0) && xq.sums.iter().all(|&s| s == 0));
    for dtype in TYPES {
        let row = random_row(&mut rng, dtype, 96);
        assert_eq!(qdot(dtype, &row, &xq), 0.0);
        assert_eq!(qdot_scalar(dtype, &row, &xq), 0.0);
    }
    // Saturating magnitudes: the block max maps to exactly +-127, ties round to even.
    let mut x: Vec<f32> = (0..64).map(|i| i as f32 - 32.0).collect();
    x[5] = 127.0;
    x[40] = -254.0;
    x[41] = 1.0; // 1 / 2 = 0.5 rounds to 0 (ties to even)
    x[42] = 3.0; // 1.5 rounds to 2
    let xq = quantize_both(&x);
    assert_eq!(xq.qs[5], 127);
    assert_eq!(xq.qs[40], -127);
    assert_eq!(xq.qs[41], 0);
    assert_eq!(xq.qs[42], 2);
    assert_eq!(xq.d[0], 1.0);
    // Q8_0 weights of -128 (legal in a file, though quantizers avoid them) against +-127 activations.
    let mut row = Vec::new();
    for _ in 0..2 {
        put_f16(&mut row, 1.0);
        row.extend(std::iter::repeat_n(0x80u8, 32));
    }
    let x: Vec<f32> = (0..64)
        .map(|i| if i % 2 == 0 { 1.0 } else { -1.0 })
        .collect();
    let xq = quantize_both(&x);
    let a = qdot(DType::Q8_0, &row, &xq);
    assert_eq!(a.to_bits(), qdot_scalar(DType::Q8_0, &row, &xq).to_bits());
    assert_eq!(a, 0.0);
    let x = vec![-2.0f32; 64];
    let xq = quantize_both(&x);
    let a = qdot(DType::Q8_0, &row, &xq);
    assert_eq!(a.to_bits(), qdot_scalar(DType::Q8_0, &row, &xq).to_bits());
    assert!((a - 64.0 * 256.0).abs() < 1e-2, "{a}");
}

const K_TYPES: [DType; 3] = [DType::Q4_K, DType::Q5_K, DType::Q6_K];
const K_COLS: [usize; 6] = [256, 512, 1280, 2304, 4608, 640 * 4];

/// A random K-quant row: random bytes with finite f16 super-block scales.
fn random_k_row(rng: &mut Rng, dtype: DType, n: usize) -> Vec<u8> {
    let bb = dtype.bytes_for(256).unwrap();
    let mut row: Vec<u8> = (0..n / 256 * bb).map(|_| rng.byte()).collect();
    for blk in row.chunks_exact_mut(bb) {
        let d = f16::from_f32(1e-3 * (1.0 + rng.unit().abs())).to_le_bytes();
        match dtype {
            DType::Q4_K | DType::Q5_K => {
                blk[0..2].copy_from_slice(&d);
                let dmin = f16::from_f32(1e-3 * (1.0 + rng.unit().abs())).to_le_bytes();
                blk[2..4].copy_from_slice(&dmin);
            }
            _ => blk[208..210].copy_from_slice(&d),
        }
    }
    row
}

#[test]
fn k_quant_kernels_are_bit_identical_and_close() {
    let mut rng = Rng(0xdead_beef_1234_5678);
    let mut w = Vec::new();
    let mut xq = Q8KRow::new();
    let (mut worst_step, mut worst_rel) = (0f64, 0f64);
    for dtype in K_TYPES {
        assert!(supports_k(dtype) && !supports(dtype));
        for n in K_COLS {
            for trial in 0..7 {
                let mut x = random_x(&mut rng, n);
                if trial % 2 == 0 {
                    let s = 10f32.powf(2.0 * rng.unit());
                    x.iter_mut().for_each(|v| *v = s * rng.unit());
                }
                quantize_q8k(&x, &mut xq);
                for (s, run) in xq.qs.chunks(16).enumerate() {
                    assert_eq!(xq.bsums[s], run.iter().map(|&q| q as i32).sum::<i32>());
                }
                let row = random_k_row(&mut rng, dtype, n);
                let a = qdot_k(dtype, &row, &xq);
                let b = qdot_k_scalar(dtype, &row, &xq);
                assert_eq!(a.to_bits(), b.to_bits(), "{dtype} n={n}: {a} vs {b}");
                w.resize(n, 0.0);
                dequantize_row(dtype, &row, &mut w);
                let exact: f64 = w.iter().zip(&x).map(|(&a, &b)| a as f64 * b as f64).sum();
                let mag: f64 = w
                    .iter()
                    .zip(&x)
                    .map(|(&a, &b)| (a as f64 * b as f64).abs())
                    .sum();
                let step: f64 = w
                    .chunks(256)
                    .zip(&xq.d)
                    .map(|(wb, &d)| 0.5 * d as f64 * wb.iter().map(|v| v.abs() as f64).sum::<f64>())
                    .sum();
                let err = (a as f64 - exact).abs();
                assert!(
                    err <= step + 1e-5 * mag + 1e-6,
                    "{dtype} n={n}: got {a}, exact {exact}, half-step bound {step}"
                );
                worst_step = worst_step.max(err / step);
                if trial % 2 == 0 {
                    assert!(
                        err <= 5e-3 * mag + 1e-6,
                        "{dtype} n={n}: got {a}, exact {exact}"
                    );
                    worst_rel = worst_rel.max(err / mag);
                }
            }
        }
    }
    // All-zero activations: no NaN.
    let x = vec![0.0f32; 512];
    quantize_q8k(&x, &mut xq);
    for dtype in K_TYPES {
        let row = random_k_row(&mut rng, dtype, 512);
        assert_eq!(qdot_k(dtype, &row, &xq), 0.0);
        assert_eq!(qdot_k_scalar(dtype, &row, &xq), 0.0);
    }
    eprintln!(
        "K-quants: worst error / half-step bound = {worst_step:.3}; uniform x: worst error / sum|w x| = {worst_rel:.3e}"
    );
}

/// Real weights: every quantized tensor of the models named by `HEARTH_SMOLLM2_GGUF` / `HEARTH_GEMMA3_GGUF`
/// (see tests/real_model_quants.rs; skipped with a note when unset), 16 rows each, against activations with
/// a few outlier channels as real hidden states have: fast == reference bit for bit, and the half-step bound.
#[test]
fn real_model_weights() {
    use hearth_engine::loader::gguf::GgufFile;
    let mut rng = Rng(4242);
    for var in ["HEARTH_SMOLLM2_GGUF", "HEARTH_GEMMA3_GGUF"] {
        let Some(path) = std::env::var_os(var) else {
            eprintln!("{var} not set: real-weight qdot check skipped");
            continue;
        };
        let model = GgufFile::open(std::path::Path::new(&path)).expect("model opens");
        let (mut checked, mut worst) = (0, 0f64);
        for t in &model.tensors {
            let (dtype, cols) = (t.dtype, t.cols());
            if !supports(dtype) && !supports_k(dtype) {
                continue;
            }
            let mut x: Vec<f32> = (0..cols).map(|_| rng.unit() + rng.unit()).collect();
            for _ in 0..3 {
                let i = (rng.next() as usize) % cols;
                x[i] *= 40.0;
            }
            let mut w = vec![0f32; cols];
            let (mut q8, mut q8k) = (Q8Row::new(), Q8KRow::new());
            let k = supports_k(dtype);
            let d: Vec<f32> = if k {
                quantize_q8k(&x, &mut q8k);
                q8k.d.clone()
            } else {
                quantize_q8(&x, &mut q8);
                q8.d.clone()
            };
            let bs = cols / d.len();
            for s in 0..16 {
                let r = s * t.rows() / 16;
                let row = t.row(r);
                let (a, b) = if k {
                    (qdot_k(dtype, row, &q8k), qdot_k_scalar(dtype, row, &q8k))
                } else {
                    (qdot(dtype, row, &q8), qdot_scalar(dtype, row, &q8))
                };
                assert_eq!(a.to_bits(), b.to_bits(), "{} row {r}: {a} vs {b}", t.name);
                dequantize_row(dtype, row, &mut w);
                let exact: f64 = w.iter().zip(&x).map(|(&a, &b)| a as f64 * b as f64).sum();
                let mag: f64 = w
                    .iter()
                    .zip(&x)
                    .map(|(&a, &b)| (a as f64 * b as f64).abs())
                    .sum();
                let step: f64 = w
                    .chunks(bs)
                    .zip(&d)
                    .map(|(wb, &d)| 0.5 * d as f64 * wb.iter().map(|v| v.abs() as f64).sum::<f64>())
                    .sum();
                let err = (a as f64 - exact).abs();
                assert!(
                    err <= step + 1e-5 * mag + 1e-6,
                    "{} row {r}: got {a}, exact {exact}, half-step bound {step}",
                    t.name
                );
                worst = worst.max(err / mag.max(1e-30));
                checked += 1;
            }
        }
        eprintln!("{var}: {checked} rows match; worst error / sum|w x| = {worst:.3e}");
    }
}
