//! Finding models where users already keep them: paths named in the config, a models folder, and the Hugging
//! Face hub cache.
//!
//! Discovery runs once at startup and never loads weights. For each model it records the path, the file's
//! modification time, and an estimate of the memory the model takes once loaded, so the registry can plan
//! evictions before it loads anything.
//!
//! The estimate is made eagerly, at discovery: a GGUF file is opened with the memory-mapped reader (which
//! parses metadata and tensor headers only) and a Hugging Face folder's `config.json` is read; the estimate is
//! the weight files' sizes plus the KV cache at the full context in f32
//! (`2 * n_layers * context_len * n_kv_heads * head_dim * 4` bytes). The KV cache grows on demand, so this is
//! the worst case a long conversation reaches, which is what a budget must plan for. Eager estimates let
//! `GET /v1/models` report sizes and broken files up front; the registry estimates again before each load, so
//! a file replaced while the server runs is planned with its new size.
//!
//! Nothing here fails startup: a broken file is listed with its error (so that a user sees why it cannot be
//! used) and a file of an architecture hearth does not run, found by scanning, is skipped with a log line
//! (hub caches hold embedding, vision and speech models too).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use hearth_engine::loader::gguf::GgufFile;
use hearth_engine::models::config::ModelConfig;

use crate::config::ServerConfig;

/// How a model is stored on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// One `.gguf` file.
    Gguf,
    /// A Hugging Face folder: `config.json` plus `*.safetensors`.
    Safetensors,
}

/// Where a model was found; the first source to claim an id keeps it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// `--model PATH[=ALIAS]` or the config file's `[[models]]`.
    Config,
    /// The `--models-dir` folder.
    ModelsDir,
    /// The Hugging Face hub cache.
    HfCache,
}

/// The memory a loaded model takes, as planned before loading it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Estimate {
    /// Sizes of the weight files (memory-mapped, paged in as the model runs).
    pub weight_bytes: u64,
    /// The KV cache at the full context in f32.
    pub kv_bytes: u64,
    pub context_len: usize,
}

impl Estimate {
    /// Weights plus KV cache.
    pub fn total(&self) -> u64 {
        self.weight_bytes.saturating_add(self.kv_bytes)
    }
}

/// One model found on disk.
#[derive(Clone, Debug)]
pub struct Discovered {
    /// The id clients use.
    pub id: String,
    /// The GGUF file or the Hugging Face folder.
    pub path: PathBuf,
    pub format: Format,
    pub source: Source,
    /// Modification time, seconds since the epoch (0 when unknown).
    pub created: u64,
    /// The memory estimate, or why it could not be made (the file is unreadable or malformed).
    pub estimate: Result<Estimate, String>,
}

/// Everything the config points at, in order: configured paths, the models folder, then the hub cache (when
/// `scan_hf_cache` is set). Duplicate ids keep the first and log a warning.
pub fn discover(config: &ServerConfig) -> Vec<Discovered> {
    let hub = if config.scan_hf_cache {
        hf_cache_dir()
    } else {
        None
    };
    discover_with(config, hub.as_deref())
}

/// [`discover`] with an explicit hub cache folder (None: do not scan one), for tests and tools.
pub fn discover_with(config: &ServerConfig, hf_cache: Option<&Path>) -> Vec<Discovered> {
    let mut found = Vec::new();
    for spec in &config.models {
        match configured(&spec.path, spec.alias.as_deref()) {
            Some(d) => found.push(d),
            None => {
                tracing::warn!(path = %spec.path.display(), "configured model not found; skipping it")
            }
        }
    }
    if let Some(dir) = &config.models_dir {
        found.extend(scan_models_dir(dir));
    }
    if let Some(hub) = hf_cache {
        found.extend(scan_hf_cache(hub));
    }
    let mut seen = HashSet::new();
    found.retain(|d| {
        let fresh = seen.insert(d.id.clone());
        if !fresh {
            tracing::warn!(id = %d.id, path = %d.path.display(), "duplicate model id; keeping the first one found");
        }
        fresh
    });
    for d in &found {
        match &d.estimate {
            Ok(e) => {
                tracing::info!(id = %d.id, path = %d.path.display(), mb = e.total() >> 20, "model found")
            }
            Err(err) => {
                tracing::warn!(id = %d.id, path = %d.path.display(), error = %err, "model found but unusable")
            }
        }
    }
    found
}

