//! Sampling, logprobs and stop strings: processor semantics, exact penalty arithmetic, seeded determinism,
//! the empirical distribution of draws, and stop matching under arbitrary splits of the text.

use hearth_engine::sample::logprobs::logprobs;
use hearth_engine::sample::rng::splitmix64;
use hearth_engine::sample::{
    argmax, log_softmax, log_sum_exp, logprob_of, top_logprobs, Rng, Sampler, SamplingParams,
    StopMatcher, StopOutput,
};

/// Logits whose softmax is exactly `probs` (up to f32 rounding).
fn logits_of(probs: &[f64]) -> Vec<f32> {
    probs.iter().map(|p| p.ln() as f32).collect()
}

fn random_logits(rng: &mut Rng, n: usize, scale: f64) -> Vec<f32> {
    (0..n)
        .map(|_| ((rng.next_f64() * 2.0 - 1.0) * scale) as f32)
        .collect()
}

/// Draws `n` tokens from fresh copies of `logits` and returns how often each id came up.
fn histogram(sampler: &mut Sampler, logits: &[f32], n: usize) -> Vec<usize> {
    let mut counts = vec![0usize; logits.len()];
    let mut buf = logits.to_vec();
    for _ in 0..n {
        buf.copy_from_slice(logits);
        counts[sampler.sample(&mut buf, &[]) as usize] += 1;
    }
    counts
}

fn params(f: impl FnOnce(&mut SamplingParams)) -> SamplingParams {
    let mut p = SamplingParams::pure(1.0);
    p.seed = Some(42);
    f(&mut p);
    p
}

#[test]
fn greedy_is_argmax_with_lowest_id_on_ties() {
    let mut rng = Rng::seed_from_u64(1);
    let mut s = Sampler::new(SamplingParams::greedy(), 1000);
    for _ in 0..50 {
        let logits = random_logits(&mut rng, 1000, 10.0);
        let expected = (0..logits.len())
            .max_by(|&a, &b| logits[a].total_cmp(&logits[b]).then(b.cmp(&a)))
            .unwrap() as u32;
        assert_eq!(s.sample(&mut logits.clone(), &[]), expected);
        assert_eq!(argmax(&logits), expected);
    }
    let mut tied = vec![0.0, 3.0, 1.0, 3.0, 3.0];
    assert_eq!(s.sample(&mut tied, &[]), 1);
    assert_eq!(argmax(&[f32::NAN, -1.0, f32::NAN, 2.0]), 3);
    assert_eq!(argmax(&[f32::NEG_INFINITY; 3]), 0);
}

#[test]
fn tiny_temperature_approaches_greedy() {
    let mut rng = Rng::seed_from_u64(2);
    let logits = random_logits(&mut rng, 500, 5.0);
    let best = argmax(&logits);
    for t in [1e-3f32, 1e-8, 1e-30] {
        let mut s = Sampler::new(params(|p| p.temperature = t), logits.len());
        let h = histogram(&mut s, &logits, 1000);
        assert_eq!(h[best as usize], 1000, "temperature {t}");
    }
    // Two tied top tokens stay a fair coin however low the temperature: nothing overflows to NaN.
    let tied = [1.0, 5.0, 5.0, 0.0];
    let mut s = Sampler::new(params(|p| p.temperature = 1e-30), 4);
    let h = histogram(&mut s, &tied, 10_000);
    assert_eq!(h[0] + h[3], 0);
    assert!((h[1] as f64 / 10_000.0 - 0.5).abs() < 0.03, "{h:?}");
}

#[test]
fn top_k_one_equals_greedy() {
    let mut rng = Rng::seed_from_u64(3);
    let mut s = Sampler::new(params(|p| p.top_k = 1), 300);
    for _ in 0..100 {
        let mut logits = random_logits(&mut rng, 300, 3.0);
        logits[17] = 100.0;
        logits[5] = 100.0; // tie: the lower id wins, as in greedy
        assert_eq!(s.sample(&mut logits, &[]), 5);
    }
}

