//! NEON kernels for aarch64, chosen at run time (NEON is part of every aarch64 CPU, so the token exists
//! unless `HEARTH_KERNELS` caps the level; `dotprod`'s `sdot` is detected on its own for the integer kernels).
//!
//! Every kernel is an `unsafe` `#[target_feature]` function (or inlined into one); the only way to reach them
//! is through a [`Neon`] token. As in `avx2/`, block types decode 32 weights at a time, here into eight
//! `float32x4_t`, with the reference's f32 operations (`tensor::quants`), so `dequantize` is bit-exact. `dot`
//! FMAs those vectors against `x` into four accumulators in exactly the order [`f32_dot`] uses over the
//! dequantized row, so a one-token matvec and a many-token matmul agree bit for bit. `blocks` decodes the
//! block types, `qdot` holds the integer kernels against 8-bit activations.
//!
//! Stable Rust has no f16 vector type yet, so f16 to f32 conversion is the `fcvtl`/`fcvt` instruction through
//! inline assembly (base AdvSIMD, no extension needed).

use std::arch::aarch64::*;
use std::arch::asm;

use crate::tensor::DType;

/// Defines, for one block type, `$dot(row, x) -> f32` and `$deq(row, out)`. A block is `$bb` bytes and
/// `$runs` runs of 32 weights; `$head` computes what a block's runs share (scales) from `$blk` (a pointer to
/// the block), and `$run` yields run `$r`'s 32 weights, in order, as `[float32x4_t; 8]`.
///
/// Callers must pass `row` with at least `x.len() / (32 * $runs) * $bb` bytes (resp. `out.len()`), and
/// `x.len()` a multiple of `32 * $runs`.
macro_rules! block_kernels {
    ($dot:ident, $deq:ident, $bb:expr, $runs:expr, |$blk:ident| $head:expr, |$h:ident, $r:ident| $run:expr) => {
        #[target_feature(enable = "neon")]
        pub(super) unsafe fn $dot(row: &[u8], x: &[f32]) -> f32 {
            let n_blocks = x.len() / (32 * $runs);
            debug_assert!(x.len().is_multiple_of(32 * $runs) && row.len() >= n_blocks * $bb);
            let mut acc = [vdupq_n_f32(0.0); 4];
            let mut xp = x.as_ptr();
            for b in 0..n_blocks {
                let $blk: *const u8 = row.as_ptr().add(b * $bb);
                let $h = $head;
                for $r in 0..$runs {
                    let w: [float32x4_t; 8] = $run;
                    // Element 4k of the run goes to accumulator k % 4: two of f32_dot's 16-wide steps.
                    for (k, wk) in w.into_iter().enumerate() {
                        acc[k % 4] = vfmaq_f32(acc[k % 4], wk, vld1q_f32(xp.add(4 * k)));
                    }
                    xp = xp.add(32);
                }
            }
            super::hsum4(acc)
        }

        #[target_feature(enable = "neon")]
        pub(super) unsafe fn $deq(row: &[u8], out: &mut [f32]) {
            let n_blocks = out.len() / (32 * $runs);
            debug_assert!(out.len().is_multiple_of(32 * $runs) && row.len() >= n_blocks * $bb);
            let mut op = out.as_mut_ptr();
            for b in 0..n_blocks {
                let $blk: *const u8 = row.as_ptr().add(b * $bb);
                let $h = $head;
                for $r in 0..$runs {
                    let w: [float32x4_t; 8] = $run;
                    for (k, wk) in w.into_iter().enumerate() {
                        vst1q_f32(op.add(4 * k), wk);
                    }
                    op = op.add(32);
                }
            }
        }
    };
}

mod blocks;
mod mlx;
mod qdot;

/// Proof that this CPU runs NEON (and that `HEARTH_KERNELS` allows it); `dotprod` says whether the integer
/// kernels may use `sdot`. Its methods are the safe entry points to the kernels.
#[derive(Clone, Copy, Debug)]
pub(super) struct Neon {
    dotprod: bool,
}

