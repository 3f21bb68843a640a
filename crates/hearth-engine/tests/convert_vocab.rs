//! The tokenizer.json that `hearth convert --to hf` writes, on llama.cpp's vocabulary test vectors: for each
//! `ggml-vocab-NAME.gguf` (HEARTH_VOCAB_DIR, from `scripts/fetch_vocab_fixtures.sh DIR`), the rebuilt
//! tokenizer.json, run by the `tokenizers` crate as transformers would run it, must give the original Hugging
//! Face tokenizer's ids (`.gguf.out`) for every test string (`.gguf.inp`), as hearth's GGUF tokenizer does.

use std::path::{Path, PathBuf};

use hearth_engine::convert::hf_tokenizer::{tokenizer_config, tokenizer_json};
use hearth_engine::loader::gguf::GgufFile;
use hearth_engine::tokenizer::Tokenizer;

/// SentencePiece (`llama-spm`) and byte-level BPE vocabularies of the kinds hearth converts.
const VOCABS: &[&str] = &[
    "llama-spm",
    "llama-bpe",
    "gpt-2",
    "qwen2",
    "phi-3",
    "starcoder",
    "falcon",
    "deepseek-llm",
    "deepseek-coder",
    "command-r",
    "mpt",
    "refact",
];

fn vocab_dir() -> PathBuf {
    let dir = std::env::var_os("HEARTH_VOCAB_DIR")
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| {
            panic!(
                "HEARTH_VOCAB_DIR is not set. Fetch llama.cpp's tokenizer test vocabularies with \
                 `scripts/fetch_vocab_fixtures.sh DIR` and run with HEARTH_VOCAB_DIR=DIR"
            )
        });
    PathBuf::from(dir)
}

fn cases(dir: &Path, name: &str) -> Vec<(String, Vec<u32>)> {
    let base = dir.join(format!("ggml-vocab-{name}.gguf"));
    let inp = std::fs::read_to_string(base.with_extension("gguf.inp")).unwrap();
    let out = std::fs::read_to_string(base.with_extension("gguf.out")).unwrap();
    let mut texts: Vec<&str> = inp.split("\n__ggml_vocab_test__\n").collect();
    if texts.last() == Some(&"") {
        texts.pop();
    }
    let ids: Vec<Vec<u32>> = out
        .lines()
        .map(|l| l.split_whitespace().map(|t| t.parse().unwrap()).collect())
        .collect();
    assert_eq!(texts.len(), ids.len(), "{name}");
    texts.into_iter().map(str::to_string).zip(ids).collect()
}

#[test]
fn rebuilt_tokenizer_json_matches_the_original_ids() {
    let dir = vocab_dir();
    let mut bad = Vec::new();
    for name in VOCABS {
        let g = GgufFile::open(&dir.join(format!("ggml-vocab-{name}.gguf"))).unwrap();
        let tok = Tokenizer::from_gguf(&g).unwrap();
        let out = std::env::temp_dir().join(format!(
            "hearth-convert-vocab-{}-{name}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&out);
        std::fs::create_dir_all(&out).unwrap();
        let tj = tokenizer_json(&g, &tok).unwrap();
        std::fs::write(out.join("tokenizer.json"), serde_json::to_vec(&tj).unwrap()).unwrap();
        std::fs::write(
            out.join("tokenizer_config.json"),
            serde_json::to_vec(&tokenizer_config(&g, &tok)).unwrap(),
        )
        .unwrap();
        let written = Tokenizer::from_hf_dir(&out).unwrap();
        let cases = cases(&dir, name);
        let mut failed = 0;
        for (text, want) in &cases {
            let got = written.encode(text, false).unwrap();
            if &got != want {
                if failed < 3 {
                    println!("  {name}: {text:?}\n    want {want:?}\n    got  {got:?}");
                }
                failed += 1;
            }
        }
        println!("{name:16} {}/{} cases", cases.len() - failed, cases.len());
        if failed > 0 {
            bad.push(format!("{name}: {failed} of {} cases", cases.len()));
        }
        let _ = std::fs::remove_dir_all(&out);
    }
    assert!(bad.is_empty(), "rebuilt tokenizers disagree: {bad:?}");
}
