//! The model registry and discovery, with the tiny random-weight fixture models
//! (tests/fixtures/tiny): they load in milliseconds, so budgets, eviction, TTLs and whole jobs run for real.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hearth_server::config::{ModelSpec, ServerConfig};
use hearth_server::discovery::{self, Format, Source};
use hearth_server::error::Kind;
use hearth_server::registry::{parse_keep_alive, KeepAlive, ModelState, Registry};
use serde_json::{json, Value};

mod common;
use common::*;

#[test]
fn models_dir_discovery() {
    let dir = TempDir::new("dir");
    let d = &dir.0;
    std::fs::copy(tiny("llama").join("model-f32.gguf"), d.join("top.gguf")).unwrap();
    std::fs::create_dir(d.join("sub")).unwrap();
    std::fs::copy(
        tiny("qwen3").join("model-f32.gguf"),
        d.join("sub/nested.gguf"),
    )
    .unwrap();
    copy_dir(&tiny("mistral").join("hf-f32"), &d.join("hfmodel"));
    std::fs::write(d.join("broken.gguf"), b"GGUF but not really").unwrap();
    // An architecture hearth does not run: skipped, not listed.
    std::fs::create_dir(d.join("bert")).unwrap();
    std::fs::write(d.join("bert/config.json"), r#"{"model_type": "bert"}"#).unwrap();
    std::fs::write(d.join("bert/model.safetensors"), b"").unwrap();
    // Two levels down is out of reach.
    std::fs::create_dir_all(d.join("a/b")).unwrap();
    std::fs::copy(
        tiny("llama").join("model-f32.gguf"),
        d.join("a/b/deep.gguf"),
    )
    .unwrap();

    let found = discovery::scan_models_dir(d);
    let ids: Vec<&str> = found.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids, ["broken", "top", "hfmodel", "nested"], "{found:#?}");
    assert!(found
        .iter()
        .all(|m| m.source == Source::ModelsDir && m.created > 0));
    let top = &found[1];
    assert_eq!(top.format, Format::Gguf);
    let est = top.estimate.as_ref().unwrap();
    // llama fixture: 2 layers, a KV pool for context 256, 2 KV heads of 16: K and V in f32.
    assert_eq!(
        est.kv_bytes,
        2 * 2 * hearth_server::job::kv_pool_tokens(256) as u64 * 2 * 16 * 4
    );
    assert_eq!(
        est.weight_bytes,
        std::fs::metadata(d.join("top.gguf")).unwrap().len()
    );
    assert_eq!(est.context_len, 256);
    assert_eq!(found[2].format, Format::Safetensors);
    assert!(found[2].estimate.is_ok());
    assert!(found[0].estimate.is_err());

    // Through a registry: the broken file is listed with its error, and loading it is a 500 that says why.
    let cfg = ServerConfig {
        models_dir: Some(d.clone()),
        scan_hf_cache: false,
        ..ServerConfig::default()
    };
    let reg = registry(&cfg);
    let broken = reg.info("broken").unwrap();
    assert_eq!(broken.state, ModelState::Error);
    assert!(broken.error.is_some());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let e = reg.acquire("broken", None).await.err().unwrap();
        assert_eq!(e.kind, Kind::Internal);
        assert!(e.message.contains("broken"), "{}", e.message);
        let h = reg.acquire("hfmodel", None).await.unwrap();
        assert_eq!(h.context_len, 256);
    });
    assert_eq!(reg.info("broken").unwrap().state, ModelState::Error);
}

