//! A decode step allocates nothing: the forward pass (single-sequence and batched, f32 and 8-bit
//! activations) and the sampler reuse buffers that reach their size during the first steps.
//!
//! A counting global allocator counts every allocation and reallocation, in every thread (the kernel pool's
//! workers too), while armed. Each case warms up first (per-thread scratch, the pool's threads, the
//! attention score buffers), then decodes 96 more tokens armed. A worker that was busy elsewhere during the
//! warm-up (this machine runs other tests at once) may take its first task, and size its per-thread
//! buffers, while armed: that is at most a few allocations per thread, ever, so the bound is 4 per pool
//! thread, while a single allocation per token would make at least 96. The single-sequence
//! state grows its KV storage in whole 256-position blocks; the armed steps stay inside the first block,
//! and that growth (a few reallocations per 256 tokens) is by design, not per token.
//!
//! Out of scope, by design: turning tokens into text (the detokenizer and stop-string matcher hand out
//! small strings, and the server sends each token's text to another task as an owned message).
//!
//! Needs HEARTH_SMOLLM2_GGUF and HEARTH_GEMMA3_GGUF (the README's test command sets them).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};

use hearth_engine::backend::cpu::set_quantized_activations;
use hearth_engine::models::{Logits, Model, SeqInput};
use hearth_engine::sample::{Sampler, SamplingParams};

struct Counting;

static ARMED: AtomicBool = AtomicBool::new(false);
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call to the system allocator unchanged; counting has no effect on memory.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if ARMED.load(SeqCst) {
            ALLOCS.fetch_add(1, SeqCst);
        }
        System.alloc(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        System.dealloc(p, l)
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        if ARMED.load(SeqCst) {
            ALLOCS.fetch_add(1, SeqCst);
        }
        System.alloc_zeroed(l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        if ARMED.load(SeqCst) {
            ALLOCS.fetch_add(1, SeqCst);
        }
        System.realloc(p, l, n)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations made while `f` runs.
fn count(f: impl FnOnce()) -> usize {
    ALLOCS.store(0, SeqCst);
    ARMED.store(true, SeqCst);
    f();
    ARMED.store(false, SeqCst);
    ALLOCS.load(SeqCst)
}

fn model(var: &str) -> Model {
    let path = std::env::var_os(var).unwrap_or_else(|| panic!("set {var} to the model file"));
    Model::open(std::path::Path::new(&path)).unwrap()
}

const WARMUP: usize = 8;
const ARMED_STEPS: usize = 96;

/// One sequence through `Model::forward`, sampling with temperature, top-p and penalties.
fn single(m: &Model) -> usize {
    let params = SamplingParams {
        temperature: 0.8,
        top_p: 0.9,
        repetition_penalty: 1.1,
        seed: Some(7),
        ..SamplingParams::greedy()
    };
    let vocab = m.config.vocab;
    let mut sampler = Sampler::new(params, vocab);
    let mut st = m.new_state(64);
    let mut history: Vec<u32> = (0..20).map(|i| (100 + 37 * i) % vocab as u32).collect();
    history.reserve(WARMUP + ARMED_STEPS + 1);
    let mut logits = m.forward(&mut st, &history, Logits::Last).unwrap().to_vec();
    let mut step = |st: &mut _, history: &mut Vec<u32>, logits: &mut Vec<f32>| {
        let id = sampler.sample(logits, history);
        history.push(id);
        logits.copy_from_slice(m.forward(st, &[id], Logits::Last).unwrap());
    };
    for _ in 0..WARMUP {
        step(&mut st, &mut history, &mut logits);
    }
    count(|| {
        for _ in 0..ARMED_STEPS {
            step(&mut st, &mut history, &mut logits);
        }
    })
}

/// Four sequences decoding together through `Model::forward_batch` over a shared block pool.
fn batched(m: &Model) -> usize {
    const SEQS: usize = 4;
    const BLOCK: usize = 16;
    let per_seq = (20 + WARMUP + ARMED_STEPS).div_ceil(BLOCK);
    let mut kv = m.new_kv(BLOCK, SEQS * per_seq).unwrap();
    let mut batch = m.new_batch(128);
    // Sequence i owns blocks i, i + SEQS, i + 2 * SEQS, ... (scattered, as the block manager hands them out).
    let tables: Vec<Vec<u32>> = (0..SEQS)
        .map(|i| (0..per_seq).map(|b| (i + b * SEQS) as u32).collect())
        .collect();
    let vocab = m.config.vocab as u32;
    let mut last: Vec<u32> = (0..SEQS as u32).map(|i| 50 + i).collect();
    let mut pos = [0usize; SEQS];
    // Prefill: 20 tokens each, one step.
    let prompts: Vec<Vec<u32>> = (0..SEQS)
        .map(|i| {
            (0..20)
                .map(|t| (200 + 13 * t + 101 * i as u32) % vocab)
                .collect()
        })
        .collect();
    let seqs: Vec<SeqInput> = (0..SEQS)
        .map(|i| SeqInput {
            tokens: &prompts[i],
            start: 0,
            table: &tables[i],
            logits: Logits::Last,
        })
        .collect();
    m.forward_batch(&mut batch, &mut kv, &seqs).unwrap();
    pos.iter_mut().for_each(|p| *p = 20);
    let mut step = |batch: &mut _, kv: &mut _| {
        let tokens: [[u32; 1]; SEQS] = std::array::from_fn(|i| [last[i]]);
        // On the stack: the step's inputs need no heap either.
        let inputs: [SeqInput; SEQS] = std::array::from_fn(|i| SeqInput {
            tokens: &tokens[i],
            start: pos[i],
            table: &tables[i],
            logits: Logits::Last,
        });
        let logits = m.forward_batch(batch, kv, &inputs).unwrap();
        let v = vocab as usize;
        for i in 0..SEQS {
            last[i] = hearth_engine::sample::argmax(&logits[i * v..(i + 1) * v]);
            pos[i] += 1;
        }
    };
    for _ in 0..WARMUP {
        step(&mut batch, &mut kv);
    }
    count(|| {
        for _ in 0..ARMED_STEPS {
            step(&mut batch, &mut kv);
        }
    })
}

/// One test, run in sequence: the activation mode is process-wide.
#[test]
fn decode_steps_allocate_nothing() {
    // First-use buffers of threads that had no task during the warm-up (see the module docs).
    let bound = 4 * hearth_engine::backend::cpu::pool::threads();
    assert!(bound < ARMED_STEPS);
    // The counter sees allocations at all.
    assert_eq!(count(|| drop(std::hint::black_box(vec![1u8; 10]))), 1);
    for var in ["HEARTH_SMOLLM2_GGUF", "HEARTH_GEMMA3_GGUF"] {
        let m = model(var);
        for quantized in [false, true] {
            set_quantized_activations(quantized);
            let n = single(&m);
            assert!(
                n <= bound,
                "{var}, quantized={quantized}: {n} allocations in {ARMED_STEPS} single-sequence steps"
            );
            let n = batched(&m);
            assert!(
                n <= bound,
                "{var}, quantized={quantized}: {n} allocations in {ARMED_STEPS} batched steps"
            );
        }
    }
    set_quantized_activations(false);
}
