//! Numeric building blocks of the sampler: a reproducible `exp`, order keys for candidates, lane-parallel sums
//! and weighted selection. Kept apart from the sampler's logic so that each piece can be reasoned about alone.
//!
//! Everything here uses only IEEE-754 basic operations (no libm, no fused multiply-add), so results are
//! bit-identical on every platform; that is what makes seeded sampling reproducible across machines.

/// `e^x` for `x <= 0`, with a relative error below 3e-7; 0 below about -87 and for -inf or NaN.
///
/// Cody-Waite range reduction `x = n ln2 + r` with `|r| <= ln2/2`, a degree-6 Taylor polynomial for `e^r`,
/// and the scale `2^n` built from exponent bits. Branch-free, so loops over it vectorise. Sampling weights
/// need nowhere near libm's precision, but they must be fast (one per vocabulary entry) and reproducible.
#[inline(always)]
pub(crate) fn exp_neg(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const MAGIC: f32 = 12_582_912.0; // 1.5 * 2^23: adding it rounds to an integer held in the low bits
    const LN2_HI: f32 = 0.693_359_4; // 355/512, so n * LN2_HI is exact
    const LN2_LO: f32 = -2.121_944_4e-4; // ln2 - LN2_HI
                                         // NaN fails the comparison and becomes -104, i.e. weight 0.
    let x = if x > -104.0 { x.min(0.0) } else { -104.0 };
    let v = x * LOG2E + MAGIC;
    let n = v - MAGIC;
    let ni = (v.to_bits() as i32).wrapping_sub(MAGIC.to_bits() as i32);
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    // n = -127 gives exponent bits 0, i.e. the scale 0.0: everything that far down weighs nothing.
    let scale = f32::from_bits(((ni.max(-127) + 127) as u32) << 23);
    p * scale
}

/// A candidate's position in the sampler's total order (higher logit first, then lower id) as one `u64`, so
/// that sorting and selecting compare plain integers. Keys are unique because ids are.
#[inline(always)]
pub(crate) fn key(logit: f32, id: u32) -> u64 {
    let b = (logit + 0.0).to_bits(); // + 0.0 turns -0.0 into +0.0 so equal logits tie
    let ascending = if b >> 31 == 1 { !b } else { b | 0x8000_0000 };
    ((!ascending as u64) << 32) | id as u64
}

/// The token id of a [`key`].
#[inline(always)]
pub(crate) fn key_id(key: u64) -> u32 {
    key as u32
}

/// The largest non-NaN value (`-inf` if none), with independent lanes so the loop vectorises.
pub(crate) fn max_finite(xs: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; 8];
    let chunks = xs.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for j in 0..8 {
            acc[j] = if c[j] > acc[j] { c[j] } else { acc[j] };
        }
    }
    let mut m = f32::NEG_INFINITY;
    for &x in acc.iter().chain(rest) {
        if x > m {
            m = x;
        }
    }
    m
}

/// Block size of the two-level sums: `f32` lanes inside a block (fast, and 64 terms lose almost nothing),
/// `f64` across blocks (so a 256k vocabulary loses nothing either).
pub(crate) const BLOCK: usize = 64;

/// The kept part of the candidates' total order: `(logit, id)` pairs up to and including this one.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Cut {
    pub logit: f32,
    pub id: u32,
}

impl Cut {
    /// Everything (weights of `-inf` logits are 0 anyway).
    pub const ALL: Cut = Cut {
        logit: f32::NEG_INFINITY,
        id: u32::MAX,
    };

    #[inline(always)]
    fn keeps(self, x: f32, i: usize) -> bool {
        x > self.logit || (x == self.logit && i as u32 <= self.id)
    }
}

/// Sum of one block in eight `f32` lanes, a fixed order.
#[inline(always)]
fn lanes_sum(ws: &[f32], keep: impl Fn(usize) -> bool) -> f32 {
    let mut acc = [0f32; 8];
    let chunks = ws.chunks_exact(8);
    let rest = chunks.remainder();
    for (c, w) in chunks.enumerate() {
        for j in 0..8 {
            acc[j] += if keep(c * 8 + j) { w[j] } else { 0.0 };
        }
    }
    let mut s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    let base = ws.len() - rest.len();
    for (j, &w) in rest.iter().enumerate() {
        if keep(base + j) {
            s += w;
        }
    }
    s
}

/// `sum(ws[i] for i where xs[i] >= thr)`, two-level (see [`BLOCK`]). `xs` and `ws` have the same length.
pub(crate) fn masked_sum(xs: &[f32], ws: &[f32], thr: f32) -> f64 {
    debug_assert_eq!(xs.len(), ws.len());
    xs.chunks(BLOCK)
        .zip(ws.chunks(BLOCK))
        .map(|(x, w)| lanes_sum(w, |j| x[j] >= thr) as f64)
        .sum()
}

