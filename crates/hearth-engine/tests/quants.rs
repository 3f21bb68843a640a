//! Dequantization equals the Python `gguf` package bit for bit, for every weight type.
//!
//! Fixtures: `tests/fixtures/quants/TYPE.bin` (random blocks) and `TYPE.f32` (what
//! `gguf.quants.dequantize` made of them), written by `scripts/make_quant_fixtures.py`.

use std::path::PathBuf;

use hearth_engine::tensor::dtype::ALL_DTYPES;
use hearth_engine::tensor::quants::{dequantize_row, f16_to_f32};
use hearth_engine::tensor::DType;

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/quants")
}

fn read(path: &PathBuf) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (regenerate with scripts/make_quant_fixtures.py)",
            path.display()
        )
    })
}

/// Equal bits, or both NaN (a NaN's payload is still compared: numpy keeps it, so must we).
fn same(a: f32, b: f32) -> bool {
    a.to_bits() == b.to_bits()
}

fn check_fixture(dtype: DType) {
    let dir = fixture_dir();
    let raw = read(&dir.join(format!("{dtype}.bin")));
    let want: Vec<f32> = read(&dir.join(format!("{dtype}.f32")))
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let (be, bb) = (dtype.block_elems(), dtype.block_bytes());
    assert_eq!(
        raw.len() / bb * be,
        want.len(),
        "{dtype}: fixture sizes disagree"
    );
    assert!(!want.is_empty());

    // The whole fixture as one row.
    let mut got = vec![0f32; want.len()];
    dequantize_row(dtype, &raw, &mut got);
    let mut bad = 0;
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        if !same(*g, *w) {
            if bad < 8 {
                eprintln!(
                    "{dtype}[{i}] (block {}): got {g:e} ({:#010x}) want {w:e} ({:#010x})",
                    i / be,
                    g.to_bits(),
                    w.to_bits()
                );
            }
            bad += 1;
        }
    }
    assert_eq!(
        bad,
        0,
        "{dtype}: {bad} of {} values differ from gguf.quants.dequantize",
        want.len()
    );

    // Block by block (rows of one block) gives the same values.
    for (b, (blk, w)) in raw.chunks_exact(bb).zip(want.chunks_exact(be)).enumerate() {
        let mut one = vec![0f32; be];
        dequantize_row(dtype, blk, &mut one);
        assert!(
            one.iter().zip(w).all(|(a, b)| same(*a, *b)),
            "{dtype}: block {b} alone differs"
        );
    }
}

macro_rules! fixture_tests {
    ($($name:ident => $dt:expr),* $(,)?) => {$(
        #[test]
        fn $name() {
            check_fixture($dt);
        }
    )*};
}

fixture_tests! {
    f32_matches_gguf => DType::F32,
    f16_matches_gguf => DType::F16,
    bf16_matches_gguf => DType::BF16,
    q4_0_matches_gguf => DType::Q4_0,
    q4_1_matches_gguf => DType::Q4_1,
    q5_0_matches_gguf => DType::Q5_0,
    q5_1_matches_gguf => DType::Q5_1,
    q8_0_matches_gguf => DType::Q8_0,
    q2_k_matches_gguf => DType::Q2_K,
    q3_k_matches_gguf => DType::Q3_K,
    q4_k_matches_gguf => DType::Q4_K,
    q5_k_matches_gguf => DType::Q5_K,
    q6_k_matches_gguf => DType::Q6_K,
}

#[test]
fn every_dtype_has_a_fixture() {
    for dt in ALL_DTYPES {
        assert!(
            fixture_dir().join(format!("{dt}.bin")).exists(),
            "no fixture for {dt}"
        );
    }
}

#[test]
fn f16_conversion_is_exact_for_every_finite_value() {
    for h in 0u16..=u16::MAX {
        let want = half::f16::from_bits(h);
        if want.is_nan() {
            // Payload kept, not quieted (numpy's software conversion does the same).
            let got = f16_to_f32(h).to_bits();
            assert_eq!(
                got,
                ((h as u32 & 0x8000) << 16) | 0x7f80_0000 | ((h as u32 & 0x3ff) << 13)
            );
        } else {
            assert_eq!(
                f16_to_f32(h).to_bits(),
                want.to_f32().to_bits(),
                "f16 bits {h:#06x}"
            );
        }
    }
}
