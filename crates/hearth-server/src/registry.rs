//! The model registry: which models exist, which are loaded, loading on demand under a memory budget,
//! eviction, idle TTLs and pinning.
//!
//! Models are found once at startup ([`crate::discovery`]); each has a slot that is available, loading,
//! loaded, or in error (its file is broken; a later request tries again, in case it was fixed).
//!
//! Loading: the first request for a model loads it; concurrent first requests wait on a per-model lock and
//! share the one load. Before loading, the registry makes room: while the loaded (and loading) models' sizes
//! plus the new one's exceed the memory budget, or `max_loaded_models` are loaded, it unloads the least
//! recently used idle model that is not pinned. It plans all evictions before doing any, so a request that
//! cannot be served unloads nothing. When models in use hold the room, the load waits up to [`BUSY_WAIT`] for
//! them to go idle, then gives up with a 503 (at once when pinned models hold it). A model larger than the
//! whole budget is a 507. The load itself runs on a blocking thread inside a spawned task, so a client that
//! disconnects mid-load neither aborts it nor leaves its memory reserved.
//!
//! "Idle" means no job queued or running and no request holding the model's [`ModelHandle`]: a handler that
//! acquired a model keeps it from being evicted until it drops the handle.
//!
//! Unloading (explicit, by TTL, or by a request's `keep_alive: 0`) drops the registry's handle; the model's
//! worker thread then ends and frees the model. An explicit unload of a model in use marks it, and it is
//! unloaded as soon as it is idle (at the reaper's next tick); requests arriving meanwhile are still served.
//!
//! TTL: a model idle (as above) for its TTL is unloaded by the reaper task, which ticks every second. The TTL
//! is `idle_ttl_secs` (0 = none) until a request's `keep_alive` sets another for that model; it sticks until a
//! later `keep_alive` changes it. Idle time counts from the end of the model's last use. Pinned models are
//! never evicted or expired.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::config::ServerConfig;
use crate::discovery::{self, Discovered, Estimate, Format, Source};
use crate::error::{ApiError, Kind};
use crate::job::ModelHandle;
pub use crate::keep_alive::{parse_keep_alive, KeepAlive};
use crate::worker::{self, Worker};

/// A model's state as listed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelState {
    Available,
    Loading,
    Loaded,
    /// The file could not be read or loaded; `ModelInfo::error` says why. A request tries to load it again.
    Error,
}

/// One known model, for listings.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ModelInfo {
    pub id: String,
    pub path: PathBuf,
    pub format: Format,
    pub source: Source,
    pub state: ModelState,
    /// Memory it takes (or would take) loaded: weights plus its KV cache at full context (0 when unknown).
    pub bytes: u64,
    pub context_len: Option<usize>,
    pub pinned: bool,
    /// Seconds since the epoch: the file's modification time.
    pub created: u64,
    /// Jobs queued or running.
    pub in_flight: usize,
    /// An unload was asked for while the model was in use; it happens when the model is idle.
    pub unload_pending: bool,
    /// Seconds since the epoch of the last request for it, if any.
    pub last_used: Option<u64>,
    /// The idle TTL that applies to it; None: it never expires.
    pub ttl_secs: Option<u64>,
    /// Seconds left before the TTL unloads it (loaded, idle models only).
    pub expires_in_secs: Option<u64>,
    /// Why it cannot be used, when it cannot.
    pub error: Option<String>,
}

/// How long a load waits for models in use to go idle before giving up with a 503.
pub const BUSY_WAIT: Duration = Duration::from_secs(2);

/// A model's TTL as set by requests.
#[derive(Clone, Copy, Debug)]
enum Keep {
    /// The configured `idle_ttl_secs`.
    Default,
    For(Duration),
    Forever,
}

/// A model found at startup; fixed for the registry's life.
struct Entry {
    id: String,
    path: PathBuf,
    format: Format,
    source: Source,
    created: u64,
    /// Held while loading, so concurrent first requests load once.
    load_lock: tokio::sync::Mutex<()>,
}

struct Loaded {
    handle: Arc<ModelHandle>,
    thread: Option<std::thread::JoinHandle<()>>,
    bytes: u64,
}

impl Loaded {
    /// In use: jobs queued or running, or a request holds the handle.
    fn busy(&self) -> bool {
        self.handle.in_flight.load(Ordering::SeqCst) > 0 || Arc::strong_count(&self.handle) > 1
    }
}

