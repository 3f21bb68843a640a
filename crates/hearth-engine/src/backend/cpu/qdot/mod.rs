//! Integer dot products of quantized weight rows with 8-bit quantized activations: the scalar reference,
//! the dispatch to the AVX2 (`avx2/qdot/`) and AVX-512 (`avx512/qdot/`) kernels, and the numerics contract
//! every level follows bit for bit.
//!
//! Types: Q8_0, Q4_0, Q4_1, Q5_0, Q5_1 and MLX affine (any width; `scalar_mlx.rs`) against [`Q8Row`]
//! ([`qdot`]); Q2_K, Q3_K, Q4_K, Q5_K, Q6_K against
//! [`Q8KRow`] ([`qdot_k`]). [`qdot_multi`] and [`qdot_k_multi`] take one weight row against several tokens
//! (prefill): the fast kernels decode each weight block once per group of tokens, and every token's result
//! is bit-identical to its single-token [`qdot`]. So a matmul's result never depends on the CPU level, the
//! batch, or the thread count.
//!
//! # Activations: [`Q8Row`]
//!
//! [`quantize_q8`] splits `x` into blocks of 32 values. For block `b`:
//! - `d[b] = amax / 127` (f32, a true division) where `amax = max |x_i|` over the block;
//! - `qs[32*b + i] = round_ties_even(x_i * id)` as i8, with `id = 1 / d[b]` (or `0` when `d[b] == 0`, so an
//!   all-zero block gives zeros, never NaN); the values lie in `-127..=127`;
//! - `sums[b] = sum_i qs[32*b + i]` (i32), needed by the types with a min or an offset.
//!
//! The three arrays are stored separately (structure of arrays) so that a kernel loads eight consecutive
//! scales or sums with one vector load. Non-finite inputs give unspecified (but not UB) values.
//!
//! # Weights times activations
//!
//! For each weight block `b` (32 weights, sharing the activation block `b`) the kernels compute an exact
//! i32 `isum = sum_i q_i * qx_i`, with `q_i` the weight's integer code after its offset (Q4_0: `nibble - 8`,
//! Q5_0: `code - 16`, Q8_0: the i8, Q4_1/Q5_1: the unsigned code). The block's f32 term is then
//!
//! - Q8_0, Q4_0, Q5_0: `t = (dw * dx) * (isum as f32)`;
//! - Q4_1, Q5_1: `t = (dw * dx) * (isum as f32) + (mw * dx) * (sums[b] as f32)`;
//!
//! each product and sum rounded to f32 on its own (never fused). Terms are accumulated into eight f32 lanes,
//! block `b` into lane `b % 8` in block order, and the lanes are reduced as
//! `((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7))`. The SIMD kernels follow exactly this order (integer
//! sums may be formed in any order: they are exact), so their results are bit-identical to the scalar
//! reference. [`kernel_sets`] lists every level this CPU runs, for tests and benchmarks that compare them.
//!
//! # Accuracy
//!
//! The only approximation is the rounding of `x` to 8 bits: at most half a step `d_b / 2` per activation,
//! so `|qdot - exact| <= sum_b (d_b / 2) * sum_{i in b} |w_i|` (plus f32 rounding, ~1e-6 relative), with
//! `exact` the f64 dot of the dequantized row with the unquantized `x`. tests/qdot.rs asserts that bound
//! (measured worst: 0.39 of it for the 32-blocks, under 0.1 for K-quants) and, for activations without outlier
//! blocks, `|qdot - exact| <= 5e-3 * sum_i |w_i * x_i|` (measured worst 2.2e-3; under 1e-3 for K-quants).
//! A block holding one large outlier loses relative precision on its small values (as in llama.cpp).

mod scalar_blocks32;
mod scalar_kquants;
mod scalar_mlx;

use std::sync::OnceLock;

use crate::tensor::DType;

#[cfg(target_arch = "aarch64")]
pub(in crate::backend::cpu) use scalar_blocks32::term_min;
pub use scalar_blocks32::{qdot_q4_0, qdot_q4_1, qdot_q5_0, qdot_q5_1, qdot_q8_0};
pub(in crate::backend::cpu) use scalar_blocks32::{reduce_lanes, term};
pub(in crate::backend::cpu) use scalar_kquants::term_q4_k;
#[cfg(target_arch = "x86_64")]
pub(in crate::backend::cpu) use scalar_kquants::{q3_k_packed_scales, q4_k_packed_scales};
#[cfg(target_arch = "aarch64")]
pub(in crate::backend::cpu) use scalar_kquants::{q4_k_msum, q4_k_scales, q6_k_offset};
pub use scalar_kquants::{qdot_q2_k, qdot_q3_k, qdot_q4_k, qdot_q5_k, qdot_q6_k};
pub use scalar_mlx::qdot_mlx;

