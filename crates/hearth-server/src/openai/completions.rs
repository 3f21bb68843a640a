//! `POST /v1/completions`: raw text (or token ids) continued without a chat template; with `echo` and
//! `logprobs` it scores the prompt itself, which is how lm-evaluation-harness computes log-likelihoods.
//!
//! Decisions:
//! - `max_tokens` unset means until end of sequence or a full context (hearth's rule for every endpoint), not
//!   OpenAI's legacy 16. `max_tokens: 0` is allowed with `echo` (score the prompt, generate nothing).
//! - A text prompt is encoded with BOS as the model wants it; a token-id prompt is used exactly as sent, so a
//!   client that counts its own context tokens (lm-evaluation-harness) indexes the echoed tokens correctly.
//! - `logprobs: k` reports, per token, its own log-probability and a dict of the `k` most likely tokens plus
//!   the chosen one ("up to k + 1 entries", as OpenAI documents). With `echo`, the prompt's tokens come first and
//!   the first one has `null` (nothing precedes it). `text_offset` counts characters (Python `str` indices)
//!   into the returned `text`: a prompt token starts where the decoded text before it ends (BOS takes no
//!   room), generated tokens follow the echoed prompt text (from 0 without `echo`).
//! - One prompt per request: an array of several prompts is a 400.

use std::sync::Arc;

use axum::extract::State;
use axum::response::sse::Event as SseEvent;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use hearth_engine::generate::GenerateOptions;
use hearth_engine::sample::TokenLogprobs;
use hearth_engine::tokenizer::{Detokenizer, Tokenizer};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::{
    finish_reason, finite, max_tokens, stream_end, token_text, usage, SamplingFields,
    StreamOptions, FINGERPRINT,
};
use crate::body::ApiJson;
use crate::error::{ApiError, Failure, OpenAi};
use crate::job::Event;
use crate::middleware::{new_id, RequestId};
use crate::prompt::{self, int_in_range, stop_strings};
use crate::sse::{self, json_event, JobSpec, StreamFormat};
use crate::AppState;

/// The request body; fields not listed are ignored.
#[derive(Debug, Deserialize)]
pub struct CompletionRequest {
    pub model: Option<String>,
    pub prompt: Option<Value>,
    pub echo: Option<bool>,
    pub logprobs: Option<i64>,
    pub max_tokens: Option<i64>,
    pub best_of: Option<i64>,
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    pub stop: Option<Value>,
    pub keep_alive: Option<Value>,
    #[serde(flatten)]
    pub sampling: SamplingFields,
}

/// A prompt as sent.
#[derive(Debug, PartialEq)]
enum PromptIn {
    Text(String),
    Ids(Vec<u32>),
}

fn token_ids(items: &[Value]) -> Result<Vec<u32>, ApiError> {
    items
        .iter()
        .map(|v| {
            v.as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| {
                    ApiError::bad_param("prompt", format!("prompt token {v} is not a token id"))
                })
        })
        .collect()
}

/// A string, an array of one string, an array of token ids, or an array of one such array.
fn parse_prompt(v: Option<&Value>) -> Result<PromptIn, ApiError> {
    let shape = || {
        ApiError::bad_param(
            "prompt",
            "prompt must be a string, an array of token ids, or an array of one of those",
        )
    };
    match v {
        None | Some(Value::Null) => Err(ApiError::bad_param("prompt", "prompt is required")),
        Some(Value::String(s)) => Ok(PromptIn::Text(s.clone())),
        Some(Value::Array(items)) => {
            if items.is_empty() {
                return Err(ApiError::bad_param("prompt", "the prompt is empty"));
            }
            if items.iter().all(Value::is_number) {
                return token_ids(items).map(PromptIn::Ids);
            }
            if items.len() > 1 {
                return Err(ApiError::bad_param(
                    "prompt",
                    format!(
                        "prompt holds {} prompts; send one prompt per request",
                        items.len()
                    ),
                ));
            }
            match &items[0] {
                Value::String(s) => Ok(PromptIn::Text(s.clone())),
                Value::Array(ids) if ids.iter().all(Value::is_number) => {
                    token_ids(ids).map(PromptIn::Ids)
                }
                _ => Err(shape()),
            }
        }
        Some(_) => Err(shape()),
    }
}

