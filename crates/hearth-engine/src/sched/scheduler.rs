//! The scheduler's state and policy; the contract is in the module docs of [`crate::sched`].

use std::collections::{HashMap, VecDeque};

use super::{
    FinishReason, Finished, PlanItem, Rejected, RequestError, SchedulerConfig, SeqId, StepOutput,
    StepPlan,
};
use crate::kv::{BlockCopy, BlockId, BlockManager, CacheStats, SeqBlocks};

/// Continuous-batching scheduler of one model: owns the sequences, their order and the KV block pool's
/// bookkeeping. See [`crate::sched`] for the contract.
///
/// Invariant behind the fairness policy: every running sequence arrived before every waiting one (admission
/// is strictly first come, first served, and preemption returns the newest running sequence to the front of
/// the queue), so "newest running" is the lowest priority and the oldest sequence always progresses.
pub struct Scheduler {
    cfg: SchedulerConfig,
    kv: BlockManager,
    seqs: HashMap<SeqId, Seq>,
    /// Not running, in arrival order (preempted ones first, being older).
    waiting: VecDeque<SeqId>,
    /// Holding blocks, in arrival order.
    running: Vec<SeqId>,
    /// The last plan's items, applied by `update`.
    in_flight: Vec<InFlight>,
}

struct Seq {
    /// Prompt followed by the tokens generated so far.
    tokens: Vec<u32>,
    prompt_len: usize,
    max_new_tokens: usize,
    context_len: usize,
    /// `Some` while running.
    blocks: Option<SeqBlocks>,
    /// Prompt tokens reused from the prefix cache at first admission.
    first_cached: Option<usize>,
    preemptions: u32,
}

struct InFlight {
    seq: SeqId,
    n: usize,
    sample: bool,
}

/// A plan being built.
struct Draft {
    items: Vec<(PlanItem, Vec<BlockCopy>)>,
    budget: usize,
    preempted: Vec<SeqId>,
    rejected: Vec<Rejected>,
}

impl Scheduler {
    /// An empty scheduler with a pool of `cfg.n_blocks` blocks. Panics when a size is zero.
    pub fn new(mut cfg: SchedulerConfig) -> Scheduler {
        assert!(cfg.max_batch_tokens > 0 && cfg.max_seqs > 0, "empty step");
        assert!(cfg.block_size > 0 && cfg.n_blocks > 0, "empty KV pool");
        cfg.max_seqs = cfg.max_seqs.min(cfg.max_batch_tokens);
        Scheduler {
            kv: BlockManager::new(cfg.n_blocks, cfg.block_size, cfg.model_key),
            cfg,
            seqs: HashMap::new(),
            waiting: VecDeque::new(),
            running: Vec::new(),
            in_flight: Vec::new(),
        }
    }

    /// The configuration in effect (`max_seqs` clamped).
    pub fn config(&self) -> &SchedulerConfig {
        &self.cfg
    }

    /// Queues a sequence. `max_new_tokens` caps generated tokens (`usize::MAX`: until the context is full;
    /// 0: run the prompt only, e.g. for scoring); `context_len` caps prompt plus generated tokens. Fails at once
    /// for a duplicate id, an empty prompt, a prompt that leaves no room in the context, or one that alone
    /// needs more KV blocks than the pool has.
    pub fn add(
        &mut self,
        id: SeqId,
        prompt: Vec<u32>,
        max_new_tokens: usize,
        context_len: usize,
    ) -> Result<(), RequestError> {
        if self.seqs.contains_key(&id) {
            return Err(RequestError::DuplicateId(id));
        }
        if prompt.is_empty() {
            return Err(RequestError::EmptyPrompt);
        }
        let len = prompt.len();
        if len > context_len || (len == context_len && max_new_tokens > 0) {
            return Err(RequestError::PromptTooLong {
                prompt_len: len,
                context_len,
            });
        }
        self.check_fits(len)?;
        self.seqs.insert(
            id,
            Seq {
                tokens: prompt,
                prompt_len: len,
                max_new_tokens,
                context_len,
                blocks: None,
                first_cached: None,
                preemptions: 0,
            },
        );
        self.waiting.push_back(id);
        Ok(())
    }

