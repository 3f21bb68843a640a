//! Request pieces both APIs share: message content to [`ChatMessage`]s, the prompt's token ids (chat template
//! or raw text), and the checks that turn sampling fields into [`SamplingParams`] with a 400 naming the field
//! when a value is out of range.
//!
//! Tokenization rule: a chat template writes BOS (and every other control token) itself, so rendered chat text
//! is encoded without adding special tokens; a raw completion prompt is encoded with them, so it starts with
//! BOS exactly as `hearth run --raw` would.

use std::sync::Arc;

use hearth_engine::sample::SamplingParams;
use hearth_engine::tokenizer::{ChatMessage, Tokenizer};
use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::job::ModelHandle;
use crate::AppState;

/// The model a request names (missing or empty: the default model), loaded if needed. `keep_alive` is the
/// Ollama-style extension both APIs accept: how long the model stays loaded after this request.
pub async fn acquire(
    state: &AppState,
    model: Option<&str>,
    keep_alive: Option<&Value>,
) -> Result<Arc<ModelHandle>, ApiError> {
    let keep_alive = match keep_alive {
        None | Some(Value::Null) => None,
        Some(v) => Some(crate::registry::parse_keep_alive(v)?),
    };
    state
        .registry
        .acquire(model.unwrap_or("").trim(), keep_alive)
        .await
}

/// The text of a message's `content`: a string, or an array of `{"type": "text", "text": ...}` parts (OpenAI
/// content parts and Anthropic content blocks have this shape), joined with newlines. `null` is empty (an
/// OpenAI assistant message that only had tool calls). Any other part type is a 400 that names it, since
/// dropping an image or a tool result silently would make the model answer a different question.
pub fn text_content(content: &Value, at: &str) -> Result<String, ApiError> {
    match content {
        Value::Null => Ok(String::new()),
        Value::String(s) => Ok(s.clone()),
        Value::Array(parts) => {
            let mut texts = Vec::with_capacity(parts.len());
            for (i, part) in parts.iter().enumerate() {
                let here = format!("{at}[{i}]");
                let kind = part.get("type").and_then(Value::as_str).ok_or_else(|| {
                    ApiError::bad_param(
                        &here,
                        format!("{here} must be an object with a string \"type\""),
                    )
                })?;
                if kind != "text" {
                    return Err(ApiError::bad_param(
                        &here,
                        format!(
                            "{here}: content of type {kind:?} is not supported; only \"text\" is"
                        ),
                    ));
                }
                let text = part.get("text").and_then(Value::as_str).ok_or_else(|| {
                    ApiError::bad_param(&here, format!("{here}.text must be a string"))
                })?;
                texts.push(text);
            }
            Ok(texts.join("\n"))
        }
        _ => Err(ApiError::bad_param(
            at,
            format!("{at} must be a string or an array of text parts"),
        )),
    }
}

/// Renders a conversation with the model's chat template and tokenizes it (off the async threads: a 10 MB
/// prompt takes a while). With `prefill`, the conversation is rendered up to the header of a new assistant turn
/// and the prefill text is appended, so the model continues it rather than starting a fresh reply: the same
/// prompt whatever the template does with a trailing assistant message (many close it with an end-of-turn
/// token, which would make the model start over).
pub async fn chat_prompt(
    tokenizer: Arc<Tokenizer>,
    messages: Vec<ChatMessage>,
    prefill: Option<String>,
) -> Result<Vec<u32>, ApiError> {
    blocking(move || {
        let mut text = tokenizer.apply_chat_template(&messages, true, None)?;
        if let Some(p) = prefill {
            text.push_str(&p);
        }
        let ids = tokenizer.encode(&text, false)?;
        if ids.is_empty() {
            return Err(ApiError::bad_param(
                "messages",
                "the rendered prompt is empty",
            ));
        }
        Ok(ids)
    })
    .await
}

/// Tokenizes a raw completion prompt, with BOS as the model wants it.
pub async fn raw_prompt(tokenizer: Arc<Tokenizer>, text: String) -> Result<Vec<u32>, ApiError> {
    blocking(move || Ok(tokenizer.encode(&text, true)?)).await
}

