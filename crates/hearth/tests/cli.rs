//! The `hearth` binary end to end on the tiny fixture models: stdout carries only generated text or the
//! report, errors go to stderr with a non-zero exit and never a panic.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn tiny(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/tiny")
        .join(rel)
}

fn hearth(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hearth"))
        .args(args)
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn assert_clean_failure(o: &Output, needle: &str) {
    let err = text(&o.stderr);
    assert!(!o.status.success(), "should fail: {err}");
    assert!(err.starts_with("error: "), "stderr: {err}");
    assert!(!err.contains("panicked"), "stderr: {err}");
    assert!(err.contains(needle), "stderr lacks {needle:?}: {err}");
    assert!(o.stdout.is_empty(), "stdout: {}", text(&o.stdout));
}

#[test]
fn raw_completion_is_deterministic_with_a_seed() {
    let m = tiny("llama/model-q8_0.gguf");
    let m = m.to_str().unwrap();
    let args = [
        "run",
        "--model",
        m,
        "--raw",
        "the cat",
        "--max-tokens",
        "12",
        "--temperature",
        "1",
        "--seed",
        "7",
    ];
    let a = hearth(&args);
    assert!(a.status.success(), "{}", text(&a.stderr));
    let b = hearth(&args);
    assert_eq!(a.stdout, b.stdout);
    assert!(!a.stdout.is_empty());
    // Timings and counts go to stderr only.
    assert!(text(&a.stderr).contains("generated"), "{}", text(&a.stderr));
    assert!(!text(&a.stdout).contains("tok/s"));
}

#[test]
fn chat_uses_the_template_and_interactive_mode_keeps_going() {
    let m = tiny("qwen2/hf-f32");
    let m = m.to_str().unwrap();
    let o = hearth(&[
        "run",
        "--model",
        m,
        "hello there",
        "--max-tokens",
        "6",
        "--temperature",
        "0",
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    // Interactive: two turns from stdin, then end of input.
    let mut child = Command::new(env!("CARGO_BIN_EXE_hearth"))
        .args([
            "run",
            "--model",
            m,
            "--max-tokens",
            "4",
            "--temperature",
            "0",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"hi\nand again\n")
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    let err = text(&o.stderr);
    assert_eq!(err.matches("generated").count(), 2, "{err}");
    // The second turn reuses the first turn's cached tokens.
    assert!(
        !err.contains("(0 cached)") || err.matches("(0 cached)").count() == 1,
        "{err}"
    );
}

#[test]
fn info_reports_the_model() {
    let o = hearth(&[
        "info",
        "--model",
        tiny("gemma3/model-q4_0.gguf").to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    for want in [
        "architecture: gemma3",
        "parameters:",
        "Q4_0",
        "context length:",
        "sliding window",
    ] {
        assert!(out.contains(want), "info lacks {want:?}:\n{out}");
    }
}

#[test]
fn perplexity_of_a_file() {
    let dir = std::env::temp_dir().join(format!("hearth-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("t.txt");
    std::fs::write(
        &f,
        "the quick brown fox jumps over the lazy dog. ".repeat(3),
    )
    .unwrap();
    let o = hearth(&[
        "perplexity",
        "--model",
        tiny("mistral/model-f16.gguf").to_str().unwrap(),
        "--file",
        f.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    let ppl: f64 = out
        .lines()
        .find_map(|l| l.strip_prefix("perplexity: "))
        .expect("a perplexity line")
        .parse()
        .unwrap();
    assert!(ppl.is_finite() && ppl > 1.0, "{out}");
    // A file longer than the context is refused, with both numbers.
    std::fs::write(
        &f,
        "the quick brown fox jumps over the lazy dog. ".repeat(200),
    )
    .unwrap();
    let o = hearth(&[
        "perplexity",
        "--model",
        tiny("mistral/model-f16.gguf").to_str().unwrap(),
        "--file",
        f.to_str().unwrap(),
    ]);
    assert_clean_failure(&o, "context of 256");
}

#[test]
fn errors_are_clear_and_never_panic() {
    assert_clean_failure(
        &hearth(&["info", "--model", "/nonexistent/model.gguf"]),
        "/nonexistent/model.gguf",
    );
    let dir = std::env::temp_dir().join(format!("hearth-cli-err-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.gguf");
    let bytes = std::fs::read(tiny("llama/model-f32.gguf")).unwrap();
    std::fs::write(&bad, &bytes[..bytes.len() / 2]).unwrap();
    assert_clean_failure(
        &hearth(&["run", "--model", bad.to_str().unwrap(), "--raw", "x"]),
        "bad.gguf",
    );
    // A model without a chat template cannot chat, but completes raw text.
    let plain = dir.join("plain");
    std::fs::create_dir_all(&plain).unwrap();
    for e in std::fs::read_dir(tiny("llama/hf-f32")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), plain.join(e.file_name())).unwrap();
    }
    let cfg = plain.join("tokenizer_config.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg).unwrap()).unwrap();
    v.as_object_mut().unwrap().remove("chat_template");
    std::fs::write(&cfg, v.to_string()).unwrap();
    let _ = std::fs::remove_file(plain.join("chat_template.jinja"));
    let p = plain.to_str().unwrap();
    assert_clean_failure(&hearth(&["run", "--model", p, "hi"]), "no chat template");
    let o = hearth(&["run", "--model", p, "--raw", "hi", "--max-tokens", "3"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
}
