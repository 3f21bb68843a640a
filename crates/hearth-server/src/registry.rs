//! The model registry (being built): which models exist, which are loaded, loading on demand under a memory
//! budget, eviction, idle TTLs and pinning.

use std::sync::Arc;
use std::time::Duration;

use crate::config::ServerConfig;
use crate::error::ApiError;
use crate::job::ModelHandle;

/// How long a model stays loaded after a request (Ollama's `keep_alive`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeepAlive {
    For(Duration),
    Forever,
    /// Unload as soon as the request finishes.
    UnloadNow,
}

/// A model's state as listed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelState {
    Available,
    Loading,
    Loaded,
}

/// One known model, for listings.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ModelInfo {
    pub id: String,
    pub path: std::path::PathBuf,
    pub state: ModelState,
    /// Memory it takes (or would take) loaded: weights plus its KV cache.
    pub bytes: u64,
    pub pinned: bool,
    /// Seconds since the epoch: the file's modification time.
    pub created: u64,
}

/// Every known model and the loaded ones.
pub struct Registry {
    _config: ServerConfig,
}

impl Registry {
    pub fn new(config: &ServerConfig) -> anyhow::Result<Registry> {
        Ok(Registry {
            _config: config.clone(),
        })
    }
    /// The loaded model for a requested name, loading it first if needed.
    pub async fn acquire(&self, requested: &str, _keep_alive: Option<KeepAlive>) -> Result<Arc<ModelHandle>, ApiError> {
        Err(ApiError::not_found(format!("model {requested:?} not found")))
    }
    pub fn list(&self) -> Vec<ModelInfo> {
        Vec::new()
    }
}
