//! One OS thread per loaded model: it owns the model, its paged KV cache and the continuous-batching
//! [`Scheduler`], takes [`Job`]s from the model's bounded queue and runs all admitted sequences together, one
//! batched forward per step, streaming [`Event`]s back.
//!
//! Each step: take new jobs (blocking only when idle), drop sequences whose client went away, ask the
//! scheduler for the step's plan (decodes first, then prompt chunks under the token budget), copy any
//! copy-on-write blocks, run the batched forward, sample each sequence that reached its last token (a
//! [`TokenStepper`] per sequence: sampling, EOS, detokenizing, stop strings, limits) and report the outputs
//! back to the scheduler. Prompt prefixes are reused across requests through the scheduler's prefix cache; the
//! reuse shows as `Summary::cached_tokens`.
//!
//! Panics: each step runs inside `catch_unwind`. A panic fails every sequence in flight with an internal
//! error and starts a fresh scheduler and KV cache; the model itself is only read, so it stays in service.
//!
//! The thread ends when every sender of its queue is gone, i.e. when the registry and every request have
//! dropped the model's [`ModelHandle`]; the model's memory is freed then.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::collections::HashMap;

use hearth_engine::backend::RowBias;
use hearth_engine::generate::{prompt_logprobs, Finish, TokenStepper};
use hearth_engine::models::kv_cache::PagedKv;
use hearth_engine::models::{Batch, Model, SeqInput};
use hearth_engine::sched::{
    FinishReason, RequestError, Scheduler, SchedulerConfig, SeqId, StepOutput,
};
use hearth_engine::tokenizer::Tokenizer;
use tokio::sync::mpsc;

use crate::error::ApiError;
use crate::job::{Event, Job, ModelHandle, Summary};

/// A running worker: the handle requests use, and its thread.
pub struct Worker {
    pub handle: Arc<ModelHandle>,
    /// Joins once every handle is dropped and the queue is drained.
    pub thread: std::thread::JoinHandle<()>,
}

/// Opens the model at `path` with its tokenizer (from the GGUF metadata, or the Hugging Face folder's files) and
/// starts its worker. Blocking: call it from `spawn_blocking`.
pub fn load(id: &str, path: &Path, cfg: WorkerConfig) -> Result<Worker, ApiError> {
    let t0 = Instant::now();
    let opts = hearth_engine::models::OpenOptions {
        device: cfg.device,
        progress: None,
    };
    let model = Model::open_with(path, &opts).map_err(|e| match e {
        hearth_engine::Error::OutOfMemory(m) => ApiError::new(
            crate::error::Kind::InsufficientStorage,
            format!("cannot load model {id}: {m}"),
        ),
        e => ApiError::internal(format!("cannot load model {id}: {e}")),
    })?;
    tracing::info!(model = %id, device = %model.device.reason, "model device");
    let tokenizer = match &model.gguf {
        Some(g) => Tokenizer::from_gguf(g),
        None => Tokenizer::from_hf_dir(&model.path),
    }
    .map_err(|e| ApiError::internal(format!("cannot load the tokenizer of model {id}: {e}")))?;
    let w = start(id.to_string(), model, Arc::new(tokenizer), cfg)?;
    tracing::info!(model = %id, ms = t0.elapsed().as_millis() as u64, "model loaded");
    Ok(w)
}

/// Starts the worker thread of an opened model.
pub fn start(
    id: String,
    model: Model,
    tokenizer: Arc<Tokenizer>,
    cfg: WorkerConfig,
) -> Result<Worker, ApiError> {
    // Admission is decided by the in-flight count (running plus waiting, see `ModelHandle::submit`); the
    // channel only needs room for that many.
    let max_in_flight = cfg.max_seqs.max(1) + cfg.queue_depth.max(1);
    let (tx, rx) = mpsc::channel(max_in_flight);
    let in_flight = Arc::new(AtomicUsize::new(0));
    let handle = Arc::new(ModelHandle::new(
        id.clone(),
        tokenizer.clone(),
        model.config.context_len,
        model.config.vocab,
        max_in_flight,
        tx,
        in_flight.clone(),
    ));
    // Built here, so a KV pool the device cannot hold fails the load instead of the worker.
    let eng = Engine::new(&model, &cfg)?;
    let thread = std::thread::Builder::new()
        .name(format!("hearth-{id}"))
        .spawn(move || run(id, model, tokenizer, cfg, rx, in_flight, eng))
        .map_err(|e| ApiError::internal(format!("cannot start a worker thread: {e}")))?;
    Ok(Worker { handle, thread })
}

