//! CPU kernels. (Stub: scalar matmul through row dequantization.)

use crate::tensor::Tensor;

/// `out[t][r] = dot(w.row(r), x[t])` for `n_tokens` activation rows of `w.cols()` elements;
/// `out` holds `n_tokens * w.rows()` values.
pub fn matmul(w: &Tensor, x: &[f32], n_tokens: usize, out: &mut [f32]) {
    let (rows, cols) = (w.rows(), w.cols());
    let mut buf = vec![0f32; cols];
    for r in 0..rows {
        crate::tensor::quants::dequantize_row(w.dtype, w.row(r), &mut buf);
        for t in 0..n_tokens {
            let xt = &x[t * cols..(t + 1) * cols];
            out[t * rows + r] = buf.iter().zip(xt).map(|(a, b)| a * b).sum();
        }
    }
}
