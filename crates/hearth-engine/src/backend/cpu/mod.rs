//! CPU kernels: products of weight rows (any [`DType`]) with f32 activations, plus the f32 vector helpers
//! attention needs.
//!
//! Each operation has a scalar reference (`dot.rs`, and `tensor::quants` for dequantization) and, on x86_64,
//! an AVX2+FMA+F16C version (`avx2/`), on aarch64 a NEON one (`neon/`), chosen once at run time. Activations are never quantized: a block's
//! weights are decoded to f32 lanes and multiplied with `x` directly. `matmul` splits rows across the rayon
//! pool; the only memory it takes is a per-thread scratch buffer that is kept between calls.

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
mod dot;
pub mod features;
#[cfg(target_arch = "aarch64")]
mod neon;
pub mod ops;
pub mod qdot;

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use rayon::prelude::*;

use crate::tensor::{DType, Tensor};

/// Rows per rayon task in a matrix-vector product.
const MATVEC_CHUNK: usize = 32;
/// Below this many multiply-adds a product runs on the calling thread: splitting costs more than it saves.
const PAR_MIN_WORK: usize = 1 << 16;
/// Target size of the dequantized rows a multi-token task keeps in its scratch (fits in L2 with room).
const SCRATCH_TARGET_BYTES: usize = 64 * 1024;

/// The kernel set picked for this CPU.
#[derive(Clone, Copy)]
struct Simd {
    #[cfg(target_arch = "x86_64")]
    avx2: Option<avx2::Avx2>,
    #[cfg(target_arch = "aarch64")]
    neon: Option<neon::Neon>,
}

impl Simd {
    fn get() -> Simd {
        static SIMD: OnceLock<Simd> = OnceLock::new();
        *SIMD.get_or_init(|| Simd {
            #[cfg(target_arch = "x86_64")]
            avx2: avx2::Avx2::detect(),
            #[cfg(target_arch = "aarch64")]
            neon: neon::Neon::detect(),
        })
    }

    fn name(self) -> &'static str {
        #[cfg(target_arch = "x86_64")]
        if self.avx2.is_some() {
            return "avx2+fma+f16c";
        }
        #[cfg(target_arch = "aarch64")]
        if self.neon.is_some() {
            return "neon";
        }
        "scalar"
    }

    /// Bit-identical to `f32_dot(dequantize(row), x)`, which the many-token path computes: a matmul's result
    /// must not depend on how many tokens it holds (batched and single-sequence runs agree exactly).
    fn dot(self, dtype: DType, row: &[u8], x: &[f32]) -> f32 {
        #[cfg(target_arch = "x86_64")]
        if let Some(a) = self.avx2 {
            return a.dot(dtype, row, x);
        }
        #[cfg(target_arch = "aarch64")]
        if let Some(n) = self.neon {
            return n.dot(dtype, row, x);
        }
        ROW.with(|r| {
            let mut r = r.borrow_mut();
            r.resize(x.len(), 0.0);
            crate::tensor::quants::dequantize_row(dtype, row, &mut r);
            dot::f32_dot(&r, x)
        })
    }

    fn dequantize(self, dtype: DType, row: &[u8], out: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if let Some(a) = self.avx2 {
            return a.dequantize(dtype, row, out);
        }
        #[cfg(target_arch = "aarch64")]
        if let Some(n) = self.neon {
            return n.dequantize(dtype, row, out);
        }
        crate::tensor::quants::dequantize_row(dtype, row, out)
    }

    fn f32_dot(self, a: &[f32], b: &[f32]) -> f32 {
        #[cfg(target_arch = "x86_64")]
        if let Some(s) = self.avx2 {
            return s.f32_dot(a, b);
        }
        #[cfg(target_arch = "aarch64")]
        if let Some(n) = self.neon {
            return n.f32_dot(a, b);
        }
        dot::f32_dot(a, b)
    }

    fn axpy(self, a: f32, x: &[f32], y: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if let Some(s) = self.avx2 {
            return s.axpy(a, x, y);
        }
        #[cfg(target_arch = "aarch64")]
        if let Some(n) = self.neon {
            return n.axpy(a, x, y);
        }
        dot::axpy(a, x, y)
    }

    /// Dot products of four consecutive `x.len()`-long rows of `w` with `x`.
    fn dot4(self, w: &[f32], x: &[f32]) -> [f32; 4] {
        #[cfg(target_arch = "x86_64")]
        if let Some(s) = self.avx2 {
            return s.dot4(w, x);
        }
        #[cfg(target_arch = "aarch64")]
        if let Some(n) = self.neon {
            return n.dot4(w, x);
        }
        let n = x.len();
        std::array::from_fn(|r| dot::f32_dot(&w[r * n..(r + 1) * n], x))
    }
}

/// Panics unless `row` holds the whole blocks of `n` weights of `dtype` (a caller's bug, never bad input:
/// the loaders validate shapes against types).
fn check_row(dtype: DType, row: &[u8], n: usize) {
    match dtype.bytes_for(n) {
        Some(nb) if nb <= row.len() => {}
        Some(nb) => panic!(
            "{dtype} row of {n} weights needs {nb} bytes, got {}",
            row.len()
        ),
        None => panic!(
            "{n} is not a whole number of {dtype} blocks of {}",
            dtype.block_elems()
        ),
    }
}

