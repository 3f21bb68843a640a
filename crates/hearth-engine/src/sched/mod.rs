//! The scheduler: continuous batching with chunked prefill over the paged KV cache. It decides, and only it
//! decides, which tokens of which sequences run in each step.
//!
//! # Contract
//!
//! The engine thread loops:
//!
//! ```text
//! sched.add(id, prompt, max_new_tokens, context_len)?   // any time between steps; cancel(id) likewise
//! while sched.has_work() {
//!     let plan = sched.schedule();      // what runs this step
//!     // 1. report plan.rejected (errors) and note plan.preempted (informational: they will rerun)
//!     // 2. storage: perform every plan.copies (src -> dst) before the forward
//!     // 3. forward: for each item, run item.tokens at positions item.start_pos.., writing their KV into
//!     //    the slots of item.block_table and attending to positions 0..item.start_pos + item.tokens.len()
//!     // 4. sample the last position of each item with item.sample
//!     let done = sched.update(&outputs); // apply the step: one StepOutput per item you have news for
//!     // 5. report done (sequences the scheduler finished: max_new_tokens or context full)
//! }
//! ```
//!
//! - `schedule()` runs every decoding sequence's next token first, then chunks of prompts still being
//!   prefilled (oldest first) within `max_batch_tokens`, then admits waiting sequences in arrival order while
//!   blocks and `max_seqs` allow. When a running sequence cannot get a slot, the newest running sequence is
//!   preempted: its blocks are freed and it goes back to the front of the waiting queue; when readmitted it
//!   recomputes its prompt and the tokens generated so far (mostly from the prefix cache). The oldest
//!   sequence is never preempted, so every sequence finishes. A sequence is rejected only when it alone needs
//!   more blocks than the whole pool.
//! - `update()` advances each item's sequence past the tokens it ran, commits the new KV to the prefix cache,
//!   appends sampled tokens and frees finished sequences.
//!
//! # Who stops a sequence
//!
//! The caller owns every content-based stop: EOS and stop tokens, stop strings, client cancellation
//! (`cancel`, or `finished: true` in the step's output). The scheduler owns the two count-based stops, which it
//! can check without looking at tokens: `max_new_tokens` generated, and the context being full (the sequence
//! holds `context_len` tokens). It reports those in `update`'s return value as [`Finished`]. A caller's
//! `finished` wins: such a sequence is removed and not reported back.
//!
//! # Cached tokens
//!
//! [`PlanItem::cached_tokens`] is `Some(n)` on the first item after a sequence is (re)admitted: positions
//! `0..n` were found in the prefix cache and are not computed; that item starts at `start_pos == n`. The
//! count for usage reporting (prompt tokens reused at first admission) stays available from
//! [`Scheduler::cached_tokens`]. When the whole prompt is cached, `n == prompt_len - 1`: the last prompt token
//! is always computed so that its logits exist.
//!
//! # Copies
//!
//! [`StepPlan::copies`] come from copy-on-write: a sequence about to write into a block that another sequence
//! or the prefix cache may read gets a fresh block instead, and the storage must copy `src` into `dst` (whole
//! block, all layers, K and V) before the step's forward runs. The item's `block_table` already names `dst`.
//! Every plan's copies must be performed, even when its forward is then abandoned: a plan may be dropped
//! (`schedule()` again without `update()`; its tokens are simply scheduled again) but its copies may not.

mod scheduler;

pub use scheduler::Scheduler;

use crate::kv::{BlockCopy, BlockId};

/// A sequence's id, chosen by the caller (unique among sequences the scheduler holds).
pub type SeqId = u64;

/// Sizes and limits of one model's scheduler.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SchedulerConfig {
    /// Tokens per step, over all sequences (decode tokens count 1 each). Bounds a step's latency.
    pub max_batch_tokens: usize,
    /// Sequences running at once. Clamped to `max_batch_tokens`, so every running sequence can always get a
    /// token into a step and the oldest prompt always advances.
    pub max_seqs: usize,
    /// Token slots per KV block.
    pub block_size: usize,
    /// KV blocks in the pool (the storage must hold as many).
    pub n_blocks: usize,
    /// Seeds the prefix cache's hashes; distinct per model (and KV layout).
    pub model_key: u64,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            max_batch_tokens: 256,
            max_seqs: 64,
            block_size: 16,
            n_blocks: 1024,
            model_key: 0,
        }
    }
}

