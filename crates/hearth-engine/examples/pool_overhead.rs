//! Cost of one `pool::parallel_for` over the thread count: empty tasks (the fork/join alone) and tasks that
//! each sum 16 KiB (a typical decode chunk's weight bytes).
//!
//! `cargo run --release --example pool_overhead -- [threads]`

use std::time::Instant;

use hearth_engine::backend::cpu::pool;

fn main() {
    let threads: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2);
    pool::set_threads(threads);
    let data: Vec<u64> = (0..(1 << 20)).collect();
    for (name, work) in [("empty", 0usize), ("16 KiB per task", 2048)] {
        for tasks in [threads, 3 * threads, 16] {
            let iters = 20_000;
            let t0 = Instant::now();
            for i in 0..iters {
                pool::parallel_for(tasks, |k| {
                    let off = (i * 7919 + k * work) % (data.len() - work);
                    std::hint::black_box(data[off..off + work].iter().sum::<u64>());
                });
            }
            let per = t0.elapsed().as_secs_f64() / iters as f64 * 1e6;
            println!("{threads} threads, {tasks:>2} tasks, {name}: {per:.2} us per loop");
        }
    }
}
