//! The CPU kernels of every instruction-set level this CPU has (scalar, AVX2, AVX-512) against the scalar
//! references, and each level's batch invariance.
//!
//! Tolerance for a dot product of weights `w` (dequantized by the bit-exact reference) with `x`:
//! `|fast - reference| <= 1e-4 * sum(|w_i * x_i|) + 1e-6`. The kernels decode the same f32 weights as the
//! reference; only the summation order differs.

use std::path::PathBuf;
use std::sync::Arc;

use hearth_engine::backend::cpu::features::Level;
use hearth_engine::backend::cpu::levels::LevelKernels;
use hearth_engine::backend::cpu::{dot_scalar, kernel_name, matmul};
use hearth_engine::tensor::dtype::ALL_DTYPES;
use hearth_engine::tensor::quants::dequantize_row;
use hearth_engine::tensor::{DType, Storage, Tensor};

/// splitmix64: a small, seeded generator (no dependency needed).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in [lo, hi).
    fn f32(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * ((self.next() >> 40) as f32 / (1u64 << 24) as f32)
    }
    fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.f32(-1.0, 1.0)).collect()
    }
}

/// Byte offsets of the f16 scale fields in a block of each type.
fn scale_offsets(dtype: DType) -> &'static [usize] {
    match dtype {
        DType::Q4_0 | DType::Q5_0 | DType::Q8_0 => &[0],
        DType::Q4_1 | DType::Q5_1 | DType::Q4_K | DType::Q5_K => &[0, 2],
        DType::Q2_K => &[80, 82],
        DType::Q3_K => &[108],
        DType::Q6_K => &[208],
        // Only ALL_DTYPES reach here; MLX blocks have their own tests (tests/mlx_kernels.rs).
        DType::F32 | DType::F16 | DType::BF16 | DType::Mlx(_) => &[],
    }
}

/// `n` random weights of `dtype` as row bytes: random quant bits with finite f16 scales in [-2, 2], or
/// random values in [-2, 2] for the float types.
fn random_row(rng: &mut Rng, dtype: DType, n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(dtype.bytes_for(n).unwrap());
    match dtype {
        DType::F32 => (0..n).for_each(|_| out.extend(rng.f32(-2.0, 2.0).to_le_bytes())),
        DType::F16 => {
            (0..n).for_each(|_| out.extend(half::f16::from_f32(rng.f32(-2.0, 2.0)).to_le_bytes()))
        }
        DType::BF16 => {
            (0..n).for_each(|_| out.extend(half::bf16::from_f32(rng.f32(-2.0, 2.0)).to_le_bytes()))
        }
        _ => {
            for _ in 0..n / dtype.block_elems() {
                let mut blk: Vec<u8> = (0..dtype.block_bytes()).map(|_| rng.next() as u8).collect();
                for &off in scale_offsets(dtype) {
                    blk[off..off + 2]
                        .copy_from_slice(&half::f16::from_f32(rng.f32(-2.0, 2.0)).to_le_bytes());
                }
                out.extend(blk);
            }
        }
    }
    out
}

/// Column counts to try for a type: multiples of its block size (plus odd lengths for plain floats).
fn col_counts(dtype: DType) -> Vec<usize> {
    match dtype.block_elems() {
        1 => vec![1, 7, 32, 33, 100, 256, 2304],
        32 => vec![32, 64, 96, 256, 512, 2304],
        _ => vec![256, 512, 2304],
    }
}

/// Asserts `got` is within the stated tolerance of `want` for weights `w` and input `x`.
fn assert_close(got: f32, want: f32, w: &[f32], x: &[f32], what: &str) {
    let mag: f64 = w
        .iter()
        .zip(x)
        .map(|(a, b)| (*a as f64 * *b as f64).abs())
        .sum();
    let tol = 1e-4 * mag + 1e-6;
    assert!(
        ((got - want) as f64).abs() <= tol,
        "{what}: got {got} want {want} (diff {:e}, tolerance {tol:e})",
        (got - want).abs()
    );
}

fn weights(dtype: DType, row: &[u8], n: usize) -> Vec<f32> {
    let mut w = vec![0f32; n];
    dequantize_row(dtype, row, &mut w);
    w
}

