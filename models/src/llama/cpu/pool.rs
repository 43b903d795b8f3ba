//! A persistent worker pool for one token step.
//!
//! A decode step runs ~120 small parallel loops (four projections per layer,
//! attention, the output head), each a few tens of microseconds long. Handing
//! each one to rayon wakes a parked thread every time (20–40 µs per wake-up on
//! the machines measured in PERF-NOTES), which costs as much as the work. Here
//! the calling thread does a share of every loop, and workers spin briefly
//! between loops, so within a token a hand-off is an atomic store; after
//! [`SPIN`] without work they park, so between answers (and while whisper or
//! the voice use the cores) they cost nothing.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long an idle worker spins before parking: longer than the gap
/// between two loops of one token and between tokens of one answer, far
/// shorter than anything a person notices.
const SPIN: Duration = Duration::from_micros(300);

/// The job being run: a loop body over chunk indices, with its lifetime
/// erased. Only dereferenced between [`Pool::run`]'s publish and its wait for
/// every worker, while the closure is alive.
#[derive(Clone, Copy)]
struct Job {
    body: *const (dyn Fn(usize) + Sync),
    chunks: usize,
}

// SAFETY: the pointee is `Sync`, and `run` keeps it alive until every worker
// is done with it.
unsafe impl Send for Job {}

struct Shared {
    /// Bumped once per job; workers run a job when they see a new value.
    epoch: AtomicU64,
    job: Mutex<Option<Job>>,
    /// Next chunk index to hand out.
    next: AtomicUsize,
    /// Workers that have finished the current job.
    done: AtomicUsize,
    /// Workers parked on `wake`.
    parked: AtomicUsize,
    sleep: Mutex<()>,
    wake: Condvar,
    panicked: AtomicBool,
    shutdown: AtomicBool,
}

/// `threads − 1` workers plus the caller.
pub(crate) struct Pool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    /// One job at a time: a second caller runs its loop alone.
    busy: Mutex<()>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pool({} threads)", self.threads())
    }
}

impl Pool {
    /// A pool that runs loops on `threads` threads (the caller included).
    pub(crate) fn new(threads: usize) -> Self {
        let shared = Arc::new(Shared {
            epoch: AtomicU64::new(0),
            job: Mutex::new(None),
            next: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
            parked: AtomicUsize::new(0),
            sleep: Mutex::new(()),
            wake: Condvar::new(),
            panicked: AtomicBool::new(false),
            shutdown: AtomicBool::new(false),
        });
        let workers = (1..threads.max(1))
            .filter_map(|i| {
                let s = shared.clone();
                std::thread::Builder::new()
                    .name(format!("seer-decode-{i}"))
                    .spawn(move || worker(&s))
                    .map_err(|e| tracing::warn!("cannot start decode thread {i}: {e}"))
                    .ok()
            })
            .collect();
        Self {
            shared,
            workers,
            busy: Mutex::new(()),
        }
    }

    /// Threads that share a loop.
    pub(crate) fn threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Calls `body(i)` once for every `i` in `0..chunks`, spread over the
    /// pool; returns when all calls have returned. A panic in any call is
    /// re-raised here.
    pub(crate) fn run(&self, chunks: usize, body: &(dyn Fn(usize) + Sync)) {
        // A panic in an earlier loop poisons `busy`; the pool itself is fine.
        let guard = match self.busy.try_lock() {
            Ok(g) => Some(g),
            Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        };
        if guard.is_none() || self.workers.is_empty() || chunks <= 1 {
            (0..chunks).for_each(body);
            return;
        }
        let s = &*self.shared;
        // SAFETY: only the lifetime is erased; `Wait` below does not let this
        // function return (or unwind) before every worker has finished with
        // the job.
        let body = unsafe {
            std::mem::transmute::<&(dyn Fn(usize) + Sync), *const (dyn Fn(usize) + Sync)>(body)
        };
        *s.job.lock().unwrap_or_else(|e| e.into_inner()) = Some(Job { body, chunks });
        s.next.store(0, Ordering::Relaxed);
        s.done.store(0, Ordering::Relaxed);
        // SeqCst pairs with the `parked` check below and the worker's
        // check of `epoch` after raising `parked`: one of the two sees the other.
        s.epoch.fetch_add(1, Ordering::SeqCst);
        if s.parked.load(Ordering::SeqCst) > 0 {
            let _l = s.sleep.lock().unwrap_or_else(|e| e.into_inner());
            s.wake.notify_all();
        }
        struct Wait<'a>(&'a Shared, usize);
        impl Drop for Wait<'_> {
            fn drop(&mut self) {
                while self.0.done.load(Ordering::Acquire) < self.1 {
                    std::hint::spin_loop();
                }
            }
        }
        let wait = Wait(s, self.workers.len());
        take_chunks(s, body, chunks);
        drop(wait);
        drop(guard);
        if s.panicked.swap(false, Ordering::Relaxed) {
            panic!("a decode worker thread panicked");
        }
    }
}

