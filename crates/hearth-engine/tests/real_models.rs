//! The real models from PyPI against transformers (tests/fixtures/real, made by
//! scripts/make_reference_fixtures.py on the same GGUF files, dequantized, in f32):
//! - the committed text's perplexity within 1% of transformers';
//! - greedy continuations of three prompts equal to transformers' for 16 tokens, stopping the comparison at a
//!   step where transformers' top two logits are within 0.1 (a near tie that rounding may flip);
//! - hearth's tokenizer gives transformers' token ids for the text.
//!
//! Needs HEARTH_MODELS_DIR: the folder scripts/fetch_models.sh fills (the README's test command sets it).

use std::path::{Path, PathBuf};

use hearth_engine::generate::score_sequence;
use hearth_engine::models::{Logits, Model};
use hearth_engine::sample::argmax;
use hearth_engine::tokenizer::Tokenizer;

fn models_dir() -> PathBuf {
    match std::env::var_os("HEARTH_MODELS_DIR") {
        Some(d) => PathBuf::from(d),
        None => panic!("set HEARTH_MODELS_DIR to the folder made by scripts/fetch_models.sh"),
    }
}

fn fixture(name: &str) -> serde_json::Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/real")
        .join(name);
    serde_json::from_str(
        &std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())),
    )
    .unwrap()
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn check(fixture_name: &str) {
    let f = fixture(fixture_name);
    let path = models_dir().join(f["model_file"].as_str().unwrap());
    let model = Model::open(&path).unwrap_or_else(|e| panic!("{e}"));
    let tok = Tokenizer::from_gguf(model.gguf.as_ref().unwrap()).unwrap();

    // Tokenizer: the committed text gives transformers' ids (BOS per the model's settings).
    let text_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/real/ppl.txt");
    let text = std::fs::read_to_string(text_path).unwrap();
    let want = ids(&f["ppl_tokens"]);
    let got = tok.encode(&text, true).unwrap();
    assert_eq!(
        got, want,
        "{fixture_name}: tokenization of ppl.txt differs from transformers'"
    );

    // Perplexity within 1%.
    let (nll, n) = score_sequence(&model, &want, |_| {}).unwrap();
    assert_eq!(n, want.len() - 1);
    let ppl = (nll / n as f64).exp();
    let reference = f["ppl"].as_f64().unwrap();
    let rel = (ppl - reference).abs() / reference;
    eprintln!(
        "{fixture_name}: perplexity {ppl:.4}, transformers {reference:.4} ({:.3}% apart)",
        rel * 100.0
    );
    assert!(
        rel < 0.01,
        "{fixture_name}: perplexity {ppl} vs transformers {reference}"
    );

    // Greedy continuations.
    for g in f["greedy"].as_array().unwrap() {
        let prompt = ids(&g["prompt_tokens"]);
        let expect = ids(&g["tokens"]);
        let margins: Vec<f64> = g["top2_margins"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m.as_f64().unwrap())
            .collect();
        let mut st = model.new_state(64);
        let mut next = argmax(model.forward(&mut st, &prompt, Logits::Last).unwrap());
        let mut compared = 0;
        for (step, &e) in expect.iter().enumerate() {
            if margins[step] < 0.1 {
                break;
            }
            assert_eq!(
                next, e,
                "{fixture_name}: prompt {:?}, step {step}",
                g["prompt"]
            );
            compared += 1;
            next = argmax(model.forward(&mut st, &[next], Logits::Last).unwrap());
        }
        eprintln!(
            "{fixture_name}: {:?}: {compared} greedy tokens equal",
            g["prompt"]
        );
        assert!(
            compared >= 4,
            "too few comparable steps for {:?}",
            g["prompt"]
        );
    }
}

#[test]
fn smollm2_matches_transformers() {
    check("smollm2.json");
}

#[test]
fn gemma3_matches_transformers() {
    check("gemma3.json");
}

/// SmolLM2's chat template (from the GGUF) renders a conversation exactly as transformers does, and the
/// rendered text tokenizes to the same ids.
#[test]
fn smollm2_chat_template_matches_transformers() {
    let f = fixture("smollm2.json");
    let path = models_dir().join(f["model_file"].as_str().unwrap());
    let g = hearth_engine::loader::gguf::GgufFile::open(&path).unwrap();
    let tok = Tokenizer::from_gguf(&g).unwrap();
    let messages: Vec<hearth_engine::tokenizer::ChatMessage> =
        serde_json::from_value(f["chat_messages"].clone()).unwrap();
    let text = tok.apply_chat_template(&messages, true, None).unwrap();
    assert_eq!(text, f["chat_prompt_text"].as_str().unwrap());
    assert_eq!(
        tok.encode(&text, false).unwrap(),
        ids(&f["chat_prompt_tokens"])
    );
}
