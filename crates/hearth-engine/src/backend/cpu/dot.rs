//! Scalar reference kernels: what every SIMD kernel is tested against, and the path taken on CPUs without
//! one (or with `HEARTH_KERNELS=scalar`).

use crate::tensor::quants::dequantize_row;
use crate::tensor::DType;

/// Elements dequantized at a time: a multiple of every block size, small enough for the stack.
const CHUNK: usize = 256;

/// `sum(w[i] * x[i])` for one row of `dtype` weights (`x.len()` of them, whole blocks).
///
/// Dequantizes 256 weights at a time with the bit-exact reference, sums each chunk in f32 and the chunk
/// sums in f64, so the result is close to the exact dot product of the dequantized weights.
pub(super) fn dot(dtype: DType, row: &[u8], x: &[f32]) -> f32 {
    let mut buf = [0f32; CHUNK];
    let mut total = 0f64;
    let mut off = 0;
    for xc in x.chunks(CHUNK) {
        let nb = dtype.bytes_for(xc.len()).expect("row is whole blocks");
        let w = &mut buf[..xc.len()];
        dequantize_row(dtype, &row[off..off + nb], w);
        off += nb;
        total += w.iter().zip(xc).map(|(a, b)| a * b).sum::<f32>() as f64;
    }
    total as f32
}

/// `sum(a[i] * b[i])` with eight independent partial sums, which the compiler vectorizes.
pub(super) fn f32_dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f32; 8];
    let mut ac = a.chunks_exact(8);
    let mut bc = b.chunks_exact(8);
    for (x, y) in (&mut ac).zip(&mut bc) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    let tail: f32 = ac
        .remainder()
        .iter()
        .zip(bc.remainder())
        .map(|(x, y)| x * y)
        .sum();
    acc.iter().sum::<f32>() + tail
}

/// `y[i] += a * x[i]`.
pub(super) fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += a * xi;
    }
}
