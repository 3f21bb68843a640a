//! Weight matrices on the GPU and the products with them.
//!
//! A matrix is uploaded once in the file's own block format. `y = x · Wᵀ` for `n` activation rows takes one of
//! two paths:
//! - up to a few rows (decode): `matvec_N` kernels decode each block once and multiply it with the N rows, so
//!   the weights are read once per step at (ideally) memory bandwidth;
//! - more rows (prefill, large batches): activations go to f16/bf16, the matrix is dequantized a slab of rows
//!   at a time into a scratch buffer (skipped when it is already f16/bf16), and cuBLAS multiplies on the
//!   tensor cores with f32 accumulation and f32 output.

use std::ffi::c_void;
use std::sync::Arc;

use cudarc::cublas::{result as blas, sys as bsys};

use super::memory::{arg, drv, upload, DevBuf};
use super::{Cuda, DevStep, Gpu, Module};
use crate::error::{Error, Result};
use crate::tensor::{DType, Tensor};

/// Most activation rows one matvec launch takes (`matvec_1` .. `matvec_8`).
const MATVEC_COLS: usize = 8;

/// A weight matrix `[rows, cols]` in device memory, in its file's block format.
pub struct DevMat {
    buf: Arc<DevBuf>,
    pub dtype: DType,
    pub rows: usize,
    pub cols: usize,
    module: Arc<Module>,
}

/// Up to how many activation rows the matvec path is used: quantized weights are read once per 8 rows, so
/// matvec wins over dequantize-and-GEMM (which writes and reads 2 bytes per weight) up to a few passes; for
/// f16/bf16 weights cuBLAS reads them as they are and wins early. `HEARTH_CUDA_MATVEC_MAX` overrides (for
/// benchmarks).
fn matvec_max(dtype: DType) -> usize {
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
        _ => 16,
    }
}

impl DevMat {
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
        if n == 0 {
            return;
        }
        if n <= matvec_max(self.dtype) {
            self.matvec(&be.gpu, x, n, y);
        } else {
            let r = self.gemm(be, s, x, n, y);
            be.gpu.note(r);
        }
    }

    fn matvec(&self, gpu: &Gpu, x: u64, n: usize, y: u64) {
        let (m, k) = (self.rows as i32, self.cols as i32);
        let w = self.buf.ptr;
        let (ldy, acc) = (m, 0i32);
        let mut c0 = 0;
        while c0 < n {
            let nc = (n - c0).min(MATVEC_COLS);
            let xc = x + (c0 * self.cols * 4) as u64;
            let yc = y + (c0 * self.rows * 4) as u64;
            let f = self.module.f(super::WEIGHT_KERNELS[nc - 1]);
            gpu.run(
                f,
                (self.rows.div_ceil(4) as u32, 1, 1),
                (128, 1, 1),
                &mut [
                    arg(&w),
                    arg(&xc),
                    arg(&yc),
                    arg(&m),
                    arg(&k),
                    arg(&ldy),
                    arg(&acc),
                ],
            );
            c0 += nc;
        }
    }

    fn gemm(&self, be: &Cuda, s: &DevStep, x: u64, n: usize, y: u64) -> Result<()> {
        let gpu = &be.gpu;
        let (m, k) = (self.rows, self.cols);
        use bsys::cudaDataType_t as T;
        let (wtype, b, btype) = match self.dtype {
            DType::F32 => (T::CUDA_R_32F, x, T::CUDA_R_32F),
            DType::F16 => (
                T::CUDA_R_16F,
                s.to_half(gpu, x, n * k, false),
                T::CUDA_R_16F,
            ),
            DType::BF16 => (
                T::CUDA_R_16BF,
                s.to_half(gpu, x, n * k, true),
                T::CUDA_R_16BF,
            ),
            _ => {
                let t = if s.gemm_bf16 {
                    T::CUDA_R_16BF
                } else {
                    T::CUDA_R_16F
                };
                (t, s.to_half(gpu, x, n * k, s.gemm_bf16), t)
            }
        };
        if matches!(self.dtype, DType::F32 | DType::F16 | DType::BF16) {
            return gemm_ex(gpu, self.buf.ptr, wtype, b, btype, y, m, n, k, m);
        }
        // Slabs of rows, dequantized into the step's weight scratch, one GEMM each.
        let slab = (s.wbuf.bytes / 2 / k).clamp(1, m);
        let (w, wb, kk, bf) = (self.buf.ptr, s.wbuf.ptr, k as i32, s.gemm_bf16 as i32);
        let mut r0 = 0;
        while r0 < m {
            let r1 = (r0 + slab).min(m);
            let (a, z) = (r0 as i32, r1 as i32);
            let units = (r1 - r0) * (k / 32);
            gpu.run(
                self.module.f("dequant_rows"),
                (units.div_ceil(256) as u32, 1, 1),
                (256, 1, 1),
                &mut [arg(&w), arg(&wb), arg(&a), arg(&z), arg(&kk), arg(&bf)],
            );
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
    unsafe {
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
    }
    .map_err(|e| Error::Other(format!("cuBLAS GEMM ({m}x{n}x{k}): {e:?}")))
}

/// Copies a tensor's bytes to a new device buffer in pieces, reporting progress after each.
fn upload_bytes(be: &Cuda, bytes: &[u8]) -> Result<DevBuf> {
    const PIECE: usize = 64 << 20;
    let buf = DevBuf::alloc(&be.gpu.ctx, bytes.len())?;
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