/// Settings of a model's worker.
#[derive(Clone, Copy, Debug)]
pub struct WorkerConfig {
    /// Jobs queued before requests get 429.
    pub queue_depth: usize,
    /// Positions per KV block.
    pub block_size: usize,
    /// Tokens one step may run (all sequences together).
    pub max_batch_tokens: usize,
    /// Sequences running at once.
    pub max_seqs: usize,
    /// The device models run on (resolved: never `Auto` once the server has started).
    pub device: hearth_engine::backend::Device,
}

impl WorkerConfig {
    pub fn from_config(c: &crate::config::ServerConfig) -> WorkerConfig {
        WorkerConfig {
            queue_depth: c.queue_depth,
            block_size: c.kv_block_size.max(1),
            max_batch_tokens: c.max_batch_tokens.max(1),
            max_seqs: c.max_seqs.max(1),
            device: c.device,
        }
    }
}

/// One admitted job.
struct Active {
    job: Job,
    stepper: TokenStepper<Arc<Tokenizer>>,
    queue_time: Duration,
    admitted: Instant,
    first_token: Option<Instant>,
    /// Prompt tokens found in the prefix cache at first admission.
    cached: Option<usize>,
}

/// The worker's per-model generation state (rebuilt after a panic).
struct Engine {
    sched: Scheduler,
    kv: PagedKv,
    batch: Batch,
    active: HashMap<SeqId, Active>,
    next_id: SeqId,
    /// One logits row for each sampling thread (a stepper edits its row in place).
    rows: Vec<Vec<f32>>,
    /// A greedy step's logit biases by row, and the tokens the model picked.
    bias: RowBias,
    picks: Vec<u32>,
    clock: StepClock,
}

/// Where the worker's steps spend their time (the model's forward pass, with the logits' copy to the host,
/// against sampling and sending tokens), logged at debug level every [`StepClock::EVERY`] steps: the first
/// thing to look at when many streams decode slower than the GPU's kernels add up to.
#[derive(Default)]
struct StepClock {
    steps: u32,
    rows: usize,
    forward: std::time::Duration,
    sample: std::time::Duration,
}

impl StepClock {
    const EVERY: u32 = 32;

    fn add(
        &mut self,
        model: &str,
        rows: usize,
        forward: std::time::Duration,
        sample: std::time::Duration,
    ) {
        self.steps += 1;
        self.rows += rows;
        self.forward += forward;
        self.sample += sample;
        if self.steps == Self::EVERY {
            let per = |d: std::time::Duration| d.as_secs_f64() * 1e3 / self.steps as f64;
            tracing::debug!(
                model,
                rows_per_step = self.rows as f64 / self.steps as f64,
                forward_ms = per(self.forward),
                sample_ms = per(self.sample),
                "step times (means over the last {} steps)",
                self.steps
            );
            // With HEARTH_CUDA_PROFILE=1, the GPU's per-kernel times over the same steps (graphs are off then,
            // so the steps run slower than they otherwise would).
            if let Some(report) = hearth_engine::backend::device::profile_report() {
                tracing::info!(
                    model,
                    "GPU kernel times over the last {} steps:\n{report}",
                    self.steps
                );
            }
            *self = StepClock::default();
        }
    }
}

