//! Integer dot products of quantized weight rows with 8-bit quantized activations (the scalar reference,
//! plus dispatch to the AVX2 kernels in `avx2/qdot.rs` and the NEON ones in `neon/qdot.rs`).
//!
//! Not wired into `matmul` yet: this module only provides the kernels and their numerics. Types: Q8_0, Q4_0,
//! Q4_1, Q5_0, Q5_1 against [`Q8Row`] ([`qdot`]); Q4_K, Q5_K, Q6_K against [`Q8KRow`] ([`qdot_k`]).
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
//! `((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7))`. The AVX2 kernels follow exactly this order, so their
//! results are bit-identical to the scalar reference (and independent of batching or threading).
//!
//! # Accuracy
//!
//! The only approximation is the rounding of `x` to 8 bits: at most half a step `d_b / 2` per activation,
//! so `|qdot - exact| <= sum_b (d_b / 2) * sum_{i in b} |w_i|` (plus f32 rounding, ~1e-6 relative), with
//! `exact` the f64 dot of the dequantized row with the unquantized `x`. tests/qdot.rs asserts that bound
//! (measured worst: 0.39 of it for the 32-blocks, under 0.1 for K-quants) and, for activations without outlier
//! blocks, `|qdot - exact| <= 5e-3 * sum_i |w_i * x_i|` (measured worst 1.6e-3; under 1e-3 for K-quants).
//! A block holding one large outlier loses relative precision on its small values (as in llama.cpp).

use std::sync::OnceLock;

use crate::tensor::quants::f16_to_f32;
use crate::tensor::DType;

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

/// Whether [`qdot`] supports weights of `dtype`.
pub fn supports(dtype: DType) -> bool {
    matches!(
        dtype,
        DType::Q8_0 | DType::Q4_0 | DType::Q4_1 | DType::Q5_0 | DType::Q5_1
    )
}

#[derive(Clone, Copy)]
struct Kernels {
    #[cfg(target_arch = "x86_64")]
    avx2: Option<super::avx2::Avx2>,
    #[cfg(target_arch = "aarch64")]
    neon: Option<super::neon::Neon>,
}

fn kernels() -> Kernels {
    static K: OnceLock<Kernels> = OnceLock::new();
    *K.get_or_init(|| Kernels {
        #[cfg(target_arch = "x86_64")]
        avx2: super::avx2::Avx2::detect(),
        #[cfg(target_arch = "aarch64")]
        neon: super::neon::Neon::detect(),
    })
}

/// Quantizes `x` (a multiple of 32 values) into `out`, with the fastest kernel; bit-identical to
/// [`quantize_q8_scalar`].
pub fn quantize_q8(x: &[f32], out: &mut Q8Row) {
    assert!(
        x.len().is_multiple_of(QK8),
        "quantize_q8 of {} values",
        x.len()
    );
    out.resize(x.len());
    #[cfg(target_arch = "x86_64")]
    if let Some(a) = kernels().avx2 {
        return a.quantize_q8(x, out);
    }
    #[cfg(target_arch = "aarch64")]
    if let Some(n) = kernels().neon {
        return n.quantize_q8(x, out);
    }
    quantize_blocks(x, out)
}

/// The scalar reference for [`quantize_q8`].
pub fn quantize_q8_scalar(x: &[f32], out: &mut Q8Row) {
    assert!(
        x.len().is_multiple_of(QK8),
        "quantize_q8 of {} values",
        x.len()
    );
    out.resize(x.len());
    quantize_blocks(x, out)
}

