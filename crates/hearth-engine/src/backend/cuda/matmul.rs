//! Weight matrices on the GPU and the products with them.
//!
//! A matrix is uploaded once in the file's own block format. `y = x · Wᵀ` for `n` activation rows takes one of
//! two paths:
//! - up to a few rows (decode): `matvec_N` kernels decode each block once and multiply it with the N rows, so
//!   the weights are read once per step at (ideally) memory bandwidth;
//! - more rows (prefill, large batches): activations go to f16/bf16, the matrix is dequantized a slab of rows
//!   at a time into a scratch buffer (skipped when it is already f16/bf16), and cuBLAS multiplies on the
//!   tensor cores with f32 accumulation and f32 output;
//! - between the two (a batch of a few dozen streams), quantized types with the 8-bit unit decoder run
//!   `dqmm`: the blocks are read as they are, decoded to half precision in shared memory and multiplied on
//!   the tensor cores, split along K when the matrix has few row blocks.

use std::ffi::c_void;
use std::sync::Arc;

use cudarc::cublas::{result as blas, sys as bsys};

use super::dqmm::{dqmm_applies, dqmm_pairs_enabled};
use super::memory::{arg, drv, upload, DevBuf};
use super::split_sums::GroupSums;
use super::{profile, Cuda, DevStep, Gpu, Module};
use crate::error::{Error, Result};
use crate::tensor::{DType, Tensor};

/// A weight matrix `[rows, cols]` in device memory, in its file's block format.
pub struct DevMat {
    pub(super) buf: Arc<DevBuf>,
    pub dtype: DType,
    pub rows: usize,
    pub cols: usize,
    pub(super) module: Arc<Module>,
}

/// Up to how many activation rows the matvec path is used: quantized weights are read once per 8 rows, so
/// matvec wins over dequantize-and-GEMM (which writes and reads 2 bytes per weight) up to a few passes, and
/// over dqmm up to one pass (measured on an H200, 16 streams of a llama-8B-shaped Q8_0: 8.0 ms a step through
/// dqmm against 10.7 ms through two 8-row matvec passes); for f16/bf16 weights cuBLAS reads them as they are
/// and wins early. `HEARTH_CUDA_MATVEC_MAX` overrides (for benchmarks).
pub(super) fn matvec_max(gpu: &Gpu, dtype: DType) -> usize {
    static OVERRIDE: std::sync::OnceLock<Option<usize>> = std::sync::OnceLock::new();
    if let Some(v) = OVERRIDE.get_or_init(|| {
        std::env::var("HEARTH_CUDA_MATVEC_MAX")
            .ok()
            .and_then(|v| v.parse().ok())
    }) {
        return *v;
    }
    match dtype {
        DType::F32 | DType::F16 | DType::BF16 => 2,
        // dqmm takes steps of 9 rows and more where it takes 16-row ones.
        _ if dqmm_applies(gpu, dtype, 16) => 8,
        _ => 16,
    }
}

/// Whether decode products meet 8-bit activations (integer dot products) where a weight type has them: the
/// process-wide switch the CPU backend uses too (`hearth --activations q8`, the binary's default).
pub(super) fn q8_activations() -> bool {
    crate::backend::cpu::quantized_activations()
}

/// A decode product's activations as the matvec kernels take them: f32 rows, or the same rows quantized to 8
/// bits (values, per-32 block factors) for the integer kernels.
#[derive(Clone, Copy)]
enum Acts {
    F32(u64),
    Q8(u64, u64),
}

impl Acts {
    /// The activations from row `c0` on, for rows of `k` values.
    fn skip_rows(self, c0: usize, k: usize) -> Acts {
        match self {
            Acts::F32(x) => Acts::F32(x + (c0 * k * 4) as u64),
            Acts::Q8(q, d) => Acts::Q8(q + (c0 * k) as u64, d + (c0 * (k / 32) * 8) as u64),
        }
    }

    /// The kernel for up to `left` activation rows: (rows it takes, its name).
    fn kernel(self, left: usize, glu: bool) -> (usize, &'static str) {
        match self {
            Acts::F32(_) => super::matvec_kernel(left, glu),
            Acts::Q8(..) => super::matvec_q8_kernel(left, glu),
        }
    }

