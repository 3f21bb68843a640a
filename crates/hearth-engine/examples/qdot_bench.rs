//! Times, on one thread, the integer kernels of every level this CPU runs (`qdot::kernel_sets`: scalar,
//! AVX2, AVX-512 without and with VNNI) on a random quantized matrix: one token per row (`qdot`, decode)
//! and 2, 4 and 8 tokens per row (`qdot_multi`, prefill: weights decoded once per token group), hot (one
//! matrix, cache-resident) and cold (cycling through copies larger than L3, as a real decode step reads).
//! The float kernel (`backend::cpu::dot`, f32 activations) runs once per type for reference, and the
//! activation quantizers are timed per level at the end.
//!
//! Columns: ns per row and GB/s of weights for one token; for T tokens, ns per row and token and the speedup
//! per token over the single-token kernel of the same level.
//!
//! `cargo run --release -p hearth-engine --example qdot_bench [seconds per case] [type filter, e.g. Q4_K]`

use std::hint::black_box;
use std::time::Instant;

use hearth_engine::backend::cpu::dot;
use hearth_engine::backend::cpu::qdot::{
    kernel_sets, quantize_q8_scalar, quantize_q8k_scalar, supports_k, Q8KRow, Q8Row, QdotKernels,
};
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

/// Random blocks with finite f16 scales (|d| in [2^-7, 2^-6)) and a negative min where the type has one.
fn random_matrix(rng: &mut Rng, dtype: DType, rows: usize, cols: usize) -> Vec<u8> {
    let be = dtype.block_elems();
    let bb = dtype.bytes_for(be).unwrap();
    let mut m = Vec::with_capacity(rows * dtype.bytes_for(cols).unwrap());
    let f = |r: u64, sign: u16| (sign | 0x2000 | (r as u16 & 0x3ff)).to_le_bytes();
    for _ in 0..rows * cols / be {
        let start = m.len();
        for _ in 0..bb / 8 {
            m.extend_from_slice(&rng.next().to_le_bytes());
        }
        for _ in 0..bb % 8 {
            m.push(rng.next() as u8);
        }
        let blk = &mut m[start..];
        let mut put = |at: usize, sign: u16| blk[at..at + 2].copy_from_slice(&f(rng.next(), sign));
        match dtype {
            DType::Q6_K => put(208, 0),
            DType::Q3_K => put(108, 0),
            DType::Q2_K => {
                put(80, 0);
                put(82, 0);
            }
            DType::Q4_K | DType::Q5_K => {
                put(0, 0);
                put(2, 0);
            }
            DType::Q4_1 | DType::Q5_1 | DType::Mlx(_) => {
                put(0, 0);
                put(2, 0x8000);
            }
            _ => put(0, 0),
        }
    }
    m
}

/// Best time in seconds of `f` over repetitions filling about `budget` seconds.
fn time(budget: f64, mut f: impl FnMut()) -> f64 {
    f();
    let start = Instant::now();
    let mut best = f64::INFINITY;
    while start.elapsed().as_secs_f64() < budget {
        let t = Instant::now();
        f();
        best = best.min(t.elapsed().as_secs_f64());
    }
    best
}

/// Bytes of weights each "cold" measurement cycles through (several copies of the matrix), so that they
/// come from memory rather than the L3 cache.
const COLD_BYTES: usize = 96 << 20;
/// Token counts of the multi-token columns.
const MULTI: [usize; 3] = [2, 4, 8];

/// The tokens' activations, quantized for `dtype`'s kernel.
enum Tokens {
    Q8(Vec<Q8Row>),
    Q8K(Vec<Q8KRow>),
}

impl Tokens {
    fn new(dtype: DType, xs: &[Vec<f32>]) -> Tokens {
        if supports_k(dtype) {
            Tokens::Q8K(
                xs.iter()
                    .map(|x| {
                        let mut q = Q8KRow::new();
                        quantize_q8k_scalar(x, &mut q);
                        q
                    })
                    .collect(),
            )
        } else {
            Tokens::Q8(
                xs.iter()
                    .map(|x| {
                        let mut q = Q8Row::new();
                        quantize_q8_scalar(x, &mut q);
                        q
                    })
                    .collect(),
            )
        }
    }

    /// `out[t]` for the first `out.len()` tokens against `row`.
    fn run(&self, k: QdotKernels, dtype: DType, row: &[u8], out: &mut [f32]) {
        let n = out.len();
        match self {
            Tokens::Q8(q) if n == 1 => out[0] = k.qdot(dtype, row, &q[0]),
            Tokens::Q8K(q) if n == 1 => out[0] = k.qdot_k(dtype, row, &q[0]),
            Tokens::Q8(q) => k.qdot_multi(dtype, row, &q[..n], out),
            Tokens::Q8K(q) => k.qdot_k_multi(dtype, row, &q[..n], out),
        }
    }
}

