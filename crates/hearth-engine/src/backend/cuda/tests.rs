//! The CUDA backend's unit tests: every kernel module compiles with NVRTC (any machine), and the fast
//! decoders match the reference ones on a GPU.

use super::memory::arg;
use super::*;
use crate::tensor::mlx::{MlxFloat, MlxMode, MlxQuant};
use crate::tensor::mlx_blocks::MlxBlocks;

/// NVRTC is a host library: every kernel module can be compiled on a machine without a GPU. CI installs
/// libnvrtc and sets HEARTH_REQUIRE_NVRTC=1, so a kernel that does not compile fails there; elsewhere the
/// test says it skipped.
fn nvrtc_or_skip() -> bool {
    match nvrtc::version() {
        Ok(_) => true,
        Err(e) if std::env::var_os("HEARTH_REQUIRE_NVRTC").is_some() => {
            panic!("HEARTH_REQUIRE_NVRTC is set but NVRTC cannot be loaded: {e}")
        }
        Err(e) => {
            eprintln!("skipped: {e}");
            false
        }
    }
}

#[test]
fn every_weight_module_compiles() {
    if !nvrtc_or_skip() {
        return;
    }
    let mut types: Vec<DType> = crate::tensor::dtype::ALL_DTYPES.to_vec();
    for (mode, bits, group) in [
        (MlxMode::Affine, 4, 64),
        (MlxMode::Affine, 8, 32),
        (MlxMode::Affine, 3, 128),
        (MlxMode::Mxfp4, 4, 32),
        (MlxMode::Nvfp4, 4, 16),
        (MlxMode::Mxfp8, 8, 32),
    ] {
        let q = MlxQuant::new(mode, bits, group).unwrap();
        types.push(DType::Mlx(MlxBlocks::new(q, MlxFloat::BF16)));
    }
    let src = weights_source();
    for t in types {
        let mut opts = vec!["--gpu-architecture=sm_90".to_string(), "--std=c++17".into()];
        opts.extend(weight_defines(t).unwrap().iter().map(|d| format!("-D{d}")));
        let bin =
            nvrtc::compile_uncached("weights", &src, &opts).unwrap_or_else(|e| panic!("{t}: {e}"));
        assert!(bin.len() > 1000, "{t}: a CUBIN of {} bytes", bin.len());
    }
}

/// The GPU for a kernel test; None (the test says it skipped) without one, unless HEARTH_REQUIRE_CUDA is set.
fn test_gpu() -> Option<Arc<Gpu>> {
    if let Err(e) = probe(0) {
        assert!(
            std::env::var_os("HEARTH_REQUIRE_CUDA").is_none(),
            "HEARTH_REQUIRE_CUDA is set but {e}"
        );
        eprintln!("skipped: {e}");
        return None;
    }
    Some(Gpu::open(0, 64, 1).unwrap())
}

/// On a GPU: the fast decoders (decode_fast.cuh) give the reference decoders' bits on random blocks of
/// every weight type. Skipped without a GPU unless HEARTH_REQUIRE_CUDA is set.
#[test]
fn fast_decoders_equal_reference_on_gpu() {
    let Some(gpu) = test_gpu() else {
        return;
    };
    let mut rng = crate::sample::Rng::seed_from_u64(7);
    let mut types: Vec<DType> = crate::tensor::dtype::ALL_DTYPES.to_vec();
    let q = MlxQuant::new(MlxMode::Affine, 4, 64).unwrap();
    types.push(DType::Mlx(MlxBlocks::new(q, MlxFloat::F16)));
    for t in types {
        let k = 2048;
        let bytes = t.bytes_for(k).unwrap();
        let row: Vec<u8> = (0..bytes).map(|_| (rng.next_u64() >> 56) as u8).collect();
        // The same spare bytes after the row as an uploaded matrix has (matmul.rs's WEIGHT_PAD).
        let dev = DevBuf::alloc(&gpu.ctx, bytes + 16).unwrap();
        memory::upload(gpu.cu_stream(), dev.ptr, &row).unwrap();
        let count = DevBuf::alloc(&gpu.ctx, 4).unwrap();
        memory::upload(gpu.cu_stream(), count.ptr, &[0u32]).unwrap();
        let m = gpu.weights_module(t).unwrap();
        let (p, units, c) = (dev.ptr, (k / 32) as i32, count.ptr);
        gpu.run(
            m.f("deq_compare"),
            (1, 1, 1),
            (64, 1, 1),
            &mut [arg(&p), arg(&units), arg(&c)],
        );
        gpu.take_err().unwrap();
        let mut out = [0u32];
        // SAFETY: a 4-byte buffer read into a 4-byte array, then the stream is synchronized.
        unsafe {
            result::memcpy_dtoh_async(&mut out[..], c, gpu.cu_stream()).unwrap();
            result::stream::synchronize(gpu.cu_stream()).unwrap();
        }
        assert_eq!(
            out[0], 0,
            "{t}: {} weights differ between the decoders",
            out[0]
        );
    }
}

