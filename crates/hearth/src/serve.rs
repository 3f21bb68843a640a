//! `hearth serve`: flags (each also read from a `HEARTH_*` environment variable) over an optional TOML config
//! file over the defaults, then the server runs until SIGINT/SIGTERM.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use hearth_server::config::{parse_size, ModelSpec, ServerConfig};

#[derive(Args)]
pub struct ServeArgs {
    /// A TOML file with any of the settings below (flags and environment variables override it).
    #[arg(long, env = "HEARTH_CONFIG")]
    config: Option<PathBuf>,
    /// A model to serve: PATH or PATH=ALIAS (repeatable). A GGUF file, or a Hugging Face or MLX folder.
    #[arg(long = "model", env = "HEARTH_MODEL", value_delimiter = ',')]
    models: Vec<String>,
    /// A folder scanned for GGUF files and Hugging Face model folders.
    #[arg(long, env = "HEARTH_MODELS_DIR")]
    models_dir: Option<PathBuf>,
    /// Do not list models from the Hugging Face hub cache (HF_HOME).
    #[arg(long)]
    no_hf_cache: bool,
    /// Address to bind (default 127.0.0.1; use 0.0.0.0 to serve other machines).
    #[arg(long, env = "HEARTH_HOST")]
    host: Option<IpAddr>,
    #[arg(long, env = "HEARTH_PORT")]
    port: Option<u16>,
    /// Memory that loaded models may take together, e.g. 8G (default: 3/4 of RAM).
    #[arg(long, env = "HEARTH_MEMORY_BUDGET", value_parser = parse_size)]
    memory_budget: Option<u64>,
    #[arg(long, env = "HEARTH_MAX_LOADED_MODELS")]
    max_loaded_models: Option<usize>,
    /// Seconds an idle model stays loaded (default 300).
    #[arg(long, env = "HEARTH_IDLE_TTL")]
    idle_ttl: Option<u64>,
    /// Model ids never unloaded by idle TTL or eviction (repeatable).
    #[arg(long = "pin", value_delimiter = ',')]
    pinned: Vec<String>,
    /// Accepted API keys (repeatable or comma-separated); none = no authentication.
    #[arg(
        long = "api-key",
        env = "HEARTH_API_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    api_keys: Vec<String>,
    /// Largest request body, e.g. 10M.
    #[arg(long, env = "HEARTH_BODY_LIMIT", value_parser = parse_size)]
    body_limit: Option<u64>,
    /// Requests waiting per model (beyond the --max-seqs running) before new ones get 429.
    #[arg(long, env = "HEARTH_QUEUE_DEPTH")]
    queue_depth: Option<usize>,
    /// Positions per paged-KV block.
    #[arg(long, env = "HEARTH_KV_BLOCK_SIZE")]
    kv_block_size: Option<usize>,
    /// Tokens one batched step may run over all sequences (decodes first, then prompt chunks).
    #[arg(long, env = "HEARTH_MAX_BATCH_TOKENS")]
    max_batch_tokens: Option<usize>,
    /// Sequences generating at once per model.
    #[arg(long, env = "HEARTH_MAX_SEQS")]
    max_seqs: Option<usize>,
    /// Map a client's model name to a local model: NAME=MODEL (repeatable); NAME "*" catches every unknown name.
    #[arg(long = "alias", value_delimiter = ',')]
    aliases: Vec<String>,
    /// The model for requests that name none (default: the first --model).
    #[arg(long, env = "HEARTH_DEFAULT_MODEL")]
    default_model: Option<String>,
}

pub fn serve(a: ServeArgs) -> Result<()> {
    let mut c = match &a.config {
        Some(p) => ServerConfig::from_toml_file(p)?,
        None => ServerConfig::default(),
    };
    c.models
        .extend(a.models.iter().map(|m| ModelSpec::parse(m)));
    if a.models_dir.is_some() {
        c.models_dir = a.models_dir;
    }
    if a.no_hf_cache {
        c.scan_hf_cache = false;
    }
    let host = a.host.unwrap_or(c.bind.ip());
    let port = a.port.unwrap_or(c.bind.port());
    c.bind = SocketAddr::new(host, port);
    if let Some(v) = a.memory_budget {
        c.memory_budget = v;
    }
    if let Some(v) = a.max_loaded_models {
        c.max_loaded_models = v.max(1);
    }
    if let Some(v) = a.idle_ttl {
        c.idle_ttl_secs = v;
    }
    c.pinned.extend(a.pinned);
    c.api_keys
        .extend(a.api_keys.into_iter().filter(|k| !k.is_empty()));
    if let Some(v) = a.body_limit {
        c.body_limit = v as usize;
    }
    if let Some(v) = a.queue_depth {
        c.queue_depth = v.max(1);
    }
    if let Some(v) = a.kv_block_size {
        c.kv_block_size = v.max(1);
    }
    if let Some(v) = a.max_batch_tokens {
        c.max_batch_tokens = v.max(1);
    }
    if let Some(v) = a.max_seqs {
        c.max_seqs = v.max(1);
    }
    for al in &a.aliases {
        let (name, model) = al
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--alias {al:?}: expected NAME=MODEL"))?;
        c.aliases.insert(name.to_string(), model.to_string());
    }
    if a.default_model.is_some() {
        c.default_model = a.default_model;
    }
    if c.default_model.is_none() {
        c.default_model = c.models.first().map(|m| {
            m.alias.clone().unwrap_or_else(|| {
                let stem = if m.path.is_dir() {
                    m.path.file_name()
                } else {
                    m.path.file_stem()
                };
                stem.map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default()
            })
        });
    }
    // The device: `--device` (or HEARTH_DEVICE) wins over the config file; `auto` is resolved once, here, and
    // logged. On a GPU the budget is also capped by the card's memory (less 1 GiB of working room).
    let asked = crate::DEVICE.get().copied().unwrap_or_default();
    if asked != hearth_engine::backend::Device::Auto {
        c.device = asked;
    }
    let chosen = hearth_engine::backend::device::choose(c.device)?;
    c.device = chosen.device;
    // A GPU wants larger steps (prompt chunks feed tensor-core GEMMs): unless asked otherwise, 2048 tokens.
    if matches!(c.device, hearth_engine::backend::Device::Cuda(_))
        && a.max_batch_tokens.is_none()
        && c.max_batch_tokens == ServerConfig::default().max_batch_tokens
    {
        c.max_batch_tokens = hearth_engine::models::GPU_PREFILL_CHUNK;
    }
    if let Some((_, total)) = hearth_engine::backend::device::gpu_memory(c.device) {
        c.memory_budget = c.memory_budget.min((total as u64).saturating_sub(1 << 30));
    }
    eprintln!(
        "device: {} (memory budget {} MiB)",
        chosen.reason,
        c.memory_budget >> 20
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(hearth_server::serve(c))
}
