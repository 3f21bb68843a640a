//! `Model::forward_batch_greedy` (each row's greedy token found by the backend, with logit biases) picks
//! exactly `sample::argmax_biased` of the logits `forward_batch` returns for the same step, on the CPU and,
//! where a CUDA GPU is usable, on the GPU (its kernels against the host scan of its own logits). Biases that
//! matter are used: one bans a row's best token, one lifts a low one to the top, one id is biased twice
//! (added in order), one id lies past the vocabulary (ignored).
//!
//! The GPU test skips without a GPU unless HEARTH_REQUIRE_CUDA is set (the device check script sets it).

use std::path::Path;

use hearth_engine::backend::RowBias;
use hearth_engine::models::{Logits, Model, SeqInput};
use hearth_engine::sample::{argmax, argmax_biased};

mod cuda_common;
use cuda_common::{have_cuda, open_gpu};

fn fixture(rel: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/tiny")
        .join(rel)
}

/// Four sequences' prompts in one step (last-token logits), run twice on fresh caches: once for logits,
/// once for greedy picks.
fn check(model: &Model) {
    let v = model.config.vocab as u32;
    let seqs: Vec<Vec<u32>> = [7usize, 3, 12, 5]
        .iter()
        .enumerate()
        .map(|(i, &n)| {
            (0..n)
                .map(|t| (11 + 37 * i as u32 + 13 * t as u32) % v)
                .collect()
        })
        .collect();
    let bs = 4;
    let tables: Vec<Vec<u32>> = {
        let mut next = 0u32;
        seqs.iter()
            .map(|s| {
                let n = s.len().div_ceil(bs) as u32;
                next += n;
                (next - n..next).collect()
            })
            .collect()
    };
    let blocks = tables.iter().map(|t| t.len()).sum();
    let inputs: Vec<SeqInput> = seqs
        .iter()
        .zip(&tables)
        .map(|(s, t)| SeqInput {
            tokens: s,
            start: 0,
            table: t,
            logits: Logits::Last,
        })
        .collect();

    let mut kv = model.new_kv(bs, blocks).unwrap();
    let mut batch = model.new_batch(64);
    let logits = model
        .forward_batch(&mut batch, &mut kv, &inputs)
        .unwrap()
        .to_vec();
    let rows: Vec<&[f32]> = logits.chunks(v as usize).collect();
    assert_eq!(rows.len(), seqs.len());

    let best0 = argmax(rows[0]);
    let low1 = (argmax(rows[1]) + v / 2) % v;
    let mut bias = RowBias::default();
    bias.clear();
    bias.push_row(&[(best0, -1e9)]);
    bias.push_row(&[(low1, 1e6)]);
    bias.push_row(&[(3, 2.5), (v + 7, 1e9), (3, -1.25)]);
    bias.push_row(&[]);
    let want: Vec<u32> = rows
        .iter()
        .enumerate()
        .map(|(r, row)| argmax_biased(row, bias.row(r)))
        .collect();
    assert_ne!(want[0], best0, "the ban must change row 0's pick");
    assert_eq!(want[1], low1, "the lift must decide row 1's pick");

    let mut kv = model.new_kv(bs, blocks).unwrap();
    let mut batch = model.new_batch(64);
    let mut got = Vec::new();
    model
        .forward_batch_greedy(&mut batch, &mut kv, &inputs, &bias, &mut got)
        .unwrap();
    assert_eq!(
        got, want,
        "greedy picks against the argmax of the same step's logits"
    );
}

#[test]
fn cpu_greedy_picks_equal_argmax_of_logits() {
    for rel in ["llama/model-q8_0.gguf", "gemma3/model-q4_0.gguf"] {
        check(&Model::open(&fixture(rel)).unwrap());
    }
}

#[test]
fn gpu_greedy_picks_equal_argmax_of_logits() {
    if !have_cuda() {
        return;
    }
    for rel in [
        "llama/model-q8_0.gguf",
        "gemma3/model-q4_0.gguf",
        "qwen2/model-f16.gguf",
    ] {
        check(&open_gpu(&fixture(rel)));
    }
}