    /// Launches `k` (128 threads a block) with the arguments `head`, these activations (one address, or
    /// two for 8 bits), then `tail`: the kernels of both forms take the same arguments around them.
    fn run(
        self,
        gpu: &Gpu,
        k: super::Kernel,
        blocks: usize,
        head: &[*mut c_void],
        tail: &[*mut c_void],
    ) {
        let (a, b) = match self {
            Acts::F32(x) => (x, 0),
            Acts::Q8(q, d) => (q, d),
        };
        let mut args = [std::ptr::null_mut(); 16];
        let mut n = 0;
        for &p in head.iter().chain([arg(&a)].iter()) {
            args[n] = p;
            n += 1;
        }
        if matches!(self, Acts::Q8(..)) {
            args[n] = arg(&b);
            n += 1;
        }
        for &p in tail {
            args[n] = p;
            n += 1;
        }
        gpu.run(k, (blocks as u32, 1, 1), (128, 1, 1), &mut args[..n]);
    }
}

/// Whether a group of dqmm products adds its split-K sums in one launch ([`GroupSums`];
/// HEARTH_CUDA_DQMM_GROUP_SUM=0 turns it off, for benchmarks).
fn group_sums_enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| super::env_knob("HEARTH_CUDA_DQMM_GROUP_SUM", 1) != 0)
}

impl DevMat {
    /// A matrix over weights already in device memory (kernel tests, which have no model to upload from).
    #[cfg(test)]
    pub(super) fn from_parts(
        buf: DevBuf,
        dtype: DType,
        rows: usize,
        cols: usize,
        module: Arc<Module>,
    ) -> DevMat {
        DevMat {
            buf: Arc::new(buf),
            dtype,
            rows,
            cols,
            module,
        }
    }

    /// Uploads `t` (once per tensor name: a tied output matrix shares the embedding's upload).
    pub fn upload(be: &Cuda, t: &Tensor) -> Result<DevMat> {
        if t.shape.len() != 2 {
            return Err(Error::tensor(
                &t.name,
                &t.name,
                format!("expected a matrix, got shape {:?}", t.shape),
            ));
        }
        let (rows, cols) = (t.rows(), t.cols());
        if cols % 32 != 0 {
            return Err(Error::tensor(
                &t.name,
                &t.name,
                format!(
                    "the CUDA backend needs rows of a multiple of 32 weights; this one has {cols}"
                ),
            ));
        }
        let module = be.gpu.weights_module(t.dtype)?;
        let existing = be.uploaded.lock().expect("uploads").get(&t.name).cloned();
        let buf = match existing {
            Some(b) => b,
            None => {
                let b = Arc::new(upload_bytes(be, t.bytes())?);
                be.uploaded
                    .lock()
                    .expect("uploads")
                    .insert(t.name.clone(), b.clone());
                b
            }
        };
        Ok(DevMat {
            buf,
            dtype: t.dtype,
            rows,
            cols,
            module,
        })
    }

    /// `y[n, rows] = x[n, cols] · Wᵀ` (f32 in and out, device addresses).
    pub fn matmul(&self, be: &Cuda, s: &DevStep, x: u64, n: usize, y: u64) {
        Self::matmul_group(be, s, x, n, &[(self, y)]);
    }

    /// Several products with the same input (a layer's q, k, v; gate and up). Decode-sized steps run
    /// matrices of one weight type in one launch (up to three); on the GEMM path the input is converted to
    /// f16/bf16 once for all of them.
    pub fn matmul_group(be: &Cuda, s: &DevStep, x: u64, n: usize, outs: &[(&DevMat, u64)]) {
        if let Some(g) = Self::matmul_group_unsummed(be, s, x, n, outs) {
            g.flush(&be.gpu);
        }
    }