#[test]
fn top_k_keeps_exactly_k() {
    let probs = [0.05, 0.3, 0.1, 0.25, 0.2, 0.1];
    let logits = logits_of(&probs);
    let mut s = Sampler::new(params(|p| p.top_k = 3), probs.len());
    let h = histogram(&mut s, &logits, 60_000);
    let total = 0.3 + 0.25 + 0.2;
    for (id, p) in [(1, 0.3), (3, 0.25), (4, 0.2)] {
        assert!((h[id] as f64 / 60_000.0 - p / total).abs() < 0.01, "{h:?}");
    }
    assert_eq!(h[0] + h[2] + h[5], 0, "{h:?}");
}

#[test]
fn top_p_tiny_keeps_only_the_top_token() {
    let mut rng = Rng::seed_from_u64(4);
    let logits = random_logits(&mut rng, 2000, 2.0);
    let best = argmax(&logits) as usize;
    for top_k in [0, 50] {
        let mut s = Sampler::new(
            params(|p| {
                p.top_p = 1e-6;
                p.top_k = top_k;
            }),
            logits.len(),
        );
        assert_eq!(histogram(&mut s, &logits, 2000)[best], 2000);
    }
}

#[test]
fn top_p_keeps_the_smallest_prefix_reaching_p() {
    // Sorted: 0.4 (id 3), 0.3 (id 0), 0.2 (id 2), 0.1 (id 1). top_p 0.65 needs 0.4 + 0.3.
    let logits = logits_of(&[0.3, 0.1, 0.2, 0.4]);
    for top_k in [0, 4, 10] {
        let mut s = Sampler::new(
            params(|p| {
                p.top_p = 0.65;
                p.top_k = top_k;
            }),
            4,
        );
        let h = histogram(&mut s, &logits, 70_000);
        assert_eq!(h[1] + h[2], 0, "top_k {top_k}: {h:?}");
        assert!((h[3] as f64 / 70_000.0 - 4.0 / 7.0).abs() < 0.01, "{h:?}");
    }
}

#[test]
fn top_p_without_top_k_matches_brute_force_on_a_large_vocabulary() {
    let mut rng = Rng::seed_from_u64(5);
    for (scale, top_p) in [(3.0, 0.5), (12.0, 0.9), (0.5, 0.3), (40.0, 0.99)] {
        let logits = random_logits(&mut rng, 20_000, scale);
        let mut order: Vec<usize> = (0..logits.len()).collect();
        order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
        let z: f64 = logits.iter().map(|&x| (x as f64).exp()).sum();
        let mut cum = 0.0;
        let mut allowed = vec![false; logits.len()];
        for &i in &order {
            allowed[i] = true;
            cum += (logits[i] as f64).exp() / z;
            if cum >= top_p as f32 as f64 {
                break;
            }
        }
        let n_allowed = allowed.iter().filter(|&&a| a).count();
        let mut s = Sampler::new(params(|p| p.top_p = top_p as f32), logits.len());
        let h = histogram(&mut s, &logits, 3000);
        for (i, &c) in h.iter().enumerate() {
            assert!(
                c == 0 || allowed[i],
                "scale {scale}: token {i} outside the top-p set"
            );
        }
        // The draws reach far into the kept set.
        let seen = h.iter().filter(|&&c| c > 0).count();
        assert!(seen * 8 >= n_allowed.min(3000), "{seen} of {n_allowed}");

        // The threshold + quickselect path agrees draw for draw with the sorted path that top-k takes
        // (a top-k that drops only the least likely token, which top-p drops anyway).
        let mut a = Sampler::new(params(|p| p.top_p = top_p as f32), logits.len());
        let mut b = Sampler::new(
            params(|p| {
                p.top_p = top_p as f32;
                p.top_k = logits.len() - 1;
            }),
            logits.len(),
        );
        let (mut la, mut lb) = (logits.clone(), logits.clone());
        for _ in 0..300 {
            la.copy_from_slice(&logits);
            lb.copy_from_slice(&logits);
            assert_eq!(
                a.sample(&mut la, &[]),
                b.sample(&mut lb, &[]),
                "scale {scale}"
            );
        }
    }
}