/// Runs CPU-heavy prompt work on the blocking pool; a panic there becomes a 500, not a dead connection.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("prompt processing failed: {e}")))?
}

/// Checks the prompt fits the context, naming `param` (the request field that holds the prompt) on failure.
pub fn check_len(handle: &ModelHandle, ids: &[u32], param: &str) -> Result<(), ApiError> {
    if ids.is_empty() {
        return Err(ApiError::bad_param(param, "the prompt is empty"));
    }
    handle.check_prompt_len(ids.len()).map_err(|mut e| {
        e.param = Some(param.to_string());
        e
    })
}

/// A number field that must lie in `lo..=hi`.
pub fn in_range(param: &str, v: Option<f64>, lo: f64, hi: f64) -> Result<Option<f32>, ApiError> {
    match v {
        None => Ok(None),
        Some(x) if x.is_finite() && (lo..=hi).contains(&x) => Ok(Some(x as f32)),
        Some(x) => Err(ApiError::bad_param(
            param,
            format!("{param} must be between {lo} and {hi}, got {x}"),
        )),
    }
}

/// An integer field that must lie in `lo..=hi`.
pub fn int_in_range(
    param: &str,
    v: Option<i64>,
    lo: i64,
    hi: i64,
) -> Result<Option<usize>, ApiError> {
    match v {
        None => Ok(None),
        Some(x) if (lo..=hi).contains(&x) && x >= 0 => Ok(Some(x as usize)),
        Some(x) => Err(ApiError::bad_param(
            param,
            format!("{param} must be between {lo} and {hi}, got {x}"),
        )),
    }
}

/// An integer field with only a lower bound (`max_tokens`).
pub fn int_at_least(param: &str, v: Option<i64>, min: i64) -> Result<Option<usize>, ApiError> {
    match v {
        None => Ok(None),
        Some(x) if x >= min && x >= 0 => Ok(Some(usize::try_from(x).unwrap_or(usize::MAX))),
        Some(x) => Err(ApiError::bad_param(
            param,
            format!("{param} must be at least {min}, got {x}"),
        )),
    }
}

/// Stop strings: one string or an array of strings, at most `max` of them when the API has a limit. Empty
/// strings are dropped (they would stop before the first token).
pub fn stop_strings(
    param: &str,
    v: Option<&Value>,
    max: Option<usize>,
) -> Result<Vec<String>, ApiError> {
    let list: Vec<String> = match v {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|s| {
                s.as_str().map(str::to_string).ok_or_else(|| {
                    ApiError::bad_param(param, format!("{param} must hold only strings"))
                })
            })
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(ApiError::bad_param(
                param,
                format!("{param} must be a string or an array of strings"),
            ))
        }
    };
    if let Some(max) = max {
        if list.len() > max {
            return Err(ApiError::bad_param(
                param,
                format!(
                    "{param} may hold at most {max} sequences, got {}",
                    list.len()
                ),
            ));
        }
    }
    Ok(list.into_iter().filter(|s| !s.is_empty()).collect())
}

/// OpenAI's `logit_bias`: `{"token id": bias}` with biases in -100..=100 and ids inside the vocabulary.
pub fn logit_bias(
    v: Option<&Map<String, Value>>,
    vocab: usize,
) -> Result<Vec<(u32, f32)>, ApiError> {
    let Some(map) = v else { return Ok(Vec::new()) };
    let mut out = Vec::with_capacity(map.len());
    for (key, value) in map {
        let id: u32 = key.trim().parse().map_err(|_| {
            ApiError::bad_param(
                "logit_bias",
                format!("logit_bias key {key:?} is not a token id"),
            )
        })?;
        if id as usize >= vocab {
            return Err(ApiError::bad_param(
                "logit_bias",
                format!("logit_bias token id {id} is outside the vocabulary of {vocab} tokens"),
            ));
        }
        let bias = value.as_f64().filter(|b| (-100.0..=100.0).contains(b)).ok_or_else(|| {
            ApiError::bad_param(
                "logit_bias",
                format!("logit_bias for token {id} must be a number between -100 and 100, got {value}"),
            )
        })?;
        out.push((id, bias as f32));
    }
    Ok(out)
}