/// Which kernel set runs on this machine (`"avx2+fma+f16c"`, `"neon"` or `"scalar"`), for `hearth bench` and
/// logs.
pub fn kernel_name() -> &'static str {
    Simd::get().name()
}

/// `sum(w[i] * x[i])` over one row of `dtype` weights (`x.len()` of them, whole blocks), with the fastest
/// kernel this CPU has. The building block of every matrix product; exported for tests and for callers
/// that need a single row (e.g. a classifier head).
pub fn dot(dtype: DType, row: &[u8], x: &[f32]) -> f32 {
    check_row(dtype, row, x.len());
    Simd::get().dot(dtype, row, x)
}

/// The scalar reference for [`dot`]: dequantizes with the bit-exact reference and accumulates chunk sums
/// in f64. Exported so tests (and `hearth bench`) can compare the fast kernels against it.
pub fn dot_scalar(dtype: DType, row: &[u8], x: &[f32]) -> f32 {
    check_row(dtype, row, x.len());
    dot::dot(dtype, row, x)
}

/// Dequantizes one row of `dtype` (`out.len()` weights, whole blocks) with the fastest kernel; bit-exact
/// with `tensor::quants::dequantize_row` (except that F16 NaNs may come out quieted). For embedding lookups
/// and the multi-token matmul.
pub fn dequantize(dtype: DType, row: &[u8], out: &mut [f32]) {
    check_row(dtype, row, out.len());
    Simd::get().dequantize(dtype, row, out)
}

/// `sum(a[i] * b[i])` for two f32 vectors of equal length: attention scores (q · k).
pub fn f32_dot(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "f32_dot of different lengths");
    Simd::get().f32_dot(a, b)
}

/// `y[i] += a * x[i]` for two f32 vectors of equal length: attention's weighted sum of values.
pub fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    assert_eq!(x.len(), y.len(), "axpy of different lengths");
    Simd::get().axpy(a, x, y)
}

/// A pointer to `out` that tasks writing disjoint elements share.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: every task writes a distinct set of elements (its own rows), and `matmul` holds `&mut out` until
// all tasks have finished.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// # Safety
    /// `i` is in bounds of the slice this came from and no other task writes element `i`.
    unsafe fn write(self, i: usize, v: f32) {
        *self.0.add(i) = v;
    }
}

/// 8-bit activations with integer dot products (see [`set_quantized_activations`]).
static QUANTIZED: AtomicBool = AtomicBool::new(false);

/// Chooses how activations meet block-quantized weights. Off (the default), activations stay in f32, so
/// results match an f32 reference on the dequantized weights to float rounding (the conformance tests against
/// transformers hold). On, each token's activations are quantized once to 8-bit blocks and the types with
/// integer kernels (`qdot`: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K) use them: faster decode, with the
/// small extra error llama.cpp also accepts (perplexity of the real test models moves by under 0.5%, but greedy
/// continuations can leave transformers' at near ties). Both modes are batch-invariant. Process-wide.
pub fn set_quantized_activations(on: bool) {
    QUANTIZED.store(on, Ordering::Relaxed);
}

/// Whether activations are quantized (see [`set_quantized_activations`]).
pub fn quantized_activations() -> bool {
    QUANTIZED.load(Ordering::Relaxed)
}

/// `matmul` with 8-bit activations: each token's `x` is quantized once (`quant`), then every row is an
/// integer dot product (`dot`) with each token. Per (row, token) the work is the same whatever the batch.
fn matmul_q8<R: Sync + Default + 'static>(
    w: &Tensor,
    x: &[f32],
    n_tokens: usize,
    out: &mut [f32],
    scratch: &'static std::thread::LocalKey<RefCell<Vec<R>>>,
    quant: fn(&[f32], &mut R),
    dot: fn(DType, &[u8], &R) -> f32,
) {
    let (rows, cols, dtype) = (w.rows(), w.cols(), w.dtype);
    let rb = w.row_bytes();
    let bytes = w.bytes();
    scratch.with(|xq| {
        let mut xq = xq.borrow_mut();
        if xq.len() < n_tokens {
            xq.resize_with(n_tokens, R::default);
        }
        for (t, q) in xq.iter_mut().take(n_tokens).enumerate() {
            quant(&x[t * cols..(t + 1) * cols], q);
        }
        let xq = &xq[..n_tokens];
        let outp = OutPtr(out.as_mut_ptr());
        let task = |c: usize| {
            let (r0, r1) = (c * MATVEC_CHUNK, ((c + 1) * MATVEC_CHUNK).min(rows));
            for r in r0..r1 {
                let row = &bytes[r * rb..(r + 1) * rb];
                for (t, q) in xq.iter().enumerate() {
                    // SAFETY: t < n_tokens and r < rows, in bounds of `out`; row r belongs to this task only.
                    unsafe { outp.write(t * rows + r, dot(dtype, row, q)) };
                }
            }
        };
        let n_chunks = rows.div_ceil(MATVEC_CHUNK);
        if rows * cols * n_tokens < PAR_MIN_WORK {
            (0..n_chunks).for_each(task);
        } else {
            (0..n_chunks).into_par_iter().for_each(task);
        }
    });
}

