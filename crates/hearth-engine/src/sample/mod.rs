//! Sampling: turning one position's logits into the next token, plus the helpers a generation loop needs
//! around it (log-probabilities for API responses, stop strings over streamed text, a reproducible RNG).
//!
//! [`Sampler`] applies the processors in a fixed order, the one llama.cpp and most local runtimes use:
//!
//! 1. logit bias (so a ban or a force holds whatever comes after),
//! 2. penalties (repetition, then presence/frequency),
//! 3. greedy exit: with `temperature <= 0` (or `top_k == 1`) return the argmax, ties to the lowest id,
//! 4. temperature, 5. top-k, 6. top-p, 7. min-p, 8. a random draw from what is left.
//!
//! It never allocates per token: candidates, weights, penalty counters and the list of touched tokens are
//! buffers sized to the vocabulary when it is created. Candidates are only sorted where an order is needed:
//! top-k keeps a sorted list of `k` in one pass (or selects them in linear time when `k` is large); top-p
//! without top-k first narrows the vocabulary to the tokens above a logit threshold that already hold enough
//! mass, then finds its cut with a quickselect on probability mass rather than a sort; plain sampling draws
//! straight from the logits in id order. See `kernels` for the numeric pieces.

mod kernels;
pub mod logprobs;
pub mod params;
pub mod rng;
pub mod stop;

use kernels::{
    exp_neg, key, key_id, masked_sum, max_finite, weighted_prefix, weights_and_blocks, Cut, BLOCK,
};

pub use logprobs::{
    log_softmax, log_softmax_into, log_sum_exp, logprob_of, top_logprobs, TokenLogprobs,
};
pub use params::SamplingParams;
pub use rng::Rng;
pub use stop::{StopMatcher, StopOutput};

/// Thresholds (below the top logit, after temperature) that top-p without top-k tries in turn: the first whose
/// tokens hold the target mass bounds the candidates. If none does, every finite logit is a candidate.
const TOP_P_STEPS: [f32; 7] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0];

/// Chooses tokens from logits according to [`SamplingParams`]; one per sequence being generated.
///
/// # Which tokens the penalties see
///
/// `history` passed to [`Sampler::sample`] is every token before the position being sampled: the prompt
/// followed by the tokens generated so far. The sampler tells the two apart by remembering the prompt length:
/// unless [`Sampler::set_prompt_len`] says otherwise, the length of `history` at the first `sample` call after
/// creation or [`Sampler::reset`] is taken as the prompt, and everything appended after it counts as generated.
/// Only the last `penalty_last_n` tokens of `history` (all if 0) are looked at; within that window the
/// repetition penalty applies to every distinct token present (prompt included, as in HF and llama.cpp), while
/// presence and frequency penalties count only generated tokens (as in OpenAI's API). Counts are rebuilt from
/// the window on each call, so the caller may edit or truncate `history` freely between calls.
///
/// # Reproducibility
///
/// With `seed: Some(s)` the random stream is fixed (see [`Rng`]) and each non-greedy sample consumes exactly
/// one random number. The weights use a hand-written `exp` made of basic IEEE operations, not the platform's
/// libm, and the draw walks the kept candidates in id order, so the result depends neither on the platform nor
/// on the order a selection algorithm left the candidates in: the same seed, parameters and logits give the
/// same tokens everywhere.
#[derive(Clone, Debug)]
pub struct Sampler {
    params: SamplingParams,
    rng: Rng,
    /// Candidates as [`kernels::key`]s (logit order, then id).
    keys: Vec<u64>,
    /// Candidate ids in id order, for the draw.
    idx: Vec<u32>,
    /// Per token: sampling weight `exp(logit - max)`.
    weights: Vec<f32>,
    /// Per block of weights: their sum.
    blocks: Vec<f64>,
    /// Per token: present in the penalty window.
    seen: Vec<bool>,
    /// Per token: occurrences among generated tokens in the penalty window.
    gen_count: Vec<u32>,
    /// Tokens whose `seen`/`gen_count` entries are set, so clearing costs O(window), not O(vocabulary).
    touched: Vec<u32>,
    /// Copy of the raw logits, only used by [`Sampler::sample_with_logprobs`] (allocated on first use).
    raw: Vec<f32>,
    prompt_len: Option<usize>,
}

