//! `hearth convert X.gguf DST --to mlx --keep-quant`: GGUF weights whose GGML type is an MLX affine format
//! (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K) are carried over as groups of 32 without a second rounding, so
//! hearth's logits on the MLX folder equal its logits on the GGUF (within float summation order: the kernels
//! differ, the weights do not). Types MLX cannot hold (Q6_K's 16-weight scales) stay float here.

use std::path::{Path, PathBuf};

use hearth_engine::convert::to_hf::gguf_to_mlx;
use hearth_engine::convert::to_mlx::MlxOptions;
use hearth_engine::models::{Logits, Model};
use hearth_engine::tensor::DType;

fn tiny(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/tiny")
        .join(rel)
}

fn logits(path: &Path, tokens: &[u32]) -> Vec<f32> {
    let m = Model::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut st = m.new_state(tokens.len());
    m.forward(&mut st, tokens, Logits::All).unwrap().to_vec()
}

#[test]
fn carried_blocks_give_the_gguf_logits() {
    let tokens: Vec<u32> = (0..24).map(|i| (i * 37 + 5) % 300).collect();
    let cases = [
        ("llama", "q4_0", 4),
        ("llama", "q4_1", 4),
        ("mistral", "q5_0", 5),
        ("qwen2", "q5_1", 5),
        ("gemma3", "q8_0", 8),
        ("llama256", "q4_k", 4),
        ("llama256", "q5_k", 5),
    ];
    let d = std::env::temp_dir().join(format!("hearth-keep-quant-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    for (arch, ty, bits) in cases {
        let gguf = tiny(&format!("{arch}/model-{ty}.gguf"));
        let out = d.join(format!("{arch}-{ty}"));
        let opts = MlxOptions {
            quantize: false,
            keep_quant: true,
            ..MlxOptions::default()
        };
        gguf_to_mlx(&gguf, &out, &opts, false, &mut |_, _| {}).unwrap();
        let m = Model::open(&out).unwrap();
        let carried: Vec<_> = m
            .weights
            .tensors
            .values()
            .filter_map(|t| match t.dtype {
                DType::Mlx(b) => Some(b),
                _ => None,
            })
            .collect();
        assert!(!carried.is_empty(), "{arch} {ty}: nothing carried");
        // Every matrix stored as `ty` arrives as `bits`-bit groups of 32 (K-quants can share a file with
        // Q6_K/Q8_0 matrices, which arrive float or 8-bit).
        assert!(
            carried.iter().any(|b| b.quant.bits() == bits),
            "{arch} {ty}: {carried:?}"
        );
        assert!(carried.iter().all(|b| b.quant.group_size() == 32));
        let vocab = m.config.vocab as u32;
        let toks: Vec<u32> = tokens.iter().map(|t| t % vocab).collect();
        let (a, b) = (logits(&gguf, &toks), logits(&out, &toks));
        let worst = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        eprintln!(
            "{arch} {ty}: {} MLX tensors, max logit difference {worst:e}",
            carried.len()
        );
        assert!(worst <= 1e-5, "{arch} {ty}: {worst}");
    }
    let _ = std::fs::remove_dir_all(&d);
}
