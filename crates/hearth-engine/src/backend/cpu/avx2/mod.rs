//! AVX2 + FMA (+ F16C) kernels for x86_64, chosen at run time.
//!
//! Every kernel here is an `unsafe` `#[target_feature]` function; the only way to reach them is through an
//! [`Avx2`] token, which exists only once the CPU has been seen to support those features. Block types decode
//! 32 weights at a time into four `__m256` registers, with the same f32 operations as the reference
//! (`tensor::quants`), so `dequantize` here is bit-exact too; `dot` FMAs those registers against `x` into
//! four accumulators and sums them horizontally once per row.

use std::arch::x86_64::*;

use crate::tensor::DType;

/// Defines, for one block type, `$dot(row, x) -> f32` and `$deq(row, out)`. A block is `$bb` bytes and
/// `$runs` runs of 32 weights; `$head` computes what a block's runs share (scales) from `$blk` (a pointer to
/// the block), and `$run` yields run `$r`'s 32 weights, in order, as `[__m256; 4]`.
///
/// Callers must pass `row` with at least `x.len() / (32 * $runs) * $bb` bytes (resp. `out.len()`), and
/// `x.len()` a multiple of `32 * $runs`.
macro_rules! block_kernels {
    ($dot:ident, $deq:ident, $bb:expr, $runs:expr, |$blk:ident| $head:expr, |$h:ident, $r:ident| $run:expr) => {
        #[target_feature(enable = "avx2,fma,f16c")]
        pub(super) unsafe fn $dot(row: &[u8], x: &[f32]) -> f32 {
            let n_blocks = x.len() / (32 * $runs);
            debug_assert!(x.len().is_multiple_of(32 * $runs) && row.len() >= n_blocks * $bb);
            let mut a0 = _mm256_setzero_ps();
            let mut a1 = _mm256_setzero_ps();
            let mut a2 = _mm256_setzero_ps();
            let mut a3 = _mm256_setzero_ps();
            let mut xp = x.as_ptr();
            for b in 0..n_blocks {
                let $blk: *const u8 = row.as_ptr().add(b * $bb);
                let $h = $head;
                for $r in 0..$runs {
                    let w: [__m256; 4] = $run;
                    a0 = _mm256_fmadd_ps(w[0], _mm256_loadu_ps(xp), a0);
                    a1 = _mm256_fmadd_ps(w[1], _mm256_loadu_ps(xp.add(8)), a1);
                    a2 = _mm256_fmadd_ps(w[2], _mm256_loadu_ps(xp.add(16)), a2);
                    a3 = _mm256_fmadd_ps(w[3], _mm256_loadu_ps(xp.add(24)), a3);
                    xp = xp.add(32);
                }
            }
            super::hsum(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)))
        }

        #[target_feature(enable = "avx2,fma,f16c")]
        pub(super) unsafe fn $deq(row: &[u8], out: &mut [f32]) {
            let n_blocks = out.len() / (32 * $runs);
            debug_assert!(out.len().is_multiple_of(32 * $runs) && row.len() >= n_blocks * $bb);
            let mut op = out.as_mut_ptr();
            for b in 0..n_blocks {
                let $blk: *const u8 = row.as_ptr().add(b * $bb);
                let $h = $head;
                for $r in 0..$runs {
                    let w: [__m256; 4] = $run;
                    _mm256_storeu_ps(op, w[0]);
                    _mm256_storeu_ps(op.add(8), w[1]);
                    _mm256_storeu_ps(op.add(16), w[2]);
                    _mm256_storeu_ps(op.add(24), w[3]);
                    op = op.add(32);
                }
            }
        }
    };
}

mod blocks;
mod mlx_float;
mod qdot;

pub(in crate::backend::cpu) use mlx_float::deq_mlx;

/// Proof that this CPU runs AVX2, FMA and F16C; its methods are the safe entry points to the kernels.
#[derive(Clone, Copy, Debug)]
pub(super) struct Avx2(());

impl Avx2 {
    /// The token, if the CPU has the features.
    pub(super) fn detect() -> Option<Avx2> {
        if !super::features::allows(super::features::Level::Avx2) {
            return None;
        }
        let ok = is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c");
        ok.then_some(Avx2(()))
    }

