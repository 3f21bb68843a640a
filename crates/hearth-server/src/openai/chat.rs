//! `POST /v1/chat/completions`: a conversation rendered with the model's chat template, answered as one
//! `chat.completion` body or as a stream of `chat.completion.chunk`s ending in `data: [DONE]`.

use axum::extract::State;
use axum::response::sse::Event as SseEvent;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use hearth_engine::generate::GenerateOptions;
use hearth_engine::tokenizer::{ChatMessage, Tokenizer};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;

use super::{
    chat_logprob, finish_reason, max_tokens, stream_end, usage, SamplingFields, StreamOptions,
    FINGERPRINT,
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
pub struct ChatRequest {
    pub model: Option<String>,
    pub messages: Vec<InMessage>,
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    pub max_tokens: Option<i64>,
    pub max_completion_tokens: Option<i64>,
    pub stop: Option<Value>,
    pub logprobs: Option<bool>,
    pub top_logprobs: Option<i64>,
    pub keep_alive: Option<Value>,
    /// vLLM's extension: continue the final assistant message instead of answering after it.
    pub continue_final_message: Option<bool>,
    #[serde(flatten)]
    pub sampling: SamplingFields,
}

/// One message as sent; `content` is checked by [`prompt::text_content`].
#[derive(Debug, Deserialize)]
pub struct InMessage {
    pub role: String,
    #[serde(default)]
    pub content: Value,
}

/// The conversation as the template sees it, and the text to continue when the last message is a prefill.
fn conversation(req: &ChatRequest) -> Result<(Vec<ChatMessage>, Option<String>), ApiError> {
    if req.messages.is_empty() {
        return Err(ApiError::bad_param(
            "messages",
            "messages must not be empty",
        ));
    }
    let mut out = Vec::with_capacity(req.messages.len());
    for (i, m) in req.messages.iter().enumerate() {
        let role = match m.role.as_str() {
            "system" | "developer" => "system",
            "user" => "user",
            "assistant" => "assistant",
            other => {
                return Err(ApiError::bad_param(
                    &format!("messages[{i}].role"),
                    format!(
                        "messages[{i}].role {other:?} is not supported; use system, developer, user or assistant"
                    ),
                ))
            }
        };
        let content = prompt::text_content(&m.content, &format!("messages[{i}].content"))?;
        out.push(ChatMessage::new(role, content));
    }
    let prefill = if req.continue_final_message == Some(true) {
        match out.last() {
            Some(m) if m.role == "assistant" => out.pop().map(|m| m.content),
            _ => {
                return Err(ApiError::bad_param(
                    "continue_final_message",
                    "continue_final_message needs the last message to be from the assistant",
                ))
            }
        }
    } else {
        None
    };
    Ok((out, prefill))
}

/// Handles one chat completion request.
pub async fn handler(
    State(state): State<AppState>,
    rid: Option<Extension<RequestId>>,
    ApiJson(req, _): ApiJson<ChatRequest, OpenAi>,
) -> Result<Response, Failure<OpenAi>> {
    let request_id = RequestId::or_new(rid);
    let (messages, prefill) = conversation(&req)?;
    let mut sampling = req.sampling.check()?;
    let max_tokens = max_tokens(req.max_tokens, req.max_completion_tokens, 1)?;
    let stop = stop_strings("stop", req.stop.as_ref(), Some(4))?;
    let top_logprobs = int_in_range("top_logprobs", req.top_logprobs, 0, 20)?;
    let logprobs = match (req.logprobs.unwrap_or(false), top_logprobs) {
        (true, n) => Some(n.unwrap_or(0)),
        (false, Some(n)) if n > 0 => {
            return Err(
                ApiError::bad_param("top_logprobs", "top_logprobs needs logprobs: true").into(),
            )
        }
        (false, _) => None,
    };
    let stream = req.stream.unwrap_or(false);
    let include_usage = stream
        && req
            .stream_options
            .as_ref()
            .and_then(|o| o.include_usage)
            .unwrap_or(false);

    let handle = prompt::acquire(&state, req.model.as_deref(), req.keep_alive.as_ref()).await?;
    sampling.logit_bias = prompt::logit_bias(req.sampling.logit_bias.as_ref(), handle.vocab)?;
    let options = GenerateOptions {
        sampling: sampling.params()?,
        max_tokens,
        stop,
        logprobs,
    };
    let ids = prompt::chat_prompt(handle.tokenizer.clone(), messages, prefill).await?;
    prompt::check_len(&handle, &ids, "messages")?;
    let spec = JobSpec {
        prompt: ids,
        options,
        prompt_logprobs: None,
        score_only: false,
    };
    let mut rx = sse::submit(&handle, &request_id, spec)?;
    let id = new_id("chatcmpl-");
    let created = sse::unix_now();

    if stream {
        sse::started(&mut rx).await?;
        let format = ChatStream {
            id,
            created,
            model: handle.id.clone(),
            tokenizer: handle.tokenizer.clone(),
            include_usage,
            request_id: request_id.clone(),
        };
        let prelude = vec![format.chunk(
            json!({"role": "assistant", "content": ""}),
            Value::Null,
            Value::Null,
        )];
        return Ok(sse::stream(rx, format, prelude, &request_id).into_response());
    }

    let out = sse::collect(rx).await?;
    let finish = finish_reason(out.summary.finish);
    sse::log_done(&request_id, &handle.id, &out.summary, finish);
    let logprobs = match logprobs {
        Some(_) => json!({
            "content": out.tokens.iter().map(|t| chat_logprob(&handle.tokenizer, &t.logprobs)).collect::<Vec<_>>(),
            "refusal": null,
        }),
        None => Value::Null,
    };
    let body = json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": handle.id,
        "system_fingerprint": FINGERPRINT,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": out.text, "refusal": null},
            "logprobs": logprobs,
            "finish_reason": finish,
        }],
        "usage": usage(&out.summary),
    });
    Ok(Json(body).into_response())
}

