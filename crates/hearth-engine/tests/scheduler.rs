//! Scheduler: decodes first, the token budget, chunked prefill interleaved with decodes, first-come-first-served
//! admission, preemption of the newest sequence and its recomputation, cancellation, count-based stops,
//! rejections, prefix reuse across turns, and a randomized simulation checking the invariants.
//!
//! A driver plays the engine: it performs the plan's copies on a shadow storage whose slots hold a fingerprint
//! of the token prefix they were computed for, checks that everything an item attends to is its own prefix's
//! KV, writes the item's slots, and samples from a deterministic fake model (the next token is a function of
//! all previous tokens), so a batched run must produce exactly what a run alone would.

use std::collections::{HashMap, HashSet};

use hearth_engine::kv::BlockId;
use hearth_engine::sched::{
    FinishReason, Finished, RequestError, Scheduler, SchedulerConfig, SeqId, StepOutput, StepPlan,
};

const CTX: usize = 1 << 20;

fn fingerprint(tokens: &[u32]) -> u64 {
    tokens.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &t| {
        (h ^ t as u64).wrapping_mul(0x100_0000_01b3)
    })
}

/// The fake model: the next token after `tokens`, over a vocabulary of `vocab` ids.
fn model(tokens: &[u32], vocab: u32) -> u32 {
    ((fingerprint(tokens) >> 17) % vocab as u64) as u32
}

/// What a request run alone would produce: `n` tokens after `prompt`.
fn solo(prompt: &[u32], n: usize, vocab: u32) -> Vec<u32> {
    let mut t = prompt.to_vec();
    for _ in 0..n {
        t.push(model(&t, vocab));
    }
    t
}

fn cfg(
    max_batch_tokens: usize,
    max_seqs: usize,
    block_size: usize,
    n_blocks: usize,
) -> SchedulerConfig {
    SchedulerConfig {
        max_batch_tokens,
        max_seqs,
        block_size,
        n_blocks,
        model_key: 42,
    }
}

fn toks(r: std::ops::Range<u32>) -> Vec<u32> {
    r.collect()
}

/// Plays the engine around a scheduler.
struct Driver {
    s: Scheduler,
    bs: usize,
    vocab: u32,
    slots: Vec<Option<u64>>,
    /// Tokens of each live sequence as the driver knows them.
    mine: HashMap<SeqId, Vec<u32>>,
    /// Tokens of finished sequences (by anyone).
    ended: HashMap<SeqId, Vec<u32>>,
}

impl Driver {
    fn new(c: SchedulerConfig, vocab: u32) -> Driver {
        Driver {
            bs: c.block_size,
            slots: vec![None; c.n_blocks * c.block_size],
            s: Scheduler::new(c),
            vocab,
            mine: HashMap::new(),
            ended: HashMap::new(),
        }
    }

    fn add(
        &mut self,
        id: SeqId,
        prompt: Vec<u32>,
        max_new: usize,
        ctx: usize,
    ) -> Result<(), RequestError> {
        self.s.add(id, prompt.clone(), max_new, ctx)?;
        self.mine.insert(id, prompt);
        Ok(())
    }

    fn cancel(&mut self, id: SeqId) {
        assert!(self.s.cancel(id));
        self.end(id);
        assert!(!self.s.cancel(id));
    }

    fn end(&mut self, id: SeqId) {
        let t = self.mine.remove(&id).expect("live");
        self.ended.insert(id, t);
    }

    fn slot(&self, table: &[BlockId], p: usize) -> usize {
        table[p / self.bs] as usize * self.bs + p % self.bs
    }

