//! OpenAI's API: `POST /v1/chat/completions` ([`chat`]) and `POST /v1/completions` ([`completions`]), with
//! bodies, stream chunks and errors shaped as OpenAI defines them, so the official SDKs and tools built on them
//! (chat UIs, lm-evaluation-harness) work unchanged.
//!
//! Fields OpenAI defines but hearth does not support fail loudly where ignoring them would change the answer
//! (`n > 1`, non-text content); fields that only tune delivery or bookkeeping (`user`, `store`, `metadata`,
//! ...) are ignored. Extensions: `keep_alive` (Ollama's), `top_k`, `min_p`, `repetition_penalty` and
//! `continue_final_message` (vLLM's names).
//!
//! Defaults and limits: sampling defaults are OpenAI's (temperature 1, every filter off); `max_tokens` unset
//! means until end of sequence or a full context; a `max_tokens` larger than the room left in the context is
//! not an error, generation just ends there with `finish_reason: "length"`. Stop strings are matched on the
//! generated text and never appear in it, not even in part while streaming.

pub mod chat;
pub mod completions;

use axum::routing::post;
use axum::Router;
use hearth_engine::generate::Finish;
use hearth_engine::sample::TokenLogprobs;
use hearth_engine::tokenizer::Tokenizer;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::job::Summary;
use crate::prompt::{in_range, int_at_least, int_in_range, Sampling};
use crate::AppState;

/// The OpenAI routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/chat/completions", post(chat::handler))
        .route("/v1/completions", post(completions::handler))
}

/// Reported as `system_fingerprint`: which server produced the output.
pub const FINGERPRINT: &str = concat!("hearth-", env!("CARGO_PKG_VERSION"));

/// `stream_options`.
#[derive(Debug, Default, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: Option<bool>,
}

/// The sampling fields both endpoints take.
#[derive(Debug, Default, Deserialize)]
pub struct SamplingFields {
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub top_k: Option<i64>,
    pub min_p: Option<f64>,
    pub repetition_penalty: Option<f64>,
    pub presence_penalty: Option<f64>,
    pub frequency_penalty: Option<f64>,
    pub seed: Option<i64>,
    pub logit_bias: Option<serde_json::Map<String, Value>>,
    pub n: Option<i64>,
}

impl SamplingFields {
    /// Checks every range OpenAI documents (and sane ones for the extensions). The logit bias is checked
    /// against the vocabulary later, once the model is known.
    pub fn check(&self) -> Result<Sampling, ApiError> {
        match self.n {
            None | Some(1) => {}
            Some(n) if n > 1 => return Err(ApiError::bad_param("n", "n > 1 is not supported")),
            Some(n) => {
                return Err(ApiError::bad_param(
                    "n",
                    format!("n must be at least 1, got {n}"),
                ))
            }
        }
        let repetition_penalty =
            in_range("repetition_penalty", self.repetition_penalty, 0.0, 10.0)?;
        if repetition_penalty == Some(0.0) {
            return Err(ApiError::bad_param(
                "repetition_penalty",
                "repetition_penalty must be above 0",
            ));
        }
        Ok(Sampling {
            temperature: in_range("temperature", self.temperature, 0.0, 2.0)?,
            top_p: in_range("top_p", self.top_p, 0.0, 1.0)?,
            top_k: int_in_range("top_k", self.top_k, 0, i64::from(u32::MAX))?,
            min_p: in_range("min_p", self.min_p, 0.0, 1.0)?,
            repetition_penalty,
            presence_penalty: in_range("presence_penalty", self.presence_penalty, -2.0, 2.0)?,
            frequency_penalty: in_range("frequency_penalty", self.frequency_penalty, -2.0, 2.0)?,
            logit_bias: Vec::new(),
            // OpenAI's seed is a signed 64-bit integer; its bits seed the generator.
            seed: self.seed.map(|s| s as u64),
        })
    }
}

/// `max_tokens` / `max_completion_tokens`: the newer name wins when both are sent. `min` is 1, or 0 where
/// generating nothing makes sense (scoring an echoed prompt).
pub fn max_tokens(
    max_tokens: Option<i64>,
    max_completion_tokens: Option<i64>,
    min: i64,
) -> Result<Option<usize>, ApiError> {
    match (max_completion_tokens, max_tokens) {
        (Some(v), _) => int_at_least("max_completion_tokens", Some(v), min),
        (None, v) => int_at_least("max_tokens", v, min),
    }
}

/// OpenAI's finish reasons: the model ended (or a stop sequence) is "stop"; running out of tokens, whether
/// `max_tokens` or the context, is "length".
pub fn finish_reason(f: Finish) -> &'static str {
    match f {
        Finish::EndOfSequence | Finish::StopString(_) | Finish::Cancelled => "stop",
        Finish::Length | Finish::ContextFull => "length",
    }
}

/// The `usage` object.
pub fn usage(s: &Summary) -> Value {
    json!({
        "prompt_tokens": s.prompt_tokens,
        "completion_tokens": s.completion_tokens,
        "total_tokens": s.prompt_tokens + s.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": s.cached_tokens},
    })
}

