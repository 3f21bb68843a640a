//! CPU kernels: products of weight rows (any [`DType`]) with f32 activations, plus the f32 vector helpers
//! attention needs.
//!
//! Each operation has a scalar reference (`dot.rs`, and `tensor::quants` for dequantization) and SIMD
//! versions (x86_64: `avx512/` over `avx2/`; aarch64: `neon/`), the highest the CPU has chosen once at run
//! time (`features` caps the level; `levels` runs any one level, for tests and benchmarks). Activations meet
//! block-quantized weights in f32 (weights decoded to f32 lanes) or, with [`set_quantized_activations`], as
//! 8-bit blocks with integer dot products (`qdot`). `matmul` splits rows across the kernel pool (`pool`); the
//! only memory it takes is per-thread scratch kept between calls.

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
mod dot;
pub mod features;
pub mod levels;
#[cfg(target_arch = "aarch64")]
mod neon;
pub mod ops;
pub mod pool;
pub mod qdot;
pub mod step;

pub use step::Cpu;

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use crate::tensor::{DType, Tensor};

/// Below this many multiply-adds a product runs on the calling thread: splitting costs more than it saves.
const PAR_MIN_WORK: usize = 1 << 16;
/// Target size of the dequantized rows a multi-token task keeps in its scratch (fits in L2 with room).
const SCRATCH_TARGET_BYTES: usize = 64 * 1024;