/// Handles one completion request.
pub async fn handler(
    State(state): State<AppState>,
    rid: Option<Extension<RequestId>>,
    ApiJson(req, _): ApiJson<CompletionRequest, OpenAi>,
) -> Result<Response, Failure<OpenAi>> {
    let request_id = RequestId::or_new(rid);
    let prompt_in = parse_prompt(req.prompt.as_ref())?;
    let mut sampling = req.sampling.check()?;
    if matches!(req.best_of, Some(b) if b != 1) {
        return Err(ApiError::bad_param("best_of", "best_of other than 1 is not supported").into());
    }
    let echo = req.echo.unwrap_or(false);
    let max_tokens = max_tokens(req.max_tokens, None, 0)?;
    if max_tokens == Some(0) && !echo {
        return Err(ApiError::bad_param(
            "max_tokens",
            "max_tokens 0 needs echo: true (scoring the prompt)",
        )
        .into());
    }
    let stop = stop_strings("stop", req.stop.as_ref(), Some(4))?;
    let logprobs = int_in_range("logprobs", req.logprobs, 0, 5)?;
    let stream = req.stream.unwrap_or(false);
    let include_usage = stream
        && req
            .stream_options
            .as_ref()
            .and_then(|o| o.include_usage)
            .unwrap_or(false);

    let handle = prompt::acquire(&state, req.model.as_deref(), req.keep_alive.as_ref()).await?;
    sampling.logit_bias = prompt::logit_bias(req.sampling.logit_bias.as_ref(), handle.vocab)?;
    let tok = handle.tokenizer.clone();
    let (ids, prompt_text) = match prompt_in {
        PromptIn::Text(t) => (prompt::raw_prompt(tok.clone(), t.clone()).await?, t),
        PromptIn::Ids(ids) => {
            if let Some(bad) = ids.iter().find(|&&id| id as usize >= handle.vocab) {
                return Err(ApiError::bad_param(
                    "prompt",
                    format!(
                        "prompt token {bad} is outside the vocabulary of {} tokens",
                        handle.vocab
                    ),
                )
                .into());
            }
            let text = tok.decode(&ids).map_err(ApiError::from)?;
            (ids, text)
        }
    };
    prompt::check_len(&handle, &ids, "prompt")?;
    let score_only = max_tokens == Some(0);
    let spec = JobSpec {
        prompt: ids.clone(),
        options: GenerateOptions {
            sampling: sampling.params()?,
            max_tokens,
            stop,
            logprobs,
        },
        prompt_logprobs: logprobs.filter(|_| echo),
        score_only,
    };
    let mut rx = sse::submit(&handle, &request_id, spec)?;
    let mut format = CompletionStream {
        id: new_id("cmpl-"),
        created: sse::unix_now(),
        model: handle.id.clone(),
        tokenizer: tok,
        include_usage,
        request_id: request_id.clone(),
        logprobs,
        prompt_ids: ids,
        prompt_text: echo.then_some(prompt_text),
        offset: 0,
    };

    if stream {
        sse::started(&mut rx).await?;
        // Without prompt logprobs to wait for, the echoed prompt goes out at once.
        let prelude = match (&format.prompt_text, logprobs) {
            (Some(_), None) => format.echo_chunk(None).into_iter().collect(),
            _ => Vec::new(),
        };
        return Ok(sse::stream(rx, format, prelude, &request_id).into_response());
    }

    let out = sse::collect(rx).await?;
    let finish = finish_reason(out.summary.finish);
    sse::log_done(&request_id, &handle.id, &out.summary, finish);
    let mut report = Logprobs::default();
    if let Some(k) = logprobs {
        if let (Some(lps), Some(_)) = (&out.prompt_logprobs, &format.prompt_text) {
            format.add_prompt(&mut report, lps, k);
        }
        format.offset = format
            .prompt_text
            .as_deref()
            .map_or(0, |t| t.chars().count());
        for t in &out.tokens {
            format.add_token(&mut report, t.id, Some(&t.logprobs), k);
        }
    }
    let text = match &format.prompt_text {
        Some(p) => format!("{p}{}", out.text),
        None => out.text,
    };
    let body = json!({
        "id": format.id,
        "object": "text_completion",
        "created": format.created,
        "model": handle.id,
        "system_fingerprint": FINGERPRINT,
        "choices": [{
            "text": text,
            "index": 0,
            "logprobs": if logprobs.is_some() { report.to_json() } else { Value::Null },
            "finish_reason": finish,
        }],
        "usage": usage(&out.summary),
    });
    Ok(Json(body).into_response())
}

/// The legacy `logprobs` object: parallel arrays, one entry per token.
#[derive(Debug, Default)]
struct Logprobs {
    tokens: Vec<String>,
    token_logprobs: Vec<Value>,
    top_logprobs: Vec<Value>,
    text_offset: Vec<usize>,
}

impl Logprobs {
    fn to_json(&self) -> Value {
        json!({
            "tokens": self.tokens,
            "token_logprobs": self.token_logprobs,
            "top_logprobs": self.top_logprobs,
            "text_offset": self.text_offset,
        })
    }
}

/// Builds completion bodies and chunks; also the state of a streamed completion.
struct CompletionStream {
    id: String,
    created: u64,
    model: String,
    tokenizer: Arc<Tokenizer>,
    include_usage: bool,
    request_id: String,
    logprobs: Option<usize>,
    prompt_ids: Vec<u32>,
    /// The prompt's text, when it is echoed.
    prompt_text: Option<String>,
    /// Character offset of the next token in the returned text.
    offset: usize,
}

impl CompletionStream {
    /// Adds one token: its text, logprob, and the top `k` plus itself as a `{text: logprob}` dict.
    fn add_token(&mut self, report: &mut Logprobs, id: u32, lp: Option<&TokenLogprobs>, k: usize) {
        let text = token_text(&self.tokenizer, id);
        report.text_offset.push(self.offset);
        self.offset += text.chars().count();
        self.add_entry(report, text, lp, k);
    }

