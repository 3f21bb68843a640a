//! A small, self-contained pseudo-random number generator for sampling.
//!
//! Sampling must be reproducible: the same seed has to give the same tokens on every platform, compiler
//! version and dependency update. A hand-written generator with a fixed algorithm guarantees the random stream
//! itself never changes, which an external crate's "default" generator does not promise. The algorithm is
//! xoshiro256** (Blackman & Vigna), seeded by expanding a 64-bit seed with splitmix64 as its authors recommend.
//! It is fast, has a 2^256 - 1 period and passes BigCrush; it is not cryptographic, which sampling doesn't need.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// One step of splitmix64: advances `state` and returns a well-mixed 64-bit value.
///
/// Used to expand a single `u64` seed into xoshiro's 256-bit state (all-zero state would be a fixed point).
pub fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// xoshiro256** generator. Deterministic for a given seed on every platform.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    /// A generator whose whole output stream is determined by `seed`.
    pub fn seed_from_u64(seed: u64) -> Self {
        let mut sm = seed;
        let s = [
            splitmix64(&mut sm),
            splitmix64(&mut sm),
            splitmix64(&mut sm),
            splitmix64(&mut sm),
        ];
        Rng { s }
    }

    /// A generator from raw xoshiro256** state (for checking against the reference implementation).
    ///
    /// An all-zero state would only ever produce zeros, so it is replaced by the state of seed 0.
    pub fn from_state(s: [u64; 4]) -> Self {
        if s == [0; 4] {
            return Self::seed_from_u64(0);
        }
        Rng { s }
    }

    /// A generator seeded from the OS (via std's randomly keyed hasher), the clock and a process counter, for
    /// requests that give no seed. Two generators made in the same instant still differ.
    pub fn from_entropy() -> Self {
        Self::seed_from_u64(entropy_seed())
    }

    /// The next 64 random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// A uniform `f64` in `[0, 1)` with 53 random bits (never 1.0).
    #[inline]
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// A 64-bit seed that differs between calls, processes and runs.
///
/// `RandomState` is keyed from OS randomness once per thread (and incremented per instance), so hashing the
/// time and a global counter with it gives an unpredictable value without any extra dependency.
pub fn entropy_seed() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    h.write_u128(nanos);
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u32(std::process::id());
    h.finish()
}
