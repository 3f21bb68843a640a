//! Damaged or unsupported models give errors that name the file, the tensor and the problem; bad inputs to a
//! loaded model are errors, not panics. Uses the tiny fixtures (tests/fixtures/tiny).

use std::path::{Path, PathBuf};

use hearth_engine::models::{Logits, Model};

fn tiny(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/tiny")
        .join(rel)
}

fn tmp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("hearth-model-errors-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn open_err(p: &Path) -> String {
    match Model::open(p) {
        Ok(_) => panic!("{} opened", p.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn truncated_gguf_names_file_and_tensor() {
    let bytes = std::fs::read(tiny("llama/model-q8_0.gguf")).unwrap();
    let d = tmp_dir("trunc");
    for frac in [0.999, 0.9, 0.5] {
        let p = d.join("cut.gguf");
        std::fs::write(&p, &bytes[..(bytes.len() as f64 * frac) as usize]).unwrap();
        let e = open_err(&p);
        assert!(e.contains("cut.gguf"), "{e}");
        assert!(
            e.contains("out of bounds") || e.contains("truncated"),
            "{e}"
        );
    }
    let p = d.join("tiny.gguf");
    std::fs::write(&p, &bytes[..10]).unwrap();
    assert!(open_err(&p).contains("truncated"));
    std::fs::write(&p, b"not a model at all").unwrap();
    assert!(open_err(&p).contains("bad magic"));
    assert!(open_err(&d.join("absent.gguf")).contains("absent.gguf"));
}

fn copy_hf(from: &str, name: &str) -> PathBuf {
    let d = tmp_dir(name);
    for e in std::fs::read_dir(tiny(from)).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), d.join(e.file_name())).unwrap();
    }
    d
}

#[test]
fn truncated_safetensors_is_an_error() {
    let d = copy_hf("llama/hf-f32", "st-trunc");
    let p = d.join("model.safetensors");
    let b = std::fs::read(&p).unwrap();
    std::fs::write(&p, &b[..b.len() - 100]).unwrap();
    let e = open_err(&d);
    assert!(
        e.contains("model.safetensors") && e.contains("out of bounds"),
        "{e}"
    );
}

#[test]
fn missing_tensor_is_named() {
    let d = copy_hf("llama/hf-f32", "st-missing");
    let p = d.join("model.safetensors");
    let b = std::fs::read(&p).unwrap();
    let hlen = u64::from_le_bytes(b[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&b[8..8 + hlen]).unwrap();
    header
        .remove("model.layers.1.mlp.up_proj.weight")
        .expect("fixture has the tensor");
    let mut h = serde_json::to_vec(&header).unwrap();
    while !h.len().is_multiple_of(8) {
        h.push(b' ');
    }
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&h);
    out.extend_from_slice(&b[8 + hlen..]);
    std::fs::write(&p, out).unwrap();
    let e = open_err(&d);
    assert!(
        e.contains("blk.1.ffn_up.weight") && e.contains("missing"),
        "{e}"
    );
}

#[test]
fn unsupported_architecture_is_named() {
    let d = copy_hf("llama/hf-f32", "arch");
    let p = d.join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    cfg["model_type"] = "gpt_neox".into();
    std::fs::write(&p, cfg.to_string()).unwrap();
    let e = open_err(&d);
    assert!(e.contains("unsupported") && e.contains("gpt_neox"), "{e}");
    std::fs::write(&p, "{ not json").unwrap();
    assert!(open_err(&d).contains("not valid JSON"));
}

#[test]
fn bad_inputs_to_a_loaded_model_are_errors() {
    let m = Model::open(&tiny("llama/model-f32.gguf")).unwrap();
    let mut st = m.new_state(8);
    let e = m
        .forward(&mut st, &[m.config.vocab as u32], Logits::Last)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("outside the vocabulary"), "{e}");
    assert!(m.forward(&mut st, &[], Logits::Last).is_err());
    let too_long = vec![1u32; m.config.context_len + 1];
    let e = m
        .forward(&mut st, &too_long, Logits::Last)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains(&m.config.context_len.to_string()) && e.contains(&too_long.len().to_string()),
        "{e}"
    );
    // The state is still usable after rejected calls.
    assert_eq!(st.pos(), 0);
    assert_eq!(
        m.forward(&mut st, &[1, 2, 3], Logits::Last).unwrap().len(),
        m.config.vocab
    );
}