    /// One engine step; `stop` says whether the caller finishes a sequence after sampling (EOS).
    fn step_with(&mut self, stop: &mut dyn FnMut(SeqId, u32) -> bool) -> (StepPlan, Vec<Finished>) {
        let plan = self.s.schedule();
        assert!(plan.num_tokens() <= self.s.config().max_batch_tokens);
        for c in &plan.copies {
            let (src, dst) = (c.src as usize * self.bs, c.dst as usize * self.bs);
            for o in 0..self.bs {
                self.slots[dst + o] = self.slots[src + o];
            }
        }
        let mut written = HashSet::new();
        let mut outputs = Vec::new();
        for it in &plan.items {
            let t = self.s.tokens(it.seq).expect("planned").to_vec();
            assert_eq!(t, self.mine[&it.seq], "seq {} tokens", it.seq);
            let end = it.end_pos();
            assert!(!it.tokens.is_empty());
            assert_eq!(&it.tokens[..], &t[it.start_pos..end]);
            assert!(it.block_table.len() * self.bs >= end);
            if let Some(c) = it.cached_tokens {
                assert_eq!(c, it.start_pos);
            }
            for p in 0..it.start_pos {
                let i = self.slot(&it.block_table, p);
                assert_eq!(
                    self.slots[i],
                    Some(fingerprint(&t[..=p])),
                    "seq {} reads foreign KV at {p}",
                    it.seq
                );
            }
            for p in it.start_pos..end {
                let i = self.slot(&it.block_table, p);
                assert!(written.insert(i), "slot {i} written twice in one step");
                self.slots[i] = Some(fingerprint(&t[..=p]));
            }
            assert!(!it.sample || end == t.len());
            if it.sample {
                let token = model(&t[..end], self.vocab);
                let finished = stop(it.seq, token);
                self.mine.get_mut(&it.seq).unwrap().push(token);
                outputs.push(StepOutput {
                    seq: it.seq,
                    token: Some(token),
                    finished,
                });
            }
        }
        let done = self.s.update(&outputs);
        for f in &done {
            self.end(f.seq);
        }
        for o in outputs.iter().filter(|o| o.finished) {
            self.end(o.seq);
        }
        for r in &plan.rejected {
            self.end(r.seq);
        }
        self.s.check_invariants().unwrap();
        self.check_views();
        (plan, done)
    }

    fn step(&mut self) -> (StepPlan, Vec<Finished>) {
        self.step_with(&mut |_, _| false)
    }

    /// Every running sequence's computed positions hold its own prefix's KV.
    fn check_views(&self) {
        for (&id, t) in &self.mine {
            assert_eq!(self.s.tokens(id), Some(&t[..]));
            let Some(table) = self.s.block_table(id) else {
                continue;
            };
            for p in 0..self.s.num_computed(id).unwrap() {
                assert_eq!(
                    self.slots[self.slot(table, p)],
                    Some(fingerprint(&t[..=p])),
                    "seq {id} at {p}"
                );
            }
        }
    }

    fn run_to_end(&mut self) {
        for _ in 0..100_000 {
            if !self.s.has_work() {
                return;
            }
            self.step();
        }
        panic!("did not finish");
    }
}

#[test]
fn decodes_go_first_and_a_long_prompt_is_chunked_between_them() {
    let mut d = Driver::new(cfg(16, 8, 4, 64), 50);
    d.add(1, toks(0..5), 100, CTX).unwrap();
    d.add(2, toks(10..15), 100, CTX).unwrap();
    let (plan, _) = d.step();
    let got: Vec<_> = plan
        .items
        .iter()
        .map(|i| (i.seq, i.tokens.len(), i.sample, i.cached_tokens))
        .collect();
    assert_eq!(got, vec![(1, 5, true, Some(0)), (2, 5, true, Some(0))]);

    d.add(3, toks(100..140), 100, CTX).unwrap();
    for chunk in [14, 14, 12] {
        let (plan, _) = d.step();
        let got: Vec<_> = plan.items.iter().map(|i| (i.seq, i.tokens.len())).collect();
        assert_eq!(got, vec![(1, 1), (2, 1), (3, chunk)]);
        assert_eq!(
            plan.items[2].sample,
            chunk == 12,
            "only the last chunk samples"
        );
    }
    let (plan, _) = d.step();
    let got: Vec<_> = plan
        .items
        .iter()
        .map(|i| (i.seq, i.tokens.len(), i.sample))
        .collect();
    assert_eq!(got, vec![(1, 1, true), (2, 1, true), (3, 1, true)]);
    assert_eq!(d.s.num_generated(1), Some(5));
    assert_eq!(d.s.num_generated(3), Some(2));
}