/// The Hugging Face hub cache folder: `HF_HUB_CACHE`, else `$HF_HOME/hub`, else
/// `$XDG_CACHE_HOME/huggingface/hub`, else `~/.cache/huggingface/hub` (huggingface_hub's own order).
pub fn hf_cache_dir() -> Option<PathBuf> {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    var("HF_HUB_CACHE")
        .or_else(|| var("HF_HOME").map(|h| h.join("hub")))
        .or_else(|| var("XDG_CACHE_HOME").map(|c| c.join("huggingface/hub")))
        .or_else(|| var("HOME").map(|h| h.join(".cache/huggingface/hub")))
}

/// A path the user named: always listed (with its error if broken), even if of an unsupported kind, since
/// the user asked for it. None only when the path does not exist.
fn configured(path: &Path, alias: Option<&str>) -> Option<Discovered> {
    let meta = std::fs::metadata(path).ok()?;
    // A `.safetensors` or `config.json` inside a Hugging Face folder names the folder.
    let is_hf_file = path
        .extension()
        .is_some_and(|e| e == "safetensors" || e == "json");
    let (path, format) = if meta.is_dir() {
        (path.to_path_buf(), Format::Safetensors)
    } else if is_hf_file {
        (
            path.parent().unwrap_or(Path::new(".")).to_path_buf(),
            Format::Safetensors,
        )
    } else {
        (path.to_path_buf(), Format::Gguf)
    };
    let id = match alias {
        Some(a) => a.to_string(),
        None => default_id(&path, format),
    };
    Some(describe(id, path, format, Source::Config).0)
}

/// The file stem of a GGUF file, the folder name of a Hugging Face folder.
fn default_id(path: &Path, format: Format) -> String {
    let name = match format {
        Format::Gguf => path.file_stem(),
        Format::Safetensors => path.file_name(),
    };
    name.map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

/// Scans a models folder: GGUF files and Hugging Face folders at its top level and one level of subfolders
/// down. Ids are file stems and folder names.
pub fn scan_models_dir(dir: &Path) -> Vec<Discovered> {
    let mut out = Vec::new();
    let entries = match sorted_entries(dir) {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot read the models folder");
            return out;
        }
    };
    let mut subdirs = Vec::new();
    for p in entries {
        if p.is_dir() {
            subdirs.push(p);
        } else if is_gguf(&p) {
            keep_scanned(
                &mut out,
                describe(
                    default_id(&p, Format::Gguf),
                    p,
                    Format::Gguf,
                    Source::ModelsDir,
                ),
            );
        }
    }
    for sub in subdirs {
        if is_hf_folder(&sub) {
            let id = default_id(&sub, Format::Safetensors);
            keep_scanned(
                &mut out,
                describe(id, sub.clone(), Format::Safetensors, Source::ModelsDir),
            );
        }
        for p in sorted_entries(&sub).unwrap_or_default() {
            if p.is_file() && is_gguf(&p) {
                keep_scanned(
                    &mut out,
                    describe(
                        default_id(&p, Format::Gguf),
                        p,
                        Format::Gguf,
                        Source::ModelsDir,
                    ),
                );
            } else if p.is_dir() && is_hf_folder(&p) {
                let id = default_id(&p, Format::Safetensors);
                keep_scanned(
                    &mut out,
                    describe(id, p, Format::Safetensors, Source::ModelsDir),
                );
            }
        }
    }
    out
}

/// Scans a hub cache laid out as `models--ORG--NAME/snapshots/REV/`. The revision is the one `refs/main`
/// names when present, else the most recently modified snapshot. A snapshot with `config.json` and safetensors
/// is listed as `ORG/NAME`; each GGUF file in it (or one folder down) as `ORG/NAME:FILESTEM`.
pub fn scan_hf_cache(hub: &Path) -> Vec<Discovered> {
    let mut out = Vec::new();
    let Ok(repos) = sorted_entries(hub) else {
        tracing::debug!(dir = %hub.display(), "no Hugging Face hub cache here");
        return out;
    };
    for repo in repos {
        let Some(name) = repo
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("models--"))
        else {
            continue;
        };
        let repo_id = name.replace("--", "/");
        let Some(snap) = pick_snapshot(&repo) else {
            tracing::debug!(repo = %repo_id, "no snapshot in the hub cache; skipping");
            continue;
        };
        if is_hf_folder(&snap) {
            keep_scanned(
                &mut out,
                describe(
                    repo_id.clone(),
                    snap.clone(),
                    Format::Safetensors,
                    Source::HfCache,
                ),
            );
        }
        let mut ggufs = Vec::new();
        for p in sorted_entries(&snap).unwrap_or_default() {
            if p.is_dir() {
                ggufs.extend(
                    sorted_entries(&p)
                        .unwrap_or_default()
                        .into_iter()
                        .filter(|f| is_gguf(f)),
                );
            } else if is_gguf(&p) {
                ggufs.push(p);
            }
        }
        for p in ggufs {
            let id = format!("{repo_id}:{}", default_id(&p, Format::Gguf));
            keep_scanned(&mut out, describe(id, p, Format::Gguf, Source::HfCache));
        }
    }
    out
}

