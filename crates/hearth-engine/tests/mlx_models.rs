//! MLX-quantized checkpoints written by mlx-lm's own `mlx_lm.convert` (tests/fixtures/tiny_mlx, made by
//! scripts/make_mlx_model_fixtures.py from the tiny random-weight models) load in hearth and give the logits
//! mlx-lm computes on them: affine 2, 3, 4, 5, 6 and 8 bits in groups of 32 and 64, f32 and bf16 scales,
//! mxfp4, nvfp4, mxfp8 and a mixed 3/6-bit recipe with per-layer entries, quantized embeddings included.
//!
//! Tolerance: every logit within 2e-5 (absolute; logits are O(1); measured worst 3.5e-6) of mlx-lm's f32 result, on both of hearth's
//! activation paths. The f32 path differs from mlx only by summation order. The 8-bit activation path adds the
//! rounding of activations to 8 bits, so it is held to the model's own scale instead: within 5% of the logit
//! range (measured worst 2.6% on these random-weight models), and the same argmax wherever mlx's top-2 margin exceeds that bound.

use std::path::{Path, PathBuf};

use hearth_engine::backend::cpu::set_quantized_activations;
use hearth_engine::models::{Logits, Model};
use hearth_engine::tensor::DType;

const TOL: f32 = 2e-5;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny_mlx")
}

fn read_f32(path: &Path) -> Vec<f32> {
    let b = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn logits(model: &Model, tokens: &[u32], split: usize) -> Vec<f32> {
    let mut st = model.new_state(tokens.len());
    let mut got = Vec::new();
    for piece in tokens.chunks(split) {
        got.extend_from_slice(model.forward(&mut st, piece, Logits::All).unwrap());
    }
    got
}

/// The activation mode is process-wide: the tests take turns.
static MODE: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn check_arch(arch: &str) -> usize {
    let _turn = MODE.lock().unwrap_or_else(|e| e.into_inner());
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
    for (name, v) in variants {
        let path = dir.join(v["path"].as_str().unwrap());
        let expect = read_f32(&dir.join(v["logits"].as_str().unwrap()));
        let model = Model::open(&path).unwrap_or_else(|e| panic!("{arch}/{name}: {e}"));
        let n_mlx = model
            .weights
            .tensors
            .values()
            .filter(|t| matches!(t.dtype, DType::Mlx(_)))
            .count();
        assert!(n_mlx >= 7, "{arch}/{name}: only {n_mlx} MLX tensors");
        let vocab = model.config.vocab;
        assert_eq!(expect.len(), tokens.len() * vocab, "{arch}/{name}");
        set_quantized_activations(false);
        let mut worst_f32 = 0f32;
        for split in [tokens.len(), 7] {
            let got = logits(&model, &tokens, split);
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
                "{arch}/{name} (chunks of {split}): logit {at} differs by {worst}: {} vs {}",
                got[at],
                expect[at]
            );
            worst_f32 = worst_f32.max(worst);
        }
        set_quantized_activations(true);
        let got = logits(&model, &tokens, tokens.len());
        set_quantized_activations(false);
        let range = expect.iter().fold(0f32, |m, v| m.max(v.abs()));
        let bound = 0.05 * range;
        let mut worst_q8 = 0f32;
        for (p, (g, e)) in got.chunks(vocab).zip(expect.chunks(vocab)).enumerate() {
            for (a, b) in g.iter().zip(e) {
                worst_q8 = worst_q8.max((a - b).abs());
                assert!(
                    (a - b).abs() <= bound,
                    "{arch}/{name} q8 position {p}: {a} vs {b} (bound {bound})"
                );
            }
            let mut order: Vec<usize> = (0..vocab).collect();
            order.sort_by(|&i, &j| e[j].total_cmp(&e[i]));
            if e[order[0]] - e[order[1]] > 2.0 * bound {
                let top = (0..vocab).max_by(|&i, &j| g[i].total_cmp(&g[j])).unwrap();
                assert_eq!(top, order[0], "{arch}/{name} q8 position {p}: argmax");
            }
        }
        eprintln!(
            "{arch}/{name}: ok ({n_mlx} MLX tensors; worst |diff| f32 path {worst_f32:.2e}, q8 path {worst_q8:.2e} of range {range:.2})"
        );
    }
    variants.len()
}

#[test]
fn llama_every_format() {
    assert!(check_arch("llama") >= 11);
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

/// A copy of a fixture folder with its config.json and safetensors header edited by `edit`.
fn edited_copy(name: &str, edit: impl Fn(String, Vec<u8>) -> (String, Vec<u8>)) -> PathBuf {
    let src = fixtures().join("llama/q4-g32");
    let dst = std::env::temp_dir().join(format!("hearth-mlx-bad-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dst);
    std::fs::create_dir_all(&dst).unwrap();
    let (cfg, st) = edit(
        std::fs::read_to_string(src.join("config.json")).unwrap(),
        std::fs::read(src.join("model.safetensors")).unwrap(),
    );
    std::fs::write(dst.join("config.json"), cfg).unwrap();
    std::fs::write(dst.join("model.safetensors"), st).unwrap();
    dst
}

/// Replaces `from` with `to` (same length) inside the safetensors header.
fn rename_in_header(st: Vec<u8>, from: &str, to: &str) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let hlen = u64::from_le_bytes(st[..8].try_into().unwrap()) as usize;
    let header = String::from_utf8(st[8..8 + hlen].to_vec()).unwrap();
    assert!(header.contains(from), "{from} not in header");
    let mut out = st[..8].to_vec();
    out.extend_from_slice(header.replace(from, to).as_bytes());
    out.extend_from_slice(&st[8 + hlen..]);
    out
}

#[test]
fn bad_checkpoints_are_refused_with_the_reason() {
    let cases: Vec<(&str, PathBuf, &str)> = vec![
        (
            "bits",
            edited_copy("bits", |c, s| (c.replace("\"bits\": 4", "\"bits\": 8"), s)),
            "scales have shape",
        ),
        (
            "mode",
            edited_copy("mode", |c, s| {
                (c.replace("\"mode\": \"affine\"", "\"mode\": \"mxfp4\""), s)
            }),
            "mxfp4",
        ),
        (
            "unknown mode",
            edited_copy("unknown", |c, s| {
                (
                    c.replace("\"mode\": \"affine\"", "\"mode\": \"q4_magic\""),
                    s,
                )
            }),
            "q4_magic",
        ),
        (
            "no biases",
            edited_copy("biases", |c, s| {
                (
                    c,
                    rename_in_header(
                        s,
                        "model.layers.0.mlp.up_proj.biases",
                        "model.layers.0.mlp.up_proj.biasez",
                    ),
                )
            }),
            "needs biases",
        ),
        (
            "no quantization section",
            edited_copy("noquant", |c, s| {
                let mut v: serde_json::Value = serde_json::from_str(&c).unwrap();
                let o = v.as_object_mut().unwrap();
                o.remove("quantization");
                o.remove("quantization_config");
                (v.to_string(), s)
            }),
            "no `quantization` section",
        ),
        (
            "module listed as float",
            edited_copy("false", |c, s| {
                let mut v: serde_json::Value = serde_json::from_str(&c).unwrap();
                v["quantization"]["model.layers.1.self_attn.o_proj"] =
                    serde_json::Value::Bool(false);
                (v.to_string(), s)
            }),
            "not quantized",
        ),
    ];
    for (what, dir, want) in cases {
        let err = match Model::open(&dir) {
            Ok(_) => panic!("{what}: loaded"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains(want), "{what}: {err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