#[test]
fn admission_is_first_come_first_served() {
    let mut d = Driver::new(cfg(64, 2, 4, 64), 50);
    for (id, max_new) in [(1, 1), (2, 4), (3, 4), (4, 4)] {
        d.add(id, toks(id as u32 * 10..id as u32 * 10 + 3), max_new, CTX)
            .unwrap();
    }
    let mut admitted = Vec::new();
    while d.s.has_work() {
        let (plan, _) = d.step();
        assert!(d.s.running_len() <= 2);
        admitted.extend(
            plan.items
                .iter()
                .filter(|i| i.cached_tokens.is_some())
                .map(|i| i.seq),
        );
    }
    assert_eq!(admitted, vec![1, 2, 3, 4]);

    // Under block pressure a small later prompt does not overtake a big earlier one.
    let mut d = Driver::new(cfg(64, 8, 4, 8), 50);
    d.add(1, toks(0..24), 6, CTX).unwrap(); // 6 of the 8 blocks, growing
    d.step();
    d.add(2, toks(100..112), 2, CTX).unwrap(); // 3 blocks: must wait
    d.add(3, toks(200..202), 2, CTX).unwrap(); // would fit, but arrived later
    let mut order = Vec::new();
    while d.s.has_work() {
        let (plan, _) = d.step();
        order.extend(
            plan.items
                .iter()
                .filter(|i| i.cached_tokens.is_some())
                .map(|i| i.seq),
        );
        if d.s.is_running(3) {
            assert!(order.contains(&2), "3 admitted before 2");
        }
    }
    assert_eq!(order, vec![2, 3]);
}

#[test]
fn block_pressure_preempts_the_newest_which_later_recomputes() {
    // 6 blocks of 4: two sequences of 8 + 12 tokens cannot both hold their 5 blocks.
    let mut d = Driver::new(cfg(64, 8, 4, 6), 50);
    let (pa, pb) = (toks(0..8), toks(100..108));
    d.add(1, pa.clone(), 12, CTX).unwrap();
    d.add(2, pb.clone(), 12, CTX).unwrap();
    let mut preempted = Vec::new();
    let mut readmitted = None;
    while d.s.has_work() {
        let (plan, _) = d.step();
        preempted.extend(plan.preempted.iter().copied());
        if !plan.preempted.is_empty() {
            assert_eq!(d.s.waiting_len(), 1);
            assert!(d.s.is_running(1) && !d.s.is_running(2));
        }
        if let Some(it) = plan
            .items
            .iter()
            .find(|i| i.seq == 2 && i.cached_tokens.is_some() && !preempted.is_empty())
        {
            readmitted = Some((it.start_pos, it.tokens.len()));
        }
    }
    assert_eq!(preempted, vec![2]);
    // B held 12 computed positions; A's growth evicted the tail of B's chain, its head was reused.
    let (cached, recomputed) = readmitted.expect("B readmitted");
    assert_eq!(cached, 4);
    assert!(recomputed > 8, "prompt and generated tokens recomputed");
    assert_eq!(d.ended[&1], solo(&pa, 12, 50));
    assert_eq!(d.ended[&2], solo(&pb, 12, 50));
    assert_eq!(d.s.blocks().num_used(), 0);
}

