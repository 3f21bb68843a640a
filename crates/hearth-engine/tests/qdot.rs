//! Integer dot products against 8-bit activations (`backend::cpu::qdot`): every kernel level this CPU
//! runs (`kernel_sets`: scalar, AVX2, AVX-512 with and without VNNI) is bit-identical to the scalar
//! reference, single-token and multi-token alike, and the result is close to the exact f32 dot product.

use half::f16;
use hearth_engine::backend::cpu::qdot::{
    kernel_sets, qdot, qdot_k, qdot_k_multi, qdot_k_multi_scalar, qdot_k_scalar, qdot_multi,
    qdot_multi_scalar, qdot_scalar, quantize_q8, quantize_q8_scalar, quantize_q8k,
    quantize_q8k_scalar, supports, supports_k, Q8KRow, Q8Row, QdotKernels,
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
/// Row lengths: 1, 2, 3, 7, 8, 9, 16, 17, 18, 33 and 48 blocks (partial and whole groups of 8 and 16).
const COLS: [usize; 11] = [32, 64, 96, 224, 256, 288, 512, 32 * 17, 576, 32 * 33, 1536];
/// Token counts for the multi-token API (groups of 8, 4, 2 and 1 and their mixtures).
const TOKENS: [usize; 9] = [1, 2, 3, 4, 5, 7, 8, 9, 13];

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

/// Quantizes `x` at every level, asserts all equal the scalar reference bit for bit, and returns it.
fn quantize_both(x: &[f32]) -> Q8Row {
    let mut slow = Q8Row::new();
    quantize_q8_scalar(x, &mut slow);
    for k in kernel_sets() {
        let mut fast = Q8Row::new();
        k.quantize_q8(x, &mut fast);
        let name = k.name();
        assert_eq!(fast.qs, slow.qs, "{name}: quantized values");
        assert_eq!(fast.sums, slow.sums, "{name}: block sums");
        assert_eq!(bits(&fast.d), bits(&slow.d), "{name}: block scales");
    }
    slow
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|v| v.to_bits()).collect()
}

/// Every level's single-token result for `row` against `xq` (scalar first).
fn at_every_level(dtype: DType, row: &[u8], xq: &Q8Row) -> Vec<(QdotKernels, f32)> {
    kernel_sets()
        .into_iter()
        .map(|k| (k, k.qdot(dtype, row, xq)))
        .collect()
}

#[test]
fn fast_kernels_are_bit_identical_to_the_reference() {
    let levels: Vec<&str> = kernel_sets().iter().map(|k| k.name()).collect();
    eprintln!("levels compared: {levels:?}");
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut xq = Q8Row::new();
    for dtype in TYPES {
        assert!(supports(dtype));
        for n in COLS {
            let x = random_x(&mut rng, n);
            let q = quantize_both(&x);
            quantize_q8(&x, &mut xq); // reuse of a buffer sized for another length
            assert_eq!(xq.qs, q.qs);
            for r in 0..5 {
                let row = random_row(&mut rng, dtype, n);
                let want = qdot_scalar(dtype, &row, &xq);
                assert_eq!(qdot(dtype, &row, &xq).to_bits(), want.to_bits());
                for (k, got) in at_every_level(dtype, &row, &xq) {
                    assert_eq!(
                        got.to_bits(),
                        want.to_bits(),
                        "{} {dtype} n={n} row {r}: {got} vs {want}",
                        k.name()
                    );
                }
            }
        }
    }
}