    /// Appends one token's text and log-probabilities (its offset is pushed by the caller).
    fn add_entry(&self, report: &mut Logprobs, text: String, lp: Option<&TokenLogprobs>, k: usize) {
        match lp {
            Some(lp) => {
                let mut top = Map::new();
                for &(alt, l) in lp.top.iter().take(k) {
                    top.entry(token_text(&self.tokenizer, alt))
                        .or_insert(json!(finite(l)));
                }
                top.entry(text.clone()).or_insert(json!(finite(lp.logprob)));
                report.token_logprobs.push(json!(finite(lp.logprob)));
                report.top_logprobs.push(Value::Object(top));
            }
            None => {
                report.token_logprobs.push(Value::Null);
                report.top_logprobs.push(Value::Null);
            }
        }
        report.tokens.push(text);
    }

    /// Adds the prompt's tokens with their log-probabilities (the first has none). Offsets index the echoed
    /// prompt text: each token starts where the decoded text of the tokens before it ends, so tokens that are
    /// not in the text (BOS, other control tokens) take no room.
    fn add_prompt(&mut self, report: &mut Logprobs, lps: &[Option<TokenLogprobs>], k: usize) {
        let ids = std::mem::take(&mut self.prompt_ids);
        let mut detok = Detokenizer::new(self.tokenizer.clone());
        let mut emitted = 0;
        for (i, &id) in ids.iter().enumerate() {
            report.text_offset.push(emitted);
            let text = token_text(&self.tokenizer, id);
            self.add_entry(report, text, lps.get(i).and_then(Option::as_ref), k);
            emitted += detok.push(id).map(|t| t.chars().count()).unwrap_or(0);
        }
        self.offset = emitted;
        self.prompt_ids = ids;
    }

    fn chunk(&self, text: &str, logprobs: Value, finish: Value) -> SseEvent {
        let mut v = json!({
            "id": self.id,
            "object": "text_completion",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": FINGERPRINT,
            "choices": [{"text": text, "index": 0, "logprobs": logprobs, "finish_reason": finish}],
        });
        if self.include_usage {
            v["usage"] = Value::Null;
        }
        json_event(&v)
    }

    /// The chunk that echoes the prompt, with its logprobs when they were asked for.
    fn echo_chunk(&mut self, lps: Option<&[Option<TokenLogprobs>]>) -> Option<SseEvent> {
        let text = self.prompt_text.clone()?;
        let report = match (lps, self.logprobs) {
            (Some(lps), Some(k)) => {
                let mut r = Logprobs::default();
                self.add_prompt(&mut r, lps, k);
                r.to_json()
            }
            _ => Value::Null,
        };
        self.offset = text.chars().count();
        Some(self.chunk(&text, report, Value::Null))
    }
}

impl StreamFormat for CompletionStream {
    fn on_event(&mut self, event: Event) -> Vec<SseEvent> {
        match event {
            Event::PromptLogprobs(lps) => self.echo_chunk(Some(&lps)).into_iter().collect(),
            Event::Token { id, text, logprobs } => {
                let report = match (self.logprobs, logprobs) {
                    (Some(k), Some(lp)) => {
                        let mut r = Logprobs::default();
                        self.add_token(&mut r, id, Some(&lp), k);
                        r.to_json()
                    }
                    _ if text.is_empty() => return Vec::new(),
                    _ => Value::Null,
                };
                vec![self.chunk(&text, report, Value::Null)]
            }
            Event::Done(s) => {
                let finish = finish_reason(s.finish);
                sse::log_done(&self.request_id, &self.model, &s, finish);
                let mut out = vec![self.chunk("", Value::Null, json!(finish))];
                out.extend(stream_end(
                    "text_completion",
                    &self.id,
                    self.created,
                    &self.model,
                    self.include_usage,
                    &s,
                ));
                out
            }
            Event::Started { .. } | Event::Failed(_) => Vec::new(),
        }
    }

    fn on_error(&mut self, error: ApiError) -> Vec<SseEvent> {
        tracing::info!(request_id = %self.request_id, error = %error.message, "stream ended with an error");
        vec![json_event(&error.openai_body())]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_shapes() {
        let p = |v: Value| parse_prompt(Some(&v));
        assert_eq!(p(json!("hi")).unwrap(), PromptIn::Text("hi".into()));
        assert_eq!(p(json!(["hi"])).unwrap(), PromptIn::Text("hi".into()));
        assert_eq!(p(json!([1, 2])).unwrap(), PromptIn::Ids(vec![1, 2]));
        assert_eq!(p(json!([[1, 2]])).unwrap(), PromptIn::Ids(vec![1, 2]));
        assert!(p(json!(["a", "b"]))
            .unwrap_err()
            .message
            .contains("one prompt per request"));
        assert!(p(json!([[1], [2]])).is_err());
        assert!(p(json!([])).is_err());
        assert!(p(json!([-1])).is_err());
        assert!(p(json!([1.5])).is_err());
        assert!(p(json!({})).is_err());
        assert!(parse_prompt(None).is_err());
    }
}