#[test]
fn cancellation_frees_blocks_at_once() {
    let mut d = Driver::new(cfg(64, 8, 4, 16), 50);
    d.add(1, toks(0..10), 100, CTX).unwrap();
    d.add(2, toks(20..30), 100, CTX).unwrap();
    let plan = d.s.schedule();
    assert_eq!(d.s.blocks().num_used(), 6);
    d.s.cancel(1);
    d.s.cancel(2);
    d.mine.clear();
    assert_eq!(d.s.blocks().num_used(), 0);
    assert_eq!(d.s.blocks().num_free(), 16);
    // Outputs for cancelled sequences are ignored.
    let outs: Vec<_> = plan
        .items
        .iter()
        .map(|i| StepOutput {
            seq: i.seq,
            token: Some(1),
            finished: false,
        })
        .collect();
    assert!(d.s.update(&outs).is_empty());
    assert!(!d.s.has_work());
    d.s.check_invariants().unwrap();

    // A waiting sequence can be cancelled too.
    let mut d = Driver::new(cfg(64, 1, 4, 16), 50);
    d.add(1, toks(0..4), 2, CTX).unwrap();
    d.add(2, toks(5..9), 2, CTX).unwrap();
    d.step();
    assert_eq!(d.s.waiting_len(), 1);
    d.cancel(2);
    assert_eq!(d.s.waiting_len(), 0);
    d.run_to_end();
}

#[test]
fn count_limits_are_owned_by_the_scheduler_content_stops_by_the_caller() {
    let mut d = Driver::new(cfg(64, 8, 4, 64), 50);
    d.add(1, toks(0..5), 3, CTX).unwrap();
    d.add(2, toks(10..15), usize::MAX, 7).unwrap(); // room for 2 tokens
    d.add(3, toks(20..25), 0, 5).unwrap(); // prompt only (scoring)
    d.add(4, toks(30..35), usize::MAX, CTX).unwrap(); // the caller stops it
    let mut finished = Vec::new();
    let mut stop = |id: SeqId, _: u32| id == 4;
    while d.s.has_work() {
        let (plan, done) = d.step_with(&mut stop);
        assert!(plan.items.iter().all(|i| i.seq != 3 || !i.sample));
        finished.extend(done);
    }
    finished.sort_by_key(|f| f.seq);
    assert_eq!(
        finished,
        vec![
            Finished {
                seq: 1,
                reason: FinishReason::MaxNewTokens
            },
            Finished {
                seq: 2,
                reason: FinishReason::ContextFull
            },
            Finished {
                seq: 3,
                reason: FinishReason::MaxNewTokens
            },
        ]
    );
    assert_eq!(d.ended[&1].len(), 8);
    assert_eq!(d.ended[&2].len(), 7);
    assert_eq!(d.ended[&3].len(), 5);
    assert_eq!(d.ended[&4].len(), 6);

    // A sampling item that gets no token is dropped and reported.
    let mut s = Scheduler::new(cfg(64, 8, 4, 64));
    s.add(9, toks(0..5), 10, CTX).unwrap();
    s.schedule();
    let done = s.update(&[]);
    assert_eq!(
        done,
        vec![Finished {
            seq: 9,
            reason: FinishReason::MissingToken
        }]
    );
    assert!(!s.has_work());
}

#[test]
fn requests_that_cannot_fit_are_rejected_with_a_reason() {
    let mut s = Scheduler::new(cfg(64, 8, 4, 2));
    assert_eq!(s.add(1, vec![], 1, CTX), Err(RequestError::EmptyPrompt));
    assert_eq!(
        s.add(1, toks(0..10), 1, 10),
        Err(RequestError::PromptTooLong {
            prompt_len: 10,
            context_len: 10
        })
    );
    assert_eq!(
        s.add(1, toks(0..9), 1, CTX),
        Err(RequestError::ExceedsKvPool {
            tokens: 9,
            needed_blocks: 3,
            n_blocks: 2
        })
    );
    s.add(1, toks(0..5), usize::MAX, 100).unwrap();
    assert_eq!(
        s.add(1, toks(0..5), 1, 100),
        Err(RequestError::DuplicateId(1))
    );

    // It runs until it alone needs a 3rd block: position 8, the 9th token.
    let mut d = Driver::new(cfg(64, 8, 4, 2), 50);
    d.add(1, toks(0..5), usize::MAX, 100).unwrap();
    let mut rejected = Vec::new();
    while d.s.has_work() {
        rejected.extend(d.step().0.rejected);
    }
    assert_eq!(rejected.len(), 1);
    assert_eq!(
        rejected[0].error,
        RequestError::ExceedsKvPool {
            tokens: 9,
            needed_blocks: 3,
            n_blocks: 2
        }
    );
    assert_eq!(d.ended[&1].len(), 9);
    assert_eq!(d.s.blocks().num_used(), 0);
}

