//! AVX-512 kernels for x86_64 (F, BW, VL, DQ; plus VNNI's `vpdpbusd` where present), chosen at run time over
//! the AVX2 ones.
//!
//! As in `avx2/`, every kernel is an `unsafe` `#[target_feature]` function reachable only through an
//! [`Avx512`] token, which exists once the CPU has been seen to support the features (and `HEARTH_KERNELS`
//! allows the level). `float` holds the f32-activation kernels, `qdot` the integer ones.

mod blocks;
mod float;
pub(super) mod qdot;

/// Proof that this CPU runs AVX-512 F/BW/VL/DQ with FMA and F16C; `vnni` says whether `vpdpbusd` exists.
#[derive(Clone, Copy, Debug)]
pub(super) struct Avx512 {
    pub(super) vnni: bool,
}

impl Avx512 {
    /// The token, if the CPU has the features and the level is allowed.
    pub(super) fn detect() -> Option<Avx512> {
        if !super::features::allows(super::features::Level::Avx512) {
            return None;
        }
        let ok = is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vl")
            && is_x86_feature_detected!("avx512dq")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c");
        ok.then(|| Avx512 {
            vnni: is_x86_feature_detected!("avx512vnni"),
        })
    }
}