/// One sequence's share of a step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanItem {
    /// The sequence this item advances.
    pub seq: SeqId,
    /// The tokens to run: the sequence's tokens `start_pos..start_pos + tokens.len()` (never empty).
    pub tokens: Vec<u32>,
    /// Position of `tokens[0]`; positions before it already hold valid KV in `block_table`.
    pub start_pos: usize,
    /// The sequence's block table, covering at least `start_pos + tokens.len()` positions.
    pub block_table: Vec<BlockId>,
    /// This item ends at the sequence's last known token and a new token is wanted: sample the logits of
    /// its last position and pass the token to `update`.
    pub sample: bool,
    /// `Some(n)` on the first item after (re)admission: `n` leading positions came from the prefix cache.
    pub cached_tokens: Option<usize>,
}

impl PlanItem {
    /// This item as the batched forward's input; logits are needed only where it samples.
    pub fn input(&self) -> crate::models::SeqInput<'_> {
        crate::models::SeqInput {
            tokens: &self.tokens,
            start: self.start_pos,
            table: &self.block_table,
            logits: if self.sample {
                crate::models::Logits::Last
            } else {
                crate::models::Logits::None
            },
        }
    }

    /// Position after the last token of this item (the sequence's KV length once the step ran).
    pub fn end_pos(&self) -> usize {
        self.start_pos + self.tokens.len()
    }
}

/// What one step runs, and what happened while planning it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StepPlan {
    /// Decodes first, then prefill chunks, then newly admitted sequences.
    pub items: Vec<PlanItem>,
    /// Block copies to perform, in order, before the forward.
    pub copies: Vec<BlockCopy>,
    /// Sequences preempted while planning (back in the waiting queue; they will recompute). Informational.
    pub preempted: Vec<SeqId>,
    /// Sequences removed because they cannot fit the KV pool; report each as an error.
    pub rejected: Vec<Rejected>,
}

impl StepPlan {
    /// Tokens over all items.
    pub fn num_tokens(&self) -> usize {
        self.items.iter().map(|i| i.tokens.len()).sum()
    }
}

/// A sequence the scheduler gave up on, with the reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejected {
    /// The sequence, already removed from the scheduler.
    pub seq: SeqId,
    /// Why; its message names the numbers (tokens, blocks needed, pool size).
    pub error: RequestError,
}

/// The caller's news about one plan item after the step ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StepOutput {
    /// The plan item's sequence.
    pub seq: SeqId,
    /// The sampled token, for items with `sample` (ignored otherwise).
    pub token: Option<u32>,
    /// The caller stops the sequence (EOS, stop string, client gone): it is removed after this step's KV is
    /// committed to the prefix cache.
    pub finished: bool,
}

/// A sequence the scheduler finished in `update`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Finished {
    /// The sequence, already removed from the scheduler.
    pub seq: SeqId,
    /// Which limit it reached.
    pub reason: FinishReason,
}

/// Why the scheduler finished a sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishReason {
    /// `max_new_tokens` tokens were generated (also: `max_new_tokens == 0` and the prompt has been run).
    MaxNewTokens,
    /// The sequence holds `context_len` tokens.
    ContextFull,
    /// A sampling item got no token and was not marked finished (a caller bug); the sequence was dropped.
    MissingToken,
}

/// Why a sequence cannot be scheduled.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// `add` with an id the scheduler still holds.
    #[error("sequence id {0} is already scheduled")]
    DuplicateId(SeqId),
    /// Nothing to run: there would be no logits to sample from.
    #[error("the prompt is empty")]
    EmptyPrompt,
    /// The prompt fills the context (or exceeds it), so no token could be generated.
    #[error(
        "the prompt has {prompt_len} tokens, which leaves no room in the context of {context_len}"
    )]
    PromptTooLong {
        prompt_len: usize,
        context_len: usize,
    },
    /// The sequence alone needs more KV blocks than the pool holds (at `add` for the prompt, or in a plan
    /// when it grows past the pool); it could never run to completion.
    #[error("{tokens} tokens need {needed_blocks} KV blocks; the pool holds {n_blocks}")]
    ExceedsKvPool {
        tokens: usize,
        needed_blocks: usize,
        n_blocks: usize,
    },
}