#[test]
fn a_later_turn_reuses_everything_computed_before() {
    let mut d = Driver::new(cfg(256, 8, 4, 64), 50);
    let prompt = toks(0..10);
    d.add(1, prompt.clone(), usize::MAX, CTX).unwrap();
    let mut n = 0;
    let mut stop = |_: SeqId, _: u32| {
        n += 1;
        n == 4
    };
    while d.s.has_work() {
        d.step_with(&mut stop);
    }
    let turn1 = d.ended[&1].clone();
    assert_eq!(turn1.len(), 14); // the 4th token (the "EOS") was never computed

    let turn2 = [&turn1[..], &toks(500..506)[..]].concat();
    d.add(2, turn2.clone(), 3, CTX).unwrap();
    let (plan, _) = d.step();
    assert_eq!(plan.items[0].cached_tokens, Some(13));
    assert_eq!(
        plan.items[0].tokens.len(),
        7,
        "the unseen EOS and the 6 new tokens"
    );
    assert_eq!(d.s.cached_tokens(2), Some(13));
    d.run_to_end();
    assert_eq!(d.ended[&2], solo(&turn2, 3, 50));

    // The same prompt again: all but its last token come from the cache.
    d.add(3, turn2.clone(), 1, CTX).unwrap();
    let (plan, _) = d.step();
    assert_eq!(plan.items[0].cached_tokens, Some(turn2.len() - 1));
    assert_eq!(plan.items[0].tokens, vec![*turn2.last().unwrap()]);
    d.run_to_end();
    assert!(d.s.cache_stats().hit_tokens >= 13 + 19);
}

/// splitmix64.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn tokens(&mut self, n: usize) -> Vec<u32> {
        (0..n).map(|_| self.below(4) as u32).collect()
    }
}

