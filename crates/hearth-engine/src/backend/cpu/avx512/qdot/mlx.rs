//! AVX-512 kernels for 4- and 8-bit MLX affine weights against [`Q8Row`] tokens, bit-identical to
//! `qdot::qdot_mlx` (the scalar reference, whose terms are Q4_1's with a group's scale and bias per 32-weight
//! sub-block). `mlx_kernels!` is expanded inside `blocks32.rs`'s `vnni` and `bw` modules, next to the
//! reduction and byte-dot helpers it shares with the GGML block types.
//!
//! Sixteen sub-blocks at a time: codes decoded once into eight 64-byte vectors (sub-blocks `2j`, `2j + 1`
//! in vector `j`), the scales and biases of their groups fetched by one gather, then per token sixteen exact
//! i32 sums and the f32 terms lane-wise, added to the eight accumulator lanes in two steps as in
//! `blocks32.rs`.
//! - 4 bits: MLX puts code `2k` in the low nibble of byte `k`. Widening the bytes to 16-bit lanes and
//!   moving the high nibble to the upper byte puts the codes in order in three instructions.
//! - 8 bits: with VNNI `vpdpbusd` takes the unsigned codes as they are; without it, codes are shifted to
//!   `c - 128` for the sign trick and `128 * sums[b]` is added back to the exact sum.

