//! The model worker: whole jobs through the continuous-batching loop, prefix reuse, scoring, cancellation,
//! with the tiny fixture models.

use hearth_engine::generate::{Finish, GenerateOptions};
use hearth_engine::sample::SamplingParams;
use hearth_server::error::Kind;
use hearth_server::job::{Event, Job, ModelHandle};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

mod common;
use common::*;

/// A job on `h` and the receiver of its events.
fn job(
    h: &ModelHandle,
    prompt: Vec<u32>,
    max_tokens: Option<usize>,
) -> (Job, mpsc::UnboundedReceiver<Event>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let mut sampling = SamplingParams::greedy();
    // Never end early: the tests want a known number of tokens.
    sampling.logit_bias = h
        .tokenizer
        .eos_ids()
        .iter()
        .map(|&id| (id, f32::NEG_INFINITY))
        .collect();
    let job = Job {
        request_id: "req_test".into(),
        prompt,
        options: GenerateOptions {
            sampling,
            max_tokens,
            stop: Vec::new(),
            logprobs: Some(2),
        },
        prompt_logprobs: None,
        score_only: false,
        events: tx,
        enqueued: Instant::now(),
    };
    (job, rx)
}

async fn collect(mut rx: mpsc::UnboundedReceiver<Event>) -> Vec<Event> {
    let mut out = Vec::new();
    while let Some(e) = rx.recv().await {
        out.push(e);
    }
    out
}

async fn wait_idle(h: &ModelHandle) {
    let t0 = Instant::now();
    while h.in_flight.load(Ordering::SeqCst) > 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "the worker never finished"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn worker_runs_jobs_end_to_end() {
    let reg = registry(&config(&[("llama", "m")]));
    let h = reg.acquire("m", None).await.unwrap();
    let prompt = h.tokenizer.encode("hello world, tiny model", true).unwrap();
    assert!(prompt.len() > 2);

    let (j, rx) = job(&h, prompt.clone(), Some(5));
    h.submit(j).unwrap();
    let events = collect(rx).await;
    assert!(matches!(events[0], Event::Started { .. }), "{events:?}");
    let tokens: Vec<u32> = events
        .iter()
        .filter_map(|e| match e {
            Event::Token { id, logprobs, .. } => {
                assert_eq!(logprobs.as_ref().unwrap().top.len(), 2);
                Some(*id)
            }
            _ => None,
        })
        .collect();
    assert_eq!(tokens.len(), 5);
    let Event::Done(s) = events.last().unwrap() else {
        panic!("{events:?}")
    };
    assert_eq!(
        (
            s.finish,
            s.prompt_tokens,
            s.completion_tokens,
            s.cached_tokens
        ),
        (Finish::Length, prompt.len(), 5, 0)
    );
    wait_idle(&h).await;

    // The next turn extends the conversation: the cached prefix is reused.
    let mut longer = prompt.clone();
    longer.extend(&tokens[..4]);
    let (j, rx) = job(&h, longer.clone(), Some(2));
    h.submit(j).unwrap();
    let Some(Event::Done(s)) = collect(rx).await.pop() else {
        panic!()
    };
    assert_eq!(s.cached_tokens, longer.len() - 1);

    // Scoring only: prompt log-probabilities, one per prompt token, the first None; nothing generated.
    let (mut j, rx) = job(&h, prompt.clone(), Some(0));
    j.prompt_logprobs = Some(3);
    j.score_only = true;
    h.submit(j).unwrap();
    let events = collect(rx).await;
    assert_eq!(events.len(), 3, "{events:?}");
    let Event::PromptLogprobs(lps) = &events[1] else {
        panic!("{events:?}")
    };
    assert_eq!(lps.len(), prompt.len());
    assert!(
        lps[0].is_none()
            && lps[1..]
                .iter()
                .all(|l| l.as_ref().is_some_and(|l| l.top.len() == 3))
    );
    let Event::Done(s) = &events[2] else { panic!() };
    assert_eq!(s.completion_tokens, 0);

    // Engine errors come back as Failed with the right kind: a token outside the vocabulary is a 400.
    let (j, rx) = job(&h, vec![1, 99_999], Some(2));
    h.submit(j).unwrap();
    let events = collect(rx).await;
    let Some(Event::Failed(e)) = events.last() else {
        panic!("{events:?}")
    };
    assert_eq!(e.kind, Kind::BadRequest);
    wait_idle(&h).await;
}

#[tokio::test]
async fn disconnect_cancels_and_the_worker_goes_on() {
    let reg = registry(&config(&[("llama", "m")]));
    let h = reg.acquire("m", None).await.unwrap();
    let prompt = h.tokenizer.encode("cancel me", true).unwrap();

    // Mid-stream: no max_tokens (until the context is full); the client leaves after 3 tokens.
    let (j, mut rx) = job(&h, prompt.clone(), None);
    h.submit(j).unwrap();
    let mut seen = 0;
    while seen < 3 {
        if let Event::Token { .. } = rx.recv().await.unwrap() {
            seen += 1;
        }
    }
    drop(rx);
    // Already gone while queued: skipped without a Started event.
    let (j, rx) = job(&h, prompt.clone(), Some(3));
    drop(rx);
    h.submit(j).unwrap();
    // The next job runs normally.
    let (j, rx) = job(&h, prompt.clone(), Some(3));
    h.submit(j).unwrap();
    let events = collect(rx).await;
    assert!(matches!(events[0], Event::Started { .. }));
    let Some(Event::Done(s)) = events.last() else {
        panic!("{events:?}")
    };
    assert_eq!(s.completion_tokens, 3);
    wait_idle(&h).await;

    // A full queue is a 429: one running (max_seqs 1) and one waiting (queue_depth 1), the rest refused.
    let mut cfg = config(&[("llama", "q")]);
    cfg.queue_depth = 1;
    cfg.max_seqs = 1;
    let reg = registry(&cfg);
    let h = reg.acquire("q", None).await.unwrap();
    let mut rxs = Vec::new();
    let mut refused = 0;
    for _ in 0..20 {
        let (j, rx) = job(&h, prompt.clone(), None);
        match h.submit(j) {
            Ok(()) => rxs.push(rx),
            Err(e) => {
                assert_eq!(e.kind, Kind::Overloaded);
                refused += 1;
            }
        }
    }
    assert!(refused >= 17, "{refused} of 20 refused");
    assert!(h.in_flight.load(std::sync::atomic::Ordering::SeqCst) <= 2);
    drop(rxs);
    wait_idle(&h).await;
}

/// Tokens of a finished job's events.
fn token_ids(events: &[Event]) -> Vec<u32> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Token { id, .. } => Some(*id),
            _ => None,
        })
        .collect()
}