/// MLX affine, groups of 64, bf16 scales: the mlx-community's usual form.
fn mlx(bits: u8) -> DType {
    use hearth_engine::tensor::mlx::{MlxFloat, MlxQuant};
    DType::Mlx(hearth_engine::tensor::mlx_blocks::MlxBlocks::new(
        MlxQuant::affine(bits, 64).unwrap(),
        MlxFloat::BF16,
    ))
}

fn main() {
    let mut args = std::env::args().skip(1);
    let budget: f64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(0.3);
    let filter = args.next();
    let levels = kernel_sets();
    println!(
        "levels: {:?}; one thread, best of ~{budget} s per case; hot = one matrix repeated, cold = cycling \
         through {} MiB of copies",
        levels.iter().map(|k| k.name()).collect::<Vec<_>>(),
        COLD_BYTES >> 20
    );
    println!(
        "{:<5} {:>10} {:<11} {:>5} {:>9} {:>7} | {}",
        "type",
        "rows x cols",
        "level",
        "cache",
        "1 tok ns",
        "GB/s",
        MULTI.map(|t| format!("{t} tok ns/tok (x)")).join(" | ")
    );
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let cols: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(2048);
    let rows = 512;
    let types = [
        DType::Q8_0,
        DType::Q4_0,
        DType::Q4_1,
        DType::Q5_0,
        DType::Q5_1,
        DType::Q2_K,
        DType::Q3_K,
        DType::Q4_K,
        DType::Q5_K,
        DType::Q6_K,
        mlx(4),
        mlx(8),
    ];
    let n_max = *MULTI.iter().max().unwrap();
    for dtype in types {
        if filter
            .as_ref()
            .is_some_and(|f| !dtype.to_string().eq_ignore_ascii_case(f))
        {
            continue;
        }
        let xs: Vec<Vec<f32>> = (0..n_max)
            .map(|_| (0..cols).map(|_| rng.unit()).collect())
            .collect();
        let tokens = Tokens::new(dtype, &xs);
        let rb = dtype.bytes_for(cols).unwrap();
        let size = rows * rb;
        let copies = COLD_BYTES.div_ceil(size).max(2);
        let mats: Vec<Vec<u8>> = (0..copies)
            .map(|_| random_matrix(&mut rng, dtype, rows, cols))
            .collect();
        let mut out = vec![0.0f32; n_max];
        let tf = time(budget, || {
            for row in mats[0].chunks_exact(rb) {
                out[0] = dot(dtype, row, black_box(&xs[0]));
            }
            black_box(&out);
        });
        println!(
            "{:<5} {:>10} {:<11} {:>5} {:>9.1} {:>7.2} |",
            dtype.to_string(),
            format!("{rows}x{cols}"),
            "float dot",
            "hot",
            tf * 1e9 / rows as f64,
            size as f64 / tf / 1e9
        );
        for cold in [false, true] {
            for &k in &levels {
                if cold && k.name() == "scalar" {
                    continue;
                }
                let mut next = 0;
                let mut per_token = |n: usize| {
                    time(budget, || {
                        if cold {
                            next = (next + 1) % copies;
                        }
                        for row in mats[next].chunks_exact(rb) {
                            tokens.run(k, dtype, row, &mut out[..n]);
                        }
                        black_box(&out);
                    }) / n as f64
                };
                let t1 = per_token(1);
                let multi = MULTI.map(|n| {
                    let t = per_token(n);
                    format!("{:>8.1} ({:>4.2}x)", t * 1e9 / rows as f64, t1 / t)
                });
                println!(
                    "{:<5} {:>10} {:<11} {:>5} {:>9.1} {:>7.2} | {}",
                    dtype.to_string(),
                    format!("{rows}x{cols}"),
                    k.name(),
                    if cold { "cold" } else { "hot" },
                    t1 * 1e9 / rows as f64,
                    size as f64 / t1 / 1e9,
                    multi.join(" | ")
                );
            }
        }
    }
    let x: Vec<f32> = (0..4096).map(|_| rng.unit()).collect();
    for k in &levels {
        let (mut q, mut qk) = (Q8Row::new(), Q8KRow::new());
        let t8 = time(budget, || k.quantize_q8(black_box(&x), &mut q));
        let tk = time(budget, || k.quantize_q8k(black_box(&x), &mut qk));
        println!(
            "quantize 4096 values, {:<11}: q8 {:>7.0} ns, q8k {:>7.0} ns",
            k.name(),
            t8 * 1e9,
            tk * 1e9
        );
    }
}