/// A model's mutable state.
struct Slot {
    estimate: Result<Estimate, String>,
    load_error: Option<String>,
    loaded: Option<Loaded>,
    /// Bytes reserved while a load runs.
    loading: Option<u64>,
    pinned: bool,
    keep: Keep,
    unload_when_idle: bool,
    last_used: Option<(Instant, SystemTime)>,
}

struct Shared {
    config: ServerConfig,
    entries: Vec<Entry>,
    by_id: HashMap<String, usize>,
    /// Lowercased ids; None where two ids differ only in case.
    by_lower: HashMap<String, Option<usize>>,
    slots: Mutex<Vec<Slot>>,
    loads: AtomicUsize,
}

/// Every known model and the loaded ones. Cheap to share behind an `Arc`; all methods take `&self`.
pub struct Registry {
    shared: Arc<Shared>,
}

impl Registry {
    /// Discovers models as configured (see [`discovery::discover`]).
    pub fn new(config: &ServerConfig) -> anyhow::Result<Registry> {
        Ok(Self::from_discovered(config, discovery::discover(config)))
    }

    /// A registry over an explicit list of models (tests, tools).
    pub fn from_discovered(config: &ServerConfig, found: Vec<Discovered>) -> Registry {
        let mut entries = Vec::new();
        let mut slots = Vec::new();
        let mut by_id = HashMap::new();
        let mut by_lower: HashMap<String, Option<usize>> = HashMap::new();
        for d in found {
            if by_id.contains_key(&d.id) {
                tracing::warn!(id = %d.id, "duplicate model id; keeping the first");
                continue;
            }
            let i = entries.len();
            by_id.insert(d.id.clone(), i);
            by_lower
                .entry(d.id.to_lowercase())
                .and_modify(|v| *v = None)
                .or_insert(Some(i));
            slots.push(Slot {
                estimate: d.estimate,
                load_error: None,
                loaded: None,
                loading: None,
                pinned: false,
                keep: Keep::Default,
                unload_when_idle: false,
                last_used: None,
            });
            entries.push(Entry {
                id: d.id,
                path: d.path,
                format: d.format,
                source: d.source,
                created: d.created,
                load_lock: tokio::sync::Mutex::new(()),
            });
        }
        let reg = Registry {
            shared: Arc::new(Shared {
                config: config.clone(),
                entries,
                by_id,
                by_lower,
                slots: Mutex::new(slots),
                loads: AtomicUsize::new(0),
            }),
        };
        for name in &config.pinned {
            match reg.shared.resolve(name) {
                Ok(i) => reg.shared.slots()[i].pinned = true,
                Err(e) => {
                    tracing::warn!(model = %name, error = %e.message, "cannot pin an unknown model")
                }
            }
        }
        tracing::info!(
            models = reg.shared.entries.len(),
            budget_mb = config.memory_budget >> 20,
            max_loaded = config.max_loaded_models,
            "model registry ready"
        );
        reg
    }

    /// The model id a request's `model` field means: an exact id; an alias from the config; a case-insensitive
    /// match; `ORG/NAME` for a hub repository with one GGUF file; the `"*"` alias for anything else. An empty
    /// name means `default_model` (or the only model, when there is one). Unknown names are a 404.
    pub fn resolve(&self, requested: &str) -> Result<String, ApiError> {
        self.shared
            .resolve(requested)
            .map(|i| self.shared.entries[i].id.clone())
    }

    /// Every known id, in discovery order.
    pub fn ids(&self) -> Vec<String> {
        self.shared.entries.iter().map(|e| e.id.clone()).collect()
    }

    /// The loaded model for a requested name, loading it first if needed (see the module docs for eviction
    /// and errors). `keep_alive` changes how long the model stays loaded once idle.
    pub async fn acquire(
        &self,
        requested: &str,
        keep_alive: Option<KeepAlive>,
    ) -> Result<Arc<ModelHandle>, ApiError> {
        let i = self.shared.resolve(requested)?;
        let handle = match self.shared.loaded_handle(i) {
            Some(h) => h,
            None => {
                let shared = self.shared.clone();
                tokio::spawn(async move { shared.ensure_loaded(i).await })
                    .await
                    .map_err(|e| ApiError::internal(format!("loading the model failed: {e}")))??
            }
        };
        let mut slots = self.shared.slots();
        let slot = &mut slots[i];
        slot.last_used = Some((Instant::now(), SystemTime::now()));
        match keep_alive {
            Some(KeepAlive::UnloadNow) | Some(KeepAlive::For(Duration::ZERO)) => {
                slot.unload_when_idle = true
            }
            Some(KeepAlive::For(d)) => {
                slot.keep = Keep::For(d);
                slot.unload_when_idle = false;
            }
            Some(KeepAlive::Forever) => {
                slot.keep = Keep::Forever;
                slot.unload_when_idle = false;
            }
            None => {}
        }
        Ok(handle)
    }

