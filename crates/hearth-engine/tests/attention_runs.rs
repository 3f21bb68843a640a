//! Attention's run kernels (`dots_strided`, `axpys_strided`: one call per block of consecutive KV slots)
//! give exactly what one `f32_dot` / `axpy` per position gives, for head sizes with and without a vector
//! tail, strides wider than the head (grouped KV heads side by side), and runs of 1 to 37 positions.

use hearth_engine::backend::cpu::{axpy, axpys_strided, dots_strided, f32_dot};

fn values(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        })
        .collect()
}

#[test]
fn runs_equal_one_call_per_position() {
    for hd in [1usize, 8, 17, 64, 80, 128, 256] {
        for stride_heads in [1usize, 3] {
            let stride = hd * stride_heads;
            for n in [1usize, 2, 16, 37] {
                let q = values(hd as u64, hd);
                let k = values(7 * n as u64 + hd as u64, (n - 1) * stride + hd);
                let mut got = vec![f32::NAN; n];
                dots_strided(&q, &k, stride, &mut got);
                let want: Vec<f32> = (0..n)
                    .map(|j| f32_dot(&q, &k[j * stride..][..hd]))
                    .collect();
                assert_eq!(
                    got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    want.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    "dots hd={hd} stride={stride} n={n}"
                );

                let w = values(3 + n as u64, n);
                let mut y_run = values(11, hd);
                let mut y_one = y_run.clone();
                axpys_strided(&w, &k, stride, &mut y_run);
                for (j, &wj) in w.iter().enumerate() {
                    axpy(wj, &k[j * stride..][..hd], &mut y_one);
                }
                assert_eq!(
                    y_run.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    y_one.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    "axpys hd={hd} stride={stride} n={n}"
                );
            }
        }
    }
}

#[test]
#[should_panic(expected = "dots_strided")]
fn a_run_past_the_storage_is_refused() {
    let q = [1.0f32; 4];
    let k = [1.0f32; 10];
    let mut out = [0.0f32; 3];
    dots_strided(&q, &k, 4, &mut out); // needs 2 * 4 + 4 = 12 floats
}
