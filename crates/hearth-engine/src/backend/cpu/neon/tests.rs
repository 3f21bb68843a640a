//! The integer kernels on both of their paths (`sdot` where this CPU has `dotprod`, and the widening
//! multiplies, which every NEON CPU runs) against the scalar reference, bit for bit. The public entry points
//! take only the path this CPU prefers; tests/qdot.rs covers those with more inputs.

use super::Neon;
use crate::backend::cpu::qdot::{
    qdot_k_scalar, qdot_scalar, quantize_q8_scalar, quantize_q8k_scalar, Q8KRow, Q8Row,
};
use crate::tensor::DType;

/// xorshift64: a small seeded generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Uniform in [-1, 1).
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
    /// `n` activations, each 32-block with its own magnitude; one block in eight all zero.
    fn x(&mut self, n: usize) -> Vec<f32> {
        let mut x = Vec::with_capacity(n);
        for _ in 0..n / 32 {
            let s = if self.next().is_multiple_of(8) {
                0.0
            } else {
                10f32.powf(3.0 * self.unit())
            };
            x.extend((0..32).map(|_| s * self.unit()));
        }
        x
    }
    /// A row of `n` weights: random bytes with finite f16 scales at `scale_at` in each block.
    fn row(&mut self, dtype: DType, n: usize, scale_at: &[usize]) -> Vec<u8> {
        let bb = dtype.block_bytes();
        let mut row: Vec<u8> = (0..dtype.bytes_for(n).unwrap())
            .map(|_| self.next() as u8)
            .collect();
        for blk in row.chunks_exact_mut(bb) {
            for &o in scale_at {
                let v = half::f16::from_f32(0.01 * self.unit()).to_le_bytes();
                blk[o..o + 2].copy_from_slice(&v);
            }
        }
        row
    }
}

/// The token on every path this CPU can run, named for messages.
fn paths() -> Vec<(&'static str, Neon)> {
    let Some(n) = Neon::detect() else {
        eprintln!("NEON kernels capped off by HEARTH_KERNELS: nothing to test");
        return Vec::new();
    };
    let mut p = vec![("widening", n.without_dotprod())];
    if n.dotprod {
        p.push(("sdot", n));
    } else {
        eprintln!("this CPU has no dotprod: only the widening path is tested");
    }
    p
}

#[test]
fn qdot_is_bit_identical_on_every_path() {
    let types: [(DType, &[usize]); 5] = [
        (DType::Q8_0, &[0]),
        (DType::Q4_0, &[0]),
        (DType::Q4_1, &[0, 2]),
        (DType::Q5_0, &[0]),
        (DType::Q5_1, &[0, 2]),
    ];
    let mut rng = Rng(0x1234_5678_9abc_def1);
    for (name, neon) in paths() {
        for (dtype, scales) in types {
            // Block counts below, at and past groups of four and eight.
            for blocks in [1, 3, 4, 7, 8, 9, 16, 17, 31] {
                let n = 32 * blocks;
                let mut xq = Q8Row::new();
                quantize_q8_scalar(&rng.x(n), &mut xq);
                for r in 0..4 {
                    let row = rng.row(dtype, n, scales);
                    let (a, b) = (neon.qdot(dtype, &row, &xq), qdot_scalar(dtype, &row, &xq));
                    assert_eq!(
                        a.to_bits(),
                        b.to_bits(),
                        "{name} {dtype} {blocks} blocks, row {r}: {a} vs {b}"
                    );
                }
            }
        }
    }
}

#[test]
fn qdot_k_is_bit_identical_on_every_path() {
    let types: [(DType, &[usize]); 3] = [
        (DType::Q4_K, &[0, 2]),
        (DType::Q5_K, &[0, 2]),
        (DType::Q6_K, &[208]),
    ];
    let mut rng = Rng(0x0bad_cafe_f00d_0001);
    for (name, neon) in paths() {
        for (dtype, scales) in types {
            for blocks in [1, 2, 5, 9] {
                let n = 256 * blocks;
                let mut xq = Q8KRow::new();
                quantize_q8k_scalar(&rng.x(n), &mut xq);
                for r in 0..4 {
                    let mut row = rng.row(dtype, n, scales);
                    if r == 3 {
                        // Every code and scale at its largest: the integer sums' widest values.
                        row.iter_mut().for_each(|b| *b = 0xff);
                        for blk in row.chunks_exact_mut(dtype.block_bytes()) {
                            for &o in scales {
                                blk[o..o + 2].copy_from_slice(&half::f16::ONE.to_le_bytes());
                            }
                        }
                    }
                    let a = neon.qdot_k(dtype, &row, &xq);
                    let b = qdot_k_scalar(dtype, &row, &xq);
                    assert_eq!(
                        a.to_bits(),
                        b.to_bits(),
                        "{name} {dtype} {blocks} blocks, row {r}: {a} vs {b}"
                    );
                }
            }
        }
    }
}

#[test]
fn quantizers_are_bit_identical() {
    let mut rng = Rng(99);
    let Some(neon) = Neon::detect() else {
        return;
    };
    for n in [256, 512, 2304] {
        let mut x = rng.x(n);
        // A first block with scale exactly 1 and exact ties: 0.5 rounds to 0, 1.5 and 2.5 to 2.
        for (i, v) in x[..32].iter_mut().enumerate() {
            *v = i as f32 - 20.0;
        }
        x[..4].copy_from_slice(&[127.0, 0.5, 1.5, 2.5]);
        let (mut fast, mut slow) = (Q8Row::new(), Q8Row::new());
        fast.d.resize(n / 32, 0.0);
        fast.qs.resize(n, 0);
        fast.sums.resize(n / 32, 0);
        neon.quantize_q8(&x, &mut fast);
        quantize_q8_scalar(&x, &mut slow);
        assert_eq!(fast.qs, slow.qs, "q8 values, n={n}");
        assert_eq!(fast.sums, slow.sums, "q8 sums, n={n}");
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&fast.d), bits(&slow.d), "q8 scales, n={n}");
        assert_eq!(&slow.qs[..4], &[127, 0, 2, 2]);

        let (mut fast, mut slow) = (Q8KRow::new(), Q8KRow::new());
        quantize_q8k_scalar(&x, &mut slow);
        fast.d.resize(n / 256, 0.0);
        fast.qs.resize(n, 0);
        fast.bsums.resize(n / 16, 0);
        neon.quantize_q8k(&x, &mut fast);
        assert_eq!(fast.qs, slow.qs, "q8k values, n={n}");
        assert_eq!(fast.bsums, slow.bsums, "q8k sums, n={n}");
        assert_eq!(bits(&fast.d), bits(&slow.d), "q8k scales, n={n}");
    }
}
