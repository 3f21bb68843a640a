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

/// Values uniform in [-1, 1) (24 bits each) from the seeded generator: the kernel tests' random inputs.
fn uniform_values(seed: u64) -> impl FnMut() -> f32 {
    let mut rng = crate::sample::Rng::seed_from_u64(seed);
    move || (rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
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
        // The same spare bytes after the row as an uploaded matrix has.
        let dev = DevBuf::alloc(&gpu.ctx, bytes + super::matmul::WEIGHT_PAD).unwrap();
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
        let out = download::<u32>(&gpu, c, 1);
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

/// The dqmm test's weight types and K: 32-value types with K not a multiple of a kernel step's 128 values
/// (an odd number of units: rows 2 bytes off 4-byte alignment in turn) and with K = 1280 (every row
/// 4-byte aligned, where dqmm knows its code words' alignment), 256-value types with five blocks a row.
const PRODUCT_TYPES: [(DType, usize); 6] = [
    (DType::Q8_0, 1248),
    (DType::Q8_0, 1280),
    (DType::Q4_0, 1248),
    (DType::Q4_0, 1280),
    (DType::Q4_K, 1280),
    (DType::Q6_K, 1280),
];

/// `m` random rows of `k` weights quantized by the CPU's quantizer, uploaded (with the backend's spare bytes
/// after the matrix), and their dequantized values.
fn random_matrix(
    gpu: &Arc<Gpu>,
    t: DType,
    m: usize,
    k: usize,
    uniform: &mut impl FnMut() -> f32,
) -> (super::matmul::DevMat, Vec<f32>) {
    let row_bytes = t.bytes_for(k).unwrap();
    let mut w = vec![0u8; m * row_bytes];
    let mut w_deq = vec![0f32; m * k];
    for r in 0..m {
        let src: Vec<f32> = (0..k).map(|_| uniform() * 0.05).collect();
        let dst = &mut w[r * row_bytes..(r + 1) * row_bytes];
        crate::tensor::quants::quantize::quantize_row(t, &src, dst);
        crate::tensor::quants::dequantize_row(t, dst, &mut w_deq[r * k..(r + 1) * k]);
    }
    let wdev = DevBuf::alloc(&gpu.ctx, w.len() + super::matmul::WEIGHT_PAD).unwrap();
    memory::upload(gpu.cu_stream(), wdev.ptr, &w).unwrap();
    let mat = super::matmul::DevMat::from_parts(wdev, t, m, k, gpu.weights_module(t).unwrap());
    (mat, w_deq)
}

/// `len` values from the device, after the stream's work.
fn download<T: Copy + Default>(gpu: &Gpu, ptr: u64, len: usize) -> Vec<T> {
    let mut y = vec![T::default(); len];
    // SAFETY: ptr addresses at least len values of T; the stream is synchronized before y is read.
    unsafe {
        result::memcpy_dtoh_async(&mut y[..], ptr, gpu.cu_stream()).unwrap();
        result::stream::synchronize(gpu.cu_stream()).unwrap();
    }
    y
}

/// Asserts y[c * m + r] = sum_i w[r, i] x[c, i] (the reference in float64) within `tol` of the sum of the
/// terms' magnitudes: the kernels differ from it by float rounding only, where a wrong fragment mapping or a
/// missed edge is off by a whole term or more.
fn check_product(
    what: &str,
    y: &[f32],
    w: &[f32],
    x: &[f64],
    (m, n, k): (usize, usize, usize),
    tol: f64,
) {
    for c in 0..n {
        for r in 0..m {
            let (mut want, mut mass) = (0f64, 0f64);
            for i in 0..k {
                let term = w[r * k + i] as f64 * x[c * k + i];
                want += term;
                mass += term.abs();
            }
            let got = y[c * m + r] as f64;
            assert!(
                (got - want).abs() <= tol * mass + 1e-6,
                "{what}: y[{c}][{r}] = {got}, reference {want} (terms' magnitude {mass})"
            );
        }
    }
}

/// On a GPU: the dequantizing half-precision product (weights.cu's dqmm), f16 and bf16, against a float64
/// reference of the same operands rounded to half precision (the weights quantized and dequantized by the
/// CPU, the activations random), for every type it takes: M and n not multiples of the block's 64 (so both
/// edges are masked; n of 5, 20, 40 and 70 runs each of the loop's widths, 16, 32, 48 and 64 rows), one split
/// and three, through the backend's own launch. The
/// kernel accumulates in f32 and rounds each weight to half precision once, as the reference does, except
/// that for the K-quants it rounds the per-sub-block factors to f16 first (a weight may then land one f16
/// step away, with random sign): within 2e-4 of the terms' magnitudes, where a wrong fragment or edge is off
/// by whole terms.
#[test]
fn dqmm_matches_reference_on_gpu() {
    let Some(gpu) = test_gpu() else {
        return;
    };
    if gpu.arch.0 < 8 {
        eprintln!("skipped: dqmm needs sm_80 or later");
        return;
    }
    let mut uniform = uniform_values(12);
    for (t, k) in PRODUCT_TYPES {
        let m = 80;
        let (mat, w_deq) = random_matrix(&gpu, t, m, k, &mut uniform);
        for bf16 in [false, true] {
            let to_half = |v: f32| -> u16 {
                if bf16 {
                    crate::tensor::quants::quantize::f32_to_bf16(v)
                } else {
                    half::f16::from_f32(v).to_bits()
                }
            };
            let from_half = |h: u16| -> f32 {
                if bf16 {
                    f32::from_bits((h as u32) << 16)
                } else {
                    half::f16::from_bits(h).to_f32()
                }
            };
            let w_half: Vec<f32> = w_deq.iter().map(|&v| from_half(to_half(v))).collect();
            for n in [5usize, 20, 40, 70] {
                let x: Vec<u16> = (0..n * k).map(|_| to_half(uniform())).collect();
                let x_ref: Vec<f64> = x.iter().map(|&h| from_half(h) as f64).collect();
                let x_dev = DevBuf::alloc(&gpu.ctx, x.len() * 2).unwrap();
                let y_dev = DevBuf::alloc(&gpu.ctx, n * m * 4).unwrap();
                memory::upload(gpu.cu_stream(), x_dev.ptr, &x).unwrap();
                for want_splits in [1usize, 3] {
                    let plan = super::dqmm::dqmm_splits(1, k / 32, want_splits, 1, usize::MAX);
                    let part = DevBuf::alloc(&gpu.ctx, plan.0 * n * m * 4).unwrap();
                    // y filled with NaNs first: every output must be written.
                    // SAFETY: y_dev holds n * m floats.
                    unsafe {
                        result::memset_d8_async(y_dev.ptr, 0xff, n * m * 4, gpu.cu_stream())
                            .unwrap()
                    };
                    mat.dqmm_launch(&gpu, x_dev.ptr, n, y_dev.ptr, bf16, plan, part.ptr, true);
                    gpu.take_err().unwrap();
                    let y = download(&gpu, y_dev.ptr, n * m);
                    let what = format!("dqmm {t} bf16={bf16} n={n} splits={}", plan.0);
                    check_product(&what, &y, &w_half, &x_ref, (m, n, k), 2e-4);
                }
            }
        }
    }
}

/// On a GPU: dequant_rows (the dequantize-and-cuBLAS path's slabs) against the CPU's dequantized weights
/// rounded to half precision, f16 and bf16, for the types it decodes with dqmm's decoder, on a slab that
/// starts past row 0. Q8_0's and Q4_0's f16 weights are exact (the code times the f16 factor, rounded once);
/// the K-quants round their per-sub-block factors (scale and offset) to f16 first, so a weight may be off by
/// 2^-11 of each of the two terms it is made of, bounded here by 2^-10 of the row's largest weight on top of
/// one f16 step; bf16 weights are rounded from f32 (within 2^-8 of the value, and the same allowance).
#[test]
fn dequant_rows_match_reference_on_gpu() {
    let Some(gpu) = test_gpu() else {
        return;
    };
    let mut uniform = uniform_values(13);
    for (t, k) in PRODUCT_TYPES {
        let (m, rows) = (40, 7..33);
        let (mat, w_deq) = random_matrix(&gpu, t, m, k, &mut uniform);
        let out = DevBuf::alloc(&gpu.ctx, rows.len() * k * 2).unwrap();
        for bf16 in [false, true] {
            mat.dequantize_rows(&gpu, rows.clone(), out.ptr, bf16);
            gpu.take_err().unwrap();
            let got: Vec<u16> = download(&gpu, out.ptr, rows.len() * k);
            let exact = !bf16 && matches!(t, DType::Q8_0 | DType::Q4_0);
            let rel = if bf16 { 1.0 / 256.0 } else { 1.0 / 1024.0 };
            for (i, &h) in got.iter().enumerate() {
                let want = w_deq[rows.start * k + i];
                let row = &w_deq[(rows.start + i / k) * k..(rows.start + i / k + 1) * k];
                let largest = row.iter().fold(0f32, |a, &v| a.max(v.abs()));
                let v = if bf16 {
                    f32::from_bits((h as u32) << 16)
                } else {
                    half::f16::from_bits(h).to_f32()
                };
                let ok = if exact {
                    h == half::f16::from_f32(want).to_bits()
                } else {
                    (v - want).abs() <= rel * want.abs() + largest / 1024.0 + 1e-7
                };
                assert!(
                    ok,
                    "dequant_rows {t} bf16={bf16}: weight {i} = {v}, reference {want}"
                );
            }
        }
    }
}

/// dqmm's split-K plan, on any machine: every unit in exactly one split, no empty split, whole 4-unit steps,
/// at least the fewest steps asked for (where K has that many), never more splits than the partial-sum
/// buffer holds, and one split when the tiles alone fill the GPU.
#[test]
fn dqmm_split_plans_cover_k_exactly() {
    for tiles in [1usize, 7, 64, 128, 600] {
        for units in [1usize, 4, 39, 128, 448] {
            for room in [1usize, 2, 9, usize::MAX] {
                for min_steps in [1usize, 4] {
                    let case = format!("{tiles} {units} {room} {min_steps}");
                    let (splits, su) = super::dqmm::dqmm_splits(tiles, units, 528, min_steps, room);
                    assert!(splits >= 1 && splits <= room, "{case}: {splits}");
                    assert_eq!(su % 4, 0, "{case}: split of {su} units");
                    assert!(splits * su >= units, "{case}: units left out");
                    assert!((splits - 1) * su < units, "{case}: an empty split");
                    if splits > 1 {
                        assert!(su >= 4 * min_steps, "{case}: splits of {su} units");
                    }
                    if tiles >= 528 {
                        assert_eq!(splits, 1);
                    }
                }
            }
        }
    }
    assert_eq!(
        super::dqmm::dqmm_splits(64, 128, 528, 1, usize::MAX),
        (8, 16)
    );
    assert_eq!(
        super::dqmm::dqmm_splits(64, 128, 528, 8, usize::MAX),
        (4, 32)
    );
}

/// On a GPU: a group of dqmm products with one input whose split-K sums share one dqmm_sum3 launch (q, k
/// and v; gate and up), against the float64 reference: Q8_0, Q4_K and a Q8_0 matrix of 83 rows (unsplit in
/// the group, since dqmm_sum adds float4s), the outputs filled with NaNs first, f16 activations; then two
/// Q8_0 products of 80 and 144 rows (one and two row tiles) in one dqmm2 launch, and the 83-row one refused
/// for it.
#[test]
fn dqmm_group_sums_match_reference_on_gpu() {
    let Some(gpu) = test_gpu() else {
        return;
    };
    if gpu.arch.0 < 8 {
        eprintln!("skipped: dqmm needs sm_80 or later");
        return;
    }
    let mut uniform = uniform_values(21);
    let (k, n) = (1280, 40);
    let mats: Vec<_> = [
        (DType::Q8_0, 80),
        (DType::Q4_K, 96),
        (DType::Q8_0, 83),
        (DType::Q8_0, 144),
    ]
    .into_iter()
    .map(|(t, m)| (t, m, random_matrix(&gpu, t, m, k, &mut uniform)))
    .collect();
    let x: Vec<u16> = (0..n * k)
        .map(|_| half::f16::from_f32(uniform()).to_bits())
        .collect();
    let x_ref: Vec<f64> = x
        .iter()
        .map(|&h| half::f16::from_bits(h).to_f64())
        .collect();
    let x_dev = DevBuf::alloc(&gpu.ctx, x.len() * 2).unwrap();
    memory::upload(gpu.cu_stream(), x_dev.ptr, &x).unwrap();
    let slab = DevBuf::alloc(&gpu.ctx, 16 << 20).unwrap();
    let ys: Vec<DevBuf> = mats
        .iter()
        .map(|(_, m, _)| DevBuf::alloc(&gpu.ctx, n * m * 4).unwrap())
        .collect();
    for (y, (_, m, _)) in ys.iter().zip(&mats) {
        // SAFETY: y holds n * m floats.
        unsafe { result::memset_d8_async(y.ptr, 0xff, n * m * 4, gpu.cu_stream()).unwrap() };
    }
    let mut group = super::split_sums::GroupSums::new(slab.ptr, slab.bytes);
    for (y, (_, _, (mat, _))) in ys.iter().zip(&mats).take(3) {
        mat.dqmm_grouped(&gpu, x_dev.ptr, n, y.ptr, false, &mut group);
    }
    let pair = |a: usize, b: usize, group: &mut super::split_sums::GroupSums| {
        DevMat::dqmm_pair_grouped(
            &gpu,
            (&mats[a].2 .0, ys[a].ptr),
            (&mats[b].2 .0, ys[b].ptr),
            x_dev.ptr,
            n,
            false,
            group,
        )
    };
    assert!(
        !pair(2, 3, &mut group),
        "rows not a multiple of 4 share no launch"
    );
    // SAFETY: ys[0] holds n * 80 floats.
    unsafe { result::memset_d8_async(ys[0].ptr, 0xff, n * 80 * 4, gpu.cu_stream()).unwrap() };
    assert!(pair(0, 3, &mut group));
    group.flush(&gpu);
    gpu.take_err().unwrap();
    for (y, (t, m, (_, w_deq))) in ys.iter().zip(&mats) {
        let w_half: Vec<f32> = w_deq
            .iter()
            .map(|&v| half::f16::from_f32(v).to_f32())
            .collect();
        let got = download(&gpu, y.ptr, n * m);
        check_product(
            &format!("grouped dqmm {t} m={m}"),
            &got,
            &w_half,
            &x_ref,
            (*m, n, k),
            2e-4,
        );
    }
}

/// On a GPU: decode attention (attn_decode, and attn_decode_mma where the GPU runs it) against a float64
/// reference over the same f16 cache: three rows (1, 101 and 2,101 keys) of sequences whose cache blocks lie
/// out of order, 1, 7 and 64 splits, with and without a sliding window and a soft-cap, 128-wide heads in
/// groups of 4 and 64-wide ones in groups of 3. Both accumulate in f32 from the f16 cache (attn_decode_mma
/// feeds the tensor cores the query and the weights as f16 pairs that add up to their f32 values): within
/// 1e-4 (a wrong tile, split, warp or merge is off by whole values: the outputs are averages of values in
/// [-1, 1]). Its half-precision copy of the output (for the
/// output projection's GEMM) must be the output rounded to nearest, exactly; its 8-bit copy (for the integer
/// matrix-vector path) quantize_q8's of the output.
#[test]
fn decode_attention_kernels_match_reference_on_gpu() {
    if test_gpu().is_none() {
        return;
    }
    let mut uniform = uniform_values(7);
    for (hd, gqa) in [(128usize, 4usize), (64, 3)] {
        let gpu = Gpu::open(0, hd, gqa).unwrap();
        let (n_kv, bs) = (2usize, 16usize);
        let (n_heads, kv_dim) = (n_kv * gqa, n_kv * hd);
        let positions: Vec<i32> = vec![0, 100, 2100];
        let rows = positions.len();
        // Each sequence's blocks, handed out in reverse so no table is in order.
        let need: Vec<usize> = positions
            .iter()
            .map(|&p| (p as usize + 1).div_ceil(bs))
            .collect();
        let total: usize = need.iter().sum();
        let mut next = total;
        let (mut tables, mut table_off) = (Vec::new(), Vec::new());
        for &nb in &need {
            table_off.push(tables.len() as i32);
            for _ in 0..nb {
                next -= 1;
                tables.push(next as i32);
            }
        }
        let to_f16 = |v: f32| half::f16::from_f32(v).to_bits();
        let kc: Vec<u16> = (0..total * bs * kv_dim)
            .map(|_| to_f16(uniform()))
            .collect();
        let vc: Vec<u16> = (0..total * bs * kv_dim)
            .map(|_| to_f16(uniform()))
            .collect();
        let q: Vec<f32> = (0..rows * n_heads * hd).map(|_| uniform()).collect();
        let up_i32 = |v: &[i32]| {
            let b = DevBuf::alloc(&gpu.ctx, v.len() * 4).unwrap();
            memory::upload(gpu.cu_stream(), b.ptr, v).unwrap();
            b
        };
        let (pos_d, seq_d) = (up_i32(&positions), up_i32(&[0, 1, 2]));
        let (off_d, tab_d) = (up_i32(&table_off), up_i32(&tables));
        let max_d = up_i32(&[2101]);
        let (flash_d, first_d) = (up_i32(&[0, 0, 0]), up_i32(&positions));
        let kc_d = DevBuf::alloc(&gpu.ctx, kc.len() * 2).unwrap();
        let vc_d = DevBuf::alloc(&gpu.ctx, vc.len() * 2).unwrap();
        let q_d = DevBuf::alloc(&gpu.ctx, q.len() * 4).unwrap();
        memory::upload(gpu.cu_stream(), kc_d.ptr, &kc).unwrap();
        memory::upload(gpu.cu_stream(), vc_d.ptr, &vc).unwrap();
        memory::upload(gpu.cu_stream(), q_d.ptr, &q).unwrap();
        let part_d = DevBuf::alloc(&gpu.ctx, rows * n_heads * 64 * (hd + 4) * 4).unwrap();
        let out_d = DevBuf::alloc(&gpu.ctx, rows * n_heads * hd * 4).unwrap();
        let done_d = DevBuf::zeroed(&gpu.ctx, rows * n_kv * 4).unwrap();
        let xh_d = DevBuf::alloc(&gpu.ctx, rows * n_heads * hd * 2).unwrap();
        let xq_d = DevBuf::alloc(&gpu.ctx, rows * n_heads * hd).unwrap();
        let xd_d = DevBuf::alloc(&gpu.ctx, rows * n_heads * hd / 4).unwrap();
        let f16v = |v: u16| half::f16::from_bits(v).to_f64();
        let scale = 1.0 / (hd as f32).sqrt();
        for (window, softcap) in [(0i32, 0.0f32), (300, 0.0), (0, 30.0)] {
            // The reference: softmax over each row's keys, from the same f16 keys and values.
            let mut want = vec![0f64; rows * n_heads * hd];
            for (r, &p) in positions.iter().enumerate() {
                let lo = if window > 0 {
                    (p + 1 - window).max(0)
                } else {
                    0
                };
                let table = &tables[table_off[r] as usize..];
                for h in 0..n_heads {
                    let kh = h / gqa;
                    let slot = |j: i32| {
                        (table[j as usize / bs] as usize * bs + j as usize % bs) * kv_dim + kh * hd
                    };
                    let qrow = &q[(r * n_heads + h) * hd..][..hd];
                    let scores: Vec<f64> = (lo..=p)
                        .map(|j| {
                            let k = &kc[slot(j)..][..hd];
                            let s: f64 = (0..hd).map(|d| qrow[d] as f64 * f16v(k[d])).sum::<f64>()
                                * scale as f64;
                            if softcap > 0.0 {
                                softcap as f64 * (s / softcap as f64).tanh()
                            } else {
                                s
                            }
                        })
                        .collect();
                    let m = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let w: Vec<f64> = scores.iter().map(|s| (s - m).exp()).collect();
                    let l: f64 = w.iter().sum();
                    for (i, j) in (lo..=p).enumerate() {
                        let v = &vc[slot(j)..][..hd];
                        for d in 0..hd {
                            want[(r * n_heads + h) * hd + d] += w[i] / l * f16v(v[d]);
                        }
                    }
                }
            }
            let kernels: &[&str] = if gpu.attn_mma {
                &["attn_decode", "attn_decode_mma"]
            } else {
                &["attn_decode"]
            };
            for (n_splits, &kernel) in [1usize, 7, 64]
                .into_iter()
                .flat_map(|n| kernels.iter().map(move |k| (n, k)))
            {
                // The output's copies: half precision (bf16 for 7 splits, f16 otherwise) and, where whole
                // warps of 32-value units allow it, 8 bits.
                let bf16 = n_splits == 7;
                let q8 = (gqa * hd / 4) % 32 == 0;
                let (xq, xd) = if q8 { (xq_d.ptr, xd_d.ptr) } else { (0, 0) };
                // The outputs filled with NaNs first (0xffff is a NaN in f16 and bf16 too): every value must
                // be written by this launch.
                // SAFETY: out_d holds want.len() floats, xh_d as many 16-bit values, xd_d want.len() / 32
                // float pairs.
                unsafe {
                    for (p, bytes) in [
                        (out_d.ptr, want.len() * 4),
                        (xh_d.ptr, want.len() * 2),
                        (xd_d.ptr, want.len() / 4),
                    ] {
                        result::memset_d8_async(p, 0xff, bytes, gpu.cu_stream()).unwrap();
                    }
                };
                super::blocks::AttnDecodeArgs {
                    q: q_d.ptr,
                    kc: kc_d.ptr,
                    vc: vc_d.ptr,
                    positions: pos_d.ptr,
                    row_seq: seq_d.ptr,
                    table_off: off_d.ptr,
                    tables: tab_d.ptr,
                    part: part_d.ptr,
                    out: out_d.ptr,
                    done: done_d.ptr,
                    n_kv: n_kv as i32,
                    block_size: bs as i32,
                    window,
                    scale,
                    softcap,
                    max_len: max_d.ptr,
                    n_splits: n_splits as i32,
                    flash_rows: flash_d.ptr,
                    first_pos: first_d.ptr,
                    xq,
                    xd,
                    xh: xh_d.ptr,
                    xh_bf16: bf16 as i32,
                }
                .run(&gpu, kernel, rows);
                gpu.take_err().unwrap();
                let what = format!(
                    "{kernel}: head {hd} gqa {gqa} window {window} softcap {softcap} splits {n_splits}"
                );
                let got: Vec<f32> = download(&gpu, out_d.ptr, want.len());
                let worst = got
                    .iter()
                    .zip(&want)
                    // A NaN counts as infinitely far (f64::max would drop it).
                    .map(|(&g, &w)| {
                        let d = (g as f64 - w).abs();
                        if d.is_nan() {
                            f64::INFINITY
                        } else {
                            d
                        }
                    })
                    .fold(0.0, f64::max);
                assert!(worst <= 1e-4, "{what}: off by {worst}");
                // The half-precision copy: each output rounded to nearest, exactly.
                let xh: Vec<u16> = download(&gpu, xh_d.ptr, want.len());
                for (i, (&h, &v)) in xh.iter().zip(&got).enumerate() {
                    let rounded = if bf16 {
                        half::bf16::from_f32(v).to_bits()
                    } else {
                        half::f16::from_f32(v).to_bits()
                    };
                    assert_eq!(h, rounded, "{what}: half copy of output {i} ({v})");
                }
                // The 8-bit copy, as quantize_q8 makes it: codes within 1 of the rounded quotient (the
                // reciprocal may round differently), factors within 1e-6.
                if q8 {
                    let xq: Vec<i8> = download(&gpu, xq_d.ptr, want.len());
                    let xd: Vec<f32> = download(&gpu, xd_d.ptr, want.len() / 16);
                    for (u, vals) in got.chunks(32).enumerate() {
                        let d = vals.iter().fold(0f32, |m, v| m.max(v.abs())) / 127.0;
                        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                        assert!(
                            (xd[2 * u] - d).abs() <= 1e-6 * d.max(1e-30),
                            "{what}: unit {u} factor {} against {d}",
                            xd[2 * u]
                        );
                        for (j, v) in vals.iter().enumerate() {
                            let want_q = (v * id).round_ties_even() as i32;
                            let got_q = xq[32 * u + j] as i32;
                            assert!(
                                (got_q - want_q).abs() <= 1,
                                "{what}: unit {u} code {j}: {got_q} against {want_q}"
                            );
                        }
                    }
                }
            }
        }
    }
}