/// The snapshot `refs/main` points at, else the newest one.
fn pick_snapshot(repo: &Path) -> Option<PathBuf> {
    let snaps = repo.join("snapshots");
    if let Ok(rev) = std::fs::read_to_string(repo.join("refs/main")) {
        let p = snaps.join(rev.trim());
        if !rev.trim().is_empty() && p.is_dir() {
            return Some(p);
        }
    }
    sorted_entries(&snaps)
        .ok()?
        .into_iter()
        .filter(|p| p.is_dir())
        .max_by_key(|p| {
            std::fs::metadata(p)
                .and_then(|m| m.modified())
                .unwrap_or(UNIX_EPOCH)
        })
}

/// Scanned models of an architecture hearth does not run are left out; other errors stay listed.
fn keep_scanned(out: &mut Vec<Discovered>, (d, unsupported): (Discovered, bool)) {
    if unsupported {
        if let Err(e) = &d.estimate {
            tracing::info!(path = %d.path.display(), reason = %e, "skipping a model hearth cannot run");
        }
        return;
    }
    out.push(d);
}

/// The entry for one model, and whether its estimate failed because hearth does not run its kind.
fn describe(id: String, path: PathBuf, format: Format, source: Source) -> (Discovered, bool) {
    let created = modified_secs(&match format {
        Format::Gguf => path.clone(),
        Format::Safetensors => path.join("config.json"),
    });
    let est = estimate_inner(&path, format);
    let unsupported = matches!(est, Err((_, true)));
    let d = Discovered {
        estimate: est.map_err(|(e, _)| e.to_string()),
        id,
        path,
        format,
        source,
        created,
    };
    (d, unsupported)
}

/// Opens only what gives the model's shape (GGUF metadata through the memory map, or `config.json`) and
/// estimates the memory it takes loaded. See the module docs for the formula.
pub fn estimate(path: &Path, format: Format) -> hearth_engine::Result<Estimate> {
    estimate_inner(path, format).map_err(|(e, _)| e)
}

/// [`estimate`], also telling whether the file is readable but of an architecture hearth does not run.
fn estimate_inner(path: &Path, format: Format) -> Result<Estimate, (hearth_engine::Error, bool)> {
    use hearth_engine::Error;
    let not_arch = |e: Error| (e, false);
    let is_arch = |e: Error| {
        let unsupported = matches!(e, Error::Unsupported { .. });
        (e, unsupported)
    };
    let (config, weight_bytes) = match format {
        Format::Gguf => {
            let g = GgufFile::open(path).map_err(not_arch)?;
            let size = std::fs::metadata(path)
                .map_err(|e| not_arch(Error::io(path, e)))?
                .len();
            (ModelConfig::from_gguf(&g).map_err(is_arch)?, size)
        }
        Format::Safetensors => {
            let cfg_path = path.join("config.json");
            let text = std::fs::read_to_string(&cfg_path)
                .map_err(|e| not_arch(Error::io(&cfg_path, e)))?;
            let root: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| not_arch(Error::format(&cfg_path, format!("not valid JSON: {e}"))))?;
            let size = sorted_entries(path)
                .map_err(|e| not_arch(Error::io(path, e)))?
                .iter()
                .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
                .map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
                .sum();
            (
                ModelConfig::from_hf_config(&cfg_path, &root).map_err(is_arch)?,
                size,
            )
        }
    };
    let kv_bytes = 2u64
        .saturating_mul(config.n_layers as u64)
        .saturating_mul(crate::job::kv_pool_tokens(config.context_len) as u64)
        .saturating_mul(config.n_kv_heads as u64)
        .saturating_mul(config.head_dim as u64)
        .saturating_mul(4);
    Ok(Estimate {
        weight_bytes,
        kv_bytes,
        context_len: config.context_len,
    })
}

fn is_gguf(p: &Path) -> bool {
    p.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
}

/// A Hugging Face model folder: `config.json` and at least one `.safetensors` file.
fn is_hf_folder(dir: &Path) -> bool {
    dir.join("config.json").is_file()
        && sorted_entries(dir)
            .map(|es| {
                es.iter()
                    .any(|p| p.extension().is_some_and(|e| e == "safetensors"))
            })
            .unwrap_or(false)
}

/// A folder's entries, sorted so that discovery (and which duplicate wins) does not depend on the file system.
fn sorted_entries(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    v.sort();
    Ok(v)
}

fn modified_secs(p: &Path) -> u64 {
    std::fs::metadata(p)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
