//! One sequence's generation loop, shared by the CLI (and, until the batching scheduler lands, by anything
//! else that generates): feed the prompt (reusing the cached prefix), then sample, detokenize and match stop
//! strings a token at a time, streaming text out through a callback.

use std::time::{Duration, Instant};

use crate::error::Result;
use crate::models::{Logits, Model, State};
use crate::sample::{Sampler, SamplingParams, StopMatcher, TokenLogprobs};
use crate::tokenizer::{Detokenizer, Tokenizer};

/// Largest number of tokens one forward call takes during prefill; longer prompts run in chunks.
pub const PREFILL_CHUNK: usize = 128;

/// What a generation request asks for.
#[derive(Clone, Debug, Default)]
pub struct GenerateOptions {
    pub sampling: SamplingParams,
    /// Most tokens to generate; None = until end of sequence or the context is full.
    pub max_tokens: Option<usize>,
    /// Text that ends generation; it is never emitted, not even in part.
    pub stop: Vec<String>,
    /// Report each generated token's log-probability and this many alternatives (None = no log-probabilities).
    pub logprobs: Option<usize>,
}

/// One generated token as the callback sees it.
pub struct TokenOut<'a> {
    pub id: u32,
    /// Text that became final with this token (empty while a character or a possible stop string is pending).
    pub text: &'a str,
    /// The token's log-probability under the raw logits, when asked for.
    pub logprobs: Option<&'a TokenLogprobs>,
}

/// Why generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finish {
    /// The model produced an end-of-sequence token.
    EndOfSequence,
    /// A stop string (by index into `GenerateOptions::stop`) appeared.
    StopString(usize),
    /// `max_tokens` were generated.
    Length,
    /// The context window is full.
    ContextFull,
    /// The caller's callback asked to stop (a client went away).
    Cancelled,
}

/// What one decoding step produced for a sequence.
pub struct Step {
    /// The sampled token, to feed next; None when the step ended the sequence without one to feed (the
    /// token limit was already reached, or end-of-sequence was sampled).
    pub id: Option<u32>,
    /// Text that became final (may be empty; at the end, includes text held back for stop strings).
    pub text: String,
    pub logprobs: Option<TokenLogprobs>,
    /// Set when the sequence is finished.
    pub finish: Option<Finish>,
}

/// The per-token half of generation for one sequence, independent of how its logits were computed (alone or
/// in a batch): sampling, end-of-sequence, incremental detokenizing, stop strings and length limits.
pub struct TokenStepper<T: std::ops::Deref<Target = Tokenizer> + Clone> {
    tok: T,
    sampler: Sampler,
    detok: Detokenizer<T>,
    stops: StopMatcher,
    logprobs: Option<usize>,
    limit: usize,
    context_len: usize,
    /// Tokens sampled so far (end-of-sequence included).
    pub generated: usize,
    /// The last token that produced text.
    pub last_id: u32,
}

impl<T: std::ops::Deref<Target = Tokenizer> + Clone> TokenStepper<T> {
    pub fn new(
        tok: T,
        opts: &GenerateOptions,
        vocab: usize,
        prompt_len: usize,
        context_len: usize,
    ) -> Self {
        let mut sampler = Sampler::new(opts.sampling.clone(), vocab);
        sampler.set_prompt_len(prompt_len);
        TokenStepper {
            detok: Detokenizer::new(tok.clone()),
            tok,
            sampler,
            stops: StopMatcher::new(&opts.stop),
            logprobs: opts.logprobs,
            limit: opts.max_tokens.unwrap_or(usize::MAX),
            context_len,
            generated: 0,
            last_id: 0,
        }
    }

    /// Picks the next token from `logits` (the sequence's last position; `history` = every token whose KV is
    /// computed, prompt first) and decides whether the sequence goes on.
    pub fn step(&mut self, logits: &mut [f32], history: &[u32]) -> Result<Step> {
        if self.generated >= self.limit {
            return Ok(self.finish(None, None, Finish::Length));
        }
        let (id, lp) = match self.logprobs {
            Some(n) => {
                let (id, lp) = self.sampler.sample_with_logprobs(logits, history, n);
                (id, Some(lp))
            }
            None => (self.sampler.sample(logits, history), None),
        };
        self.advance(id, lp, history)
    }