/// Twenty streams at once: steps of that many sampled rows are sampled on several threads (the worker's
/// sample_rows), and every stream must still get exactly the tokens it gets alone, in order, with its own
/// log-probabilities.
#[tokio::test]
async fn many_streams_at_once_match_each_stream_alone() {
    let reg = registry(&config(&[("llama", "m")]));
    let h = reg.acquire("m", None).await.unwrap();
    let prompts: Vec<Vec<u32>> = (0..20)
        .map(|i| {
            let text = format!("stream {i} of twenty says {}", "word ".repeat(i % 5));
            h.tokenizer.encode(&text, true).unwrap()
        })
        .collect();
    let mut receivers = Vec::new();
    for p in &prompts {
        let (j, rx) = job(&h, p.clone(), Some(6));
        h.submit(j).unwrap();
        receivers.push(rx);
    }
    let mut together = Vec::new();
    for rx in receivers {
        let events = collect(rx).await;
        assert!(matches!(events.last(), Some(Event::Done(_))), "{events:?}");
        for e in &events {
            if let Event::Token { logprobs, .. } = e {
                assert_eq!(logprobs.as_ref().unwrap().top.len(), 2);
            }
        }
        together.push(token_ids(&events));
    }
    wait_idle(&h).await;
    for (i, p) in prompts.iter().enumerate() {
        let (j, rx) = job(&h, p.clone(), Some(6));
        h.submit(j).unwrap();
        let alone = token_ids(&collect(rx).await);
        assert_eq!(alone.len(), 6);
        assert_eq!(together[i], alone, "stream {i}");
    }
    wait_idle(&h).await;
}