#[test]
fn min_p_drops_tokens_below_a_fraction_of_the_top() {
    let logits = logits_of(&[0.5, 0.3, 0.15, 0.05]);
    let mut s = Sampler::new(params(|p| p.min_p = 0.2), 4); // threshold 0.1
    let h = histogram(&mut s, &logits, 50_000);
    assert_eq!(h[3], 0);
    assert!((h[2] as f64 / 50_000.0 - 0.15 / 0.95).abs() < 0.01, "{h:?}");
    let mut s = Sampler::new(params(|p| p.min_p = 0.7), 4);
    assert_eq!(histogram(&mut s, &logits, 1000)[0], 1000);
    // With top-k sorting first, the same set is kept.
    let mut s = Sampler::new(
        params(|p| {
            p.min_p = 0.2;
            p.top_k = 4;
            p.top_p = 0.999;
        }),
        4,
    );
    let h = histogram(&mut s, &logits, 10_000);
    assert_eq!(h[3], 0);
    assert!(h[2] > 0);
}

#[test]
fn logit_bias_bans_and_forces() {
    let logits = vec![5.0, 4.0, 3.0, 0.0];
    let mut p = SamplingParams::greedy();
    p.logit_bias = vec![(0, f32::NEG_INFINITY), (99, 1.0)];
    let mut s = Sampler::new(p, 4);
    assert_eq!(s.sample(&mut logits.clone(), &[]), 1);

    let mut s = Sampler::new(params(|p| p.logit_bias = vec![(3, 100.0)]), 4);
    assert_eq!(histogram(&mut s, &logits, 1000)[3], 1000);

    let mut s = Sampler::new(
        params(|p| p.logit_bias = vec![(0, -100.0), (1, f32::NEG_INFINITY)]),
        4,
    );
    let h = histogram(&mut s, &logits, 10_000);
    assert_eq!(h[0] + h[1], 0, "{h:?}");

    // Everything banned: nothing to draw, fall back to the lowest id rather than panic.
    let all = (0..4).map(|i| (i, f32::NEG_INFINITY)).collect();
    let mut s = Sampler::new(params(|p| p.logit_bias = all), 4);
    assert_eq!(s.sample(&mut logits.clone(), &[]), 0);
}

#[test]
fn repetition_penalty_divides_positive_and_multiplies_negative_logits() {
    let mut p = SamplingParams::greedy();
    p.repetition_penalty = 2.0;
    p.penalty_last_n = 0;
    let mut s = Sampler::new(p.clone(), 5);
    // Greedy returns right after the penalties, so the processed logits can be inspected.
    let mut logits = vec![3.0, -1.5, 0.0, 2.5, 1.0];
    // Token 0 appears twice but is penalised once; tokens in the prompt count too.
    let tok = s.sample(&mut logits, &[0, 1, 0, 2]);
    assert_eq!(logits, vec![1.5, -3.0, 0.0, 2.5, 1.0]);
    assert_eq!(tok, 3);

    // The window: only the last two history tokens are penalised.
    p.penalty_last_n = 2;
    let mut s = Sampler::new(p.clone(), 5);
    let mut logits = vec![3.0, -1.5, 0.0, 2.5, 1.0];
    s.sample(&mut logits, &[0, 1, 3, 4]);
    assert_eq!(logits, vec![3.0, -1.5, 0.0, 1.25, 0.5]);

    // A penalty below 1 encourages repeats.
    p.repetition_penalty = 0.5;
    let mut s = Sampler::new(p, 5);
    let mut logits = vec![3.0, -1.5, 0.0, 2.5, 1.0];
    s.sample(&mut logits, &[1, 4]);
    assert_eq!(logits, vec![3.0, -0.75, 0.0, 2.5, 2.0]);
}