impl Neon {
    /// The token, unless the level is capped below NEON.
    pub(super) fn detect() -> Option<Neon> {
        if !super::features::allows(super::features::Level::Neon) {
            return None;
        }
        std::arch::is_aarch64_feature_detected!("neon").then(|| Neon {
            dotprod: std::arch::is_aarch64_feature_detected!("dotprod"),
        })
    }

    /// The same token with `sdot` turned off, so tests run the widening-multiply path on CPUs that have
    /// `dotprod` too.
    pub(super) fn without_dotprod(self) -> Neon {
        Neon { dotprod: false }
    }

    /// Whether `sdot` is in use.
    pub(super) fn has_dotprod(self) -> bool {
        self.dotprod
    }

    /// `dot(row, x)` for `x.len()` weights of `dtype` (whole blocks; `row` checked by the caller).
    pub(super) fn dot(self, dtype: DType, row: &[u8], x: &[f32]) -> f32 {
        debug_assert!(row.len() >= dtype.bytes_for(x.len()).unwrap_or(usize::MAX));
        // SAFETY: the token proves NEON; the caller checked `row` holds the blocks `x` needs.
        unsafe {
            match dtype {
                DType::F32 => dot_f32(row, x),
                DType::F16 => dot_f16(row, x),
                DType::BF16 => dot_bf16(row, x),
                DType::Q4_0 => blocks::dot_q4_0(row, x),
                DType::Q4_1 => blocks::dot_q4_1(row, x),
                DType::Q5_0 => blocks::dot_q5_0(row, x),
                DType::Q5_1 => blocks::dot_q5_1(row, x),
                DType::Q8_0 => blocks::dot_q8_0(row, x),
                DType::Q2_K => blocks::dot_q2_k(row, x),
                DType::Q3_K => blocks::dot_q3_k(row, x),
                DType::Q4_K => blocks::dot_q4_k(row, x),
                DType::Q5_K => blocks::dot_q5_k(row, x),
                DType::Q6_K => blocks::dot_q6_k(row, x),
                DType::Mlx(_) => crate::backend::cpu::dot_decoded(
                    x.len(),
                    |r| self.dequantize(dtype, row, r),
                    |r| self.f32_dot(r, x),
                ),
            }
        }
    }

    /// Dequantizes `out.len()` weights of `dtype` (whole blocks; `row` checked by the caller), bit-exact
    /// with `tensor::quants::dequantize_row` (F16 NaNs may come out quieted).
    pub(super) fn dequantize(self, dtype: DType, row: &[u8], out: &mut [f32]) {
        debug_assert!(row.len() >= dtype.bytes_for(out.len()).unwrap_or(usize::MAX));
        // SAFETY: as in `dot`.
        unsafe {
            match dtype {
                DType::F32 | DType::BF16 => crate::tensor::quants::dequantize_row(dtype, row, out),
                DType::F16 => deq_f16(row, out),
                DType::Q4_0 => blocks::deq_q4_0(row, out),
                DType::Q4_1 => blocks::deq_q4_1(row, out),
                DType::Q5_0 => blocks::deq_q5_0(row, out),
                DType::Q5_1 => blocks::deq_q5_1(row, out),
                DType::Q8_0 => blocks::deq_q8_0(row, out),
                DType::Q2_K => blocks::deq_q2_k(row, out),
                DType::Q3_K => blocks::deq_q3_k(row, out),
                DType::Q4_K => blocks::deq_q4_k(row, out),
                DType::Q5_K => blocks::deq_q5_k(row, out),
                DType::Q6_K => blocks::deq_q6_k(row, out),
                DType::Mlx(_) => crate::tensor::quants::dequantize_row(dtype, row, out),
            }
        }
    }

    /// `sum(a[i] * b[i])` over the shorter length.
    pub(super) fn f32_dot(self, a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        // SAFETY: the token proves NEON; both pointers are valid for `n` reads.
        unsafe { f32_dot(a.as_ptr(), b.as_ptr(), n) }
    }

    /// `y[i] += a * x[i]` over the shorter length.
    pub(super) fn axpy(self, a: f32, x: &[f32], y: &mut [f32]) {
        let n = x.len().min(y.len());
        // SAFETY: the token proves NEON; `x` valid for `n` reads, `y` for `n` writes.
        unsafe { axpy(a, x.as_ptr(), y.as_mut_ptr(), n) }
    }