    /// Every known model with its state.
    pub fn list(&self) -> Vec<ModelInfo> {
        let slots = self.shared.slots();
        (0..self.shared.entries.len())
            .map(|i| self.shared.info_of(i, &slots))
            .collect()
    }

    /// One model's state.
    pub fn info(&self, requested: &str) -> Result<ModelInfo, ApiError> {
        let i = self.shared.resolve(requested)?;
        Ok(self.shared.info_of(i, &self.shared.slots()))
    }

    /// Loads a model now (as a request would, with its `keep_alive`), and returns its state.
    pub async fn load(
        &self,
        requested: &str,
        keep_alive: Option<KeepAlive>,
    ) -> Result<ModelInfo, ApiError> {
        let id = self.resolve(requested)?;
        drop(self.acquire(&id, keep_alive).await?);
        self.info(&id)
    }

    /// Unloads a model: at once when idle, else as soon as it becomes idle (`unload_pending` in its state).
    /// Unloading a model that is not loaded does nothing.
    pub fn unload(&self, requested: &str) -> Result<ModelInfo, ApiError> {
        let i = self.shared.resolve(requested)?;
        let dropped;
        {
            let mut slots = self.shared.slots();
            let slot = &mut slots[i];
            let idle = slot.loaded.as_ref().is_some_and(|l| !l.busy());
            if idle {
                dropped = slot.loaded.take();
                slot.unload_when_idle = false;
            } else {
                dropped = None;
                slot.unload_when_idle = slot.loaded.is_some() || slot.loading.is_some();
            }
        }
        if dropped.is_some() {
            tracing::info!(model = %self.shared.entries[i].id, "unloading model on request");
        }
        drop(dropped);
        self.info(requested)
    }

    /// Pins (never evicted or expired) or unpins a model.
    pub fn set_pinned(&self, requested: &str, pinned: bool) -> Result<ModelInfo, ApiError> {
        let i = self.shared.resolve(requested)?;
        self.shared.slots()[i].pinned = pinned;
        tracing::info!(model = %self.shared.entries[i].id, pinned, "pin changed");
        self.info(requested)
    }

    /// Bytes held by loaded and loading models, and the budget.
    pub fn memory(&self) -> (u64, u64) {
        (
            used_bytes(&self.shared.slots()),
            self.shared.config.memory_budget,
        )
    }

    /// Models loaded now.
    pub fn loaded_count(&self) -> usize {
        self.shared
            .slots()
            .iter()
            .filter(|s| s.loaded.is_some())
            .count()
    }

    /// Successful loads since startup (a reloaded model counts again).
    pub fn load_count(&self) -> usize {
        self.shared.loads.load(Ordering::SeqCst)
    }

    /// The registry's settings.
    pub fn config(&self) -> &ServerConfig {
        &self.shared.config
    }

    /// Unloads idle models past their TTL and models whose unload was asked for once they are idle; returns
    /// the ids unloaded. The reaper calls this every second.
    pub fn reap(&self) -> Vec<String> {
        self.shared.reap()
    }

    /// Starts the reaper: a task that calls [`Registry::reap`] every second while the registry exists.
    pub fn spawn_reaper(&self) -> tokio::task::JoinHandle<()> {
        let weak: Weak<Shared> = Arc::downgrade(&self.shared);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                match weak.upgrade() {
                    Some(s) => {
                        s.reap();
                    }
                    None => break,
                }
            }
        })
    }

    /// Unloads every model (pinned ones too) and waits up to `wait` for their worker threads to end. Call it
    /// after the HTTP server has drained its requests.
    pub async fn shutdown(&self, wait: Duration) {
        let all: Vec<Loaded> = self
            .shared
            .slots()
            .iter_mut()
            .filter_map(|s| s.loaded.take())
            .collect();
        let n = all.len();
        let threads: Vec<_> = all
            .into_iter()
            .filter_map(|mut l| {
                let t = l.thread.take();
                drop(l);
                t
            })
            .collect();
        let join = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        });
        if tokio::time::timeout(wait, join).await.is_err() {
            tracing::warn!("some model workers were still busy at shutdown");
        }
        tracing::info!(models = n, "models unloaded");
    }
}