/// The sampling fields a request may set; `None` leaves the API's default.
#[derive(Clone, Debug, Default)]
pub struct Sampling {
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<usize>,
    pub min_p: Option<f32>,
    pub repetition_penalty: Option<f32>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    pub logit_bias: Vec<(u32, f32)>,
    pub seed: Option<u64>,
}

impl Sampling {
    /// The engine's parameters. Defaults are the APIs' own (both document temperature 1 with every filter off),
    /// not the CLI's: a client written for OpenAI or Anthropic gets the distribution it expects. Penalties look
    /// at the whole context (`penalty_last_n` 0), which is OpenAI's definition of presence/frequency penalty.
    pub fn params(self) -> Result<SamplingParams, ApiError> {
        let p = SamplingParams {
            temperature: self.temperature.unwrap_or(1.0),
            top_k: self.top_k.unwrap_or(0),
            top_p: self.top_p.unwrap_or(1.0),
            min_p: self.min_p.unwrap_or(0.0),
            repetition_penalty: self.repetition_penalty.unwrap_or(1.0),
            presence_penalty: self.presence_penalty.unwrap_or(0.0),
            frequency_penalty: self.frequency_penalty.unwrap_or(0.0),
            penalty_last_n: 0,
            logit_bias: self.logit_bias,
            seed: self.seed,
        };
        p.validate()?;
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn content_forms() {
        assert_eq!(text_content(&json!("hi"), "m").unwrap(), "hi");
        assert_eq!(text_content(&json!(null), "m").unwrap(), "");
        let parts = json!([{"type": "text", "text": "a"}, {"type": "text", "text": "b", "cache_control": {}}]);
        assert_eq!(text_content(&parts, "m").unwrap(), "a\nb");
        let e = text_content(
            &json!([{"type": "image_url", "image_url": {}}]),
            "messages[0].content",
        )
        .unwrap_err();
        assert!(e.message.contains("image_url"), "{}", e.message);
        assert_eq!(e.param.as_deref(), Some("messages[0].content[0]"));
        assert!(text_content(&json!(5), "m").is_err());
        assert!(text_content(&json!([{"type": "text"}]), "m").is_err());
        assert!(text_content(&json!(["x"]), "m").is_err());
    }

    #[test]
    fn stops_and_bias() {
        assert_eq!(
            stop_strings("stop", Some(&json!("x")), Some(4)).unwrap(),
            vec!["x"]
        );
        assert!(stop_strings("stop", Some(&json!(["a", "b", "c", "d", "e"])), Some(4)).is_err());
        assert!(stop_strings("stop", Some(&json!([1])), Some(4)).is_err());
        assert!(stop_strings("stop", Some(&json!(3)), None).is_err());
        assert_eq!(
            stop_strings("stop", Some(&json!(["", "a"])), None).unwrap(),
            vec!["a"]
        );
        let m = json!({"5": -100, "7": 2.5});
        let b = logit_bias(m.as_object(), 10).unwrap();
        assert_eq!(b, vec![(5, -100.0), (7, 2.5)]);
        assert!(logit_bias(json!({"11": 1}).as_object(), 10).is_err());
        assert!(logit_bias(json!({"x": 1}).as_object(), 10).is_err());
        assert!(logit_bias(json!({"1": 101}).as_object(), 10).is_err());
        assert!(logit_bias(json!({"1": "a"}).as_object(), 10).is_err());
    }

    #[test]
    fn ranges() {
        assert_eq!(in_range("t", Some(0.5), 0.0, 2.0).unwrap(), Some(0.5));
        let e = in_range("temperature", Some(3.0), 0.0, 2.0).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("temperature"));
        assert!(int_in_range("n", Some(-1), 0, 5).is_err());
        assert_eq!(int_in_range("n", Some(5), 0, 5).unwrap(), Some(5));
        let p = Sampling::default().params().unwrap();
        assert_eq!(
            (p.temperature, p.top_k, p.top_p, p.min_p),
            (1.0, 0, 1.0, 0.0)
        );
    }
}
