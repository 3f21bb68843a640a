//! The element-wise and attention operations of a transformer layer, on f32 activations.
//!
//! These are plain loops that the compiler vectorizes; the heavy work (matrix products against quantized
//! weights) lives in the matmul kernels. Each function documents the layout it expects.

use crate::models::config::RopeStyle;

/// RMS normalization of each `w.len()`-wide row of `x` into `out`: `x / sqrt(mean(x²) + eps) * w`.
pub fn rmsnorm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let n = w.len();
    for (xr, or) in x.chunks_exact(n).zip(out.chunks_exact_mut(n)) {
        let ss: f32 = xr.iter().map(|v| v * v).sum::<f32>() / n as f32;
        let s = 1.0 / (ss + eps).sqrt();
        for ((o, &v), &g) in or.iter_mut().zip(xr).zip(w) {
            *o = v * s * g;
        }
    }
}

/// In-place RMS normalization of each `w.len()`-wide row (per-head q/k norms).
pub fn rmsnorm_inplace(x: &mut [f32], w: &[f32], eps: f32) {
    let n = w.len();
    for xr in x.chunks_exact_mut(n) {
        let ss: f32 = xr.iter().map(|v| v * v).sum::<f32>() / n as f32;
        let s = 1.0 / (ss + eps).sqrt();
        for (v, &g) in xr.iter_mut().zip(w) {
            *v = *v * s * g;
        }
    }
}

/// cos/sin of `pos * inv_freq[i]` for one position; `cs` holds `[cos.., sin..]` (2 × inv_freq.len()).
pub fn rope_table(pos: usize, inv_freq: &[f32], cs: &mut [f32]) {
    let half = inv_freq.len();
    for (i, &f) in inv_freq.iter().enumerate() {
        let a = pos as f32 * f;
        cs[i] = a.cos();
        cs[half + i] = a.sin();
    }
}

/// Rotates the first `2 * cs.len()/2` dims of every `head_dim`-wide head in `x` (one token's heads).
pub fn rope_apply(x: &mut [f32], head_dim: usize, cs: &[f32], style: RopeStyle) {
    let half = cs.len() / 2;
    let (cos, sin) = cs.split_at(half);
    for h in x.chunks_exact_mut(head_dim) {
        match style {
            RopeStyle::Neox => {
                for i in 0..half {
                    let (a, b) = (h[i], h[i + half]);
                    h[i] = a * cos[i] - b * sin[i];
                    h[i + half] = b * cos[i] + a * sin[i];
                }
            }
            RopeStyle::Interleaved => {
                for i in 0..half {
                    let (a, b) = (h[2 * i], h[2 * i + 1]);
                    h[2 * i] = a * cos[i] - b * sin[i];
                    h[2 * i + 1] = b * cos[i] + a * sin[i];
                }
            }
        }
    }
}

/// `gate[i] = silu(gate[i]) * up[i]` (the SwiGLU of llama-style MLPs).
pub fn silu_mul(gate: &mut [f32], up: &[f32]) {
    for (g, &u) in gate.iter_mut().zip(up) {
        *g = *g / (1.0 + exp_fast(-*g)) * u;
    }
}

/// `gate[i] = gelu_tanh(gate[i]) * up[i]` (Gemma's GeGLU, the tanh approximation).
///
/// `0.5 x (1 + tanh(y))` is computed as `x / (1 + exp(-2y))`, the same value (1 + tanh y = 2 / (1 + e^-2y))
/// without tanh's cancellation near -1 and with the vectorizable [`exp_fast`].
pub fn gelu_tanh_mul(gate: &mut [f32], up: &[f32]) {
    const C: f32 = 0.797_884_6; // sqrt(2/pi)
    for (g, &u) in gate.iter_mut().zip(up) {
        let x = *g;
        let y = C * (x + 0.044715 * x * x * x);
        *g = x / (1.0 + exp_fast(-2.0 * y)) * u;
    }
}

