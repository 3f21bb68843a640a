//! The CUDA backend's weight decoders (`src/backend/cuda/kernels/quant.cuh`), checked on the host: the header
//! also compiles as plain C, so `tests/cuda_host/decode_harness.c` is built with gcc once per weight type
//! and decodes random rows through `wt_deq32`, and every f32 it writes must equal
//! `tensor::quants::dequantize_row` bit for bit (NaN matching any NaN, as the GPU may not keep payloads).
//!
//! Bit-exactness is what lets a GPU run be compared with a CPU run at all: the decoded weights are then
//! identical and only the order of the accumulation differs. gcc compiles with `-ffp-contract=off`, the
//! host counterpart of the header's `__fmul_rn`/`__fadd_rn`, so a decoder that computes in a different order
//! or fuses a multiply-add shows up here. The GPU build of the same text is checked by
//! `scripts/nvrtc_check.py`.
//!
//! gcc is required: without it the test fails rather than passing without having checked anything.

use std::path::{Path, PathBuf};
use std::process::Command;

use half::{bf16, f16};
use hearth_engine::sample::Rng;
use hearth_engine::tensor::mlx::{MlxFloat, MlxMode, MlxQuant};
use hearth_engine::tensor::mlx_blocks::MlxBlocks;
use hearth_engine::tensor::quants::dequantize_row;
use hearth_engine::tensor::DType;

/// Rows per configuration; each is a few blocks (see `row_elems`).
const ROWS: usize = 4;

/// One weight type as the header selects it: its `DType` and its `-D` macros.
struct Config {
    dtype: DType,
    defines: Vec<String>,
}

/// A float or GGML type: one macro named after the type.
fn ggml(dtype: DType) -> Config {
    Config {
        dtype,
        defines: vec![format!("WT_{}", dtype.name())],
    }
}

/// An MLX type: `WT_MLX` plus its mode, bits, group size and (affine) scale dtype.
fn mlx(mode: MlxMode, bits: u8, group: usize, float: MlxFloat) -> Config {
    let quant = MlxQuant::new(mode, bits, group).expect("a format hearth accepts");
    let mode_id = match mode {
        MlxMode::Affine => 0,
        MlxMode::Mxfp4 => 1,
        MlxMode::Nvfp4 => 2,
        MlxMode::Mxfp8 => 3,
    };
    let float_id = match float {
        MlxFloat::F32 => 0,
        MlxFloat::F16 => 1,
        MlxFloat::BF16 => 2,
    };
    Config {
        dtype: DType::Mlx(MlxBlocks::new(quant, float)),
        defines: vec![
            "WT_MLX".into(),
            format!("MLX_MODE={mode_id}"),
            format!("MLX_BITS={bits}"),
            format!("MLX_GROUP={group}"),
            format!("MLX_FLOAT={float_id}"),
        ],
    }
}

/// Weights per row: a few blocks, and always whole 32-weight units (nvfp4's 16-weight groups in pairs).
fn row_elems(dtype: DType) -> usize {
    let be = dtype.block_elems();
    if be >= 128 {
        3 * be
    } else {
        256
    }
}

