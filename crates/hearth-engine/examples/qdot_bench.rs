//! Times, single-threaded, one matrix-vector product of a random quantized matrix two ways: the current
//! float kernel (`backend::cpu::dot`, weights decoded to f32 and FMA'd against f32 `x`) per row, and the
//! integer kernel (`backend::cpu::qdot::qdot` per row, after one `quantize_q8` of `x`, which is timed too).
//!
//! `cargo run --release -p hearth-engine --example qdot_bench [seconds per case]`

use std::hint::black_box;
use std::time::Instant;

use hearth_engine::backend::cpu::qdot::{qdot, quantize_q8, Q8Row};
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

/// Random blocks with finite f16 scales (|d| in [2^-7, 2^-6)) and a negative min for Q4_1.
fn random_matrix(rng: &mut Rng, dtype: DType, rows: usize, cols: usize) -> Vec<u8> {
    let bb = dtype.bytes_for(32).unwrap();
    let mut m = Vec::with_capacity(rows * dtype.bytes_for(cols).unwrap());
    for _ in 0..rows * cols / 32 {
        let start = m.len();
        for _ in 0..bb {
            m.push(rng.next() as u8);
        }
        let f = |r: u64, sign: u16| (sign | 0x2000 | (r as u16 & 0x3ff)).to_le_bytes();
        m[start..start + 2].copy_from_slice(&f(rng.next(), 0));
        if dtype == DType::Q4_1 {
            m[start + 2..start + 4].copy_from_slice(&f(rng.next(), 0x8000));
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

fn main() {
    let budget: f64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    println!(
        "kernels: {} (single thread, best of ~{budget} s per case)",
        kernel_name()
    );
    println!(
        "{:<6} {:>12} {:>9} {:>11} {:>9} {:>11} {:>8} {:>10}",
        "type", "rows x cols", "MB", "float ms", "GB/s", "int ms", "GB/s", "speedup"
    );
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    for (rows, cols) in [(576usize, 1536usize), (49152, 576)] {
        let x: Vec<f32> = (0..cols)
            .map(|_| (rng.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0)
            .collect();
        for dtype in [DType::Q4_1, DType::Q8_0] {
            let m = random_matrix(&mut rng, dtype, rows, cols);
            let rb = dtype.bytes_for(cols).unwrap();
            let mut out = vec![0.0f32; rows];
            let mut xq = Q8Row::new();
            let tf = time(budget, || {
                for (o, row) in out.iter_mut().zip(m.chunks_exact(rb)) {
                    *o = dot(dtype, row, black_box(&x));
                }
                black_box(&out);
            });
            let ti = time(budget, || {
                quantize_q8(black_box(&x), &mut xq);
                for (o, row) in out.iter_mut().zip(m.chunks_exact(rb)) {
                    *o = qdot(dtype, row, &xq);
                }
                black_box(&out);
            });
            let gb = m.len() as f64 / 1e9;
            println!(
                "{:<6} {:>12} {:>9.2} {:>11.3} {:>9.2} {:>11.3} {:>8.2} {:>9.2}x",
                dtype.to_string(),
                format!("{rows}x{cols}"),
                m.len() as f64 / 1e6,
                tf * 1e3,
                gb / tf,
                ti * 1e3,
                gb / ti,
                tf / ti
            );
        }
    }
}