/// Sets `w[i] = exp_neg(logits[i])` for the tokens `cut` keeps and 0 for the others, and `blocks` to the
/// sums of `w` per [`BLOCK`]; returns their total.
pub(crate) fn weights_and_blocks(
    logits: &[f32],
    cut: Cut,
    w: &mut [f32],
    blocks: &mut Vec<f64>,
) -> f64 {
    let w = &mut w[..logits.len()];
    blocks.clear();
    let mut total = 0.0f64;
    for (b, (xc, wc)) in logits.chunks(BLOCK).zip(w.chunks_mut(BLOCK)).enumerate() {
        let base = b * BLOCK;
        for (j, (wi, &x)) in wc.iter_mut().zip(xc).enumerate() {
            *wi = if cut.keeps(x, base + j) {
                exp_neg(x)
            } else {
                0.0
            };
        }
        let s = lanes_sum(wc, |_| true) as f64;
        blocks.push(s);
        total += s;
    }
    total
}

/// Moves the elements satisfying `keep` to the front (not stably); returns how many there are.
pub(crate) fn partition<T: Copy>(xs: &mut [T], keep: impl Fn(T) -> bool) -> usize {
    let mut k = 0;
    for j in 0..xs.len() {
        if keep(xs[j]) {
            xs.swap(k, j);
            k += 1;
        }
    }
    k
}

/// Rearranges `keys` so that `keys[..n]` is the smallest prefix of their sorted order whose weights sum to at
/// least `target`, and returns `n` (all of them if the total falls short). The prefix is not left sorted.
///
/// This is top-p without sorting the candidates: a quickselect on mass instead of on rank. Each round splits
/// the undecided range around a median-of-three pivot and keeps the side holding the crossing point, so the
/// expected cost is linear. Small ranges, or a range that resists splitting, are finished by sorting.
pub(crate) fn weighted_prefix(keys: &mut [u64], target: f64, weight: impl Fn(u64) -> f64) -> usize {
    let (mut lo, mut hi) = (0usize, keys.len());
    let mut acc = 0.0f64; // mass of keys[..lo], all of which precede keys[lo..hi]
    let mut rounds = 0;
    while hi - lo > 32 && rounds < 64 {
        rounds += 1;
        let (a, b, c) = (keys[lo], keys[lo + (hi - lo) / 2], keys[hi - 1]);
        // The median of three distinct keys leaves at least one key on each side of the split.
        let pivot = a.max(b).min(a.min(b).max(c));
        let split = lo + partition(&mut keys[lo..hi], |k| k <= pivot);
        let mass: f64 = keys[lo..split].iter().map(|&k| weight(k)).sum();
        if acc + mass >= target {
            hi = split;
        } else {
            acc += mass;
            lo = split;
        }
    }
    keys[lo..hi].sort_unstable();
    for (i, &k) in keys[lo..hi].iter().enumerate() {
        acc += weight(k);
        if acc >= target {
            return lo + i + 1;
        }
    }
    hi
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_neg_is_accurate_and_clamps() {
        let mut worst = 0.0f64;
        for i in 0..=870_000 {
            let x = -(i as f32) * 1e-4;
            let exact = (x as f64).exp();
            let got = exp_neg(x) as f64;
            if exact > 1e-37 {
                worst = worst.max((got - exact).abs() / exact);
            }
        }
        assert!(worst < 3e-7, "worst relative error {worst}");
        assert_eq!(exp_neg(0.0), 1.0);
        assert_eq!(exp_neg(-200.0), 0.0);
        assert_eq!(exp_neg(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_neg(f32::NAN), 0.0);
    }

    #[test]
    fn keys_follow_logit_then_id_order() {
        let xs = [0.0f32, -0.0, -1.0, -1.0, -1e-30, -3e38, 2.5];
        let mut keyed: Vec<(u64, f32, u32)> = xs
            .iter()
            .enumerate()
            .map(|(i, &x)| (key(x, i as u32), x, i as u32))
            .collect();
        keyed.sort_by_key(|k| k.0);
        let ids: Vec<u32> = keyed.iter().map(|k| key_id(k.0)).collect();
        assert_eq!(ids, [6, 0, 1, 4, 2, 3, 5]);
    }

    #[test]
    fn weighted_prefix_matches_sorting() {
        let mut state = 1u64;
        for round in 0..200 {
            let n = 1 + (round * 37) % 3000;
            let ws: Vec<f64> = (0..n)
                .map(|_| (crate::sample::rng::splitmix64(&mut state) >> 40) as f64)
                .collect();
            let mut keys: Vec<u64> = (0..n as u64)
                .map(|i| (crate::sample::rng::splitmix64(&mut state) << 32) | i)
                .collect();
            let total: f64 = ws.iter().sum();
            let target = total * (round as f64 / 200.0);
            let mut sorted = keys.clone();
            sorted.sort_unstable();
            let mut cum = 0.0;
            let expected = sorted
                .iter()
                .position(|&k| {
                    cum += ws[key_id(k) as usize];
                    cum >= target
                })
                .map_or(n, |i| i + 1);
            let got = weighted_prefix(&mut keys, target, |k| ws[key_id(k) as usize]);
            assert_eq!(got, expected, "round {round}");
            let mut prefix = keys[..got].to_vec();
            prefix.sort_unstable();
            assert_eq!(prefix, sorted[..got]);
        }
    }
}