#[test]
fn ops_module_compiles_for_every_head_shape() {
    if !nvrtc_or_skip() {
        return;
    }
    let src = ops_source();
    // Head sizes and GQA groups of the supported families (and the tiny test models' 16).
    for (hd, gqa) in [
        (16, 2),
        (64, 3),
        (128, 4),
        (128, 8),
        (256, 4),
        (256, 1),
        (80, 5),
    ] {
        for arch in ["sm_80", "sm_90"] {
            let opts = vec![
                format!("--gpu-architecture={arch}"),
                "--std=c++17".into(),
                format!("-DHEAD_DIM={hd}"),
                format!("-DGQA={gqa}"),
                format!("-DATTN_THREADS={}", super::attention_threads(hd)),
                "-DWT_F32".into(),
            ];
            nvrtc::compile_uncached("ops", &src, &opts)
                .unwrap_or_else(|e| panic!("head_dim {hd}, gqa {gqa}, {arch}: {e}"));
        }
    }
}

/// On a GPU: the integer tensor-core product (weights.cu's mmq) against a float64 reference on the host, for
/// every type with 8-bit kernels: random rows quantized by the CPU's quantizer, random activations quantized
/// per 32 values by the CPU's q8 path (which the GPU's quantize_q8 matches), M and n not multiples of the
/// block's 64 (so both edges are masked) and, for the 32-value types, K not a multiple of the kernel's
/// 128-value step. One split and three, through the backend's own launch. The reference adds
/// dequantized weight times dequantized activation; the kernel adds integer sums scaled per 16 or 32 values,
/// so they differ by float rounding only: at most 1e-4 of the sum of the terms' magnitudes (a wrong fragment
/// mapping or a missed edge is off by a whole term or more). Skipped without a GPU unless HEARTH_REQUIRE_CUDA
/// is set.
#[test]
fn mmq_matches_reference_on_gpu() {
    let Some(gpu) = test_gpu() else {
        return;
    };
    if gpu.arch.0 < 8 {
        eprintln!("skipped: mmq needs sm_80 or later");
        return;
    }
    let mut rng = crate::sample::Rng::seed_from_u64(11);
    let mut uniform = move || (rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0;
    for (t, k) in [
        (DType::Q8_0, 1248),
        (DType::Q4_0, 1248),
        (DType::Q4_K, 1280),
        (DType::Q6_K, 1280),
    ] {
        let m = 80;
        let row_bytes = t.bytes_for(k).unwrap();
        let mut w = vec![0u8; m * row_bytes];
        let mut w_deq = vec![0f32; m * k];
        for r in 0..m {
            let src: Vec<f32> = (0..k).map(|_| uniform() * 0.05).collect();
            let dst = &mut w[r * row_bytes..(r + 1) * row_bytes];
            crate::tensor::quants::quantize::quantize_row(t, &src, dst);
            crate::tensor::quants::dequantize_row(t, dst, &mut w_deq[r * k..(r + 1) * k]);
        }
        let wdev = DevBuf::alloc(&gpu.ctx, w.len() + 16).unwrap();
        memory::upload(gpu.cu_stream(), wdev.ptr, &w).unwrap();
        let mat = super::matmul::DevMat::from_parts(wdev, t, m, k, gpu.weights_module(t).unwrap());
        for n in [5usize, 70] {
            // Activations quantized by the CPU's q8 path, which the GPU's quantize_q8 matches: per 32 values
            // q = round(x / d), d = max |x| / 127, and (d, d * sum q).
            let (mut xq, mut xd) = (Vec::with_capacity(n * k), Vec::with_capacity(n * k / 16));
            let mut row = crate::backend::cpu::qdot::Q8Row::new();
            for _ in 0..n {
                let x: Vec<f32> = (0..k).map(|_| uniform()).collect();
                crate::backend::cpu::qdot::quantize_q8(&x, &mut row);
                xq.extend_from_slice(&row.qs);
                for (d, sum) in row.d.iter().zip(&row.sums) {
                    xd.extend([*d, d * *sum as f32]);
                }
            }
            let xq_dev = DevBuf::alloc(&gpu.ctx, xq.len()).unwrap();
            let xd_dev = DevBuf::alloc(&gpu.ctx, xd.len() * 4).unwrap();
            let y_dev = DevBuf::alloc(&gpu.ctx, n * m * 4).unwrap();
            memory::upload(gpu.cu_stream(), xq_dev.ptr, &xq).unwrap();
            memory::upload(gpu.cu_stream(), xd_dev.ptr, &xd).unwrap();
            let check = |y: &[f32], n: usize, splits: usize| {
                for c in 0..n {
                    for r in 0..m {
                        let (mut want, mut mass) = (0f64, 0f64);
                        for i in 0..k {
                            let d = xd[2 * ((c * k + i) / 32)] as f64;
                            let term = w_deq[r * k + i] as f64 * d * xq[c * k + i] as f64;
                            want += term;
                            mass += term.abs();
                        }
                        let got = y[c * m + r] as f64;
                        assert!(
                            (got - want).abs() <= 1e-4 * mass + 1e-6,
                            "{t} n={n} splits={splits}: y[{c}][{r}] = {got}, reference {want} (terms' magnitude {mass})"
                        );
                    }
                }
            };
            // One split (y written directly) and three (partial sums, then mmq_sum), through the launch the
            // backend uses.
            for want_splits in [1usize, 3] {
                let plan = super::matmul::mmq_splits(1, k / 32, want_splits, usize::MAX);
                assert_eq!(plan.0, want_splits, "{t}: the split plan");
                let part = DevBuf::alloc(&gpu.ctx, plan.0 * n * m * 4).unwrap();
                let yp = y_dev.ptr;
                mat.mmq_launch(&gpu, xq_dev.ptr, xd_dev.ptr, n, yp, plan, part.ptr);
                gpu.take_err().unwrap();
                let mut y = vec![0f32; n * m];
                // SAFETY: y holds n * m floats, as y_dev does; the stream is synchronized before y is read.
                unsafe {
                    result::memcpy_dtoh_async(&mut y[..], yp, gpu.cu_stream()).unwrap();
                    result::stream::synchronize(gpu.cu_stream()).unwrap();
                }
                check(&y, n, plan.0);
            }
        }
    }
}

/// mmq's split-K plan, on any machine: every unit in exactly one split, no empty split, whole 4-unit steps,
/// never more splits than the partial-sum buffer holds, and one split when the tiles alone fill the GPU.
#[test]
fn mmq_split_plans_cover_k_exactly() {
    for tiles in [1usize, 7, 64, 128, 600] {
        for units in [1usize, 4, 39, 128, 448] {
            for room in [1usize, 2, 9, usize::MAX] {
                let (splits, su) = super::matmul::mmq_splits(tiles, units, 528, room);
                assert!(
                    splits >= 1 && splits <= room,
                    "{tiles} {units} {room}: {splits}"
                );
                assert_eq!(su % 4, 0, "{tiles} {units} {room}: split of {su} units");
                assert!(
                    splits * su >= units,
                    "{tiles} {units} {room}: units left out"
                );
                assert!(
                    (splits - 1) * su < units,
                    "{tiles} {units} {room}: an empty split"
                );
                if tiles >= 528 {
                    assert_eq!(splits, 1);
                }
            }
        }
    }
    assert_eq!(super::matmul::mmq_splits(64, 128, 528, usize::MAX), (8, 16));
}
