//! Conformance of GGUF tokenizers with llama.cpp's tokenizer test vectors.
//!
//! llama.cpp ships vocabulary-only GGUF files (`ggml-vocab-NAME.gguf`) with test strings (`.gguf.inp`, cases
//! separated by a `__ggml_vocab_test__` line) and the ids the original Hugging Face tokenizer gives for them
//! (`.gguf.out`, one line of space-separated ids per case). Fetch them with
//! `scripts/fetch_vocab_fixtures.sh DIR` and point `HEARTH_VOCAB_DIR` at `DIR`.
//!
//! Every vocabulary in `REQUIRED` must pass every case. The others present are run too and summarized.

use std::path::{Path, PathBuf};

use hearth_engine::loader::gguf::GgufFile;
use hearth_engine::tokenizer::{Detokenizer, Tokenizer};

const REQUIRED: &[&str] = &[
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
    let dir = PathBuf::from(dir);
    let has_vocab = std::fs::read_dir(&dir)
        .map(|mut it| {
            it.any(|e| {
                e.map(|e| e.file_name().to_string_lossy().starts_with("ggml-vocab-"))
                    .unwrap_or(false)
            })
        })
        .unwrap_or(false);
    assert!(
        has_vocab,
        "HEARTH_VOCAB_DIR={} holds no ggml-vocab-* files; run `scripts/fetch_vocab_fixtures.sh {}`",
        dir.display(),
        dir.display()
    );
    dir
}

/// The test cases of one vocabulary: (text, expected ids).
fn cases(dir: &Path, name: &str) -> Vec<(String, Vec<u32>)> {
    let base = dir.join(format!("ggml-vocab-{name}.gguf"));
    let inp = std::fs::read_to_string(base.with_extension("gguf.inp"))
        .unwrap_or_else(|e| panic!("{}.inp: {e}", base.display()));
    let out = std::fs::read_to_string(base.with_extension("gguf.out"))
        .unwrap_or_else(|e| panic!("{}.out: {e}", base.display()));
    let mut texts: Vec<&str> = inp.split("\n__ggml_vocab_test__\n").collect();
    if texts.last() == Some(&"") {
        texts.pop();
    }
    let ids: Vec<Vec<u32>> = out
        .lines()
        .map(|l| l.split_whitespace().map(|t| t.parse().unwrap()).collect())
        .collect();
    assert_eq!(
        texts.len(),
        ids.len(),
        "{name}: .inp and .out disagree on the number of cases"
    );
    texts.into_iter().map(str::to_string).zip(ids).collect()
}

struct Outcome {
    passed: usize,
    total: usize,
    failures: Vec<String>,
    round_trip_failures: usize,
    load_ms: f64,
}

fn run(dir: &Path, name: &str) -> Result<Outcome, String> {
    let path = dir.join(format!("ggml-vocab-{name}.gguf"));
    let g = GgufFile::open(&path).map_err(|e| e.to_string())?;
    let t0 = std::time::Instant::now();
    let tok = Tokenizer::from_gguf(&g).map_err(|e| e.to_string())?;
    let load_ms = t0.elapsed().as_secs_f64() * 1e3;
    let cases = cases(dir, name);
    let mut failures = Vec::new();
    let mut round_trip_failures = 0;
    for (text, want) in &cases {
        let got = tok.encode(text, false).map_err(|e| e.to_string())?;
        if &got != want {
            failures.push(format!("{text:?}\n      want {want:?}\n      got  {got:?}"));
        }
        if tok.decode(&got).map_err(|e| e.to_string())? != *text {
            round_trip_failures += 1;
        }
    }
    Ok(Outcome {
        passed: cases.len() - failures.len(),
        total: cases.len(),
        failures,
        round_trip_failures,
        load_ms,
    })
}

#[test]
fn required_vocabularies_match_llama_cpp() {
    let dir = vocab_dir();
    let mut bad = Vec::new();
    for name in REQUIRED {
        match run(&dir, name) {
            Ok(o) => {
                println!(
                    "{name:16} {}/{} cases  (decode round trip differs on {}, load {:.0} ms)",
                    o.passed, o.total, o.round_trip_failures, o.load_ms
                );
                if !o.failures.is_empty() {
                    for f in &o.failures {
                        println!("    {f}");
                    }
                    bad.push(format!(
                        "{name}: {} of {} cases fail",
                        o.failures.len(),
                        o.total
                    ));
                }
            }
            Err(e) => bad.push(format!("{name}: {e}")),
        }
    }
    assert!(
        bad.is_empty(),
        "vocabularies that do not match llama.cpp:\n{}",
        bad.join("\n")
    );
}

