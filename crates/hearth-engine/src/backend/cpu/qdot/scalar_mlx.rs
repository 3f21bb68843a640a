//! The scalar reference for MLX affine weights (`tensor::mlx_blocks`, any width 1-8 bits, groups of 32, 64 or
//! 128) against [`Q8Row`] activations.
//!
//! An MLX group of `g` weights spans `g / 32` activation blocks. Each 32-weight sub-block `b` is one term of
//! the parent module's contract with its group's scale and bias in the roles of Q4_1's `d` and `m`:
//! `t = (scale * dx) * isum + (bias * dx) * sums[b]` with `isum = sum_i code_i * qx_i` over the sub-block's
//! unsigned codes. So the MLX formats follow the same accumulation order, lanes and reduction, and every
//! SIMD level reproduces this function bit for bit.

use super::scalar_blocks32::{idot, reduce_lanes, term_min};
use super::{Q8Row, QK8};
use crate::tensor::mlx::MlxMode;
use crate::tensor::mlx_blocks::MlxBlocks;

/// Whether [`qdot_mlx`] runs weights of this MLX type (affine; the fp modes stay on the f32 path).
pub fn supports_mlx(m: MlxBlocks) -> bool {
    m.quant.mode() == MlxMode::Affine
}

/// One row of MLX affine blocks against `xq`; scalar reference.
pub fn qdot_mlx(m: MlxBlocks, row: &[u8], xq: &Q8Row) -> f32 {
    let per = m.block_elems() / QK8;
    let bb = m.block_bytes();
    let mut lanes = [0.0f32; 8];
    for b in 0..xq.blocks() {
        let blk = &row[(b / per) * bb..(b / per + 1) * bb];
        let (scale, bias) = m.scale_bias(blk);
        let first = (b % per) * QK8;
        let isum = idot(
            (first..first + QK8).map(|i| m.code(blk, i) as i32),
            &xq.qs[b * QK8..(b + 1) * QK8],
        );
        lanes[b % 8] += term_min(scale, bias, xq.d[b], isum, xq.sums[b]);
    }
    reduce_lanes(lanes)
}