    /// When the next token is the largest logit after these biases ([`Sampler::greedy_bias`], and no
    /// log-probabilities asked for), the biases: the caller may then find that token where the logits are
    /// and hand it to [`TokenStepper::step_chosen`].
    pub fn greedy_bias(&self) -> Option<&[(u32, f32)]> {
        match self.logprobs {
            Some(_) => None,
            None => self.sampler.greedy_bias(),
        }
    }

    /// [`TokenStepper::step`] with the token already chosen: `id` must be `argmax_biased` of the logits
    /// with [`TokenStepper::greedy_bias`]'s biases.
    pub fn step_chosen(&mut self, id: u32, history: &[u32]) -> Result<Step> {
        if self.generated >= self.limit {
            return Ok(self.finish(None, None, Finish::Length));
        }
        self.advance(id, None, history)
    }

    /// Everything after the choice of token `id`: end-of-sequence, detokenizing, stop strings, limits.
    fn advance(&mut self, id: u32, lp: Option<TokenLogprobs>, history: &[u32]) -> Result<Step> {
        self.generated += 1;
        if self.tok.is_eos(id) {
            return Ok(self.finish(None, None, Finish::EndOfSequence));
        }
        self.last_id = id;
        let piece = self.detok.push(id)?;
        let out = self.stops.push(&piece);
        if let Some(i) = out.stop {
            return Ok(Step {
                id: Some(id),
                text: out.text,
                logprobs: lp,
                finish: Some(Finish::StopString(i)),
            });
        }
        let finish = if self.generated >= self.limit {
            Some(Finish::Length)
        } else if history.len() >= self.context_len {
            // No room to feed this token back.
            Some(Finish::ContextFull)
        } else {
            None
        };
        match finish {
            Some(f) => {
                let mut step = self.finish(Some(id), lp, f);
                step.text.insert_str(0, &out.text);
                Ok(step)
            }
            None => Ok(Step {
                id: Some(id),
                text: out.text,
                logprobs: lp,
                finish: None,
            }),
        }
    }

    /// Ends the sequence: releases text held for the detokenizer or a possible stop string.
    fn finish(&mut self, id: Option<u32>, logprobs: Option<TokenLogprobs>, f: Finish) -> Step {
        let mut text = String::new();
        if let Ok(rest) = self.detok.flush() {
            let out = self.stops.push(&rest);
            text.push_str(&out.text);
        }
        if self.stops.stopped().is_none() {
            text.push_str(&self.stops.flush());
        }
        Step {
            id,
            text,
            logprobs,
            finish: Some(f),
        }
    }
}

/// Counts and timings of one generation.
#[derive(Clone, Debug)]
pub struct GenerateStats {
    pub prompt_tokens: usize,
    /// Prompt tokens whose KV entries were reused rather than computed.
    pub cached_tokens: usize,
    pub generated_tokens: usize,
    pub prefill: Duration,
    pub decode: Duration,
    pub finish: Finish,
}

/// A sequence with its KV cache and the tokens that cache holds, so a follow-up prompt that extends them
/// (the next turn of a chat) only computes its new tokens.
pub struct Session<'m> {
    pub model: &'m Model,
    pub state: State,
    /// Tokens whose keys and values are in `state`.
    pub tokens: Vec<u32>,
}