fn used_bytes(slots: &[Slot]) -> u64 {
    slots
        .iter()
        .map(|s| s.loaded.as_ref().map_or(0, |l| l.bytes) + s.loading.unwrap_or(0))
        .sum()
}

fn mb(b: u64) -> u64 {
    b.div_ceil(1 << 20)
}

impl Shared {
    fn slots(&self) -> MutexGuard<'_, Vec<Slot>> {
        // A panic while the lock was held leaves plain data behind; keep serving.
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn resolve(&self, requested: &str) -> Result<usize, ApiError> {
        let name = requested.trim();
        if name.is_empty() {
            if let Some(d) = &self.config.default_model {
                return self.resolve_named(d, false);
            }
            if self.entries.len() == 1 {
                return Ok(0);
            }
            return Err(ApiError::bad_param(
                "model",
                format!(
                    "no model named and no default model configured; {}",
                    self.known()
                ),
            ));
        }
        self.resolve_named(name, true)
    }

    fn resolve_named(&self, name: &str, wildcard: bool) -> Result<usize, ApiError> {
        if let Some(i) = self.find(name) {
            return Ok(i);
        }
        let alias = self.config.aliases.get(name).or_else(|| {
            let lower = name.to_lowercase();
            self.config
                .aliases
                .iter()
                .find(|(k, _)| k.to_lowercase() == lower)
                .map(|(_, v)| v)
        });
        let alias = alias.or(if wildcard {
            self.config.aliases.get("*")
        } else {
            None
        });
        if let Some(target) = alias {
            return self.find(target).ok_or_else(|| {
                ApiError::not_found(format!(
                    "model {name:?} is an alias of {target:?}, which is not a known model; {}",
                    self.known()
                ))
            });
        }
        Err(ApiError::not_found(format!(
            "model {name:?} not found; {}",
            self.known()
        )))
    }