    /// Removes a sequence wherever it is and frees its blocks now; `false` when the id is unknown. Its items in
    /// a plan already handed out are ignored by `update`.
    pub fn cancel(&mut self, id: SeqId) -> bool {
        self.in_flight.retain(|f| f.seq != id);
        self.remove(id)
    }

    /// Whether any sequence is waiting or running.
    pub fn has_work(&self) -> bool {
        !self.running.is_empty() || !self.waiting.is_empty()
    }

    /// Plans the next step (see the contract in [`crate::sched`]). A previous plan not followed by `update` is
    /// dropped: its tokens are planned again.
    pub fn schedule(&mut self) -> StepPlan {
        self.in_flight.clear();
        let mut d = Draft {
            items: Vec::new(),
            budget: self.cfg.max_batch_tokens,
            preempted: Vec::new(),
            rejected: Vec::new(),
        };
        // Decodes (one pending token) first, then prefill chunks; each pass in arrival order.
        for decode in [true, false] {
            let mut i = 0;
            while i < self.running.len() && d.budget > 0 {
                let id = self.running[i];
                let pending = self.pending(id);
                if (pending == 1) != decode || self.run_one(id, pending, decode, &mut d) {
                    i += 1;
                }
            }
        }
        // Admitting right after preempting would only trade one sequence's blocks for another's.
        if d.preempted.is_empty() {
            self.admit(&mut d);
        }
        let mut plan = StepPlan {
            preempted: d.preempted,
            rejected: d.rejected,
            ..StepPlan::default()
        };
        for (item, copies) in d.items {
            plan.copies.extend(copies);
            self.in_flight.push(InFlight {
                seq: item.seq,
                n: item.tokens.len(),
                sample: item.sample,
            });
            plan.items.push(item);
        }
        plan
    }

    /// Applies the last plan's step: every item's sequence advances past its tokens (whose KV is committed to
    /// the prefix cache); `outputs` carry sampled tokens and the caller's stops (one per item at most; items
    /// without one just advance, but a `sample` item needs a token unless `finished`). Returns the sequences
    /// the scheduler finished itself (count limits); all finished sequences are removed and their blocks freed.
    pub fn update(&mut self, outputs: &[StepOutput]) -> Vec<Finished> {
        let news: HashMap<SeqId, &StepOutput> = outputs.iter().map(|o| (o.seq, o)).collect();
        let mut done = Vec::new();
        for f in std::mem::take(&mut self.in_flight) {
            let Some(seq) = self.seqs.get_mut(&f.seq) else {
                continue;
            };
            let Some(kv) = seq.blocks.as_mut() else {
                continue;
            };
            let end = kv.num_computed() + f.n;
            self.kv.commit(kv, &seq.tokens[..end]);
            let out = news.get(&f.seq);
            if out.is_some_and(|o| o.finished) {
                self.remove(f.seq);
                continue;
            }
            let reason = if f.sample {
                match out.and_then(|o| o.token) {
                    Some(t) => {
                        seq.tokens.push(t);
                        if seq.tokens.len() - seq.prompt_len >= seq.max_new_tokens {
                            Some(FinishReason::MaxNewTokens)
                        } else if seq.tokens.len() >= seq.context_len {
                            Some(FinishReason::ContextFull)
                        } else {
                            None
                        }
                    }
                    None => Some(FinishReason::MissingToken),
                }
            } else if end == seq.tokens.len() {
                // The prompt has run and no token is wanted (max_new_tokens == 0).
                Some(FinishReason::MaxNewTokens)
            } else {
                None
            };
            if let Some(reason) = reason {
                self.remove(f.seq);
                done.push(Finished { seq: f.seq, reason });
            }
        }
        done
    }

    /// The sequence's tokens: prompt, then generated tokens.
    pub fn tokens(&self, id: SeqId) -> Option<&[u32]> {
        self.seqs.get(&id).map(|s| &s.tokens[..])
    }