#[test]
fn presence_and_frequency_penalties_count_generated_tokens_only() {
    let mut p = SamplingParams::greedy();
    p.presence_penalty = 0.5;
    p.frequency_penalty = 0.25;
    p.penalty_last_n = 0;
    let mut s = Sampler::new(p.clone(), 6);
    s.set_prompt_len(2);
    let mut logits = vec![1.0; 6];
    s.sample(&mut logits, &[5, 5, 1, 1, 1, 2, 5]);
    // token 1: 1 - 0.5 - 3 * 0.25; token 2: 1 - 0.5 - 0.25; token 5: generated once (the prompt's don't count).
    assert_eq!(logits, vec![1.0, -0.25, 0.25, 1.0, 1.0, 0.25]);

    // Without set_prompt_len, the first call's history is the prompt.
    let mut s = Sampler::new(p.clone(), 6);
    let mut logits = vec![1.0; 6];
    s.sample(&mut logits, &[3, 3, 3]);
    assert_eq!(logits, vec![1.0; 6]);
    let mut logits = vec![1.0; 6];
    s.sample(&mut logits, &[3, 3, 3, 4, 3]);
    assert_eq!(logits, vec![1.0, 1.0, 1.0, 0.25, 0.25, 1.0]);
    assert_eq!(s.prompt_len(), Some(3));
    s.reset();
    let mut logits = vec![1.0; 6];
    s.sample(&mut logits, &[3, 3, 3, 4, 3]);
    assert_eq!(logits, vec![1.0; 6]);

    // The window also bounds which generated tokens count; combined with a repetition penalty.
    p.penalty_last_n = 3;
    p.repetition_penalty = 2.0;
    let mut s = Sampler::new(p, 6);
    s.set_prompt_len(1);
    let mut logits = vec![2.0; 6];
    s.sample(&mut logits, &[0, 1, 1, 1, 2, 0]);
    // window [1, 2, 0]: 0 is generated here (position 5), so all three get both penalties.
    assert_eq!(logits, vec![0.25, 0.25, 0.25, 2.0, 2.0, 2.0]);
}

#[test]
fn same_seed_same_stream_different_seed_different_stream() {
    let mut rng = Rng::seed_from_u64(6);
    let logits = random_logits(&mut rng, 1000, 2.0);
    let run = |seed: u64| {
        let p = SamplingParams {
            seed: Some(seed),
            ..SamplingParams::default()
        };
        let mut s = Sampler::new(p, logits.len());
        let mut buf = logits.clone();
        (0..1000)
            .map(|_| {
                buf.copy_from_slice(&logits);
                s.sample(&mut buf, &[])
            })
            .collect::<Vec<u32>>()
    };
    let a = run(1234);
    assert_eq!(a, run(1234));
    assert_ne!(a, run(1235));
    assert!(
        a.iter().any(|&t| t != a[0]),
        "default params should not be greedy"
    );

    // Without a seed, two samplers disagree (almost surely).
    let unseeded = || {
        let mut s = Sampler::new(SamplingParams::pure(1.0), 1000);
        (0..100)
            .map(|_| s.sample(&mut logits.clone(), &[]))
            .collect::<Vec<u32>>()
    };
    assert_ne!(unseeded(), unseeded());
}

#[test]
fn rng_matches_the_reference_algorithms() {
    let mut state = 0u64;
    assert_eq!(splitmix64(&mut state), 0xE220_A839_7B1D_CDAF);
    assert_eq!(splitmix64(&mut state), 0x6E78_9E6A_A1B9_65F4);
    let mut r = Rng::from_state([1, 2, 3, 4]);
    assert_eq!(r.next_u64(), 11520);
    assert_eq!(r.next_u64(), 0);
    assert_eq!(r.next_u64(), 1_509_978_240);
    assert_eq!(r.next_u64(), 1_215_971_899_390_074_240);
    let mut r = Rng::seed_from_u64(7);
    for _ in 0..10_000 {
        let x = r.next_f64();
        assert!((0.0..1.0).contains(&x));
    }
}

