//! `hearth convert` end to end: results land only when complete, errors exit 1 with one `error:` line on
//! stderr, never a panic, and never leave partial output.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn tiny(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/tiny")
        .join(rel)
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("hearth-convert-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn hearth(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hearth"))
        .args(args)
        .output()
        .unwrap()
}

fn fails_with(o: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "stderr: {err}");
    assert!(err.contains("error: "), "stderr: {err}");
    assert!(!err.contains("panicked"), "stderr: {err}");
    assert!(err.contains(needle), "stderr lacks {needle:?}: {err}");
    assert!(o.stdout.is_empty());
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn converts_and_refuses_to_overwrite_without_force() {
    let d = tmp("ok");
    let hf = tiny("llama/hf-bf16");
    let out = d.join("mlx");
    let o = hearth(&[
        "convert",
        s(&hf),
        s(&out),
        "--to",
        "mlx",
        "-q",
        "--bits",
        "4",
        "--group-size",
        "32",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.join("model.safetensors").exists() && out.join("config.json").exists());
    let before = std::fs::read(out.join("model.safetensors")).unwrap();
    let o = hearth(&[
        "convert",
        s(&hf),
        s(&out),
        "--to",
        "mlx",
        "-q",
        "--bits",
        "8",
    ]);
    fails_with(&o, "--force");
    assert_eq!(
        std::fs::read(out.join("model.safetensors")).unwrap(),
        before
    );
    let o = hearth(&[
        "convert",
        s(&hf),
        s(&out),
        "--to",
        "mlx",
        "-q",
        "--bits",
        "8",
        "--force",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_ne!(
        std::fs::read(out.join("model.safetensors")).unwrap(),
        before
    );

    let gguf = tiny("qwen2/model-q8_0.gguf");
    let o = hearth(&[
        "convert",
        s(&gguf),
        s(&d.join("hf")),
        "--to",
        "hf",
        "--dtype",
        "f32",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = hearth(&[
        "convert",
        s(&gguf),
        s(&d.join("mlx2")),
        "--to",
        "mlx",
        "--recipe",
        "mixed_3_6",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // And back: the MLX folder dequantized into a Hugging Face folder that hearth runs.
    let back = d.join("back");
    let o = hearth(&["convert", s(&out), s(&back), "--to", "hf"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = hearth(&["info", "--model", s(&back)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // The MLX folder itself runs, and converts to GGUF (dequantized, then Q8_0) that hearth runs.
    let o = hearth(&["info", "--model", s(&out)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("MLX_Q8_G64_BF16"));
    let gguf_out = d.join("from-mlx.gguf");
    let o = hearth(&[
        "convert",
        s(&out),
        s(&gguf_out),
        "--to",
        "gguf",
        "--outtype",
        "q8_0",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = hearth(&["info", "--model", s(&gguf_out)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("Q8_0"));
    // Nothing but the five outputs: no staging folders left behind.
    assert_eq!(std::fs::read_dir(&d).unwrap().count(), 5);
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn bad_inputs_exit_1_without_output() {
    let d = tmp("bad");
    let hf = tiny("llama/hf-bf16");
    let gguf = tiny("llama/model-f32.gguf");
    let junk = d.join("junk.bin");
    std::fs::write(&junk, b"hello").unwrap();
    let bert = d.join("bert");
    std::fs::create_dir(&bert).unwrap();
    std::fs::write(
        bert.join("config.json"),
        br#"{"model_type": "bert", "architectures": ["BertModel"]}"#,
    )
    .unwrap();
    let out = d.join("out");
    let missing = d.join("missing");
    let deep = d.join("no/such/dir/out");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec![s(&junk), s(&out), "--to", "mlx"], "not a GGUF file"),
        (vec![s(&missing), s(&out), "--to", "mlx"], "missing"),
        (vec![s(&bert), s(&out), "--to", "mlx", "-q"], "bert"),
        (
            vec![s(&hf), s(&out), "--to", "hf"],
            "already a Hugging Face folder",
        ),
        (vec![s(&gguf), s(&out), "--to", "hf", "-q"], "--to mlx only"),
        (
            vec![
                s(&hf),
                s(&out),
                "--to",
                "mlx",
                "-q",
                "--mode",
                "nvfp4",
                "--bits",
                "8",
            ],
            "nvfp4",
        ),
        (
            vec![s(&hf), s(&out), "--to", "mlx", "--recipe", "mixed_9_9"],
            "mixed_9_9",
        ),
        (vec![s(&hf), s(&out), "--to", "mlx", "--dtype", "f8"], "f8"),
        (
            vec![s(&hf), s(&out), "--to", "gguf", "--outtype", "q9_9"],
            "q9_9",
        ),
        (vec![s(&hf), s(&deep), "--to", "mlx"], "does not exist"),
    ];
    for (args, needle) in cases {
        let mut full = vec!["convert"];
        full.extend(args);
        fails_with(&hearth(&full), needle);
        assert!(!out.exists(), "{full:?} left output");
    }
    assert_eq!(
        std::fs::read_dir(&d).unwrap().count(),
        2,
        "only the inputs remain"
    );
    let _ = std::fs::remove_dir_all(&d);
}
