//! hearth's quantizers against their references.
//!
//! - F16, BF16, Q8_0, Q5_0, Q4_0, Q4_1: the bytes equal `gguf.quants.quantize` of the `gguf` package exactly
//!   (fixtures `tests/fixtures/quants/quantize/`, made by `scripts/make_quant_fixtures.py --quantize`).
//! - Q4_K, Q6_K: the `gguf` package has no quantizer for them, so llama.cpp is the reference: it quantized the
//!   tiny F16 model `tests/fixtures/tiny/llama256/model-f16.gguf` (`scripts/make_kquant_fixtures.py`), and
//!   hearth quantizes the same weights. Every block must be byte-identical to llama.cpp's (measured: all
//!   blocks of all 33 K-quant tensors are), and the RMS round-trip error is printed beside llama.cpp's. Both
//!   follow the same reference algorithm in the same f32 order; should a future llama.cpp build fuse
//!   multiply-adds differently, the printed error ratio shows whether a mismatch is a tie or a real bug.

use std::path::PathBuf;

use hearth_engine::loader::gguf::GgufFile;
use hearth_engine::tensor::quants::dequantize_row;
use hearth_engine::tensor::quants::quantize::quantize_row;
use hearth_engine::tensor::{DType, Tensor};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn read(path: &PathBuf) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn check_exact(dtype: DType) {
    let dir = fixtures().join("quants/quantize");
    let x: Vec<f32> = read(&dir.join("input.f32"))
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let want = read(&dir.join(format!("{dtype}.bin")));
    let mut got = vec![0u8; dtype.bytes_for(x.len()).unwrap()];
    quantize_row(dtype, &x, &mut got);
    assert_eq!(got.len(), want.len(), "{dtype}: size");
    let bb = dtype.block_bytes();
    let bad: Vec<usize> = got
        .chunks(bb)
        .zip(want.chunks(bb))
        .enumerate()
        .filter(|(_, (a, b))| a != b)
        .map(|(i, _)| i)
        .collect();
    if let Some(&b) = bad.first() {
        panic!(
            "{dtype}: {} of {} blocks differ from gguf.quants.quantize; first is block {b}:\n got  {:02x?}\n want {:02x?}\n input {:?}",
            bad.len(),
            got.len() / bb,
            &got[b * bb..(b + 1) * bb],
            &want[b * bb..(b + 1) * bb],
            &x[b * dtype.block_elems()..(b + 1) * dtype.block_elems()],
        );
    }
}

#[test]
fn f16_matches_gguf_quantize() {
    check_exact(DType::F16);
}

#[test]
fn bf16_matches_gguf_quantize() {
    check_exact(DType::BF16);
}

#[test]
fn q8_0_matches_gguf_quantize() {
    check_exact(DType::Q8_0);
}

#[test]
fn q5_0_matches_gguf_quantize() {
    check_exact(DType::Q5_0);
}

#[test]
fn q4_0_matches_gguf_quantize() {
    check_exact(DType::Q4_0);
}

#[test]
fn q4_1_matches_gguf_quantize() {
    check_exact(DType::Q4_1);
}

fn sq_err(src: &[f32], dtype: DType, q: &[u8]) -> f64 {
    let mut back = vec![0f32; src.len()];
    dequantize_row(dtype, q, &mut back);
    src.iter()
        .zip(&back)
        .map(|(a, b)| ((a - b) as f64).powi(2))
        .sum()
}

/// Every Q4_K / Q6_K tensor of a llama.cpp-quantized file against hearth's quantization of the same F16 source.
fn check_against_llama_cpp(file: &str) -> usize {
    let src = GgufFile::open(&fixtures().join("tiny/llama256/model-f16.gguf")).unwrap();
    let theirs = GgufFile::open(&fixtures().join("quants/llama_cpp").join(file)).unwrap();
    let mut checked = 0;
    for t in &theirs.tensors {
        if !matches!(t.dtype, DType::Q4_K | DType::Q6_K) {
            continue;
        }
        let s: &Tensor = src.tensors.iter().find(|s| s.name == t.name).unwrap();
        assert_eq!(s.shape, t.shape, "{}", t.name);
        let x = s.to_f32();
        let mut mine = vec![0u8; t.bytes().len()];
        let (cols, rb) = (t.cols(), t.row_bytes());
        for (r, out) in mine.chunks_mut(rb).enumerate() {
            quantize_row(t.dtype, &x[r * cols..(r + 1) * cols], out);
        }
        let e_mine = (sq_err(&x, t.dtype, &mine) / x.len() as f64).sqrt();
        let e_theirs = (sq_err(&x, t.dtype, t.bytes()) / x.len() as f64).sqrt();
        let bb = t.dtype.block_bytes();
        let same = mine
            .chunks(bb)
            .zip(t.bytes().chunks(bb))
            .filter(|(a, b)| a == b)
            .count();
        let blocks = mine.len() / bb;
        eprintln!(
            "{file} {} {}: RMS error hearth {e_mine:.6e}, llama.cpp {e_theirs:.6e} (ratio {:.4}); {same}/{blocks} blocks identical",
            t.name,
            t.dtype,
            e_mine / e_theirs
        );
        assert_eq!(
            same,
            blocks,
            "{} {}: only {same} of {blocks} blocks equal llama.cpp's (RMS error ratio {})",
            t.name,
            t.dtype,
            e_mine / e_theirs
        );
        checked += 1;
    }
    checked
}

#[test]
fn q4_k_m_tensors_match_llama_cpp() {
    let n = check_against_llama_cpp("llama256-q4_k_m.gguf");
    assert!(n >= 10, "only {n} K-quant tensors checked");
}

#[test]
fn q6_k_tensors_match_llama_cpp() {
    let n = check_against_llama_cpp("llama256-q6_k.gguf");
    assert!(n >= 10, "only {n} K-quant tensors checked");
}