/// Runs chunks until none are left.
fn take_chunks(s: &Shared, body: *const (dyn Fn(usize) + Sync), chunks: usize) {
    loop {
        let i = s.next.fetch_add(1, Ordering::Relaxed);
        if i >= chunks {
            return;
        }
        // SAFETY: `run` keeps the closure alive until this worker reports done.
        unsafe { (*body)(i) };
    }
}

fn worker(s: &Shared) {
    let mut seen = 0u64;
    loop {
        // Spin for the next job, then park.
        let started = Instant::now();
        let mut spins = 0u32;
        loop {
            if s.shutdown.load(Ordering::Relaxed) {
                return;
            }
            if s.epoch.load(Ordering::Acquire) != seen {
                break;
            }
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(64) && started.elapsed() > SPIN {
                let mut l = s.sleep.lock().unwrap_or_else(|e| e.into_inner());
                s.parked.fetch_add(1, Ordering::SeqCst);
                while s.epoch.load(Ordering::SeqCst) == seen && !s.shutdown.load(Ordering::SeqCst) {
                    l = s.wake.wait(l).unwrap_or_else(|e| e.into_inner());
                }
                s.parked.fetch_sub(1, Ordering::SeqCst);
                break;
            }
            std::hint::spin_loop();
        }
        if s.shutdown.load(Ordering::Relaxed) {
            return;
        }
        seen = s.epoch.load(Ordering::Acquire);
        let job = *s.job.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(job) = job
            && catch_unwind(AssertUnwindSafe(|| take_chunks(s, job.body, job.chunks))).is_err()
        {
            s.panicked.store(true, Ordering::Relaxed);
            // Leave no chunk for anyone: the caller re-raises.
            s.next.store(usize::MAX / 2, Ordering::Relaxed);
        }
        s.done.fetch_add(1, Ordering::Release);
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        {
            let _l = self.shared.sleep.lock().unwrap_or_else(|e| e.into_inner());
            self.shared.wake.notify_all();
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    #[test]
    fn every_chunk_runs_once_across_many_jobs_with_parking_between() {
        let pool = Pool::new(3);
        for round in 0..200 {
            let hits: Vec<AtomicU32> = (0..97).map(|_| AtomicU32::new(0)).collect();
            pool.run(hits.len(), &|i| {
                hits[i].fetch_add(1, Ordering::Relaxed);
            });
            assert!(
                hits.iter().all(|h| h.load(Ordering::Relaxed) == 1),
                "round {round}"
            );
            if round % 50 == 0 {
                // Long enough for the workers to park.
                std::thread::sleep(SPIN * 4);
            }
        }
    }

    #[test]
    fn a_panicking_chunk_is_reraised_and_the_pool_keeps_working() {
        let pool = Pool::new(2);
        let r = catch_unwind(AssertUnwindSafe(|| {
            pool.run(64, &|i| assert!(i != 40, "chunk 40"));
        }));
        assert!(r.is_err());
        let n = AtomicU32::new(0);
        pool.run(10, &|_| {
            n.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(n.load(Ordering::Relaxed), 10);
    }
}