    /// Exact id, then case-insensitive, then `ORG/NAME` for the only `ORG/NAME:FILE` GGUF of a repository.
    fn find(&self, name: &str) -> Option<usize> {
        if let Some(&i) = self.by_id.get(name) {
            return Some(i);
        }
        let lower = name.to_lowercase();
        if let Some(&Some(i)) = self.by_lower.get(&lower) {
            return Some(i);
        }
        let prefix = format!("{lower}:");
        let mut matches = self
            .entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.id.to_lowercase().starts_with(&prefix));
        match (matches.next(), matches.next()) {
            (Some((i, _)), None) => Some(i),
            _ => None,
        }
    }

    /// The known ids for an error message, or how to list them when there are many.
    fn known(&self) -> String {
        match self.entries.len() {
            0 => "no models are configured: pass --model PATH or --models-dir DIR".to_string(),
            n if n <= 20 => {
                let ids: Vec<&str> = self.entries.iter().map(|e| e.id.as_str()).collect();
                format!("known models: {}", ids.join(", "))
            }
            n => format!("GET /v1/models lists the {n} known models"),
        }
    }

    fn loaded_handle(&self, i: usize) -> Option<Arc<ModelHandle>> {
        self.slots()[i].loaded.as_ref().map(|l| l.handle.clone())
    }

    /// Loads model `i` unless it is loaded; the caller runs it in a spawned task so it always completes.
    async fn ensure_loaded(self: Arc<Self>, i: usize) -> Result<Arc<ModelHandle>, ApiError> {
        let entry = &self.entries[i];
        let _one_load = entry.load_lock.lock().await;
        if let Some(h) = self.loaded_handle(i) {
            return Ok(h);
        }
        // Estimate again: the file may have changed since discovery.
        let (path, format) = (entry.path.clone(), entry.format);
        let est = tokio::task::spawn_blocking(move || discovery::estimate(&path, format))
            .await
            .map_err(|e| ApiError::internal(format!("estimating model {}: {e}", entry.id)))?;
        let est = match est {
            // Keys and values are f16 on a GPU: half the host (f32) cache.
            Ok(mut e) if matches!(self.config.device, hearth_engine::backend::Device::Cuda(_)) => {
                e.kv_bytes /= 2;
                e
            }
            Ok(e) => e,
            Err(e) => {
                let msg = format!("cannot load model {}: {e}", entry.id);
                let mut slots = self.slots();
                slots[i].estimate = Err(e.to_string());
                slots[i].load_error = Some(msg.clone());
                return Err(ApiError::internal(msg));
            }
        };
        self.slots()[i].estimate = Ok(est);
        // A model that just finished a request may still be held for a moment by its handler: wait a little
        // for busy models to go idle before answering 503.
        let deadline = Instant::now() + BUSY_WAIT;
        loop {
            match self.reserve(i, &est) {
                Ok(evicted) => {
                    drop(evicted);
                    break;
                }
                Err((_, true)) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await
                }
                Err((e, _)) => return Err(e),
            }
        }

        let (id, path, depth) = (
            entry.id.clone(),
            entry.path.clone(),
            worker::WorkerConfig::from_config(&self.config),
        );
        let loaded = tokio::task::spawn_blocking(move || worker::load(&id, &path, depth)).await;
        let mut slots = self.slots();
        let slot = &mut slots[i];
        slot.loading = None;
        match loaded {
            Ok(Ok(Worker { handle, thread })) => {
                slot.loaded = Some(Loaded {
                    handle: handle.clone(),
                    thread: Some(thread),
                    bytes: est.total(),
                });
                slot.load_error = None;
                slot.last_used = Some((Instant::now(), SystemTime::now()));
                self.loads.fetch_add(1, Ordering::SeqCst);
                Ok(handle)
            }
            Ok(Err(e)) => {
                tracing::error!(model = %entry.id, error = %e.message, "model failed to load");
                slot.load_error = Some(e.message.clone());
                Err(e)
            }
            Err(e) => {
                let msg = format!("loading model {} failed: {e}", entry.id);
                tracing::error!(model = %entry.id, error = %msg, "model failed to load");
                slot.load_error = Some(msg.clone());
                Err(ApiError::internal(msg))
            }
        }
    }

    /// Makes room for model `i` and reserves its bytes; returns the evicted models, to be dropped outside the
    /// lock. Evicts nothing unless the load can then go ahead.
    /// Errors say whether waiting a little may help (models in use will go idle).
    fn reserve(&self, i: usize, est: &Estimate) -> Result<Vec<Loaded>, (ApiError, bool)> {
        let id = &self.entries[i].id;
        let need = est.total();
        let budget = self.config.memory_budget;
        let max_loaded = self.config.max_loaded_models.max(1);
        if need > budget {
            let e = ApiError::new(
                Kind::InsufficientStorage,
                format!(
                    "model {id} needs about {} MB (weights {} MB + KV cache {} MB at its full context of {} tokens) \
                     but the memory budget is {} MB",
                    mb(need),
                    mb(est.weight_bytes),
                    mb(est.kv_bytes),
                    est.context_len,
                    mb(budget)
                ),
            );
            return Err((e, false));
        }
        let mut slots = self.slots();
        let mut used = used_bytes(&slots);
        let mut count = slots
            .iter()
            .filter(|s| s.loaded.is_some() || s.loading.is_some())
            .count();
        let mut candidates: Vec<usize> = (0..slots.len())
            .filter(|&j| {
                j != i && !slots[j].pinned && slots[j].loaded.as_ref().is_some_and(|l| !l.busy())
            })
            .collect();
        candidates.sort_by_key(|&j| slots[j].last_used.map(|(t, _)| t));
        let mut victims = Vec::new();
        for &j in &candidates {
            if used + need <= budget && count < max_loaded {
                break;
            }
            used -= slots[j].loaded.as_ref().map_or(0, |l| l.bytes);
            count -= 1;
            victims.push(j);
        }
        if used + need > budget || count >= max_loaded {
            let others =
                |j: &usize| *j != i && (slots[*j].loaded.is_some() || slots[*j].loading.is_some());
            let blocking: Vec<&str> = (0..slots.len())
                .filter(others)
                .map(|j| self.entries[j].id.as_str())
                .collect();
            // Worth waiting for when a model in use (not pinned) or a load holds the room.
            let retry = (0..slots.len())
                .filter(others)
                .any(|j| !slots[j].pinned || slots[j].loading.is_some());
            let why = if count >= max_loaded {
                format!("{max_loaded} models may be loaded at once")
            } else {
                format!(
                    "it needs {} MB of the {} MB budget and {} MB are held",
                    mb(need),
                    mb(budget),
                    mb(used_bytes(&slots))
                )
            };
            let e = ApiError::new(
                Kind::Unavailable,
                format!(
                    "cannot load model {id} now: {why} by models in use or pinned ({}); retry later",
                    blocking.join(", ")
                ),
            );
            return Err((e, retry));
        }
        let mut evicted = Vec::new();
        for j in victims {
            tracing::info!(model = %self.entries[j].id, for_model = %id, "evicting least recently used idle model");
            slots[j].unload_when_idle = false;
            evicted.extend(slots[j].loaded.take());
        }
        slots[i].loading = Some(need);
        tracing::info!(model = %id, mb = mb(need), "loading model");
        Ok(evicted)
    }

    fn ttl(&self, slot: &Slot) -> Option<Duration> {
        match slot.keep {
            Keep::Default if self.config.idle_ttl_secs == 0 => None,
            Keep::Default => Some(self.config.idle_ttl()),
            Keep::For(d) => Some(d),
            Keep::Forever => None,
        }
    }

    fn reap(&self) -> Vec<String> {
        let now = Instant::now();
        let mut dropped = Vec::new();
        let mut ids = Vec::new();
        {
            let mut slots = self.slots();
            for (i, slot) in slots.iter_mut().enumerate() {
                let Some(l) = &slot.loaded else { continue };
                if l.busy() {
                    // Idle time counts from the end of the last use.
                    slot.last_used = Some((now, SystemTime::now()));
                    continue;
                }
                let expired = !slot.pinned
                    && self.ttl(slot).is_some_and(|ttl| {
                        slot.last_used
                            .is_none_or(|(t, _)| now.duration_since(t) >= ttl)
                    });
                let reason = if slot.unload_when_idle {
                    "unload requested"
                } else if expired {
                    "idle past its TTL"
                } else {
                    continue;
                };
                tracing::info!(model = %self.entries[i].id, reason, "unloading model");
                slot.unload_when_idle = false;
                dropped.extend(slot.loaded.take());
                ids.push(self.entries[i].id.clone());
            }
        }
        drop(dropped);
        ids
    }

    fn info_of(&self, i: usize, slots: &[Slot]) -> ModelInfo {
        let e = &self.entries[i];
        let s = &slots[i];
        let est = s.estimate.as_ref().ok();
        let state = if s.loaded.is_some() {
            ModelState::Loaded
        } else if s.loading.is_some() {
            ModelState::Loading
        } else if s.estimate.is_err() || s.load_error.is_some() {
            ModelState::Error
        } else {
            ModelState::Available
        };
        let ttl = if s.pinned { None } else { self.ttl(s) };
        let idle_loaded = s.loaded.as_ref().is_some_and(|l| !l.busy());
        let expires_in_secs = match (ttl, s.last_used, idle_loaded) {
            (Some(ttl), Some((t, _)), true) => Some(ttl.saturating_sub(t.elapsed()).as_secs()),
            _ => None,
        };
        ModelInfo {
            id: e.id.clone(),
            path: e.path.clone(),
            format: e.format,
            source: e.source,
            state,
            bytes: s
                .loaded
                .as_ref()
                .map(|l| l.bytes)
                .or(est.map(|e| e.total()))
                .unwrap_or(0),
            context_len: est.map(|e| e.context_len),
            pinned: s.pinned,
            created: e.created,
            in_flight: s
                .loaded
                .as_ref()
                .map_or(0, |l| l.handle.in_flight.load(Ordering::SeqCst)),
            unload_pending: s.unload_when_idle,
            last_used: s
                .last_used
                .and_then(|(_, t)| t.duration_since(UNIX_EPOCH).ok())
                .map(|d| d.as_secs()),
            ttl_secs: ttl.map(|d| d.as_secs()),
            expires_in_secs,
            error: if state == ModelState::Loaded {
                None
            } else {
                s.load_error
                    .clone()
                    .or_else(|| s.estimate.as_ref().err().cloned())
            },
        }
    }
}
