//! Times the f32-activation CPU kernels of every instruction-set level this CPU has, one thread: per weight
//! type, a matrix-vector product through `dot` (one row at a time, as decode does) hot (one matrix of about
//! 512 KiB, cache-resident) and cold (cycling through copies larger than L3, as a real decode step reads
//! weights from memory), and `dequantize` of the hot matrix (the many-token path's first half). Then `dot4`
//! over f32 rows (the many-token path's second half). Prints ns per row and GB/s of weights read.
//!
//! `cargo run --release -p hearth-engine --example float_kernels_bench [seconds per case]`
//! (`HEARTH_KERNELS` caps the levels measured.)

use std::hint::black_box;
use std::time::Instant;

use hearth_engine::backend::cpu::levels::LevelKernels;
use hearth_engine::tensor::dtype::ALL_DTYPES;
use hearth_engine::tensor::DType;

/// Weights per row in every case (a multiple of every block size, a typical hidden size).
const COLS: usize = 2048;
/// Bytes of the hot matrix.
const HOT_BYTES: usize = 512 << 10;
/// Bytes the cold case cycles through.
const COLD_BYTES: usize = 96 << 20;

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
}

/// Byte offsets of the f16 scale fields in a block of each type.
fn scale_offsets(dtype: DType) -> &'static [usize] {
    match dtype {
        DType::Q4_0 | DType::Q5_0 | DType::Q8_0 => &[0],
        DType::Q4_1 | DType::Q5_1 | DType::Q4_K | DType::Q5_K => &[0, 2],
        DType::Q2_K => &[80, 82],
        DType::Q3_K => &[108],
        DType::Q6_K => &[208],
        DType::F32 | DType::F16 | DType::BF16 | DType::Mlx(_) => &[],
    }
}

/// `rows` random rows of `COLS` weights: floats in [-1, 1), or random quant bits with small finite scales.
fn random_matrix(rng: &mut Rng, dtype: DType, rows: usize) -> Vec<u8> {
    let n = rows * COLS;
    let mut m = Vec::with_capacity(dtype.bytes_for(n).unwrap());
    match dtype {
        DType::F32 => (0..n).for_each(|_| m.extend(rng.unit().to_le_bytes())),
        DType::F16 => (0..n).for_each(|_| m.extend(half::f16::from_f32(rng.unit()).to_le_bytes())),
        DType::BF16 => {
            (0..n).for_each(|_| m.extend(half::bf16::from_f32(rng.unit()).to_le_bytes()))
        }
        _ => {
            for _ in 0..n / dtype.block_elems() {
                let start = m.len();
                m.extend((0..dtype.block_bytes()).map(|_| rng.next() as u8));
                for &off in scale_offsets(dtype) {
                    let d = half::f16::from_f32(0.01 * rng.unit());
                    m[start + off..start + off + 2].copy_from_slice(&d.to_le_bytes());
                }
            }
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
        .unwrap_or(0.2);
    let levels = LevelKernels::available();
    println!(
        "single thread, {COLS} columns, best of ~{budget} s per case; hot = one {} KiB matrix, cold = cycling \
         through {} MiB of copies; ns per row and GB/s of weights",
        HOT_BYTES >> 10,
        COLD_BYTES >> 20
    );
    println!(
        "{:<5} {:<14} {:>9} {:>7} {:>9} {:>7} {:>9} {:>7}",
        "type", "level", "dot hot", "GB/s", "dot cold", "GB/s", "dequant", "GB/s"
    );
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let x: Vec<f32> = (0..COLS).map(|_| rng.unit()).collect();
    for dtype in ALL_DTYPES {
        let rb = dtype.bytes_for(COLS).unwrap();
        let rows = (HOT_BYTES / rb).max(1);
        let size = rows * rb;
        let copies = COLD_BYTES.div_ceil(size).max(2);
        let mats: Vec<Vec<u8>> = (0..copies)
            .map(|_| random_matrix(&mut rng, dtype, rows))
            .collect();
        let mut out = vec![0f32; rows];
        let mut deq = vec![0f32; COLS];
        for &lk in &levels {
            let mut dot_ns = [0.0; 2];
            for (cold, ns) in dot_ns.iter_mut().enumerate() {
                let mut next = 0;
                let t = time(budget, || {
                    if cold == 1 {
                        next = (next + 1) % copies;
                    }
                    for (o, row) in out.iter_mut().zip(mats[next].chunks_exact(rb)) {
                        *o = lk.dot(dtype, row, black_box(&x));
                    }
                    black_box(&out);
                });
                *ns = t * 1e9 / rows as f64;
            }
            let t = time(budget, || {
                for row in mats[0].chunks_exact(rb) {
                    lk.dequantize(dtype, row, &mut deq);
                    black_box(&deq);
                }
            });
            let deq_ns = t * 1e9 / rows as f64;
            let gbs = |ns: f64| rb as f64 / ns;
            println!(
                "{:<5} {:<14} {:>9.1} {:>7.2} {:>9.1} {:>7.2} {:>9.1} {:>7.2}",
                dtype.to_string(),
                lk.name(),
                dot_ns[0],
                gbs(dot_ns[0]),
                dot_ns[1],
                gbs(dot_ns[1]),
                deq_ns,
                gbs(deq_ns)
            );
        }
    }

    // dot4 over 64 dequantized rows (512 KiB of f32) against one token, as the many-token matmul does.
    let rows = 64;
    let w: Vec<f32> = (0..rows * COLS).map(|_| rng.unit()).collect();
    println!("\ndot4 over {rows} f32 rows of {COLS}: ns per row, GFLOP/s");
    for &lk in &levels {
        let mut out = [0f32; 4];
        let t = time(budget, || {
            for r in (0..rows).step_by(4) {
                out = lk.dot4(&w[r * COLS..(r + 4) * COLS], black_box(&x));
                black_box(&out);
            }
        });
        let ns = t * 1e9 / rows as f64;
        println!(
            "{:<14} {:>9.1} {:>7.2}",
            lk.name(),
            ns,
            2.0 * COLS as f64 / ns
        );
    }
}
