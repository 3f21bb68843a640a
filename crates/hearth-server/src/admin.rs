//! Model listing and management routes.
//!
//! - `GET /v1/models`, `GET /v1/models/{id}`: OpenAI's model objects, or Anthropic's when the request carries
//!   an `anthropic-version` header (the Anthropic SDK always sends one), each with errors in that API's
//!   envelope.
//! - `GET /hearth/models`: every model with its state, size, pin, last use and TTL, and the memory in use.
//! - `GET /hearth/models/{id}`, `POST /hearth/models/{id}/load|unload|pin|unpin`: one model's state, and
//!   explicit control. `load` accepts an optional JSON body `{"keep_alive": ...}`.
//!
//! Model ids may contain `/` (`ORG/NAME` from the hub cache), so the `{id}` segments are wildcards.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::error::{Anthropic, ApiError, Failure, OpenAi};
use crate::registry::{parse_keep_alive, ModelInfo};
use crate::AppState;

/// The model routes, to merge into the server's router.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/models", get(list_models))
        .route("/v1/models/{*id}", get(get_model))
        .route("/hearth/models", get(detailed_list))
        .route(
            "/hearth/models/{*rest}",
            get(hearth_get).post(hearth_action),
        )
}

/// Does the request speak Anthropic's API?
fn is_anthropic(headers: &HeaderMap) -> bool {
    headers.contains_key("anthropic-version")
}

/// An error in the envelope of the API the request speaks.
fn fail(headers: &HeaderMap, e: ApiError) -> Response {
    if is_anthropic(headers) {
        Failure::<Anthropic>::from(e).into_response()
    } else {
        Failure::<OpenAi>::from(e).into_response()
    }
}

fn openai_model(m: &ModelInfo) -> Value {
    json!({
        "id": m.id,
        "object": "model",
        "created": m.created,
        "owned_by": "hearth",
        "state": m.state,
        "path": m.path,
        "format": m.format,
        "bytes": m.bytes,
        "context_length": m.context_len,
        "pinned": m.pinned,
    })
}

fn anthropic_model(m: &ModelInfo) -> Value {
    json!({
        "type": "model",
        "id": m.id,
        "display_name": m.id,
        "created_at": rfc3339(m.created),
    })
}

/// `GET /v1/models`. Anthropic's form pages with `limit` (default 20, at most 1000), `after_id` and
/// `before_id`, as its API does.
async fn list_models(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let models = state.registry.list();
    if !is_anthropic(&headers) {
        let data: Vec<Value> = models.iter().map(openai_model).collect();
        return Json(json!({"object": "list", "data": data})).into_response();
    }
    let limit = match q.get("limit").map(|l| l.parse::<usize>()) {
        None => 20,
        Some(Ok(n)) if (1..=1000).contains(&n) => n,
        Some(_) => {
            return fail(
                &headers,
                ApiError::bad_param("limit", "limit must be an integer from 1 to 1000"),
            );
        }
    };
    let pos = |id: &String| models.iter().position(|m| &m.id == id);
    let (start, end) = match (q.get("after_id"), q.get("before_id")) {
        (Some(a), _) => match pos(a) {
            Some(p) => (p + 1, (p + 1 + limit).min(models.len())),
            None => {
                return fail(
                    &headers,
                    ApiError::not_found(format!("model {a:?} not found")),
                )
            }
        },
        (None, Some(b)) => match pos(b) {
            Some(p) => (p.saturating_sub(limit), p),
            None => {
                return fail(
                    &headers,
                    ApiError::not_found(format!("model {b:?} not found")),
                )
            }
        },
        (None, None) => (0, limit.min(models.len())),
    };
    let page = &models[start.min(end)..end];
    let has_more = if q.contains_key("after_id") || !q.contains_key("before_id") {
        end < models.len()
    } else {
        start > 0
    };
    Json(json!({
        "data": page.iter().map(anthropic_model).collect::<Vec<_>>(),
        "has_more": has_more,
        "first_id": page.first().map(|m| &m.id),
        "last_id": page.last().map(|m| &m.id),
    }))
    .into_response()
}

/// `GET /v1/models/{id}`: aliases resolve to the model they name.
async fn get_model(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    match state.registry.info(&id) {
        Ok(m) if is_anthropic(&headers) => Json(anthropic_model(&m)).into_response(),
        Ok(m) => Json(openai_model(&m)).into_response(),
        Err(e) => fail(&headers, e),
    }
}

/// `GET /hearth/models`.
async fn detailed_list(State(state): State<AppState>) -> Response {
    let r = &state.registry;
    let (used, budget) = r.memory();
    Json(json!({
        "object": "list",
        "data": r.list(),
        "memory": {"used_bytes": used, "budget_bytes": budget},
        "loaded": r.loaded_count(),
        "max_loaded_models": r.config().max_loaded_models,
        "loads": r.load_count(),
    }))
    .into_response()
}

/// `GET /hearth/models/{id}`.
async fn hearth_get(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    match state.registry.info(&id) {
        Ok(m) => Json(m).into_response(),
        Err(e) => fail(&headers, e),
    }
}

/// `POST /hearth/models/{id}/{action}`.
async fn hearth_action(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(rest): Path<String>,
    body: Bytes,
) -> Response {
    let Some((id, action)) = rest.rsplit_once('/') else {
        return fail(
            &headers,
            ApiError::not_found(format!(
                "no route for POST /hearth/models/{rest}: use /hearth/models/ID/ACTION"
            )),
        );
    };
    let r = &state.registry;
    let result = match action {
        "load" => match keep_alive_of(&body) {
            Ok(keep) => r.load(id, keep).await,
            Err(e) => Err(e),
        },
        "unload" => r.unload(id),
        "pin" => r.set_pinned(id, true),
        "unpin" => r.set_pinned(id, false),
        other => Err(ApiError::not_found(format!(
            "unknown model action {other:?}: use load, unload, pin or unpin"
        ))),
    };
    match result {
        Ok(m) => Json(m).into_response(),
        Err(e) => fail(&headers, e),
    }
}

/// The optional `{"keep_alive": ...}` body of a load request.
fn keep_alive_of(body: &[u8]) -> Result<Option<crate::registry::KeepAlive>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("malformed JSON in request body: {e}")))?;
    match v.get("keep_alive") {
        None | Some(Value::Null) => Ok(None),
        Some(k) => parse_keep_alive(k).map(Some),
    }
}

/// Seconds since the epoch as an RFC 3339 UTC timestamp (`2025-01-31T12:00:00Z`).
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}