#[test]
fn draws_follow_the_softmax() {
    let probs = [0.05, 0.1, 0.15, 0.2, 0.5];
    let logits = logits_of(&probs);
    let n = 200_000;
    let mut s = Sampler::new(params(|_| {}), probs.len());
    let h = histogram(&mut s, &logits, n);
    for (i, &p) in probs.iter().enumerate() {
        let f = h[i] as f64 / n as f64;
        assert!((f - p).abs() < 0.01, "token {i}: {f} vs {p}");
    }
    // Temperature 2 flattens: p_i ∝ sqrt(probs_i).
    let mut s = Sampler::new(params(|p| p.temperature = 2.0), probs.len());
    let h = histogram(&mut s, &logits, n);
    let z: f64 = probs.iter().map(|p| p.sqrt()).sum();
    for (i, &p) in probs.iter().enumerate() {
        let f = h[i] as f64 / n as f64;
        assert!(
            (f - p.sqrt() / z).abs() < 0.01,
            "token {i}: {f} vs {}",
            p.sqrt() / z
        );
    }
}

#[test]
fn logprobs_are_a_normalised_log_softmax() {
    let mut rng = Rng::seed_from_u64(8);
    for scale in [1.0, 30.0, 1000.0] {
        let mut logits = random_logits(&mut rng, 32_000, scale);
        logits[7] = f32::NEG_INFINITY;
        let lp = log_softmax(&logits);
        let total: f64 = lp.iter().map(|&x| (x as f64).exp()).sum();
        assert!((total - 1.0).abs() < 1e-6, "scale {scale}: {total}");
        assert_eq!(lp[7], f32::NEG_INFINITY);
        assert!((lp[3] - logprob_of(&logits, 3)).abs() < 1e-6);

        let top = top_logprobs(&logits, 5);
        let mut order: Vec<usize> = (0..logits.len()).collect();
        order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
        let expected: Vec<(u32, f32)> = order[..5].iter().map(|&i| (i as u32, lp[i])).collect();
        assert_eq!(top, expected);
    }
    // Huge logits don't overflow.
    let lse = log_sum_exp(&[1e30, 1e30]);
    assert!((lse - (1e30f32 as f64 + 2f64.ln())).abs() < 1e16);
    assert_eq!(
        top_logprobs(&[1.0, 2.0, 2.0, 0.5], 3)
            .iter()
            .map(|e| e.0)
            .collect::<Vec<_>>(),
        [1, 2, 0]
    );
    assert_eq!(top_logprobs(&[1.0], 4).len(), 1);

    let one = logprobs(&[0.0, 0.0], 1, 1);
    assert!((one.logprob - 0.5f32.ln()).abs() < 1e-7);
    assert_eq!(one.top[0].0, 0);
}

#[test]
fn sample_with_logprobs_reports_the_raw_distribution() {
    let raw = logits_of(&[0.1, 0.2, 0.7]);
    let mut p = SamplingParams::greedy();
    p.logit_bias = vec![(0, 50.0)];
    let mut s = Sampler::new(p, 3);
    let (tok, lp) = s.sample_with_logprobs(&mut raw.clone(), &[], 2);
    assert_eq!(tok, 0);
    assert_eq!(lp.token, 0);
    assert!((lp.logprob as f64 - 0.1f64.ln()).abs() < 1e-6);
    assert_eq!(lp.top.iter().map(|e| e.0).collect::<Vec<_>>(), [2, 1]);
    assert!((lp.top[0].1 as f64 - 0.7f64.ln()).abs() < 1e-6);
}

#[test]
fn default_params_are_sane_and_validate() {
    let d = SamplingParams::default();
    assert_eq!(
        (d.temperature, d.top_k, d.top_p, d.min_p),
        (0.8, 40, 0.95, 0.05)
    );
    assert!(d.validate().is_ok() && !d.is_greedy());
    assert!(SamplingParams::greedy().is_greedy());
    assert!(params(|p| p.top_p = 1.5).validate().is_err());
    assert!(params(|p| p.temperature = f32::NAN).validate().is_err());
    assert!(params(|p| p.repetition_penalty = 0.0).validate().is_err());
    assert!(params(|p| p.logit_bias = vec![(1, f32::NAN)])
        .validate()
        .is_err());
    assert!(params(|p| p.logit_bias = vec![(1, f32::NEG_INFINITY)])
        .validate()
        .is_ok());
}

// ---------------------------------------------------------------------------------------------------------
// Stop strings

