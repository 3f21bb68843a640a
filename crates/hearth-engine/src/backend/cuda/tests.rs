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

/// On a GPU: the fast decoders (decode_fast.cuh) give the reference decoders' bits on random blocks of
/// every weight type. Skipped without a GPU unless HEARTH_REQUIRE_CUDA is set.
#[test]
fn fast_decoders_equal_reference_on_gpu() {
    if let Err(e) = probe(0) {
        assert!(
            std::env::var_os("HEARTH_REQUIRE_CUDA").is_none(),
            "HEARTH_REQUIRE_CUDA is set but {e}"
        );
        eprintln!("skipped: {e}");
        return;
    }
    let gpu = Gpu::open(0, 64, 1).unwrap();
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
