//! The softmax exponential of attention (`ops::exp_fast`, a polynomial that vectorizes) against
//! f64 `exp`, over every f32 in a dense sweep of its domain, and `exp_shifted`'s sum against an f64 sum.

use hearth_engine::backend::cpu::ops::{exp_fast, exp_shifted};

/// Distance in units in the last place between an f32 and the f64 value it approximates.
fn ulps(got: f32, want: f64) -> f64 {
    let w = want as f32;
    let ulp = (f32::from_bits(w.to_bits() + 1) - w) as f64;
    (got as f64 - want).abs() / ulp
}

#[test]
fn exp_is_within_four_ulp_over_its_domain() {
    let mut worst = (0.0f64, 0.0f32);
    // Every 97th f32 from -87.3 up to 0 (about 11 million values), plus the ends.
    let lo = (-87.3f32).to_bits();
    let mut bits = (-0.0f32).to_bits();
    let mut check = |x: f32| {
        let want = (x as f64).exp();
        if want < f32::MIN_POSITIVE as f64 {
            return; // subnormal results are flushed by design
        }
        let e = ulps(exp_fast(x), want);
        if e > worst.0 {
            worst = (e, x);
        }
    };
    while bits <= lo {
        check(f32::from_bits(bits));
        bits += 97;
    }
    for x in [0.0, -0.0, -1e-30, -0.5, -1.0, -87.0] {
        check(x);
    }
    eprintln!("worst: {:.3} ulp at {}", worst.0, worst.1);
    // Measured worst: 2.93 ulp (near x = -4.5).
    assert!(worst.0 <= 4.0, "{} ulp at x = {}", worst.0, worst.1);
}

#[test]
fn exp_fast_is_within_four_ulp_for_positive_arguments() {
    let mut worst = (0.0f64, 0.0f32);
    let hi = 88.72f32.to_bits();
    let mut bits = 0u32;
    while bits <= hi {
        let x = f32::from_bits(bits);
        let e = ulps(exp_fast(x), (x as f64).exp());
        if e > worst.0 {
            worst = (e, x);
        }
        bits += 97;
    }
    eprintln!("worst (x >= 0): {:.3} ulp at {}", worst.0, worst.1);
    assert!(worst.0 <= 4.0, "{} ulp at x = {}", worst.0, worst.1);
    assert_eq!(exp_fast(89.0), f32::INFINITY);
    assert!(exp_fast(88.72).is_finite());
}

#[test]
fn exp_edges() {
    assert_eq!(exp_fast(0.0), 1.0);
    assert_eq!(exp_fast(-100.0), 0.0);
    assert_eq!(exp_fast(f32::NEG_INFINITY), 0.0);
    assert!(exp_fast(f32::NAN).is_nan());
}

#[test]
fn exp_shifted_sums_like_f64() {
    // Deterministic pseudo-random scores, odd lengths (the lane tail), a shared maximum.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for n in [1usize, 7, 8, 9, 63, 1000] {
        let mut x: Vec<f32> = (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 40) as f32 / (1u64 << 24) as f32 * 20.0 - 10.0
            })
            .collect();
        let m = x.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let want: f64 = x.iter().map(|&v| ((v - m) as f64).exp()).sum();
        let orig = x.clone();
        let got = exp_shifted(&mut x, m);
        assert!(
            ((got as f64 - want) / want).abs() < 1e-6,
            "n = {n}: {got} vs {want}"
        );
        for (o, e) in orig.iter().zip(&x) {
            let u = ulps(*e, ((o - m) as f64).exp());
            assert!(u <= 4.0, "n = {n}: exp({}) = {e}, {u} ulp", o - m);
        }
    }
}
