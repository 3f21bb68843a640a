//! The Anthropic routes through the real router, registry and model worker, on the tiny random
//! fixture models (tests/fixtures/tiny): response and stream shapes, sampling options, echo scoring, and every
//! error path a client can hit.
//!
//! The fixture model's text is random, so tests compare the server with itself (stream vs. body, seed vs.
//! seed) or with the engine (prompt logprobs, token counts), never with fixed strings. End-of-sequence tokens
//! (ids 1 and 4 of the qwen2 fixture) are banned with `logit_bias` where a test needs a known length.

use axum::http::StatusCode;
use hearth_engine::tokenizer::ChatMessage;
use serde_json::{json, Value};

mod common;
use common::api::*;

#[tokio::test]
async fn anthropic_message_body() {
    let app = app();
    let (status, v) = post(
        &app,
        "/v1/messages?beta=true",
        json!({"model": "claude-test-1", "system": [{"type": "text", "text": "You are terse."}],
               "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi", "cache_control": {"type": "ephemeral"}}]}],
               "max_tokens": 5, "temperature": 0, "top_k": 1, "top_p": 0.9, "metadata": {"user_id": "u"}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert!(v["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(v["type"], "message");
    assert_eq!(v["role"], "assistant");
    assert_eq!(v["model"], "tiny");
    assert_eq!(v["content"][0]["type"], "text");
    assert!(v["content"][0]["text"].is_string());
    let reason = v["stop_reason"].as_str().unwrap();
    assert!(reason == "end_turn" || reason == "max_tokens", "{reason}");
    assert!(v["stop_sequence"].is_null());
    let u = &v["usage"];
    let expect = chat_len(&[
        ChatMessage::new("system", "You are terse."),
        ChatMessage::new("user", "Hi"),
    ]);
    assert_eq!(
        u["input_tokens"].as_u64().unwrap() + u["cache_read_input_tokens"].as_u64().unwrap(),
        expect as u64
    );
    assert_eq!(u["cache_creation_input_tokens"], 0);
    let out = u["output_tokens"].as_u64().unwrap();
    assert!(out <= 5);
    if reason == "max_tokens" {
        assert_eq!(out, 5);
    }
}

#[tokio::test]
async fn anthropic_prefill_continues_the_assistant_turn() {
    let app = app();
    let (status, v) = post(
        &app,
        "/v1/messages",
        json!({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Well,"}],
               "max_tokens": 3, "temperature": 0}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let tok = tokenizer();
    let text = tok
        .apply_chat_template(&[ChatMessage::new("user", "Hi")], true, None)
        .unwrap()
        + "Well,";
    let expect = tok.encode(&text, false).unwrap().len() as u64;
    let u = &v["usage"];
    assert_eq!(
        u["input_tokens"].as_u64().unwrap() + u["cache_read_input_tokens"].as_u64().unwrap(),
        expect
    );
}

#[tokio::test]
async fn anthropic_stream_event_order() {
    let app = app();
    let req = json!({"model": "tiny", "messages": user("Write something"), "max_tokens": 10, "temperature": 0});
    let (_, body) = post(&app, "/v1/messages", req.clone()).await;
    let mut sreq = req;
    sreq["stream"] = json!(true);
    let events = post_sse(&app, "/v1/messages?beta=true", sreq).await;
    let names: Vec<&str> = events
        .iter()
        .map(|(n, _)| n.as_deref().expect("named event"))
        .collect();
    let n = names.len();
    assert_eq!(
        &names[..3],
        ["message_start", "content_block_start", "ping"]
    );
    assert!(
        names[3..n - 3].iter().all(|&e| e == "content_block_delta"),
        "{names:?}"
    );
    assert_eq!(
        &names[n - 3..],
        ["content_block_stop", "message_delta", "message_stop"]
    );
    let data: Vec<Value> = events
        .iter()
        .map(|(_, d)| serde_json::from_str(d).unwrap())
        .collect();
    for (name, d) in names.iter().zip(&data) {
        assert_eq!(d["type"], *name);
    }
    let start = &data[0]["message"];
    assert_eq!(start["content"], json!([]));
    assert!(start["stop_reason"].is_null());
    assert!(start["usage"]["input_tokens"].as_u64().unwrap() > 0);
    assert_eq!(
        data[1]["content_block"],
        json!({"type": "text", "text": ""})
    );
    let mut text = String::new();
    for d in &data[3..n - 3] {
        assert_eq!(d["delta"]["type"], "text_delta");
        text.push_str(d["delta"]["text"].as_str().unwrap());
    }
    assert_eq!(text, body["content"][0]["text"].as_str().unwrap());
    let delta = &data[n - 2];
    assert_eq!(delta["delta"]["stop_reason"], body["stop_reason"]);
    assert!(delta["delta"]["stop_sequence"].is_null());
    assert_eq!(
        delta["usage"]["output_tokens"],
        body["usage"]["output_tokens"]
    );
}

#[tokio::test]
async fn anthropic_errors() {
    let app = app();
    let check = |status: StatusCode, v: &Value, want: StatusCode, ty: &str| {
        assert_eq!(status, want, "{v}");
        assert_eq!(v["type"], "error", "{v}");
        assert_eq!(v["error"]["type"], ty, "{v}");
        assert!(v["error"]["message"].is_string());
    };
    let (status, v) = post(&app, "/v1/messages", json!({"messages": user("hi")})).await;
    check(status, &v, StatusCode::BAD_REQUEST, "invalid_request_error");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("max_tokens"));

    let (status, text) = send(&app, "/v1/messages", "not json").await;
    let v: Value = serde_json::from_str(&text).unwrap();
    check(status, &v, StatusCode::BAD_REQUEST, "invalid_request_error");

    let (status, v) = post(
        &app,
        "/v1/messages",
        json!({"messages": user("hi"), "max_tokens": "ten"}),
    )
    .await;
    check(status, &v, StatusCode::BAD_REQUEST, "invalid_request_error");
    let (status, v) = post(
        &app,
        "/v1/messages",
        json!({"messages": user("hi"), "max_tokens": 5, "temperature": 1.5}),
    )
    .await;
    check(status, &v, StatusCode::BAD_REQUEST, "invalid_request_error");
    let (status, v) = post(
        &app,
        "/v1/messages",
        json!({"messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "x"}]}], "max_tokens": 5}),
    )
    .await;
    check(status, &v, StatusCode::BAD_REQUEST, "invalid_request_error");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("tool_result"));

    let (status, v) = post(
        &app,
        "/v1/messages",
        json!({"model": "claude-unknown", "messages": user("hi"), "max_tokens": 5}),
    )
    .await;
    check(status, &v, StatusCode::NOT_FOUND, "not_found_error");

    let long = "word ".repeat(400);
    let (status, v) = post(
        &app,
        "/v1/messages",
        json!({"messages": user(&long), "max_tokens": 5}),
    )
    .await;
    check(status, &v, StatusCode::BAD_REQUEST, "invalid_request_error");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains(&CONTEXT.to_string()));

    let mut small = config();
    small.body_limit = 100;
    let (status, v) = post(
        &app_with(small),
        "/v1/messages",
        json!({"messages": user(&"x".repeat(200)), "max_tokens": 5}),
    )
    .await;
    check(
        status,
        &v,
        StatusCode::PAYLOAD_TOO_LARGE,
        "request_too_large",
    );
}

#[tokio::test]
async fn count_tokens_uses_the_template() {
    let app = app();
    let (status, v) = post(
        &app,
        "/v1/messages/count_tokens?beta=true",
        json!({"model": "claude-test-1", "system": "Be kind.",
               "messages": [{"role": "user", "content": "Hello there"}, {"role": "assistant", "content": "Hi!"},
                            {"role": "user", "content": [{"type": "text", "text": "How are you?"}]}]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let expect = chat_len(&[
        ChatMessage::new("system", "Be kind."),
        ChatMessage::new("user", "Hello there"),
        ChatMessage::new("assistant", "Hi!"),
        ChatMessage::new("user", "How are you?"),
    ]);
    assert_eq!(v, json!({"input_tokens": expect}));
}