/// Uniform in [0, 1).
fn unit(rng: &mut Rng) -> f32 {
    (rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32
}

/// A scale-sized magnitude with random sign: up to 1, down to about 2^-14, as real scales and biases are.
fn typical(rng: &mut Rng) -> f32 {
    let shift = (rng.next_u64() % 15) as i32;
    let sign = if rng.next_u64() & 1 == 0 { 1.0 } else { -1.0 };
    sign * unit(rng) * 2f32.powi(-shift)
}

/// The bytes of a finite random value of `float`: mostly typical magnitudes rounded to the dtype, one in four
/// any finite bit pattern (subnormals and huge values included).
fn finite_float(rng: &mut Rng, float: MlxFloat) -> Vec<u8> {
    let any = rng.next_u64().is_multiple_of(4);
    let x = typical(rng);
    let bits = rng.next_u64();
    match float {
        MlxFloat::F32 => {
            let v = if any {
                // Exponent 255 is inf/NaN: clear its top bit.
                let b = bits as u32;
                f32::from_bits(if (b >> 23) & 0xff == 0xff {
                    b & !0x4000_0000
                } else {
                    b
                })
            } else {
                x
            };
            v.to_le_bytes().to_vec()
        }
        MlxFloat::F16 => {
            let v = if any {
                let b = bits as u16;
                f16::from_bits(if (b >> 10) & 0x1f == 0x1f {
                    b & !0x4000
                } else {
                    b
                })
            } else {
                f16::from_f32(x)
            };
            v.to_le_bytes().to_vec()
        }
        MlxFloat::BF16 => {
            let v = if any {
                let b = bits as u16;
                bf16::from_bits(if (b >> 7) & 0xff == 0xff {
                    b & !0x4000
                } else {
                    b
                })
            } else {
                bf16::from_f32(x)
            };
            v.to_le_bytes().to_vec()
        }
    }
}

/// Byte offsets of the f16 scale fields (d, m, dmin) of a GGML block type.
fn f16_fields(dtype: DType) -> &'static [usize] {
    match dtype {
        DType::Q4_0 | DType::Q5_0 | DType::Q8_0 => &[0],
        DType::Q4_1 | DType::Q5_1 | DType::Q4_K | DType::Q5_K => &[0, 2],
        DType::Q2_K => &[80, 82],
        DType::Q3_K => &[108],
        DType::Q6_K => &[208],
        _ => &[],
    }
}

/// Values random bits rarely hit, planted in the first blocks of each configuration: zeros, the smallest and
/// largest subnormals, the smallest normal, the largest finite value, infinities and NaNs.
const F32_EDGES: [u32; 10] = [
    0,
    0x8000_0000,
    1,
    0x007f_ffff,
    0x0080_0000,
    0x7f7f_ffff,
    0x7f80_0000,
    0xff80_0000,
    0x7fc0_0000,
    0x7f80_0001,
];
const F16_EDGES: [u16; 11] = [
    0, 0x8000, 1, 0x03ff, 0x0400, 0x7bff, 0x7c00, 0xfc00, 0x7e00, 0x7c01, 0x3c00,
];
const BF16_EDGES: [u16; 10] = [
    0, 0x8000, 1, 0x007f, 0x0080, 0x7f7f, 0x7f80, 0xff80, 0x7fc0, 0x7f81,
];
/// E8M0 scales at the ends of the range: 2^-127 (an f32 subnormal), 2^-126, 2^127, 2^0.
const E8M0_EDGES: [u8; 5] = [0, 1, 254, 127, 128];
/// E4M3 scales: zeros, the smallest subnormal, the largest subnormal and normal, the smallest normal.
const E4M3_EDGES: [u8; 6] = [0, 0x80, 1, 0x07, 0x7e, 0xfe];

