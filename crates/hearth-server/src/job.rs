//! The contract between the API handlers and a model's worker thread.
//!
//! A handler tokenizes the request (with the model's tokenizer from its [`ModelHandle`]), builds a [`Job`] and
//! submits it; the worker runs jobs one at a time (the batching scheduler will replace that) and streams
//! [`Event`]s back on the job's channel. Dropping the receiver (a client that went away) cancels the job at its
//! next token.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hearth_engine::generate::{Finish, GenerateOptions};
use hearth_engine::sample::TokenLogprobs;
use hearth_engine::tokenizer::Tokenizer;
use tokio::sync::mpsc;

use crate::error::{ApiError, Kind};

/// One generation request for a worker.
pub struct Job {
    pub request_id: String,
    /// The prompt, already tokenized (BOS included as the model wants).
    pub prompt: Vec<u32>,
    pub options: GenerateOptions,
    /// Also score the prompt's tokens (OpenAI `echo` with `logprobs`), with this many alternatives each.
    pub prompt_logprobs: Option<usize>,
    /// Generate nothing: only the prompt logprobs (`max_tokens: 0` with `echo`).
    pub score_only: bool,
    pub events: mpsc::UnboundedSender<Event>,
    pub enqueued: Instant,
}

/// What a worker reports about a job, in this order: `Started`, optionally `PromptLogprobs`, any number of
/// `Token`s, then exactly one of `Done` or `Failed`.
#[derive(Debug)]
pub enum Event {
    Started {
        queue_time: Duration,
    },
    /// One entry per prompt token; the first is None (nothing precedes it).
    PromptLogprobs(Vec<Option<TokenLogprobs>>),
    Token {
        id: u32,
        /// Text that became final with this token; may be empty.
        text: String,
        logprobs: Option<TokenLogprobs>,
    },
    Done(Summary),
    Failed(ApiError),
}

/// Counts and timings of a finished job.
#[derive(Clone, Debug)]
pub struct Summary {
    pub finish: Finish,
    pub prompt_tokens: usize,
    /// Prompt tokens whose KV entries were reused.
    pub cached_tokens: usize,
    pub completion_tokens: usize,
    pub queue_time: Duration,
    pub prefill: Duration,
    pub decode: Duration,
}

/// A loaded model as the handlers see it: what they need to build jobs, and the queue to submit them to.
pub struct ModelHandle {
    /// The registry id the client asked for (after alias resolution).
    pub id: String,
    pub tokenizer: Arc<Tokenizer>,
    pub context_len: usize,
    pub vocab: usize,
    jobs: mpsc::Sender<Job>,
    /// Most jobs queued or running at once: `max_seqs` running plus `queue_depth` waiting.
    max_in_flight: usize,
    /// Jobs queued or running: a model with none is idle and may be evicted.
    pub in_flight: Arc<AtomicUsize>,
}

impl ModelHandle {
    pub fn new(
        id: String,
        tokenizer: Arc<Tokenizer>,
        context_len: usize,
        vocab: usize,
        max_in_flight: usize,
        jobs: mpsc::Sender<Job>,
        in_flight: Arc<AtomicUsize>,
    ) -> ModelHandle {
        ModelHandle {
            id,
            tokenizer,
            context_len,
            vocab,
            jobs,
            max_in_flight,
            in_flight,
        }
    }

    /// Queues a job; a full queue is a 429, a stopped worker a 503. The queue is full when `max_seqs` jobs
    /// run and `queue_depth` more wait, counted here rather than by the channel's room: the worker moves jobs
    /// out of the channel into its scheduler between steps, so the channel alone would refuse or accept by
    /// the timing of a step.
    pub fn submit(&self, job: Job) -> Result<(), ApiError> {
        let before = self.in_flight.fetch_add(1, Ordering::SeqCst);
        if before >= self.max_in_flight {
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            return Err(ApiError::new(
                Kind::Overloaded,
                format!(
                    "model {} has too many requests queued; retry later",
                    self.id
                ),
            ));
        }
        match self.jobs.try_send(job) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.in_flight.fetch_sub(1, Ordering::SeqCst);
                Err(match e {
                    mpsc::error::TrySendError::Full(_) => ApiError::new(
                        Kind::Overloaded,
                        format!(
                            "model {} has too many requests queued; retry later",
                            self.id
                        ),
                    ),
                    mpsc::error::TrySendError::Closed(_) => ApiError::new(
                        Kind::Unavailable,
                        format!("model {} is unloading; retry", self.id),
                    ),
                })
            }
        }
    }

    /// Checks that a prompt leaves room for at least one generated token; the message gives both counts.
    pub fn check_prompt_len(&self, prompt_tokens: usize) -> Result<(), ApiError> {
        if prompt_tokens >= self.context_len {
            return Err(ApiError::bad_param(
                "messages",
                format!(
                    "the prompt is {prompt_tokens} tokens but model {} has a context of {} tokens",
                    self.id, self.context_len
                ),
            ));
        }
        Ok(())
    }
}

/// KV pool size, in token positions, of a loaded model: room for at least one full context, and for 16k
/// positions of concurrent sequences where the context is shorter (up to four contexts' worth). The registry
/// counts this in its memory budget.
pub fn kv_pool_tokens(context_len: usize) -> usize {
    context_len.max(16_384.min(context_len.saturating_mul(4)))
}
