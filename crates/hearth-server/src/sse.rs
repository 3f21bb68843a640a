//! Running a job for a handler: submitting it, waiting for it to start, and turning its events into either one
//! collected result (a JSON body) or a stream of server-sent events.
//!
//! Cancellation is by ownership: the job's receiver lives in the handler future (non-streaming) or in the
//! response body's stream (streaming). When a client goes away, hyper drops that future or body, the receiver
//! goes with it, and the worker stops the job at its next token.

use std::convert::Infallible;
use std::time::{Duration, Instant};

use axum::response::sse::{Event as SseEvent, Sse};
use futures_util::stream::{self, Stream, StreamExt};
use hearth_engine::generate::{Finish, GenerateOptions};
use hearth_engine::sample::TokenLogprobs;
use tokio::sync::mpsc;

use crate::error::{ApiError, Kind};
use crate::job::{Event, Job, ModelHandle, Summary};

/// A submitted job's event channel.
pub type Events = mpsc::UnboundedReceiver<Event>;

/// What a handler asks a worker to do.
pub struct JobSpec {
    pub prompt: Vec<u32>,
    pub options: GenerateOptions,
    pub prompt_logprobs: Option<usize>,
    pub score_only: bool,
}

/// Queues the job on the model's worker (429 when its queue is full).
pub fn submit(handle: &ModelHandle, request_id: &str, spec: JobSpec) -> Result<Events, ApiError> {
    let (tx, rx) = mpsc::unbounded_channel();
    handle.submit(Job {
        request_id: request_id.to_string(),
        prompt: spec.prompt,
        options: spec.options,
        prompt_logprobs: spec.prompt_logprobs,
        score_only: spec.score_only,
        events: tx,
        enqueued: Instant::now(),
    })?;
    Ok(rx)
}

/// Waits until the worker takes the job up. A streaming handler calls this before it answers, so that a job
/// the worker refuses outright still gets a proper status code rather than an error inside a 200 stream.
pub async fn started(rx: &mut Events) -> Result<Duration, ApiError> {
    match rx.recv().await {
        Some(Event::Started { queue_time }) => Ok(queue_time),
        Some(Event::Failed(e)) => Err(e),
        Some(other) => Err(ApiError::internal(format!(
            "model worker sent {other:?} before starting the job"
        ))),
        None => Err(worker_gone()),
    }
}

fn worker_gone() -> ApiError {
    ApiError::internal("the model worker stopped before finishing the request")
}

/// A finish that a client should never see: the worker cancelled a job whose client is still there.
fn cancelled() -> ApiError {
    ApiError::new(
        Kind::Unavailable,
        "generation was cancelled by the server (shutting down or unloading the model); retry",
    )
}

/// One generated token, for log-probability reports.
#[derive(Clone, Debug)]
pub struct Generated {
    pub id: u32,
    pub logprobs: TokenLogprobs,
}

/// Everything a finished job produced.
#[derive(Debug)]
pub struct Collected {
    pub text: String,
    /// Tokens that came with log-probabilities (all of them, when the request asked for logprobs).
    pub tokens: Vec<Generated>,
    pub prompt_logprobs: Option<Vec<Option<TokenLogprobs>>>,
    pub summary: Summary,
}

/// Drains a job's events into one result. Dropping this future (a client that went away) cancels the job.
pub async fn collect(mut rx: Events) -> Result<Collected, ApiError> {
    let mut text = String::new();
    let mut tokens = Vec::new();
    let mut prompt_logprobs = None;
    while let Some(event) = rx.recv().await {
        match event {
            Event::Started { .. } => {}
            Event::PromptLogprobs(lp) => prompt_logprobs = Some(lp),
            Event::Token {
                id,
                text: t,
                logprobs,
            } => {
                text.push_str(&t);
                if let Some(logprobs) = logprobs {
                    tokens.push(Generated { id, logprobs });
                }
            }
            Event::Done(summary) => {
                if summary.finish == Finish::Cancelled {
                    return Err(cancelled());
                }
                return Ok(Collected {
                    text,
                    tokens,
                    prompt_logprobs,
                    summary,
                });
            }
            Event::Failed(e) => return Err(e),
        }
    }
    Err(worker_gone())
}

/// Logs a finished request with its counts, timings and speed. The request id is logged explicitly because a
/// stream finishes after the handler (and its tracing span) returned.
pub fn log_done(request_id: &str, model: &str, s: &Summary, finish: &str) {
    let decode_s = s.decode.as_secs_f64();
    let prefill_s = s.prefill.as_secs_f64();
    let new_prompt = s.prompt_tokens.saturating_sub(s.cached_tokens);
    tracing::info!(
        request_id,
        model,
        prompt_tokens = s.prompt_tokens,
        cached_tokens = s.cached_tokens,
        completion_tokens = s.completion_tokens,
        finish,
        queue_ms = s.queue_time.as_millis() as u64,
        prefill_ms = s.prefill.as_millis() as u64,
        decode_ms = s.decode.as_millis() as u64,
        prefill_tok_s = if prefill_s > 0.0 {
            (new_prompt as f64 / prefill_s).round()
        } else {
            0.0
        },
        decode_tok_s = if decode_s > 0.0 {
            (s.completion_tokens as f64 / decode_s * 10.0).round() / 10.0
        } else {
            0.0
        },
        "completed"
    );
}

/// How one API writes a job's events as server-sent events.
pub trait StreamFormat: Send + 'static {
    /// Events for one job event other than `Failed` (and `Done` with a cancelled finish, which arrives as an
    /// error). `Done` ends the stream after these.
    fn on_event(&mut self, event: Event) -> Vec<SseEvent>;
    /// The events that end a stream with an error after its headers went out.
    fn on_error(&mut self, error: ApiError) -> Vec<SseEvent>;
}

/// The body stream's state: owns the receiver, so dropping the body cancels the job.
struct Pump<F: StreamFormat> {
    rx: Events,
    format: F,
    finished: bool,
    request_id: String,
}

impl<F: StreamFormat> Drop for Pump<F> {
    fn drop(&mut self) {
        if !self.finished {
            tracing::info!(request_id = %self.request_id, "client went away mid-stream; generation cancelled");
        }
    }
}

/// A streaming response: `prelude` first, then the format's events for each job event until the job ends.
pub fn stream<F: StreamFormat>(
    rx: Events,
    format: F,
    prelude: Vec<SseEvent>,
    request_id: &str,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let pump = Pump {
        rx,
        format,
        finished: false,
        request_id: request_id.to_string(),
    };
    let body = stream::unfold(pump, |mut p| async move {
        if p.finished {
            return None;
        }
        let out = match p.rx.recv().await {
            Some(Event::Failed(e)) => {
                p.finished = true;
                p.format.on_error(e)
            }
            Some(Event::Done(s)) if s.finish == Finish::Cancelled => {
                p.finished = true;
                p.format.on_error(cancelled())
            }
            Some(event) => {
                p.finished = matches!(event, Event::Done(_));
                p.format.on_event(event)
            }
            None => {
                p.finished = true;
                p.format.on_error(worker_gone())
            }
        };
        Some((out, p))
    });
    let events = stream::iter(prelude)
        .chain(body.flat_map(stream::iter))
        .map(Ok);
    Sse::new(events)
}

/// An event whose data is `value` as JSON.
pub fn json_event(value: &serde_json::Value) -> SseEvent {
    SseEvent::default().data(value.to_string())
}

/// Seconds since the epoch, for `created` fields.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
