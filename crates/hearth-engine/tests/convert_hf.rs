//! `hearth convert --to hf` (GGUF → Hugging Face folder) on the committed tiny models:
//! - tensors: the f32 and bf16 GGUFs give back the hf-f32 / hf-bf16 originals exactly (Gemma's norm gains,
//!   stored as 1 + w, to 1e-7 for f32; 1-D tensors, which the GGUF keeps in f32 and the output too, within
//!   bf16 rounding of the bf16 original), the block-quantized ones within their quantization error relative
//!   to the tensor's largest magnitude (q8_0 1%, q5_1 8%, q4_0 15%, f16 0.1%);
//! - logits: hearth running the converted folder matches hearth running the GGUF (1e-4 for float and
//!   f32-output conversions, 1e-2 for K-quants written as f16);
//! - tokenizer: the tokenizer.json written encodes a few hundred varied strings to the same ids as hearth's
//!   GGUF tokenizer and as the model's original tokenizer.json;
//! - config: hearth reads back the same shape, rope and attention settings.

use std::path::{Path, PathBuf};

use hearth_engine::convert::to_hf::gguf_to_hf;
use hearth_engine::models::{Logits, Model};
use hearth_engine::tensor::mlx::MlxFloat;
use hearth_engine::tokenizer::Tokenizer;

mod convert_common;
use convert_common::sample_strings;

