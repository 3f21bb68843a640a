//! AVX-512 kernels with f32 activations: dot products of every weight type with `x`, dequantization, and the
//! f32 vector helpers (`f32_dot`, `axpy`, `dot4`), as the [`Avx512`] token's methods.
//!
//! Batch invariance rests on one summation order, used by every dot product at this level (see
//! [`dot_lanes`]): four zmm accumulators, 64-element steps where elements `i + 16k .. i + 16k + 16` go into
//! accumulator `k`; then at most one 32-element step into accumulators 0 and 1, one 16-element step into 0,
//! and a masked step over the last `< 16` elements into 0; then [`reduce`]. A block type's `dot` feeds its
//! decoded weights through the same accumulators in the same order (`blocks.rs`), so it is bit-identical to
//! `f32_dot(dequantize(row), x)` and to each lane of `dot4`.

use std::arch::x86_64::*;

use super::{blocks, Avx512};
use crate::tensor::DType;

impl Avx512 {
    /// `dot(row, x)` for `x.len()` weights of `dtype` (whole blocks; `row` checked by the caller).
    pub(in crate::backend::cpu) fn dot(self, dtype: DType, row: &[u8], x: &[f32]) -> f32 {
        debug_assert!(row.len() >= dtype.bytes_for(x.len()).unwrap_or(usize::MAX));
        // SAFETY: the token proves the features; the caller checked `row` holds the blocks `x` needs.
        unsafe {
            match dtype {
                DType::F32 => f32_dot(row.as_ptr() as *const f32, x.as_ptr(), x.len()),
                DType::F16 => dot_f16(row.as_ptr(), x),
                DType::BF16 => dot_bf16(row.as_ptr(), x),
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
    /// with `tensor::quants::dequantize_row` (F16 NaNs come out quieted).
    pub(in crate::backend::cpu) fn dequantize(self, dtype: DType, row: &[u8], out: &mut [f32]) {
        debug_assert!(row.len() >= dtype.bytes_for(out.len()).unwrap_or(usize::MAX));
        // SAFETY: as in `dot`.
        unsafe {
            match dtype {
                DType::F32 => crate::tensor::quants::dequantize_row(dtype, row, out),
                DType::F16 => deq_f16(row.as_ptr(), out),
                DType::BF16 => deq_bf16(row.as_ptr(), out),
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
                // Every AVX-512 CPU has AVX2: its MLX kernel (the same numbers at every level).
                DType::Mlx(m) => match crate::backend::cpu::avx2::Avx2::detect() {
                    Some(_) => crate::backend::cpu::avx2::deq_mlx(m, row, out),
                    None => crate::tensor::quants::dequantize_row(dtype, row, out),
                },
            }
        }
    }

    /// `sum(a[i] * b[i])` over the shorter length.
    pub(in crate::backend::cpu) fn f32_dot(self, a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        // SAFETY: the token proves the features; both pointers are valid for `n` reads.
        unsafe { f32_dot(a.as_ptr(), b.as_ptr(), n) }
    }

    /// `y[i] += a * x[i]` (one fused multiply-add per element) over the shorter length.
    pub(in crate::backend::cpu) fn axpy(self, a: f32, x: &[f32], y: &mut [f32]) {
        let n = x.len().min(y.len());
        // SAFETY: the token proves the features; `x` valid for `n` reads, `y` for `n` writes.
        unsafe { axpy(a, x.as_ptr(), y.as_mut_ptr(), n) }
    }

    /// `out[j] = f32_dot(q, k[j * stride..][..q.len()])`: attention scores of one query against a run of
    /// keys, in one call (the caller checked that `k` holds the run).
    pub(in crate::backend::cpu) fn dots_strided(
        self,
        q: &[f32],
        k: &[f32],
        stride: usize,
        out: &mut [f32],
    ) {
        // SAFETY: the token proves the features; the caller checked `k` for `(out.len() - 1) * stride +
        // q.len()` reads.
        unsafe { dots_strided(q, k.as_ptr(), stride, out) }
    }

    /// `y += w[j] * v[j * stride..][..y.len()]` for every `j`, in order: attention's weighted sum of a run of
    /// values (the caller checked that `v` holds the run).
    pub(in crate::backend::cpu) fn axpys_strided(
        self,
        w: &[f32],
        v: &[f32],
        stride: usize,
        y: &mut [f32],
    ) {
        // SAFETY: as in `dots_strided`.
        unsafe { axpys_strided(w, v.as_ptr(), stride, y) }
    }

    /// Four dot products of the rows `w[r*x.len() ..][..x.len()]` (r = 0..4) with `x`, sharing the loads of
    /// `x`; each lane bit-identical with `f32_dot` of its row.
    pub(in crate::backend::cpu) fn dot4(self, w: &[f32], x: &[f32]) -> [f32; 4] {
        assert!(w.len() >= 4 * x.len());
        // SAFETY: the token proves the features; `w` holds four rows of `x.len()`.
        unsafe { dot4(w.as_ptr(), x) }
    }
}

/// The sum of four accumulators' 64 lanes, always in the same order: `(a0 + a1) + (a2 + a3)`, then halves
/// folded onto halves down to one lane.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")]
pub(super) unsafe fn reduce(a: [__m512; 4]) -> f32 {
    let v = _mm512_add_ps(_mm512_add_ps(a[0], a[1]), _mm512_add_ps(a[2], a[3]));
    let h = _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
    let s = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    _mm_cvtss_f32(s)
}

/// The mask of the first `r` (< 16) lanes.
#[inline]
fn first_lanes(r: usize) -> __mmask16 {
    debug_assert!(r < 16);
    ((1u32 << r) - 1) as __mmask16
}

/// The dot product of `n` weights with `x` (at `xp`) in this level's summation order (module docs): `load(i)`
/// gives weights `i .. i + 16` as f32 lanes, `load_tail(i, k)` the lanes of `k` from `i` (others zero).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")]
unsafe fn dot_lanes(
    n: usize,
    xp: *const f32,
    load: impl Fn(usize) -> __m512,
    load_tail: impl Fn(usize, __mmask16) -> __m512,
) -> f32 {
    let mut acc = [_mm512_setzero_ps(); 4];
    let mut i = 0;
    while i + 64 <= n {
        for (k, ak) in acc.iter_mut().enumerate() {
            let j = i + 16 * k;
            *ak = _mm512_fmadd_ps(load(j), _mm512_loadu_ps(xp.add(j)), *ak);
        }
        i += 64;
    }
    if i + 32 <= n {
        acc[0] = _mm512_fmadd_ps(load(i), _mm512_loadu_ps(xp.add(i)), acc[0]);
        acc[1] = _mm512_fmadd_ps(load(i + 16), _mm512_loadu_ps(xp.add(i + 16)), acc[1]);
        i += 32;
    }
    if i + 16 <= n {
        acc[0] = _mm512_fmadd_ps(load(i), _mm512_loadu_ps(xp.add(i)), acc[0]);
        i += 16;
    }
    if i < n {
        let k = first_lanes(n - i);
        let xv = _mm512_maskz_loadu_ps(k, xp.add(i));
        acc[0] = _mm512_mask3_fmadd_ps(load_tail(i, k), xv, acc[0], k);
    }
    reduce(acc)
}

/// # Safety
/// AVX-512 F/BW/VL/DQ; `a` and `b` valid for `n` reads.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")]
unsafe fn f32_dot(a: *const f32, b: *const f32, n: usize) -> f32 {
    f32_dot_inline(a, b, n)
}

/// # Safety
/// As `f32_dot`, for each key of the run.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")]
unsafe fn dots_strided(q: &[f32], k: *const f32, stride: usize, out: &mut [f32]) {
    for (j, o) in out.iter_mut().enumerate() {
        *o = f32_dot_inline(q.as_ptr(), k.add(j * stride), q.len());
    }
}

/// # Safety
/// As `axpy`, for each value of the run.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")]
unsafe fn axpys_strided(w: &[f32], v: *const f32, stride: usize, y: &mut [f32]) {
    for (j, &wj) in w.iter().enumerate() {
        axpy(wj, v.add(j * stride), y.as_mut_ptr(), y.len());
    }
}

/// `f32_dot`'s body, inlined into the run kernels.
#[inline(always)]
unsafe fn f32_dot_inline(a: *const f32, b: *const f32, n: usize) -> f32 {
    dot_lanes(
        n,
        b,
        |i| _mm512_loadu_ps(a.add(i)),
        |i, k| _mm512_maskz_loadu_ps(k, a.add(i)),
    )
}

/// Sixteen f16 (bits in `v`) as f32 lanes, exact (F16C/AVX-512F conversion).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")]
unsafe fn f16x16(v: __m256i) -> __m512 {
    _mm512_cvtph_ps(v)
}

/// Sixteen bf16 (bits in `v`) as f32 lanes: each is the top half of an f32.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")]
unsafe fn bf16x16(v: __m256i) -> __m512 {
    _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(v), 16))
}

/// # Safety
/// AVX-512 F/BW/VL/DQ; `p` valid for `2 * x.len()` reads.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")]
unsafe fn dot_f16(p: *const u8, x: &[f32]) -> f32 {
    dot_lanes(
        x.len(),
        x.as_ptr(),
        |i| f16x16(_mm256_loadu_si256(p.add(2 * i) as *const __m256i)),
        |i, k| f16x16(_mm256_maskz_loadu_epi16(k, p.add(2 * i) as *const i16)),
    )
}

/// # Safety
/// AVX-512 F/BW/VL/DQ; `p` valid for `2 * x.len()` reads.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")]
unsafe fn dot_bf16(p: *const u8, x: &[f32]) -> f32 {
    dot_lanes(
        x.len(),
        x.as_ptr(),
        |i| bf16x16(_mm256_loadu_si256(p.add(2 * i) as *const __m256i)),
        |i, k| bf16x16(_mm256_maskz_loadu_epi16(k, p.add(2 * i) as *const i16)),
    )
}

/// Writes `out.len()` values, sixteen at a time from `conv` of sixteen 16-bit floats at `p`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")]
unsafe fn deq_half(p: *const u8, out: &mut [f32], conv: impl Fn(__m256i) -> __m512) {
    let (n, op) = (out.len(), out.as_mut_ptr());
    let mut i = 0;
    while i + 16 <= n {
        _mm512_storeu_ps(
            op.add(i),
            conv(_mm256_loadu_si256(p.add(2 * i) as *const __m256i)),
        );
        i += 16;
    }
    if i < n {
        let k = first_lanes(n - i);
        let v = conv(_mm256_maskz_loadu_epi16(k, p.add(2 * i) as *const i16));
        _mm512_mask_storeu_ps(op.add(i), k, v);
    }
}

/// f16 to f32; NaNs come out quieted (the reference keeps signaling payloads), every other value exact.
///
/// # Safety
/// AVX-512 F/BW/VL/DQ; `p` valid for `2 * out.len()` reads.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")]
unsafe fn deq_f16(p: *const u8, out: &mut [f32]) {
    deq_half(p, out, |v| f16x16(v))
}

/// # Safety
/// AVX-512 F/BW/VL/DQ; `p` valid for `2 * out.len()` reads.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")]
unsafe fn deq_bf16(p: *const u8, out: &mut [f32]) {
    deq_half(p, out, |v| bf16x16(v))
}

/// # Safety
/// AVX-512 F/BW/VL/DQ; `x` valid for `n` reads, `y` for `n` reads and writes.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")]
unsafe fn axpy(a: f32, x: *const f32, y: *mut f32, n: usize) {
    let av = _mm512_set1_ps(a);
    let mut i = 0;
    while i + 64 <= n {
        for k in 0..4 {
            let p = y.add(i + 16 * k);
            let v = _mm512_fmadd_ps(av, _mm512_loadu_ps(x.add(i + 16 * k)), _mm512_loadu_ps(p));
            _mm512_storeu_ps(p, v);
        }
        i += 64;
    }
    while i + 16 <= n {
        let p = y.add(i);
        _mm512_storeu_ps(
            p,
            _mm512_fmadd_ps(av, _mm512_loadu_ps(x.add(i)), _mm512_loadu_ps(p)),
        );
        i += 16;
    }
    if i < n {
        let k = first_lanes(n - i);
        let p = y.add(i);
        let v = _mm512_fmadd_ps(
            av,
            _mm512_maskz_loadu_ps(k, x.add(i)),
            _mm512_maskz_loadu_ps(k, p),
        );
        _mm512_mask_storeu_ps(p, k, v);
    }
}

/// Four rows' dot products with `x`, each in exactly [`dot_lanes`]' order, sharing the loads of `x`
/// (16 accumulators of the 32 zmm registers).
///
/// # Safety
/// AVX-512 F/BW/VL/DQ; `w` valid for `4 * x.len()` reads.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")]
unsafe fn dot4(w: *const f32, x: &[f32]) -> [f32; 4] {
    let (n, xp) = (x.len(), x.as_ptr());
    let rows = [w, w.add(n), w.add(2 * n), w.add(3 * n)];
    let mut acc = [[_mm512_setzero_ps(); 4]; 4];
    // One step of 16 elements at `j` into accumulator `k` of every row.
    let step = |acc: &mut [[__m512; 4]; 4], j: usize, k: usize| {
        let xv = _mm512_loadu_ps(xp.add(j));
        for (a, r) in acc.iter_mut().zip(rows) {
            a[k] = _mm512_fmadd_ps(_mm512_loadu_ps(r.add(j)), xv, a[k]);
        }
    };
    let mut i = 0;
    while i + 64 <= n {
        for k in 0..4 {
            step(&mut acc, i + 16 * k, k);
        }
        i += 64;
    }
    if i + 32 <= n {
        step(&mut acc, i, 0);
        step(&mut acc, i + 16, 1);
        i += 32;
    }
    if i + 16 <= n {
        step(&mut acc, i, 0);
        i += 16;
    }
    if i < n {
        let k = first_lanes(n - i);
        let xv = _mm512_maskz_loadu_ps(k, xp.add(i));
        for (a, r) in acc.iter_mut().zip(rows) {
            a[0] = _mm512_mask3_fmadd_ps(_mm512_maskz_loadu_ps(k, r.add(i)), xv, a[0], k);
        }
    }
    acc.map(|a| reduce(a))
}