macro_rules! mlx_kernels {
    ($feat:literal) => {
        use crate::backend::cpu::avx512::qdot::TOKEN_GROUP;
        use crate::backend::cpu::qdot::by_token_groups;
        use crate::tensor::mlx::MlxFloat;
        use crate::tensor::mlx_blocks::MlxBlocks;

        /// 64 sequential 4-bit codes (32 bytes at `p`) in order, as bytes.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn mlx_codes4_64(p: *const u8) -> __m512i {
            let v = _mm512_cvtepu8_epi16(_mm256_loadu_si256(p as *const __m256i));
            let m = _mm512_set1_epi16(0x0f);
            let lo = _mm512_and_si512(v, m);
            let hi = _mm512_and_si512(_mm512_srli_epi16::<4>(v), m);
            _mm512_or_si512(lo, _mm512_slli_epi16::<8>(hi))
        }

        /// 32 sequential 4-bit codes (16 bytes at `p`) in order, as bytes.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn mlx_codes4_32(p: *const u8) -> __m256i {
            let v = _mm256_cvtepu8_epi16(_mm_loadu_si128(p as *const __m128i));
            let m = _mm256_set1_epi16(0x0f);
            let lo = _mm256_and_si256(v, m);
            let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(v), m);
            _mm256_or_si256(lo, _mm256_slli_epi16::<8>(hi))
        }

        /// `out[t]` for `N` tokens; `BITS` is 4 or 8. The caller checked `row` and the tokens.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn qdot_mlx_n<const BITS: usize, const N: usize>(
            m: MlxBlocks,
            row: &[u8],
            xs: &[Q8Row],
            out: &mut [f32],
        ) {
            debug_assert!(xs.len() == N && out.len() == N);
            let nb = xs[0].d.len();
            let shift = (m.block_elems() / QK8).trailing_zeros();
            let low = (1usize << shift) - 1;
            let (hb, bb) = (m.header_bytes(), m.block_bytes());
            let sub = QK8 * BITS / 8;
            let rp = row.as_ptr();
            let at = |b: usize| rp.add((b >> shift) * bb + hb + (b & low) * sub);
            let xq: [*const i8; N] = std::array::from_fn(|t| xs[t].qs.as_ptr());
            let dxp: [*const f32; N] = std::array::from_fn(|t| xs[t].d.as_ptr());
            let sxp: [*const i32; N] = std::array::from_fn(|t| xs[t].sums.as_ptr());
            let flip = _mm512_set1_epi8(-128);
            let mut acc = [_mm256_setzero_ps(); N];
            macro_rules! group {
                ($b0:expr, $n:expr) => {{
                    let (b0, n): (usize, usize) = ($b0, $n);
                    let mut codes = [_mm512_setzero_si512(); 8];
                    for (j, c) in codes.iter_mut().enumerate().take(n.div_ceil(2)) {
                        let (b, pair) = (b0 + 2 * j, 2 * j + 1 < n);
                        *c = if BITS == 4 {
                            if pair && shift >= 1 {
                                mlx_codes4_64(at(b))
                            } else {
                                let lo = _mm512_zextsi256_si512(mlx_codes4_32(at(b)));
                                if pair {
                                    _mm512_inserti64x4::<1>(lo, mlx_codes4_32(at(b + 1)))
                                } else {
                                    lo
                                }
                            }
                        } else {
                            let lo = _mm512_zextsi256_si512(_mm256_loadu_si256(at(b) as *const __m256i));
                            let both = if pair && shift >= 1 {
                                // Two sub-blocks of one group: 64 contiguous bytes.
                                _mm512_loadu_si512(at(b) as *const _)
                            } else if pair {
                                _mm512_inserti64x4::<1>(
                                    lo,
                                    _mm256_loadu_si256(at(b + 1) as *const __m256i),
                                )
                            } else {
                                lo
                            };
                            if VNNI {
                                both
                            } else {
                                _mm512_xor_si512(both, flip)
                            }
                        };
                    }
                    // Each sub-block's group header by one gather: (scale, bias) as a bf16/f16 pair in
                    // one u32, or two f32 gathers.
                    let mask = ((1u32 << n) - 1) as __mmask16;
                    let idx = _mm512_mullo_epi32(
                        _mm512_srlv_epi32(
                            _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                            _mm512_set1_epi32(shift as i32),
                        ),
                        _mm512_set1_epi32(bb as i32),
                    );
                    // b0 is a multiple of 16, so of the group size in sub-blocks: group b0 >> shift starts it.
                    let base = rp.add((b0 >> shift) * bb);
                    // A macro, not a closure: a closure would not inherit the target features, and the
                    // gather would become a call.
                    macro_rules! gather {
                        ($off:expr) => {
                            _mm512_mask_i32gather_epi32::<1>(
                                _mm512_setzero_si512(),
                                mask,
                                idx,
                                base.add($off) as *const _,
                            )
                        };
                    }
                    let (dw, mw) = match m.float {
                        MlxFloat::BF16 => {
                            let g = gather!(0);
                            (
                                _mm512_castsi512_ps(_mm512_slli_epi32::<16>(g)),
                                _mm512_castsi512_ps(_mm512_and_si512(g, _mm512_set1_epi32(-65536))),
                            )
                        }
                        MlxFloat::F16 => {
                            let g = gather!(0);
                            (
                                _mm512_cvtph_ps(_mm512_cvtepi32_epi16(g)),
                                _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32::<16>(g))),
                            )
                        }
                        MlxFloat::F32 => (
                            _mm512_castsi512_ps(gather!(0)),
                            _mm512_castsi512_ps(gather!(4)),
                        ),
                    };
                    for t in 0..N {
                        let xp = xq[t].add(b0 * QK8);
                        let mut v = [_mm512_setzero_si512(); 8];
                        for j in 0..n.div_ceil(2) {
                            let x = if 2 * j + 1 < n {
                                _mm512_loadu_si512(xp.add(2 * j * QK8) as *const _)
                            } else {
                                _mm512_zextsi256_si512(_mm256_loadu_si256(
                                    xp.add(2 * j * QK8) as *const __m256i,
                                ))
                            };
                            let c = codes[j];
                            v[j] = if BITS == 8 && !VNNI {
                                let neg = _mm512_movepi8_mask(c);
                                udot64(_mm512_abs_epi8(c), _mm512_mask_sub_epi8(x, neg, _mm512_setzero_si512(), x))
                            } else {
                                udot64(c, x)
                            };
                        }
                        let dx = _mm512_maskz_loadu_ps(mask, dxp[t].add(b0));
                        let sx = _mm512_maskz_loadu_epi32(mask, sxp[t].add(b0));
                        let mut isum = reduce16(&v);
                        if BITS == 8 && !VNNI {
                            isum = _mm512_add_epi32(isum, _mm512_slli_epi32::<7>(sx));
                        }
                        let term = _mm512_add_ps(
                            _mm512_mul_ps(_mm512_mul_ps(dw, dx), _mm512_cvtepi32_ps(isum)),
                            _mm512_mul_ps(_mm512_mul_ps(mw, dx), _mm512_cvtepi32_ps(sx)),
                        );
                        let lo = _mm512_castps512_ps256(term);
                        let hi = _mm512_extractf32x8_ps::<1>(term);
                        acc[t] = _mm256_add_ps(_mm256_add_ps(acc[t], lo), hi);
                    }
                }};
            }
            let full = nb / 16 * 16;
            for b0 in (0..full).step_by(16) {
                group!(b0, 16);
            }
            if full < nb {
                group!(full, nb - full);
            }
            for (o, a) in out.iter_mut().zip(acc) {
                *o = super::super::hsum8(a);
            }
        }

        /// `out[r * xq.len() + t] = qdot_mlx(m, row r, &xq[t])` for the `out.len() / xq.len()` rows of
        /// `row_bytes` bytes at the start of `bytes`, tokens `TOKEN_GROUP` at a time (then 4, 2, 1). One call per run
        /// of rows, so the per-call setup is paid once per run, not per row (it was a third of a short row's
        /// time).
        ///
        /// # Safety
        /// The CPU has this module's features; `m` is affine with 4 or 8 bits; `bytes` holds the rows and
        /// each row the blocks of every token (checked by the caller).
        #[target_feature(enable = $feat)]
        pub(in crate::backend::cpu::avx512) unsafe fn qdot_mlx_rows(
            m: MlxBlocks,
            bytes: &[u8],
            row_bytes: usize,
            xq: &[Q8Row],
            out: &mut [f32],
        ) {
            let nt = xq.len();
            for (row, out) in bytes.chunks_exact(row_bytes).zip(out.chunks_exact_mut(nt)) {
                if m.quant.bits() == 8 {
                    by_token_groups!(TOKEN_GROUP, qdot_mlx_n::<8>(m, row), xq, out)
                } else {
                    by_token_groups!(TOKEN_GROUP, qdot_mlx_n::<4>(m, row), xq, out)
                }
            }
        }
    };
}
