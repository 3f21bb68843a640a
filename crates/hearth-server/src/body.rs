//! The JSON body extractor of every API route: enforces the body limit (413), and turns malformed JSON or
//! wrong field types into a 400 that says what and where, in the route's own error envelope.

use std::marker::PhantomData;

use axum::extract::{FromRequest, Request};
use serde::de::DeserializeOwned;

use crate::error::{ApiError, Failure, Flavor, Kind};
use crate::AppState;

/// A request body parsed as `T`, errors rendered in flavor `F`.
pub struct ApiJson<T, F>(pub T, pub PhantomData<F>);

impl<T: DeserializeOwned, F: Flavor> FromRequest<AppState> for ApiJson<T, F> {
    type Rejection = Failure<F>;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let limit = state.config.body_limit;
        let bytes = axum::body::to_bytes(req.into_body(), limit)
            .await
            .map_err(|_| {
                ApiError::new(
                    Kind::PayloadTooLarge,
                    format!("request body is larger than the limit of {limit} bytes"),
                )
            })?;
        let value: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::bad_request(format!("malformed JSON in request body: {e}")))?;
        let parsed = serde_json::from_value(value)
            .map_err(|e| ApiError::bad_request(format!("invalid request: {e}")))?;
        Ok(ApiJson(parsed, PhantomData))
    }
}