/// Writes a chat job's events as `chat.completion.chunk`s.
struct ChatStream {
    id: String,
    created: u64,
    model: String,
    tokenizer: Arc<Tokenizer>,
    include_usage: bool,
    request_id: String,
}

impl ChatStream {
    /// A chunk with one choice; with `include_usage`, every chunk but the last carries `"usage": null`.
    fn chunk(&self, delta: Value, logprobs: Value, finish: Value) -> SseEvent {
        let mut v = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": FINGERPRINT,
            "choices": [{"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish}],
        });
        if self.include_usage {
            v["usage"] = Value::Null;
        }
        json_event(&v)
    }
}

impl StreamFormat for ChatStream {
    fn on_event(&mut self, event: Event) -> Vec<SseEvent> {
        match event {
            Event::Token { text, logprobs, .. } => {
                if text.is_empty() && logprobs.is_none() {
                    return Vec::new();
                }
                let lp = match logprobs {
                    Some(lp) => {
                        json!({"content": [chat_logprob(&self.tokenizer, &lp)], "refusal": null})
                    }
                    None => Value::Null,
                };
                vec![self.chunk(json!({"content": text}), lp, Value::Null)]
            }
            Event::Done(s) => {
                let finish = finish_reason(s.finish);
                sse::log_done(&self.request_id, &self.model, &s, finish);
                let mut out = vec![self.chunk(json!({}), Value::Null, json!(finish))];
                out.extend(stream_end(
                    "chat.completion.chunk",
                    &self.id,
                    self.created,
                    &self.model,
                    self.include_usage,
                    &s,
                ));
                out
            }
            Event::Started { .. } | Event::PromptLogprobs(_) | Event::Failed(_) => Vec::new(),
        }
    }

    fn on_error(&mut self, error: ApiError) -> Vec<SseEvent> {
        tracing::info!(request_id = %self.request_id, error = %error.message, "stream ended with an error");
        vec![json_event(&error.openai_body())]
    }
}
