//! A persistent worker pool for the kernels: `parallel_for(n, f)` runs `f(0..n)` on the calling thread and the
//! pool's workers, which spin briefly between calls and park only when idle for a while.
//!
//! Why not rayon: a decode step issues a few hundred small parallel loops per token (four grouped matmuls
//! and one attention per layer). Rayon's work-stealing wake-ups (futex, sched_yield) took about a third of
//! decode time in a profile of SmolLM2 on two cores; here a call is an atomic generation bump that spinning
//! workers see at once, and tasks are handed out by one atomic counter.
//!
//! The caller never waits for a worker that has not started on the loop: a worker announces itself (`active`)
//! before it touches the loop and backs off if the loop is already closed. So when the machine is busy and a
//! worker is descheduled, the caller runs every task itself and moves on, instead of spinning until the
//! worker's next time slice.
//!
//! One loop runs at a time: concurrent callers (several models' engine threads) take turns on a mutex, and a
//! call from inside a task runs inline. A panicking task is caught in its worker and re-raised in the caller
//! once every worker has left the loop.

use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long an idle worker spins before it starts yielding its core between checks.
const SPIN: Duration = Duration::from_micros(50);
/// How long an idle worker keeps checking (spinning, then yielding) before parking.
const IDLE: Duration = Duration::from_micros(500);
/// How long a dispatcher spins on its busy workers before yielding between checks (a worker that is
/// descheduled mid-task needs the core back).
const WAIT_SPIN: Duration = Duration::from_micros(20);

/// The current loop, type-erased: the closure pointer and the task count.
#[derive(Clone, Copy)]
struct Job {
    f: *const (dyn Fn(usize) + Sync),
    n: usize,
}

// SAFETY: a worker dereferences the pointer only while it is counted in `active` for the generation that is
// still `open`; the dispatcher closes the loop and waits for `active == 0` before the closure goes away.
unsafe impl Send for Job {}

struct Shared {
    /// Bumped once per loop; a worker joins the loop whose generation it has not seen yet.
    generation: AtomicU64,
    /// The generation currently accepting workers, or 0 once its dispatcher has closed it.
    open: AtomicU64,
    /// Workers inside the open loop.
    active: AtomicUsize,
    job: Mutex<Option<Job>>,
    /// Next task index to hand out.
    next: AtomicUsize,
    panicked: AtomicBool,
    /// Parked workers wait here for a new generation.
    sleep: Mutex<()>,
    wake: Condvar,
    sleepers: AtomicUsize,
}

struct Pool {
    shared: &'static Shared,
    workers: usize,
    /// Serializes loops from different threads.
    dispatch: Mutex<()>,
}

static POOL: OnceLock<Pool> = OnceLock::new();
static THREADS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// Set inside a task: nested loops run inline.
    static IN_TASK: Cell<bool> = const { Cell::new(false) };
}

/// Sets the total thread count (the caller plus `n - 1` workers). Only before the first parallel loop;
/// returns false if the pool already started.
pub fn set_threads(n: usize) -> bool {
    if POOL.get().is_some() {
        return false;
    }
    THREADS.store(n.max(1), SeqCst);
    true
}

/// Threads a loop uses (the caller included).
pub fn threads() -> usize {
    pool().workers + 1
}

fn pool() -> &'static Pool {
    POOL.get_or_init(|| {
        let n = match THREADS.load(SeqCst) {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let shared: &'static Shared = Box::leak(Box::new(Shared {
            generation: AtomicU64::new(0),
            open: AtomicU64::new(0),
            active: AtomicUsize::new(0),
            job: Mutex::new(None),
            next: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            sleep: Mutex::new(()),
            wake: Condvar::new(),
            sleepers: AtomicUsize::new(0),
        }));
        for i in 1..n {
            std::thread::Builder::new()
                .name(format!("hearth-cpu-{i}"))
                .spawn(move || worker(shared))
                .expect("cannot start a kernel worker thread");
        }
        Pool {
            shared,
            workers: n - 1,
            dispatch: Mutex::new(()),
        }
    })
}

