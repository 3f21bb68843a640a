//! A per-kernel time breakdown of the CUDA backend: with HEARTH_CUDA_PROFILE=1 every launch (and cuBLAS call)
//! is bracketed by a pair of events, and the totals per kernel name are kept for [`report`]. It costs a little
//! time per launch and turns CUDA graphs off (a replayed graph has no per-kernel events), so it is for finding
//! where a step's time goes, not for the numbers a benchmark reports. Kernels that stream weight matrices also
//! file the bytes they read ([`weight_bytes`]), so the table shows each one's rate against the card's
//! bandwidth (a lower bound: a launch's time includes its events').

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use cudarc::driver::{result, sys};

/// Whether profiling is on (HEARTH_CUDA_PROFILE=1), read once.
pub fn enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var("HEARTH_CUDA_PROFILE").is_ok_and(|v| v == "1"))
}

/// Whether launches of kernel `name` are left out (HEARTH_CUDA_SKIP=name,name,...). The results are then
/// wrong; what is left is the step's time without those kernels, which is what each costs inside the real,
/// graph-replayed pipeline (the event timing of [`timed`] cannot see overlap between launches).
pub fn skipped(name: &str) -> bool {
    static SKIP: OnceLock<Vec<String>> = OnceLock::new();
    SKIP.get_or_init(|| {
        std::env::var("HEARTH_CUDA_SKIP")
            .map(|v| v.split(',').map(|s| s.trim().to_string()).collect())
            .unwrap_or_default()
    })
    .iter()
    .any(|s| s == name)
}

#[derive(Default)]
struct Profiler {
    pending: Vec<(&'static str, sys::CUevent, sys::CUevent)>,
    spare: Vec<sys::CUevent>,
    /// Kernel name -> (milliseconds, launches).
    totals: HashMap<&'static str, (f64, u64)>,
    /// Kernel name -> weight bytes its launches read.
    bytes: HashMap<&'static str, f64>,
}

// SAFETY: events are driver handles; the profiler is only touched under its mutex.
unsafe impl Send for Profiler {}

fn profiler() -> &'static Mutex<Profiler> {
    static P: OnceLock<Mutex<Profiler>> = OnceLock::new();
    P.get_or_init(|| Mutex::new(Profiler::default()))
}

fn event(p: &mut Profiler) -> Option<sys::CUevent> {
    p.spare
        .pop()
        .or_else(|| result::event::create(sys::CUevent_flags::CU_EVENT_DEFAULT).ok())
}

/// Runs `launch` between two events on `stream`, filed under `name`.
pub(crate) fn timed<T>(name: &'static str, stream: sys::CUstream, launch: impl FnOnce() -> T) -> T {
    let mut p = profiler().lock().expect("profiler");
    let (Some(a), Some(b)) = (event(&mut p), event(&mut p)) else {
        drop(p);
        return launch();
    };
    // SAFETY: both events were created in the current context; recording is ordered on `stream`.
    let _ = unsafe { result::event::record(a, stream) };
    let out = launch();
    let _ = unsafe { result::event::record(b, stream) };
    p.pending.push((name, a, b));
    out
}

/// Files `bytes` of weights read by a launch of `name` (when profiling is on).
pub(crate) fn weight_bytes(name: &'static str, bytes: usize) {
    if enabled() {
        *profiler()
            .lock()
            .expect("profiler")
            .bytes
            .entry(name)
            .or_insert(0.0) += bytes as f64;
    }
}

/// Adds the finished launches' times to the totals (call after the stream is synchronized).
pub fn collect() {
    let mut p = profiler().lock().expect("profiler");
    let pending = std::mem::take(&mut p.pending);
    for (name, a, b) in pending {
        // SAFETY: both events were recorded and the stream has been synchronized.
        let ms = unsafe { result::event::elapsed(a, b) }.unwrap_or(0.0) as f64;
        let t = p.totals.entry(name).or_insert((0.0, 0));
        t.0 += ms;
        t.1 += 1;
        p.spare.push(a);
        p.spare.push(b);
    }
}

/// The totals so far, largest first, as a table; then clears them.
pub fn report() -> String {
    collect();
    let mut p = profiler().lock().expect("profiler");
    let mut rows: Vec<_> = p.totals.drain().collect();
    rows.sort_by(|a, b| b.1 .0.total_cmp(&a.1 .0));
    let all: f64 = rows.iter().map(|r| r.1 .0).sum();
    let bytes = std::mem::take(&mut p.bytes);
    let mut out = format!(
        "{:<24} {:>10} {:>8} {:>10} {:>6} {:>12}\n",
        "kernel", "ms", "calls", "us/call", "%", "weights GB/s"
    );
    for (name, (ms, n)) in rows {
        let rate = match bytes.get(name) {
            Some(b) if ms > 0.0 => format!("{:.0}", b / (ms * 1e6)),
            _ => "-".to_string(),
        };
        out += &format!(
            "{name:<24} {ms:>10.2} {n:>8} {:>10.2} {:>5.1}% {rate:>12}\n",
            1000.0 * ms / n as f64,
            100.0 * ms / all.max(1e-9)
        );
    }
    out
}
