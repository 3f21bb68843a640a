//! Helpers for the API tests: a router over the tiny qwen2 fixture, request and SSE helpers.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use hearth_engine::tokenizer::{ChatMessage, Tokenizer};
use hearth_server::config::{ModelSpec, ServerConfig};
use hearth_server::registry::Registry;
use hearth_server::{router, AppState};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tower::ServiceExt;

pub const CONTEXT: usize = 256;

pub fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/tiny")
        .join(rel)
}

pub fn qwen_dir() -> PathBuf {
    fixture("qwen2/hf-f32")
}

pub fn config() -> ServerConfig {
    let mut c = ServerConfig {
        scan_hf_cache: false,
        models: vec![
            ModelSpec {
                path: qwen_dir(),
                alias: Some("tiny".into()),
            },
            ModelSpec {
                path: fixture("llama/model-f32.gguf"),
                alias: Some("tiny-gguf".into()),
            },
        ],
        default_model: Some("tiny".into()),
        ..ServerConfig::default()
    };
    c.aliases.insert("claude-test-1".into(), "tiny".into());
    c
}

pub fn app_with(config: ServerConfig) -> Router {
    let registry = Arc::new(Registry::new(&config).expect("registry"));
    router(AppState {
        config: Arc::new(config),
        registry,
    })
}

pub fn app() -> Router {
    app_with(config())
}

pub fn tokenizer() -> Tokenizer {
    Tokenizer::from_hf_dir(&qwen_dir()).unwrap()
}

/// Bans the fixture's end-of-sequence tokens, so generation runs to its limit.
pub fn no_eos() -> Value {
    json!({"1": -100, "4": -100})
}

pub async fn send(app: &Router, path: &str, body: impl Into<Body>) -> (StatusCode, String) {
    let req = Request::post(path)
        .header("content-type", "application/json")
        .body(body.into())
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, String::from_utf8(bytes.to_vec()).unwrap())
}

pub async fn post(app: &Router, path: &str, body: Value) -> (StatusCode, Value) {
    let (status, text) = send(app, path, body.to_string()).await;
    let v =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {text}"));
    (status, v)
}

/// A 200 stream's events as (event name, data).
pub async fn post_sse(app: &Router, path: &str, body: Value) -> Vec<(Option<String>, String)> {
    let (status, text) = send(app, path, body.to_string()).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    text.split("\n\n")
        .filter(|block| !block.trim().is_empty())
        .map(|block| {
            let mut name = None;
            let mut data = String::new();
            for line in block.lines() {
                if let Some(n) = line.strip_prefix("event:") {
                    name = Some(n.trim().to_string());
                } else if let Some(d) = line.strip_prefix("data:") {
                    data.push_str(d.strip_prefix(' ').unwrap_or(d));
                }
            }
            (name, data)
        })
        .collect()
}

pub fn user(text: &str) -> Value {
    json!([{"role": "user", "content": text}])
}

/// The prompt length the template gives for `messages`.
pub fn chat_len(messages: &[ChatMessage]) -> usize {
    let tok = tokenizer();
    let text = tok.apply_chat_template(messages, true, None).unwrap();
    tok.encode(&text, false).unwrap().len()
}
