//! Progress on stderr for anything that takes over a second: a spinner for loads, a bar for scoring.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A spinner that appears only if the work is still running after one second.
pub struct Spinner {
    done: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Spinner {
    pub fn start(msg: String) -> Spinner {
        let done = Arc::new(AtomicBool::new(false));
        let d = done.clone();
        let thread = std::thread::spawn(move || {
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_secs(1) {
                if d.load(Ordering::Relaxed) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let pb = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            pb.set_style(ProgressStyle::with_template("{spinner} {msg} {elapsed}").unwrap());
            pb.set_message(msg);
            while !d.load(Ordering::Relaxed) {
                pb.tick();
                std::thread::sleep(Duration::from_millis(80));
            }
            pb.finish_and_clear();
        });
        Spinner {
            done,
            thread: Some(thread),
        }
    }

    pub fn finish(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A process-wide progress bar for a step with a known total, drawn once the step has run a second.
pub struct Bar;

static BAR: OnceLock<Mutex<Option<(Instant, ProgressBar)>>> = OnceLock::new();

impl Bar {
    /// Reports `done` of `total`.
    pub fn tick(done: usize, total: usize) {
        let mut g = BAR.get_or_init(|| Mutex::new(None)).lock().unwrap();
        let (t0, pb) = g.get_or_insert_with(|| {
            let pb =
                ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::hidden());
            pb.set_style(
                ProgressStyle::with_template("{bar:40} {pos}/{len} tokens {elapsed}").unwrap(),
            );
            (Instant::now(), pb)
        });
        if pb.is_hidden() && t0.elapsed() > Duration::from_secs(1) {
            pb.set_draw_target(ProgressDrawTarget::stderr());
        }
        pb.set_position(done as u64);
    }

    /// Removes the bar.
    pub fn clear() {
        if let Some(m) = BAR.get() {
            if let Some((_, pb)) = m.lock().unwrap().take() {
                pb.finish_and_clear();
            }
        }
    }
}

static UPLOAD: OnceLock<Mutex<Option<ProgressBar>>> = OnceLock::new();

/// Reports weight bytes uploaded to a GPU: a byte bar on stderr (hidden when stderr is not a terminal).
pub fn upload_tick(done: usize, total: usize) {
    let mut g = UPLOAD.get_or_init(|| Mutex::new(None)).lock().unwrap();
    let pb = g.get_or_insert_with(|| {
        let pb = ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stderr());
        pb.set_style(
            ProgressStyle::with_template(
                "uploading weights {bar:40} {bytes}/{total_bytes} {bytes_per_sec}",
            )
            .unwrap(),
        );
        pb
    });
    pb.set_position(done as u64);
}

/// Removes the upload bar, if one was drawn.
pub fn upload_done() {
    if let Some(m) = UPLOAD.get() {
        if let Some(pb) = m.lock().unwrap().take() {
            pb.finish_and_clear();
        }
    }
}
