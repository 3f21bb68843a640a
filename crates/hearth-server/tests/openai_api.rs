//! The OpenAI routes (and model-independent serving behaviour) through the real router, registry and model worker, on the tiny random
//! fixture models (tests/fixtures/tiny): response and stream shapes, sampling options, echo scoring, and every
//! error path a client can hit.
//!
//! The fixture model's text is random, so tests compare the server with itself (stream vs. body, seed vs.
//! seed) or with the engine (prompt logprobs, token counts), never with fixed strings. End-of-sequence tokens
//! (ids 1 and 4 of the qwen2 fixture) are banned with `logit_bias` where a test needs a known length.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use hearth_engine::tokenizer::ChatMessage;
use hearth_server::registry::Registry;
use hearth_server::{router, AppState};
use serde_json::{json, Value};
use std::sync::Arc;
use tower::ServiceExt;

mod common;
use common::api::*;

#[tokio::test]
async fn chat_completion_body() {
    let app = app();
    let (status, v) = post(
        &app,
        "/v1/chat/completions",
        json!({"messages": [{"role": "developer", "content": "Be brief."},
                            {"role": "user", "content": [{"type": "text", "text": "Hello"}]}],
               "max_tokens": 6, "temperature": 0, "logit_bias": no_eos(), "unknown_field": {"x": 1}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(v["object"], "chat.completion");
    assert!(v["created"].as_u64().unwrap() > 1_600_000_000);
    assert_eq!(v["model"], "tiny");
    let choice = &v["choices"][0];
    assert_eq!(choice["index"], 0);
    assert_eq!(choice["message"]["role"], "assistant");
    assert!(choice["message"]["content"].is_string());
    assert_eq!(choice["finish_reason"], "length");
    assert!(choice["logprobs"].is_null());
    let u = &v["usage"];
    let expect = chat_len(&[
        ChatMessage::new("system", "Be brief."),
        ChatMessage::new("user", "Hello"),
    ]);
    assert_eq!(u["prompt_tokens"], expect);
    assert_eq!(u["completion_tokens"], 6);
    assert_eq!(u["total_tokens"], expect + 6);
    assert!(u["prompt_tokens_details"]["cached_tokens"].is_u64());
}

#[tokio::test]
async fn chat_stream_matches_body() {
    let app = app();
    let req = json!({"model": "tiny", "messages": user("Tell me a story"), "max_completion_tokens": 12,
                     "temperature": 0, "logit_bias": no_eos()});
    let (_, body) = post(&app, "/v1/chat/completions", req.clone()).await;
    let mut sreq = req.clone();
    sreq["stream"] = json!(true);
    sreq["stream_options"] = json!({"include_usage": true});
    let events = post_sse(&app, "/v1/chat/completions", sreq).await;
    assert_eq!(events.last().unwrap().1, "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|(name, d)| {
            assert!(name.is_none());
            serde_json::from_str(d).unwrap()
        })
        .collect();
    assert_eq!(
        chunks[0]["choices"][0]["delta"],
        json!({"role": "assistant", "content": ""})
    );
    let n = chunks.len();
    let usage_chunk = &chunks[n - 1];
    assert_eq!(usage_chunk["choices"], json!([]));
    assert_eq!(usage_chunk["usage"]["completion_tokens"], 12);
    let last = &chunks[n - 2];
    assert_eq!(last["choices"][0]["delta"], json!({}));
    assert_eq!(last["choices"][0]["finish_reason"], "length");
    let mut text = String::new();
    for c in &chunks[..n - 1] {
        assert_eq!(c["object"], "chat.completion.chunk");
        assert_eq!(c["id"], chunks[0]["id"]);
        assert!(c.get("usage").unwrap().is_null(), "{c}");
        if let Some(t) = c["choices"][0]["delta"]["content"].as_str() {
            text.push_str(t);
        }
    }
    for c in &chunks[1..n - 2] {
        assert!(c["choices"][0]["finish_reason"].is_null());
    }
    assert_eq!(
        text,
        body["choices"][0]["message"]["content"].as_str().unwrap()
    );

    // Without include_usage no chunk has a usage field.
    let mut plain = req;
    plain["stream"] = json!(true);
    let events = post_sse(&app, "/v1/chat/completions", plain).await;
    for (_, d) in &events[..events.len() - 1] {
        let c: Value = serde_json::from_str(d).unwrap();
        assert!(c.get("usage").is_none());
        assert!(!c["choices"].as_array().unwrap().is_empty());
    }
}

#[tokio::test]
async fn chat_logprobs() {
    let app = app();
    let (status, v) = post(
        &app,
        "/v1/chat/completions",
        json!({"messages": user("Hi"), "max_tokens": 5, "temperature": 0, "logprobs": true, "top_logprobs": 3,
               "logit_bias": no_eos()}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let content = v["choices"][0]["logprobs"]["content"].as_array().unwrap();
    assert_eq!(content.len(), 5);
    for e in content {
        let lp = e["logprob"].as_f64().unwrap();
        assert!(lp <= 0.0);
        let token = e["token"].as_str().unwrap();
        let bytes: Vec<u8> = e["bytes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b.as_u64().unwrap() as u8)
            .collect();
        if !token.contains('\u{FFFD}') {
            assert_eq!(bytes, token.as_bytes());
        } else {
            // Part of a character: the raw bytes, not the replacement character's.
            assert!(!bytes.is_empty() && bytes != "\u{FFFD}".as_bytes());
        }
        let top = e["top_logprobs"].as_array().unwrap();
        assert_eq!(top.len(), 3);
        // Greedy picks the most likely token (logprobs are of the raw distribution, before the EOS ban).
        assert!(top[0]["logprob"].as_f64().unwrap() >= lp - 1e-6);
        assert!(top[0]["bytes"].is_array());
    }

    let (status, v) = post(
        &app,
        "/v1/chat/completions",
        json!({"messages": user("Hi"), "top_logprobs": 2}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(v["error"]["param"], "top_logprobs");
}

#[tokio::test]
async fn seed_makes_sampling_repeatable() {
    let app = app();
    let req = json!({"prompt": "Once upon a time", "max_tokens": 16, "temperature": 1.0, "seed": 1234,
                     "logit_bias": no_eos()});
    let (s1, a) = post(&app, "/v1/completions", req.clone()).await;
    let (s2, b) = post(&app, "/v1/completions", req).await;
    assert_eq!((s1, s2), (StatusCode::OK, StatusCode::OK));
    assert_eq!(a["choices"][0]["text"], b["choices"][0]["text"]);
    assert_eq!(a["usage"]["completion_tokens"], 16);

    let chat = json!({"messages": user("Pick a word"), "max_tokens": 10, "seed": 7, "temperature": 1.5,
                      "logit_bias": no_eos()});
    let (_, c1) = post(&app, "/v1/chat/completions", chat.clone()).await;
    let (_, c2) = post(&app, "/v1/chat/completions", chat).await;
    assert_eq!(
        c1["choices"][0]["message"]["content"],
        c2["choices"][0]["message"]["content"]
    );
}

#[tokio::test]
async fn stop_sequence_ends_generation_and_is_never_shown() {
    let app = app();
    let base = json!({"prompt": "The quick brown fox", "max_tokens": 40, "temperature": 0, "logit_bias": no_eos()});
    let (_, full) = post(&app, "/v1/completions", base.clone()).await;
    let text = full["choices"][0]["text"].as_str().unwrap().to_string();
    let chars: Vec<char> = text.chars().collect();
    assert!(
        chars.len() >= 6,
        "too little text to pick a stop from: {text:?}"
    );
    let stop: String = chars[chars.len() / 2..chars.len() / 2 + 2].iter().collect();
    let expect = &text[..text.find(&stop).unwrap()];

    let mut req = base.clone();
    req["stop"] = json!(["NEVER-APPEARS", stop]);
    let (status, v) = post(&app, "/v1/completions", req.clone()).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let got = v["choices"][0]["text"].as_str().unwrap();
    assert_eq!(got, expect);
    assert!(!got.contains(&stop));
    assert_eq!(v["choices"][0]["finish_reason"], "stop");

    // The same through a stream: no chunk leaks any part of the stop string past the cut.
    req["stream"] = json!(true);
    let events = post_sse(&app, "/v1/completions", req).await;
    let mut streamed = String::new();
    for (_, d) in &events[..events.len() - 1] {
        let c: Value = serde_json::from_str(d).unwrap();
        streamed.push_str(c["choices"][0]["text"].as_str().unwrap());
    }
    assert_eq!(streamed, expect);

    // And through Anthropic's API, which names the sequence that matched.
    let (_, chat) = post(
        &app,
        "/v1/chat/completions",
        json!({"messages": user("Count"), "max_tokens": 40, "temperature": 0, "logit_bias": no_eos()}),
    )
    .await;
    let text = chat["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string();
    let chars: Vec<char> = text.chars().collect();
    if chars.len() >= 6 {
        let stop: String = chars[chars.len() / 2..chars.len() / 2 + 2].iter().collect();
        let (status, m) = post(
            &app,
            "/v1/messages",
            json!({"model": "tiny", "messages": user("Count"), "max_tokens": 40, "temperature": 0,
                   "stop_sequences": [stop]}),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{m}");
        let got = m["content"][0]["text"].as_str().unwrap();
        assert!(!got.contains(&stop));
        if m["stop_reason"] == "stop_sequence" {
            assert_eq!(m["stop_sequence"], json!(stop));
            assert_eq!(got, &text[..text.find(&stop).unwrap()]);
        }
    }
}

#[tokio::test]
async fn length_limits() {
    let app = app();
    let (_, v) = post(
        &app,
        "/v1/completions",
        json!({"prompt": "abc", "max_tokens": 3, "temperature": 0, "logit_bias": no_eos()}),
    )
    .await;
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(v["usage"]["completion_tokens"], 3);

    // max_tokens unset: until the context is full (not a fixed default).
    let (status, v) = post(
        &app,
        "/v1/chat/completions",
        json!({"messages": user("Go on"), "temperature": 0, "logit_bias": no_eos()}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    let prompt = v["usage"]["prompt_tokens"].as_u64().unwrap() as usize;
    let completion = v["usage"]["completion_tokens"].as_u64().unwrap() as usize;
    assert!(
        prompt + completion >= CONTEXT - 1,
        "{prompt} + {completion}"
    );
}

#[tokio::test]
async fn echo_logprobs_score_the_prompt() {
    let app = app();
    let tok = tokenizer();
    let ids = tok.encode("The cat sat on the mat", true).unwrap();
    let (status, v) = post(
        &app,
        "/v1/completions",
        json!({"prompt": [ids.clone()], "echo": true, "logprobs": 2, "max_tokens": 0}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let choice = &v["choices"][0];
    assert_eq!(choice["text"], tok.decode(&ids).unwrap());
    assert_eq!(choice["finish_reason"], "length");
    assert_eq!(v["usage"]["completion_tokens"], 0);
    let lp = &choice["logprobs"];
    let token_lps = lp["token_logprobs"].as_array().unwrap();
    assert_eq!(token_lps.len(), ids.len());
    assert_eq!(lp["tokens"].as_array().unwrap().len(), ids.len());
    assert_eq!(lp["text_offset"].as_array().unwrap().len(), ids.len());
    assert!(token_lps[0].is_null());
    assert!(lp["top_logprobs"][0].is_null());

    let model = hearth_engine::models::Model::open(&qwen_dir()).unwrap();
    let expect = hearth_engine::generate::prompt_logprobs(&model, &ids, 2).unwrap();
    for (i, e) in expect.iter().enumerate().skip(1) {
        let e = e.as_ref().unwrap();
        let got = token_lps[i].as_f64().unwrap();
        assert!(
            (got - e.logprob as f64).abs() < 1e-5,
            "token {i}: {got} vs {}",
            e.logprob
        );
        let top = lp["top_logprobs"][i].as_object().unwrap();
        assert!(top.len() <= 3 && top.len() >= 2, "{top:?}");
        let best = top
            .values()
            .map(|x| x.as_f64().unwrap())
            .fold(f64::MIN, f64::max);
        assert!((best - e.top[0].1 as f64).abs() < 1e-5);
    }

    // lm-evaluation-harness's request: text prompt, echo, one generated token to drop.
    let (status, v) = post(
        &app,
        "/v1/completions",
        json!({"prompt": "The cat sat", "echo": true, "logprobs": 1, "max_tokens": 1, "temperature": 0,
               "logit_bias": no_eos()}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let n_prompt = tok.encode("The cat sat", true).unwrap().len();
    let lp = &v["choices"][0]["logprobs"];
    assert_eq!(lp["token_logprobs"].as_array().unwrap().len(), n_prompt + 1);
    assert!(v["choices"][0]["text"]
        .as_str()
        .unwrap()
        .starts_with("The cat sat"));
    let offsets: Vec<u64> = lp["text_offset"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect();
    assert!(offsets.windows(2).all(|w| w[0] <= w[1]));
    assert_eq!(
        *offsets.last().unwrap(),
        "The cat sat".chars().count() as u64
    );

    // Echo and logprobs streamed: the prompt (with its scores) first, then the generated token.
    let events = post_sse(
        &app,
        "/v1/completions",
        json!({"prompt": [ids.clone()], "echo": true, "logprobs": 1, "max_tokens": 2, "temperature": 0,
               "logit_bias": no_eos(), "stream": true}),
    )
    .await;
    let first: Value = serde_json::from_str(&events[0].1).unwrap();
    assert_eq!(first["object"], "text_completion");
    assert_eq!(first["choices"][0]["text"], tok.decode(&ids).unwrap());
    assert_eq!(
        first["choices"][0]["logprobs"]["tokens"]
            .as_array()
            .unwrap()
            .len(),
        ids.len()
    );
    assert_eq!(events.last().unwrap().1, "[DONE]");

    // max_tokens 0 without echo has nothing to return.
    let (status, v) = post(
        &app,
        "/v1/completions",
        json!({"prompt": "x", "max_tokens": 0}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(v["error"]["param"], "max_tokens");
}

#[tokio::test]
async fn completion_prompt_forms() {
    let app = app();
    for prompt in [
        json!("hello"),
        json!(["hello"]),
        json!([5, 6, 7]),
        json!([[5, 6, 7]]),
    ] {
        let (status, v) = post(
            &app,
            "/v1/completions",
            json!({"prompt": prompt, "max_tokens": 2}),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{prompt}: {v}");
        assert_eq!(v["object"], "text_completion");
        assert!(v["id"].as_str().unwrap().starts_with("cmpl-"));
    }
    for prompt in [
        json!(["a", "b"]),
        json!([[1], [2]]),
        json!([]),
        json!([100000]),
        json!(7),
    ] {
        let (status, v) = post(&app, "/v1/completions", json!({"prompt": prompt})).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{prompt}: {v}");
        assert_eq!(v["error"]["param"], "prompt");
    }
}

#[tokio::test]
async fn openai_errors() {
    let app = app();
    let path = "/v1/chat/completions";
    let check = |status: StatusCode, v: &Value, want: StatusCode| {
        assert_eq!(status, want, "{v}");
        assert!(v["error"]["message"].is_string(), "{v}");
        assert!(v["error"]["type"].is_string(), "{v}");
    };

    let (status, text) = send(&app, path, "{\"messages\": [").await;
    let v: Value = serde_json::from_str(&text).unwrap();
    check(status, &v, StatusCode::BAD_REQUEST);
    assert_eq!(v["error"]["type"], "invalid_request_error");

    let (status, v) = post(&app, path, json!({"messages": "hi"})).await;
    check(status, &v, StatusCode::BAD_REQUEST);
    let (status, v) = post(
        &app,
        path,
        json!({"messages": user("hi"), "temperature": "hot"}),
    )
    .await;
    check(status, &v, StatusCode::BAD_REQUEST);
    let (status, v) = post(&app, path, json!({"messages": user("hi"), "n": 2})).await;
    check(status, &v, StatusCode::BAD_REQUEST);
    assert_eq!(v["error"]["message"], "n > 1 is not supported");
    for (field, value) in [
        ("temperature", json!(2.5)),
        ("top_p", json!(-0.1)),
        ("presence_penalty", json!(3)),
        ("frequency_penalty", json!(-2.5)),
        ("top_logprobs", json!(21)),
        ("max_tokens", json!(0)),
        ("stop", json!(["a", "b", "c", "d", "e"])),
        ("logit_bias", json!({"5": 200})),
        ("logit_bias", json!({"99999": 1})),
    ] {
        let mut req = json!({"messages": user("hi"), "logprobs": true});
        req[field] = value;
        let (status, v) = post(&app, path, req).await;
        check(status, &v, StatusCode::BAD_REQUEST);
        assert_eq!(v["error"]["param"], field, "{v}");
    }

    let (status, v) = post(
        &app,
        path,
        json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}),
    )
    .await;
    check(status, &v, StatusCode::BAD_REQUEST);
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("image_url"));
    let (status, v) = post(
        &app,
        path,
        json!({"messages": [{"role": "tool", "content": "x"}]}),
    )
    .await;
    check(status, &v, StatusCode::BAD_REQUEST);
    let (status, v) = post(&app, path, json!({"messages": []})).await;
    check(status, &v, StatusCode::BAD_REQUEST);

    let (status, v) = post(
        &app,
        path,
        json!({"model": "no-such-model", "messages": user("hi")}),
    )
    .await;
    check(status, &v, StatusCode::NOT_FOUND);

    let long = "word ".repeat(400);
    let (status, v) = post(&app, path, json!({"messages": user(&long)})).await;
    check(status, &v, StatusCode::BAD_REQUEST);
    let n = chat_len(&[ChatMessage::new("user", long.as_str())]);
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains(&n.to_string()) && msg.contains(&CONTEXT.to_string()),
        "{msg}"
    );
    let ids: Vec<u32> = vec![5; 300];
    let (status, v) = post(&app, "/v1/completions", json!({"prompt": ids})).await;
    check(status, &v, StatusCode::BAD_REQUEST);
    assert!(v["error"]["message"].as_str().unwrap().contains("300"));

    let mut small = config();
    small.body_limit = 1000;
    let small = app_with(small);
    let (status, v) = post(&small, path, json!({"messages": user(&"x".repeat(2000))})).await;
    check(status, &v, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn gguf_model_with_template_in_metadata() {
    let app = app();
    let (status, v) = post(
        &app,
        "/v1/chat/completions",
        json!({"model": "tiny-gguf", "messages": user("Hello"), "max_tokens": 4}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["model"], "tiny-gguf");
}

#[tokio::test]
async fn dropped_stream_frees_the_model() {
    use futures_util::StreamExt;
    let config = config();
    let registry = Arc::new(Registry::new(&config).unwrap());
    let app = router(AppState {
        config: Arc::new(config),
        registry: registry.clone(),
    });
    let req = Request::post("/v1/chat/completions")
        .header("content-type", "application/json")
        .body(Body::from(
            json!({"messages": user("Go"), "stream": true, "logit_bias": no_eos()}).to_string(),
        ))
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body().into_data_stream();
    let first = body.next().await.unwrap().unwrap();
    assert!(first.starts_with(b"data: "));
    drop(body);
    let handle = registry.acquire("tiny", None).await.unwrap();
    let t0 = std::time::Instant::now();
    while handle.in_flight.load(std::sync::atomic::Ordering::SeqCst) > 0 {
        assert!(t0.elapsed().as_secs() < 10, "the job was not cancelled");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    drop(handle);
    // The model still serves.
    let (status, _) = post(
        &app,
        "/v1/chat/completions",
        json!({"messages": user("Hi"), "max_tokens": 2}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
}