/// The end of an OpenAI stream: with `include_usage`, a chunk of object `object` with no choices and the
/// usage, then `data: [DONE]`.
pub fn stream_end(
    object: &str,
    id: &str,
    created: u64,
    model: &str,
    include_usage: bool,
    s: &Summary,
) -> Vec<axum::response::sse::Event> {
    let mut out = Vec::with_capacity(2);
    if include_usage {
        out.push(crate::sse::json_event(&json!({
            "id": id,
            "object": object,
            "created": created,
            "model": model,
            "system_fingerprint": FINGERPRINT,
            "choices": [],
            "usage": usage(s),
        })));
    }
    out.push(axum::response::sse::Event::default().data("[DONE]"));
    out
}

/// A token's own text for log-probability reports: its decoded bytes with control tokens shown. SentencePiece
/// decoders drop the leading space of a sequence, which for a single token would drop its own word boundary,
/// so that space is put back. A token holding part of a multi-byte character shows U+FFFD.
pub fn token_text(tok: &Tokenizer, id: u32) -> String {
    let text = tok.decode_with(&[id], false).unwrap_or_default();
    match tok.token_str(id) {
        Some(raw) if raw.starts_with('\u{2581}') && !text.starts_with(' ') => format!(" {text}"),
        _ => text,
    }
}

/// JSON cannot carry -inf (a token the model rules out entirely); OpenAI reports such values as -9999.
pub fn finite(lp: f32) -> f32 {
    if lp.is_finite() {
        lp
    } else {
        -9999.0
    }
}

/// The bytes a token stands for, for `bytes` fields: its text's bytes, except for a token holding part of a
/// multi-byte character (its text shows U+FFFD), whose raw bytes are recovered from the vocabulary entry
/// (a `<0xHH>` byte-fallback piece, or a byte-level BPE piece written in GPT-2's byte-to-character mapping), so
/// a client can join consecutive tokens' bytes into the real character.
pub fn token_bytes(tok: &Tokenizer, id: u32, text: &str) -> Vec<u8> {
    if !text.contains('\u{FFFD}') {
        return text.as_bytes().to_vec();
    }
    let Some(raw) = tok.token_str(id) else {
        return text.as_bytes().to_vec();
    };
    if let Some(hex) = raw.strip_prefix("<0x").and_then(|r| r.strip_suffix('>')) {
        if let Ok(b) = u8::from_str_radix(hex, 16) {
            return vec![b];
        }
    }
    raw.chars()
        .map(byte_level_byte)
        .collect::<Option<Vec<u8>>>()
        .unwrap_or_else(|| text.as_bytes().to_vec())
}

/// The byte a character stands for in GPT-2's byte-level alphabet: printable Latin-1 bytes stand for
/// themselves, and the other bytes, in increasing order, are written as U+0100, U+0101, ...
fn byte_level_byte(c: char) -> Option<u8> {
    let printable =
        |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
    let c = c as u32;
    if c < 256 {
        return printable(c).then_some(c as u8);
    }
    (0u32..256)
        .filter(|&b| !printable(b))
        .nth((c - 256) as usize)
        .map(|b| b as u8)
}

/// One chat `logprobs.content` entry: the chosen token and its alternatives, each with its text and bytes.
pub fn chat_logprob(tok: &Tokenizer, lp: &TokenLogprobs) -> Value {
    let entry = |id: u32, logprob: f32| {
        let t = token_text(tok, id);
        let bytes = token_bytes(tok, id, &t);
        json!({"token": t, "logprob": finite(logprob), "bytes": bytes})
    };
    let mut v = entry(lp.token, lp.logprob);
    v["top_logprobs"] = Value::Array(lp.top.iter().map(|&(id, l)| entry(id, l)).collect());
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_checks() {
        let f = |v: Value| serde_json::from_value::<SamplingFields>(v).unwrap().check();
        assert!(f(json!({})).is_ok());
        let e = f(json!({"n": 2})).unwrap_err();
        assert_eq!(e.message, "n > 1 is not supported");
        assert!(f(json!({"n": 0})).is_err());
        assert_eq!(
            f(json!({"temperature": 2.5})).unwrap_err().param.as_deref(),
            Some("temperature")
        );
        assert!(f(json!({"presence_penalty": -2.1})).is_err());
        assert!(f(json!({"top_p": 1.5})).is_err());
        assert!(f(json!({"repetition_penalty": 0})).is_err());
        assert_eq!(f(json!({"seed": -1})).unwrap().seed, Some(u64::MAX));
        assert_eq!(max_tokens(Some(5), Some(7), 1).unwrap(), Some(7));
        assert!(max_tokens(Some(0), None, 1).is_err());
        assert_eq!(max_tokens(Some(0), None, 0).unwrap(), Some(0));
        assert_eq!(finish_reason(Finish::ContextFull), "length");
        assert_eq!(finish_reason(Finish::StopString(0)), "stop");
        assert_eq!(finite(f32::NEG_INFINITY), -9999.0);
        assert_eq!(byte_level_byte('a'), Some(b'a'));
        assert_eq!(byte_level_byte('\u{0100}'), Some(0));
        assert_eq!(byte_level_byte('\u{0120}'), Some(b' '));
        assert_eq!(byte_level_byte('\u{0143}'), Some(0xad));
        assert_eq!(byte_level_byte('\u{2581}'), None);
    }
}