#[test]
fn randomized_simulation_keeps_invariants_and_finishes_everyone() {
    let mut totals = (0u64, 0usize, 0u64, 0usize);
    for (seed, budget, max_seqs, bs, n_blocks) in [
        (1u64, 32usize, 6usize, 4usize, 24usize),
        (2, 64, 8, 16, 20),
        (3, 8, 8, 1, 60),
        (4, 48, 16, 2, 40),
        (5, 256, 64, 16, 64),
        (6, 20, 4, 3, 30),
    ] {
        let mut rng = Rng(seed);
        let mut d = Driver::new(cfg(budget, max_seqs, bs, n_blocks), 4);
        let capacity = n_blocks * bs;
        let prefixes: Vec<Vec<u32>> = (0..3)
            .map(|_| {
                let n = 1 + rng.below(40);
                rng.tokens(n)
            })
            .collect();
        // id -> (arrival step, the bound on steps it may take)
        let mut deadline: HashMap<SeqId, (usize, usize)> = HashMap::new();
        let mut effective: HashMap<SeqId, usize> = HashMap::new();
        let mut prompt_len: HashMap<SeqId, usize> = HashMap::new();
        let mut next_id: SeqId = 0;
        let mut step = 0usize;
        while next_id < 150 || d.s.has_work() {
            step += 1;
            assert!(step < 200_000, "simulation does not end");
            if next_id < 150 && rng.below(3) == 0 {
                for _ in 0..1 + rng.below(3) {
                    let mut prompt = match rng.below(10) {
                        0..=4 => prefixes[rng.below(3)].clone(),
                        5..=6 if !d.ended.is_empty() => {
                            let k = rng.below(d.ended.len());
                            d.ended.values().nth(k).unwrap().clone()
                        }
                        _ => Vec::new(),
                    };
                    let extra = 1 + rng.below(30);
                    prompt.extend(rng.tokens(extra));
                    prompt.truncate(capacity - 1);
                    let ctx = prompt.len() + 1 + rng.below(60);
                    let max_new = match rng.below(20) {
                        0 => 0,
                        1..=4 => usize::MAX,
                        _ => 1 + rng.below(40),
                    };
                    let id = next_id;
                    next_id += 1;
                    d.add(id, prompt.clone(), max_new, ctx).unwrap();
                    prompt_len.insert(id, prompt.len());
                    effective.insert(id, ctx.min(prompt.len().saturating_add(max_new)) + 1);
                    // Once older live sequences are done, it finishes within 2 passes over its tokens.
                    let bound: usize = d.mine.keys().map(|j| 2 * effective[j] + 2).sum();
                    deadline.insert(id, (step, bound));
                }
            }
            if rng.below(40) == 0 && !d.mine.is_empty() {
                let k = rng.below(d.mine.len());
                let id = *d.mine.keys().nth(k).unwrap();
                d.cancel(id);
            }
            let pending: HashMap<SeqId, usize> = d
                .mine
                .keys()
                .filter(|&&id| d.s.is_running(id))
                .map(|&id| {
                    (
                        id,
                        d.s.tokens(id).unwrap().len() - d.s.num_computed(id).unwrap(),
                    )
                })
                .collect();
            let live_before: Vec<SeqId> = d.mine.keys().copied().collect();
            let (plan, _) = d.step_with(&mut |_, _| rng.below(25) == 0);
            // Decodes first; every running decode runs unless it was preempted or rejected.
            let is_decode = |i: &&hearth_engine::sched::PlanItem| pending.get(&i.seq) == Some(&1);
            let first_other = plan
                .items
                .iter()
                .position(|i| !is_decode(&i))
                .unwrap_or(plan.items.len());
            assert!(plan.items[first_other..].iter().all(|i| !is_decode(&i)));
            for (&id, &p) in &pending {
                let dropped =
                    plan.preempted.contains(&id) || plan.rejected.iter().any(|r| r.seq == id);
                assert!(
                    p != 1 || dropped || plan.items.iter().any(|i| i.seq == id),
                    "decode {id} skipped"
                );
            }
            for r in &plan.rejected {
                let RequestError::ExceedsKvPool { tokens, .. } = r.error else {
                    panic!("unexpected rejection {:?}", r.error);
                };
                assert!(tokens > capacity);
                totals.3 += 1;
            }
            totals.1 += plan.preempted.len();
            for id in live_before.iter().filter(|id| !d.mine.contains_key(id)) {
                let (arrival, bound) = deadline[id];
                assert!(
                    step - arrival <= bound,
                    "seq {id} took {} steps, bound {bound}",
                    step - arrival
                );
                let (t, plen) = (&d.ended[id], prompt_len[id]);
                assert_eq!(
                    *t,
                    solo(&t[..plen], t.len() - plen, 4),
                    "seq {id} differs from a solo run"
                );
            }
        }
        assert_eq!(d.s.blocks().num_used(), 0);
        assert_eq!(d.s.blocks().num_free(), n_blocks);
        let st = d.s.cache_stats();
        totals.0 += st.hit_tokens;
        totals.2 += st.copies;
    }
    let (hits, preemptions, copies, rejections) = totals;
    assert!(
        hits > 0 && preemptions > 0 && copies > 0 && rejections > 0,
        "{totals:?}"
    );
}
