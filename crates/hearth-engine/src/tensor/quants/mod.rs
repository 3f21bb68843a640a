//! Dequantization: the scalar reference for every weight type. (Being filled in: GGML block types.)

use super::DType;

/// Dequantizes one row (whole blocks) of `dtype` from `src` into `dst` (`dst.len()` elements).
pub fn dequantize_row(dtype: DType, src: &[u8], dst: &mut [f32]) {
    match dtype {
        DType::F32 => {
            for (d, s) in dst.iter_mut().zip(src.chunks_exact(4)) {
                *d = f32::from_le_bytes(s.try_into().unwrap());
            }
        }
        DType::F16 => {
            for (d, s) in dst.iter_mut().zip(src.chunks_exact(2)) {
                *d = half::f16::from_le_bytes(s.try_into().unwrap()).to_f32();
            }
        }
        DType::BF16 => {
            for (d, s) in dst.iter_mut().zip(src.chunks_exact(2)) {
                *d = half::bf16::from_le_bytes(s.try_into().unwrap()).to_f32();
            }
        }
        other => unimplemented!("dequantize {other}"),
    }
}