    /// `dot(row, x)` for `x.len()` weights of `dtype` (whole blocks; `row` checked by the caller).
    pub(super) fn dot(self, dtype: DType, row: &[u8], x: &[f32]) -> f32 {
        debug_assert!(row.len() >= dtype.bytes_for(x.len()).unwrap_or(usize::MAX));
        // SAFETY: the token proves the features; the caller checked `row` holds the blocks `x` needs.
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
    /// with `tensor::quants::dequantize_row`.
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
                DType::Mlx(m) => deq_mlx(m, row, out),
            }
        }
    }

    /// `sum(a[i] * b[i])` over the shorter length.
    pub(super) fn f32_dot(self, a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        // SAFETY: the token proves the features; both pointers are valid for `n` reads.
        unsafe { f32_dot(a.as_ptr(), b.as_ptr(), n) }
    }

    /// `out[j] = f32_dot(q, k[j * stride..][..q.len()])` for a run of keys (the caller checked `k`).
    pub(super) fn dots_strided(self, q: &[f32], k: &[f32], stride: usize, out: &mut [f32]) {
        // SAFETY: the token proves the features; the caller checked `k` for the run's reads.
        unsafe { dots_strided(q, k.as_ptr(), stride, out) }
    }

    /// `y += w[j] * v[j * stride..][..y.len()]` for every `j`, in order (the caller checked `v`).
    pub(super) fn axpys_strided(self, w: &[f32], v: &[f32], stride: usize, y: &mut [f32]) {
        // SAFETY: as in `dots_strided`.
        unsafe { axpys_strided(w, v.as_ptr(), stride, y) }
    }

    /// `y[i] += a * x[i]` over the shorter length.
    pub(super) fn axpy(self, a: f32, x: &[f32], y: &mut [f32]) {
        let n = x.len().min(y.len());
        // SAFETY: the token proves the features; `x` valid for `n` reads, `y` for `n` writes.
        unsafe { axpy(a, x.as_ptr(), y.as_mut_ptr(), n) }
    }

    /// Four dot products of the rows `w[r*x.len() ..][..x.len()]` (r = 0..4) with `x`, sharing the loads of
    /// `x`: the inner step of a multi-token matmul over dequantized rows.
    pub(super) fn dot4(self, w: &[f32], x: &[f32]) -> [f32; 4] {
        assert!(w.len() >= 4 * x.len());
        // SAFETY: the token proves the features; `w` holds four rows of `x.len()`.
        unsafe { dot4(w.as_ptr(), x) }
    }
}

/// The sum of a vector's eight lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    _mm_cvtss_f32(s)
}

/// The f16 at `p` (unaligned) as f32, through F16C (exact for every finite value).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn h2f(p: *const u8) -> f32 {
    let bits = (p as *const u16).read_unaligned();
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
}

/// Eight bytes at `p` (unaligned), zero-extended to eight i32 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn u8x8(p: *const u8) -> __m256i {
    _mm256_cvtepu8_epi32(_mm_loadl_epi64(p as *const __m128i))
}

/// # Safety
/// As `f32_dot`, for each key of the run.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dots_strided(q: &[f32], k: *const f32, stride: usize, out: &mut [f32]) {
    for (j, o) in out.iter_mut().enumerate() {
        *o = f32_dot(q.as_ptr(), k.add(j * stride), q.len());
    }
}

/// # Safety
/// As `axpy`, for each value of the run.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn axpys_strided(w: &[f32], v: *const f32, stride: usize, y: &mut [f32]) {
    for (j, &wj) in w.iter().enumerate() {
        axpy(wj, v.add(j * stride), y.as_mut_ptr(), y.len());
    }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn f32_dot(a: *const f32, b: *const f32, n: usize) -> f32 {
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i + 32 <= n {
        for (k, ak) in acc.iter_mut().enumerate() {
            *ak = _mm256_fmadd_ps(
                _mm256_loadu_ps(a.add(i + 8 * k)),
                _mm256_loadu_ps(b.add(i + 8 * k)),
                *ak,
            );
        }
        i += 32;
    }
    while i + 8 <= n {
        acc[0] = _mm256_fmadd_ps(_mm256_loadu_ps(a.add(i)), _mm256_loadu_ps(b.add(i)), acc[0]);
        i += 8;
    }
    let mut s = hsum(_mm256_add_ps(
        _mm256_add_ps(acc[0], acc[1]),
        _mm256_add_ps(acc[2], acc[3]),
    ));
    while i < n {
        s += *a.add(i) * *b.add(i);
        i += 1;
    }
    s
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn axpy(a: f32, x: *const f32, y: *mut f32, n: usize) {
    let av = _mm256_set1_ps(a);
    let mut i = 0;
    while i + 32 <= n {
        for k in 0..4 {
            let p = y.add(i + 8 * k);
            _mm256_storeu_ps(
                p,
                _mm256_fmadd_ps(av, _mm256_loadu_ps(x.add(i + 8 * k)), _mm256_loadu_ps(p)),
            );
        }
        i += 32;
    }
    while i + 8 <= n {
        let p = y.add(i);
        _mm256_storeu_ps(
            p,
            _mm256_fmadd_ps(av, _mm256_loadu_ps(x.add(i)), _mm256_loadu_ps(p)),
        );
        i += 8;
    }
    while i < n {
        *y.add(i) += a * *x.add(i);
        i += 1;
    }
}

/// Four rows' dot products with `x`, two rows at a time sharing the loads of `x`; each row is summed in
/// exactly the order of [`f32_dot`], so the result does not depend on how many tokens a matmul holds.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot4(w: *const f32, x: &[f32]) -> [f32; 4] {
    let n = x.len();
    let a = dot2(w, w.add(n), x);
    let b = dot2(w.add(2 * n), w.add(3 * n), x);
    [a[0], a[1], b[0], b[1]]
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot2(r0: *const f32, r1: *const f32, x: &[f32]) -> [f32; 2] {
    let (n, xp) = (x.len(), x.as_ptr());
    let mut a = [_mm256_setzero_ps(); 4];
    let mut b = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i + 32 <= n {
        for k in 0..4 {
            let xk = _mm256_loadu_ps(xp.add(i + 8 * k));
            a[k] = _mm256_fmadd_ps(_mm256_loadu_ps(r0.add(i + 8 * k)), xk, a[k]);
            b[k] = _mm256_fmadd_ps(_mm256_loadu_ps(r1.add(i + 8 * k)), xk, b[k]);
        }
        i += 32;
    }
    while i + 8 <= n {
        let xk = _mm256_loadu_ps(xp.add(i));
        a[0] = _mm256_fmadd_ps(_mm256_loadu_ps(r0.add(i)), xk, a[0]);
        b[0] = _mm256_fmadd_ps(_mm256_loadu_ps(r1.add(i)), xk, b[0]);
        i += 8;
    }
    let mut sa = hsum(_mm256_add_ps(
        _mm256_add_ps(a[0], a[1]),
        _mm256_add_ps(a[2], a[3]),
    ));
    let mut sb = hsum(_mm256_add_ps(
        _mm256_add_ps(b[0], b[1]),
        _mm256_add_ps(b[2], b[3]),
    ));
    while i < n {
        sa += *r0.add(i) * *xp.add(i);
        sb += *r1.add(i) * *xp.add(i);
        i += 1;
    }
    [sa, sb]
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_f32(row: &[u8], x: &[f32]) -> f32 {
    f32_dot(row.as_ptr() as *const f32, x.as_ptr(), x.len())
}

/// Eight f16 at `p` (unaligned) as f32 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn f16x8(p: *const u8) -> __m256 {
    _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i))
}