/// The scale and its inverse for a block whose largest magnitude is `amax`.
#[inline]
pub(super) fn q8_scale(amax: f32) -> (f32, f32) {
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

/// Panics unless `row` holds the blocks of `xq.len()` weights of a supported `dtype`.
fn check(dtype: DType, row: &[u8], xq: &Q8Row) {
    assert!(supports(dtype), "qdot does not support {dtype}");
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

/// `sum(w[i] * x[i])` for one row of `dtype` weights against quantized activations (whole blocks; `dtype`
/// one that [`supports`] accepts), with the fastest kernel; bit-identical to [`qdot_scalar`].
pub fn qdot(dtype: DType, row: &[u8], xq: &Q8Row) -> f32 {
    check(dtype, row, xq);
    #[cfg(target_arch = "x86_64")]
    if let Some(a) = kernels().avx2 {
        return a.qdot(dtype, row, xq);
    }
    #[cfg(target_arch = "aarch64")]
    if let Some(n) = kernels().neon {
        return n.qdot(dtype, row, xq);
    }
    dispatch_scalar(dtype, row, xq)
}

/// The scalar reference for [`qdot`] (exact integer block dots, f32 accumulation as the module docs say).
pub fn qdot_scalar(dtype: DType, row: &[u8], xq: &Q8Row) -> f32 {
    check(dtype, row, xq);
    dispatch_scalar(dtype, row, xq)
}

fn dispatch_scalar(dtype: DType, row: &[u8], xq: &Q8Row) -> f32 {
    match dtype {
        DType::Q8_0 => qdot_q8_0(row, xq),
        DType::Q4_0 => qdot_q4_0(row, xq),
        DType::Q4_1 => qdot_q4_1(row, xq),
        DType::Q5_0 => qdot_q5_0(row, xq),
        DType::Q5_1 => qdot_q5_1(row, xq),
        _ => unreachable!("checked by supports"),
    }
}

/// A block's f32 term without a min: `(dw * dx) * isum`.
#[inline]
pub(super) fn term(dw: f32, dx: f32, isum: i32) -> f32 {
    (dw * dx) * isum as f32
}

/// A block's f32 term with a min: `(dw * dx) * isum + (mw * dx) * sx`.
#[inline]
pub(super) fn term_min(dw: f32, mw: f32, dx: f32, isum: i32, sx: i32) -> f32 {
    (dw * dx) * isum as f32 + (mw * dx) * sx as f32
}

/// The fixed reduction of the eight accumulator lanes (the same as the AVX2 horizontal sum).
#[inline]
pub(super) fn reduce_lanes(l: [f32; 8]) -> f32 {
    let r = [l[0] + l[4], l[1] + l[5], l[2] + l[6], l[3] + l[7]];
    (r[0] + r[2]) + (r[1] + r[3])
}

/// Runs `f(block bytes, block index) -> term` over the `xq.blocks()` blocks of `bb` bytes and accumulates
/// the terms in the documented order.
#[inline]
fn accumulate(row: &[u8], bb: usize, xq: &Q8Row, f: impl Fn(&[u8], usize) -> f32) -> f32 {
    let mut lanes = [0.0f32; 8];
    for b in 0..xq.blocks() {
        lanes[b % 8] += f(&row[b * bb..(b + 1) * bb], b);
    }
    reduce_lanes(lanes)
}

fn f16(b: &[u8], off: usize) -> f32 {
    f16_to_f32(u16::from_le_bytes([b[off], b[off + 1]]))
}

/// The 32 codes of a 4-bit block's 16 bytes: low nibbles are weights 0..16, high nibbles 16..32.
#[inline]
fn nibbles(qs: &[u8]) -> [i32; 32] {
    std::array::from_fn(|i| {
        if i < 16 {
            (qs[i] & 15) as i32
        } else {
            (qs[i - 16] >> 4) as i32
        }
    })
}

/// The 32 codes of a 5-bit block: nibbles plus bit `i` of the little-endian `qh` as bit 4.
#[inline]
fn codes5(qh: &[u8], qs: &[u8]) -> [i32; 32] {
    let h = u32::from_le_bytes([qh[0], qh[1], qh[2], qh[3]]);
    let n = nibbles(qs);
    std::array::from_fn(|i| n[i] | ((((h >> i) & 1) as i32) << 4))
}

#[inline]
fn idot(q: impl Iterator<Item = i32>, x: &[i8]) -> i32 {
    q.zip(x).map(|(a, &b)| a * b as i32).sum()
}

fn xblock(xq: &Q8Row, b: usize) -> &[i8] {
    &xq.qs[b * QK8..(b + 1) * QK8]
}

/// Q8_0 (34-byte blocks: f16 d, 32 x i8) against `xq`; scalar reference.
pub fn qdot_q8_0(row: &[u8], xq: &Q8Row) -> f32 {
    accumulate(row, 34, xq, |blk, b| {
        let isum = idot(blk[2..34].iter().map(|&v| v as i8 as i32), xblock(xq, b));
        term(f16(blk, 0), xq.d[b], isum)
    })
}

/// Q4_0 (18-byte blocks: f16 d, 16 bytes of nibbles; w = d * (q - 8)) against `xq`; scalar reference.
pub fn qdot_q4_0(row: &[u8], xq: &Q8Row) -> f32 {
    accumulate(row, 18, xq, |blk, b| {
        let isum = idot(
            nibbles(&blk[2..18]).into_iter().map(|q| q - 8),
            xblock(xq, b),
        );
        term(f16(blk, 0), xq.d[b], isum)
    })
}

/// Q4_1 (20-byte blocks: f16 d, f16 m, 16 bytes of nibbles; w = d * q + m) against `xq`; scalar reference.
pub fn qdot_q4_1(row: &[u8], xq: &Q8Row) -> f32 {
    accumulate(row, 20, xq, |blk, b| {
        let isum = idot(nibbles(&blk[4..20]).into_iter(), xblock(xq, b));
        term_min(f16(blk, 0), f16(blk, 2), xq.d[b], isum, xq.sums[b])
    })
}

/// Q5_0 (22-byte blocks: f16 d, u32 qh, 16 bytes of nibbles; w = d * (q - 16)) against `xq`; scalar
/// reference.
pub fn qdot_q5_0(row: &[u8], xq: &Q8Row) -> f32 {
    accumulate(row, 22, xq, |blk, b| {
        let q = codes5(&blk[2..6], &blk[6..22]);
        let isum = idot(q.into_iter().map(|q| q - 16), xblock(xq, b));
        term(f16(blk, 0), xq.d[b], isum)
    })
}

/// Q5_1 (24-byte blocks: f16 d, f16 m, u32 qh, 16 bytes of nibbles; w = d * q + m) against `xq`; scalar
/// reference.
pub fn qdot_q5_1(row: &[u8], xq: &Q8Row) -> f32 {
    accumulate(row, 24, xq, |blk, b| {
        let q = codes5(&blk[4..8], &blk[8..24]);
        let isum = idot(q.into_iter(), xblock(xq, b));
        term_min(f16(blk, 0), f16(blk, 2), xq.d[b], isum, xq.sums[b])
    })
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
}

/// Quantizes `x` (a multiple of 256 values) into `out`, with the fastest kernel (scalar on x86_64: its
/// cost is small next to a matrix); bit-identical to [`quantize_q8k_scalar`].
pub fn quantize_q8k(x: &[f32], out: &mut Q8KRow) {
    resize_q8k(x, out);
    #[cfg(target_arch = "aarch64")]
    if let Some(n) = kernels().neon {
        return n.quantize_q8k(x, out);
    }
    quantize_k_blocks(x, out)
}

/// The scalar reference for [`quantize_q8k`].
pub fn quantize_q8k_scalar(x: &[f32], out: &mut Q8KRow) {
    resize_q8k(x, out);
    quantize_k_blocks(x, out)
}

fn resize_q8k(x: &[f32], out: &mut Q8KRow) {
    assert!(
        x.len().is_multiple_of(QK_K),
        "quantize_q8k of {} values",
        x.len()
    );
    let nb = x.len() / QK_K;
    out.d.resize(nb, 0.0);
    out.qs.resize(x.len(), 0);
    out.bsums.resize(nb * 16, 0);
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

/// Whether [`qdot_k`] supports weights of `dtype`.
pub fn supports_k(dtype: DType) -> bool {
    matches!(dtype, DType::Q4_K | DType::Q5_K | DType::Q6_K)
}

fn check_k(dtype: DType, row: &[u8], xq: &Q8KRow) {
    assert!(supports_k(dtype), "qdot_k does not support {dtype}");
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

/// `sum(w[i] * x[i])` for one row of K-quant weights (`dtype` one that [`supports_k`] accepts) against
/// [`Q8KRow`] activations, with the fastest kernel; bit-identical to [`qdot_k_scalar`].
///
/// Per 256-block the kernels compute exact i32 sums (Q4_K and Q5_K: `isum = sum_g sc_g * sum_{i in g} q_i qx_i`
/// over the eight 32-weight sub-blocks and `msum = sum_g m_g * sum_{i in g} qx_i`; Q6_K:
/// `isum = sum_s sc_s * sum_{i in s} (q_i - 32) qx_i` over the sixteen 16-weight sub-blocks), then the f32
/// term `(d * dx) * isum` (Q4_K, Q5_K: minus `(dmin * dx) * msum`), accumulated as [`qdot`]'s terms are (block `b`
/// into lane `b % 8`, the same lane reduction).
pub fn qdot_k(dtype: DType, row: &[u8], xq: &Q8KRow) -> f32 {
    check_k(dtype, row, xq);
    #[cfg(target_arch = "x86_64")]
    if let Some(a) = kernels().avx2 {
        return a.qdot_k(dtype, row, xq);
    }
    #[cfg(target_arch = "aarch64")]
    if let Some(n) = kernels().neon {
        return n.qdot_k(dtype, row, xq);
    }
    dispatch_k_scalar(dtype, row, xq)
}

/// The scalar reference for [`qdot_k`].
pub fn qdot_k_scalar(dtype: DType, row: &[u8], xq: &Q8KRow) -> f32 {
    check_k(dtype, row, xq);
    dispatch_k_scalar(dtype, row, xq)
}

fn dispatch_k_scalar(dtype: DType, row: &[u8], xq: &Q8KRow) -> f32 {
    match dtype {
        DType::Q4_K => qdot_q4_k(row, xq),
        DType::Q5_K => qdot_q5_k(row, xq),
        DType::Q6_K => qdot_q6_k(row, xq),
        _ => unreachable!("checked by supports_k"),
    }
}

/// Q4_K's per-block f32 term from its exact integer sums.
#[inline]
pub(super) fn term_q4_k(d: f32, dmin: f32, dx: f32, isum: i32, msum: i32) -> f32 {
    (d * dx) * isum as f32 - (dmin * dx) * msum as f32
}

/// `sum_g m_g * (bsums[2g] + bsums[2g + 1])` for a Q4_K block's mins `m` and its 16 activation sums.
#[inline]
pub(super) fn q4_k_msum(mins: [u8; 8], bsums: &[i32]) -> i32 {
    (0..8)
        .map(|g| mins[g] as i32 * (bsums[2 * g] + bsums[2 * g + 1]))
        .sum()
}

/// The eight (scale, min) pairs of a Q4_K block's 12 packed scale bytes.
#[inline]
pub(super) fn q4_k_scales(s: &[u8]) -> ([u8; 8], [u8; 8]) {
    let p: [(u8, u8); 8] = std::array::from_fn(|g| crate::tensor::quants::k4_scale_min(s, g));
    (p.map(|v| v.0), p.map(|v| v.1))
}

/// Q4_K (144-byte blocks; layout in `tensor/quants/kquants.rs`) against `xq`; scalar reference.
pub fn qdot_q4_k(row: &[u8], xq: &Q8KRow) -> f32 {
    let mut lanes = [0.0f32; 8];
    for (b, blk) in row.chunks_exact(144).take(xq.d.len()).enumerate() {
        let (sc, mins) = q4_k_scales(&blk[4..16]);
        let x = &xq.qs[b * QK_K..(b + 1) * QK_K];
        let mut isum = 0i32;
        for g in 0..8 {
            let q32 = &blk[16 + (g / 2) * 32..16 + (g / 2) * 32 + 32];
            let shift = 4 * (g % 2);
            let s = idot(
                q32.iter().map(|&q| ((q >> shift) & 15) as i32),
                &x[g * 32..g * 32 + 32],
            );
            isum += sc[g] as i32 * s;
        }
        let msum = q4_k_msum(mins, &xq.bsums[b * 16..b * 16 + 16]);
        lanes[b % 8] += term_q4_k(f16(blk, 0), f16(blk, 2), xq.d[b], isum, msum);
    }
    reduce_lanes(lanes)
}

/// Q5_K (176-byte blocks; layout in `tensor/quants/kquants.rs`) against `xq`; scalar reference.
pub fn qdot_q5_k(row: &[u8], xq: &Q8KRow) -> f32 {
    let mut lanes = [0.0f32; 8];
    for (b, blk) in row.chunks_exact(176).take(xq.d.len()).enumerate() {
        let (sc, mins) = q4_k_scales(&blk[4..16]);
        let (qh, qs) = (&blk[16..48], &blk[48..176]);
        let x = &xq.qs[b * QK_K..(b + 1) * QK_K];
        let mut isum = 0i32;
        for g in 0..8 {
            let q32 = &qs[(g / 2) * 32..(g / 2) * 32 + 32];
            let shift = 4 * (g % 2);
            let codes = q32
                .iter()
                .zip(qh)
                .map(|(&q, &h)| (((q >> shift) & 15) | (((h >> g) & 1) << 4)) as i32);
            isum += sc[g] as i32 * idot(codes, &x[g * 32..g * 32 + 32]);
        }
        let msum = q4_k_msum(mins, &xq.bsums[b * 16..b * 16 + 16]);
        lanes[b % 8] += term_q4_k(f16(blk, 0), f16(blk, 2), xq.d[b], isum, msum);
    }
    reduce_lanes(lanes)
}

/// `32 * sum_s sc_s * bsums[s]`: the offset part of a Q6_K block's isum.
#[inline]
pub(super) fn q6_k_offset(scales: &[u8], bsums: &[i32]) -> i32 {
    32 * (0..16)
        .map(|s| scales[s] as i8 as i32 * bsums[s])
        .sum::<i32>()
}

/// Q6_K (210-byte blocks; layout in `tensor/quants/kquants.rs`) against `xq`; scalar reference.
pub fn qdot_q6_k(row: &[u8], xq: &Q8KRow) -> f32 {
    let mut lanes = [0.0f32; 8];
    for (b, blk) in row.chunks_exact(210).take(xq.d.len()).enumerate() {
        let (ql, qh, scales) = (&blk[0..128], &blk[128..192], &blk[192..208]);
        let x = &xq.qs[b * QK_K..(b + 1) * QK_K];
        let mut isum = 0i32;
        for (s, &sc) in scales.iter().enumerate() {
            let mut run = 0i32;
            for k in 0..16 {
                let e = s * 16 + k;
                let (j, n) = (e / 128, e % 128);
                let lo = (ql[j * 64 + n % 64] >> (4 * (n / 64))) & 15;
                let hi = (qh[j * 32 + n % 32] >> (2 * (n / 32))) & 3;
                run += (lo | (hi << 4)) as i32 * x[e] as i32;
            }
            isum += sc as i8 as i32 * run;
        }
        isum -= q6_k_offset(scales, &xq.bsums[b * 16..b * 16 + 16]);
        lanes[b % 8] += term(f16(blk, 208), xq.d[b], isum);
    }
    reduce_lanes(lanes)
}
