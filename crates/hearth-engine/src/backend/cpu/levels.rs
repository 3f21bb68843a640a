//! The CPU kernels of one chosen instruction-set level, side by side with the others in one process.
//!
//! `HEARTH_KERNELS` is read once, so a test process cannot switch levels through it; tests (every level
//! against the scalar reference, and each level's batch invariance) and benchmarks (levels compared on one
//! machine) take the levels from here instead. Not part of the engine's API.

use super::features::Level;
use super::{check_row, Simd};
use crate::tensor::DType;

/// The kernels of one level this CPU runs: the same operations as the `backend::cpu` functions, none of them
/// falling back to another level.
#[doc(hidden)]
#[derive(Clone, Copy)]
pub struct LevelKernels {
    simd: Simd,
}

impl LevelKernels {
    /// Every level present on this CPU and allowed by `HEARTH_KERNELS`, lowest (scalar) first.
    pub fn available() -> Vec<LevelKernels> {
        [Level::Scalar, Level::Avx2, Level::Avx512, Level::Neon]
            .into_iter()
            .filter_map(LevelKernels::at)
            .collect()
    }

    /// The kernels of `level`, if this CPU has it and `HEARTH_KERNELS` allows it.
    pub fn at(level: Level) -> Option<LevelKernels> {
        Simd::at(level).map(|simd| LevelKernels { simd })
    }

    pub fn level(self) -> Level {
        self.simd.level()
    }

    /// As `kernel_name()` reports this level.
    pub fn name(self) -> &'static str {
        self.simd.name()
    }

    /// `backend::cpu::dot` at this level.
    pub fn dot(self, dtype: DType, row: &[u8], x: &[f32]) -> f32 {
        check_row(dtype, row, x.len());
        self.simd.dot(dtype, row, x)
    }

    /// `backend::cpu::dequantize` at this level.
    pub fn dequantize(self, dtype: DType, row: &[u8], out: &mut [f32]) {
        check_row(dtype, row, out.len());
        self.simd.dequantize(dtype, row, out)
    }

    /// `backend::cpu::f32_dot` at this level.
    pub fn f32_dot(self, a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len(), "f32_dot of different lengths");
        self.simd.f32_dot(a, b)
    }

    /// `backend::cpu::axpy` at this level.
    pub fn axpy(self, a: f32, x: &[f32], y: &mut [f32]) {
        assert_eq!(x.len(), y.len(), "axpy of different lengths");
        self.simd.axpy(a, x, y)
    }

    /// The four dot products of rows `w[r * x.len() ..][..x.len()]` (r = 0..4) with `x` that the many-token
    /// matmul computes over dequantized rows.
    pub fn dot4(self, w: &[f32], x: &[f32]) -> [f32; 4] {
        assert!(w.len() >= 4 * x.len(), "dot4 needs four rows");
        self.simd.dot4(w, x)
    }
}