    /// [`DevMat::matmul_group`] without the group's split-K sums: when every product took dqmm, their partial
    /// sums are returned for the caller to add (a kernel reading the outputs next can add them as it reads,
    /// one launch fewer: [`GroupSums::take`]) or flush.
    pub(super) fn matmul_group_unsummed(
        be: &Cuda,
        s: &DevStep,
        x: u64,
        n: usize,
        outs: &[(&DevMat, u64)],
    ) -> Option<GroupSums> {
        if n == 0 {
            return None;
        }
        // The half-precision copy of x made so far, and its type (true: bf16); its 8-bit copy.
        let mut converted: Option<(bool, u64)> = None;
        let mut quantized: Option<(u64, u64)> = None;
        // When every product of the group takes dqmm, their split-K sums share one launch at the end (a
        // product dequantizing into the weight slab would overwrite the others' partial sums there).
        let mut group = (outs.len() > 1
            && group_sums_enabled()
            && outs.iter().all(|(w, _)| {
                n > matvec_max(&be.gpu, w.dtype) && dqmm_applies(&be.gpu, w.dtype, n)
            }))
        .then(|| GroupSums::new(s.wbuf.ptr, s.wbuf.bytes));
        let mut i = 0;
        while i < outs.len() {
            let (w, y) = outs[i];
            if n > matvec_max(&be.gpu, w.dtype) {
                // The next product of the same type and width shares the launch (the group takes dqmm).
                if let (Some(g), Some(&(w2, y2))) = (group.as_mut(), outs.get(i + 1)) {
                    if dqmm_pairs_enabled() && w2.dtype == w.dtype && w2.cols == w.cols {
                        let xh = half_input(&be.gpu, s, x, n * w.cols, s.gemm_bf16, &mut converted);
                        let (gpu, bf16) = (&be.gpu, s.gemm_bf16);
                        if DevMat::dqmm_pair_grouped(gpu, (w, y), (w2, y2), xh, n, bf16, g) {
                            i += 2;
                            continue;
                        }
                    }
                }
                let r = w.gemm(be, s, x, n, y, &mut converted, group.as_mut());
                be.gpu.note(r);
                i += 1;
                continue;
            }
            // The run of following matrices of the same type and width, up to three, in one launch.
            let mut j = i + 1;
            while j < outs.len()
                && j - i < 3
                && outs[j].0.dtype == w.dtype
                && outs[j].0.cols == w.cols
                && n <= matvec_max(&be.gpu, outs[j].0.dtype)
            {
                j += 1;
            }
            let acts = if q8_activations() && super::has_q8_path(w.dtype) {
                let (q, d) = *quantized.get_or_insert_with(|| s.q8_of(&be.gpu, x, n * w.cols));
                Acts::Q8(q, d)
            } else {
                Acts::F32(x)
            };
            Self::matvec(&be.gpu, &outs[i..j], acts, n);
            i = j;
        }
        group
    }

    /// `y_j = x · W_jᵀ` for up to three matrices of one type, in launches of up to 8 activation rows.
    fn matvec(gpu: &Gpu, group: &[(&DevMat, u64)], acts: Acts, n: usize) {
        let w0 = group[0].0;
        let k = w0.cols;
        let kk = k as i32;
        let total: usize = group.iter().map(|(w, _)| w.rows).sum();
        let mut c0 = 0;
        while c0 < n {
            let (nc, kernel) = acts.kernel(n - c0, false);
            let mut p = [(0u64, 0u64, 0i32); 3];
            for (slot, &(w, y)) in p.iter_mut().zip(group) {
                *slot = (w.buf.ptr, y + (c0 * w.rows * 4) as u64, w.rows as i32);
            }
            let [(a0, b0, m0), (a1, b1, m1), (a2, b2, m2)] = p;
            let head = [
                arg(&a0),
                arg(&b0),
                arg(&m0),
                arg(&a1),
                arg(&b1),
                arg(&m1),
                arg(&a2),
                arg(&b2),
                arg(&m2),
            ];
            let f = w0.module.f(kernel);
            profile::weight_bytes(f.name, group.iter().map(|(w, _)| w.buf.bytes).sum());
            acts.skip_rows(c0, k).run(
                gpu,
                f,
                total.div_ceil(super::mv_rows()), // weights.cu's NR rows a block
                &head,
                &[arg(&kk)],
            );
            c0 += nc;
        }
    }

