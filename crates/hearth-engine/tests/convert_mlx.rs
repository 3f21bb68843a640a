//! `hearth convert --to mlx` against mlx-lm itself: every case of tests/fixtures/mlx_convert (written by
//! scripts/make_mlx_convert_fixtures.py running `mlx_lm.convert` on the tiny Hugging Face models) is
//! converted by hearth from the same input and must match exactly: every tensor's dtype, shape and bytes
//! (sha256), config.json's `quantization` / `quantization_config` sections and `tie_word_embeddings`, and the
//! index metadata (`total_size`, `total_parameters`); where the fixture has it, hearth's MLX → Hugging Face
//! dequantization equals `mlx_lm.convert -d` byte for byte. Also: GGUF → MLX equals GGUF → HF → MLX, existing
//! output needs `force`, bad options leave nothing, and an unquantized conversion only casts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use hearth_engine::convert::from_mlx::mlx_to_hf;
use hearth_engine::convert::source::parse_float;
use hearth_engine::convert::to_hf::gguf_to_hf;
use hearth_engine::convert::to_mlx::{hf_to_mlx, MlxOptions, Recipe};
use hearth_engine::tensor::mlx::MlxMode;
use serde_json::Value;
use sha2::{Digest, Sha256};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("hearth-convert-mlx-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// mlx_lm.convert's arguments as hearth's options.
fn options(args: &[String]) -> MlxOptions {
    let mut o = MlxOptions::default();
    let mut i = 0;
    while i < args.len() {
        let next = || args[i + 1].as_str();
        match args[i].as_str() {
            "-q" => {
                o.quantize = true;
                i += 1;
                continue;
            }
            "--q-bits" => o.bits = Some(next().parse().unwrap()),
            "--q-group-size" => o.group_size = Some(next().parse().unwrap()),
            "--q-mode" => o.mode = MlxMode::from_name(next()).unwrap(),
            "--quant-predicate" => o.recipe = Some(Recipe::from_name(next()).unwrap()),
            "--dtype" => o.dtype = Some(parse_float(next()).unwrap()),
            other => panic!("unknown mlx_lm argument {other}"),
        }
        i += 2;
    }
    o
}

/// name -> (dtype, shape, sha256) of every tensor of a safetensors file (read directly: the loader does not
/// hand out u32/u8 tensors).
fn tensors(path: &Path) -> BTreeMap<String, (String, Vec<u64>, String)> {
    tensors_of(path, "mlx")
}

fn tensors_of(path: &Path, format: &str) -> BTreeMap<String, (String, Vec<u64>, String)> {
    let raw = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(raw[..8].try_into().unwrap()) as usize;
    let header: serde_json::Map<String, Value> = serde_json::from_slice(&raw[8..8 + n]).unwrap();
    let data = &raw[8 + n..];
    let mut out = BTreeMap::new();
    for (name, e) in header {
        if name == "__metadata__" {
            assert_eq!(e["format"], format, "{}", path.display());
            continue;
        }
        let off: Vec<usize> = e["data_offsets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        let sha = format!("{:x}", Sha256::digest(&data[off[0]..off[1]]));
        let shape = e["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        out.insert(name, (e["dtype"].as_str().unwrap().to_string(), shape, sha));
    }
    out
}

fn check_case(fixture: &Path) {
    let name = fixture.file_stem().unwrap().to_string_lossy().to_string();
    let rec: Value = serde_json::from_str(&std::fs::read_to_string(fixture).unwrap()).unwrap();
    let source = rec["source"].as_str().unwrap();
    let tiny = root().join("tests/fixtures/tiny");
    let work = tmp(&name);
    // `gguf:PATH`: a tiny GGUF made into a Hugging Face folder first, as the fixture script does with hearth.
    let src = match source.strip_prefix("gguf:") {
        Some(gguf) => {
            let hf = work.join("hf");
            gguf_to_hf(&tiny.join(gguf), &hf, None, false, &mut |_, _| {}).unwrap();
            hf
        }
        None => tiny.join(source),
    };
    let args: Vec<String> = rec["mlx_lm_args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    let dst = work.join("out");
    hf_to_mlx(&src, &dst, &options(&args), false, &mut |_, _| {}).unwrap();

    let config: Value =
        serde_json::from_str(&std::fs::read_to_string(dst.join("config.json")).unwrap()).unwrap();
    for key in ["quantization", "quantization_config", "tie_word_embeddings"] {
        assert_eq!(config[key], rec[key], "{name}: config.json {key}");
    }
    let index: Value = serde_json::from_str(
        &std::fs::read_to_string(dst.join("model.safetensors.index.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        index["metadata"], rec["index_metadata"],
        "{name}: index metadata"
    );

    let mut got = BTreeMap::new();
    for shard in index["weight_map"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_str().unwrap().to_string())
        .collect::<std::collections::BTreeSet<_>>()
    {
        got.extend(tensors(&dst.join(shard)));
    }
    let want = rec["tensors"].as_object().unwrap();
    let got_names: Vec<&String> = got.keys().collect();
    let want_names: Vec<&String> = want.keys().collect();
    assert_eq!(got_names, want_names, "{name}: tensor names");
    for (t, (dtype, shape, sha)) in &got {
        let w = &want[t];
        assert_eq!(dtype, w["dtype"].as_str().unwrap(), "{name}: {t} dtype");
        let wshape: Vec<u64> = w["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        assert_eq!(shape, &wshape, "{name}: {t} shape");
        assert_eq!(sha, w["sha256"].as_str().unwrap(), "{name}: {t} bytes");
    }
    // Dequantized back (hearth: MLX → Hugging Face; mlx-lm: `convert -d`): the same float tensors.
    if let Some(deq) = rec.get("dequantized").and_then(|v| v.as_object()) {
        let hf = work.join("dequantized");
        mlx_to_hf(&dst, &hf, None, false, &mut |_, _| {}).unwrap();
        let got = tensors_of(&hf.join("model.safetensors"), "pt");
        let names: Vec<&String> = got.keys().collect();
        assert_eq!(
            names,
            deq.keys().collect::<Vec<_>>(),
            "{name}: dequantized names"
        );
        for (t, (dtype, _, sha)) in &got {
            assert_eq!(
                dtype,
                deq[t]["dtype"].as_str().unwrap(),
                "{name}: dequantized {t} dtype"
            );
            assert_eq!(
                sha,
                deq[t]["sha256"].as_str().unwrap(),
                "{name}: dequantized {t} bytes"
            );
        }
        let config: Value =
            serde_json::from_str(&std::fs::read_to_string(hf.join("config.json")).unwrap())
                .unwrap();
        assert!(
            config.get("quantization").is_none() && config.get("quantization_config").is_none()
        );
        // hearth runs the dequantized folder.
        hearth_engine::models::Model::open(&hf).unwrap();
    }
    // The files mlx-lm loads from (its README card and re-saved chat_template.jinja aside; hearth copies the
    // tokenizer_config.json that holds the template).
    for f in rec["files"].as_array().unwrap() {
        let f = f.as_str().unwrap();
        if f == "README.md" || f == "chat_template.jinja" {
            continue;
        }
        assert!(dst.join(f).exists(), "{name}: {f} missing");
    }
    let _ = std::fs::remove_dir_all(&work);
}

#[test]
fn matches_mlx_lm_convert_on_every_fixture() {
    let dir = root().join("tests/fixtures/mlx_convert");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    cases.sort();
    assert!(cases.len() >= 10, "fixtures missing: {}", dir.display());
    for c in &cases {
        check_case(c);
    }
}

#[test]
fn existing_output_needs_force_and_bad_options_leave_nothing() {
    let src = root().join("tests/fixtures/tiny/llama/hf-bf16");
    let d = tmp("force");
    let dst = d.join("out");
    std::fs::create_dir(&dst).unwrap();
    let err = hf_to_mlx(&src, &dst, &MlxOptions::default(), false, &mut |_, _| {}).unwrap_err();
    assert!(err.to_string().contains("--force"), "{err}");
    let bad = MlxOptions {
        bits: Some(7),
        ..MlxOptions::default()
    };
    let out2 = d.join("out2");
    let err = hf_to_mlx(&src, &out2, &bad, false, &mut |_, _| {}).unwrap_err();
    assert!(err.to_string().contains("7 bits"), "{err}");
    assert!(!out2.exists());
    assert_eq!(std::fs::read_dir(&d).unwrap().count(), 1, "no staging left");
    // Converting an MLX folder again is refused.
    hf_to_mlx(&src, &out2, &MlxOptions::default(), false, &mut |_, _| {}).unwrap();
    let err = hf_to_mlx(
        &out2,
        &d.join("out3"),
        &MlxOptions::default(),
        false,
        &mut |_, _| {},
    )
    .unwrap_err();
    assert!(err.to_string().contains("already"), "{err}");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn unquantized_conversion_only_casts() {
    let src = root().join("tests/fixtures/tiny/llama/hf-bf16");
    let d = tmp("cast");
    let dst = d.join("out");
    let opts = MlxOptions {
        quantize: false,
        dtype: parse_float("float32"),
        keep_quant: false,
        ..MlxOptions::default()
    };
    hf_to_mlx(&src, &dst, &opts, false, &mut |_, _| {}).unwrap();
    let config: Value =
        serde_json::from_str(&std::fs::read_to_string(dst.join("config.json")).unwrap()).unwrap();
    assert!(config.get("quantization").is_none());
    let out = tensors(&dst.join("model.safetensors"));
    assert!(out.values().all(|(dt, _, _)| dt == "F32"));
    // Same values as the source, widened.
    let a = hearth_engine::models::Model::open(&src).unwrap();
    let b = hearth_engine::models::Model::open(&dst).unwrap();
    for (n, t) in &a.weights.tensors {
        assert_eq!(t.to_f32(), b.weights.tensors[n].to_f32(), "{n}");
    }
    let _ = std::fs::remove_dir_all(&d);
}

/// GGUF → MLX directly equals GGUF → Hugging Face → MLX (the same mapping back, the same quantizer), for
/// float and block-quantized GGUFs of every tiny architecture.
#[test]
fn gguf_to_mlx_equals_the_route_through_hf() {
    use hearth_engine::convert::to_hf::gguf_to_mlx;
    for arch in ["llama", "mistral", "qwen2", "qwen3", "gemma3"] {
        for variant in ["bf16", "q4_1"] {
            let gguf = root()
                .join("tests/fixtures/tiny")
                .join(arch)
                .join(format!("model-{variant}.gguf"));
            let d = tmp(&format!("route-{arch}-{variant}"));
            let opts = MlxOptions {
                bits: Some(4),
                group_size: Some(32),
                ..MlxOptions::default()
            };
            gguf_to_mlx(&gguf, &d.join("direct"), &opts, false, &mut |_, _| {}).unwrap();
            gguf_to_hf(&gguf, &d.join("hf"), None, false, &mut |_, _| {}).unwrap();
            hf_to_mlx(&d.join("hf"), &d.join("via"), &opts, false, &mut |_, _| {}).unwrap();
            let a = tensors(&d.join("direct/model.safetensors"));
            let b = tensors(&d.join("via/model.safetensors"));
            assert_eq!(a, b, "{arch} {variant}");
            let ca: Value = serde_json::from_str(
                &std::fs::read_to_string(d.join("direct/config.json")).unwrap(),
            )
            .unwrap();
            let cb: Value =
                serde_json::from_str(&std::fs::read_to_string(d.join("via/config.json")).unwrap())
                    .unwrap();
            assert_eq!(ca, cb, "{arch} {variant}: config.json");
            let _ = std::fs::remove_dir_all(&d);
        }
    }
}
