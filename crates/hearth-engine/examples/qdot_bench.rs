//! Times, single-threaded, one matrix-vector product of a random quantized matrix two ways: the current
//! float kernel (`backend::cpu::dot`, weights decoded to f32 and FMA'd against f32 `x`) per row, and the
//! integer kernel (`backend::cpu::qdot::qdot` per row, after one `quantize_q8` of `x`, which is timed too).
//!
//! Also Q4_K/Q5_K/Q6_K through `qdot_k` and `quantize_q8k`. Each case runs hot (one matrix,
//! cache-resident when it fits) and cold (cycling through copies larger than L3).
//!
//! `cargo run --release -p hearth-engine --example qdot_bench [seconds per case]`

use std::hint::black_box;
use std::time::Instant;

use hearth_engine::backend::cpu::qdot::{
    qdot, qdot_k, quantize_q8, quantize_q8k, supports_k, Q8KRow, Q8Row,
};
use hearth_engine::backend::cpu::{dot, kernel_name};
use hearth_engine::tensor::DType;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
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
        for _ in 0..bb {
            m.push(rng.next() as u8);
        }
        let blk = &mut m[start..];
        match dtype {
            DType::Q6_K => blk[208..210].copy_from_slice(&f(rng.next(), 0)),
            DType::Q4_K | DType::Q5_K => {
                blk[0..2].copy_from_slice(&f(rng.next(), 0));
                blk[2..4].copy_from_slice(&f(rng.next(), 0));
            }
            DType::Q4_1 => {
                blk[0..2].copy_from_slice(&f(rng.next(), 0));
                blk[2..4].copy_from_slice(&f(rng.next(), 0x8000));
            }
            _ => blk[0..2].copy_from_slice(&f(rng.next(), 0)),
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
/// come from memory rather than the 32 MB L3 cache, as in a real decode step.
const COLD_BYTES: usize = 96 << 20;

fn main() {
    let budget: f64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0.5);
    println!(
        "kernels: {} (single thread, best of ~{budget} s per case; hot = one matrix repeated, cold = \
         cycling through {} MiB of copies)",
        kernel_name(),
        COLD_BYTES >> 20
    );
    println!(
        "{:<5} {:>12} {:>7} {:>5} {:>9} {:>7} {:>9} {:>7} {:>8}",
        "type", "rows x cols", "MB", "cache", "float ms", "GB/s", "int ms", "GB/s", "speedup"
    );
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let cases = [
        (DType::Q4_1, 576, 1536),
        (DType::Q8_0, 576, 1536),
        (DType::Q4_1, 49152, 576),
        (DType::Q8_0, 49152, 576),
        (DType::Q4_K, 640, 2048),
        (DType::Q5_K, 640, 2048),
        (DType::Q6_K, 640, 2048),
        (DType::Q5_0, 2048, 640),
        (DType::Q8_0, 65536, 640),
    ];
    for (dtype, rows, cols) in cases {
        let x: Vec<f32> = (0..cols)
            .map(|_| (rng.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0)
            .collect();
        let size = rows * dtype.bytes_for(cols).unwrap();
        let copies = COLD_BYTES.div_ceil(size).max(2);
        let mats: Vec<Vec<u8>> = (0..copies)
            .map(|_| random_matrix(&mut rng, dtype, rows, cols))
            .collect();
        let rb = dtype.bytes_for(cols).unwrap();
        let mut out = vec![0.0f32; rows];
        let mut xq = Q8Row::new();
        let mut xk = Q8KRow::new();
        for cold in [false, true] {
            let mut next = 0;
            let mut pick = || {
                if cold {
                    next = (next + 1) % copies;
                }
                &mats[next]
            };
            let tf = time(budget, || {
                let m = pick();
                for (o, row) in out.iter_mut().zip(m.chunks_exact(rb)) {
                    *o = dot(dtype, row, black_box(&x));
                }
                black_box(&out);
            });
            let mut pick = || {
                if cold {
                    next = (next + 1) % copies;
                }
                &mats[next]
            };
            let ti = time(budget, || {
                let m = pick();
                if supports_k(dtype) {
                    quantize_q8k(black_box(&x), &mut xk);
                    for (o, row) in out.iter_mut().zip(m.chunks_exact(rb)) {
                        *o = qdot_k(dtype, row, &xk);
                    }
                } else {
                    quantize_q8(black_box(&x), &mut xq);
                    for (o, row) in out.iter_mut().zip(m.chunks_exact(rb)) {
                        *o = qdot(dtype, row, &xq);
                    }
                }
                black_box(&out);
            });
            let gb = size as f64 / 1e9;
            println!(
                "{:<5} {:>12} {:>7.2} {:>5} {:>9.3} {:>7.2} {:>9.3} {:>7.2} {:>7.2}x",
                dtype.to_string(),
                format!("{rows}x{cols}"),
                size as f64 / 1e6,
                if cold { "cold" } else { "hot" },
                tf * 1e3,
                gb / tf,
                ti * 1e3,
                gb / ti,
                tf / ti
            );
        }
    }
}