/// Feeds `pieces` and returns (emitted text, stop index), flushing when no stop was hit.
fn feed(stops: &[&str], pieces: &[&str]) -> (String, Option<usize>) {
    let mut m = StopMatcher::new(stops);
    let mut out = String::new();
    for piece in pieces {
        let StopOutput { text, stop } = m.push(piece);
        out.push_str(&text);
        if stop.is_some() {
            assert_eq!(m.flush(), "");
            return (out, stop);
        }
    }
    out.push_str(&m.flush());
    (out, None)
}

#[test]
fn stop_matcher_basic_cases() {
    // No stops: pass-through, nothing held.
    let mut m = StopMatcher::new::<&str>(&[]);
    assert_eq!(m.push("abc").text, "abc");
    assert_eq!(m.held(), "");
    let mut m = StopMatcher::new(&[""]);
    assert_eq!(m.push("abc").text, "abc");

    // Held back while undecided, released when it diverges.
    let mut m = StopMatcher::new(&["</s>"]);
    assert_eq!(m.push("hello <").text, "hello ");
    assert_eq!(m.held(), "<");
    assert_eq!(m.push("/").text, "");
    assert_eq!(m.push("x>").text, "</x>");
    assert_eq!(m.push("bye </").text, "bye ");
    let out = m.push("s> more");
    assert_eq!(
        out,
        StopOutput {
            text: String::new(),
            stop: Some(0)
        }
    );
    assert_eq!(m.stopped(), Some(0));
    assert_eq!(m.push("ignored").text, "");

    // Spanning several pieces, with text before it in the same piece.
    assert_eq!(
        feed(&["\n\nUser:"], &["Hi", "!\n", "\nUs", "er", ": x"]),
        ("Hi!".into(), Some(0))
    );
    // Overlapping prefixes.
    assert_eq!(feed(&["abab"], &["ababab"]), ("".into(), Some(0)));
    assert_eq!(feed(&["abab"], &["x", "aba", "bab"]), ("x".into(), Some(0)));
    assert_eq!(feed(&["aab"], &["a", "a", "ab"]), ("a".into(), Some(0)));
    assert_eq!(feed(&["abab"], &["aba", "c"]), ("abac".into(), None));
    // Flush returns what was held.
    assert_eq!(
        feed(&["STOP"], &["the end ST"]),
        ("the end ST".into(), None)
    );
    // The stop ending first wins; at equal ends the longer; index refers to the caller's list.
    assert_eq!(feed(&["", "abcd", "bc"], &["abcd"]), ("a".into(), Some(2)));
    assert_eq!(feed(&["cd", "abcd"], &["xab", "cd"]), ("x".into(), Some(1)));
    // Multi-byte characters: never split inside one, never emit part of the stop.
    assert_eq!(
        feed(&["é漢"], &["caf", "é", "漢字"]),
        ("caf".into(), Some(0))
    );
    assert_eq!(
        feed(&["🦀🦀"], &["a🦀", "b🦀", "🦀c"]),
        ("a🦀b".into(), Some(0))
    );
    assert_eq!(feed(&["éa"], &["éé", "é"]), ("ééé".into(), None));
}

/// The emitted text and stop for the whole text, computed directly from the documented semantics.
fn reference(stops: &[String], text: &str) -> (String, Option<usize>) {
    let mut best: Option<(usize, usize, usize)> = None;
    for (i, s) in stops.iter().enumerate() {
        if s.is_empty() {
            continue;
        }
        if let Some(start) = text.find(s.as_str()) {
            let key = (start + s.len(), usize::MAX - s.len(), i);
            if best.is_none_or(|b| key < b) {
                best = Some(key);
            }
        }
    }
    match best {
        Some((end, _, i)) => (text[..end - stops[i].len()].to_owned(), Some(i)),
        None => (text.to_owned(), None),
    }
}