/// Values per activation block.
pub const QK8: usize = 32;

/// A row of activations quantized to 8 bits in blocks of [`QK8`] (layout in the module docs). Reused
/// between calls: [`quantize_q8`] only grows its buffers.
#[derive(Clone, Debug, Default)]
pub struct Q8Row {
    /// Per-block scale: `max |x| / 127` (0 for an all-zero block).
    pub d: Vec<f32>,
    /// The quantized values, 32 per block, in `-127..=127`.
    pub qs: Vec<i8>,
    /// Per-block sum of `qs`.
    pub sums: Vec<i32>,
}

impl Q8Row {
    /// An empty row (no allocation until the first [`quantize_q8`]).
    pub fn new() -> Q8Row {
        Q8Row::default()
    }

    /// The number of values (a multiple of 32).
    pub fn len(&self) -> usize {
        self.qs.len()
    }

    /// Whether the row holds no values.
    pub fn is_empty(&self) -> bool {
        self.qs.is_empty()
    }

    /// The number of 32-value blocks.
    pub fn blocks(&self) -> usize {
        self.d.len()
    }

    fn resize(&mut self, n: usize) {
        let nb = n / QK8;
        self.d.resize(nb, 0.0);
        self.qs.resize(n, 0);
        self.sums.resize(nb, 0);
    }
}

/// Values per K-quant activation block.
pub const QK_K: usize = 256;

/// A row of activations quantized to 8 bits in blocks of [`QK_K`] = 256 values, for the K-quant weight
/// types. Per block `b`: `d[b] = amax / 127` over the 256 values, `qs` as in [`Q8Row`] (with that one
/// scale), and `bsums[16*b + s] = sum of qs[256*b + 16*s ..][..16]` (one sum per 16 values).
#[derive(Clone, Debug, Default)]
pub struct Q8KRow {
    /// Per-block scale: `max |x| / 127` (0 for an all-zero block).
    pub d: Vec<f32>,
    /// The quantized values, 256 per block, in `-127..=127`.
    pub qs: Vec<i8>,
    /// Sums of `qs` over each run of 16 values (16 per block).
    pub bsums: Vec<i32>,
}

impl Q8KRow {
    /// An empty row (no allocation until the first [`quantize_q8k`]).
    pub fn new() -> Q8KRow {
        Q8KRow::default()
    }

    /// The number of values (a multiple of 256).
    pub fn len(&self) -> usize {
        self.qs.len()
    }

    /// Whether the row holds no values.
    pub fn is_empty(&self) -> bool {
        self.qs.is_empty()
    }

    fn resize(&mut self, n: usize) {
        let nb = n / QK_K;
        self.d.resize(nb, 0.0);
        self.qs.resize(n, 0);
        self.bsums.resize(nb * 16, 0);
    }
}

/// Whether [`qdot`] supports weights of `dtype`.
pub fn supports(dtype: DType) -> bool {
    match dtype {
        DType::Q8_0 | DType::Q4_0 | DType::Q4_1 | DType::Q5_0 | DType::Q5_1 => true,
        DType::Mlx(m) => scalar_mlx::supports_mlx(m),
        _ => false,
    }
}

/// Whether [`qdot_k`] supports weights of `dtype`.
pub fn supports_k(dtype: DType) -> bool {
    matches!(
        dtype,
        DType::Q2_K | DType::Q3_K | DType::Q4_K | DType::Q5_K | DType::Q6_K
    )
}

/// The scale and its inverse for a block whose largest magnitude is `amax`.
#[inline]
pub(in crate::backend::cpu) fn q8_scale(amax: f32) -> (f32, f32) {
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    (d, id)
}

fn quantize_blocks(x: &[f32], out: &mut Q8Row) {
    for (b, xb) in x.chunks_exact(QK8).enumerate() {
        let amax = xb.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let (d, id) = q8_scale(amax);
        let mut s = 0i32;
        for (q, &v) in out.qs[b * QK8..(b + 1) * QK8].iter_mut().zip(xb) {
            *q = (v * id).round_ties_even() as i8;
            s += *q as i32;
        }
        out.d[b] = d;
        out.sums[b] = s;
    }
}