impl Sampler {
    /// A sampler for a vocabulary of `vocab_size` logits. All scratch space is allocated here.
    ///
    /// Parameters are not validated (see [`SamplingParams::validate`]); NaN filter values act as "off" and a
    /// NaN temperature as greedy.
    pub fn new(params: SamplingParams, vocab_size: usize) -> Self {
        let rng = match params.seed {
            Some(seed) => Rng::seed_from_u64(seed),
            None => Rng::from_entropy(),
        };
        Sampler {
            params,
            rng,
            keys: Vec::with_capacity(vocab_size + 1),
            idx: Vec::with_capacity(vocab_size),
            weights: vec![0.0; vocab_size],
            blocks: Vec::with_capacity(vocab_size.div_ceil(BLOCK)),
            seen: vec![false; vocab_size],
            gen_count: vec![0; vocab_size],
            touched: Vec::with_capacity(vocab_size),
            raw: Vec::new(),
            prompt_len: None,
        }
    }

    /// The parameters this sampler was built with.
    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// When this sampler's choice is just the largest logit after its logit biases (greedy, no penalty
    /// reading the history), those biases: the choice is then [`argmax_biased`] of the logits, which a
    /// backend can find where the logits are (a GPU: one id a row crosses to the host instead of the
    /// vocabulary). None when sampling needs the whole row here.
    pub fn greedy_bias(&self) -> Option<&[(u32, f32)]> {
        let (rep, presence_frequency) = self.penalties();
        let p = &self.params;
        (p.is_greedy() && !rep && !presence_frequency).then_some(&p.logit_bias[..])
    }

    /// Starts a new sequence: the next `sample` call's history length becomes the prompt length again.
    /// The random stream continues (re-create the sampler or call [`Sampler::reseed`] to restart it).
    pub fn reset(&mut self) {
        self.prompt_len = None;
    }

    /// Sets how many leading tokens of `history` are prompt (not generated) explicitly, e.g. when the caller
    /// feeds forced tokens before the first sample.
    pub fn set_prompt_len(&mut self, prompt_len: usize) {
        self.prompt_len = Some(prompt_len);
    }

    /// The prompt length in use, if it has been set or latched by a first `sample` call.
    pub fn prompt_len(&self) -> Option<usize> {
        self.prompt_len
    }

    /// Restarts the random stream from `seed`.
    pub fn reseed(&mut self, seed: u64) {
        self.rng = Rng::seed_from_u64(seed);
    }

    /// Picks the next token from `logits` (one per vocabulary entry) given `history` (prompt + generated
    /// tokens so far; see the type's docs for how it is used).
    ///
    /// `logits` is processed in place (bias, penalties, temperature), so its contents afterwards are
    /// unspecified; copy it first if the raw values are needed, or use [`Sampler::sample_with_logprobs`].
    pub fn sample(&mut self, logits: &mut [f32], history: &[u32]) -> u32 {
        self.ensure_vocab(logits.len());
        let prompt_len = *self.prompt_len.get_or_insert(history.len());
        let gen_start = prompt_len.min(history.len());

        self.apply_bias(logits);
        self.apply_penalties(logits, history, gen_start);

        if self.params.is_greedy() {
            return argmax(logits);
        }
        let t = self.params.temperature;
        // Shifting by the maximum first keeps a tiny temperature from overflowing to +inf (and inf - inf).
        let shift = |x: f32, m: f32| {
            let y = (x - m) / t;
            if y.is_nan() {
                f32::NEG_INFINITY
            } else {
                y
            }
        };
        let k = self.params.top_k;
        if k > 0 && k < logits.len() && k <= SMALL_SET {
            // Temperature is monotonic, so top-k can select first and then scale only its `k` logits; the
            // other logits are never looked at again.
            top_k_keys(logits, k, &mut self.keys);
            let m = self
                .keys
                .first()
                .map_or(f32::NAN, |&c| logits[key_id(c) as usize]);
            if !m.is_finite() {
                self.rng.next_f64();
                return argmax(logits);
            }
            for c in self.keys.iter_mut() {
                let id = key_id(*c);
                let y = shift(logits[id as usize], m);
                logits[id as usize] = y;
                *c = key(y, id);
            }
            self.keys
                .retain(|&c| logits[key_id(c) as usize] > f32::NEG_INFINITY);
            self.keys.sort_unstable();
            return self.filter_and_draw(logits, true);
        }
        let m = max_finite(logits);
        if !m.is_finite() {
            // Everything banned (or a +inf bias forcing a token): there is nothing to draw among.
            self.rng.next_f64();
            return argmax(logits);
        }
        for x in logits.iter_mut() {
            *x = shift(*x, m);
        }
        self.filter_and_draw(logits, false)
    }

