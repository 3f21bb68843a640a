//! hearth's HTTP server: OpenAI- and Anthropic-compatible APIs on one port, over a registry of local models
//! that are loaded on demand within a memory budget.
//!
//! Request flow: the middleware gives every request an id and checks API keys; an API handler (`openai`,
//! `anthropic`) parses and validates the body, asks the [`registry::Registry`] for the model (loading it if
//! needed), tokenizes, and submits a [`job::Job`] to the model's worker thread, whose [`job::Event`]s it turns
//! into a JSON body or a stream of server-sent events.

pub mod admin;
pub mod anthropic;
pub mod body;
pub mod config;
pub mod discovery;
pub mod error;
pub mod job;
pub mod keep_alive;
pub mod middleware;
pub mod openai;
pub mod prompt;
pub mod registry;
pub mod sse;
pub mod worker;

use std::sync::Arc;

use axum::routing::get;
use axum::Router;

use config::ServerConfig;
use registry::Registry;

/// Shared by every handler.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<ServerConfig>,
    pub registry: Arc<Registry>,
}

/// The whole HTTP surface.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/health", get(health))
        .merge(admin::routes())
        .merge(openai::routes())
        .merge(anthropic::routes())
        .fallback(middleware::not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::auth,
        ))
        .layer(axum::middleware::from_fn(middleware::request_id))
        .with_state(state)
}

async fn health() -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({"status": "ok"}))
}

/// Binds, serves until SIGINT or SIGTERM, then lets in-flight requests (streams included) finish.
pub async fn serve(config: ServerConfig) -> anyhow::Result<()> {
    let registry = Arc::new(Registry::new(&config)?);
    let reaper = registry.spawn_reaper();
    let state = AppState {
        config: Arc::new(config.clone()),
        registry: registry.clone(),
    };
    let listener = tokio::net::TcpListener::bind(config.bind)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.bind))?;
    tracing::info!(addr = %listener.local_addr()?, "hearth serving");
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    reaper.abort();
    registry.shutdown(std::time::Duration::from_secs(10)).await;
    tracing::info!("hearth stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown requested: finishing requests in flight");
}