fn quantize_k_blocks(x: &[f32], out: &mut Q8KRow) {
    for (b, xb) in x.chunks_exact(QK_K).enumerate() {
        let amax = xb.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let (d, id) = q8_scale(amax);
        out.d[b] = d;
        for (q, &v) in out.qs[b * QK_K..(b + 1) * QK_K].iter_mut().zip(xb) {
            *q = (v * id).round_ties_even() as i8;
        }
        for s in 0..16 {
            let run = &out.qs[b * QK_K + 16 * s..b * QK_K + 16 * s + 16];
            out.bsums[b * 16 + s] = run.iter().map(|&q| q as i32).sum();
        }
    }
}

/// Panics unless `xq`'s arrays agree and `row` holds the blocks of `xq.len()` weights of a supported `dtype`
/// (the kernels read through raw pointers on the strength of this check).
fn check(dtype: DType, row: &[u8], xq: &Q8Row) {
    assert!(supports(dtype), "qdot does not support {dtype}");
    assert!(
        xq.d.len() * QK8 == xq.qs.len() && xq.sums.len() == xq.d.len(),
        "inconsistent Q8Row"
    );
    let nb = dtype
        .bytes_for(xq.len())
        .expect("activation length is whole blocks");
    assert!(
        row.len() >= nb,
        "{dtype} row of {} weights needs {nb} bytes, got {}",
        xq.len(),
        row.len()
    );
}

/// As [`check`], for K-quant rows.
fn check_k(dtype: DType, row: &[u8], xq: &Q8KRow) {
    assert!(supports_k(dtype), "qdot_k does not support {dtype}");
    assert!(
        xq.d.len() * QK_K == xq.qs.len() && xq.bsums.len() == 16 * xq.d.len(),
        "inconsistent Q8KRow"
    );
    let nb = dtype
        .bytes_for(xq.len())
        .expect("activation length is whole blocks");
    assert!(
        row.len() >= nb,
        "{dtype} row of {} weights needs {nb} bytes, got {}",
        xq.len(),
        row.len()
    );
}

/// Panics unless every token of a multi-token call has the first one's length and `out` has one slot per
/// token.
fn check_tokens(n_out: usize, lens: impl Iterator<Item = usize> + Clone) {
    let first = lens.clone().next().unwrap_or(0);
    assert!(
        lens.clone().all(|l| l == first),
        "tokens of different lengths"
    );
    assert_eq!(n_out, lens.count(), "one output per token");
}

/// Runs `$k::<N>(row, tokens, out)` over `$xq` in groups of `$group` (1, 2, 4 or 8) tokens, the remainder
/// in groups of 4, 2 and 1, so that each SIMD kernel exists in four sizes only. The second form passes
/// leading const parameters and arguments: `$k::<C.., N>(args.., tokens, out)` (the MLX kernels' bit width
/// and format).
#[cfg(target_arch = "x86_64")]
macro_rules! by_token_groups {
    ($group:expr, $k:ident::<$($c:literal),*>($($arg:expr),*), $xq:expr, $out:expr) => {{
        let (xq, out) = ($xq, $out);
        let mut t = 0;
        while t < xq.len() {
            let left = xq.len() - t;
            let n = if left >= $group {
                $group
            } else if left >= 4 {
                4
            } else if left >= 2 {
                2
            } else {
                1
            };
            let (xs, o) = (&xq[t..t + n], &mut out[t..t + n]);
            match n {
                8 => $k::<$($c,)* 8>($($arg,)* xs, o),
                4 => $k::<$($c,)* 4>($($arg,)* xs, o),
                2 => $k::<$($c,)* 2>($($arg,)* xs, o),
                _ => $k::<$($c,)* 1>($($arg,)* xs, o),
            }
            t += n;
        }
    }};
    ($group:expr, $k:ident, $row:expr, $xq:expr, $out:expr) => {
        by_token_groups!($group, $k::<>($row), $xq, $out)
    };
}
#[cfg(target_arch = "x86_64")]
pub(in crate::backend::cpu) use by_token_groups;