#[cfg(unix)]
#[test]
fn hf_cache_discovery() {
    use std::os::unix::fs::symlink;
    let hub = TempDir::new("hub");
    // A safetensors repository with refs/main, and an older snapshot that must not be picked.
    let repo = hub.0.join("models--org--name");
    for rev in ["old", "abc"] {
        let snap = repo.join("snapshots").join(rev);
        std::fs::create_dir_all(&snap).unwrap();
        for e in std::fs::read_dir(tiny("llama").join("hf-f32")).unwrap() {
            let e = e.unwrap();
            // The hub links snapshot files to blobs; links must work.
            symlink(e.path(), snap.join(e.file_name())).unwrap();
        }
    }
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), "abc\n").unwrap();
    // A GGUF repository without refs: the newest snapshot, one entry per file.
    let snap = hub.0.join("models--Org2--tiny-GGUF/snapshots/r1");
    std::fs::create_dir_all(&snap).unwrap();
    symlink(
        tiny("qwen2").join("model-f32.gguf"),
        snap.join("tiny-f32.gguf"),
    )
    .unwrap();
    symlink(
        tiny("qwen2").join("model-q8_0.gguf"),
        snap.join("tiny-q8_0.gguf"),
    )
    .unwrap();
    // A repository with a single GGUF: reachable by the repository name alone.
    let snap = hub.0.join("models--solo--one/snapshots/x");
    std::fs::create_dir_all(&snap).unwrap();
    symlink(
        tiny("qwen3").join("model-f32.gguf"),
        snap.join("one-f32.gguf"),
    )
    .unwrap();
    // Not models.
    std::fs::create_dir_all(hub.0.join("datasets--org--data/snapshots/a")).unwrap();
    std::fs::create_dir_all(hub.0.join("models--org--empty/snapshots")).unwrap();

    let found = discovery::scan_hf_cache(&hub.0);
    let ids: Vec<&str> = found.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "Org2/tiny-GGUF:tiny-f32",
            "Org2/tiny-GGUF:tiny-q8_0",
            "org/name",
            "solo/one:one-f32"
        ]
    );
    assert!(
        found[2].path.ends_with("snapshots/abc"),
        "{:?}",
        found[2].path
    );
    assert!(found
        .iter()
        .all(|m| m.source == Source::HfCache && m.estimate.is_ok()));

    let cfg = ServerConfig {
        scan_hf_cache: false,
        ..ServerConfig::default()
    };
    let reg = Registry::from_discovered(&cfg, discovery::discover_with(&cfg, Some(&hub.0)));
    assert_eq!(reg.resolve("ORG/NAME").unwrap(), "org/name");
    assert_eq!(
        reg.resolve("org2/tiny-gguf:TINY-Q8_0").unwrap(),
        "Org2/tiny-GGUF:tiny-q8_0"
    );
    assert_eq!(reg.resolve("solo/one").unwrap(), "solo/one:one-f32");
    // Two files: the repository name alone is ambiguous.
    assert_eq!(
        reg.resolve("Org2/tiny-GGUF").unwrap_err().kind,
        Kind::NotFound
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let h = reg.acquire("org/name", None).await.unwrap();
        assert_eq!(h.id, "org/name");
        assert!(h.tokenizer.vocab_size() > 0);
    });
}

#[test]
fn configured_models_duplicates_and_missing() {
    let mut cfg = config(&[("llama", "a"), ("qwen3", "a")]);
    cfg.models.push(ModelSpec {
        path: "/nonexistent/model.gguf".into(),
        alias: None,
    });
    cfg.models.push(ModelSpec {
        path: tiny("qwen2").join("hf-f32"),
        alias: None,
    });
    let found = discovery::discover(&cfg);
    let ids: Vec<&str> = found.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids, ["a", "hf-f32"]);
    assert!(found[0].path.ends_with("llama/model-f32.gguf"));
    assert_eq!(found[1].format, Format::Safetensors);
}

