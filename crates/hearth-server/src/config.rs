//! Server settings: every field can come from a TOML file, and the `hearth serve` flags (which also read
//! `HEARTH_*` environment variables) override it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// A model named on the command line or in the config file.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct ModelSpec {
    pub path: PathBuf,
    /// The id clients use; default: the file stem or folder name.
    pub alias: Option<String>,
}

impl ModelSpec {
    /// Parses `PATH[=ALIAS]`.
    pub fn parse(s: &str) -> ModelSpec {
        match s.rsplit_once('=') {
            Some((p, a)) if !a.is_empty() && !a.contains('/') => ModelSpec {
                path: p.into(),
                alias: Some(a.to_string()),
            },
            _ => ModelSpec {
                path: s.into(),
                alias: None,
            },
        }
    }
}

/// Everything `hearth serve` is configured by.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    pub bind: SocketAddr,
    pub models: Vec<ModelSpec>,
    pub models_dir: Option<PathBuf>,
    /// Scan the Hugging Face hub cache (HF_HOME or ~/.cache/huggingface) for models.
    pub scan_hf_cache: bool,
    /// Bytes that loaded models (weights + KV cache) may take together.
    pub memory_budget: u64,
    pub max_loaded_models: usize,
    /// Unload a model idle this long (seconds); a request's `keep_alive` overrides it for that model.
    pub idle_ttl_secs: u64,
    /// Models never unloaded by TTL or eviction.
    pub pinned: Vec<String>,
    /// Accepted API keys; empty = no authentication.
    pub api_keys: Vec<String>,
    /// Largest request body in bytes.
    pub body_limit: usize,
    /// Jobs queued per model before requests get 429.
    pub queue_depth: usize,
    /// Positions per paged-KV block.
    pub kv_block_size: usize,
    /// Tokens one batched step may run, over all sequences (decodes first, then prompt chunks).
    pub max_batch_tokens: usize,
    /// Sequences running at once per model.
    pub max_seqs: usize,
    /// Model names clients send (e.g. "claude-sonnet-4-5") mapped to local model ids; "*" maps any unknown name.
    pub aliases: BTreeMap<String, String>,
    /// The model used when a request names none.
    pub default_model: Option<String>,
    /// Where models run (`auto`, `cpu`, `cuda`, `cuda:N`); `hearth serve` resolves `auto` once at start.
    pub device: hearth_engine::backend::Device,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            bind: "127.0.0.1:8080".parse().unwrap(),
            models: Vec::new(),
            models_dir: None,
            scan_hf_cache: true,
            device: hearth_engine::backend::Device::Auto,
            memory_budget: default_memory_budget(),
            max_loaded_models: 4,
            idle_ttl_secs: 300,
            pinned: Vec::new(),
            api_keys: Vec::new(),
            body_limit: 10 * 1024 * 1024,
            queue_depth: 64,
            kv_block_size: 16,
            max_batch_tokens: 256,
            max_seqs: 64,
            aliases: BTreeMap::new(),
            default_model: None,
        }
    }
}

impl ServerConfig {
    /// Reads a TOML config file.
    pub fn from_toml_file(path: &std::path::Path) -> anyhow::Result<ServerConfig> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    pub fn idle_ttl(&self) -> Duration {
        Duration::from_secs(self.idle_ttl_secs)
    }
}

/// Three quarters of physical memory (from /proc/meminfo), or 8 GiB where that cannot be read.
pub fn default_memory_budget() -> u64 {
    let total = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
        m.lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .map(|kb| kb * 1024)
    });
    total.map(|t| t / 4 * 3).unwrap_or(8 << 30)
}

/// Parses a size like `8G`, `512M`, `1.5GiB` or a plain byte count.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("not a size: {s:?}"))?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1u64,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return Err(format!("unknown size unit in {s:?}")),
    };
    Ok((n * mult as f64) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_specs() {
        assert_eq!(parse_size("8G").unwrap(), 8 << 30);
        assert_eq!(parse_size("1.5GiB").unwrap(), 3 << 29);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("lots").is_err());
        assert_eq!(
            ModelSpec::parse("a/b.gguf=smol").alias.as_deref(),
            Some("smol")
        );
        assert_eq!(ModelSpec::parse("a/b.gguf").alias, None);
    }

    #[test]
    fn toml_config() {
        let c: ServerConfig = toml::from_str(
            r#"
            bind = "127.0.0.1:9000"
            api_keys = ["k1"]
            memory_budget = 1000
            [[models]]
            path = "m.gguf"
            alias = "m"
            [aliases]
            "claude-sonnet-4-5" = "m"
            "#,
        )
        .unwrap();
        assert_eq!(c.bind.port(), 9000);
        assert_eq!(c.models[0].alias.as_deref(), Some("m"));
        assert_eq!(c.aliases["claude-sonnet-4-5"], "m");
        assert_eq!(c.queue_depth, 64);
        assert!(toml::from_str::<ServerConfig>("bogus = 1").is_err());
    }
}