    /// Like [`Sampler::sample`], and also returns the log-probabilities of the *raw* logits (before any
    /// processing): the chosen token's and the `top_n` most likely ones, as OpenAI-style `logprobs` report.
    pub fn sample_with_logprobs(
        &mut self,
        logits: &mut [f32],
        history: &[u32],
        top_n: usize,
    ) -> (u32, TokenLogprobs) {
        let lse = log_sum_exp(logits);
        let top = top_logprobs(logits, top_n);
        let mut raw = std::mem::take(&mut self.raw);
        raw.clear();
        raw.extend_from_slice(logits);
        let token = self.sample(logits, history);
        let logprob = raw
            .get(token as usize)
            .map_or(f32::NEG_INFINITY, |&x| logprobs::logprob_with(x, lse));
        self.raw = raw;
        (
            token,
            TokenLogprobs {
                token,
                logprob,
                top,
            },
        )
    }

    /// Grows the per-token buffers if a model hands over more logits than announced (once, not per token).
    fn ensure_vocab(&mut self, n: usize) {
        if self.seen.len() < n {
            self.seen.resize(n, false);
            self.gen_count.resize(n, 0);
            self.weights.resize(n, 0.0);
            // `reserve(additional)` counts from `len`, so this makes the capacity at least the target.
            self.keys.reserve((n + 1).saturating_sub(self.keys.len()));
            self.idx.reserve(n.saturating_sub(self.idx.len()));
            self.blocks
                .reserve(n.div_ceil(BLOCK).saturating_sub(self.blocks.len()));
            self.touched.reserve(n.saturating_sub(self.touched.len()));
        }
    }

    fn apply_bias(&self, logits: &mut [f32]) {
        add_bias(logits, &self.params.logit_bias);
    }

    /// Which penalties change logits: (the repetition penalty, presence/frequency).
    fn penalties(&self) -> (bool, bool) {
        let p = &self.params;
        let rep = p.repetition_penalty;
        (
            rep != 1.0 && rep.is_finite() && rep > 0.0,
            p.presence_penalty != 0.0 || p.frequency_penalty != 0.0,
        )
    }

    /// Repetition penalty over every distinct token in the window, then `presence + frequency * count` over
    /// generated tokens in the window (`gen_start` is the index in `history` where generated tokens begin).
    fn apply_penalties(&mut self, logits: &mut [f32], history: &[u32], gen_start: usize) {
        let (use_rep, use_pf) = self.penalties();
        if !use_rep && !use_pf {
            return;
        }
        let p = &self.params;
        let rep = p.repetition_penalty;
        let start = match p.penalty_last_n {
            0 => 0,
            n => history.len().saturating_sub(n),
        };
        for (pos, &tok) in history.iter().enumerate().skip(start) {
            let t = tok as usize;
            if t >= logits.len() {
                continue;
            }
            if !self.seen[t] {
                self.seen[t] = true;
                self.touched.push(tok);
            }
            if pos >= gen_start {
                self.gen_count[t] += 1;
            }
        }
        for &tok in &self.touched {
            let t = tok as usize;
            let x = &mut logits[t];
            if use_rep {
                if *x > 0.0 {
                    *x /= rep;
                } else {
                    *x *= rep;
                }
            }
            let count = self.gen_count[t];
            if use_pf && count > 0 {
                *x -= p.presence_penalty + p.frequency_penalty * count as f32;
            }
            self.seen[t] = false;
            self.gen_count[t] = 0;
        }
        self.touched.clear();
    }