const ARCHS: [&str; 5] = ["llama", "mistral", "qwen2", "qwen3", "gemma3"];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn tiny(arch: &str) -> PathBuf {
    root().join("tests/fixtures/tiny").join(arch)
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("hearth-convert-hf-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn convert(gguf: &Path, name: &str, dtype: Option<MlxFloat>) -> PathBuf {
    let dst = tmp(name).join("hf");
    gguf_to_hf(gguf, &dst, dtype, false, &mut |_, _| {}).unwrap();
    dst
}

fn reference_tokens(arch: &str) -> Vec<u32> {
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(tiny(arch).join("reference.json")).unwrap())
            .unwrap();
    r["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect()
}

fn logits(model: &Model, tokens: &[u32]) -> Vec<f32> {
    let mut st = model.new_state(tokens.len());
    model
        .forward(&mut st, tokens, Logits::All)
        .unwrap()
        .to_vec()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Compares every tensor of two Hugging Face folders by hearth name; returns the largest difference
/// relative to each tensor's largest magnitude, excluding what `skip` names.
fn compare_weights(a: &Model, b: &Model, exact: bool, tol: f32, what: &str) -> f32 {
    let mut worst = 0f32;
    assert_eq!(
        a.weights.tensors.len(),
        b.weights.tensors.len(),
        "{what}: tensor count"
    );
    for (name, t) in &a.weights.tensors {
        let u = b
            .weights
            .tensors
            .get(name)
            .unwrap_or_else(|| panic!("{what}: {name} missing"));
        assert_eq!(t.shape, u.shape, "{what}: {name} shape");
        let (x, y) = (t.to_f32(), u.to_f32());
        let is_gemma_norm = what.starts_with("gemma3") && name.contains("norm");
        // 1-D tensors stay f32 in the output (the GGUF never rounded them); the bf16 original rounded them.
        let rounded_1d = what.ends_with("bf16") && t.shape.len() == 1;
        if rounded_1d {
            let rel = x
                .iter()
                .zip(&y)
                .map(|(a, b)| (a - b).abs() / a.abs().max(1e-30))
                .fold(0f32, f32::max);
            assert!(
                rel <= 1.0 / 256.0,
                "{what}: {name} differs by {rel} relative (over bf16 rounding)"
            );
        } else if exact && !is_gemma_norm {
            assert_eq!(x, y, "{what}: {name} values");
        } else {
            let scale = x.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
            let d = max_abs_diff(&x, &y);
            let limit = if is_gemma_norm && exact {
                1e-7
            } else {
                tol * scale
            };
            assert!(d <= limit, "{what}: {name} differs by {d} (limit {limit})");
            worst = worst.max(d / scale);
        }
    }
    worst
}

#[test]
fn float_ggufs_give_back_the_original_tensors_and_logits() {
    for arch in ARCHS {
        for (variant, hf) in [("f32", "hf-f32"), ("bf16", "hf-bf16")] {
            let what = format!("{arch}-{variant}");
            let gguf = tiny(arch).join(format!("model-{variant}.gguf"));
            let out = convert(&gguf, &what, None);
            let orig = Model::open(&tiny(arch).join(hf)).unwrap();
            let conv = Model::open(&out).unwrap();
            compare_weights(&orig, &conv, true, 0.0, &what);
            let g = Model::open(&gguf).unwrap();
            let tokens = reference_tokens(arch);
            let d = max_abs_diff(&logits(&g, &tokens), &logits(&conv, &tokens));
            eprintln!("{what}: max |logit(gguf) - logit(hf out)| = {d:e}");
            assert!(d < 1e-4, "{what}: logits differ by {d}");
            let (a, b) = (&g.config, &conv.config);
            assert_eq!(
                (
                    a.hidden,
                    a.n_layers,
                    a.n_heads,
                    a.n_kv_heads,
                    a.head_dim,
                    a.ffn,
                    a.vocab
                ),
                (
                    b.hidden,
                    b.n_layers,
                    b.n_heads,
                    b.n_kv_heads,
                    b.head_dim,
                    b.ffn,
                    b.vocab
                ),
                "{what}"
            );
            assert_eq!(a.sliding_layers, b.sliding_layers, "{what}");
            assert_eq!(
                (a.rope_theta, a.rope_local_theta, a.attn_scale),
                (b.rope_theta, b.rope_local_theta, b.attn_scale),
                "{what}"
            );
            let _ = std::fs::remove_dir_all(out.parent().unwrap());
        }
    }
}

#[test]
fn quantized_ggufs_convert_within_their_error() {
    // (variant, largest weight error relative to the tensor's largest magnitude, logit tolerance). With f32
    // output the dequantized weights carry over exactly, so hearth's logits agree to float rounding.
    let cases = [
        ("q8_0", 0.01, 1e-4),
        ("q4_0", 0.15, 1e-4),
        ("q5_1", 0.08, 1e-4),
        ("f16", 1e-3, 1e-4),
    ];
    for arch in ARCHS {
        for (variant, wtol, ltol) in cases {
            let what = format!("{arch}-{variant}");
            let gguf = tiny(arch).join(format!("model-{variant}.gguf"));
            let out = convert(&gguf, &what, Some(MlxFloat::F32));
            let orig = Model::open(&tiny(arch).join("hf-f32")).unwrap();
            let conv = Model::open(&out).unwrap();
            let worst = compare_weights(&orig, &conv, false, wtol, &what);
            let g = Model::open(&gguf).unwrap();
            let tokens = reference_tokens(arch);
            let d = max_abs_diff(&logits(&g, &tokens), &logits(&conv, &tokens));
            eprintln!("{what}: worst relative weight error {worst:.4}, max logit diff {d:e}");
            assert!(d < ltol, "{what}: logits differ by {d}");
            let _ = std::fs::remove_dir_all(out.parent().unwrap());
        }
    }
    // K-quants (llama256), default f16 output (the dequantized weights rounded to f16): against hearth
    // running the GGUF itself.
    for variant in ["q4_k", "q6_k", "q2_k"] {
        let what = format!("llama256-{variant}");
        let gguf = tiny("llama256").join(format!("model-{variant}.gguf"));
        let out = convert(&gguf, &what, None);
        let g = Model::open(&gguf).unwrap();
        let conv = Model::open(&out).unwrap();
        let tokens = reference_tokens("llama256");
        let d = max_abs_diff(&logits(&g, &tokens), &logits(&conv, &tokens));
        eprintln!("{what} (f16 output): max logit diff {d:e}");
        assert!(d < 1e-2, "{what}: logits differ by {d}");
        let _ = std::fs::remove_dir_all(out.parent().unwrap());
    }
}

fn assert_same_ids(a: &Tokenizer, b: &Tokenizer, what: &str) -> usize {
    let strings = sample_strings();
    for s in &strings {
        for special in [false, true] {
            let x = a.encode(s, special).unwrap();
            let y = b.encode(s, special).unwrap();
            assert_eq!(x, y, "{what}: {s:?} (add_special {special})");
        }
    }
    strings.len()
}

#[test]
fn written_tokenizer_encodes_like_the_gguf_and_the_original() {
    for arch in ARCHS {
        let gguf = tiny(arch).join("model-bf16.gguf");
        let out = convert(&gguf, &format!("{arch}-tok"), None);
        let g = hearth_engine::loader::gguf::GgufFile::open(&gguf).unwrap();
        let from_gguf = Tokenizer::from_gguf(&g).unwrap();
        let written = Tokenizer::from_hf_dir(&out).unwrap();
        let original = Tokenizer::from_hf_dir(&tiny(arch).join("hf-bf16")).unwrap();
        let n = assert_same_ids(&from_gguf, &written, &format!("{arch}: gguf vs written"));
        assert_same_ids(&original, &written, &format!("{arch}: original vs written"));
        assert_eq!(written.bos_id(), from_gguf.bos_id(), "{arch}");
        assert_eq!(written.eos_ids(), from_gguf.eos_ids(), "{arch}");
        assert_eq!(written.chat_template(), from_gguf.chat_template(), "{arch}");
        eprintln!("{arch}: {n} strings encode identically");
        let _ = std::fs::remove_dir_all(out.parent().unwrap());
    }
}

#[test]
fn unreadable_source_and_existing_output_are_errors_without_output() {
    let d = tmp("errors");
    let bad = d.join("bad.gguf");
    std::fs::write(&bad, b"not a gguf at all").unwrap();
    let err = gguf_to_hf(&bad, &d.join("out"), None, false, &mut |_, _| {}).unwrap_err();
    assert!(err.to_string().contains("GGUF"), "{err}");
    assert!(!d.join("out").exists());
    std::fs::create_dir(d.join("exists")).unwrap();
    let gguf = tiny("llama").join("model-f32.gguf");
    let err = gguf_to_hf(&gguf, &d.join("exists"), None, false, &mut |_, _| {}).unwrap_err();
    assert!(err.to_string().contains("--force"), "{err}");
    assert_eq!(std::fs::read_dir(&d).unwrap().count(), 2);
    let _ = std::fs::remove_dir_all(&d);
}
