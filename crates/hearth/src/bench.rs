//! `hearth bench`: prefill and decode speed on one model, the machine's memory read bandwidth, and how close
//! decode comes to the roofline (bandwidth / bytes read per decoded token).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Result};
use clap::Args;
use hearth_engine::models::Logits;
use hearth_engine::sample::argmax;
use rayon::prelude::*;

#[derive(Args)]
pub struct BenchArgs {
    #[arg(long)]
    model: PathBuf,
    /// Prompt length for the prefill measurement.
    #[arg(long, default_value_t = 512)]
    prompt_tokens: usize,
    /// Tokens decoded for the decode measurement.
    #[arg(long, default_value_t = 128)]
    gen_tokens: usize,
    /// Repetitions of each measurement; the median is reported.
    #[arg(long, default_value_t = 3)]
    reps: usize,
}

pub fn bench(a: BenchArgs) -> Result<()> {
    let (model, _tok) = crate::load(&a.model)?;
    let c = &model.config;
    if a.prompt_tokens + a.gen_tokens > c.context_len || a.prompt_tokens == 0 {
        bail!(
            "prompt {} + generated {} tokens do not fit the context of {}",
            a.prompt_tokens,
            a.gen_tokens,
            c.context_len
        );
    }
    // A fixed pseudo-random prompt over ordinary (non-special) ids: the speed does not depend on the text.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let prompt: Vec<u32> = (0..a.prompt_tokens)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (256 + x % (c.vocab as u64 - 256).max(1)) as u32 % c.vocab as u32
        })
        .collect();
    let threads = rayon::current_num_threads();
    // On a GPU the roofline is the card's: its device-to-device copy bandwidth (bytes read plus written),
    // measured here, in the same run.
    let gpu_bw = hearth_engine::backend::device::gpu_copy_bandwidth(model.device.device);
    let bw = match gpu_bw {
        Some(b) => b,
        None => {
            eprintln!("measuring memory bandwidth ({threads} threads)...");
            memory_bandwidth()
        }
    };
    let mut prefill = Vec::new();
    let mut decode = Vec::new();
    // One state for every rep (emptied between them), so per-state setup (device buffers, recorded decode
    // steps) is paid once, as a server pays it once.
    let mut st = model.new_state(model.prefill_chunk());
    for rep in 0..a.reps.max(1) {
        eprintln!("rep {}/{}...", rep + 1, a.reps.max(1));
        st.truncate(0);
        let _ = hearth_engine::backend::device::profile_report();
        let t0 = Instant::now();
        let mut next = argmax(model.forward(&mut st, &prompt, Logits::Last)?);
        prefill.push(a.prompt_tokens as f64 / t0.elapsed().as_secs_f64());
        let prefill_profile = hearth_engine::backend::device::profile_report();
        let last = rep + 1 == a.reps.max(1);
        if last {
            hearth_engine::backend::device::profiler_range(true);
        }
        let t1 = Instant::now();
        for _ in 0..a.gen_tokens {
            next = argmax(model.forward(&mut st, &[next], Logits::Last)?);
        }
        if last {
            hearth_engine::backend::device::profiler_range(false);
        }
        decode.push(a.gen_tokens as f64 / t1.elapsed().as_secs_f64());
        // HEARTH_CUDA_PROFILE=1: where the last rep's GPU time went, by kernel.
        if let (true, Some(p)) = (rep + 1 == a.reps.max(1), prefill_profile) {
            eprintln!(
                "GPU time by kernel, prefill of {} tokens:\n{p}",
                a.prompt_tokens
            );
            let d = hearth_engine::backend::device::profile_report().unwrap_or_default();
            eprintln!("GPU time by kernel, {} decode steps:\n{d}", a.gen_tokens);
        }
    }
    let med = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v[v.len() / 2]
    };
    let (pf, dc) = (med(&mut prefill), med(&mut decode));
    let bytes = model.bytes_per_token() as f64;
    let roof = bw / bytes;
    println!("model: {}", model.path.display());
    println!("device: {}", model.device.reason);
    println!("threads: {threads}");
    println!("prefill: {pf:.1} tokens/s ({} tokens)", a.prompt_tokens);
    println!(
        "decode: {dc:.1} tokens/s ({} tokens after the prompt)",
        a.gen_tokens
    );
    if gpu_bw.is_some() {
        println!("GPU copy bandwidth (read + write): {:.2} GB/s", bw / 1e9);
    } else {
        println!("memory read bandwidth: {:.2} GB/s", bw / 1e9);
    }
    println!("weight bytes per decoded token: {:.2} MB", bytes / 1e6);
    println!(
        "decode roofline: {roof:.1} tokens/s; decode reaches {:.0}% of it",
        100.0 * dc / roof
    );
    Ok(())
}

/// Read bandwidth of main memory in bytes/s: the best of several parallel sums over a 1 GiB buffer.
fn memory_bandwidth() -> f64 {
    let n = (1usize << 30) / 8;
    let buf: Vec<u64> = (0..n as u64).collect();
    let mut best = 0f64;
    for _ in 0..5 {
        let t0 = Instant::now();
        let s: u64 = buf
            .par_chunks(1 << 16)
            .map(|c| c.iter().fold(0u64, |a, &b| a.wrapping_add(b)))
            .reduce(|| 0, |a, b| a.wrapping_add(b));
        let dt = t0.elapsed().as_secs_f64();
        std::hint::black_box(s);
        best = best.max((n * 8) as f64 / dt);
    }
    best
}
