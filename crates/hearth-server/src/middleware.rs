//! Cross-cutting request handling: a request id on every response and log line, API-key checks, and the
//! not-found fallback in the right API's envelope.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument;

use crate::error::{Anthropic, ApiError, Flavor, Kind, OpenAi};
use crate::AppState;

/// The request id: the client's `x-request-id` if it sent a sane one, else a new one.
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

impl RequestId {
    /// The id of a request as handlers see it: the middleware's, or a fresh one where a handler runs without
    /// the middleware (as in unit tests of the router).
    pub fn or_new(rid: Option<axum::Extension<RequestId>>) -> String {
        rid.map(|axum::Extension(r)| r.0)
            .unwrap_or_else(|| new_id("req_"))
    }
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A process-unique id: start time and a counter, hex.
pub fn new_id(prefix: &str) -> String {
    static START: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let start = *START.get_or_init(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}{:012x}{n:08x}", start & 0xffff_ffff_ffff)
}

/// Tags the request with an id (in a tracing span and the `x-request-id` response header) and logs it.
pub async fn request_id(mut req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.chars().all(|c| c.is_ascii_graphic()))
        .map(str::to_string)
        .unwrap_or_else(|| new_id("req_"));
    req.extensions_mut().insert(RequestId(id.clone()));
    let span = tracing::info_span!("request", request_id = %id, method = %req.method(), path = %req.uri().path());
    async move {
        let t0 = Instant::now();
        let mut resp = next.run(req).await;
        if let Ok(v) = HeaderValue::from_str(&id) {
            resp.headers_mut().insert("x-request-id", v.clone());
            resp.headers_mut().insert("request-id", v);
        }
        tracing::info!(
            status = resp.status().as_u16(),
            ms = t0.elapsed().as_millis() as u64,
            "response"
        );
        resp
    }
    .instrument(span)
    .await
}

/// Routes under /v1/messages speak Anthropic's error envelope; everything else OpenAI's.
pub fn render_for(uri: &Uri, e: &ApiError) -> Response {
    if uri.path().starts_with("/v1/messages") {
        Anthropic::render(e)
    } else {
        OpenAi::render(e)
    }
}

/// With API keys configured, requires `Authorization: Bearer KEY` or `x-api-key: KEY` (except on /health).
pub async fn auth(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let keys = &state.config.api_keys;
    if keys.is_empty() || req.uri().path() == "/health" {
        return next.run(req).await;
    }
    let h = req.headers();
    let bearer = h
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let x_key = h.get("x-api-key").and_then(|v| v.to_str().ok());
    let ok = [bearer, x_key]
        .into_iter()
        .flatten()
        .any(|k| keys.iter().any(|good| constant_time_eq(good, k)));
    if ok {
        next.run(req).await
    } else {
        let e = ApiError::new(
            Kind::Unauthorized,
            "missing or invalid API key: send Authorization: Bearer KEY or x-api-key: KEY",
        );
        render_for(req.uri(), &e)
    }
}

fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// Unknown routes: a 404 in the envelope of the API the path belongs to.
pub async fn not_found(uri: Uri) -> impl IntoResponse {
    render_for(
        &uri,
        &ApiError::not_found(format!("no route for {}", uri.path())),
    )
}