#[derive(Clone, Copy, Debug)]
enum Level {
    Scalar,
    #[cfg(target_arch = "x86_64")]
    Avx2(super::avx2::Avx2),
    #[cfg(target_arch = "x86_64")]
    Avx512(super::avx512::Avx512),
    #[cfg(target_arch = "aarch64")]
    Neon(super::neon::Neon),
}

/// The integer kernels of one instruction-set level. [`qdot`] and friends use the fastest that this CPU
/// runs (and `HEARTH_KERNELS` allows); [`kernel_sets`] hands out every one, so that one test or benchmark
/// process can compare the levels (the environment cap is read only once per process).
#[derive(Clone, Copy, Debug)]
pub struct QdotKernels(Level);

impl QdotKernels {
    /// The scalar reference.
    pub fn scalar() -> QdotKernels {
        QdotKernels(Level::Scalar)
    }

    /// The fastest kernels this CPU runs.
    pub fn best() -> QdotKernels {
        static BEST: OnceLock<QdotKernels> = OnceLock::new();
        *BEST.get_or_init(|| *kernel_sets().last().expect("scalar is always there"))
    }

    /// `"scalar"`, `"avx2"`, `"avx512bw"` or `"avx512vnni"`, for benchmarks and logs.
    pub fn name(self) -> &'static str {
        match self.0 {
            Level::Scalar => "scalar",
            #[cfg(target_arch = "x86_64")]
            Level::Avx2(_) => "avx2",
            #[cfg(target_arch = "x86_64")]
            Level::Avx512(a) if a.vnni => "avx512vnni",
            #[cfg(target_arch = "x86_64")]
            Level::Avx512(_) => "avx512bw",
            #[cfg(target_arch = "aarch64")]
            Level::Neon(_) => "neon",
        }
    }

    /// [`quantize_q8`] at this level.
    pub fn quantize_q8(self, x: &[f32], out: &mut Q8Row) {
        assert!(
            x.len().is_multiple_of(QK8),
            "quantize_q8 of {} values",
            x.len()
        );
        out.resize(x.len());
        match self.0 {
            Level::Scalar => quantize_blocks(x, out),
            #[cfg(target_arch = "x86_64")]
            Level::Avx2(a) => a.quantize_q8(x, out),
            #[cfg(target_arch = "x86_64")]
            Level::Avx512(a) => a.quantize_q8(x, out),
            #[cfg(target_arch = "aarch64")]
            Level::Neon(n) => n.quantize_q8(x, out),
        }
    }

    /// [`quantize_q8k`] at this level.
    pub fn quantize_q8k(self, x: &[f32], out: &mut Q8KRow) {
        assert!(
            x.len().is_multiple_of(QK_K),
            "quantize_q8k of {} values",
            x.len()
        );
        out.resize(x.len());
        match self.0 {
            #[cfg(target_arch = "x86_64")]
            Level::Avx512(a) => a.quantize_q8k(x, out),
            #[cfg(target_arch = "aarch64")]
            Level::Neon(n) => n.quantize_q8k(x, out),
            _ => quantize_k_blocks(x, out),
        }
    }

    /// [`qdot`] at this level.
    pub fn qdot(self, dtype: DType, row: &[u8], xq: &Q8Row) -> f32 {
        let mut out = [0.0];
        self.qdot_multi(dtype, row, std::slice::from_ref(xq), &mut out);
        out[0]
    }

    /// [`qdot_multi`] at this level.
    pub fn qdot_multi(self, dtype: DType, row: &[u8], xq: &[Q8Row], out: &mut [f32]) {
        check_tokens(out.len(), xq.iter().map(|q| q.len()));
        for q in xq {
            check(dtype, row, q);
        }
        if xq.is_empty() {
            return;
        }
        if let (DType::Mlx(m), Level::Scalar) = (dtype, self.0) {
            for (o, q) in out.iter_mut().zip(xq) {
                *o = qdot_mlx(m, row, q);
            }
            return;
        }
        match self.0 {
            Level::Scalar => {
                let f = match dtype {
                    DType::Q8_0 => qdot_q8_0,
                    DType::Q4_0 => qdot_q4_0,
                    DType::Q4_1 => qdot_q4_1,
                    DType::Q5_0 => qdot_q5_0,
                    DType::Q5_1 => qdot_q5_1,
                    _ => unreachable!("checked by supports"),
                };
                for (o, q) in out.iter_mut().zip(xq) {
                    *o = f(row, q);
                }
            }
            #[cfg(target_arch = "x86_64")]
            Level::Avx2(a) => a.qdot_multi(dtype, row, xq, out),
            #[cfg(target_arch = "x86_64")]
            Level::Avx512(a) => a.qdot_multi(dtype, row, xq, out),
            // One token at a time: the NEON kernels have no multi-token form yet.
            #[cfg(target_arch = "aarch64")]
            Level::Neon(n) => {
                for (o, q) in out.iter_mut().zip(xq) {
                    *o = match dtype {
                        DType::Mlx(m) => n.qdot_mlx(m, row, q),
                        _ => n.qdot(dtype, row, q),
                    };
                }
            }
        }
    }

    /// [`qdot_k`] at this level.
    pub fn qdot_k(self, dtype: DType, row: &[u8], xq: &Q8KRow) -> f32 {
        let mut out = [0.0];
        self.qdot_k_multi(dtype, row, std::slice::from_ref(xq), &mut out);
        out[0]
    }

    /// [`qdot_k_multi`] at this level.
    pub fn qdot_k_multi(self, dtype: DType, row: &[u8], xq: &[Q8KRow], out: &mut [f32]) {
        check_tokens(out.len(), xq.iter().map(|q| q.len()));
        for q in xq {
            check_k(dtype, row, q);
        }
        if xq.is_empty() {
            return;
        }
        match self.0 {
            Level::Scalar => {
                let f = match dtype {
                    DType::Q2_K => qdot_q2_k,
                    DType::Q3_K => qdot_q3_k,
                    DType::Q4_K => qdot_q4_k,
                    DType::Q5_K => qdot_q5_k,
                    DType::Q6_K => qdot_q6_k,
                    _ => unreachable!("checked by supports_k"),
                };
                for (o, q) in out.iter_mut().zip(xq) {
                    *o = f(row, q);
                }
            }
            #[cfg(target_arch = "x86_64")]
            Level::Avx2(a) => a.qdot_k_multi(dtype, row, xq, out),
            #[cfg(target_arch = "x86_64")]
            Level::Avx512(a) => a.qdot_k_multi(dtype, row, xq, out),
            // NEON has Q4_K, Q5_K and Q6_K; Q2_K and Q3_K run the scalar reference (the same numbers).
            #[cfg(target_arch = "aarch64")]
            Level::Neon(n) => {
                for (o, q) in out.iter_mut().zip(xq) {
                    *o = match dtype {
                        DType::Q2_K => qdot_q2_k(row, q),
                        DType::Q3_K => qdot_q3_k(row, q),
                        _ => n.qdot_k(dtype, row, q),
                    };
                }
            }
        }
    }
}

