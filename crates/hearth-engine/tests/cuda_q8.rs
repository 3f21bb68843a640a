//! The CUDA backend's integer matvec kernels (8-bit activations, `--activations q8`, the binary's default)
//! on the fixtures whose weight types have them (Q8_0, Q4_0, Q4_K, Q6_K), measured against the f32 reference
//! (the CPU with f32 activations) side by side with the CPU's own q8 path. Both quantize each 32-value block
//! of activations the same way, but an activation near a rounding boundary can land on either side of it
//! (the GPU's keys and values are f16), so the GPU is not held to the CPU's q8 numbers: it is held to the
//! same distance from the reference.
//!
//! Tolerance, per decode step: ‖gpu_q8 − f32‖ ≤ 2 · ‖cpu_q8 − f32‖ + 5e-3 · ‖f32‖ (relative L2), and the same
//! argmax as the reference wherever its top two logits differ by more than 2% of the row's spread. A separate
//! test binary, because the activation mode is process-wide. Skipped without a GPU unless HEARTH_REQUIRE_CUDA
//! is set.

use std::path::Path;

use hearth_engine::models::{Logits, Model};

mod cuda_common;
use cuda_common::{have_cuda, open_gpu};

#[test]
fn gpu_q8_decode_tracks_cpu_q8() {
    if !have_cuda() {
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny");
    let mut failures = Vec::new();
    for rel in [
        "llama/model-q8_0.gguf",
        "llama/model-q4_0.gguf",
        "qwen2/model-q8_0.gguf",
        "gemma3/model-q4_0.gguf",
        "llama256/model-q4_k.gguf",
        "llama256/model-q6_k.gguf",
    ] {
        let path = root.join(rel);
        let cpu = Model::open(&path).unwrap();
        let gpu = open_gpu(&path);
        let v = cpu.config.vocab;
        let (mut sf, mut sc, mut sg) = (cpu.new_state(64), cpu.new_state(64), gpu.new_state(64));
        let (mut worst_gpu, mut worst_cpu) = (0f32, 0f32);
        let rel_l2 = |a: &[f32], b: &[f32]| {
            let num: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
            let den: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum();
            (num / den.max(1e-30)).sqrt() as f32
        };
        let arg = |r: &[f32]| (0..r.len()).max_by(|&i, &j| r[i].total_cmp(&r[j])).unwrap();
        for t in 0..12u32 {
            let tok = [(5 + 37 * t + t * t) % v as u32];
            hearth_engine::backend::cpu::set_quantized_activations(false);
            let f = cpu.forward(&mut sf, &tok, Logits::Last).unwrap().to_vec();
            hearth_engine::backend::cpu::set_quantized_activations(true);
            let a = cpu.forward(&mut sc, &tok, Logits::Last).unwrap().to_vec();
            let b = gpu.forward(&mut sg, &tok, Logits::Last).unwrap().to_vec();
            let (eg, ec) = (rel_l2(&f, &b), rel_l2(&f, &a));
            worst_gpu = worst_gpu.max(eg);
            worst_cpu = worst_cpu.max(ec);
            let mut sorted = f.clone();
            sorted.sort_by(|x, y| y.total_cmp(x));
            let clear = sorted[0] - sorted[1] > 0.02 * (sorted[0] - sorted[v - 1]);
            if eg > 2.0 * ec + 5e-3
                || (clear && arg(&f) != arg(&b))
                || b.iter().any(|x| !x.is_finite())
            {
                failures.push(format!(
                    "{}: step {t}: gpu q8 {eg:.2e} vs cpu q8 {ec:.2e} from f32",
                    path.display()
                ));
            }
        }
        eprintln!(
            "{rel:<28} relative L2 error from f32: gpu q8 {worst_gpu:.2e}, cpu q8 {worst_cpu:.2e}"
        );
        // A 24-token prefill, every row's logits: more rows than the matrix-vector kernels take, so the GPU
        // runs the half-precision tensor-core product (dqmm, or dequantize + GEMM with HEARTH_CUDA_DQMM=0).
        // Held to the decode bound with the prefill slack of tests/cuda_backend.rs (3e-2).
        let ids: Vec<u32> = (0..24u32)
            .map(|t| (11 + 29 * t + t * t) % v as u32)
            .collect();
        let (mut pf, mut pc, mut pg) = (cpu.new_state(64), cpu.new_state(64), gpu.new_state(64));
        hearth_engine::backend::cpu::set_quantized_activations(false);
        let f = cpu.forward(&mut pf, &ids, Logits::All).unwrap().to_vec();
        hearth_engine::backend::cpu::set_quantized_activations(true);
        let a = cpu.forward(&mut pc, &ids, Logits::All).unwrap().to_vec();
        let b = gpu.forward(&mut pg, &ids, Logits::All).unwrap().to_vec();
        let (mut worst_gpu, mut worst_cpu) = (0f32, 0f32);
        for (r, ((f, a), b)) in f.chunks(v).zip(a.chunks(v)).zip(b.chunks(v)).enumerate() {
            let (eg, ec) = (rel_l2(f, b), rel_l2(f, a));
            worst_gpu = worst_gpu.max(eg);
            worst_cpu = worst_cpu.max(ec);
            if eg > 2.0 * ec + 3e-2 || b.iter().any(|x| !x.is_finite()) {
                failures.push(format!(
                    "{}: prefill row {r}: gpu q8 {eg:.2e} vs cpu q8 {ec:.2e} from f32",
                    path.display()
                ));
            }
        }
        eprintln!(
            "{rel:<28} prefill, relative L2 error from f32: gpu {worst_gpu:.2e}, cpu q8 {worst_cpu:.2e}"
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
