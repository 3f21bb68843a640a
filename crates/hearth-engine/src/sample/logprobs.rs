//! Log-probabilities of the model's raw distribution, for the `logprobs` / `top_logprobs` of an API response.
//!
//! These work on *raw* logits (before bias, penalties, temperature or filters), which is what OpenAI-style
//! APIs report and what is meaningful for scoring text. [`crate::sample::Sampler::sample_with_logprobs`]
//! computes them before it modifies the logits in place, so the caller does not have to copy them.
//!
//! The softmax normaliser is accumulated in `f64` after subtracting the maximum, so it neither overflows nor
//! loses the small terms of a 100k+ vocabulary. NaN logits are treated as `-inf` (probability zero).

/// The log-probability of the sampled token and the most likely alternatives at one position.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenLogprobs {
    /// The token that was chosen.
    pub token: u32,
    /// Its natural-log probability under the raw distribution.
    pub logprob: f32,
    /// The `top_n` most likely tokens, most likely first (ties: lowest id first), with their logprobs.
    pub top: Vec<(u32, f32)>,
}

/// `ln(sum(exp(logits)))`, computed stably in `f64`. `-inf` when every logit is `-inf` or NaN (or the slice
/// is empty).
pub fn log_sum_exp(logits: &[f32]) -> f64 {
    let max = logits
        .iter()
        .copied()
        .filter(|x| !x.is_nan())
        .fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        return f64::NEG_INFINITY;
    }
    if max == f32::INFINITY {
        return f64::INFINITY;
    }
    let m = max as f64;
    let sum: f64 = logits
        .iter()
        .filter(|x| !x.is_nan())
        .map(|&x| (x as f64 - m).exp())
        .sum();
    m + sum.ln()
}

/// One token's logprob given the normaliser from [`log_sum_exp`].
#[inline]
pub(crate) fn logprob_with(logit: f32, lse: f64) -> f32 {
    if logit.is_nan() || logit == f32::NEG_INFINITY || lse == f64::NEG_INFINITY {
        return f32::NEG_INFINITY;
    }
    (logit as f64 - lse) as f32
}

/// Log-softmax of `logits` written into `out` (same length), without allocating.
///
/// # Panics
/// If `out` and `logits` have different lengths.
pub fn log_softmax_into(logits: &[f32], out: &mut [f32]) {
    assert_eq!(logits.len(), out.len(), "log_softmax_into: length mismatch");
    let lse = log_sum_exp(logits);
    for (o, &x) in out.iter_mut().zip(logits) {
        *o = logprob_with(x, lse);
    }
}

/// Log-softmax of `logits` as a new vector: `exp` of the result sums to 1.
pub fn log_softmax(logits: &[f32]) -> Vec<f32> {
    let mut out = vec![0.0; logits.len()];
    log_softmax_into(logits, &mut out);
    out
}

/// The logprob of token `id` (`-inf` if it is out of range).
pub fn logprob_of(logits: &[f32], id: u32) -> f32 {
    match logits.get(id as usize) {
        Some(&x) => logprob_with(x, log_sum_exp(logits)),
        None => f32::NEG_INFINITY,
    }
}

/// The `n` most likely tokens with their logprobs, most likely first, ties broken by the lowest id.
///
/// Selection keeps a sorted list of at most `n` entries and rejects most logits with one comparison, so it is
/// a single pass over the vocabulary without a vocabulary-sized buffer.
pub fn top_logprobs(logits: &[f32], n: usize) -> Vec<(u32, f32)> {
    top_logprobs_with(logits, n, log_sum_exp(logits))
}

fn top_logprobs_with(logits: &[f32], n: usize, lse: f64) -> Vec<(u32, f32)> {
    let n = n.min(logits.len());
    let mut top: Vec<(u32, f32)> = Vec::with_capacity(n + 1);
    if n == 0 {
        return top;
    }
    for (i, &x) in logits.iter().enumerate() {
        let x = if x.is_nan() { f32::NEG_INFINITY } else { x };
        // Ids arrive in increasing order, so a later id only displaces an entry with a strictly lower logit.
        if top.len() == n && x <= top[n - 1].1 {
            continue;
        }
        let pos = top.partition_point(|&(_, y)| y >= x);
        top.insert(pos, (i as u32, x));
        top.truncate(n);
    }
    for entry in &mut top {
        entry.1 = logprob_with(entry.1, lse);
    }
    top
}

/// The chosen token's logprob plus the `top_n` alternatives, sharing one normaliser.
pub fn logprobs(logits: &[f32], token: u32, top_n: usize) -> TokenLogprobs {
    let lse = log_sum_exp(logits);
    let logprob = logits
        .get(token as usize)
        .map_or(f32::NEG_INFINITY, |&x| logprob_with(x, lse));
    TokenLogprobs {
        token,
        logprob,
        top: top_logprobs_with(logits, top_n, lse),
    }
}