impl Engine {
    /// The worker's state; fails when the device cannot hold the KV pool.
    fn new(model: &Model, cfg: &WorkerConfig) -> Result<Engine, ApiError> {
        let c = &model.config;
        let n_blocks = crate::job::kv_pool_tokens(c.context_len).div_ceil(cfg.block_size);
        let key = model
            .path
            .to_string_lossy()
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
            });
        Ok(Engine {
            sched: Scheduler::new(SchedulerConfig {
                max_batch_tokens: cfg.max_batch_tokens,
                max_seqs: cfg.max_seqs,
                block_size: cfg.block_size,
                n_blocks,
                model_key: key,
            }),
            kv: model.new_kv(cfg.block_size, n_blocks).map_err(|e| {
                ApiError::new(
                    crate::error::Kind::InsufficientStorage,
                    format!("cannot allocate the KV cache: {e}"),
                )
            })?,
            batch: model.new_batch(cfg.max_batch_tokens.max(cfg.max_seqs)),
            active: HashMap::new(),
            next_id: 1,
            rows: vec![vec![0.0; c.vocab]],
            bias: RowBias::default(),
            picks: Vec::new(),
            clock: StepClock::default(),
        })
    }
}

/// Rows a sampling thread takes at least: below this, threads cost more than they save.
const ROWS_PER_SAMPLING_THREAD: usize = 8;

/// Whether every row this step samples is greedy (its stepper's [`TokenStepper::greedy_bias`]): then the
/// model picks the tokens where the logits are (on a GPU, one id a row crosses to the host instead of the
/// vocabulary's logits, and no CPU thread scans them), and `bias` gets each sampled row's logit biases.
fn greedy_biases(
    items: &[hearth_engine::sched::PlanItem],
    active: &HashMap<SeqId, Active>,
    bias: &mut RowBias,
) -> bool {
    bias.clear();
    let mut any = false;
    for it in items.iter().filter(|it| it.sample) {
        match active.get(&it.seq).map(|a| a.stepper.greedy_bias()) {
            Some(Some(b)) => bias.push_row(b),
            Some(None) => return false,
            // The job is gone (its row is computed and dropped).
            None => bias.push_row(&[]),
        }
        any = true;
    }
    any
}

/// The greedy counterpart of [`sample_rows`]: each sampling item's stepper takes the token the model picked
/// for its row (`picks` in the sampling items' order).
fn picked_rows(
    active: &mut HashMap<SeqId, Active>,
    sched: &Scheduler,
    items: &[hearth_engine::sched::PlanItem],
    picks: &[u32],
) -> Vec<Option<hearth_engine::Result<hearth_engine::generate::Step>>> {
    let mut row = 0;
    items
        .iter()
        .map(|it| {
            if !it.sample {
                return None;
            }
            let id = picks[row];
            row += 1;
            let a = active.get_mut(&it.seq)?;
            Some(
                a.stepper
                    .step_chosen(id, sched.tokens(it.seq).unwrap_or(&[])),
            )
        })
        .collect()
}

/// Runs each sampling item's stepper on its logits row (`logits` holds the sampling items' rows in plan
/// order); the result per plan item, None where it does not sample or its job is gone. A step of many rows
/// (a batch of streams) samples on several threads: each row's sampler and detokenizer are its own, and with
/// a 49k vocabulary a row cost about 55 µs on the H200 machine's CPU (64 rows: 3.5 ms a step on one thread,
/// 1.2 ms on several; docs/benchmarks.md).
fn sample_rows(
    (active, sched, rows): (&mut HashMap<SeqId, Active>, &Scheduler, &mut Vec<Vec<f32>>),
    items: &[hearth_engine::sched::PlanItem],
    logits: &[f32],
    vocab: usize,
) -> Vec<Option<hearth_engine::Result<hearth_engine::generate::Step>>> {
    let mut results: Vec<_> = items.iter().map(|_| None).collect();
    let mut by_seq: HashMap<SeqId, &mut Active> = active.iter_mut().map(|(k, a)| (*k, a)).collect();
    // (plan item, its logits row, its job, its tokens so far)
    let mut work = Vec::new();
    let mut row_i = 0;
    for (i, it) in items.iter().enumerate() {
        if !it.sample {
            continue;
        }
        if let Some(a) = by_seq.remove(&it.seq) {
            let history = sched.tokens(it.seq).unwrap_or(&[]);
            work.push((i, &logits[row_i * vocab..(row_i + 1) * vocab], a, history));
        }
        row_i += 1;
    }
    let parallel = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = (work.len() / ROWS_PER_SAMPLING_THREAD).clamp(1, parallel);
    while rows.len() < threads {
        rows.push(vec![0.0; vocab]);
    }
    let run = |chunk: &mut [(usize, &[f32], &mut Active, &[u32])], row: &mut Vec<f32>| {
        chunk
            .iter_mut()
            .map(|(i, src, a, history)| {
                row.clear();
                row.extend_from_slice(src);
                (*i, a.stepper.step(row, history))
            })
            .collect::<Vec<_>>()
    };
    if threads == 1 {
        for (i, st) in run(&mut work, &mut rows[0]) {
            results[i] = Some(st);
        }
        return results;
    }
    let per = work.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = work
            .chunks_mut(per)
            .zip(rows.iter_mut())
            .map(|(chunk, row)| scope.spawn(move || run(chunk, row)))
            .collect();
        for h in handles {
            for (i, st) in h.join().expect("a sampling thread panicked") {
                results[i] = Some(st);
            }
        }
    });
    results
}