/// Every level this CPU runs; each test below goes through all of them.
fn levels() -> Vec<LevelKernels> {
    let levels = LevelKernels::available();
    assert_eq!(levels[0].level(), Level::Scalar, "scalar is always present");
    levels
}

#[test]
fn simd_kernels_are_in_use_where_the_cpu_has_them() {
    let levels = levels();
    let names: Vec<_> = levels.iter().map(|l| l.name()).collect();
    eprintln!("kernels: {} (levels here: {names:?})", kernel_name());
    // The default is the highest level present.
    assert_eq!(kernel_name(), levels.last().unwrap().name());
    #[cfg(target_arch = "x86_64")]
    if std::env::var("HEARTH_KERNELS").is_err() {
        let has = |f: &[bool]| f.iter().all(|&b| b);
        let avx2 = has(&[
            is_x86_feature_detected!("avx2"),
            is_x86_feature_detected!("fma"),
            is_x86_feature_detected!("f16c"),
        ]);
        let avx512 = avx2
            && has(&[
                is_x86_feature_detected!("avx512f"),
                is_x86_feature_detected!("avx512bw"),
                is_x86_feature_detected!("avx512vl"),
                is_x86_feature_detected!("avx512dq"),
            ]);
        assert_eq!(LevelKernels::at(Level::Avx2).is_some(), avx2);
        assert_eq!(LevelKernels::at(Level::Avx512).is_some(), avx512);
        let want = if avx512 {
            "avx512"
        } else if avx2 {
            "avx2+fma+f16c"
        } else {
            "scalar"
        };
        assert_eq!(kernel_name(), want);
    }
    #[cfg(target_arch = "aarch64")]
    if std::env::var("HEARTH_KERNELS").is_err() {
        assert_eq!(kernel_name(), "neon");
    }
}

#[test]
fn dot_matches_scalar_reference_for_every_type() {
    for lk in levels() {
        let mut rng = Rng(1);
        for dtype in ALL_DTYPES {
            for n in col_counts(dtype) {
                for _ in 0..3 {
                    let row = random_row(&mut rng, dtype, n);
                    let x = rng.vec(n);
                    let w = weights(dtype, &row, n);
                    let want = dot_scalar(dtype, &row, &x);
                    let exact: f64 = w.iter().zip(&x).map(|(a, b)| *a as f64 * *b as f64).sum();
                    assert_close(
                        want,
                        exact as f32,
                        &w,
                        &x,
                        &format!("{dtype} scalar reference, {n} cols"),
                    );
                    assert_close(
                        lk.dot(dtype, &row, &x),
                        want,
                        &w,
                        &x,
                        &format!("{} {dtype} dot, {n} cols", lk.name()),
                    );
                }
            }
        }
    }
}

#[test]
fn dot_handles_extreme_quant_bytes() {
    // Every quant byte 0x00, then 0xFF: the edges of each bit field.
    for lk in levels() {
        let mut rng = Rng(2);
        for dtype in ALL_DTYPES.into_iter().filter(|d| d.block_elems() > 1) {
            for fill in [0x00u8, 0xff] {
                let n = 2 * dtype.block_elems();
                let mut row = vec![fill; dtype.bytes_for(n).unwrap()];
                for b in 0..2 {
                    for &off in scale_offsets(dtype) {
                        let at = b * dtype.block_bytes() + off;
                        row[at..at + 2].copy_from_slice(&half::f16::from_f32(1.5).to_le_bytes());
                    }
                }
                let x = rng.vec(n);
                let w = weights(dtype, &row, n);
                let what = format!("{} {dtype} fill {fill:#x}", lk.name());
                assert_close(
                    lk.dot(dtype, &row, &x),
                    dot_scalar(dtype, &row, &x),
                    &w,
                    &x,
                    &what,
                );
                let mut got = vec![0f32; n];
                lk.dequantize(dtype, &row, &mut got);
                assert_bits_eq(&got, &w, dtype, &what);
            }
        }
    }
}

/// `got` equals `want` bit for bit, except that F16 NaNs may come out quieted by F16C.
fn assert_bits_eq(got: &[f32], want: &[f32], dtype: DType, what: &str) {
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let ok = g.to_bits() == w.to_bits() || (dtype == DType::F16 && g.is_nan() && w.is_nan());
        assert!(
            ok,
            "{what}[{i}]: got {g:e} ({:#010x}) want {w:e} ({:#010x})",
            g.to_bits(),
            w.to_bits()
        );
    }
}

