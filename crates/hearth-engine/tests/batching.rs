//! Continuous batching end to end in the engine: the scheduler's plans run through the batched forward with
//! greedy sampling, sequences joining and leaving mid-flight, sharing prompt prefixes, and (with a small KV
//! pool) being preempted and recomputed. Every sequence's tokens must equal what it generates alone.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use hearth_engine::models::{Logits, Model, SeqInput};
use hearth_engine::sample::argmax;
use hearth_engine::sched::{Scheduler, SchedulerConfig, StepOutput};

fn tiny(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/tiny")
        .join(rel)
}

/// Greedy continuation of `prompt` run alone.
fn alone(m: &Model, prompt: &[u32], n: usize) -> Vec<u32> {
    let mut st = m.new_state(64);
    let mut next = argmax(m.forward(&mut st, prompt, Logits::Last).unwrap());
    let mut out = vec![next];
    while out.len() < n {
        next = argmax(m.forward(&mut st, &[next], Logits::Last).unwrap());
        out.push(next);
    }
    out
}

struct Request {
    arrive_step: usize,
    prompt: Vec<u32>,
    max_new: usize,
}

/// Runs `reqs` through a scheduler with `n_blocks` blocks of 4; returns each request's tokens and how many
/// preemptions happened.
fn batched(m: &Model, reqs: &[Request], n_blocks: usize, budget: usize) -> (Vec<Vec<u32>>, usize) {
    let bs = 4;
    let mut sched = Scheduler::new(SchedulerConfig {
        max_batch_tokens: budget,
        max_seqs: 8,
        block_size: bs,
        n_blocks,
        model_key: 7,
    });
    let mut kv = m.new_kv(bs, n_blocks).unwrap();
    let mut batch = m.new_batch(budget.max(8));
    let mut out: HashMap<u64, Vec<u32>> = HashMap::new();
    let mut preemptions = 0;
    let mut step = 0;
    let vocab = m.config.vocab;
    loop {
        for (i, r) in reqs.iter().enumerate() {
            if r.arrive_step == step {
                sched
                    .add(i as u64, r.prompt.clone(), r.max_new, m.config.context_len)
                    .unwrap();
                out.insert(i as u64, Vec::new());
            }
        }
        let pending = reqs.iter().any(|r| r.arrive_step > step);
        if !sched.has_work() && !pending {
            break;
        }
        step += 1;
        if !sched.has_work() {
            continue;
        }
        let plan = sched.schedule();
        assert!(plan.rejected.is_empty());
        preemptions += plan.preempted.len();
        for c in &plan.copies {
            kv.copy_block(c.src, c.dst);
        }
        let inputs: Vec<SeqInput> = plan.items.iter().map(|it| it.input()).collect();
        let logits = m
            .forward_batch(&mut batch, &mut kv, &inputs)
            .unwrap()
            .to_vec();
        let mut row = 0;
        let mut outputs = Vec::new();
        for it in &plan.items {
            if it.sample {
                let t = argmax(&logits[row * vocab..(row + 1) * vocab]);
                row += 1;
                let o = out.get_mut(&it.seq).unwrap();
                // A preempted sequence recomputes its generated tokens; only new samples extend it.
                if it.end_pos() == sched.tokens(it.seq).unwrap().len() {
                    o.push(t);
                }
                outputs.push(StepOutput {
                    seq: it.seq,
                    token: Some(t),
                    finished: false,
                });
            }
        }
        sched.update(&outputs);
        sched.check_invariants().unwrap();
        assert!(step < 10_000, "no progress");
    }
    let mut v: Vec<_> = out.into_iter().collect();
    v.sort();
    (v.into_iter().map(|(_, t)| t).collect(), preemptions)
}

fn requests(vocab: u32) -> Vec<Request> {
    let shared: Vec<u32> = (0..22).map(|t| (5 + 13 * t) % vocab).collect();
    let own = |salt: u32, n: u32| (0..n).map(move |t| (11 + salt * 7 + 29 * t) % vocab);
    vec![
        Request {
            arrive_step: 0,
            prompt: own(1, 9).collect(),
            max_new: 12,
        },
        Request {
            arrive_step: 0,
            prompt: shared.iter().copied().chain(own(2, 3)).collect(),
            max_new: 7,
        },
        Request {
            arrive_step: 2,
            prompt: own(3, 31).collect(),
            max_new: 15,
        },
        Request {
            arrive_step: 3,
            prompt: shared.iter().copied().chain(own(4, 5)).collect(),
            max_new: 9,
        },
        Request {
            arrive_step: 9,
            prompt: own(5, 2).collect(),
            max_new: 14,
        },
        Request {
            arrive_step: 12,
            prompt: shared.clone(),
            max_new: 6,
        },
    ]
}

fn check(m: &Model, n_blocks: usize, budget: usize, expect_preemption: bool) {
    let reqs = requests(m.config.vocab as u32);
    let (got, preemptions) = batched(m, &reqs, n_blocks, budget);
    for (i, (r, g)) in reqs.iter().zip(&got).enumerate() {
        assert_eq!(g, &alone(m, &r.prompt, r.max_new), "request {i}");
    }
    if expect_preemption {
        assert!(
            preemptions > 0,
            "the small pool should have forced preemption"
        );
    }
}

#[test]
fn batched_greedy_equals_alone_llama() {
    let m = Model::open(&tiny("llama/model-q8_0.gguf")).unwrap();
    check(&m, 256, 16, false);
}

#[test]
fn batched_greedy_equals_alone_gemma3() {
    let m = Model::open(&tiny("gemma3/model-f32.gguf")).unwrap();
    check(&m, 256, 16, false);
}

#[test]
fn preemption_keeps_outputs_equal() {
    let m = Model::open(&tiny("qwen3/model-q4_0.gguf")).unwrap();
    // 14 blocks of 4 = 56 slots: the longest request alone needs 46, so several running at once preempt.
    check(&m, 14, 16, true);
}

/// The real SmolLM2 model (HEARTH_MODELS_DIR, as in tests/real_models.rs), with preemption.
#[test]
fn batched_greedy_equals_alone_smollm2() {
    let dir = std::env::var_os("HEARTH_MODELS_DIR")
        .expect("set HEARTH_MODELS_DIR to the folder made by scripts/fetch_models.sh");
    let m = Model::open(&PathBuf::from(dir).join("SmolLM2-135M-Instruct.Q4_1.gguf")).unwrap();
    check(&m, 256, 32, false);
    check(&m, 14, 16, true);
}