/// Eight bf16 at `p` (unaligned) as f32 lanes: each is the top half of an f32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn bf16x8(p: *const u8) -> __m256 {
    let v = _mm256_cvtepu16_epi32(_mm_loadu_si128(p as *const __m128i));
    _mm256_castsi256_ps(_mm256_slli_epi32(v, 16))
}

/// A dot product of 16-bit floats with `x`, summed in exactly the order of [`f32_dot`] over the converted
/// row (four accumulators over 32-wide steps, then 8-wide steps into the first, then a scalar tail), so that a
/// one-token matvec and a many-token matmul over dequantized rows give bit-identical results.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_half(
    n: usize,
    xp: *const f32,
    load: impl Fn(usize) -> __m256,
    tail: impl Fn(usize) -> f32,
) -> f32 {
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i + 32 <= n {
        for (k, ak) in acc.iter_mut().enumerate() {
            *ak = _mm256_fmadd_ps(load(i + 8 * k), _mm256_loadu_ps(xp.add(i + 8 * k)), *ak);
        }
        i += 32;
    }
    while i + 8 <= n {
        acc[0] = _mm256_fmadd_ps(load(i), _mm256_loadu_ps(xp.add(i)), acc[0]);
        i += 8;
    }
    let mut s = hsum(_mm256_add_ps(
        _mm256_add_ps(acc[0], acc[1]),
        _mm256_add_ps(acc[2], acc[3]),
    ));
    while i < n {
        s += tail(i) * *xp.add(i);
        i += 1;
    }
    s
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_f16(row: &[u8], x: &[f32]) -> f32 {
    let p = row.as_ptr();
    dot_half(
        x.len(),
        x.as_ptr(),
        |i| f16x8(p.add(2 * i)),
        |i| h2f(p.add(2 * i)),
    )
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_bf16(row: &[u8], x: &[f32]) -> f32 {
    let p = row.as_ptr();
    dot_half(
        x.len(),
        x.as_ptr(),
        |i| bf16x8(p.add(2 * i)),
        |i| f32::from_bits((u16::from_le_bytes([row[2 * i], row[2 * i + 1]]) as u32) << 16),
    )
}

/// f16 to f32 with F16C. NaN inputs come out quieted (the reference keeps signaling payloads), so the
/// result equals `dequantize_row` for every non-NaN value and is NaN exactly where it is NaN.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn deq_f16(row: &[u8], out: &mut [f32]) {
    let (n, p, op) = (out.len(), row.as_ptr(), out.as_mut_ptr());
    let mut i = 0;
    while i + 8 <= n {
        _mm256_storeu_ps(op.add(i), f16x8(p.add(2 * i)));
        i += 8;
    }
    while i < n {
        *op.add(i) = h2f(p.add(2 * i));
        i += 1;
    }
}