impl<'m> Session<'m> {
    pub fn new(model: &'m Model) -> Session<'m> {
        Session {
            model,
            state: model.new_state(model.prefill_chunk()),
            tokens: Vec::new(),
        }
    }

    /// Makes the cache hold exactly `prompt` and returns the last position's logits and how many tokens were
    /// reused. At least the last prompt token is always recomputed, to get its logits.
    pub fn prefill(&mut self, prompt: &[u32]) -> Result<(Vec<f32>, usize)> {
        let common = self
            .tokens
            .iter()
            .zip(prompt)
            .take_while(|(a, b)| a == b)
            .count();
        let reuse = common.min(prompt.len().saturating_sub(1));
        self.state.truncate(reuse);
        self.tokens.truncate(reuse);
        let logits = self
            .model
            .forward(&mut self.state, &prompt[reuse..], Logits::Last)?
            .to_vec();
        self.tokens.extend_from_slice(&prompt[reuse..]);
        Ok((logits, reuse))
    }

    /// Generates after `prompt`, calling `on_token` for each generated token (end-of-sequence excluded) with
    /// the text that became final; `on_token` returns false to cancel. Text left pending at the end (held back
    /// for a stop string that never came) arrives in a last call with `id` of the final token.
    pub fn generate(
        &mut self,
        tok: &Tokenizer,
        prompt: &[u32],
        opts: &GenerateOptions,
        on_token: &mut dyn FnMut(TokenOut) -> bool,
    ) -> Result<GenerateStats> {
        let ctx = self.model.config.context_len;
        if prompt.is_empty() {
            return Err(crate::Error::BadRequest("the prompt is empty".into()));
        }
        if prompt.len() >= ctx {
            return Err(crate::Error::BadRequest(format!(
                "the prompt has {} tokens but the model's context is {ctx} tokens",
                prompt.len()
            )));
        }
        opts.sampling.validate()?;
        let t0 = Instant::now();
        let (mut logits, cached) = self.prefill(prompt)?;
        let prefill = t0.elapsed();
        let t1 = Instant::now();

        let mut stepper = TokenStepper::new(tok, opts, logits.len(), prompt.len(), ctx);
        let finish = loop {
            let step = stepper.step(&mut logits, &self.tokens)?;
            if step.id.is_some() || !step.text.is_empty() {
                let t = TokenOut {
                    id: step.id.unwrap_or(stepper.last_id),
                    text: &step.text,
                    logprobs: step.logprobs.as_ref(),
                };
                if !on_token(t) && step.finish.is_none() {
                    break Finish::Cancelled;
                }
            }
            if let Some(f) = step.finish {
                break f;
            }
            let id = step.id.expect("a step that does not finish yields a token");
            logits.copy_from_slice(self.model.forward(&mut self.state, &[id], Logits::Last)?);
            self.tokens.push(id);
        };
        let generated = stepper.generated;
        Ok(GenerateStats {
            prompt_tokens: prompt.len(),
            cached_tokens: cached,
            generated_tokens: generated,
            prefill,
            decode: t1.elapsed(),
            finish,
        })
    }
}

/// Scores a token sequence as one sequence: the sum of negative log-likelihoods of `ids[1..]`, each given its
/// prefix, and how many tokens were scored. `progress` is told how many tokens have been processed.
pub fn score_sequence(
    model: &Model,
    ids: &[u32],
    mut progress: impl FnMut(usize),
) -> Result<(f64, usize)> {
    if ids.len() < 2 {
        return Err(crate::Error::BadRequest(
            "fewer than 2 tokens: nothing to score".into(),
        ));
    }
    let mut nll = 0f64;
    let mut n = 0usize;
    for_each_prediction(model, ids, &mut progress, |row, target| {
        nll -= crate::sample::logprob_of(row, target) as f64;
        n += 1;
    })?;
    Ok((nll, n))
}

/// Log-probabilities of each token of `ids` given its prefix (`None` for the first, which has no prefix), with
/// `top_n` alternatives each: what OpenAI's `echo` + `logprobs` returns for a prompt.
pub fn prompt_logprobs(
    model: &Model,
    ids: &[u32],
    top_n: usize,
) -> Result<Vec<Option<TokenLogprobs>>> {
    let mut out = vec![None];
    if ids.len() < 2 {
        return Ok(out);
    }
    for_each_prediction(model, ids, &mut |_| {}, |row, target| {
        out.push(Some(crate::sample::logprobs::logprobs(row, target, top_n)));
    })?;
    Ok(out)
}

/// Runs `ids` through a fresh state in chunks and calls `f(logits at i, ids[i + 1])` for every position that
/// predicts a next token, in order; `progress` hears how many tokens have been processed.
fn for_each_prediction(
    model: &Model,
    ids: &[u32],
    progress: &mut dyn FnMut(usize),
    mut f: impl FnMut(&[f32], u32),
) -> Result<()> {
    // Every position's logits come back, so the chunk stays small whatever the device (a GPU chunk of 2048
    // rows would hold 2048 x vocab floats).
    let mut state = model.new_state(PREFILL_CHUNK);
    let vocab = model.config.vocab;
    for (c, piece) in ids[..ids.len().saturating_sub(1)]
        .chunks(PREFILL_CHUNK)
        .enumerate()
    {
        let logits = model.forward(&mut state, piece, Logits::All)?;
        for (i, row) in logits.chunks_exact(vocab).enumerate() {
            f(row, ids[c * PREFILL_CHUNK + i + 1]);
        }
        progress(c * PREFILL_CHUNK + piece.len());
    }
    Ok(())
}