impl QdotKernels {
    /// [`qdot_multi_rows`] at this level: the checks once for the whole tile.
    pub fn qdot_multi_rows(
        self,
        dtype: DType,
        bytes: &[u8],
        row_bytes: usize,
        xq: &[Q8Row],
        out: &mut [f32],
    ) {
        let nt = xq.len();
        if nt == 0 || out.is_empty() {
            return;
        }
        assert!(
            out.len().is_multiple_of(nt),
            "qdot_multi_rows: {} outputs for {nt} tokens",
            out.len()
        );
        let nr = out.len() / nt;
        assert!(
            bytes.len() >= nr * row_bytes,
            "qdot_multi_rows: {nr} rows of {row_bytes} bytes"
        );
        check_tokens(nt, xq.iter().map(|q| q.len()));
        for q in xq {
            check(dtype, &bytes[..row_bytes], q);
        }
        // MLX rows go to the kernels as one run (their per-call setup is paid once).
        #[cfg(target_arch = "x86_64")]
        match (self.0, dtype) {
            (Level::Avx512(a), DType::Mlx(m)) if matches!(m.quant.bits(), 4 | 8) => {
                return a.qdot_mlx_rows(m, &bytes[..nr * row_bytes], row_bytes, xq, out);
            }
            (Level::Avx2(a), DType::Mlx(m)) => {
                return a.qdot_mlx_rows(m, &bytes[..nr * row_bytes], row_bytes, xq, out);
            }
            _ => {}
        }
        let rows = bytes.chunks_exact(row_bytes).zip(out.chunks_exact_mut(nt));
        match self.0 {
            #[cfg(target_arch = "x86_64")]
            Level::Avx512(a) => rows.for_each(|(r, o)| a.qdot_multi(dtype, r, xq, o)),
            #[cfg(target_arch = "x86_64")]
            Level::Avx2(a) => rows.for_each(|(r, o)| a.qdot_multi(dtype, r, xq, o)),
            _ => rows.for_each(|(r, o)| self.qdot_multi(dtype, r, xq, o)),
        }
    }