/// The worker loop: steps until the queue closes and nothing is left to run.
fn run(
    id: String,
    model: Model,
    tok: Arc<Tokenizer>,
    cfg: WorkerConfig,
    mut rx: mpsc::Receiver<Job>,
    in_flight: Arc<AtomicUsize>,
    mut eng: Engine,
) {
    let mut open = true;
    loop {
        // Intake: block while idle, otherwise take whatever has arrived.
        if eng.active.is_empty() {
            if !open {
                break;
            }
            match rx.blocking_recv() {
                Some(job) => admit(&id, &model, &tok, &mut eng, job, &in_flight),
                None => break,
            }
        }
        loop {
            match rx.try_recv() {
                Ok(job) => admit(&id, &model, &tok, &mut eng, job, &in_flight),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        if eng.active.is_empty() {
            continue;
        }
        let outcome = catch_unwind(AssertUnwindSafe(|| step(&id, &model, &mut eng, &in_flight)));
        if let Err(panic) = outcome {
            let what = panic_message(panic.as_ref());
            tracing::error!(model = %id, panic = %what, "generation step panicked; failing the sequences in flight");
            for (_, a) in eng.active.drain() {
                in_flight.fetch_sub(1, Ordering::SeqCst);
                let _ = a.job.events.send(Event::Failed(ApiError::internal(format!(
                    "internal error while generating: {what}"
                ))));
            }
            eng = match Engine::new(&model, &cfg) {
                Ok(e) => e,
                Err(e) => {
                    tracing::error!(model = %id, error = %e.message, "cannot rebuild the worker; unloading");
                    break;
                }
            };
        }
    }
    tracing::info!(model = %id, "model unloaded");
}

/// Takes a new job: reports it started, scores its prompt if asked, and queues it in the scheduler.
fn admit(
    id: &str,
    model: &Model,
    tok: &Arc<Tokenizer>,
    eng: &mut Engine,
    job: Job,
    in_flight: &AtomicUsize,
) {
    let queue_time = job.enqueued.elapsed();
    let end = |ev: Option<Event>| {
        in_flight.fetch_sub(1, Ordering::SeqCst);
        if let Some(ev) = ev {
            let _ = job.events.send(ev);
        }
    };
    if job.events.is_closed() {
        tracing::info!(request_id = %job.request_id, model = %id, "client went away while queued; job skipped");
        return end(None);
    }
    let _ = job.events.send(Event::Started { queue_time });
    if job.prompt.is_empty() {
        return end(Some(Event::Failed(ApiError::bad_param(
            "prompt",
            "the prompt is empty",
        ))));
    }
    if let Err(e) = job.options.sampling.validate() {
        return end(Some(Event::Failed(e.into())));
    }
    let mut summary = Summary {
        finish: Finish::Length,
        prompt_tokens: job.prompt.len(),
        cached_tokens: 0,
        completion_tokens: 0,
        queue_time,
        prefill: Duration::ZERO,
        decode: Duration::ZERO,
    };
    if let Some(top_n) = job.prompt_logprobs {
        // Scoring runs on its own state, between steps (lm-evaluation-harness traffic is rarely mixed).
        let t0 = Instant::now();
        match prompt_logprobs(model, &job.prompt, top_n) {
            Ok(lps) => {
                summary.prefill = t0.elapsed();
                if job.events.send(Event::PromptLogprobs(lps)).is_err() {
                    return end(None);
                }
            }
            Err(e) => return end(Some(Event::Failed(e.into()))),
        }
    }
    if job.score_only {
        log_done(id, &job.request_id, &summary);
        return end(Some(Event::Done(summary)));
    }
    let c = &model.config;
    let seq = eng.next_id;
    eng.next_id += 1;
    let max_new = job.options.max_tokens.unwrap_or(usize::MAX);
    if let Err(e) = eng
        .sched
        .add(seq, job.prompt.clone(), max_new, c.context_len)
    {
        let err = match e {
            RequestError::PromptTooLong { .. }
            | RequestError::ExceedsKvPool { .. }
            | RequestError::EmptyPrompt => ApiError::bad_request(e.to_string()),
            RequestError::DuplicateId(_) => ApiError::internal(e.to_string()),
        };
        return end(Some(Event::Failed(err)));
    }
    let stepper = TokenStepper::new(
        tok.clone(),
        &job.options,
        c.vocab,
        job.prompt.len(),
        c.context_len,
    );
    eng.active.insert(
        seq,
        Active {
            job,
            stepper,
            queue_time,
            admitted: Instant::now(),
            first_token: None,
            cached: None,
        },
    );
}

/// One scheduler step: plan, forward, sample, update.
fn step(id: &str, model: &Model, eng: &mut Engine, in_flight: &AtomicUsize) {
    // Clients that went away: cancel now, freeing their blocks.
    let gone: Vec<SeqId> = eng
        .active
        .iter()
        .filter(|(_, a)| a.job.events.is_closed())
        .map(|(&s, _)| s)
        .collect();
    for seq in gone {
        eng.sched.cancel(seq);
        if let Some(a) = eng.active.remove(&seq) {
            tracing::info!(request_id = %a.job.request_id, model = %id, "client went away; generation cancelled");
            in_flight.fetch_sub(1, Ordering::SeqCst);
        }
    }
    if !eng.sched.has_work() {
        return;
    }
    let plan = eng.sched.schedule();
    for r in &plan.rejected {
        if let Some(a) = eng.active.remove(&r.seq) {
            in_flight.fetch_sub(1, Ordering::SeqCst);
            let _ = a
                .job
                .events
                .send(Event::Failed(ApiError::bad_request(r.error.to_string())));
        }
    }
    for c in &plan.copies {
        eng.kv.copy_block(c.src, c.dst);
    }
    if plan.items.is_empty() {
        return;
    }
    let inputs: Vec<SeqInput> = plan.items.iter().map(|it| it.input()).collect();
    let vocab = model.config.vocab;
    let greedy = greedy_biases(&plan.items, &eng.active, &mut eng.bias);
    let t_forward = Instant::now();
    let forward = if greedy {
        let (batch, kv, bias, picks) = (&mut eng.batch, &mut eng.kv, &eng.bias, &mut eng.picks);
        model
            .forward_batch_greedy(batch, kv, &inputs, bias, picks)
            .map(|()| &[][..])
    } else {
        model.forward_batch(&mut eng.batch, &mut eng.kv, &inputs)
    };
    let logits = match forward {
        Ok(l) => l,
        Err(e) => {
            // A bad step fails the sequences in it; the rest go on.
            let err: ApiError = e.into();
            for it in &plan.items {
                eng.sched.cancel(it.seq);
                if let Some(a) = eng.active.remove(&it.seq) {
                    in_flight.fetch_sub(1, Ordering::SeqCst);
                    let _ = a.job.events.send(Event::Failed(err.clone()));
                }
            }
            return;
        }
    };
    for it in &plan.items {
        if let (Some(n), Some(a)) = (it.cached_tokens, eng.active.get_mut(&it.seq)) {
            a.cached.get_or_insert(n);
        }
    }
    let t_sample = Instant::now();
    let mut sampled = if greedy {
        picked_rows(&mut eng.active, &eng.sched, &plan.items, &eng.picks)
    } else {
        sample_rows(
            (&mut eng.active, &eng.sched, &mut eng.rows),
            &plan.items,
            logits,
            vocab,
        )
    };
    let mut outputs = Vec::with_capacity(plan.items.len());
    let mut finished: Vec<(SeqId, Finish)> = Vec::new();
    for (i, it) in plan.items.iter().enumerate() {
        if !it.sample {
            outputs.push(StepOutput {
                seq: it.seq,
                token: None,
                finished: false,
            });
            continue;
        }
        let (Some(a), Some(st)) = (eng.active.get_mut(&it.seq), sampled[i].take()) else {
            outputs.push(StepOutput {
                seq: it.seq,
                token: None,
                finished: true,
            });
            continue;
        };
        let st = match st {
            Ok(st) => st,
            Err(e) => {
                finished.push((it.seq, Finish::Cancelled));
                let _ = a.job.events.send(Event::Failed(e.into()));
                outputs.push(StepOutput {
                    seq: it.seq,
                    token: None,
                    finished: true,
                });
                continue;
            }
        };
        a.first_token.get_or_insert_with(Instant::now);
        if st.id.is_some() || !st.text.is_empty() {
            let ev = Event::Token {
                id: st.id.unwrap_or(a.stepper.last_id),
                text: st.text,
                logprobs: st.logprobs,
            };
            if a.job.events.send(ev).is_err() {
                finished.push((it.seq, Finish::Cancelled));
                outputs.push(StepOutput {
                    seq: it.seq,
                    token: None,
                    finished: true,
                });
                continue;
            }
        }
        if let Some(f) = st.finish {
            finished.push((it.seq, f));
        }
        outputs.push(StepOutput {
            seq: it.seq,
            token: st.id,
            finished: st.finish.is_some(),
        });
    }
    let rows = inputs.iter().map(|i| i.tokens.len()).sum();
    eng.clock
        .add(id, rows, t_sample - t_forward, t_sample.elapsed());
    for done in eng.sched.update(&outputs) {
        let f = match done.reason {
            FinishReason::ContextFull => Finish::ContextFull,
            FinishReason::MaxNewTokens | FinishReason::MissingToken => Finish::Length,
        };
        finished.push((done.seq, f));
    }
    for (seq, f) in finished {
        let Some(a) = eng.active.remove(&seq) else {
            continue;
        };
        in_flight.fetch_sub(1, Ordering::SeqCst);
        if f == Finish::Cancelled {
            continue;
        }
        let first = a.first_token.unwrap_or_else(Instant::now);
        let summary = Summary {
            finish: f,
            prompt_tokens: a.job.prompt.len(),
            cached_tokens: a.cached.unwrap_or(0).min(a.job.prompt.len()),
            completion_tokens: a.stepper.generated,
            queue_time: a.queue_time,
            prefill: first.duration_since(a.admitted),
            decode: first.elapsed(),
        };
        log_done(id, &a.job.request_id, &summary);
        let _ = a.job.events.send(Event::Done(summary));
    }
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic".to_string()
    }
}

fn log_done(id: &str, request_id: &str, s: &Summary) {
    let decode_s = s.decode.as_secs_f64();
    let tps = if decode_s > 0.0 {
        s.completion_tokens as f64 / decode_s
    } else {
        0.0
    };
    tracing::info!(
        request_id = %request_id,
        model = %id,
        queue_ms = ms(s.queue_time),
        prompt_tokens = s.prompt_tokens,
        cached_tokens = s.cached_tokens,
        prefill_ms = ms(s.prefill),
        decode_ms = ms(s.decode),
        completion_tokens = s.completion_tokens,
        tokens_per_s = format!("{tps:.1}"),
        finish = ?s.finish,
        "job done"
    );
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e4).round() / 10.0
}