    /// Tokens generated so far.
    pub fn num_generated(&self, id: SeqId) -> Option<usize> {
        self.seqs.get(&id).map(|s| s.tokens.len() - s.prompt_len)
    }

    /// Length of the sequence's prompt.
    pub fn prompt_len(&self, id: SeqId) -> Option<usize> {
        self.seqs.get(&id).map(|s| s.prompt_len)
    }

    /// Leading positions whose KV is valid (0 while waiting: a preempted sequence recomputes).
    pub fn num_computed(&self, id: SeqId) -> Option<usize> {
        let s = self.seqs.get(&id)?;
        Some(s.blocks.as_ref().map_or(0, |b| b.num_computed()))
    }

    /// Prompt tokens reused from the prefix cache at first admission (for usage reports); `None` before the
    /// sequence was first admitted.
    pub fn cached_tokens(&self, id: SeqId) -> Option<usize> {
        self.seqs.get(&id).and_then(|s| s.first_cached)
    }

    /// Times the sequence was preempted.
    pub fn num_preemptions(&self, id: SeqId) -> Option<u32> {
        self.seqs.get(&id).map(|s| s.preemptions)
    }

    /// The sequence's block table; `None` unless it is running.
    pub fn block_table(&self, id: SeqId) -> Option<&[BlockId]> {
        self.seqs.get(&id)?.blocks.as_ref().map(|b| b.table())
    }

    /// Whether the sequence is running (holds blocks).
    pub fn is_running(&self, id: SeqId) -> bool {
        self.seqs.get(&id).is_some_and(|s| s.blocks.is_some())
    }

    /// Sequences waiting for admission (new or preempted).
    pub fn waiting_len(&self) -> usize {
        self.waiting.len()
    }

    /// Sequences holding blocks.
    pub fn running_len(&self) -> usize {
        self.running.len()
    }

    /// The block pool (free counts, reference counts, slots).
    pub fn blocks(&self) -> &BlockManager {
        &self.kv
    }

    /// Prefix-cache counters.
    pub fn cache_stats(&self) -> CacheStats {
        self.kv.stats()
    }

    /// Checks the bookkeeping (tests and debugging): the pool's own invariants, each block's refcount equals
    /// the number of running tables holding it, waiting sequences hold nothing, and the queues are consistent.
    pub fn check_invariants(&self) -> Result<(), String> {
        self.kv.check_consistency()?;
        let mut holders = vec![0u32; self.kv.n_blocks()];
        for id in &self.running {
            let table = self
                .block_table(*id)
                .ok_or(format!("running {id} holds no table"))?;
            for &b in table {
                holders[b as usize] += 1;
            }
        }
        for (b, &h) in holders.iter().enumerate() {
            if self.kv.ref_count(b as BlockId) != h {
                return Err(format!(
                    "block {b}: refcount {} but {h} tables",
                    self.kv.ref_count(b as BlockId)
                ));
            }
        }
        for id in &self.waiting {
            if self.seqs.get(id).is_none_or(|s| s.blocks.is_some()) {
                return Err(format!("waiting {id} unknown or holding blocks"));
            }
        }
        if self.running.len() + self.waiting.len() != self.seqs.len() {
            return Err("a sequence is neither running nor waiting".into());
        }
        if self.running.len() > self.cfg.max_seqs {
            return Err("more running sequences than max_seqs".into());
        }
        Ok(())
    }

    /// Tokens of a running sequence not yet computed.
    fn pending(&self, id: SeqId) -> usize {
        let s = &self.seqs[&id];
        s.tokens.len() - s.blocks.as_ref().expect("running").num_computed()
    }

