//! What the aarch64 build adds to the kernel tests: the NEON kernels are the ones in use there (unless
//! `HEARTH_KERNELS` caps them), and the K-quant activation quantizer, which has a NEON version, matches its
//! scalar reference bit for bit (on every architecture: elsewhere both are the reference). The kernels'
//! numbers against the scalar references are checked by tests/kernels.rs and tests/qdot.rs, which run the
//! NEON kernels when built for aarch64 (scripts/test.sh's comments say how to run them under qemu).

use hearth_engine::backend::cpu::kernel_name;
use hearth_engine::backend::cpu::qdot::{quantize_q8k, quantize_q8k_scalar, Q8KRow};

#[test]
fn neon_kernels_are_in_use_on_aarch64() {
    eprintln!("kernels: {}", kernel_name());
    let cap = std::env::var("HEARTH_KERNELS").unwrap_or_default();
    if cfg!(target_arch = "aarch64") && matches!(cap.as_str(), "" | "auto" | "neon") {
        assert_eq!(kernel_name(), "neon");
    }
    if cap == "scalar" {
        assert_eq!(kernel_name(), "scalar");
    }
}

#[test]
fn quantize_q8k_matches_its_reference() {
    // splitmix64 over lengths of one to nine 256-blocks, magnitudes from 1e-3 to 1e3 per block, with an
    // all-zero block and exact ties (values k + 0.5 at scale 1) mixed in.
    let mut s = 7u64;
    let mut next = move || {
        s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let (mut fast, mut slow) = (Q8KRow::new(), Q8KRow::new());
    for blocks in [1, 2, 3, 9] {
        let mut x = Vec::with_capacity(256 * blocks);
        for b in 0..blocks {
            let scale = 10f32.powf((next() % 7) as f32 - 3.0);
            x.extend((0..256).map(|i| match b {
                1 => 0.0,
                2 if i == 0 => 127.0,
                2 => (i % 5) as f32 + 0.5,
                _ => scale * ((next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0),
            }));
        }
        quantize_q8k(&x, &mut fast);
        quantize_q8k_scalar(&x, &mut slow);
        assert_eq!(fast.qs, slow.qs, "{blocks} blocks: values");
        assert_eq!(fast.bsums, slow.bsums, "{blocks} blocks: sums");
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&fast.d), bits(&slow.d), "{blocks} blocks: scales");
        if blocks >= 3 {
            // Ties round to even: 0.5 -> 0, 1.5 -> 2, 2.5 -> 2, 3.5 -> 4.
            assert_eq!(&slow.qs[512 + 5..512 + 9], &[0, 2, 2, 4]);
        }
    }
}
