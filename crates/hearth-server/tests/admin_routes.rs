//! The model routes (/v1/models in both APIs' shapes, /hearth/models load/unload/pin) through the router.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use hearth_server::config::ModelSpec;
use hearth_server::AppState;
use serde_json::{json, Value};
use std::sync::Arc;
use tower::ServiceExt;

mod common;
use common::*;

/// Sends one request through the router; returns status and JSON body.
async fn call(app: &axum::Router, method: &str, uri: &str, anthropic: bool) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(uri);
    if anthropic {
        req = req.header("anthropic-version", "2023-06-01");
    }
    let resp = app
        .clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn model_routes() {
    let dir = TempDir::new("routes");
    copy_dir(&tiny("qwen3").join("hf-f32"), &dir.0.join("org/name"));
    let mut cfg = config(&[("llama", "a"), ("mistral", "b")]);
    cfg.models.push(ModelSpec {
        path: dir.0.join("org/name"),
        alias: Some("org/name".into()),
    });
    let registry = Arc::new(registry(&cfg));
    let app = hearth_server::router(AppState {
        config: Arc::new(cfg),
        registry: registry.clone(),
    });

    let (st, v) = call(&app, "GET", "/v1/models", false).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"][0]["id"], "a");
    assert_eq!(v["data"][0]["object"], "model");
    assert_eq!(v["data"][0]["owned_by"], "hearth");
    assert_eq!(v["data"][0]["state"], "available");
    assert!(v["data"][0]["created"].as_u64().unwrap() > 1_600_000_000);

    let (st, v) = call(&app, "GET", "/v1/models", true).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["data"].as_array().unwrap().len(), 3);
    assert_eq!(v["data"][0]["type"], "model");
    assert_eq!(v["data"][0]["display_name"], "a");
    let created = v["data"][0]["created_at"].as_str().unwrap();
    assert!(
        created.len() == 20 && created.ends_with('Z') && created.as_bytes()[10] == b'T',
        "{created}"
    );
    assert_eq!(
        (
            v["has_more"].clone(),
            v["first_id"].clone(),
            v["last_id"].clone()
        ),
        (json!(false), json!("a"), json!("org/name"))
    );
    let (_, v) = call(&app, "GET", "/v1/models?limit=1&after_id=a", true).await;
    assert_eq!(
        (v["first_id"].clone(), v["has_more"].clone()),
        (json!("b"), json!(true))
    );

    let (st, v) = call(&app, "GET", "/v1/models/org/name", false).await;
    assert_eq!((st, v["id"].clone()), (StatusCode::OK, json!("org/name")));
    let (st, v) = call(&app, "GET", "/v1/models/b", true).await;
    assert_eq!((st, v["type"].clone()), (StatusCode::OK, json!("model")));
    let (st, v) = call(&app, "GET", "/v1/models/nope", false).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert_eq!(v["error"]["code"], "model_not_found");
    let (st, v) = call(&app, "GET", "/v1/models/nope", true).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert_eq!(
        (v["type"].clone(), v["error"]["type"].clone()),
        (json!("error"), json!("not_found_error"))
    );

    let (st, v) = call(&app, "POST", "/hearth/models/org/name/load", false).await;
    assert_eq!(
        (st, v["state"].clone()),
        (StatusCode::OK, json!("loaded")),
        "{v}"
    );
    let (_, v) = call(&app, "POST", "/hearth/models/org/name/pin", false).await;
    assert_eq!(v["pinned"], true);
    let (_, v) = call(&app, "GET", "/hearth/models", false).await;
    assert_eq!(v["loaded"], 1);
    assert!(v["memory"]["used_bytes"].as_u64().unwrap() > 0);
    assert_eq!(v["data"][2]["pinned"], true);
    let (_, v) = call(&app, "POST", "/hearth/models/org/name/unpin", false).await;
    assert_eq!(v["pinned"], false);
    let (_, v) = call(&app, "POST", "/hearth/models/org/name/unload", false).await;
    assert_eq!(v["state"], "available");
    let (st, v) = call(&app, "GET", "/hearth/models/a", false).await;
    assert_eq!((st, v["id"].clone()), (StatusCode::OK, json!("a")));
    let (st, _) = call(&app, "POST", "/hearth/models/a/explode", false).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, _) = call(&app, "POST", "/hearth/models/zzz/load", false).await;
    assert_eq!(st, StatusCode::NOT_FOUND);

    // A load with keep_alive in the body sets the model's TTL.
    let req = Request::post("/hearth/models/a/load")
        .body(Body::from(r#"{"keep_alive": "-1"}"#))
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(registry.info("a").unwrap().ttl_secs, None);
    let req = Request::post("/hearth/models/a/load")
        .body(Body::from(r#"{"keep_alive": "soon"}"#))
        .unwrap();
    assert_eq!(
        app.clone().oneshot(req).await.unwrap().status(),
        StatusCode::BAD_REQUEST
    );
}

#[test]
fn rfc3339_dates() {
    use hearth_server::admin::rfc3339;
    assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    assert_eq!(rfc3339(1_735_689_599), "2024-12-31T23:59:59Z");
}
