//! Sampling parameters: what a request asks for, checked once before generation starts.

use crate::{Error, Result};

/// How the next token is chosen from the model's logits.
///
/// Every knob has an "off" value so that a request can enable exactly the processors it wants. The processors
/// run in a fixed order (see [`crate::sample::Sampler`]): logit bias, penalties, then greedy argmax if
/// `temperature` is 0, else temperature, top-k, top-p, min-p and a random draw.
#[derive(Clone, Debug, PartialEq)]
pub struct SamplingParams {
    /// Divides the logits before the draw: below 1 sharpens the distribution, above 1 flattens it.
    /// `0` (or any value `<= 0`) means greedy decoding: always the highest logit, ties to the lowest id.
    pub temperature: f32,
    /// Keep only the `top_k` most likely tokens. `0` = off.
    pub top_k: usize,
    /// Nucleus sampling: keep the smallest set of most likely tokens whose probability sums to at least
    /// `top_p`. `1.0` = off. The most likely token is always kept, so a tiny `top_p` behaves like greedy.
    pub top_p: f32,
    /// Keep tokens whose probability is at least `min_p` times the most likely token's. `0` = off.
    /// Unlike top-p it adapts to confidence: a peaked distribution keeps few tokens, a flat one many.
    pub min_p: f32,
    /// Repetition penalty as in Hugging Face transformers and llama.cpp: for each distinct token present in the
    /// penalty window (prompt and generated tokens alike), a positive logit is divided by it and a negative
    /// one multiplied by it, so values above 1 always make repeats less likely. `1.0` = off.
    pub repetition_penalty: f32,
    /// OpenAI presence penalty: subtracted once from the logit of every token that occurs among the
    /// *generated* tokens in the penalty window (prompt tokens do not count). Negative values encourage repeats.
    pub presence_penalty: f32,
    /// OpenAI frequency penalty: subtracted from a token's logit once per occurrence among the *generated*
    /// tokens in the penalty window (prompt tokens do not count).
    pub frequency_penalty: f32,
    /// How many of the most recent context tokens (prompt + generated) the penalties look at. `0` = all.
    /// Presence and frequency penalties count only the generated tokens inside this window, so with `0`
    /// they follow OpenAI's semantics exactly.
    pub penalty_last_n: usize,
    /// `(token id, bias)` pairs added to the logits before anything else. `f32::NEG_INFINITY` bans a token
    /// outright; OpenAI-style `-100` / `+100` practically ban / force it. Ids outside the vocabulary are ignored.
    pub logit_bias: Vec<(u32, f32)>,
    /// Seed for the random draw. The same seed, parameters and logits give the same tokens on every
    /// platform. `None` = seeded from OS randomness and the clock.
    pub seed: Option<u64>,
}

impl Default for SamplingParams {
    /// The defaults of common local runtimes: temperature 0.8, top-k 40, top-p 0.95, min-p 0.05 and no
    /// penalties. They give varied but coherent text; use [`SamplingParams::greedy`] for deterministic output.
    fn default() -> Self {
        SamplingParams {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repetition_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            penalty_last_n: 64,
            logit_bias: Vec::new(),
            seed: None,
        }
    }
}

impl SamplingParams {
    /// Greedy decoding with every filter and penalty off: always the argmax (ties to the lowest id).
    pub fn greedy() -> Self {
        SamplingParams {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            ..Self::default()
        }
    }

    /// Plain sampling from the softmax at `temperature` with every filter and penalty off.
    pub fn pure(temperature: f32) -> Self {
        SamplingParams {
            temperature,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            ..Self::default()
        }
    }

    /// Whether these parameters pick the argmax without drawing a random number.
    ///
    /// True for `temperature <= 0` (or NaN) and for `top_k == 1` (which keeps only the argmax).
    pub fn is_greedy(&self) -> bool {
        self.temperature.is_nan() || self.temperature <= 0.0 || self.top_k == 1
    }

    /// Rejects values that would make sampling meaningless (NaN, top-p outside [0, 1], a repetition penalty
    /// of 0 or less), so that a server can answer 400 instead of producing garbage.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::BadRequest(msg));
        if !self.temperature.is_finite() || self.temperature < 0.0 {
            return bad(format!(
                "temperature must be >= 0, got {}",
                self.temperature
            ));
        }
        if !(0.0..=1.0).contains(&self.top_p) {
            return bad(format!("top_p must be in [0, 1], got {}", self.top_p));
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return bad(format!("min_p must be in [0, 1], got {}", self.min_p));
        }
        if !(self.repetition_penalty.is_finite() && self.repetition_penalty > 0.0) {
            return bad(format!(
                "repetition_penalty must be > 0, got {}",
                self.repetition_penalty
            ));
        }
        if !self.presence_penalty.is_finite() {
            return bad(format!(
                "presence_penalty must be finite, got {}",
                self.presence_penalty
            ));
        }
        if !self.frequency_penalty.is_finite() {
            return bad(format!(
                "frequency_penalty must be finite, got {}",
                self.frequency_penalty
            ));
        }
        if let Some(&(id, b)) = self.logit_bias.iter().find(|(_, b)| b.is_nan()) {
            return bad(format!("logit_bias for token {id} is {b}"));
        }
        Ok(())
    }
}