#[test]
fn resolve_aliases_default_and_404() {
    let mut cfg = config(&[("llama", "llama"), ("qwen3", "qwen")]);
    cfg.aliases
        .insert("claude-sonnet-4-5".into(), "qwen".into());
    cfg.aliases.insert("gone".into(), "missing".into());
    let reg = registry(&cfg);
    assert_eq!(reg.resolve("llama").unwrap(), "llama");
    assert_eq!(reg.resolve("LLAMA").unwrap(), "llama");
    assert_eq!(reg.resolve("claude-sonnet-4-5").unwrap(), "qwen");
    let e = reg.resolve("nope").unwrap_err();
    assert_eq!(e.kind, Kind::NotFound);
    assert!(
        e.message.contains("llama") && e.message.contains("qwen"),
        "{}",
        e.message
    );
    assert_eq!(reg.resolve("gone").unwrap_err().kind, Kind::NotFound);
    // No model named, no default, two models: a 400 on the model field.
    let e = reg.resolve("").unwrap_err();
    assert_eq!(
        (e.kind, e.param.as_deref()),
        (Kind::BadRequest, Some("model"))
    );

    cfg.aliases.insert("*".into(), "llama".into());
    cfg.default_model = Some("qwen".into());
    let reg = registry(&cfg);
    assert_eq!(reg.resolve("claude-opus-4-1").unwrap(), "llama");
    assert_eq!(reg.resolve("").unwrap(), "qwen");
    assert_eq!(reg.resolve("claude-sonnet-4-5").unwrap(), "qwen");

    // One model: it is the default.
    let reg = registry(&config(&[("llama", "only")]));
    assert_eq!(reg.resolve("").unwrap(), "only");
    // No models: the message says how to add some.
    let reg = registry(&config(&[]));
    assert!(reg.resolve("x").unwrap_err().message.contains("--model"));
}

#[test]
fn keep_alive_forms() {
    let p = |v: Value| parse_keep_alive(&v);
    assert_eq!(
        p(json!(30)).unwrap(),
        KeepAlive::For(Duration::from_secs(30))
    );
    assert_eq!(
        p(json!(1.5)).unwrap(),
        KeepAlive::For(Duration::from_millis(1500))
    );
    assert_eq!(p(json!(0)).unwrap(), KeepAlive::UnloadNow);
    assert_eq!(p(json!(-1)).unwrap(), KeepAlive::Forever);
    assert_eq!(
        p(json!("5m")).unwrap(),
        KeepAlive::For(Duration::from_secs(300))
    );
    assert_eq!(
        p(json!("30s")).unwrap(),
        KeepAlive::For(Duration::from_secs(30))
    );
    assert_eq!(
        p(json!("1h30m")).unwrap(),
        KeepAlive::For(Duration::from_secs(5400))
    );
    assert_eq!(
        p(json!("500ms")).unwrap(),
        KeepAlive::For(Duration::from_millis(500))
    );
    assert_eq!(
        p(json!("120")).unwrap(),
        KeepAlive::For(Duration::from_secs(120))
    );
    assert_eq!(p(json!("-1")).unwrap(), KeepAlive::Forever);
    assert_eq!(p(json!("-1m")).unwrap(), KeepAlive::Forever);
    assert_eq!(p(json!("0")).unwrap(), KeepAlive::UnloadNow);
    assert_eq!(p(json!("0s")).unwrap(), KeepAlive::UnloadNow);
    for bad in [
        json!("soon"),
        json!("5x"),
        json!("m"),
        json!(""),
        json!(true),
        json!([1]),
        json!(null),
    ] {
        let e = p(bad.clone()).unwrap_err();
        assert_eq!(
            (e.kind, e.param.as_deref()),
            (Kind::BadRequest, Some("keep_alive")),
            "{bad}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_requests_load_once() {
    let reg = Arc::new(registry(&config(&[("llama", "m")])));
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let reg = reg.clone();
            tokio::spawn(async move { reg.acquire("m", None).await.unwrap() })
        })
        .collect();
    let mut handles = Vec::new();
    for t in tasks {
        handles.push(t.await.unwrap());
    }
    assert_eq!(reg.load_count(), 1);
    assert!(handles.iter().all(|h| Arc::ptr_eq(h, &handles[0])));
    assert_eq!(state(&reg, "m"), ModelState::Loaded);
    assert_eq!(reg.loaded_count(), 1);
}