/// Column counts for the within-level checks: 1, 3, 7 and 9 whole blocks, plus, for the plain float types,
/// lengths that reach every part of the SIMD loops (64-wide steps, a 32 step, a 16 step, a masked tail).
fn invariance_cols(dtype: DType) -> Vec<usize> {
    let be = dtype.block_elems();
    let mut cols: Vec<usize> = [1, 3, 7, 9].iter().map(|b| b * be).collect();
    if be == 1 {
        cols.extend([16, 33, 64 + 32 + 16 + 5, 1000]);
    }
    cols
}

/// Within each level, a row's `dot` with a token is bit-identical to `f32_dot` over the row as that level's
/// `dequantize` gives it, and to the matching lane of `dot4` (the one-token matvec and the many-token matmul
/// over dequantized rows must agree exactly); every level stays within tolerance of the scalar reference
/// and dequantizes bit-exactly.
#[test]
fn every_level_is_batch_invariant_and_close_to_scalar() {
    for lk in levels() {
        let mut rng = Rng(5);
        for dtype in ALL_DTYPES {
            for cols in invariance_cols(dtype) {
                for rows in [1, 3, 17, 65] {
                    let bytes = random_row(&mut rng, dtype, rows * cols);
                    let rb = dtype.bytes_for(cols).unwrap();
                    let row = |r: usize| &bytes[r * rb..(r + 1) * rb];
                    let mut deq = vec![0f32; rows * cols];
                    for (r, d) in deq.chunks_exact_mut(cols).enumerate() {
                        lk.dequantize(dtype, row(r), d);
                        let what =
                            format!("{} {dtype} dequantize [{rows} x {cols}] row {r}", lk.name());
                        assert_bits_eq(d, &weights(dtype, row(r), cols), dtype, &what);
                    }
                    for n_tokens in [1, 2, 5] {
                        let x = rng.vec(n_tokens * cols);
                        for (t, xt) in x.chunks_exact(cols).enumerate() {
                            // What the many-token matmul computes: dot4 over groups of four, then f32_dot.
                            let mut batched = vec![0f32; rows];
                            let mut r = 0;
                            while r + 4 <= rows {
                                let v = lk.dot4(&deq[r * cols..(r + 4) * cols], xt);
                                batched[r..r + 4].copy_from_slice(&v);
                                r += 4;
                            }
                            for (r, b) in batched.iter_mut().enumerate().skip(r) {
                                *b = lk.f32_dot(&deq[r * cols..(r + 1) * cols], xt);
                            }
                            for (r, &b) in batched.iter().enumerate() {
                                let what = format!(
                                    "{} {dtype} [{rows} x {cols}] x {n_tokens} tok, row {r} tok {t}",
                                    lk.name()
                                );
                                let one = lk.dot(dtype, row(r), xt);
                                assert_eq!(
                                    one.to_bits(),
                                    b.to_bits(),
                                    "{what}: dot {one} but dequantize + dot4/f32_dot {b}"
                                );
                                let single = lk.f32_dot(&deq[r * cols..(r + 1) * cols], xt);
                                assert_eq!(
                                    one.to_bits(),
                                    single.to_bits(),
                                    "{what}: f32_dot {single}"
                                );
                                let wr = &deq[r * cols..(r + 1) * cols];
                                assert_close(one, dot_scalar(dtype, row(r), xt), wr, xt, &what);
                            }
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn matmul_matches_scalar_reference() {
    let mut rng = Rng(3);
    for dtype in ALL_DTYPES {
        for cols in col_counts(dtype) {
            for rows in [1, 3, 17, 65] {
                let bytes = random_row(&mut rng, dtype, rows * cols);
                let w = Tensor {
                    name: format!("test.{dtype}"),
                    dtype,
                    shape: vec![rows, cols],
                    storage: Storage::Owned(Arc::new(bytes)),
                };
                for n_tokens in [1, 2, 5] {
                    let x = rng.vec(n_tokens * cols);
                    // Sentinel past the end: matmul writes exactly n_tokens * rows values.
                    let mut out = vec![f32::NAN; n_tokens * rows + 1];
                    out[n_tokens * rows] = 12345.0;
                    matmul(&w, &x, n_tokens, &mut out);
                    assert_eq!(out[n_tokens * rows], 12345.0);
                    for r in 0..rows {
                        let wr = weights(dtype, w.row(r), cols);
                        for t in 0..n_tokens {
                            let xt = &x[t * cols..(t + 1) * cols];
                            let want = dot_scalar(dtype, w.row(r), xt);
                            let what =
                                format!("{dtype} matmul [{rows} x {cols}] x {n_tokens} tok, row {r} tok {t}");
                            assert_close(out[t * rows + r], want, &wr, xt, &what);
                        }
                    }
                }
            }
        }
    }
}

/// A token's result must not depend on how many other tokens share the matmul (one-token matvec vs the
/// many-token path), bit for bit: batched serving gives exactly the single-sequence output.
#[test]
fn matmul_is_batch_invariant() {
    let mut rng = Rng(11);
    for dtype in ALL_DTYPES {
        for cols in col_counts(dtype) {
            for rows in [1, 5, 66] {
                let bytes = random_row(&mut rng, dtype, rows * cols);
                let w = Tensor {
                    name: format!("test.{dtype}"),
                    dtype,
                    shape: vec![rows, cols],
                    storage: Storage::Owned(Arc::new(bytes)),
                };
                let x = rng.vec(3 * cols);
                let mut many = vec![0f32; 3 * rows];
                matmul(&w, &x, 3, &mut many);
                for t in 0..3 {
                    let mut one = vec![0f32; rows];
                    matmul(&w, &x[t * cols..(t + 1) * cols], 1, &mut one);
                    for r in 0..rows {
                        assert_eq!(
                            one[r].to_bits(),
                            many[t * rows + r].to_bits(),
                            "{dtype} [{rows} x {cols}] token {t} row {r}: {} alone, {} batched",
                            one[r],
                            many[t * rows + r]
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn matmul_of_zero_tokens_or_rows_writes_nothing() {
    let w = Tensor::from_f32("empty", vec![0, 32], &[]);
    let mut out = [7.0f32; 4];
    matmul(&w, &[1.0; 32], 1, &mut out);
    let w = Tensor::from_f32("w", vec![2, 4], &[1.0; 8]);
    matmul(&w, &[], 0, &mut out);
    assert_eq!(out, [7.0; 4]);
}

fn fixture(name: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/quants")
        .join(name);
    std::fs::read(&p).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (make it with scripts/make_quant_fixtures.py)",
            p.display()
        )
    })
}

#[test]
fn fast_dequantize_is_bit_exact_with_gguf_fixtures() {
    for lk in levels() {
        for dtype in ALL_DTYPES {
            let raw = fixture(&format!("{dtype}.bin"));
            let want: Vec<f32> = fixture(&format!("{dtype}.f32"))
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            let mut got = vec![0f32; want.len()];
            lk.dequantize(dtype, &raw, &mut got);
            assert_bits_eq(&got, &want, dtype, &format!("{} {dtype}", lk.name()));
        }
    }
}

#[test]
fn f32_dot_and_axpy_match_references_at_odd_lengths() {
    for lk in levels() {
        let mut rng = Rng(4);
        for n in [0, 1, 7, 8, 9, 15, 16, 17, 31, 33, 48, 64, 100, 127, 1000] {
            let (a, b) = (rng.vec(n), rng.vec(n));
            let exact: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
            let what = format!("{} f32_dot len {n}", lk.name());
            assert_close(lk.f32_dot(&a, &b), exact as f32, &a, &b, &what);

            let s = rng.f32(-2.0, 2.0);
            let mut y = rng.vec(n);
            let want: Vec<f32> = y.iter().zip(&a).map(|(yi, ai)| yi + s * ai).collect();
            lk.axpy(s, &a, &mut y);
            for (i, (g, w)) in y.iter().zip(&want).enumerate() {
                // One FMA versus a rounded product then a sum: at most a rounding step apart.
                assert!(
                    (g - w).abs() <= 1e-6 * (w.abs() + (s * a[i]).abs()) + 1e-7,
                    "{} axpy len {n} [{i}]: {g} vs {w}",
                    lk.name()
                );
            }
        }
    }
}