    /// Schedules running sequence `id` (`want` tokens, fewer for a prefill when blocks are short), preempting
    /// newer sequences for blocks. Returns `false` when `id` itself left the running list (preempted, or
    /// rejected because it alone outgrows the pool).
    fn run_one(&mut self, id: SeqId, pending: usize, decode: bool, d: &mut Draft) -> bool {
        let want = pending.min(d.budget);
        loop {
            let kv = self.seqs[&id].blocks.as_ref().expect("running");
            let start = kv.num_computed();
            let n = self.kv.fit_len(kv, start + want) - start;
            if n == want || (!decode && n > 0) {
                self.push_item(id, n, None, Vec::new(), d);
                return true;
            }
            let victim = *self.running.last().expect("id is running");
            if victim != id {
                self.preempt(victim, d);
                continue;
            }
            if self.running.len() == 1 {
                // Everything else is free or evictable: it cannot grow in this pool at all.
                let error = RequestError::ExceedsKvPool {
                    tokens: start + 1,
                    needed_blocks: self.kv.blocks_for(start + 1),
                    n_blocks: self.kv.n_blocks(),
                };
                self.remove(id);
                d.rejected.push(Rejected { seq: id, error });
            } else {
                self.preempt(id, d);
            }
            return false;
        }
    }

    /// Admits waiting sequences, first come first served, while the budget, `max_seqs` and blocks allow.
    fn admit(&mut self, d: &mut Draft) {
        while d.budget > 0 && self.running.len() < self.cfg.max_seqs {
            let Some(&id) = self.waiting.front() else {
                break;
            };
            let len = self.seqs[&id].tokens.len();
            if let Err(error) = self.check_fits(len) {
                self.remove(id);
                d.rejected.push(Rejected { seq: id, error });
                continue;
            }
            let seq = self.seqs.get_mut(&id).expect("waiting");
            let Ok((kv, copies)) = self.kv.allocate(&seq.tokens, d.budget) else {
                break;
            };
            let cached = kv.cached_tokens();
            seq.first_cached.get_or_insert(cached);
            seq.blocks = Some(kv);
            self.waiting.pop_front();
            self.running.push(id);
            self.push_item(id, (len - cached).min(d.budget), Some(cached), copies, d);
        }
    }

    /// Reserves slots for the next `n` tokens of running sequence `id` and adds its item.
    fn push_item(
        &mut self,
        id: SeqId,
        n: usize,
        cached: Option<usize>,
        mut copies: Vec<BlockCopy>,
        d: &mut Draft,
    ) {
        let seq = self.seqs.get_mut(&id).expect("running");
        let kv = seq.blocks.as_mut().expect("running");
        let start = kv.num_computed();
        let end = start + n;
        copies.extend(self.kv.ensure_slots(kv, end).expect("fit_len said it fits"));
        let item = PlanItem {
            seq: id,
            tokens: seq.tokens[start..end].to_vec(),
            start_pos: start,
            block_table: kv.table().to_vec(),
            sample: end == seq.tokens.len() && seq.max_new_tokens > 0,
            cached_tokens: cached,
        };
        d.budget -= n;
        d.items.push((item, copies));
    }

    /// Frees a running sequence's blocks and puts it at the front of the queue; drops its item (and copies)
    /// from the plan being built.
    fn preempt(&mut self, id: SeqId, d: &mut Draft) {
        self.running.retain(|&s| s != id);
        let seq = self.seqs.get_mut(&id).expect("running");
        if let Some(kv) = seq.blocks.take() {
            self.kv.free(kv);
        }
        seq.preemptions += 1;
        self.waiting.push_front(id);
        d.preempted.push(id);
        if let Some(p) = d.items.iter().position(|(it, _)| it.seq == id) {
            let (item, _) = d.items.remove(p);
            d.budget += item.tokens.len();
        }
    }

    fn remove(&mut self, id: SeqId) -> bool {
        let Some(seq) = self.seqs.remove(&id) else {
            return false;
        };
        if let Some(kv) = seq.blocks {
            self.kv.free(kv);
            self.running.retain(|&s| s != id);
        } else {
            self.waiting.retain(|&s| s != id);
        }
        true
    }

    /// Whether `tokens` positions fit the whole pool.
    fn check_fits(&self, tokens: usize) -> Result<(), RequestError> {
        let needed_blocks = self.kv.blocks_for(tokens);
        if needed_blocks > self.kv.n_blocks() {
            return Err(RequestError::ExceedsKvPool {
                tokens,
                needed_blocks,
                n_blocks: self.kv.n_blocks(),
            });
        }
        Ok(())
    }
}