#[tokio::test]
async fn budget_evicts_least_recently_used_idle_model() {
    let mut cfg = config(&[("llama", "a"), ("mistral", "b"), ("qwen2", "c")]);
    let probe = registry(&cfg);
    let (sa, sb, sc) = (
        size_of(&probe, "a"),
        size_of(&probe, "b"),
        size_of(&probe, "c"),
    );
    // Room for any two, never three.
    cfg.memory_budget = sa.max(sb).max(sc) * 2 + sa.min(sb).min(sc) / 2;
    let reg = registry(&cfg);
    drop(reg.acquire("a", None).await.unwrap());
    tokio::time::sleep(Duration::from_millis(5)).await;
    drop(reg.acquire("b", None).await.unwrap());
    tokio::time::sleep(Duration::from_millis(5)).await;
    drop(reg.acquire("a", None).await.unwrap()); // a is now more recent than b
    drop(reg.acquire("c", None).await.unwrap());
    assert_eq!(state(&reg, "a"), ModelState::Loaded);
    assert_eq!(state(&reg, "b"), ModelState::Available);
    assert_eq!(state(&reg, "c"), ModelState::Loaded);
    assert_eq!(reg.load_count(), 3);
    let (used, budget) = reg.memory();
    assert!(used <= budget && used == sa + sc);

    // A budget that fits one model: each acquire evicts the other.
    cfg.memory_budget = sa.max(sb) + 1000;
    let reg = registry(&cfg);
    drop(reg.acquire("a", None).await.unwrap());
    drop(reg.acquire("b", None).await.unwrap());
    assert_eq!(state(&reg, "a"), ModelState::Available);
    assert_eq!(state(&reg, "b"), ModelState::Loaded);
}

#[tokio::test]
async fn max_loaded_models_counts_too() {
    let mut cfg = config(&[("llama", "a"), ("mistral", "b"), ("qwen2", "c")]);
    cfg.max_loaded_models = 2;
    let reg = registry(&cfg);
    for id in ["a", "b", "c"] {
        drop(reg.acquire(id, None).await.unwrap());
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert_eq!(reg.loaded_count(), 2);
    assert_eq!(state(&reg, "a"), ModelState::Available);
}

#[tokio::test]
async fn too_big_is_507_and_busy_or_pinned_is_503() {
    let mut cfg = config(&[("llama", "a"), ("mistral", "b")]);
    cfg.memory_budget = 100 << 10;
    let reg = registry(&cfg);
    let e = reg.acquire("a", None).await.err().unwrap();
    assert_eq!(e.kind, Kind::InsufficientStorage);
    assert!(
        e.message.contains("MB") && e.message.contains("budget is 1 MB"),
        "{}",
        e.message
    );
    assert_eq!(reg.loaded_count(), 0);

    let probe = registry(&config(&[("llama", "a"), ("mistral", "b")]));
    cfg.memory_budget = size_of(&probe, "a").max(size_of(&probe, "b")) + 1000;
    let reg = registry(&cfg);
    // A request holds a for a moment: the load of b waits for it to go idle, then evicts it.
    let held = reg.acquire("a", None).await.unwrap();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        drop(held);
    });
    let t0 = Instant::now();
    drop(reg.acquire("b", None).await.unwrap());
    assert!(t0.elapsed() >= Duration::from_millis(150));
    assert_eq!(state(&reg, "a"), ModelState::Available);
    // A request holds b past the wait: a cannot load now, and nothing is unloaded.
    let held = reg.acquire("b", None).await.unwrap();
    let e = reg.acquire("a", None).await.err().unwrap();
    assert_eq!(e.kind, Kind::Unavailable);
    assert!(e.message.contains("(b)"), "{}", e.message);
    assert_eq!(state(&reg, "b"), ModelState::Loaded);
    drop(held);
    drop(reg.acquire("a", None).await.unwrap());
    // Pinned and idle: still not evictable, and nothing to wait for.
    assert!(reg.set_pinned("a", true).unwrap().pinned);
    let t0 = Instant::now();
    assert_eq!(
        reg.acquire("b", None).await.err().unwrap().kind,
        Kind::Unavailable
    );
    assert!(t0.elapsed() < Duration::from_secs(1));
    reg.set_pinned("a", false).unwrap();
    drop(reg.acquire("b", None).await.unwrap());
    assert_eq!(state(&reg, "a"), ModelState::Available);

    // Pins from the config apply at startup.
    cfg.pinned = vec!["b".into()];
    let reg = registry(&cfg);
    assert!(reg.info("b").unwrap().pinned);
    drop(reg.acquire("b", None).await.unwrap());
    assert_eq!(
        reg.acquire("a", None).await.err().unwrap().kind,
        Kind::Unavailable
    );
}

