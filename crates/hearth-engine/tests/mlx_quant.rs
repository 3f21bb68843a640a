//! hearth's MLX quantizer and dequantizer against mlx itself: every fixture under tests/fixtures/mlx (written
//! by scripts/make_mlx_fixtures.py with `mlx.core`) must be reproduced bit for bit, plus round-trip error
//! bounds and refusals of bad formats and buffers.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use hearth_engine::tensor::mlx::{
    dequantize_row, quantize_row, MlxFloat, MlxMode, MlxQuant, MlxQuantError, FP4_E2M1_VALUES,
};

/// One tensor of a fixture: its safetensors dtype, shape and raw little-endian bytes.
struct Raw {
    dtype: String,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

/// A fixture file: its tensors and its string metadata.
struct Fixture {
    name: String,
    tensors: HashMap<String, Raw>,
    meta: HashMap<String, String>,
}

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/mlx")
}

/// Reads a safetensors file (8-byte header length, JSON header, data) without the loader, which only admits
/// the float and GGML types hearth runs, not the u32/u8 tensors mlx writes.
fn read_fixture(path: &Path) -> Fixture {
    let data = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(data[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&data[8..8 + n]).unwrap();
    let body = &data[8 + n..];
    let mut tensors = HashMap::new();
    let mut meta = HashMap::new();
    for (k, v) in header.as_object().unwrap() {
        if k == "__metadata__" {
            for (mk, mv) in v.as_object().unwrap() {
                meta.insert(mk.clone(), mv.as_str().unwrap().to_string());
            }
            continue;
        }
        let off: Vec<usize> = v["data_offsets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as usize)
            .collect();
        let shape = v["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as usize)
            .collect();
        let raw = Raw {
            dtype: v["dtype"].as_str().unwrap().to_string(),
            shape,
            bytes: body[off[0]..off[1]].to_vec(),
        };
        tensors.insert(k.clone(), raw);
    }
    Fixture {
        name: path.file_name().unwrap().to_string_lossy().into_owned(),
        tensors,
        meta,
    }
}

fn all_fixtures() -> Vec<Fixture> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(fixtures_dir())
        .expect("tests/fixtures/mlx exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    paths.sort();
    paths.iter().map(|p| read_fixture(p)).collect()
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

impl Fixture {
    fn quant(&self) -> MlxQuant {
        let mode = MlxMode::from_name(&self.meta["mode"]).unwrap();
        MlxQuant::new(
            mode,
            self.meta["bits"].parse().unwrap(),
            self.meta["group_size"].parse().unwrap(),
        )
        .unwrap()
    }

    fn float(&self) -> MlxFloat {
        match self.meta["dtype"].as_str() {
            "f32" => MlxFloat::F32,
            "f16" => MlxFloat::F16,
            "bf16" => MlxFloat::BF16,
            d => panic!("{}: unknown dtype {d}", self.name),
        }
    }

    fn t(&self, name: &str) -> &Raw {
        self.tensors
            .get(name)
            .unwrap_or_else(|| panic!("{}: no tensor {name}", self.name))
    }
}

/// The number of fixtures checked, so a missing or empty fixture folder fails instead of passing vacuously.
const EXPECTED_FIXTURES: usize = 72;

#[test]
fn fixtures_cover_every_mode_bits_and_group_size() {
    let fx = all_fixtures();
    assert_eq!(fx.len(), EXPECTED_FIXTURES);
    let mut seen: Vec<(MlxMode, u8, usize)> = fx
        .iter()
        .map(|f| {
            let q = f.quant();
            (q.mode(), q.bits(), q.group_size())
        })
        .collect();
    seen.sort_by_key(|k| format!("{k:?}"));
    seen.dedup();
    // affine: 7 bit widths x 3 group sizes; plus mxfp4, nvfp4, mxfp8.
    assert_eq!(seen.len(), 7 * 3 + 3, "{seen:?}");
}

#[test]
fn quantize_row_matches_mlx_bit_for_bit() {
    for f in all_fixtures() {
        let (q, float) = (f.quant(), f.float());
        let input = f.t("input");
        assert_eq!(input.dtype, "F32");
        let (rows, cols) = (input.shape[0], input.shape[1]);
        assert!(rows % 2 == 1, "{}: fixtures keep an odd row count", f.name);
        let x = f32s(&input.bytes);
        let pw = 4 * q.packed_words_per_row(cols).unwrap();
        let sb = q.scale_bytes_per_row(cols, float).unwrap();
        let bb = q.bias_bytes_per_row(cols, float).unwrap();
        assert_eq!(f.t("packed").bytes.len(), rows * pw, "{}", f.name);
        assert_eq!(f.t("scales").bytes.len(), rows * sb, "{}", f.name);
        for r in 0..rows {
            let mut packed = vec![0u8; pw];
            let mut scales = vec![0u8; sb];
            let mut biases = vec![0u8; bb];
            let b = if q.has_biases() {
                Some(&mut biases[..])
            } else {
                None
            };
            quantize_row(
                &q,
                float,
                &x[r * cols..(r + 1) * cols],
                &mut packed,
                &mut scales,
                b,
            )
            .unwrap();
            assert_eq!(
                packed,
                f.t("packed").bytes[r * pw..(r + 1) * pw],
                "{} row {r}: packed",
                f.name
            );
            assert_eq!(
                scales,
                f.t("scales").bytes[r * sb..(r + 1) * sb],
                "{} row {r}: scales",
                f.name
            );
            if q.has_biases() {
                assert_eq!(
                    biases,
                    f.t("biases").bytes[r * bb..(r + 1) * bb],
                    "{} row {r}: biases",
                    f.name
                );
            }
        }
    }
}

#[test]
fn dequantize_row_matches_mlx_bit_for_bit() {
    for f in all_fixtures() {
        let (q, float) = (f.quant(), f.float());
        let cols = f.t("input").shape[1];
        let rows = f.t("input").shape[0];
        let want = f32s(&f.t("dequant").bytes);
        let pw = 4 * q.packed_words_per_row(cols).unwrap();
        let sb = q.scale_bytes_per_row(cols, float).unwrap();
        let bb = q.bias_bytes_per_row(cols, float).unwrap();
        for r in 0..rows {
            let mut out = vec![0f32; cols];
            let packed = &f.t("packed").bytes[r * pw..(r + 1) * pw];
            let scales = &f.t("scales").bytes[r * sb..(r + 1) * sb];
            let biases = q
                .has_biases()
                .then(|| &f.t("biases").bytes[r * bb..(r + 1) * bb]);
            dequantize_row(&q, float, packed, scales, biases, &mut out).unwrap();
            for (c, (&got, &exp)) in out.iter().zip(&want[r * cols..(r + 1) * cols]).enumerate() {
                assert!(
                    got.to_bits() == exp.to_bits() || (got.is_nan() && exp.is_nan()),
                    "{} row {r} col {c}: hearth {got:e} mlx {exp:e}",
                    f.name
                );
            }
        }
    }
}

/// A small deterministic generator (xorshift), so the round-trip inputs need no dependency.
fn random_row(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
        })
        .collect()
}

/// mlx's affine grid for a group is `bias + k * scale` for k in 0..2^bits; its scale is re-derived so that
/// the larger-magnitude edge lies on the grid, so the far edge may fall outside and clip. Every dequantized
/// value must still be the grid point nearest its input.
#[test]
fn affine_round_trip_lands_on_the_nearest_grid_point() {
    for bits in [1u8, 2, 3, 4, 5, 6, 8] {
        for gs in [32usize, 64, 128] {
            let q = MlxQuant::affine(bits, gs).unwrap();
            let cols = 384;
            let x = random_row(bits as u64 * 1000 + gs as u64, cols);
            let mut packed = vec![0u8; 4 * q.packed_words_per_row(cols).unwrap()];
            let mut scales = vec![0u8; q.scale_bytes_per_row(cols, MlxFloat::F32).unwrap()];
            let mut biases = vec![0u8; scales.len()];
            quantize_row(
                &q,
                MlxFloat::F32,
                &x,
                &mut packed,
                &mut scales,
                Some(&mut biases),
            )
            .unwrap();
            let mut out = vec![0f32; cols];
            dequantize_row(&q, MlxFloat::F32, &packed, &scales, Some(&biases), &mut out).unwrap();
            let scales = f32s(&scales);
            let biases = f32s(&biases);
            for g in 0..cols / gs {
                let (s, b) = (scales[g], biases[g]);
                for i in g * gs..(g + 1) * gs {
                    let best = (0..1u32 << bits)
                        .map(|k| (b + k as f32 * s - x[i]).abs())
                        .fold(f32::MAX, f32::min);
                    let err = (out[i] - x[i]).abs();
                    assert!(
                        err <= best + 1e-6,
                        "bits {bits} gs {gs} [{i}]: {} for {} (nearest is {best} away)",
                        out[i],
                        x[i]
                    );
                    // The grid spans the group: no value is more than a whole range from its input.
                    assert!(
                        err <= s.abs() * (1u32 << bits) as f32,
                        "bits {bits} gs {gs} [{i}]"
                    );
                }
            }
        }
    }
}

#[test]
fn fp_modes_round_trip_to_representable_values() {
    for q in [
        MlxQuant::with_defaults(MlxMode::Mxfp4, None, None).unwrap(),
        MlxQuant::with_defaults(MlxMode::Nvfp4, None, None).unwrap(),
        MlxQuant::with_defaults(MlxMode::Mxfp8, None, None).unwrap(),
    ] {
        let cols = 96;
        let x = random_row(q.group_size() as u64 + q.bits() as u64, cols);
        let mut packed = vec![0u8; 4 * q.packed_words_per_row(cols).unwrap()];
        let mut scales = vec![0u8; q.scale_bytes_per_row(cols, MlxFloat::F32).unwrap()];
        quantize_row(&q, MlxFloat::F32, &x, &mut packed, &mut scales, None).unwrap();
        let mut out = vec![0f32; cols];
        dequantize_row(&q, MlxFloat::F32, &packed, &scales, None, &mut out).unwrap();
        // Requantizing a dequantized row must give the same codes (the values are on the grid).
        let mut packed2 = vec![0u8; packed.len()];
        let mut scales2 = vec![0u8; scales.len()];
        quantize_row(&q, MlxFloat::F32, &out, &mut packed2, &mut scales2, None).unwrap();
        let mut out2 = vec![0f32; cols];
        dequantize_row(&q, MlxFloat::F32, &packed2, &scales2, None, &mut out2).unwrap();
        assert_eq!(out, out2, "{:?}", q.mode());
        // Relative error bound of the element format against the group's absolute maximum.
        let rel = if q.bits() == 4 { 0.5 / 1.5 } else { 1.0 / 16.0 };
        for g in 0..cols / q.group_size() {
            let r = g * q.group_size()..(g + 1) * q.group_size();
            let amax = x[r.clone()].iter().fold(0f32, |m, v| m.max(v.abs()));
            for i in r {
                assert!(
                    (out[i] - x[i]).abs() <= amax * rel,
                    "{:?} [{i}]: {} vs {}",
                    q.mode(),
                    out[i],
                    x[i]
                );
            }
        }
    }
    assert_eq!(FP4_E2M1_VALUES[7], 6.0);
}

#[test]
fn bad_formats_are_refused_with_reasons() {
    for bits in [0u8, 7, 9, 16] {
        assert!(
            matches!(MlxQuant::affine(bits, 64), Err(MlxQuantError::Bits { bits: b, .. }) if b == bits)
        );
    }
    for gs in [0usize, 16, 48, 256] {
        assert!(matches!(
            MlxQuant::affine(4, gs),
            Err(MlxQuantError::GroupSize { .. })
        ));
    }
    assert!(matches!(
        MlxQuant::new(MlxMode::Mxfp4, 8, 32),
        Err(MlxQuantError::Bits { .. })
    ));
    assert!(matches!(
        MlxQuant::new(MlxMode::Mxfp4, 4, 64),
        Err(MlxQuantError::GroupSize { .. })
    ));
    assert!(matches!(
        MlxQuant::new(MlxMode::Nvfp4, 4, 32),
        Err(MlxQuantError::GroupSize { .. })
    ));
    assert!(matches!(
        MlxQuant::new(MlxMode::Mxfp8, 4, 32),
        Err(MlxQuantError::Bits { .. })
    ));
    assert!(matches!(
        MlxMode::from_name("int4"),
        Err(MlxQuantError::UnknownMode(_))
    ));
    let msg = MlxQuant::affine(7, 64).unwrap_err().to_string();
    assert!(
        msg.contains("7 bits") && msg.contains("1, 2, 3, 4, 5, 6, 8"),
        "{msg}"
    );
}

#[test]
fn bad_rows_and_buffers_are_errors_not_panics() {
    let q = MlxQuant::affine(3, 32).unwrap();
    // 80 values: not whole groups of 32.
    assert!(matches!(
        q.packed_words_per_row(80),
        Err(MlxQuantError::RowLength { .. })
    ));
    let x = vec![0.5f32; 64];
    let mut packed = vec![0u8; 4 * q.packed_words_per_row(64).unwrap()];
    assert_eq!(packed.len(), 24); // 64 codes x 3 bits = 192 bits = 6 words
    let mut scales = vec![0u8; q.scale_bytes_per_row(64, MlxFloat::F16).unwrap()];
    let mut biases = vec![0u8; scales.len()];
    assert_eq!(scales.len(), 4);
    // Wrong lengths of each buffer.
    let mut short = vec![0u8; 23];
    let e = quantize_row(
        &q,
        MlxFloat::F16,
        &x,
        &mut short,
        &mut scales,
        Some(&mut biases),
    )
    .unwrap_err();
    assert_eq!(
        e,
        MlxQuantError::BufferLength {
            what: "packed codes",
            expected: 24,
            got: 23
        }
    );
    let e = quantize_row(
        &q,
        MlxFloat::F32,
        &x,
        &mut packed,
        &mut scales,
        Some(&mut biases),
    )
    .unwrap_err();
    assert!(
        matches!(
            e,
            MlxQuantError::BufferLength {
                what: "scales",
                expected: 8,
                got: 4
            }
        ),
        "{e:?}"
    );
    let e = quantize_row(&q, MlxFloat::F16, &x, &mut packed, &mut scales, None).unwrap_err();
    assert_eq!(e, MlxQuantError::MissingBiases);
    let mut out = vec![0f32; 65];
    assert!(dequantize_row(&q, MlxFloat::F16, &packed, &scales, Some(&biases), &mut out).is_err());
    // Biases given to a mode without them.
    let m = MlxQuant::with_defaults(MlxMode::Mxfp4, None, None).unwrap();
    let mut out = vec![0f32; 32];
    let e = dequantize_row(
        &m,
        MlxFloat::F32,
        &[0u8; 16],
        &[127u8],
        Some(&[0u8]),
        &mut out,
    )
    .unwrap_err();
    assert_eq!(e, MlxQuantError::UnexpectedBiases("mxfp4"));
    // Empty inputs are a valid (empty) row.
    dequantize_row(&m, MlxFloat::F32, &[], &[], None, &mut []).unwrap();
    // The good call works after all the refusals.
    quantize_row(
        &q,
        MlxFloat::F16,
        &x,
        &mut packed,
        &mut scales,
        Some(&mut biases),
    )
    .unwrap();
}

#[test]
fn size_helpers_match_mlx_shapes() {
    // mx.quantize of a [n, 256] weight: packed [n, 256 * bits / 32], scales and biases [n, 256 / group].
    for bits in [1u8, 2, 3, 4, 5, 6, 8] {
        let q = MlxQuant::affine(bits, 64).unwrap();
        assert_eq!(q.packed_words_per_row(256).unwrap(), 8 * bits as usize);
        assert_eq!(q.groups_per_row(256).unwrap(), 4);
        assert_eq!(q.scale_bytes_per_row(256, MlxFloat::BF16).unwrap(), 8);
        assert_eq!(q.bias_bytes_per_row(256, MlxFloat::F32).unwrap(), 16);
    }
    let nv = MlxQuant::with_defaults(MlxMode::Nvfp4, None, None).unwrap();
    assert_eq!((nv.bits(), nv.group_size()), (4, 16));
    assert_eq!(nv.scale_bytes_per_row(256, MlxFloat::F32).unwrap(), 16);
    assert_eq!(nv.bias_bytes_per_row(256, MlxFloat::F32).unwrap(), 0);
}