/// Random block `k` of `dtype`: random code bytes (every bit pattern a decoder can meet) with finite scale
/// fields, since a NaN or infinite scale would only test NaN propagation; the first blocks take the edge
/// values above.
fn random_block(rng: &mut Rng, dtype: DType, blk: &mut [u8], k: usize) {
    for b in blk.iter_mut() {
        *b = rng.next_u64() as u8;
    }
    match dtype {
        // Plain floats keep their random bits: every f16/bf16/f32 pattern must convert exactly.
        DType::F32 => {
            if let Some(e) = F32_EDGES.get(k) {
                blk.copy_from_slice(&e.to_le_bytes());
            }
        }
        DType::F16 | DType::BF16 => {
            let edges: &[u16] = if dtype == DType::F16 {
                &F16_EDGES
            } else {
                &BF16_EDGES
            };
            if let Some(e) = edges.get(k) {
                blk.copy_from_slice(&e.to_le_bytes());
            }
        }
        DType::Mlx(m) => match m.quant.mode() {
            MlxMode::Affine => {
                let n = m.float.size();
                blk[..n].copy_from_slice(&finite_float(rng, m.float));
                blk[n..2 * n].copy_from_slice(&finite_float(rng, m.float));
            }
            // E8M0: 255 would be +inf. Mostly near 2^0, sometimes anything down to 2^-127 (an f32 subnormal).
            MlxMode::Mxfp4 | MlxMode::Mxfp8 => {
                blk[0] = if let Some(&e) = E8M0_EDGES.get(k) {
                    e
                } else if rng.next_u64().is_multiple_of(4) {
                    (rng.next_u64() % 255) as u8
                } else {
                    (117 + rng.next_u64() % 16) as u8
                };
            }
            // E4M3: 0x7F and 0xFF are NaN.
            MlxMode::Nvfp4 => {
                if let Some(&e) = E4M3_EDGES.get(k) {
                    blk[0] = e;
                } else if blk[0] & 0x7f == 0x7f {
                    blk[0] &= 0xfe;
                }
            }
        },
        _ => {
            for &off in f16_fields(dtype) {
                blk[off..off + 2].copy_from_slice(&finite_float(rng, MlxFloat::F16));
            }
        }
    }
}

/// The header's block size for `dtype`: as `DType` says, except plain floats decode in blocks of 32.
fn header_layout(dtype: DType) -> (usize, usize) {
    match dtype.block_elems() {
        1 => (32, 32 * dtype.block_bytes()),
        be => (be, dtype.block_bytes()),
    }
}

fn kernels_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src/backend/cuda/kernels")
}

fn harness_source() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cuda_host/decode_harness.c")
}