    /// Four dot products of the rows `w[r*x.len() ..][..x.len()]` (r = 0..4) with `x`, sharing the loads of
    /// `x`: the inner step of a multi-token matmul over dequantized rows.
    pub(super) fn dot4(self, w: &[f32], x: &[f32]) -> [f32; 4] {
        assert!(w.len() >= 4 * x.len());
        // SAFETY: the token proves NEON; `w` holds four rows of `x.len()`.
        unsafe { dot4(w.as_ptr(), x) }
    }
}

/// The sum of four accumulators' sixteen lanes, in one fixed order (every dot product here ends with it).
#[inline]
#[target_feature(enable = "neon")]
unsafe fn hsum4(acc: [float32x4_t; 4]) -> f32 {
    vaddvq_f32(vaddq_f32(
        vaddq_f32(acc[0], acc[1]),
        vaddq_f32(acc[2], acc[3]),
    ))
}

/// The f16 at `p` (unaligned) as f32 (exact for every finite value; NaNs come out quieted).
#[inline]
#[target_feature(enable = "neon")]
unsafe fn h2f(p: *const u8) -> f32 {
    let h = (p as *const u16).read_unaligned();
    let r: f32;
    // SAFETY: `fcvt` reads and writes registers only.
    asm!("fcvt {r:s}, {h:h}", h = in(vreg) h, r = out(vreg) r, options(pure, nomem, nostack));
    r
}

/// Four f16 (as raw bits) widened to f32 lanes with `fcvtl`.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn f16x4_bits(h: uint16x4_t) -> float32x4_t {
    let r: float32x4_t;
    // SAFETY: `fcvtl` reads and writes registers only.
    asm!("fcvtl {r:v}.4s, {h:v}.4h", h = in(vreg) h, r = out(vreg) r, options(pure, nomem, nostack));
    r
}

/// Four f16 at `p` (unaligned: rows are bytes, so every row load here is a byte load) as f32 lanes.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn f16x4(p: *const u8) -> float32x4_t {
    f16x4_bits(vreinterpret_u16_u8(vld1_u8(p)))
}

/// Four bf16 at `p` (unaligned) as f32 lanes: each is the top half of an f32.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn bf16x4(p: *const u8) -> float32x4_t {
    vreinterpretq_f32_u32(vshll_n_u16::<16>(vreinterpret_u16_u8(vld1_u8(p))))
}

/// Four f32 at `p` (unaligned).
#[inline]
#[target_feature(enable = "neon")]
unsafe fn f32x4(p: *const u8) -> float32x4_t {
    vreinterpretq_f32_u8(vld1q_u8(p))
}

/// `sum(a[i] * b[i])`: four accumulators over 16-wide steps, then 4-wide steps into the first, [`hsum4`],
/// then a scalar tail. Every dot product in this module follows this order.
#[target_feature(enable = "neon")]
unsafe fn f32_dot(a: *const f32, b: *const f32, n: usize) -> f32 {
    dot_with(n, b, |i| vld1q_f32(a.add(i)), |i| *a.add(i))
}

/// [`f32_dot`]'s summation order over a row whose four elements at `i` are `load(i)` (one element:
/// `tail(i)`), against `x` at `xp`.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn dot_with(
    n: usize,
    xp: *const f32,
    load: impl Fn(usize) -> float32x4_t,
    tail: impl Fn(usize) -> f32,
) -> f32 {
    let mut acc = [vdupq_n_f32(0.0); 4];
    let mut i = 0;
    while i + 16 <= n {
        for (k, ak) in acc.iter_mut().enumerate() {
            *ak = vfmaq_f32(*ak, load(i + 4 * k), vld1q_f32(xp.add(i + 4 * k)));
        }
        i += 16;
    }
    while i + 4 <= n {
        acc[0] = vfmaq_f32(acc[0], load(i), vld1q_f32(xp.add(i)));
        i += 4;
    }
    let mut s = hsum4(acc);
    while i < n {
        s += tail(i) * *xp.add(i);
        i += 1;
    }
    s
}