    /// `y = act(x · Wgᵀ) * (x · Wuᵀ)` in one fused pass when the step is decode-sized and both matrices
    /// share a type and shape; false (nothing launched) otherwise.
    #[allow(clippy::too_many_arguments)]
    pub fn glu(
        be: &Cuda,
        s: &DevStep,
        gate: &DevMat,
        up: &DevMat,
        x: u64,
        n: usize,
        y: u64,
        act: i32,
    ) -> bool {
        if n == 0
            || gate.dtype != up.dtype
            || (gate.rows, gate.cols) != (up.rows, up.cols)
            || n > matvec_max(&be.gpu, gate.dtype)
        {
            return false;
        }
        let (wg, wu, m, k) = (gate.buf.ptr, up.buf.ptr, gate.rows as i32, gate.cols as i32);
        let acts = if q8_activations() && super::has_q8_path(gate.dtype) {
            let (q, d) = s.q8_of(&be.gpu, x, n * gate.cols);
            Acts::Q8(q, d)
        } else {
            Acts::F32(x)
        };
        let mut c0 = 0;
        while c0 < n {
            let (nc, kernel) = acts.kernel(n - c0, true);
            let yc = y + (c0 * gate.rows * 4) as u64;
            let f = gate.module.f(kernel);
            profile::weight_bytes(f.name, gate.buf.bytes + up.buf.bytes);
            acts.skip_rows(c0, gate.cols).run(
                &be.gpu,
                f,
                gate.rows.div_ceil(super::mv_rows() / 2), // NR / 2 rows of each matrix a block
                &[arg(&wg), arg(&wu)],
                &[arg(&yc), arg(&m), arg(&k), arg(&act)],
            );
            c0 += nc;
        }
        true
    }

    #[allow(clippy::too_many_arguments)]
    fn gemm(
        &self,
        be: &Cuda,
        s: &DevStep,
        x: u64,
        n: usize,
        y: u64,
        converted: &mut Option<(bool, u64)>,
        group: Option<&mut GroupSums>,
    ) -> Result<()> {
        let gpu = &be.gpu;
        let (m, k) = (self.rows, self.cols);
        use bsys::cudaDataType_t as T;
        let mut half = |bf16: bool| half_input(gpu, s, x, n * k, bf16, converted);
        let (wtype, b, btype) = match self.dtype {
            DType::F32 => (T::CUDA_R_32F, x, T::CUDA_R_32F),
            DType::F16 => (T::CUDA_R_16F, half(false), T::CUDA_R_16F),
            DType::BF16 => (T::CUDA_R_16BF, half(true), T::CUDA_R_16BF),
            _ => {
                let t = if s.gemm_bf16 {
                    T::CUDA_R_16BF
                } else {
                    T::CUDA_R_16F
                };
                (t, half(s.gemm_bf16), t)
            }
        };
        if matches!(self.dtype, DType::F32 | DType::F16 | DType::BF16) {
            return gemm_ex(gpu, self.buf.ptr, wtype, b, btype, y, m, n, k, m);
        }
        if dqmm_applies(gpu, self.dtype, n) {
            match group {
                Some(g) => self.dqmm_grouped(gpu, b, n, y, s.gemm_bf16, g),
                None => self.dqmm(gpu, s, b, n, y, s.gemm_bf16),
            }
            return Ok(());
        }
        // Slabs of rows, dequantized into the step's weight scratch, one GEMM each.
        let slab = (s.wbuf.bytes / 2 / k).clamp(1, m);
        let wb = s.wbuf.ptr;
        let mut r0 = 0;
        while r0 < m {
            let r1 = (r0 + slab).min(m);
            self.dequantize_rows(gpu, r0..r1, wb, s.gemm_bf16);
            gemm_ex(
                gpu,
                wb,
                wtype,
                b,
                btype,
                y + (r0 * 4) as u64,
                r1 - r0,
                n,
                k,
                m,
            )?;
            r0 = r1;
        }
        Ok(())
    }

    /// `out[(r - rows.start) * cols + i] = W[r, i]` in f16 (bf16 if `bf16`) for the rows in `rows`: a slab for
    /// a tensor-core GEMM (`out` a device address of room for them).
    pub(super) fn dequantize_rows(
        &self,
        gpu: &Gpu,
        rows: std::ops::Range<usize>,
        out: u64,
        bf16: bool,
    ) {
        let (w, kk, bf) = (self.buf.ptr, self.cols as i32, bf16 as i32);
        let (a, z) = (rows.start as i32, rows.end as i32);
        let units = rows.len() * (self.cols / 32);
        gpu.run(
            self.module.f("dequant_rows"),
            (units.div_ceil(256) as u32, 1, 1),
            (256, 1, 1),
            &mut [arg(&w), arg(&out), arg(&a), arg(&z), arg(&kk), arg(&bf)],
        );
    }

