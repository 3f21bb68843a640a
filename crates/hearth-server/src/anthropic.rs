//! Anthropic's Messages API: `POST /v1/messages` (one `message` body, or the event stream the official SDKs
//! consume) and `POST /v1/messages/count_tokens`, with errors in Anthropic's envelope. Model names such as
//! `claude-…` reach a local model through the registry's alias map.
//!
//! Decisions:
//! - A trailing assistant message is a prefill: the conversation before it is rendered with the header of a new
//!   assistant turn and the prefill text appended, so the reply continues it. The response holds only the
//!   continuation, as Anthropic's does.
//! - `usage.input_tokens` counts the prompt tokens that were computed; tokens whose KV cache was reused from the
//!   previous request are `cache_read_input_tokens` (Anthropic's split: the two add up to the prompt). A stream
//!   reports the whole prompt as `input_tokens` in `message_start` (the reuse is not known yet) and the split in
//!   `message_delta`.
//! - Running out of context ends with `max_tokens`, the same as reaching `max_tokens`; a `max_tokens` beyond the
//!   context is not an error (clients send large fixed values).
//! - `?beta=true` needs nothing: query strings are ignored by these routes.

use axum::extract::State;
use axum::response::sse::Event as SseEvent;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Json, Router};
use hearth_engine::generate::{Finish, GenerateOptions};
use hearth_engine::tokenizer::ChatMessage;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::body::ApiJson;
use crate::error::{Anthropic, ApiError, Failure};
use crate::job::{Event, Summary};
use crate::middleware::{new_id, RequestId};
use crate::prompt::{self, in_range, int_in_range, stop_strings, Sampling};
use crate::sse::{self, JobSpec, StreamFormat};
use crate::AppState;

/// The Anthropic routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/messages", post(messages))
        .route("/v1/messages/count_tokens", post(count_tokens))
}

/// A `/v1/messages` body; fields not listed (metadata, tools, thinking, ...) are accepted and ignored.
#[derive(Debug, Deserialize)]
pub struct MessagesRequest {
    pub model: Option<String>,
    pub messages: Vec<InMessage>,
    pub system: Option<Value>,
    pub max_tokens: Option<i64>,
    pub stop_sequences: Option<Value>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub top_k: Option<i64>,
    pub stream: Option<bool>,
    /// Ollama's extension: how long the model stays loaded after this request.
    pub keep_alive: Option<Value>,
}

/// A `/v1/messages/count_tokens` body.
#[derive(Debug, Deserialize)]
pub struct CountRequest {
    pub model: Option<String>,
    pub messages: Vec<InMessage>,
    pub system: Option<Value>,
}

/// One message as sent.
#[derive(Debug, Deserialize)]
pub struct InMessage {
    pub role: String,
    pub content: Value,
}

/// The conversation as the template sees it (system first), and the prefill when the last message is the
/// assistant's.
fn conversation(
    system: Option<&Value>,
    messages: &[InMessage],
) -> Result<(Vec<ChatMessage>, Option<String>), ApiError> {
    if messages.is_empty() {
        return Err(ApiError::bad_param(
            "messages",
            "messages must not be empty",
        ));
    }
    let mut out = Vec::with_capacity(messages.len() + 1);
    if let Some(system) = system.filter(|s| !s.is_null()) {
        let text = prompt::text_content(system, "system")?;
        if !text.is_empty() {
            out.push(ChatMessage::new("system", text));
        }
    }
    for (i, m) in messages.iter().enumerate() {
        if m.role != "user" && m.role != "assistant" {
            return Err(ApiError::bad_param(
                &format!("messages[{i}].role"),
                format!(
                    "messages[{i}].role must be \"user\" or \"assistant\", got {:?}",
                    m.role
                ),
            ));
        }
        let content = prompt::text_content(&m.content, &format!("messages[{i}].content"))?;
        out.push(ChatMessage::new(m.role.as_str(), content));
    }
    let prefill = match out.last() {
        Some(m) if m.role == "assistant" => out.pop().map(|m| m.content),
        _ => None,
    };
    Ok((out, prefill))
}

/// Anthropic's stop reasons.
fn stop_reason(f: Finish) -> &'static str {
    match f {
        Finish::EndOfSequence | Finish::Cancelled => "end_turn",
        Finish::StopString(_) => "stop_sequence",
        Finish::Length | Finish::ContextFull => "max_tokens",
    }
}

/// The matched stop sequence, or null.
fn stop_sequence(f: Finish, stops: &[String]) -> Value {
    match f {
        Finish::StopString(i) => stops.get(i).map_or(Value::Null, |s| json!(s)),
        _ => Value::Null,
    }
}

fn final_usage(s: &Summary) -> Value {
    json!({
        "input_tokens": s.prompt_tokens.saturating_sub(s.cached_tokens),
        "output_tokens": s.completion_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": s.cached_tokens,
    })
}

