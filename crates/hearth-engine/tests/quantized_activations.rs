//! With 8-bit activations and integer dot products (`set_quantized_activations(true)`), the real models'
//! perplexity of the committed text stays within 1% of transformers' (tests/fixtures/real), and batched runs
//! still equal single runs bit for bit. A separate test binary because the switch is process-wide.
//! Needs HEARTH_MODELS_DIR (scripts/fetch_models.sh).

use std::path::{Path, PathBuf};

use hearth_engine::backend::cpu::set_quantized_activations;
use hearth_engine::generate::score_sequence;
use hearth_engine::models::{Logits, Model, SeqInput};

fn models_dir() -> PathBuf {
    PathBuf::from(
        std::env::var_os("HEARTH_MODELS_DIR")
            .expect("set HEARTH_MODELS_DIR to the folder made by scripts/fetch_models.sh"),
    )
}

fn check_ppl(fixture: &str) {
    set_quantized_activations(true);
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/real")
        .join(fixture);
    let f: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
    let model = Model::open(&models_dir().join(f["model_file"].as_str().unwrap())).unwrap();
    let ids: Vec<u32> = f["ppl_tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    let (nll, n) = score_sequence(&model, &ids, |_| {}).unwrap();
    let ppl = (nll / n as f64).exp();
    let reference = f["ppl"].as_f64().unwrap();
    let rel = (ppl - reference).abs() / reference;
    eprintln!(
        "{fixture}: quantized-activation perplexity {ppl:.4}, transformers {reference:.4} ({:.3}%)",
        rel * 100.0
    );
    assert!(rel < 0.01, "{fixture}: {ppl} vs {reference}");
}

#[test]
fn smollm2_perplexity_within_one_percent() {
    check_ppl("smollm2.json");
}

#[test]
fn gemma3_perplexity_within_one_percent() {
    check_ppl("gemma3.json");
}

#[test]
fn batched_equals_alone_with_quantized_activations() {
    set_quantized_activations(true);
    let m = Model::open(&models_dir().join("SmolLM2-135M-Instruct.Q4_1.gguf")).unwrap();
    let seqs: Vec<Vec<u32>> = [9usize, 4, 17]
        .iter()
        .map(|&n| (0..n as u32).map(|t| 100 + 37 * t).collect())
        .collect();
    let alone: Vec<Vec<f32>> = seqs
        .iter()
        .map(|s| {
            m.forward(&mut m.new_state(64), s, Logits::All)
                .unwrap()
                .to_vec()
        })
        .collect();
    let mut kv = m.new_kv(4, 16).unwrap();
    let mut b = m.new_batch(64);
    let tables: Vec<Vec<u32>> = vec![(0..3).collect(), (3..4).collect(), (4..9).collect()];
    let inputs: Vec<SeqInput> = seqs
        .iter()
        .zip(&tables)
        .map(|(s, t)| SeqInput {
            tokens: s,
            start: 0,
            table: t,
            logits: Logits::All,
        })
        .collect();
    let got = m.forward_batch(&mut b, &mut kv, &inputs).unwrap().to_vec();
    let flat: Vec<f32> = alone.concat();
    assert_eq!(got.len(), flat.len());
    assert!(got
        .iter()
        .zip(&flat)
        .all(|(a, b)| a.to_bits() == b.to_bits()));
}