    /// Top-k, top-p, min-p and the draw, over logits already shifted so that the maximum is 0, scaled by the
    /// temperature, and with NaN replaced by `-inf`.
    ///
    /// Every filter keeps a prefix of the candidates' total order (higher logit first, then lower id), so the
    /// kept set is either described by a [`Cut`] over the whole vocabulary or listed as [`kernels::key`]s.
    ///
    /// With `top_k_done`, `keys` already holds the top-k candidates, sorted, and only their logits are valid.
    fn filter_and_draw(&mut self, logits: &[f32], top_k_done: bool) -> u32 {
        let (top_k, top_p, min_p) = (self.params.top_k, self.params.top_p, self.params.min_p);
        let keys = &mut self.keys;
        let w = &mut self.weights;
        let weight = |k: u64| exp_neg(logits[key_id(k) as usize]) as f64;
        // `None`: the candidates are `keys` (sorted by key if `sorted`); `Some(cut)`: all tokens `cut` keeps.
        let mut cut = Some(Cut::ALL);
        let mut sorted = false;

        if top_k_done || (top_k > 0 && top_k < logits.len()) {
            if !top_k_done {
                top_k_keys(logits, top_k, keys);
            }
            cut = None;
            sorted = true;
        }

        if top_p < 1.0 {
            let top_p = top_p as f64;
            if cut.is_some() {
                let target = top_p * weights_and_blocks(logits, Cut::ALL, w, &mut self.blocks);
                let w = &w[..logits.len()];
                // Only tokens above the first threshold whose tokens hold the target mass can be kept.
                let thr = TOP_P_STEPS
                    .iter()
                    .map(|&s| -s)
                    .find(|&t| masked_sum(logits, w, t) >= target)
                    .unwrap_or(f32::NEG_INFINITY);
                collect_keys(logits, thr, keys);
                let n = weighted_prefix(keys, target, |k| w[key_id(k) as usize] as f64);
                keys.truncate(n);
                cut = None;
            } else {
                let target = top_p * keys.iter().map(|&k| weight(k)).sum::<f64>();
                let mut cum = 0.0;
                let n = keys
                    .iter()
                    .position(|&k| {
                        cum += weight(k);
                        cum >= target
                    })
                    .map_or(keys.len(), |i| i + 1);
                keys.truncate(n);
            }
        }

        if min_p > 0.0 {
            // p_i >= min_p * p_max  <=>  logit_i - max >= ln(min_p), and the max is 0 here. The top token
            // always passes (min_p <= 1), so the set never becomes empty.
            let thr = (min_p.min(1.0) as f64).ln();
            let keep = |k: u64| logits[key_id(k) as usize] as f64 >= thr;
            if cut.is_some() {
                cut = Some(Cut {
                    logit: f32_at_least(thr),
                    id: u32::MAX,
                });
            } else if sorted {
                let n = keys.partition_point(|&k| keep(k));
                keys.truncate(n);
            } else {
                keys.retain(|&k| keep(k));
            }
        }

        let u = self.rng.next_f64();
        let cut = match cut {
            Some(cut) => cut,
            // (A top-k set is always small here, and must be: the other logits were not scaled.)
            None if keys.len() <= SMALL_SET => return draw_set(logits, keys, &mut self.idx, u),
            None => {
                // A large set: a pass over the vocabulary in id order beats sorting the ids.
                let id = key_id(keys.iter().copied().max().unwrap_or(0));
                Cut {
                    logit: logits[id as usize],
                    id,
                }
            }
        };
        let total = weights_and_blocks(logits, cut, w, &mut self.blocks);
        draw_blocks(&w[..logits.len()], &self.blocks, total, u)
    }
}

/// Up to this many kept candidates the draw sorts their ids; above it, it walks the whole vocabulary.
const SMALL_SET: usize = 2048;

/// The smallest `f32` that is `>= t`, so that `x >= result` for an `f32` `x` exactly when `x as f64 >= t`.
fn f32_at_least(t: f64) -> f32 {
    let r = t as f32;
    if (r as f64) < t {
        r.next_up()
    } else {
        r
    }
}