#[test]
fn stop_matcher_fuzz_any_split_gives_the_same_output() {
    let alphabet = ['a', 'b', 'c', 'é', '漢', '🦀'];
    let mut rng = Rng::seed_from_u64(9);
    let pick = |n: usize, rng: &mut Rng| (rng.next_u64() % n as u64) as usize;
    let mut hits = 0;
    for _ in 0..5000 {
        let n_stops = pick(4, &mut rng);
        let stops: Vec<String> = (0..n_stops)
            .map(|_| {
                let len = pick(5, &mut rng); // 0..=4 chars; empty ones must be ignored
                (0..len)
                    .map(|_| alphabet[pick(3 + (len % 4), &mut rng)])
                    .collect()
            })
            .collect();
        let len = pick(40, &mut rng);
        let text: String = (0..len)
            .map(|_| alphabet[pick(alphabet.len(), &mut rng)])
            .collect();
        let expected = reference(&stops, &text);
        hits += expected.1.is_some() as usize;
        let stop_refs: Vec<&str> = stops.iter().map(String::as_str).collect();

        assert_eq!(
            feed(&stop_refs, &[&text]),
            expected,
            "whole: {stops:?} {text:?}"
        );
        let bounds: Vec<usize> = (0..=text.len())
            .filter(|&i| text.is_char_boundary(i))
            .collect();
        for _ in 0..4 {
            let mut cuts: Vec<usize> = bounds
                .iter()
                .copied()
                .filter(|_| pick(3, &mut rng) == 0)
                .collect();
            cuts.insert(0, 0);
            cuts.push(text.len());
            let pieces: Vec<&str> = cuts.windows(2).map(|w| &text[w[0]..w[1]]).collect();
            assert_eq!(feed(&stop_refs, &pieces), expected, "{stops:?} {pieces:?}");
        }
    }
    assert!(hits > 1000, "fuzz should hit stops often: {hits}");
}

// ---------------------------------------------------------------------------------------------------------
// No allocation per token

/// Counts allocations made by the current thread, so that tests running in parallel don't interfere.
struct CountingAlloc;

thread_local! {
    static ALLOCS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

fn count_alloc() {
    let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
}

unsafe impl std::alloc::GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        count_alloc();
        unsafe { std::alloc::System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, size: usize) -> *mut u8 {
        count_alloc();
        unsafe { std::alloc::System.realloc(ptr, layout, size) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAlloc = CountingAlloc;

#[test]
fn sampling_does_not_allocate_per_token() {
    let vocab = 50_000;
    let mut rng = Rng::seed_from_u64(10);
    let peaked: Vec<f32> = (0..vocab)
        .map(|i| (rng.next_f64() * 6.0 - 3.0) as f32 + if i % 500 == 0 { 12.0 } else { 0.0 })
        .collect();
    let flat = random_logits(&mut rng, vocab, 0.3);
    let history: Vec<u32> = (0..3000).map(|i| (i * 31 % vocab) as u32).collect();
    let cases = [
        SamplingParams::greedy(),
        SamplingParams::default(),
        params(|_| {}),
        params(|p| p.top_p = 0.9),
        params(|p| p.min_p = 0.05),
        params(|p| {
            p.top_k = 5000;
            p.top_p = 0.99;
            p.min_p = 0.01;
        }),
        params(|p| {
            p.top_k = 300;
            p.repetition_penalty = 1.3;
            p.presence_penalty = 0.4;
            p.frequency_penalty = 0.2;
            p.penalty_last_n = 0;
            p.logit_bias = vec![(3, 2.0), (4, f32::NEG_INFINITY)];
        }),
    ];
    for p in cases {
        let mut s = Sampler::new(p.clone(), vocab);
        let mut buf = peaked.clone();
        s.sample(&mut buf, &history[..100]);
        let before = ALLOCS.with(|c| c.get());
        for i in 0..50 {
            buf.copy_from_slice(if i % 2 == 0 { &peaked } else { &flat });
            s.sample(&mut buf, &history[..100 + i * 50]);
        }
        assert_eq!(
            ALLOCS.with(|c| c.get()),
            before,
            "{p:?} allocated while sampling"
        );
    }
    // The counter does see this thread's allocations.
    let before = ALLOCS.with(|c| c.get());
    let v = std::hint::black_box(vec![1u8; 10]);
    assert!(ALLOCS.with(|c| c.get()) > before && v.len() == 10);
}
