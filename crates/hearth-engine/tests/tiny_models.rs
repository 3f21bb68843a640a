//! Logits of tiny random-weight models of every supported architecture, in every stored format, against the
//! logits Hugging Face transformers computed on the same weights (tests/fixtures/tiny, made by
//! scripts/make_reference_fixtures.py).
//!
//! Tolerance: every logit within 1e-4 (absolute) of transformers' f32 result. Quantized GGUF variants are
//! compared with transformers run on the dequantized weights, so the same bound holds.

use std::path::{Path, PathBuf};

use hearth_engine::models::{Logits, Model};

const TOL: f32 = 1e-4;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny")
}

fn read_f32(path: &Path) -> Vec<f32> {
    let b = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// Runs every variant of one architecture; returns how many were checked.
fn check_arch(arch: &str) -> usize {
    let dir = fixtures().join(arch);
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap())
            .unwrap();
    let tokens: Vec<u32> = reference["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    let variants = reference["variants"].as_object().unwrap();
    assert!(!variants.is_empty());
    for (name, v) in variants {
        let model_path = dir.join(v["path"].as_str().unwrap());
        let expect = read_f32(&dir.join(v["logits"].as_str().unwrap()));
        if let Some(ty) = ["mxfp4", "tq1_0", "tq2_0"]
            .iter()
            .find(|t| name.ends_with(*t))
        {
            // GGUF types hearth does not run yet: loading must say so, naming the type.
            let err = Model::open(&model_path)
                .err()
                .expect("type is not supported yet")
                .to_string();
            assert!(
                err.contains("unsupported") && err.contains(&ty.to_uppercase()),
                "{arch}/{name}: {err}"
            );
            continue;
        }
        let model = Model::open(&model_path).unwrap_or_else(|e| panic!("{arch}/{name}: {e}"));
        let vocab = model.config.vocab;
        assert_eq!(
            expect.len(),
            tokens.len() * vocab,
            "{arch}/{name}: reference size"
        );
        // All positions at once, and again in two chunks through the KV cache: both must match.
        for split in [tokens.len(), 7] {
            let mut st = model.new_state(tokens.len());
            let mut got = Vec::new();
            for piece in tokens.chunks(split) {
                got.extend_from_slice(model.forward(&mut st, piece, Logits::All).unwrap());
            }
            let (mut worst, mut at) = (0f32, 0);
            for (i, (a, b)) in got.iter().zip(&expect).enumerate() {
                let d = (a - b).abs();
                if d.is_nan() || d > worst {
                    worst = if d.is_nan() { f32::INFINITY } else { d };
                    at = i;
                }
            }
            assert!(
                worst <= TOL,
                "{arch}/{name} (chunks of {split}): logit {at} (position {}, token {}) differs by {worst}: {} vs {}",
                at / vocab,
                at % vocab,
                got[at],
                expect[at]
            );
        }
        eprintln!("{arch}/{name}: ok");
    }
    variants.len()
}

#[test]
fn llama() {
    check_arch("llama");
}

#[test]
fn mistral() {
    check_arch("mistral");
}

#[test]
fn qwen2() {
    check_arch("qwen2");
}

#[test]
fn qwen3() {
    check_arch("qwen3");
}

#[test]
fn gemma3() {
    check_arch("gemma3");
}

/// K-quant types need rows of 256: a llama with hidden size 256.
#[test]
fn llama256_k_quants() {
    check_arch("llama256");
}

#[test]
fn every_fixture_architecture_is_tested() {
    let mut found: Vec<String> = std::fs::read_dir(fixtures())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("reference.json").exists())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    found.sort();
    for arch in &found {
        if !["llama", "mistral", "qwen2", "qwen3", "gemma3", "llama256"].contains(&arch.as_str()) {
            check_arch(arch);
        }
    }
    assert!(
        found.len() >= 5,
        "expected the five architectures' fixtures, found {found:?}"
    );
}