#[test]
fn other_vocabularies_summary() {
    let dir = vocab_dir();
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| {
            let f = e.ok()?.file_name().to_string_lossy().into_owned();
            let name = f
                .strip_prefix("ggml-vocab-")?
                .strip_suffix(".gguf")?
                .to_string();
            (!REQUIRED.contains(&name.as_str())).then_some(name)
        })
        .collect();
    names.sort();
    println!("vocabularies outside the required list (informational):");
    for name in names {
        if !dir.join(format!("ggml-vocab-{name}.gguf.out")).exists() {
            let loaded = GgufFile::open(&dir.join(format!("ggml-vocab-{name}.gguf")))
                .and_then(|g| Tokenizer::from_gguf(&g));
            match loaded {
                Ok(_) => println!("  {name:16} no test vectors; loads"),
                Err(e) => println!("  {name:16} no test vectors; does not load: {e}"),
            }
            continue;
        }
        match run(&dir, &name) {
            Ok(o) if o.failures.is_empty() => println!("  {name:16} PASS {}/{}", o.passed, o.total),
            Ok(o) => {
                println!("  {name:16} FAIL {}/{}", o.passed, o.total);
                for f in o.failures.iter().take(3) {
                    println!("    {f}");
                }
            }
            Err(e) => println!("  {name:16} FAIL: {e}"),
        }
    }
}

/// A character spelled with SentencePiece byte-fallback tokens comes out whole, never half.
#[test]
fn detokenizer_holds_back_partial_utf8() {
    let dir = vocab_dir();
    let g = GgufFile::open(&dir.join("ggml-vocab-llama-spm.gguf")).unwrap();
    let tok = Tokenizer::from_gguf(&g).unwrap();
    // "𝔘" and "🦙" are not in Llama's vocabulary: each becomes four <0xXX> tokens.
    let text = "Hi 𝔘 🦙, naïve café 你好";
    let ids = tok.encode(text, true).unwrap();
    assert_eq!(ids[0], tok.bos_id().unwrap());
    let byte_tokens = ids
        .iter()
        .filter(|&&id| tok.token_str(id).unwrap().starts_with("<0x"))
        .count();
    assert!(
        byte_tokens >= 8,
        "expected byte-fallback tokens, got {ids:?}"
    );
    let mut d = Detokenizer::new(&tok);
    let mut streamed = String::new();
    for &id in &ids {
        let piece = d.push(id).unwrap();
        assert!(
            !piece.contains('\u{FFFD}'),
            "half a character emitted: {piece:?}"
        );
        streamed.push_str(&piece);
    }
    streamed.push_str(&d.flush().unwrap());
    assert_eq!(streamed, text);
    assert_eq!(tok.decode(&ids).unwrap(), text);
}

/// Byte-level BPE splits multi-byte characters across tokens too; the stream must hold them back as well.
#[test]
fn detokenizer_on_byte_level_bpe() {
    let dir = vocab_dir();
    let g = GgufFile::open(&dir.join("ggml-vocab-gpt-2.gguf")).unwrap();
    let tok = Tokenizer::from_gguf(&g).unwrap();
    let text = "Grüße aus Köln 🦙🦙 — 東京";
    let ids = tok.encode(text, false).unwrap();
    let mut d = Detokenizer::new(&tok);
    let mut pieces = Vec::new();
    for &id in &ids {
        let p = d.push(id).unwrap();
        assert!(!p.contains('\u{FFFD}'));
        pieces.push(p);
    }
    pieces.push(d.flush().unwrap());
    assert_eq!(pieces.concat(), text);
    assert!(
        pieces.iter().any(String::is_empty),
        "some token should have ended mid-character"
    );
}

/// Special tokens written in the text are recognized, and BOS is never doubled.
#[test]
fn special_tokens_and_bos() {
    let dir = vocab_dir();
    let g = GgufFile::open(&dir.join("ggml-vocab-llama-spm.gguf")).unwrap();
    let tok = Tokenizer::from_gguf(&g).unwrap();
    assert!(tok.add_bos());
    let bos = tok.bos_id().unwrap();
    let a = tok.encode("Hello", true).unwrap();
    let b = tok.encode("<s>Hello", true).unwrap();
    assert_eq!(a[0], bos);
    assert_ne!(a[1], bos);
    assert_eq!(b[0], bos);
    assert_ne!(b[1], bos, "BOS doubled: {b:?}");
    assert!(tok.is_eos(2));

    let g = GgufFile::open(&dir.join("ggml-vocab-qwen2.gguf")).unwrap();
    let tok = Tokenizer::from_gguf(&g).unwrap();
    assert!(!tok.add_bos());
    let ids = tok.encode("<|im_start|>user\nhi<|im_end|>", true).unwrap();
    let start = tok.token_id("<|im_start|>").unwrap();
    let end = tok.token_id("<|im_end|>").unwrap();
    assert_eq!(ids[0], start);
    assert_eq!(*ids.last().unwrap(), end);
    assert!(tok.is_eos(end), "<|im_end|> ends a turn");
    assert_eq!(tok.decode(&ids).unwrap(), "user\nhi");
    assert_eq!(
        tok.decode_with(&ids, false).unwrap(),
        "<|im_start|>user\nhi<|im_end|>"
    );
}

fn models_dir() -> PathBuf {
    match std::env::var_os("HEARTH_MODELS_DIR").filter(|d| !d.is_empty()) {
        Some(d) => PathBuf::from(d),
        None => panic!("set HEARTH_MODELS_DIR to the folder made by scripts/fetch_models.sh"),
    }
}