/// Handles `POST /v1/messages`.
pub async fn messages(
    State(state): State<AppState>,
    rid: Option<Extension<RequestId>>,
    ApiJson(req, _): ApiJson<MessagesRequest, Anthropic>,
) -> Result<Response, Failure<Anthropic>> {
    let request_id = RequestId::or_new(rid);
    let max_tokens = match req.max_tokens {
        None => return Err(ApiError::bad_param("max_tokens", "max_tokens: Field required").into()),
        Some(v) => prompt::int_at_least("max_tokens", Some(v), 1)?,
    };
    let (messages, prefill) = conversation(req.system.as_ref(), &req.messages)?;
    let stop = stop_strings("stop_sequences", req.stop_sequences.as_ref(), None)?;
    let sampling = Sampling {
        temperature: in_range("temperature", req.temperature, 0.0, 1.0)?,
        top_p: in_range("top_p", req.top_p, 0.0, 1.0)?,
        top_k: int_in_range("top_k", req.top_k, 0, i64::from(u32::MAX))?,
        ..Sampling::default()
    };
    let options = GenerateOptions {
        sampling: sampling.params()?,
        max_tokens,
        stop: stop.clone(),
        logprobs: None,
    };
    let stream = req.stream.unwrap_or(false);

    let handle = prompt::acquire(&state, req.model.as_deref(), req.keep_alive.as_ref()).await?;
    let ids = prompt::chat_prompt(handle.tokenizer.clone(), messages, prefill).await?;
    prompt::check_len(&handle, &ids, "messages")?;
    let prompt_tokens = ids.len();
    let spec = JobSpec {
        prompt: ids,
        options,
        prompt_logprobs: None,
        score_only: false,
    };
    let mut rx = sse::submit(&handle, &request_id, spec)?;
    let id = new_id("msg_");

    if stream {
        sse::started(&mut rx).await?;
        let start = json!({
            "type": "message_start",
            "message": {
                "id": id,
                "type": "message",
                "role": "assistant",
                "model": handle.id,
                "content": [],
                "stop_reason": null,
                "stop_sequence": null,
                "usage": {
                    "input_tokens": prompt_tokens,
                    "output_tokens": 0,
                    "cache_creation_input_tokens": 0,
                    "cache_read_input_tokens": 0,
                },
            },
        });
        let prelude = vec![
            event("message_start", &start),
            event(
                "content_block_start",
                &json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            ),
            event("ping", &json!({"type": "ping"})),
        ];
        let format = MessageStream {
            model: handle.id.clone(),
            stops: stop,
            request_id: request_id.clone(),
        };
        return Ok(sse::stream(rx, format, prelude, &request_id).into_response());
    }

    let out = sse::collect(rx).await?;
    let reason = stop_reason(out.summary.finish);
    sse::log_done(&request_id, &handle.id, &out.summary, reason);
    let body = json!({
        "id": id,
        "type": "message",
        "role": "assistant",
        "model": handle.id,
        "content": [{"type": "text", "text": out.text}],
        "stop_reason": reason,
        "stop_sequence": stop_sequence(out.summary.finish, &stop),
        "usage": final_usage(&out.summary),
    });
    Ok(Json(body).into_response())
}

/// Handles `POST /v1/messages/count_tokens`: the prompt's length as the model would see it, counted with the
/// model's own tokenizer and chat template (so the model is loaded if it is not).
pub async fn count_tokens(
    State(state): State<AppState>,
    ApiJson(req, _): ApiJson<CountRequest, Anthropic>,
) -> Result<Json<Value>, Failure<Anthropic>> {
    let (messages, prefill) = conversation(req.system.as_ref(), &req.messages)?;
    let handle = prompt::acquire(&state, req.model.as_deref(), None).await?;
    let ids = prompt::chat_prompt(handle.tokenizer.clone(), messages, prefill).await?;
    Ok(Json(json!({"input_tokens": ids.len()})))
}

/// A named server-sent event.
fn event(name: &str, data: &Value) -> SseEvent {
    SseEvent::default().event(name).data(data.to_string())
}

/// Writes a job's events as Anthropic's stream: text deltas, then the block's end and the message's.
struct MessageStream {
    model: String,
    stops: Vec<String>,
    request_id: String,
}

impl StreamFormat for MessageStream {
    fn on_event(&mut self, ev: Event) -> Vec<SseEvent> {
        match ev {
            Event::Token { text, .. } if !text.is_empty() => vec![event(
                "content_block_delta",
                &json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}}),
            )],
            Event::Done(s) => {
                let reason = stop_reason(s.finish);
                sse::log_done(&self.request_id, &self.model, &s, reason);
                vec![
                    event(
                        "content_block_stop",
                        &json!({"type": "content_block_stop", "index": 0}),
                    ),
                    event(
                        "message_delta",
                        &json!({
                            "type": "message_delta",
                            "delta": {"stop_reason": reason, "stop_sequence": stop_sequence(s.finish, &self.stops)},
                            "usage": final_usage(&s),
                        }),
                    ),
                    event("message_stop", &json!({"type": "message_stop"})),
                ]
            }
            _ => Vec::new(),
        }
    }

    fn on_error(&mut self, error: ApiError) -> Vec<SseEvent> {
        tracing::info!(request_id = %self.request_id, error = %error.message, "stream ended with an error");
        vec![event("error", &error.anthropic_body())]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msgs(v: Value) -> Vec<InMessage> {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn conversations() {
        let m = msgs(
            json!([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Sure:"}]),
        );
        let system = json!([{"type": "text", "text": "be brief"}]);
        let (c, prefill) = conversation(Some(&system), &m).unwrap();
        assert_eq!(
            c,
            vec![
                ChatMessage::new("system", "be brief"),
                ChatMessage::new("user", "hi")
            ]
        );
        assert_eq!(prefill.as_deref(), Some("Sure:"));
        let bad = msgs(json!([{"role": "user", "content": [{"type": "image", "source": {}}]}]));
        assert!(conversation(None, &bad)
            .unwrap_err()
            .message
            .contains("image"));
        let bad = msgs(json!([{"role": "system", "content": "x"}]));
        assert!(conversation(None, &bad).is_err());
        assert!(conversation(None, &[]).is_err());
        assert_eq!(stop_reason(Finish::ContextFull), "max_tokens");
        assert_eq!(
            stop_sequence(Finish::StopString(1), &["a".into(), "b".into()]),
            json!("b")
        );
    }
}