thread_local! {
    /// Each token's activations quantized to 8-bit 32-blocks / 256-blocks, reused between calls.
    static XQ: RefCell<Vec<qdot::Q8Row>> = const { RefCell::new(Vec::new()) };
    static XQK: RefCell<Vec<qdot::Q8KRow>> = const { RefCell::new(Vec::new()) };
    /// Dequantized rows of the current multi-token task; grows to its largest use and stays.
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// One dequantized row for the portable (non-SIMD) matvec.
    static ROW: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// `out[t * rows + r] = dot(w.row(r), x[t * cols .. (t + 1) * cols])` for `n_tokens` activation rows of
/// `cols = w.cols()` elements; `out` holds `n_tokens * rows` values. Every linear layer runs through here.
///
/// One token (decode) is a matrix-vector product, rows split across threads in chunks, each row's blocks
/// decoded and multiplied with `x` on the fly. Several tokens (prefill) dequantize each row once into a
/// per-thread scratch, a few rows at a time, and multiply them with every token, four rows per pass.
pub fn matmul(w: &Tensor, x: &[f32], n_tokens: usize, out: &mut [f32]) {
    let (rows, cols, dtype) = (w.rows(), w.cols(), w.dtype);
    assert!(
        x.len() >= n_tokens * cols,
        "matmul {}: x has {} values, needs {n_tokens} x {cols}",
        w.name,
        x.len()
    );
    assert!(
        out.len() >= n_tokens * rows,
        "matmul {}: out has {} values, needs {n_tokens} x {rows}",
        w.name,
        out.len()
    );
    if rows == 0 || n_tokens == 0 {
        return;
    }
    let rb = w.row_bytes();
    let bytes = w.bytes();
    assert!(
        bytes.len() >= rows * rb,
        "matmul {}: {} bytes for {rows} rows of {rb}",
        w.name,
        bytes.len()
    );
    if quantized_activations() {
        if qdot::supports(dtype) {
            return matmul_q8(w, x, n_tokens, out, &XQ, qdot::quantize_q8, qdot::qdot);
        }
        if qdot::supports_k(dtype) {
            return matmul_q8(w, x, n_tokens, out, &XQK, qdot::quantize_q8k, qdot::qdot_k);
        }
    }
    let simd = Simd::get();

    if n_tokens == 1 {
        let x = &x[..cols];
        let run = |r0: usize, o: &mut [f32]| {
            for (i, v) in o.iter_mut().enumerate() {
                let r = r0 + i;
                *v = simd.dot(dtype, &bytes[r * rb..(r + 1) * rb], x);
            }
        };
        let out = &mut out[..rows];
        if rows * cols < PAR_MIN_WORK {
            run(0, out);
        } else {
            out.par_chunks_mut(MATVEC_CHUNK)
                .enumerate()
                .for_each(|(c, o)| run(c * MATVEC_CHUNK, o));
        }
        return;
    }

    // Rows per task: a multiple of four whose f32 copies fit the scratch target (at least four).
    let chunk = (SCRATCH_TARGET_BYTES / (4 * cols.max(1)) / 4 * 4).clamp(4, 64);
    let n_chunks = rows.div_ceil(chunk);
    let outp = OutPtr(out.as_mut_ptr());
    let task = |c: usize| {
        let (r0, r1) = (c * chunk, ((c + 1) * chunk).min(rows));
        let nr = r1 - r0;
        SCRATCH.with(|s| {
            let mut s = s.borrow_mut();
            if s.len() < nr * cols {
                s.resize(nr * cols, 0.0);
            }
            let s = &mut s[..nr * cols];
            for (i, dst) in s.chunks_exact_mut(cols).enumerate() {
                let r = r0 + i;
                simd.dequantize(dtype, &bytes[r * rb..(r + 1) * rb], dst);
            }
            for t in 0..n_tokens {
                let xt = &x[t * cols..(t + 1) * cols];
                let base = t * rows + r0;
                let mut i = 0;
                while i + 4 <= nr {
                    let v = simd.dot4(&s[i * cols..(i + 4) * cols], xt);
                    for (k, &vk) in v.iter().enumerate() {
                        // SAFETY: t < n_tokens and r0 + i + k < rows, so in bounds of `out`; row r0 + i + k
                        // belongs to this task only.
                        unsafe { outp.write(base + i + k, vk) };
                    }
                    i += 4;
                }
                while i < nr {
                    let v = simd.f32_dot(&s[i * cols..(i + 1) * cols], xt);
                    // SAFETY: as above.
                    unsafe { outp.write(base + i, v) };
                    i += 1;
                }
            }
        });
    };
    if rows * cols * n_tokens < PAR_MIN_WORK || n_chunks == 1 {
        (0..n_chunks).for_each(task);
    } else {
        (0..n_chunks).into_par_iter().for_each(task);
    }
}