/// `y += x`.
pub fn add_inplace(y: &mut [f32], x: &[f32]) {
    for (a, &b) in y.iter_mut().zip(x) {
        *a += b;
    }
}

/// One sequence of a batch as attention sees it: its query tokens are `tokens` (a range of the batch's rows),
/// at positions `start..start + tokens.len()`, and its keys/values for positions `0..start + tokens.len()` are
/// in the paged storage under `table`.
pub struct SeqSpan<'a> {
    pub tokens: std::ops::Range<usize>,
    pub start: usize,
    pub table: &'a [u32],
}

/// Where attention reads keys and values from: one layer's paged storage.
pub struct KvView<'a> {
    pub k: &'a [f32],
    pub v: &'a [f32],
    pub block_size: usize,
}

impl KvView<'_> {
    #[inline]
    fn slot(&self, table: &[u32], pos: usize, kv_dim: usize) -> usize {
        (table[pos / self.block_size] as usize * self.block_size + pos % self.block_size) * kv_dim
    }
}

/// Shape and masking of one attention call.
pub struct AttnParams {
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub scale: f32,
    /// Keys at distance >= window from the query are masked.
    pub window: Option<usize>,
    pub softcap: Option<f32>,
}

/// Causal attention for a batch: `q` is `[n, n_heads*head_dim]` for all the batch's tokens; `token_seq[t]`
/// says which of `seqs` row `t` belongs to. Each token attends to its own sequence's cached keys up to its
/// position. `out`: same shape as `q`. Heads share KV heads in groups (GQA).
pub fn attention(
    q: &[f32],
    kv: &KvView,
    seqs: &[SeqSpan],
    token_seq: &[u32],
    p: &AttnParams,
    out: &mut [f32],
) {
    let hd = p.head_dim;
    let n_units = out.len() / hd;
    let outp = super::OutPtr(out.as_mut_ptr());
    super::pool::parallel_for(n_units, |idx| {
        let t = idx / p.n_heads;
        let s = &seqs[token_seq[t] as usize];
        let pos = s.start + (t - s.tokens.start);
        // SAFETY: unit `idx` alone writes out[idx * hd..(idx + 1) * hd], which is in bounds; `out` is
        // borrowed mutably until every unit has run.
        let o = unsafe { std::slice::from_raw_parts_mut(outp.at(idx * hd), hd) };
        SCORES.with_borrow_mut(|scores| attend_one(q, kv, s.table, pos, p, idx, o, scores))
    });
}