/// The real test models tokenize exactly as llama.cpp does (ids recorded with llama-cpp-python, BOS added,
/// special tokens parsed; see tests/fixtures/tokenizer/real_models.json), except that hearth does not double a
/// BOS the text already starts with.
#[test]
fn real_models_match_llama_cpp() {
    let dir = models_dir();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/tokenizer/real_models.json");
    let fixture: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&fixture).unwrap()).unwrap();
    let mut bad = Vec::new();
    for (file, cases) in fixture["models"].as_object().unwrap() {
        let g = GgufFile::open(&dir.join(file))
            .unwrap_or_else(|e| panic!("{e} (run scripts/fetch_models.sh)"));
        let t0 = std::time::Instant::now();
        let tok = Tokenizer::from_gguf(&g).unwrap();
        let load = t0.elapsed();
        let cases = cases.as_array().unwrap();
        let mut passed = 0;
        for case in cases {
            let text = case["text"].as_str().unwrap();
            let mut want: Vec<u32> = case["ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect();
            if want.len() >= 2 && want[0] == want[1] && Some(want[0]) == tok.bos_id() {
                want.remove(0);
            }
            let got = tok.encode(text, true).unwrap();
            if got == want {
                passed += 1;
            } else {
                bad.push(format!(
                    "{file}: {text:?}\n    want {want:?}\n    got  {got:?}"
                ));
            }
            // Decoding gives the text back, minus the control tokens it contained.
            let mut stream = Detokenizer::new(&tok);
            let mut streamed = String::new();
            for &id in &got {
                streamed.push_str(&stream.push(id).unwrap());
            }
            streamed.push_str(&stream.flush().unwrap());
            assert_eq!(
                streamed,
                tok.decode(&got).unwrap(),
                "{file}: streaming differs from decode for {text:?}"
            );
            if !tok
                .special_tokens()
                .iter()
                .any(|s| text.contains(s.as_str()))
            {
                assert_eq!(
                    tok.decode(&got).unwrap(),
                    text,
                    "{file}: decode(encode(x)) != x"
                );
            }
        }
        println!(
            "{file}: {passed}/{} cases, tokenizer built in {:.1} ms",
            cases.len(),
            load.as_secs_f64() * 1e3
        );
        assert!(
            load.as_secs_f64() < 2.0,
            "{file}: building the tokenizer took {load:?}"
        );
    }
    assert!(
        bad.is_empty(),
        "differences from llama.cpp:\n{}",
        bad.join("\n")
    );
}

/// Phi-3's special tokens swallow the whitespace after them, as llama.cpp (and the HF tokenizer's `rstrip`)
/// do; ids recorded with llama-cpp-python 0.3.36 on ggml-vocab-phi-3.gguf.
#[test]
fn phi3_special_tokens_strip_following_whitespace() {
    let dir = vocab_dir();
    let g = GgufFile::open(&dir.join("ggml-vocab-phi-3.gguf")).unwrap();
    let tok = Tokenizer::from_gguf(&g).unwrap();
    let cases: &[(&str, &[u32])] = &[
        (
            "<|user|>\nHello<|end|>\n<|assistant|>\n",
            &[1, 32010, 15043, 32007, 32001],
        ),
        // llama.cpp gives a second BOS for the literal "<s>"; hearth never doubles BOS.
        ("<s> hi </s>  x", &[1, 29871, 7251, 29871, 2, 921]),
        ("a <|end|>  b", &[1, 263, 29871, 32007, 289]),
    ];
    for (text, want) in cases {
        assert_eq!(tok.encode(text, true).unwrap(), *want, "{text:?}");
    }
}

/// Texts that embed each vocabulary's own control and user-defined tokens, with BOS added, tokenize as in
/// llama.cpp with special-token parsing on (tests/fixtures/tokenizer/vocab_specials.json, recorded with
/// llama-cpp-python), except that hearth does not double a BOS the text already starts with.
#[test]
fn embedded_special_tokens_match_llama_cpp() {
    let dir = vocab_dir();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/tokenizer/vocab_specials.json");
    let fixture: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&fixture).unwrap()).unwrap();
    let mut bad = Vec::new();
    for (name, cases) in fixture["vocabs"].as_object().unwrap() {
        let g = GgufFile::open(&dir.join(format!("ggml-vocab-{name}.gguf"))).unwrap();
        let tok = Tokenizer::from_gguf(&g).unwrap();
        for case in cases.as_array().unwrap() {
            let text = case["text"].as_str().unwrap();
            let mut want: Vec<u32> = case["ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect();
            if want.len() >= 2
                && want[0] == want[1]
                && Some(want[0]) == tok.bos_id()
                && tok.add_bos()
            {
                want.remove(0);
            }
            let got = tok.encode(text, true).unwrap();
            if got != want {
                bad.push(format!(
                    "{name}: {text:?}\n    want {want:?}\n    got  {got:?}"
                ));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "differences from llama.cpp:\n{}",
        bad.join("\n")
    );
}