    /// `out[t] = W[tokens[t]] * scale`: embedding rows for `n` tokens (device addresses).
    pub fn embed(&self, gpu: &Gpu, tokens: u64, n: usize, out: u64, scale: Option<f32>) {
        let (w, nn, k) = (self.buf.ptr, n as i32, self.cols as i32);
        let (sc, scaled) = (scale.unwrap_or(1.0), scale.is_some() as i32);
        let units = n * self.cols / 32;
        gpu.run(
            self.module.f("embed_rows"),
            (units.div_ceil(256) as u32, 1, 1),
            (256, 1, 1),
            &mut [
                arg(&w),
                arg(&tokens),
                arg(&out),
                arg(&nn),
                arg(&k),
                arg(&sc),
                arg(&scaled),
            ],
        );
    }
}

/// The GEMM input `x` (`count` floats) in half precision (bf16 when `bf16`): the copy a group made already
/// (`converted`), the one the MLP wrote (act_mul_half), or a new one in the step's buffer.
fn half_input(
    gpu: &Gpu,
    s: &DevStep,
    x: u64,
    count: usize,
    bf16: bool,
    converted: &mut Option<(bool, u64)>,
) -> u64 {
    match *converted {
        Some((b, p)) if b == bf16 => p,
        // The MLP wrote this input in half precision already (act_mul_half).
        _ if s.act_half.get() == Some((x, bf16)) => {
            s.act_half.set(None);
            *converted = Some((bf16, s.h16.ptr));
            s.h16.ptr
        }
        _ => {
            let p = s.to_half(gpu, x, count, bf16);
            *converted = Some((bf16, p));
            p
        }
    }
}

/// `C[n, m] (row-major, leading dimension ldc) = B[n, k] · A[m, k]ᵀ` with A and B row-major; in cuBLAS's
/// column-major terms `Cᵀ = op(A)ᵀ... `: C (m x n, ld ldc) = Aᵀ (A is k x m col-major, ld k) · B (k x n, ld k).
#[allow(clippy::too_many_arguments)]
fn gemm_ex(
    gpu: &Gpu,
    a: u64,
    atype: bsys::cudaDataType_t,
    b: u64,
    btype: bsys::cudaDataType_t,
    c: u64,
    m: usize,
    n: usize,
    k: usize,
    ldc: usize,
) -> Result<()> {
    let (alpha, beta) = (1.0f32, 0.0f32);
    // SAFETY: a, b, c address live device buffers of at least m*k, n*k and n*ldc elements of their types
    // (callers size them so); alpha and beta are host scalars (cuBLAS's default pointer mode).
    let call = || unsafe {
        blas::gemm_ex(
            *gpu.blas.handle(),
            bsys::cublasOperation_t::CUBLAS_OP_T,
            bsys::cublasOperation_t::CUBLAS_OP_N,
            m as i32,
            n as i32,
            k as i32,
            &alpha as *const f32 as *const c_void,
            a as *const c_void,
            atype,
            k as i32,
            b as *const c_void,
            btype,
            k as i32,
            &beta as *const f32 as *const c_void,
            c as *mut c_void,
            bsys::cudaDataType_t::CUDA_R_32F,
            ldc as i32,
            bsys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
            bsys::cublasGemmAlgo_t::CUBLAS_GEMM_DFALT,
        )
    };
    let r = if super::profile::enabled() {
        super::profile::timed("gemm (cuBLAS)", gpu.cu_stream(), call)
    } else {
        call()
    };
    r.map_err(|e| Error::Other(format!("cuBLAS GEMM ({m}x{n}x{k}): {e:?}")))
}

/// Bytes allocated after a weight matrix's data (see `upload_bytes`).
pub(super) const WEIGHT_PAD: usize = 16;

/// Copies a tensor's bytes to a new device buffer in pieces, reporting progress after each.
fn upload_bytes(be: &Cuda, bytes: &[u8]) -> Result<DevBuf> {
    const PIECE: usize = 64 << 20;
    // WEIGHT_PAD spare bytes after the data: decode_fast.cuh's aligned loads of 2-byte-aligned fields may
    // read up to 4 bytes past the last block.
    let buf = DevBuf::alloc(&be.gpu.ctx, bytes.len() + WEIGHT_PAD)?;
    for (i, piece) in bytes.chunks(PIECE).enumerate() {
        upload(be.gpu.cu_stream(), buf.at(i * PIECE), piece)?;
        let (done, total) = {
            let mut p = be.progress.lock().expect("progress");
            p.0 += piece.len();
            *p
        };
        if let Some(f) = &be.on_progress {
            f(done.min(total), total);
        }
    }
    drv("synchronize", be.gpu.stream.synchronize())?;
    Ok(buf)
}
