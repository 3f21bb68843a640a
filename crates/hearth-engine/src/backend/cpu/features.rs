//! Which instruction-set level the CPU kernels may use.
//!
//! Each kernel family (`avx2/`, `avx512/`, `neon/`) asks [`allows`] before it hands out its token, so one
//! setting caps every family at once. `HEARTH_KERNELS` (read once, at the first kernel call) names the highest
//! level allowed: `scalar`, `avx2`, `avx512` or `neon`; unset or `auto` allows whatever the CPU has. Why:
//! benchmarks compare levels on one machine, and tests run the lower levels' kernels on a CPU that has higher
//! ones.

use std::sync::OnceLock;

/// Instruction-set levels, lowest first. On x86_64 the order is scalar < AVX2 < AVX-512; on aarch64 scalar <
/// NEON.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Scalar,
    Avx2,
    Avx512,
    Neon,
}

impl Level {
    fn parse(s: &str) -> Option<Option<Level>> {
        Some(match s.trim().to_ascii_lowercase().as_str() {
            "" | "auto" => None,
            "scalar" => Some(Level::Scalar),
            "avx2" => Some(Level::Avx2),
            "avx512" => Some(Level::Avx512),
            "neon" => Some(Level::Neon),
            _ => return None,
        })
    }
}

/// The cap from `HEARTH_KERNELS`; `None` when unset or `auto`. An unknown value is reported on stderr once
/// and ignored (a typo must not silently benchmark the wrong kernels, nor abort a server).
fn cap() -> Option<Level> {
    static CAP: OnceLock<Option<Level>> = OnceLock::new();
    *CAP.get_or_init(|| {
        let v = std::env::var("HEARTH_KERNELS").unwrap_or_default();
        Level::parse(&v).unwrap_or_else(|| {
            eprintln!(
                "hearth: ignoring HEARTH_KERNELS={v:?} (expected scalar, avx2, avx512, neon or auto)"
            );
            None
        })
    })
}

/// Whether kernels of `level` may run (the CPU's support is the caller's own check).
pub fn allows(level: Level) -> bool {
    match cap() {
        None => true,
        // The x86 levels are ordered among themselves; NEON is allowed only by `neon` or no cap.
        Some(Level::Neon) => matches!(level, Level::Scalar | Level::Neon),
        Some(c) => level != Level::Neon && level <= c,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_levels() {
        assert_eq!(Level::parse("AVX2"), Some(Some(Level::Avx2)));
        assert_eq!(Level::parse("auto"), Some(None));
        assert_eq!(Level::parse(""), Some(None));
        assert_eq!(Level::parse("sse"), None);
    }
}