thread_local! {
    /// Per-thread attention scores, grown to the longest context seen (so no allocation per token).
    static SCORES: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// One query head's attention: `idx` = row * n_heads + head, the query at position `pos`; writes `o`
/// (`head_dim`).
#[allow(clippy::too_many_arguments)]
fn attend_one(
    q: &[f32],
    kv: &KvView,
    table: &[u32],
    pos: usize,
    p: &AttnParams,
    idx: usize,
    o: &mut [f32],
    scores: &mut Vec<f32>,
) {
    let hd = p.head_dim;
    let kv_dim = p.n_kv_heads * hd;
    let group = p.n_heads / p.n_kv_heads;
    let (t, h) = (idx / p.n_heads, idx % p.n_heads);
    let kvh = h / group;
    let qh = &q[t * p.n_heads * hd + h * hd..][..hd];
    let lo = match p.window {
        Some(w) => (pos + 1).saturating_sub(w),
        None => 0,
    };
    // Room for every position the storage holds, once per thread: no reallocation as contexts grow.
    scores.clear();
    scores.reserve(kv.k.len() / kv_dim);
    scores.resize(pos + 1 - lo, 0.0);
    // Keys come in runs of consecutive slots (one block's positions); each run is one call.
    for_runs(kv, table, kv_dim, (lo, pos + 1), |j, n, at| {
        super::dots_strided(
            qh,
            &kv.k[at + kvh * hd..],
            kv_dim,
            &mut scores[j - lo..j - lo + n],
        );
    });
    let mut max = f32::NEG_INFINITY;
    for s in scores.iter_mut() {
        *s *= p.scale;
        if let Some(c) = p.softcap {
            *s = c * (*s / c).tanh();
        }
        max = max.max(*s);
    }
    let sum = exp_shifted(scores, max);
    let inv = 1.0 / sum;
    for s in scores.iter_mut() {
        *s *= inv;
    }
    o.fill(0.0);
    for_runs(kv, table, kv_dim, (lo, pos + 1), |j, n, at| {
        super::axpys_strided(
            &scores[j - lo..j - lo + n],
            &kv.v[at + kvh * hd..],
            kv_dim,
            o,
        );
    });
}

/// Calls `f(first, count, slot)` for each run of consecutive positions `first..first + count` (within
/// `from..to`) that lie in one block, with `slot` the float offset of the run's first position.
fn for_runs(
    kv: &KvView,
    table: &[u32],
    kv_dim: usize,
    (from, to): (usize, usize),
    mut f: impl FnMut(usize, usize, usize),
) {
    let bs = kv.block_size;
    let mut j = from;
    while j < to {
        let end = ((j / bs + 1) * bs).min(to);
        f(j, end - j, kv.slot(table, j, kv_dim));
        j = end;
    }
}

/// `x[i] = exp(x[i] - m)` for every element (all `x[i] <= m`, as softmax has them), returning the sum (in
/// eight interleaved partial sums, added pairwise). Written as straight-line arithmetic on lanes of eight
/// so the compiler vectorizes it; see [`exp_fast`].
pub fn exp_shifted(x: &mut [f32], m: f32) -> f32 {
    let mut acc = [0f32; 8];
    let mut chunks = x.chunks_exact_mut(8);
    for c in &mut chunks {
        for (v, a) in c.iter_mut().zip(acc.iter_mut()) {
            *v = exp_fast(*v - m);
            *a += *v;
        }
    }
    let mut tail = 0.0f32;
    for v in chunks.into_remainder() {
        *v = exp_fast(*v - m);
        tail += *v;
    }
    ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7])) + tail
}

/// `exp(x)` within 4 ulp of the correctly rounded value (measured worst 2.93 ulp; tests/attention_exp.rs
/// checks it against f64 over the whole range); 0 below -87.3 (where f32 results would be subnormal), +inf
/// above 88.72, NaN for NaN.
///
/// `x = n ln2 + r` with `|r| <= ln2 / 2` (ln2 split in two parts so `r` is exact), `exp(r)` by its degree-6
/// Taylor polynomial in Horner form, and `2^n` built directly in the exponent bits. No branches, so a loop
/// over it vectorizes (libm's `expf` does not, and it dominated softmax and the MLP activations).
#[inline(always)]
pub fn exp_fast(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LO: f32 = -87.3;
    const HI: f32 = 88.72;
    // Adding and removing 1.5 * 2^23 rounds to the nearest integer (ties to even) with plain f32 adds, which
    // vectorize on every x86_64 (`round_ties_even` would be a libm call without SSE4.1).
    const ROUND: f32 = 12_582_912.0;
    let xc = x.clamp(LO, HI);
    let n = (xc * LOG2E + ROUND) - ROUND;
    let r = (xc - n * LN2_HI) - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    // 2^n as two factors: n reaches 128 at the top of the range, one past f32's largest exponent.
    let ni = n as i32;
    let n1 = ni >> 1;
    let n2 = ni - n1;
    let s1 = f32::from_bits(((n1 + 127) << 23) as u32);
    let s2 = f32::from_bits(((n2 + 127) << 23) as u32);
    let y = if x < LO {
        0.0
    } else if x > HI {
        f32::INFINITY
    } else {
        p * s1 * s2
    };
    if x.is_nan() {
        x
    } else {
        y
    }
}