/// A fresh scratch folder for one configuration, unique to this process.
fn scratch_dir(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("hearth-cuda-decode-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Compiles the harness for `cfg` and runs it on `rows`; returns its stdout and decoded values.
fn run_harness(cfg: &Config, dir: &Path, rows: &[u8], units: usize) -> (String, Vec<f32>) {
    let exe = dir.join("decode_harness");
    let mut gcc = Command::new("gcc");
    gcc.args([
        "-std=c11",
        "-O2",
        "-ffp-contract=off",
        "-Wall",
        "-Wextra",
        "-Werror",
    ])
    .arg("-I")
    .arg(kernels_dir())
    .args(cfg.defines.iter().map(|d| format!("-D{d}")))
    .arg(harness_source())
    .arg("-o")
    .arg(&exe);
    let out = gcc.output().unwrap_or_else(|e| {
        panic!(
            "cannot run gcc ({e}): this test compiles quant.cuh as C on the host and needs gcc on PATH"
        )
    });
    assert!(
        out.status.success(),
        "gcc failed for {}:\n{}",
        cfg.dtype,
        String::from_utf8_lossy(&out.stderr)
    );

    let (input, output) = (dir.join("rows.bin"), dir.join("decoded.bin"));
    std::fs::write(&input, rows).unwrap();
    let out = Command::new(&exe)
        .arg(&input)
        .arg(&output)
        .arg(units.to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "harness failed for {}:\n{}",
        cfg.dtype,
        String::from_utf8_lossy(&out.stderr)
    );
    let values = std::fs::read(&output)
        .unwrap()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    (String::from_utf8(out.stdout).unwrap(), values)
}

/// Decodes random rows of each configuration on the host and compares them with the reference; returns a
/// description of every configuration that differed.
fn check(configs: &[Config], seed: u64) -> Vec<String> {
    let mut rng = Rng::seed_from_u64(seed);
    let mut failures = Vec::new();
    for cfg in configs {
        let dtype = cfg.dtype;
        let elems = row_elems(dtype);
        let row_bytes = dtype.bytes_for(elems).unwrap();
        let mut rows = vec![0u8; ROWS * row_bytes];
        for (k, blk) in rows.chunks_exact_mut(dtype.block_bytes()).enumerate() {
            random_block(&mut rng, dtype, blk, k);
        }

        let name = dtype.name().to_ascii_lowercase();
        let dir = scratch_dir(&name);
        let (layout, got) = run_harness(cfg, &dir, &rows, elems / 32);
        let (be, bb) = header_layout(dtype);
        assert_eq!(
            layout.trim(),
            format!("{be} {bb} {ROWS}"),
            "{dtype}: WT_BLOCK_ELEMS, WT_BLOCK_BYTES and the row count"
        );
        assert_eq!(got.len(), ROWS * elems, "{dtype}: decoded values");

        let mut want = vec![0f32; elems];
        let mut bad = Vec::new();
        for (r, (src, got)) in rows
            .chunks_exact(row_bytes)
            .zip(got.chunks_exact(elems))
            .enumerate()
        {
            dequantize_row(dtype, src, &mut want);
            for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
                if g.to_bits() != w.to_bits() && !(g.is_nan() && w.is_nan()) {
                    bad.push(format!(
                        "row {r} weight {i}: got {g:e} ({:#010x}), want {w:e} ({:#010x})",
                        g.to_bits(),
                        w.to_bits()
                    ));
                }
            }
        }
        if bad.is_empty() {
            std::fs::remove_dir_all(&dir).ok();
        } else {
            let shown = bad.iter().take(8).cloned().collect::<Vec<_>>().join("\n  ");
            failures.push(format!(
                "{dtype} ({}): {} of {} values differ; files in {}\n  {shown}",
                cfg.defines.join(" "),
                bad.len(),
                ROWS * elems,
                dir.display()
            ));
        }
    }
    failures
}

fn assert_exact(configs: &[Config], seed: u64) {
    let failures = check(configs, seed);
    assert!(
        failures.is_empty(),
        "quant.cuh decodes differently from dequantize_row:\n{}",
        failures.join("\n")
    );
}

#[test]
fn float_types_decode_exactly() {
    assert_exact(
        &[DType::F32, DType::F16, DType::BF16].map(ggml),
        0x00f1_0a75,
    );
}

#[test]
fn legacy_types_decode_exactly() {
    let types = [
        DType::Q4_0,
        DType::Q4_1,
        DType::Q5_0,
        DType::Q5_1,
        DType::Q8_0,
    ];
    assert_exact(&types.map(ggml), 0x1e6a_c400);
}

#[test]
fn k_quants_decode_exactly() {
    let types = [
        DType::Q2_K,
        DType::Q3_K,
        DType::Q4_K,
        DType::Q5_K,
        DType::Q6_K,
    ];
    assert_exact(&types.map(ggml), 0x000c_9a47);
}

/// Every bit width hearth accepts, each group size and each scale dtype several times, spread over 14
/// configurations rather than the 63 of the full product (each costs a gcc run). The bitstream widths 3, 5
/// and 6 appear with every group size, where a unit starts mid-block.
#[test]
fn mlx_affine_decodes_exactly() {
    use MlxFloat::{BF16, F16, F32};
    let set = [
        (1, 32, F16),
        (2, 32, F32),
        (2, 128, BF16),
        (3, 32, BF16),
        (3, 64, F16),
        (3, 128, F32),
        (4, 64, BF16),
        (4, 128, F32),
        (5, 32, F16),
        (5, 64, F32),
        (5, 128, BF16),
        (6, 64, F32),
        (6, 128, F16),
        (8, 64, BF16),
        (8, 32, F32),
    ];
    let configs: Vec<Config> = set
        .iter()
        .map(|&(bits, group, float)| mlx(MlxMode::Affine, bits, group, float))
        .collect();
    assert_exact(&configs, 0x0a_ff1e);
}

#[test]
fn mlx_fp_formats_decode_exactly() {
    let configs = [
        mlx(MlxMode::Mxfp4, 4, 32, MlxFloat::F32),
        mlx(MlxMode::Nvfp4, 4, 16, MlxFloat::F32),
        mlx(MlxMode::Mxfp8, 8, 32, MlxFloat::F32),
    ];
    assert_exact(&configs, 0x0f_4f8e);
}
