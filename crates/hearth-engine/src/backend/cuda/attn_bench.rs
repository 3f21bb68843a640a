//! A benchmark of decode attention alone, for the GPU machine: many short rows, as a server's step of many
//! streams has them (64 rows of 40-169 keys, 8 KV heads, groups of 4 query heads, 128-wide heads, 16-key
//! cache blocks in shuffled order). It prints microseconds a launch for each split count and asserts no
//! speed; `decode_attention_kernels_match_reference_on_gpu` (tests.rs) checks the values. Both kernels
//! (attn_decode, attn_decode_mma where the GPU runs it) are timed.
//!
//! Run there: `hearth_engine attn_decode_bench --ignored --nocapture` (ATTN_BENCH_ROWS sets the rows,
//! ATTN_BENCH_POS one position for them all, ATTN_BENCH_SPLITS the split counts; under ncu,
//! ATTN_BENCH_LAUNCHES=1 keeps the report short).

use super::*;

#[test]
#[ignore = "a benchmark: run it on a GPU machine with --ignored --nocapture"]
fn attn_decode_bench() {
    if probe(0).is_err() {
        eprintln!("skipped: no GPU");
        return;
    }
    let env = |k: &str, d: usize| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let (hd, gqa, n_kv, bs) = (128usize, 4usize, 8usize, 16usize);
    let rows = env("ATTN_BENCH_ROWS", 64);
    let launches = env("ATTN_BENCH_LAUNCHES", 200);
    let gpu = Gpu::open(0, hd, gqa).unwrap();
    let (n_heads, kv_dim) = (n_kv * gqa, n_kv * hd);
    // Row r: the newest token of a sequence at position 39 + (37 r mod 131) (or ATTN_BENCH_POS, for one long
    // context), the keys before it cached by earlier steps.
    let fixed_pos = std::env::var("ATTN_BENCH_POS")
        .ok()
        .and_then(|v| v.parse::<i32>().ok());
    let positions: Vec<i32> = (0..rows)
        .map(|r| fixed_pos.unwrap_or(39 + (37 * r as i32) % 131))
        .collect();
    let splits: Vec<usize> = std::env::var("ATTN_BENCH_SPLITS")
        .unwrap_or_else(|_| "1,2,4,8".into())
        .split(',')
        .filter_map(|v| v.parse().ok())
        .filter(|&n| (1..=64).contains(&n))
        .collect();
    let need: Vec<usize> = positions
        .iter()
        .map(|&p| (p as usize + 1).div_ceil(bs))
        .collect();
    let total: usize = need.iter().sum();
    // Cache blocks handed out by a fixed shuffle (a stride prime to the count), not in sequence order.
    let stride = (1..)
        .map(|s: usize| 7919 + s)
        .find(|s| gcd(*s, total) == 1)
        .unwrap();
    let (mut tables, mut table_off) = (Vec::new(), Vec::new());
    let mut handed = 0usize;
    for &nb in &need {
        table_off.push(tables.len() as i32);
        for _ in 0..nb {
            tables.push(((handed * stride) % total) as i32);
            handed += 1;
        }
    }
    let up_i32 = |v: &[i32]| {
        let b = DevBuf::alloc(&gpu.ctx, v.len() * 4).unwrap();
        memory::upload(gpu.cu_stream(), b.ptr, v).unwrap();
        b
    };
    let seqs: Vec<i32> = (0..rows as i32).collect();
    let (pos_d, seq_d) = (up_i32(&positions), up_i32(&seqs));
    let (off_d, tab_d) = (up_i32(&table_off), up_i32(&tables));
    let max_d = up_i32(&[positions.iter().max().unwrap() + 1]);
    let (flash_d, first_d) = (up_i32(&vec![0; rows]), up_i32(&positions));
    // Small f16 values (0x3000-0x33ff: 0.125-0.25), so no exponential overflows.
    let halves: Vec<u16> = (0..total * bs * kv_dim)
        .map(|i| 0x3000 + (i * 2654435761usize % 1024) as u16)
        .collect();
    let kc_d = DevBuf::alloc(&gpu.ctx, halves.len() * 2).unwrap();
    let vc_d = DevBuf::alloc(&gpu.ctx, halves.len() * 2).unwrap();
    memory::upload(gpu.cu_stream(), kc_d.ptr, &halves).unwrap();
    memory::upload(gpu.cu_stream(), vc_d.ptr, &halves).unwrap();
    let q: Vec<f32> = (0..rows * n_heads * hd)
        .map(|i| (i % 17) as f32 / 17.0)
        .collect();
    let q_d = DevBuf::alloc(&gpu.ctx, q.len() * 4).unwrap();
    memory::upload(gpu.cu_stream(), q_d.ptr, &q).unwrap();
    let part_d = DevBuf::alloc(&gpu.ctx, rows * n_heads * 64 * (hd + 4) * 4).unwrap();
    let out_d = DevBuf::alloc(&gpu.ctx, rows * n_heads * hd * 4).unwrap();
    let done_d = DevBuf::zeroed(&gpu.ctx, rows * n_kv * 4).unwrap();
    let xh_d = DevBuf::alloc(&gpu.ctx, rows * n_heads * hd * 2).unwrap();
    let kv_bytes: usize = positions
        .iter()
        .map(|&p| (p as usize + 1) * 2 * kv_dim * 2)
        .sum();
    let scale = 1.0 / (hd as f32).sqrt();
    println!(
        "attn_decode: {rows} rows, positions {}-{}, {n_kv} KV heads x {gqa}, head {hd}, {:.1} MB of keys and values, {} multiprocessors",
        positions.iter().min().unwrap(),
        positions.iter().max().unwrap(),
        kv_bytes as f64 / 1e6,
        gpu.sms
    );
    let kernels: &[&str] = if gpu.attn_mma {
        &["attn_decode", "attn_decode_mma"]
    } else {
        &["attn_decode"]
    };
    for (&kernel, n_splits) in kernels
        .iter()
        .flat_map(|k| splits.iter().map(move |&n| (k, n)))
    {
        let args = super::blocks::AttnDecodeArgs {
            q: q_d.ptr,
            kc: kc_d.ptr,
            vc: vc_d.ptr,
            positions: pos_d.ptr,
            row_seq: seq_d.ptr,
            table_off: off_d.ptr,
            tables: tab_d.ptr,
            part: part_d.ptr,
            out: out_d.ptr,
            done: done_d.ptr,
            n_kv: n_kv as i32,
            block_size: bs as i32,
            window: 0,
            scale,
            softcap: 0.0,
            max_len: max_d.ptr,
            n_splits: n_splits as i32,
            flash_rows: flash_d.ptr,
            first_pos: first_d.ptr,
            xq: 0,
            xd: 0,
            xh: xh_d.ptr,
            xh_bf16: 0,
        };
        let launch = || args.run(&gpu, kernel, rows);
        launch();
        sync(&gpu);
        let t = std::time::Instant::now();
        for _ in 0..launches {
            launch();
        }
        sync(&gpu);
        let us = t.elapsed().as_secs_f64() * 1e6 / launches as f64;
        gpu.take_err().unwrap();
        println!(
            "  {kernel}, splits {n_splits}: {us:.2} us a launch, {:.0} GB/s of keys and values",
            kv_bytes as f64 / us / 1e3
        );
    }
}

fn sync(gpu: &Gpu) {
    // SAFETY: the stream belongs to the live context.
    unsafe { result::stream::synchronize(gpu.cu_stream()).unwrap() }
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}