#[tokio::test]
async fn idle_ttl_and_keep_alive() {
    let mut cfg = config(&[
        ("llama", "a"),
        ("mistral", "b"),
        ("qwen2", "c"),
        ("qwen3", "d"),
    ]);
    cfg.idle_ttl_secs = 1;
    let reg = registry(&cfg);
    drop(reg.acquire("a", None).await.unwrap());
    drop(reg.acquire("b", Some(KeepAlive::Forever)).await.unwrap());
    drop(
        reg.acquire("c", Some(KeepAlive::For(Duration::from_millis(200))))
            .await
            .unwrap(),
    );
    let held = reg.acquire("d", Some(KeepAlive::UnloadNow)).await.unwrap();
    assert_eq!(reg.info("a").unwrap().ttl_secs, Some(1));
    assert_eq!(reg.info("b").unwrap().ttl_secs, None);
    assert!(reg.reap().is_empty(), "d is in use");
    drop(held);
    assert_eq!(reg.reap(), ["d"]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(reg.reap(), ["c"]);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(reg.reap(), ["a"]);
    assert_eq!(state(&reg, "b"), ModelState::Loaded);

    // The reaper task does the same on its own; a pinned model never expires.
    let reg = registry(&cfg);
    let reaper = reg.spawn_reaper();
    drop(reg.acquire("a", None).await.unwrap());
    drop(reg.acquire("b", None).await.unwrap());
    reg.set_pinned("b", true).unwrap();
    let t0 = Instant::now();
    while state(&reg, "a") == ModelState::Loaded {
        assert!(
            t0.elapsed() < Duration::from_secs(3),
            "not unloaded after its TTL"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(t0.elapsed() >= Duration::from_millis(900));
    assert_eq!(state(&reg, "b"), ModelState::Loaded);
    reaper.abort();
}

#[tokio::test]
async fn explicit_load_and_unload() {
    let reg = registry(&config(&[("llama", "a")]));
    let info = reg.load("a", None).await.unwrap();
    assert_eq!(info.state, ModelState::Loaded);
    let held = reg.acquire("a", None).await.unwrap();
    // In use: the unload waits for it to go idle.
    let info = reg.unload("a").unwrap();
    assert_eq!(
        (info.state, info.unload_pending),
        (ModelState::Loaded, true)
    );
    assert!(reg.reap().is_empty());
    drop(held);
    assert_eq!(reg.reap(), ["a"]);
    assert_eq!(state(&reg, "a"), ModelState::Available);
    // Idle: at once; twice is harmless.
    reg.load("a", None).await.unwrap();
    assert_eq!(reg.unload("a").unwrap().state, ModelState::Available);
    assert_eq!(reg.unload("a").unwrap().state, ModelState::Available);
    assert_eq!(reg.load_count(), 2);
    assert_eq!(reg.unload("zzz").unwrap_err().kind, Kind::NotFound);
}
