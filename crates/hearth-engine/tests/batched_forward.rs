//! A batched step over several sequences (mixed prefill chunks and decodes, scattered KV blocks) gives the
//! same logits as running each sequence alone, bit for bit: every per-row operation (matmul rows, norms,
//! rope, attention) sums in an order that does not depend on what else is in the batch.

use std::path::Path;

use hearth_engine::models::{Logits, Model, SeqInput};

fn tiny(rel: &str) -> Model {
    Model::open(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/tiny")
            .join(rel),
    )
    .unwrap()
}

/// Sequences of different lengths, run alone and then interleaved in batches over a shuffled block pool.
fn check(model: &Model) {
    let v = model.config.vocab as u32;
    let seqs: Vec<Vec<u32>> = [13usize, 6, 21, 2]
        .iter()
        .enumerate()
        .map(|(i, &n)| {
            (0..n)
                .map(|t| (7 + 31 * i as u32 + 17 * t as u32) % v)
                .collect()
        })
        .collect();
    // Reference: each sequence alone, all positions.
    let alone: Vec<Vec<f32>> = seqs
        .iter()
        .map(|s| {
            let mut st = model.new_state(64);
            model.forward(&mut st, s, Logits::All).unwrap().to_vec()
        })
        .collect();

    // Batched: block size 4, blocks handed out in a scrambled order so tables are not contiguous.
    let bs = 4;
    let need: Vec<usize> = seqs.iter().map(|s| s.len().div_ceil(bs)).collect();
    let total: usize = need.iter().sum();
    let mut order: Vec<u32> = (0..total as u32).collect();
    order.reverse();
    order.rotate_left(3);
    let mut tables = Vec::new();
    let mut next = 0;
    for &n in &need {
        tables.push(order[next..next + n].to_vec());
        next += n;
    }
    let mut kv = model.new_kv(bs, total).unwrap();
    let mut batch = model.new_batch(64);
    // Step 1: first 5 tokens of every sequence (or all, if shorter). Step 2 onward: chunks of 3.
    let mut done = vec![0usize; seqs.len()];
    let mut got: Vec<Vec<f32>> = vec![Vec::new(); seqs.len()];
    let mut step = 0;
    while done.iter().zip(&seqs).any(|(d, s)| d < &s.len()) {
        let chunk = if step == 0 { 5 } else { 3 };
        let mut inputs = Vec::new();
        let mut who = Vec::new();
        for (i, s) in seqs.iter().enumerate() {
            if done[i] < s.len() {
                let end = (done[i] + chunk).min(s.len());
                inputs.push(SeqInput {
                    tokens: &s[done[i]..end],
                    start: done[i],
                    table: &tables[i],
                    logits: Logits::All,
                });
                who.push((i, end - done[i]));
            }
        }
        let logits = model
            .forward_batch(&mut batch, &mut kv, &inputs)
            .unwrap()
            .to_vec();
        let mut at = 0;
        for (i, n) in who {
            got[i].extend_from_slice(&logits[at * v as usize..(at + n) * v as usize]);
            at += n;
            done[i] += n;
        }
        step += 1;
    }
    for (i, (a, b)) in alone.iter().zip(&got).enumerate() {
        assert_eq!(a.len(), b.len());
        let worst = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(
            worst <= 1e-4,
            "sequence {i}: batched logits differ by {worst}"
        );
    }
}

#[test]
fn llama_batched_equals_alone() {
    check(&tiny("llama/model-q8_0.gguf"));
}

#[test]
fn qwen2_batched_equals_alone() {
    check(&tiny("qwen2/hf-f32"));
}

#[test]
fn gemma3_batched_equals_alone() {
    // Sequences longer than its sliding window of 8 exercise the window over scattered blocks.
    check(&tiny("gemma3/model-f32.gguf"));
}

#[test]
fn bad_tables_are_errors() {
    let m = tiny("llama/model-f32.gguf");
    let mut kv = m.new_kv(4, 2).unwrap();
    let mut b = m.new_batch(8);
    let short = [0u32];
    let inp = SeqInput {
        tokens: &[1, 2, 3, 4, 5],
        start: 0,
        table: &short,
        logits: Logits::Last,
    };
    assert!(m.forward_batch(&mut b, &mut kv, &[inp]).is_err());
    let out_of_pool = [0u32, 9];
    let inp = SeqInput {
        tokens: &[1, 2, 3, 4, 5],
        start: 0,
        table: &out_of_pool,
        logits: Logits::Last,
    };
    assert!(m.forward_batch(&mut b, &mut kv, &[inp]).is_err());
}
