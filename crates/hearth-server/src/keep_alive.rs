//! Ollama's `keep_alive`: how long a model stays loaded after a request, as a number of seconds or a Go-style
//! duration string.

use std::time::Duration;

use crate::error::ApiError;

/// How long a model stays loaded after a request (Ollama's `keep_alive`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeepAlive {
    For(Duration),
    Forever,
    /// Unload as soon as the request finishes.
    UnloadNow,
}

/// Parses Ollama's `keep_alive`: a number of seconds (negative: forever, 0: unload after this request) or a
/// duration string such as `"5m"`, `"30s"`, `"1h30m"`, `"500ms"`, `"-1"`.
pub fn parse_keep_alive(v: &serde_json::Value) -> Result<KeepAlive, ApiError> {
    let bad = || {
        ApiError::bad_param(
            "keep_alive",
            format!("keep_alive must be a number of seconds or a duration such as \"5m\", not {v}"),
        )
    };
    let secs = match v {
        serde_json::Value::Number(n) => n.as_f64().ok_or_else(bad)?,
        serde_json::Value::String(s) => parse_duration_secs(s.trim()).ok_or_else(bad)?,
        _ => return Err(bad()),
    };
    Ok(if secs < 0.0 {
        KeepAlive::Forever
    } else if secs == 0.0 {
        KeepAlive::UnloadNow
    } else if secs.is_finite() && secs < 1e12 {
        KeepAlive::For(Duration::from_secs_f64(secs))
    } else {
        KeepAlive::Forever
    })
}

/// Seconds in a Go-style duration (`1h30m`, `2.5s`, `-1`); a bare number is seconds.
fn parse_duration_secs(s: &str) -> Option<f64> {
    if let Ok(n) = s.parse::<f64>() {
        return Some(n);
    }
    let (neg, mut rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s),
    };
    if rest.is_empty() {
        return None;
    }
    let mut total = 0.0;
    while !rest.is_empty() {
        let num_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let n: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let mult = match &rest[..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += n * mult;
        rest = &rest[unit_end..];
    }
    Some(if neg { -total } else { total })
}
