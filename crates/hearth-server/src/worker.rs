//! One OS thread per loaded model: it owns the model and one generation [`Session`], takes [`Job`]s from the
//! model's bounded queue and runs them one at a time, streaming [`Event`]s back.
//!
//! The session (its KV cache and the tokens the cache holds) is kept from one job to the next, so a follow-up
//! request whose prompt extends the previous one (the next turn of a chat) only computes its new tokens; the
//! reuse shows as `Summary::cached_tokens`.
//!
//! Cancellation: before a job starts and before each generated token is sent, the worker checks whether the
//! job's event receiver is gone (the client disconnected); if so it stops at once and takes the next job.
//!
//! Panics: each job runs inside `catch_unwind`. A panic is reported to the client as an internal error, logged,
//! and the session is replaced by a fresh one (its KV cache may be half-written); the model itself is only ever
//! read during generation, so it stays in service and the next job runs normally, without a reload.
//!
//! The thread ends when every sender of its queue is gone, i.e. when the registry and every request have
//! dropped the model's [`ModelHandle`]; the model's memory is freed then.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hearth_engine::generate::{prompt_logprobs, Finish, Session};
use hearth_engine::models::Model;
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
pub fn load(id: &str, path: &Path, queue_depth: usize) -> Result<Worker, ApiError> {
    let t0 = Instant::now();
    let model = Model::open(path)
        .map_err(|e| ApiError::internal(format!("cannot load model {id}: {e}")))?;
    let tokenizer = match &model.gguf {
        Some(g) => Tokenizer::from_gguf(g),
        None => Tokenizer::from_hf_dir(&model.path),
    }
    .map_err(|e| ApiError::internal(format!("cannot load the tokenizer of model {id}: {e}")))?;
    let w = start(id.to_string(), model, Arc::new(tokenizer), queue_depth)?;
    tracing::info!(model = %id, ms = t0.elapsed().as_millis() as u64, "model loaded");
    Ok(w)
}

/// Starts the worker thread of an opened model, with a queue of `queue_depth` jobs.
pub fn start(
    id: String,
    model: Model,
    tokenizer: Arc<Tokenizer>,
    queue_depth: usize,
) -> Result<Worker, ApiError> {
    let (tx, rx) = mpsc::channel(queue_depth.max(1));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let handle = Arc::new(ModelHandle::new(
        id.clone(),
        tokenizer.clone(),
        model.config.context_len,
        model.config.vocab,
        tx,
        in_flight.clone(),
    ));
    let thread = std::thread::Builder::new()
        .name(format!("hearth-{id}"))
        .spawn(move || run(id, model, tokenizer, rx, in_flight))
        .map_err(|e| ApiError::internal(format!("cannot start a worker thread: {e}")))?;
    Ok(Worker { handle, thread })
}

/// The worker loop: one job at a time until the queue closes.
fn run(
    id: String,
    model: Model,
    tok: Arc<Tokenizer>,
    mut rx: mpsc::Receiver<Job>,
    in_flight: Arc<AtomicUsize>,
) {
    let mut session = Session::new(&model);
    while let Some(job) = rx.blocking_recv() {
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            run_job(&id, &model, &mut session, &tok, &job)
        }));
        let last = match outcome {
            Ok(last) => last,
            Err(panic) => {
                let what = panic_message(panic.as_ref());
                tracing::error!(request_id = %job.request_id, model = %id, panic = %what, "generation panicked; resetting the model's session");
                session = Session::new(&model);
                Some(Event::Failed(ApiError::internal(format!(
                    "internal error while generating: {what}"
                ))))
            }
        };
        // The model is idle before the client hears the job ended, so a request the client sends next
        // never finds this model still busy.
        in_flight.fetch_sub(1, Ordering::SeqCst);
        if let Some(ev) = last {
            let _ = job.events.send(ev);
        }
    }
    tracing::info!(model = %id, "model unloaded");
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

/// Runs one job, streaming its events, and returns the last one (`Done` or `Failed`) for the caller to send
/// once the job is accounted as ended. A client already gone is skipped (None).
fn run_job(
    id: &str,
    model: &Model,
    session: &mut Session<'_>,
    tok: &Tokenizer,
    job: &Job,
) -> Option<Event> {
    let queue_time = job.enqueued.elapsed();
    if job.events.is_closed() {
        tracing::info!(request_id = %job.request_id, model = %id, "client went away while queued; job skipped");
        return None;
    }
    let _ = job.events.send(Event::Started { queue_time });
    match execute(model, session, tok, job, queue_time) {
        Ok(s) => {
            let decode_s = s.decode.as_secs_f64();
            let tps = if decode_s > 0.0 {
                s.completion_tokens as f64 / decode_s
            } else {
                0.0
            };
            tracing::info!(
                request_id = %job.request_id,
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
            Some(Event::Done(s))
        }
        Err(e) => {
            tracing::info!(request_id = %job.request_id, model = %id, error = %e, "job failed");
            Some(Event::Failed(e))
        }
    }
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e4).round() / 10.0
}

/// Prompt log-probabilities if asked, then generation unless the job only scores.
fn execute(
    model: &Model,
    session: &mut Session<'_>,
    tok: &Tokenizer,
    job: &Job,
    queue_time: Duration,
) -> Result<Summary, ApiError> {
    if job.prompt.is_empty() {
        return Err(ApiError::bad_param("prompt", "the prompt is empty"));
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
        let t0 = Instant::now();
        let lps = prompt_logprobs(model, &job.prompt, top_n)?;
        summary.prefill = t0.elapsed();
        if job.events.send(Event::PromptLogprobs(lps)).is_err() {
            summary.finish = Finish::Cancelled;
            return Ok(summary);
        }
    }
    if job.score_only {
        return Ok(summary);
    }
    let events = &job.events;
    let stats = session.generate(tok, &job.prompt, &job.options, &mut |t| {
        if events.is_closed() {
            return false;
        }
        events
            .send(Event::Token {
                id: t.id,
                text: t.text.to_string(),
                logprobs: t.logprobs.cloned(),
            })
            .is_ok()
    })?;
    summary.finish = stats.finish;
    summary.cached_tokens = stats.cached_tokens;
    summary.completion_tokens = stats.generated_tokens;
    summary.prefill += stats.prefill;
    summary.decode = stats.decode;
    Ok(summary)
}