/// The `k` best candidates (finite logits; NaN is skipped) as keys sorted by key, i.e. by the sampler's
/// total order.
///
/// For small `k` a single pass keeps a sorted list and rejects almost every logit with one comparison; for
/// large `k` a linear-time selection over all keys followed by sorting the `k`.
fn top_k_keys(logits: &[f32], k: usize, keys: &mut Vec<u64>) {
    keys.clear();
    if k <= 128 {
        let mut kth = f32::NEG_INFINITY; // the k-th best logit once the list is full
        for (i, &x) in logits.iter().enumerate() {
            // Ids arrive in increasing order, so an equal logit never beats a listed one.
            if x.is_nan() || x == f32::NEG_INFINITY || (keys.len() == k && x <= kth) {
                continue;
            }
            let key = key(x, i as u32);
            let pos = keys.partition_point(|&y| y < key);
            keys.insert(pos, key);
            if keys.len() > k {
                keys.pop();
            }
            if keys.len() == k {
                kth = logits[key_id(keys[k - 1]) as usize];
            }
        }
    } else {
        collect_keys(logits, f32::NEG_INFINITY, keys);
        if keys.len() > k {
            keys.select_nth_unstable(k - 1);
            keys.truncate(k);
        }
        keys.sort_unstable();
    }
}

/// Replaces `keys` by the keys of all finite logits `>= thr`, in id order.
fn collect_keys(logits: &[f32], thr: f32, keys: &mut Vec<u64>) {
    keys.clear();
    keys.extend(
        logits
            .iter()
            .enumerate()
            .filter(|&(_, &x)| x >= thr && x > f32::NEG_INFINITY)
            .map(|(i, &x)| key(x, i as u32)),
    );
}

/// Draws token `i` with probability `w[i] / total`, walking the block sums and then the chosen block, in id
/// order. `blocks` and `total` come from [`weights_and_blocks`] over the same `w`.
fn draw_blocks(w: &[f32], blocks: &[f64], total: f64, u: f64) -> u32 {
    let r = u * total;
    let mut cum = 0.0;
    for (b, &bs) in blocks.iter().enumerate() {
        if r < cum + bs {
            let start = b * BLOCK;
            let block = &w[start..(start + BLOCK).min(w.len())];
            let mut c = cum;
            for (j, &wj) in block.iter().enumerate() {
                c += wj as f64;
                if r < c {
                    return (start + j) as u32;
                }
            }
            // Rounding between the block sum and the walk: the block's last token with weight.
            return (start + block.iter().rposition(|&x| x > 0.0).unwrap_or(0)) as u32;
        }
        cum += bs;
    }
    // `r` at or past the rounded total: the last token with any weight.
    w.iter().rposition(|&x| x > 0.0).unwrap_or(0) as u32
}

/// Draws from the softmax restricted to `keys` (non-empty), walking the candidates in id order so that the
/// result does not depend on how the set was selected.
fn draw_set(logits: &[f32], keys: &[u64], idx: &mut Vec<u32>, u: f64) -> u32 {
    if keys.len() == 1 {
        return key_id(keys[0]);
    }
    idx.clear();
    idx.extend(keys.iter().map(|&k| key_id(k)));
    idx.sort_unstable();
    let weight = |i: u32| exp_neg(logits[i as usize]) as f64;
    let total: f64 = idx.iter().map(|&i| weight(i)).sum();
    let r = u * total;
    let mut cum = 0.0;
    for &i in idx.iter() {
        cum += weight(i);
        if r < cum {
            return i;
        }
    }
    // `r` at or past the rounded total: the last candidate with any weight.
    let last = idx.iter().rev().find(|&&i| weight(i) > 0.0);
    last.copied().unwrap_or(idx[0])
}

/// The index of the largest logit, ties broken by the lowest id; NaN is ignored (0 if all are NaN or the
/// slice is empty). This is greedy decoding.
pub fn argmax(logits: &[f32]) -> u32 {
    let m = max_finite(logits);
    logits.iter().position(|&x| x == m).unwrap_or(0) as u32
}

/// [`argmax`] of `logits` after adding each `(id, bias)` in order (ids past the row ignored): what a greedy
/// [`Sampler`] picks ([`Sampler::greedy_bias`]), without a copy of the row when there is nothing to add.
pub fn argmax_biased(logits: &[f32], bias: &[(u32, f32)]) -> u32 {
    if bias.is_empty() {
        return argmax(logits);
    }
    let mut row = logits.to_vec();
    add_bias(&mut row, bias);
    argmax(&row)
}

/// `logits[id] += bias` for each pair in order (ids past the row ignored): the sampler's logit biases.
fn add_bias(logits: &mut [f32], bias: &[(u32, f32)]) {
    for &(id, b) in bias {
        if let Some(x) = logits.get_mut(id as usize) {
            *x += b;
        }
    }
}