/// `qdot_multi` at every level gives, for each token, exactly the single-token reference, for token counts
/// that fill and split the kernels' token groups.
#[test]
fn multi_token_is_bit_identical_to_single_token() {
    let mut rng = Rng(0x51_7cc1_b727_220a);
    for dtype in TYPES {
        for n in [32, 96, 288, 544, 1056] {
            let row = random_row(&mut rng, dtype, n);
            for nt in TOKENS {
                let xq: Vec<Q8Row> = (0..nt)
                    .map(|_| {
                        let mut q = Q8Row::new();
                        quantize_q8(&random_x(&mut rng, n), &mut q);
                        q
                    })
                    .collect();
                let want: Vec<f32> = xq.iter().map(|q| qdot_scalar(dtype, &row, q)).collect();
                let mut out = vec![f32::NAN; nt];
                qdot_multi_scalar(dtype, &row, &xq, &mut out);
                assert_eq!(bits(&out), bits(&want), "scalar {dtype} n={n} tokens={nt}");
                qdot_multi(dtype, &row, &xq, &mut out);
                assert_eq!(bits(&out), bits(&want), "best {dtype} n={n} tokens={nt}");
                for k in kernel_sets() {
                    out.fill(f32::NAN);
                    k.qdot_multi(dtype, &row, &xq, &mut out);
                    assert_eq!(
                        bits(&out),
                        bits(&want),
                        "{} {dtype} n={n} tokens={nt}",
                        k.name()
                    );
                }
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
        for (k, v) in at_every_level(dtype, &row, &xq) {
            assert_eq!(v.to_bits(), 0, "{} {dtype}", k.name());
        }
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
    let a = qdot_scalar(DType::Q8_0, &row, &xq);
    for (k, v) in at_every_level(DType::Q8_0, &row, &xq) {
        assert_eq!(v.to_bits(), a.to_bits(), "{}", k.name());
    }
    assert_eq!(a, 0.0);
    let x = vec![-2.0f32; 64];
    let xq = quantize_both(&x);
    let a = qdot_scalar(DType::Q8_0, &row, &xq);
    for (k, v) in at_every_level(DType::Q8_0, &row, &xq) {
        assert_eq!(v.to_bits(), a.to_bits(), "{}", k.name());
    }
    assert!((a - 64.0 * 256.0).abs() < 1e-2, "{a}");
}

const K_TYPES: [DType; 5] = [
    DType::Q2_K,
    DType::Q3_K,
    DType::Q4_K,
    DType::Q5_K,
    DType::Q6_K,
];
/// Rows of 1, 2, 3, 5, 9, 10 and 18 super-blocks.
const K_COLS: [usize; 7] = [256, 512, 768, 1280, 2304, 640 * 4, 4608];

/// A random K-quant row: random bytes with finite f16 super-block scales.
fn random_k_row(rng: &mut Rng, dtype: DType, n: usize) -> Vec<u8> {
    let bb = dtype.bytes_for(256).unwrap();
    let mut row: Vec<u8> = (0..n / 256 * bb).map(|_| rng.byte()).collect();
    for blk in row.chunks_exact_mut(bb) {
        let d = f16::from_f32(1e-3 * (1.0 + rng.unit().abs())).to_le_bytes();
        match dtype {
            DType::Q4_K | DType::Q5_K | DType::Q2_K => {
                let at = if dtype == DType::Q2_K { 80 } else { 0 };
                blk[at..at + 2].copy_from_slice(&d);
                let dmin = f16::from_f32(1e-3 * (1.0 + rng.unit().abs())).to_le_bytes();
                blk[at + 2..at + 4].copy_from_slice(&dmin);
            }
            DType::Q3_K => blk[108..110].copy_from_slice(&d),
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
                quantize_q8k_scalar(&x, &mut xq);
                for (s, run) in xq.qs.chunks(16).enumerate() {
                    assert_eq!(xq.bsums[s], run.iter().map(|&q| q as i32).sum::<i32>());
                }
                for k in kernel_sets() {
                    let mut q = Q8KRow::new();
                    k.quantize_q8k(&x, &mut q);
                    assert_eq!(q.qs, xq.qs, "{}", k.name());
                    assert_eq!(q.bsums, xq.bsums, "{}", k.name());
                    assert_eq!(bits(&q.d), bits(&xq.d), "{}", k.name());
                }
                let row = random_k_row(&mut rng, dtype, n);
                let a = qdot_k_scalar(dtype, &row, &xq);
                assert_eq!(qdot_k(dtype, &row, &xq).to_bits(), a.to_bits());
                for k in kernel_sets() {
                    let b = k.qdot_k(dtype, &row, &xq);
                    assert_eq!(
                        a.to_bits(),
                        b.to_bits(),
                        "{} {dtype} n={n}: {a} vs {b}",
                        k.name()
                    );
                }
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
        for k in kernel_sets() {
            assert_eq!(
                k.qdot_k(dtype, &row, &xq).to_bits(),
                0,
                "{} {dtype}",
                k.name()
            );
        }
    }
    eprintln!(
        "K-quants: worst error / half-step bound = {worst_step:.3}; uniform x: worst error / sum|w x| = {worst_rel:.3e}"
    );
}

/// `qdot_k_multi` at every level gives, for each token, exactly the single-token reference.
#[test]
fn k_quant_multi_token_is_bit_identical_to_single_token() {
    let mut rng = Rng(0x2f1e_0d9c_8b7a_6958);
    for dtype in K_TYPES {
        for n in [256, 768, 2304] {
            let row = random_k_row(&mut rng, dtype, n);
            for nt in TOKENS {
                let xq: Vec<Q8KRow> = (0..nt)
                    .map(|_| {
                        let mut q = Q8KRow::new();
                        quantize_q8k(&random_x(&mut rng, n), &mut q);
                        q
                    })
                    .collect();
                let want: Vec<f32> = xq.iter().map(|q| qdot_k_scalar(dtype, &row, q)).collect();
                let mut out = vec![f32::NAN; nt];
                qdot_k_multi_scalar(dtype, &row, &xq, &mut out);
                assert_eq!(bits(&out), bits(&want), "scalar {dtype} n={n} tokens={nt}");
                qdot_k_multi(dtype, &row, &xq, &mut out);
                assert_eq!(bits(&out), bits(&want), "best {dtype} n={n} tokens={nt}");
                for k in kernel_sets() {
                    out.fill(f32::NAN);
                    k.qdot_k_multi(dtype, &row, &xq, &mut out);
                    assert_eq!(
                        bits(&out),
                        bits(&want),
                        "{} {dtype} n={n} tokens={nt}",
                        k.name()
                    );
                }
            }
        }
    }
}

/// Real weights: every quantized tensor of the models named by `HEARTH_SMOLLM2_GGUF` / `HEARTH_GEMMA3_GGUF`
/// (see tests/real_model_quants.rs; skipped with a note when unset), 16 rows each, against three tokens of
/// activations with a few outlier channels as real hidden states have: every level, single- and
/// multi-token, equals the reference bit for bit, and the first token meets the half-step bound.
#[test]
fn real_model_weights() {
    use hearth_engine::loader::gguf::GgufFile;
    const NT: usize = 3;
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
            let xs: Vec<Vec<f32>> = (0..NT)
                .map(|_| {
                    let mut x: Vec<f32> = (0..cols).map(|_| rng.unit() + rng.unit()).collect();
                    for _ in 0..3 {
                        let i = (rng.next() as usize) % cols;
                        x[i] *= 40.0;
                    }
                    x
                })
                .collect();
            let mut w = vec![0f32; cols];
            let k = supports_k(dtype);
            let (mut q8, mut q8k) = (vec![Q8Row::new(); NT], vec![Q8KRow::new(); NT]);
            for (i, x) in xs.iter().enumerate() {
                if k {
                    quantize_q8k(x, &mut q8k[i]);
                } else {
                    quantize_q8(x, &mut q8[i]);
                }
            }
            let d = if k { q8k[0].d.clone() } else { q8[0].d.clone() };
            let bs = cols / d.len();
            for s in 0..16 {
                let r = s * t.rows() / 16;
                let row = t.row(r);
                let mut want = [0f32; NT];
                if k {
                    qdot_k_multi_scalar(dtype, row, &q8k, &mut want);
                } else {
                    qdot_multi_scalar(dtype, row, &q8, &mut want);
                }
                for level in kernel_sets() {
                    let mut got = [0f32; NT];
                    let one = if k {
                        level.qdot_k_multi(dtype, row, &q8k, &mut got);
                        level.qdot_k(dtype, row, &q8k[0])
                    } else {
                        level.qdot_multi(dtype, row, &q8, &mut got);
                        level.qdot(dtype, row, &q8[0])
                    };
                    let name = level.name();
                    assert_eq!(bits(&got), bits(&want), "{name} {} row {r}", t.name);
                    assert_eq!(
                        one.to_bits(),
                        want[0].to_bits(),
                        "{name} {} row {r}",
                        t.name
                    );
                }
                let a = want[0];
                dequantize_row(dtype, row, &mut w);
                let x = &xs[0];
                let exact: f64 = w.iter().zip(x).map(|(&a, &b)| a as f64 * b as f64).sum();
                let mag: f64 = w
                    .iter()
                    .zip(x)
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
        eprintln!(
            "{var}: {checked} rows match at every level; worst error / sum|w x| = {worst:.3e}"
        );
    }
}

/// Decode's run of rows against one token (`qdot_multi_rows` / `qdot_k_multi_rows` with a one-token tile,
/// checked once) gives each row exactly what the single-row kernel gives, at every level, for runs of 1, 3
/// and 7 rows.
#[test]
fn row_runs_are_bit_identical_to_single_rows() {
    let mut rng = Rng(0x0dd5_eed5_1234_5678);
    for (dtype, n) in TYPES
        .iter()
        .map(|&t| (t, 288))
        .chain(K_TYPES.iter().map(|&t| (t, 768)))
    {
        for nr in [1usize, 3, 7] {
            let k_type = K_TYPES.contains(&dtype);
            let rows: Vec<Vec<u8>> = (0..nr)
                .map(|_| {
                    if k_type {
                        random_k_row(&mut rng, dtype, n)
                    } else {
                        random_row(&mut rng, dtype, n)
                    }
                })
                .collect();
            let rb = rows[0].len();
            let bytes: Vec<u8> = rows.concat();
            let x = random_x(&mut rng, n);
            let mut out = vec![f32::NAN; nr];
            for k in kernel_sets() {
                out.fill(f32::NAN);
                let want: Vec<f32> = if k_type {
                    let mut q = Q8KRow::new();
                    quantize_q8k(&x, &mut q);
                    k.qdot_k_multi_rows(dtype, &bytes, rb, std::slice::from_ref(&q), &mut out);
                    rows.iter().map(|r| qdot_k_scalar(dtype, r, &q)).collect()
                } else {
                    let mut q = Q8Row::new();
                    quantize_q8(&x, &mut q);
                    k.qdot_multi_rows(dtype, &bytes, rb, std::slice::from_ref(&q), &mut out);
                    rows.iter().map(|r| qdot_scalar(dtype, r, &q)).collect()
                };
                assert_eq!(bits(&out), bits(&want), "{} {dtype} rows={nr}", k.name());
            }
        }
    }
}

/// `qdot_multi_rows` / `qdot_k_multi_rows` (prefill's tile of rows x tokens, checked once) give each
/// (row, token) exactly the single-row, single-token kernel's value, at every level.
#[test]
fn row_token_tiles_are_bit_identical_to_single_pairs() {
    let mut rng = Rng(0x7111_e5ee_d000_0001);
    for (dtype, n) in TYPES
        .iter()
        .map(|&t| (t, 288))
        .chain(K_TYPES.iter().map(|&t| (t, 768)))
    {
        let k_type = K_TYPES.contains(&dtype);
        for (nr, nt) in [(1usize, 2usize), (3, 5), (7, 9)] {
            let rows: Vec<Vec<u8>> = (0..nr)
                .map(|_| {
                    if k_type {
                        random_k_row(&mut rng, dtype, n)
                    } else {
                        random_row(&mut rng, dtype, n)
                    }
                })
                .collect();
            let rb = rows[0].len();
            let bytes: Vec<u8> = rows.concat();
            let xs: Vec<Vec<f32>> = (0..nt).map(|_| random_x(&mut rng, n)).collect();
            for k in kernel_sets() {
                let mut out = vec![f32::NAN; nr * nt];
                let want: Vec<f32> = if k_type {
                    let qs: Vec<Q8KRow> = xs
                        .iter()
                        .map(|x| {
                            let mut q = Q8KRow::new();
                            quantize_q8k(x, &mut q);
                            q
                        })
                        .collect();
                    k.qdot_k_multi_rows(dtype, &bytes, rb, &qs, &mut out);
                    rows.iter()
                        .flat_map(|r| {
                            qs.iter()
                                .map(|q| qdot_k_scalar(dtype, r, q))
                                .collect::<Vec<_>>()
                        })
                        .collect()
                } else {
                    let qs: Vec<Q8Row> = xs
                        .iter()
                        .map(|x| {
                            let mut q = Q8Row::new();
                            quantize_q8(x, &mut q);
                            q
                        })
                        .collect();
                    k.qdot_multi_rows(dtype, &bytes, rb, &qs, &mut out);
                    rows.iter()
                        .flat_map(|r| {
                            qs.iter()
                                .map(|q| qdot_scalar(dtype, r, q))
                                .collect::<Vec<_>>()
                        })
                        .collect()
                };
                assert_eq!(bits(&out), bits(&want), "{} {dtype} {nr}x{nt}", k.name());
            }
        }
    }
}