    /// [`qdot_k_multi_rows`] at this level.
    pub fn qdot_k_multi_rows(
        self,
        dtype: DType,
        bytes: &[u8],
        row_bytes: usize,
        xq: &[Q8KRow],
        out: &mut [f32],
    ) {
        let nt = xq.len();
        if nt == 0 || out.is_empty() {
            return;
        }
        assert!(
            out.len().is_multiple_of(nt),
            "qdot_k_multi_rows: {} outputs for {nt} tokens",
            out.len()
        );
        let nr = out.len() / nt;
        assert!(
            bytes.len() >= nr * row_bytes,
            "qdot_k_multi_rows: {nr} rows of {row_bytes} bytes"
        );
        check_tokens(nt, xq.iter().map(|q| q.len()));
        for q in xq {
            check_k(dtype, &bytes[..row_bytes], q);
        }
        let rows = bytes.chunks_exact(row_bytes).zip(out.chunks_exact_mut(nt));
        match self.0 {
            #[cfg(target_arch = "x86_64")]
            Level::Avx512(a) => rows.for_each(|(r, o)| a.qdot_k_multi(dtype, r, xq, o)),
            #[cfg(target_arch = "x86_64")]
            Level::Avx2(a) => rows.for_each(|(r, o)| a.qdot_k_multi(dtype, r, xq, o)),
            _ => rows.for_each(|(r, o)| self.qdot_k_multi(dtype, r, xq, o)),
        }
    }
}

/// A tile of rows against a tile of tokens: `out[i * xq.len() + t] = qdot(dtype, row i, xq[t])` for the
/// `out.len() / xq.len()` consecutive rows of `row_bytes` bytes at the start of `bytes`, checked and
/// dispatched once for the tile; bit-identical to [`qdot`] per pair. Prefill passes a tile of tokens; decode
/// passes one token, which makes `out` one value per row.
pub fn qdot_multi_rows(
    dtype: DType,
    bytes: &[u8],
    row_bytes: usize,
    xq: &[Q8Row],
    out: &mut [f32],
) {
    QdotKernels::best().qdot_multi_rows(dtype, bytes, row_bytes, xq, out)
}

/// [`qdot_multi_rows`] for K-quant rows against [`Q8KRow`] activations.
pub fn qdot_k_multi_rows(
    dtype: DType,
    bytes: &[u8],
    row_bytes: usize,
    xq: &[Q8KRow],
    out: &mut [f32],
) {
    QdotKernels::best().qdot_k_multi_rows(dtype, bytes, row_bytes, xq, out)
}

/// Every kernel level this CPU runs within the `HEARTH_KERNELS` cap, lowest first: scalar, AVX2, AVX-512
/// without VNNI, AVX-512 with VNNI (the last two from one token, so a VNNI machine also tests the fallback).
pub fn kernel_sets() -> Vec<QdotKernels> {
    #[allow(unused_mut)]
    let mut v = vec![QdotKernels::scalar()];
    #[cfg(target_arch = "x86_64")]
    {
        if let Some(a) = super::avx2::Avx2::detect() {
            v.push(QdotKernels(Level::Avx2(a)));
        }
        if let Some(a) = super::avx512::Avx512::detect() {
            if a.vnni {
                v.push(QdotKernels(Level::Avx512(super::avx512::Avx512 {
                    vnni: false,
                })));
            }
            v.push(QdotKernels(Level::Avx512(a)));
        }
    }
    #[cfg(target_arch = "aarch64")]
    if let Some(n) = super::neon::Neon::detect() {
        // Without `sdot` first, so a CPU that has it tests the widening-multiply path too.
        if n.has_dotprod() {
            v.push(QdotKernels(Level::Neon(n.without_dotprod())));
        }
        v.push(QdotKernels(Level::Neon(n)));
    }
    v
}

/// Quantizes `x` (a multiple of 32 values) into `out`, with the fastest kernel; bit-identical to
/// [`quantize_q8_scalar`].
pub fn quantize_q8(x: &[f32], out: &mut Q8Row) {
    QdotKernels::best().quantize_q8(x, out)
}