/// The kernel set picked for this CPU: the highest level present and allowed (AVX-512, then AVX2, then the
/// scalar reference). Each operation runs entirely at one level, so that `dot` at that level stays
/// bit-identical to `f32_dot(dequantize(..))` and `dot4`.
#[derive(Clone, Copy)]
struct Simd {
    #[cfg(target_arch = "x86_64")]
    avx512: Option<avx512::Avx512>,
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
            avx512: avx512::Avx512::detect(),
            #[cfg(target_arch = "x86_64")]
            avx2: avx2::Avx2::detect(),
            #[cfg(target_arch = "aarch64")]
            neon: neon::Neon::detect(),
        })
    }

    /// The kernels of exactly `level`, if this CPU has it and `HEARTH_KERNELS` allows it (for `levels`).
    fn at(level: features::Level) -> Option<Simd> {
        let scalar = Simd {
            #[cfg(target_arch = "x86_64")]
            avx512: None,
            #[cfg(target_arch = "x86_64")]
            avx2: None,
            #[cfg(target_arch = "aarch64")]
            neon: None,
        };
        match level {
            features::Level::Scalar => Some(scalar),
            #[cfg(target_arch = "x86_64")]
            features::Level::Avx2 => Some(Simd {
                avx2: Some(avx2::Avx2::detect()?),
                ..scalar
            }),
            #[cfg(target_arch = "x86_64")]
            features::Level::Avx512 => Some(Simd {
                avx512: Some(avx512::Avx512::detect()?),
                ..scalar
            }),
            #[cfg(target_arch = "aarch64")]
            features::Level::Neon => Some(Simd {
                neon: Some(neon::Neon::detect()?),
            }),
            _ => None,
        }
    }

    fn level(self) -> features::Level {
        #[cfg(target_arch = "x86_64")]
        if self.avx512.is_some() {
            return features::Level::Avx512;
        }
        #[cfg(target_arch = "x86_64")]
        if self.avx2.is_some() {
            return features::Level::Avx2;
        }
        #[cfg(target_arch = "aarch64")]
        if self.neon.is_some() {
            return features::Level::Neon;
        }
        features::Level::Scalar
    }

    fn name(self) -> &'static str {
        match self.level() {
            features::Level::Avx512 => "avx512",
            features::Level::Avx2 => "avx2+fma+f16c",
            features::Level::Neon => "neon",
            features::Level::Scalar => "scalar",
        }
    }

    /// Bit-identical to `f32_dot(dequantize(row), x)`, which the many-token path computes: a matmul's result
    /// must not depend on how many tokens it holds (batched and single-sequence runs agree exactly).
    fn dot(self, dtype: DType, row: &[u8], x: &[f32]) -> f32 {
        #[cfg(target_arch = "x86_64")]
        if let Some(a) = self.avx512 {
            return a.dot(dtype, row, x);
        }
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
        if let Some(a) = self.avx512 {
            return a.dequantize(dtype, row, out);
        }
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
        if let Some(s) = self.avx512 {
            return s.f32_dot(a, b);
        }
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
        if let Some(s) = self.avx512 {
            return s.axpy(a, x, y);
        }
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

    /// `out[j] = f32_dot(q, k[j * stride..][..q.len()])`, bit-identical to one `f32_dot` per key.
    fn dots_strided(self, q: &[f32], k: &[f32], stride: usize, out: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if let Some(s) = self.avx512 {
            return s.dots_strided(q, k, stride, out);
        }
        #[cfg(target_arch = "x86_64")]
        if let Some(s) = self.avx2 {
            return s.dots_strided(q, k, stride, out);
        }
        for (j, o) in out.iter_mut().enumerate() {
            *o = self.f32_dot(q, &k[j * stride..][..q.len()]);
        }
    }

    /// `y += w[j] * v[j * stride..][..y.len()]` in order of `j`, bit-identical to one `axpy` per value.
    fn axpys_strided(self, w: &[f32], v: &[f32], stride: usize, y: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if let Some(s) = self.avx512 {
            return s.axpys_strided(w, v, stride, y);
        }
        #[cfg(target_arch = "x86_64")]
        if let Some(s) = self.avx2 {
            return s.axpys_strided(w, v, stride, y);
        }
        for (j, &wj) in w.iter().enumerate() {
            self.axpy(wj, &v[j * stride..][..y.len()], y);
        }
    }

    /// Dot products of four consecutive `x.len()`-long rows of `w` with `x`.
    fn dot4(self, w: &[f32], x: &[f32]) -> [f32; 4] {
        #[cfg(target_arch = "x86_64")]
        if let Some(s) = self.avx512 {
            return s.dot4(w, x);
        }
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

/// `dot` for a weight type a level has no fused kernel for: the row decoded by `decode` (into a per-thread
/// buffer of `n` floats), then multiplied by `dot`. Equal by construction to `f32_dot(dequantize(row), x)` at
/// the same level, which is what the multi-token path computes.
pub(super) fn dot_decoded(
    n: usize,
    decode: impl FnOnce(&mut [f32]),
    dot: impl FnOnce(&[f32]) -> f32,
) -> f32 {
    ROW.with(|r| {
        let mut r = r.borrow_mut();
        r.resize(n, 0.0);
        decode(&mut r);
        dot(&r)
    })
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

/// Which kernel set runs on this machine (`"avx512"`, `"avx2+fma+f16c"`, `"neon"` or `"scalar"`), for
/// `hearth bench` and logs.
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

/// Attention scores of one query against a run of keys stored `stride` floats apart:
/// `out[j] = f32_dot(q, k[j * stride..][..q.len()])`, in one call (bit-identical to a call per key).
pub fn dots_strided(q: &[f32], k: &[f32], stride: usize, out: &mut [f32]) {
    if let Some(last) = out.len().checked_sub(1) {
        assert!(
            last * stride + q.len() <= k.len(),
            "dots_strided: {} keys of {} at stride {stride} in {} floats",
            out.len(),
            q.len(),
            k.len()
        );
        Simd::get().dots_strided(q, k, stride, out)
    }
}

/// Attention's weighted sum over a run of values stored `stride` floats apart: `y += w[j] * v[j * stride..]
/// [..y.len()]` in order of `j` (bit-identical to an [`axpy`] per value).
pub fn axpys_strided(w: &[f32], v: &[f32], stride: usize, y: &mut [f32]) {
    if let Some(last) = w.len().checked_sub(1) {
        assert!(
            last * stride + y.len() <= v.len(),
            "axpys_strided: {} values of {} at stride {stride} in {} floats",
            w.len(),
            y.len(),
            v.len()
        );
        Simd::get().axpys_strided(w, v, stride, y)
    }
}

/// A pointer to `out` that tasks writing disjoint elements share.
#[derive(Clone, Copy)]
pub(crate) struct OutPtr(*mut f32);
// SAFETY: every task writes a distinct set of elements (its own rows), and `matmul` holds `&mut out` until
// all tasks have finished.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// The pointer to element `i` (a method, so closures capture the whole `Sync` wrapper).
    pub(crate) fn at(self, i: usize) -> *mut f32 {
        self.0.wrapping_add(i)
    }

    /// # Safety
    /// `i` is in bounds of the slice this came from and no other task writes element `i`.
    unsafe fn write(self, i: usize, v: f32) {
        *self.0.add(i) = v;
    }
}

/// 8-bit activations with integer dot products (see [`set_quantized_activations`]).
static QUANTIZED: AtomicBool = AtomicBool::new(false);

/// Chooses how activations meet block-quantized weights. Off (the library's default), activations stay in
/// f32, so results match an f32 reference on the dequantized weights to float rounding (the conformance tests
/// against transformers hold). On (the `hearth` binary's default), each token's activations are quantized once
/// to 8-bit blocks and the types with integer kernels (`qdot`: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K..Q6_K) use
/// them: about twice the decode speed, with the small extra error llama.cpp also accepts (perplexity of the
/// real test models moves by under 0.5%, but greedy continuations can leave transformers' at near ties).
/// Both modes are batch-invariant. Process-wide.
pub fn set_quantized_activations(on: bool) {
    QUANTIZED.store(on, Ordering::Relaxed);
}

/// Whether activations are quantized (see [`set_quantized_activations`]).
pub fn quantized_activations() -> bool {
    QUANTIZED.load(Ordering::Relaxed)
}

thread_local! {
    /// The caller's activations quantized to 8-bit 32-blocks / 256-blocks, one per token, reused between
    /// calls (the workers read them through a shared borrow while the caller waits).
    static XQ: RefCell<Vec<qdot::Q8Row>> = const { RefCell::new(Vec::new()) };
    static XQK: RefCell<Vec<qdot::Q8KRow>> = const { RefCell::new(Vec::new()) };
    /// Dequantized rows of the current multi-token task; grows to its largest use and stays.
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// One dequantized row for the portable (non-SIMD) matvec.
    static ROW: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// How one weight matrix of a product meets its activations.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Path {
    /// f32 activations; each row decoded to f32 (on the fly for one token, into scratch for several).
    Float,
    /// Integer dot products against 8-bit 32-blocks (`qdot::qdot`).
    Q8,
    /// Integer dot products against 8-bit 256-blocks (`qdot::qdot_k`).
    Q8K,
}

fn path_for(dtype: DType) -> Path {
    if !quantized_activations() {
        Path::Float
    } else if qdot::supports(dtype) {
        Path::Q8
    } else if qdot::supports_k(dtype) {
        Path::Q8K
    } else {
        Path::Float
    }
}

/// Most matrices one grouped product takes (q, k, v is the largest group a layer has).
const MAX_GROUP: usize = 4;

/// `out[t * rows + r] = dot(w.row(r), x[t * cols .. (t + 1) * cols])` for `n_tokens` activation rows of
/// `cols = w.cols()` elements; `out` holds `n_tokens * rows` values. Every linear layer runs through here
/// (or through [`matmul_group`]).
pub fn matmul(w: &Tensor, x: &[f32], n_tokens: usize, out: &mut [f32]) {
    matmul_group(&[w], x, n_tokens, &mut [out]);
}

/// [`matmul`] of several matrices with the same input (a layer's q, k and v; gate and up) as one parallel
/// loop: the input is quantized once, and small matrices (k and v under grouped-query attention) share the
/// threads with large ones instead of each paying a fork and a join. `ws[i]`'s result goes to `outs[i]`.
///
/// Rows are split across the kernel pool in chunks. One token (decode) is a matrix-vector product, each row's
/// blocks decoded and multiplied with `x` on the fly. Several tokens (prefill) on the f32 path dequantize a
/// chunk of rows once into per-thread scratch and multiply them with every token, four rows per pass. Every
/// (row, token) result is the same whatever the batch, the chunking or the thread count.
pub fn matmul_group(ws: &[&Tensor], x: &[f32], n_tokens: usize, outs: &mut [&mut [f32]]) {
    assert!(
        ws.len() == outs.len() && ws.len() <= MAX_GROUP,
        "matmul_group of {} matrices and {} outputs",
        ws.len(),
        outs.len()
    );
    if n_tokens == 0 || ws.is_empty() {
        return;
    }
    let cols = ws[0].cols();
    for (w, out) in ws.iter().zip(outs.iter()) {
        let (rows, rb) = (w.rows(), w.row_bytes());
        assert!(
            w.cols() == cols,
            "matmul_group: {} has {} columns, expected {cols}",
            w.name,
            w.cols()
        );
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
        assert!(
            w.bytes().len() >= rows * rb,
            "matmul {}: {} bytes for {rows} rows of {rb}",
            w.name,
            w.bytes().len()
        );
    }
    let paths: [Path; MAX_GROUP] =
        std::array::from_fn(|i| ws.get(i).map_or(Path::Float, |w| path_for(w.dtype)));
    let paths = &paths[..ws.len()];
    XQ.with_borrow_mut(|xq| {
        XQK.with_borrow_mut(|xqk| {
            if paths.contains(&Path::Q8) {
                quantize_tokens(xq, x, n_tokens, cols, qdot::quantize_q8);
            }
            if paths.contains(&Path::Q8K) {
                quantize_tokens(xqk, x, n_tokens, cols, qdot::quantize_q8k);
            }
            let acts = Acts {
                x: &x[..n_tokens * cols],
                xq: if paths.contains(&Path::Q8) {
                    &xq[..n_tokens]
                } else {
                    &[]
                },
                xqk: if paths.contains(&Path::Q8K) {
                    &xqk[..n_tokens]
                } else {
                    &[]
                },
                n_tokens,
            };
            run_group(ws, paths, &acts, outs);
        })
    });
}

/// Quantizes each token's `cols` activations into `q[t]`, growing `q` (never shrinking) as needed.
fn quantize_tokens<R: Default>(
    q: &mut Vec<R>,
    x: &[f32],
    n_tokens: usize,
    cols: usize,
    quant: fn(&[f32], &mut R),
) {
    if q.len() < n_tokens {
        q.resize_with(n_tokens, R::default);
    }
    for (t, qt) in q.iter_mut().take(n_tokens).enumerate() {
        quant(&x[t * cols..(t + 1) * cols], qt);
    }
}

/// The activations of one product in every form its paths need.
struct Acts<'a> {
    x: &'a [f32],
    xq: &'a [qdot::Q8Row],
    xqk: &'a [qdot::Q8KRow],
    n_tokens: usize,
}

/// Tasks per thread a matrix of a one-token product is cut into. Each task is a contiguous run of rows, so
/// every core streams long runs of memory (the hardware prefetcher's best case: interleaving small chunks
/// between cores ran two threads slower than one), while a few tasks per thread still let a thread that
/// was descheduled hand its share to the others.
const MATVEC_TASKS_PER_THREAD: usize = 3;
/// Fewest rows in a one-token task.
const MATVEC_MIN_ROWS: usize = 16;

/// Splits every matrix of the group into row chunks and runs them all as one parallel loop.
fn run_group(ws: &[&Tensor], paths: &[Path], a: &Acts, outs: &mut [&mut [f32]]) {
    let cols = ws[0].cols();
    // Rows per task for each matrix: decode chunks, or (several tokens, f32 path) a multiple of four rows
    // whose f32 copies fit the scratch target.
    let chunk: [usize; MAX_GROUP] = std::array::from_fn(|i| match paths.get(i) {
        Some(Path::Float) if a.n_tokens > 1 => {
            (SCRATCH_TARGET_BYTES / (4 * cols.max(1)) / 4 * 4).clamp(4, 64)
        }
        _ => {
            let per = MATVEC_TASKS_PER_THREAD * pool::threads();
            let rows = ws.get(i).map_or(0, |w| w.rows());
            rows.div_ceil(per).next_multiple_of(4).max(MATVEC_MIN_ROWS)
        }
    });
    // first[i]: index of matrix i's first task; first[ws.len()]: the task count.
    let mut first = [0usize; MAX_GROUP + 1];
    let mut work = 0usize;
    for (i, w) in ws.iter().enumerate() {
        first[i + 1] = first[i] + w.rows().div_ceil(chunk[i]);
        work += w.rows() * cols * a.n_tokens;
    }
    let n_tasks = first[ws.len()];
    let outp: [OutPtr; MAX_GROUP] = std::array::from_fn(|i| {
        OutPtr(
            outs.get_mut(i)
                .map_or(std::ptr::null_mut(), |o| o.as_mut_ptr()),
        )
    });
    let task = |k: usize| {
        let i = (0..ws.len()).rfind(|&i| first[i] <= k).unwrap_or(0);
        let c = k - first[i];
        let w = ws[i];
        let r0 = c * chunk[i];
        let r1 = (r0 + chunk[i]).min(w.rows());
        // SAFETY (for the writes inside): task k alone owns rows r0..r1 of matrix i, and `outs[i]` holds
        // n_tokens * rows values (checked by matmul_group), which outlive the loop.
        match paths[i] {
            Path::Q8 => rows_q8(w, r0..r1, a.xq, outp[i], qdot::qdot_multi_rows),
            Path::Q8K => rows_q8(w, r0..r1, a.xqk, outp[i], qdot::qdot_k_multi_rows),
            Path::Float if a.n_tokens == 1 => rows_f32_one(w, r0..r1, a.x, outp[i]),
            Path::Float => rows_f32_many(w, r0..r1, a, outp[i]),
        }
    };
    if work < PAR_MIN_WORK || n_tasks == 1 {
        (0..n_tasks).for_each(task);
    } else {
        pool::parallel_for(n_tasks, task);
    }
}

/// Tokens whose quantized activations one pass over a chunk of rows reads (about 37 KB for a 576-wide
/// model: they stay in L1/L2 while every row of the chunk meets them).
const TOKEN_TILE: usize = 64;
/// Rows per tile of a multi-token pass: the tile's results (`TILE_ROWS x TOKEN_TILE` f32, 8 KB) sit on the
/// stack until they are written out token-major.
const TILE_ROWS: usize = 32;

/// Rows `rr` of `w` against quantized activations, every token: `out[t * rows + r] = dot(row r, xq[t])`,
/// through `multi` (a tile of rows against a tile of tokens, checked and dispatched once; it decodes each
/// weight block once per group of tokens and returns exactly what the single-row, single-token kernel would).
/// One token writes its run of rows straight into `out`; several go through a small tile buffer.
fn rows_q8<R>(
    w: &Tensor,
    rr: std::ops::Range<usize>,
    xq: &[R],
    out: OutPtr,
    multi: fn(DType, &[u8], usize, &[R], &mut [f32]),
) {
    let (rows, rb, bytes, dtype) = (w.rows(), w.row_bytes(), w.bytes(), w.dtype);
    if let [_] = xq {
        // SAFETY: see `run_group`: rows rr are this task's alone, and rr.end <= rows, so out[rr] is in
        // bounds and nobody else touches it while the task runs.
        let o = unsafe { std::slice::from_raw_parts_mut(out.at(rr.start), rr.len()) };
        multi(dtype, &bytes[rr.start * rb..rr.end * rb], rb, xq, o);
        return;
    }
    let mut buf = [0f32; TILE_ROWS * TOKEN_TILE];
    for t0 in (0..xq.len()).step_by(TOKEN_TILE) {
        let tile = &xq[t0..(t0 + TOKEN_TILE).min(xq.len())];
        let nt = tile.len();
        for r0 in rr.clone().step_by(TILE_ROWS) {
            let nr = TILE_ROWS.min(rr.end - r0);
            let buf = &mut buf[..nr * nt];
            multi(dtype, &bytes[r0 * rb..(r0 + nr) * rb], rb, tile, buf);
            // buf is [row][token]; out is [token][row]: each token's run of nr results is contiguous.
            for t in 0..nt {
                for i in 0..nr {
                    // SAFETY: see `run_group`: rows r0..r0 + nr are this task's, and (t0 + t) * rows + r0 + i
                    // is in bounds.
                    unsafe { out.write((t0 + t) * rows + r0 + i, buf[i * nt + t]) };
                }
            }
        }
    }
}

/// Rows `rr` of `w` against one token's f32 activations, decoding each row on the fly.
fn rows_f32_one(w: &Tensor, rr: std::ops::Range<usize>, x: &[f32], out: OutPtr) {
    let (rb, bytes, dtype) = (w.row_bytes(), w.bytes(), w.dtype);
    let simd = Simd::get();
    let x = &x[..w.cols()];
    for r in rr {
        // SAFETY: see `run_group`.
        unsafe { out.write(r, simd.dot(dtype, &bytes[r * rb..(r + 1) * rb], x)) };
    }
}

/// Rows `rr` of `w` against several tokens' f32 activations: the rows are dequantized once into this
/// thread's scratch, then multiplied with every token four rows at a time (bit-identical to
/// [`rows_f32_one`]'s per-row dot, which the kernels guarantee).
fn rows_f32_many(w: &Tensor, rr: std::ops::Range<usize>, a: &Acts, out: OutPtr) {
    let (rows, cols, rb, bytes, dtype) = (w.rows(), w.cols(), w.row_bytes(), w.bytes(), w.dtype);
    let simd = Simd::get();
    let (r0, nr) = (rr.start, rr.len());
    SCRATCH.with_borrow_mut(|s| {
        if s.len() < nr * cols {
            s.resize(nr * cols, 0.0);
        }
        let s = &mut s[..nr * cols];
        for (i, dst) in s.chunks_exact_mut(cols).enumerate() {
            let r = r0 + i;
            simd.dequantize(dtype, &bytes[r * rb..(r + 1) * rb], dst);
        }
        for t in 0..a.n_tokens {
            let xt = &a.x[t * cols..(t + 1) * cols];
            let base = t * rows + r0;
            let mut i = 0;
            while i + 4 <= nr {
                let v = simd.dot4(&s[i * cols..(i + 4) * cols], xt);
                for (k, &vk) in v.iter().enumerate() {
                    // SAFETY: see `run_group`.
                    unsafe { out.write(base + i + k, vk) };
                }
                i += 4;
            }
            while i < nr {
                let v = simd.f32_dot(&s[i * cols..(i + 1) * cols], xt);
                // SAFETY: see `run_group`.
                unsafe { out.write(base + i, v) };
                i += 1;
            }
        }
    });
}
