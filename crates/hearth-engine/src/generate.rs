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
            state: model.new_state(PREFILL_CHUNK),
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

        let mut sampler = Sampler::new(opts.sampling.clone(), logits.len());
        sampler.set_prompt_len(prompt.len());
        let mut detok = Detokenizer::new(tok);
        let mut stops = StopMatcher::new(&opts.stop);
        let mut generated = 0usize;
        let limit = opts.max_tokens.unwrap_or(usize::MAX);
        let mut last_id = 0;
        let finish = loop {
            if generated >= limit {
                break Finish::Length;
            }
            let (id, lp) = match opts.logprobs {
                Some(n) => {
                    let (id, lp) = sampler.sample_with_logprobs(&mut logits, &self.tokens, n);
                    (id, Some(lp))
                }
                None => (sampler.sample(&mut logits, &self.tokens), None),
            };
            generated += 1;
            if tok.is_eos(id) {
                break Finish::EndOfSequence;
            }
            last_id = id;
            let piece = detok.push(id)?;
            let out = stops.push(&piece);
            let t = TokenOut {
                id,
                text: &out.text,
                logprobs: lp.as_ref(),
            };
            if !on_token(t) {
                break Finish::Cancelled;
            }
            if let Some(i) = out.stop {
                break Finish::StopString(i);
            }
            if self.tokens.len() >= ctx {
                break Finish::ContextFull;
            }
            if generated >= limit {
                break Finish::Length;
            }
            logits.copy_from_slice(self.model.forward(&mut self.state, &[id], Logits::Last)?);
            self.tokens.push(id);
        };
        if matches!(
            finish,
            Finish::Length | Finish::ContextFull | Finish::EndOfSequence
        ) {
            let mut rest = stops.push(&detok.flush()?).text;
            if stops.stopped().is_none() {
                rest.push_str(&stops.flush());
            }
            if !rest.is_empty() {
                on_token(TokenOut {
                    id: last_id,
                    text: &rest,
                    logprobs: None,
                });
            }
        }
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
    let mut state = model.new_state(PREFILL_CHUNK);
    let vocab = model.config.vocab;
    let mut nll = 0f64;
    let mut n = 0usize;
    // The logits at position i predict token i + 1.
    for (c, piece) in ids[..ids.len() - 1].chunks(PREFILL_CHUNK).enumerate() {
        let logits = model.forward(&mut state, piece, Logits::All)?;
        for (i, row) in logits.chunks_exact(vocab).enumerate() {
            let target = ids[c * PREFILL_CHUNK + i + 1];
            nll -= crate::sample::logprob_of(row, target) as f64;
            n += 1;
        }
        progress(c * PREFILL_CHUNK + piece.len());
    }
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
    let mut state = model.new_state(PREFILL_CHUNK);
    let vocab = model.config.vocab;
    for (c, piece) in ids[..ids.len() - 1].chunks(PREFILL_CHUNK).enumerate() {
        let logits = model.forward(&mut state, piece, Logits::All)?;
        for (i, row) in logits.chunks_exact(vocab).enumerate() {
            let target = ids[c * PREFILL_CHUNK + i + 1];
            out.push(Some(crate::sample::logprobs::logprobs(row, target, top_n)));
        }
    }
    Ok(out)
}
