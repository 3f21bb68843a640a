//! One error type for every API, rendered in each API's own envelope.
//!
//! Handlers and the registry produce [`ApiError`]s with a [`Kind`]; the OpenAI routes render them as
//! `{"error": {"message", "type", "param", "code"}}`, the Anthropic routes as
//! `{"type": "error", "error": {"type", "message"}}`, each with the status code the official SDKs map to their
//! own exception types. A client's mistake is never a 500.

use std::marker::PhantomData;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// What kind of failure, which fixes the status code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// 400: malformed JSON, wrong types, a prompt longer than the context, unsupported options.
    BadRequest,
    /// 401: API keys are configured and the request has no right one.
    Unauthorized,
    /// 404: unknown model or route.
    NotFound,
    /// 413: the body is over the limit.
    PayloadTooLarge,
    /// 429: the model's queue is full.
    Overloaded,
    /// 503: the server cannot take the request now (shutting down, no memory free until a model goes idle).
    Unavailable,
    /// 507: the model cannot fit in the memory budget even with every other model unloaded.
    InsufficientStorage,
    /// 500: a fault of the server's own.
    Internal,
}

/// An error on its way to a client.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiError {
    pub kind: Kind,
    pub message: String,
    /// The request field at fault, when one is.
    pub param: Option<String>,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}: {}", self.kind, self.message)
    }
}

impl std::error::Error for ApiError {}

impl ApiError {
    pub fn new(kind: Kind, message: impl Into<String>) -> ApiError {
        ApiError {
            kind,
            message: message.into(),
            param: None,
        }
    }
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        Self::new(Kind::BadRequest, message)
    }
    /// A bad value in one field.
    pub fn bad_param(param: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            kind: Kind::BadRequest,
            message: message.into(),
            param: Some(param.to_string()),
        }
    }
    pub fn not_found(message: impl Into<String>) -> ApiError {
        Self::new(Kind::NotFound, message)
    }
    pub fn internal(message: impl Into<String>) -> ApiError {
        Self::new(Kind::Internal, message)
    }

    pub fn status(&self) -> StatusCode {
        match self.kind {
            Kind::BadRequest => StatusCode::BAD_REQUEST,
            Kind::Unauthorized => StatusCode::UNAUTHORIZED,
            Kind::NotFound => StatusCode::NOT_FOUND,
            Kind::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Kind::Overloaded => StatusCode::TOO_MANY_REQUESTS,
            Kind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Kind::InsufficientStorage => StatusCode::INSUFFICIENT_STORAGE,
            Kind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// OpenAI's error body.
    pub fn openai_body(&self) -> serde_json::Value {
        let (ty, code) = match self.kind {
            Kind::BadRequest => ("invalid_request_error", None),
            Kind::Unauthorized => ("authentication_error", Some("invalid_api_key")),
            Kind::NotFound => ("invalid_request_error", Some("model_not_found")),
            Kind::PayloadTooLarge => ("invalid_request_error", Some("request_too_large")),
            Kind::Overloaded => ("rate_limit_error", Some("queue_full")),
            Kind::Unavailable => ("server_error", Some("unavailable")),
            Kind::InsufficientStorage => ("server_error", Some("insufficient_memory")),
            Kind::Internal => ("server_error", None),
        };
        json!({"error": {"message": self.message, "type": ty, "param": self.param, "code": code}})
    }

    /// Anthropic's error body.
    pub fn anthropic_body(&self) -> serde_json::Value {
        let ty = match self.kind {
            Kind::BadRequest => "invalid_request_error",
            Kind::Unauthorized => "authentication_error",
            Kind::NotFound => "not_found_error",
            Kind::PayloadTooLarge => "request_too_large",
            Kind::Overloaded => "rate_limit_error",
            Kind::Unavailable | Kind::InsufficientStorage => "overloaded_error",
            Kind::Internal => "api_error",
        };
        json!({"type": "error", "error": {"type": ty, "message": self.message}})
    }
}

impl From<hearth_engine::Error> for ApiError {
    fn from(e: hearth_engine::Error) -> ApiError {
        match e {
            hearth_engine::Error::BadRequest(m) => ApiError::bad_request(m),
            other => ApiError::internal(other.to_string()),
        }
    }
}

/// Which API's envelope an error is rendered in.
pub trait Flavor: Send + Sync + 'static {
    fn render(e: &ApiError) -> Response;
}

/// OpenAI's envelope.
pub struct OpenAi;
/// Anthropic's envelope.
pub struct Anthropic;

impl Flavor for OpenAi {
    fn render(e: &ApiError) -> Response {
        (e.status(), axum::Json(e.openai_body())).into_response()
    }
}

impl Flavor for Anthropic {
    fn render(e: &ApiError) -> Response {
        (e.status(), axum::Json(e.anthropic_body())).into_response()
    }
}

/// An error rendered in flavor `F`: handlers return `Result<_, Failure<F>>` and use `?` on `ApiError`s.
pub struct Failure<F: Flavor>(pub ApiError, PhantomData<F>);

impl<F: Flavor> From<ApiError> for Failure<F> {
    fn from(e: ApiError) -> Self {
        Failure(e, PhantomData)
    }
}

impl<F: Flavor> IntoResponse for Failure<F> {
    fn into_response(self) -> Response {
        if self.0.kind == Kind::Internal {
            tracing::error!(error = %self.0.message, "internal error");
        } else {
            tracing::info!(status = self.0.status().as_u16(), error = %self.0.message, "request refused");
        }
        F::render(&self.0)
    }
}