/// The scalar reference for [`quantize_q8`].
pub fn quantize_q8_scalar(x: &[f32], out: &mut Q8Row) {
    QdotKernels::scalar().quantize_q8(x, out)
}

/// Quantizes `x` (a multiple of 256 values) into `out`, with the fastest kernel; bit-identical to
/// [`quantize_q8k_scalar`].
pub fn quantize_q8k(x: &[f32], out: &mut Q8KRow) {
    QdotKernels::best().quantize_q8k(x, out)
}

/// The scalar reference for [`quantize_q8k`].
pub fn quantize_q8k_scalar(x: &[f32], out: &mut Q8KRow) {
    QdotKernels::scalar().quantize_q8k(x, out)
}

/// `sum(w[i] * x[i])` for one row of `dtype` weights against quantized activations (whole blocks; `dtype`
/// one that [`supports`] accepts), with the fastest kernel; bit-identical to [`qdot_scalar`].
pub fn qdot(dtype: DType, row: &[u8], xq: &Q8Row) -> f32 {
    QdotKernels::best().qdot(dtype, row, xq)
}

/// The scalar reference for [`qdot`] (exact integer block dots, f32 accumulation as the module docs say).
pub fn qdot_scalar(dtype: DType, row: &[u8], xq: &Q8Row) -> f32 {
    QdotKernels::scalar().qdot(dtype, row, xq)
}

/// `out[t] = qdot(dtype, row, &xq[t])` for every token `t` (`out.len() == xq.len()`, any count, all tokens
/// of one length): one weight row against several tokens, for prefill. The fast kernels decode each weight
/// block once per group of tokens; each `out[t]` is bit-identical to the single-token [`qdot`].
pub fn qdot_multi(dtype: DType, row: &[u8], xq: &[Q8Row], out: &mut [f32]) {
    QdotKernels::best().qdot_multi(dtype, row, xq, out)
}

/// The scalar reference for [`qdot_multi`] (one [`qdot_scalar`] per token).
pub fn qdot_multi_scalar(dtype: DType, row: &[u8], xq: &[Q8Row], out: &mut [f32]) {
    QdotKernels::scalar().qdot_multi(dtype, row, xq, out)
}

/// `sum(w[i] * x[i])` for one row of K-quant weights (`dtype` one that [`supports_k`] accepts) against
/// [`Q8KRow`] activations, with the fastest kernel; bit-identical to [`qdot_k_scalar`].
///
/// Per 256-block the kernels compute exact i32 sums, then one f32 term, accumulated as [`qdot`]'s terms
/// are (block `b` into lane `b % 8`, the same lane reduction):
/// - Q4_K, Q5_K: `isum = sum_g sc_g * sum_{i in g} q_i qx_i` over the eight 32-weight sub-blocks and
///   `msum = sum_g m_g * sum_{i in g} qx_i`; term `(d * dx) * isum - (dmin * dx) * msum`;
/// - Q2_K: the same sums and term over the sixteen 16-weight sub-blocks (4-bit scales and mins);
/// - Q6_K: `isum = sum_s sc_s * sum_{i in s} (q_i - 32) qx_i` over the sixteen 16-weight sub-blocks;
///   Q3_K: likewise with the signed codes `q_i = low - 4 * !high` and signed 6-bit scales; term
///   `(d * dx) * isum`.
pub fn qdot_k(dtype: DType, row: &[u8], xq: &Q8KRow) -> f32 {
    QdotKernels::best().qdot_k(dtype, row, xq)
}

/// The scalar reference for [`qdot_k`].
pub fn qdot_k_scalar(dtype: DType, row: &[u8], xq: &Q8KRow) -> f32 {
    QdotKernels::scalar().qdot_k(dtype, row, xq)
}

/// [`qdot_multi`] for K-quant rows: `out[t] = qdot_k(dtype, row, &xq[t])`, bit-identical to it.
pub fn qdot_k_multi(dtype: DType, row: &[u8], xq: &[Q8KRow], out: &mut [f32]) {
    QdotKernels::best().qdot_k_multi(dtype, row, xq, out)
}

/// The scalar reference for [`qdot_k_multi`] (one [`qdot_k_scalar`] per token).
pub fn qdot_k_multi_scalar(dtype: DType, row: &[u8], xq: &[Q8KRow], out: &mut [f32]) {
    QdotKernels::scalar().qdot_k_multi(dtype, row, xq, out)
}