#[target_feature(enable = "neon")]
unsafe fn axpy(a: f32, x: *const f32, y: *mut f32, n: usize) {
    let mut i = 0;
    while i + 16 <= n {
        for k in 0..4 {
            let p = y.add(i + 4 * k);
            vst1q_f32(p, vfmaq_n_f32(vld1q_f32(p), vld1q_f32(x.add(i + 4 * k)), a));
        }
        i += 16;
    }
    while i + 4 <= n {
        let p = y.add(i);
        vst1q_f32(p, vfmaq_n_f32(vld1q_f32(p), vld1q_f32(x.add(i)), a));
        i += 4;
    }
    while i < n {
        *y.add(i) += a * *x.add(i);
        i += 1;
    }
}

/// Four rows' dot products with `x`, all four sharing each load of `x` (sixteen accumulators); each row is
/// summed in exactly the order of [`f32_dot`], so the result does not depend on how many tokens a matmul
/// holds.
#[target_feature(enable = "neon")]
unsafe fn dot4(w: *const f32, x: &[f32]) -> [f32; 4] {
    let (n, xp) = (x.len(), x.as_ptr());
    let rows = [w, w.add(n), w.add(2 * n), w.add(3 * n)];
    let mut acc = [[vdupq_n_f32(0.0); 4]; 4];
    let mut i = 0;
    while i + 16 <= n {
        for k in 0..4 {
            let xk = vld1q_f32(xp.add(i + 4 * k));
            for (a, r) in acc.iter_mut().zip(rows) {
                a[k] = vfmaq_f32(a[k], vld1q_f32(r.add(i + 4 * k)), xk);
            }
        }
        i += 16;
    }
    while i + 4 <= n {
        let xk = vld1q_f32(xp.add(i));
        for (a, r) in acc.iter_mut().zip(rows) {
            a[0] = vfmaq_f32(a[0], vld1q_f32(r.add(i)), xk);
        }
        i += 4;
    }
    let mut s = [hsum4(acc[0]), hsum4(acc[1]), hsum4(acc[2]), hsum4(acc[3])];
    while i < n {
        for (sj, r) in s.iter_mut().zip(rows) {
            *sj += *r.add(i) * *xp.add(i);
        }
        i += 1;
    }
    s
}

#[target_feature(enable = "neon")]
unsafe fn dot_f32(row: &[u8], x: &[f32]) -> f32 {
    let p = row.as_ptr();
    dot_with(
        x.len(),
        x.as_ptr(),
        |i| f32x4(p.add(4 * i)),
        |i| (p.add(4 * i) as *const f32).read_unaligned(),
    )
}

#[target_feature(enable = "neon")]
unsafe fn dot_f16(row: &[u8], x: &[f32]) -> f32 {
    let p = row.as_ptr();
    dot_with(
        x.len(),
        x.as_ptr(),
        |i| f16x4(p.add(2 * i)),
        |i| h2f(p.add(2 * i)),
    )
}

#[target_feature(enable = "neon")]
unsafe fn dot_bf16(row: &[u8], x: &[f32]) -> f32 {
    let p = row.as_ptr();
    dot_with(
        x.len(),
        x.as_ptr(),
        |i| bf16x4(p.add(2 * i)),
        |i| f32::from_bits(((p.add(2 * i) as *const u16).read_unaligned() as u32) << 16),
    )
}

/// f16 to f32 with `fcvtl`. NaN inputs come out quieted (the reference keeps signaling payloads), so the
/// result equals `dequantize_row` for every non-NaN value and is NaN exactly where it is NaN.
#[target_feature(enable = "neon")]
unsafe fn deq_f16(row: &[u8], out: &mut [f32]) {
    let (n, p, op) = (out.len(), row.as_ptr(), out.as_mut_ptr());
    let mut i = 0;
    while i + 4 <= n {
        vst1q_f32(op.add(i), f16x4(p.add(2 * i)));
        i += 4;
    }
    while i < n {
        *op.add(i) = h2f(p.add(2 * i));
        i += 1;
    }
}

#[cfg(test)]
mod tests;