fn worker(s: &'static Shared) {
    let mut seen = 0u64;
    loop {
        // Wait for a new generation: spin, then park.
        let t0 = Instant::now();
        let mut gen = s.generation.load(SeqCst);
        while gen == seen {
            let idle = t0.elapsed();
            if idle < SPIN {
                std::hint::spin_loop();
            } else if idle < IDLE {
                std::thread::yield_now();
            } else {
                let guard = s.sleep.lock().unwrap_or_else(|e| e.into_inner());
                s.sleepers.fetch_add(1, SeqCst);
                let guard = s
                    .wake
                    .wait_while(guard, |_| s.generation.load(SeqCst) == seen)
                    .unwrap_or_else(|e| e.into_inner());
                s.sleepers.fetch_sub(1, SeqCst);
                drop(guard);
            }
            gen = s.generation.load(SeqCst);
        }
        seen = gen;
        // Join only a loop that is still open; announcing first means the dispatcher either sees us in
        // `active` or we see its close.
        s.active.fetch_add(1, SeqCst);
        if s.open.load(SeqCst) == gen {
            let job = *s.job.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(job) = job {
                run_tasks(s, job);
            }
        }
        s.active.fetch_sub(1, SeqCst);
    }
}

fn run_tasks(s: &Shared, job: Job) {
    IN_TASK.with(|t| t.set(true));
    // SAFETY: see `Job`.
    let f = unsafe { &*job.f };
    let r = catch_unwind(AssertUnwindSafe(|| loop {
        let i = s.next.fetch_add(1, SeqCst);
        if i >= job.n {
            break;
        }
        f(i);
    }));
    IN_TASK.with(|t| t.set(false));
    if r.is_err() {
        s.panicked.store(true, SeqCst);
    }
}

/// Runs `f(i)` for every `i` in `0..n`, spread over the pool; returns when all have run.
pub fn parallel_for(n: usize, f: impl Fn(usize) + Sync) {
    if n == 0 {
        return;
    }
    let p = pool();
    if n == 1 || p.workers == 0 || IN_TASK.with(|t| t.get()) {
        (0..n).for_each(f);
        return;
    }
    let _turn = p.dispatch.lock().unwrap_or_else(|e| e.into_inner());
    let s = p.shared;
    let f: &(dyn Fn(usize) + Sync) = &f;
    // SAFETY: erases the closure's lifetime; it outlives the loop because we close the loop and wait for
    // every joined worker below.
    let f: *const (dyn Fn(usize) + Sync) = unsafe { std::mem::transmute(f) };
    *s.job.lock().unwrap_or_else(|e| e.into_inner()) = Some(Job { f, n });
    s.next.store(0, SeqCst);
    s.panicked.store(false, SeqCst);
    let gen = s.generation.load(SeqCst) + 1;
    s.open.store(gen, SeqCst);
    s.generation.store(gen, SeqCst);
    if s.sleepers.load(SeqCst) > 0 {
        let _g = s.sleep.lock().unwrap_or_else(|e| e.into_inner());
        s.wake.notify_all();
    }
    run_tasks(s, Job { f, n });
    // Every task has been handed out; close the loop to latecomers, then wait for those still working.
    s.open.store(0, SeqCst);
    let t0 = Instant::now();
    while s.active.load(SeqCst) > 0 {
        if t0.elapsed() < WAIT_SPIN {
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
    }
    *s.job.lock().unwrap_or_else(|e| e.into_inner()) = None;
    if s.panicked.load(SeqCst) {
        panic!("a kernel task panicked");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_index_runs_once() {
        for n in [0, 1, 2, 3, 17, 1000] {
            let hits: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
            parallel_for(n, |i| {
                hits[i].fetch_add(1, SeqCst);
            });
            assert!(hits.iter().all(|h| h.load(SeqCst) == 1), "n = {n}");
        }
    }

    #[test]
    fn concurrent_callers_and_nesting() {
        let total = AtomicUsize::new(0);
        std::thread::scope(|sc| {
            for _ in 0..4 {
                sc.spawn(|| {
                    for _ in 0..200 {
                        parallel_for(8, |_| {
                            parallel_for(3, |_| {
                                total.fetch_add(1, SeqCst);
                            });
                        });
                    }
                });
            }
        });
        assert_eq!(total.load(SeqCst), 4 * 200 * 8 * 3);
    }

    #[test]
    fn a_panicking_task_reaches_the_caller_and_the_pool_survives() {
        let r = catch_unwind(|| {
            parallel_for(16, |i| {
                if i == 5 {
                    panic!("boom");
                }
            })
        });
        assert!(r.is_err());
        let n = AtomicUsize::new(0);
        parallel_for(16, |_| {
            n.fetch_add(1, SeqCst);
        });
        assert_eq!(n.load(SeqCst), 16);
    }
}
