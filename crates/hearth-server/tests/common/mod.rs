//! Helpers shared by the server's integration tests: the tiny fixture models, temp folders, configs.
#![allow(dead_code)]

pub mod api;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use hearth_server::config::{ModelSpec, ServerConfig};
use hearth_server::registry::{ModelState, Registry};

pub fn tiny(arch: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/tiny")
        .join(arch)
}

/// A fresh folder under the system temp dir, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::SeqCst);
        let p =
            std::env::temp_dir().join(format!("hearth-registry-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// A config with only the given models, no hub cache scan, and a generous budget.
pub fn config(models: &[(&str, &str)]) -> ServerConfig {
    ServerConfig {
        models: models
            .iter()
            .map(|(arch, alias)| ModelSpec {
                path: tiny(arch).join("model-f32.gguf"),
                alias: Some(alias.to_string()),
            })
            .collect(),
        scan_hf_cache: false,
        memory_budget: 1 << 30,
        max_loaded_models: 8,
        ..ServerConfig::default()
    }
}

pub fn registry(cfg: &ServerConfig) -> Registry {
    Registry::new(cfg).unwrap()
}

/// Bytes the registry plans for a tiny fixture model.
pub fn size_of(reg: &Registry, id: &str) -> u64 {
    let b = reg.info(id).unwrap().bytes;
    assert!(b > 0);
    b
}

pub fn state(reg: &Registry, id: &str) -> ModelState {
    reg.info(id).unwrap().state
}
