//! Every fuzz target (`tests/fuzz/targets.rs`) on its committed corpus
//! (`tests/fuzz/corpus/<target>/`, made by `tests/fuzz/make_corpus.py`,
//! plus `crash-*` regression inputs) and on seeded mutations of it: no
//! panic, and no single input making the target hold more than
//! [`ALLOC_CAP`] at once (a counting allocator watches the peak).
//!
//! The same targets run coverage-guided under libFuzzer in `fuzz/`
//! (`cargo +nightly fuzz run gguf`); this is the bounded, deterministic
//! part that runs in the test command. `SEER_FUZZ_RUNS` sets the mutations
//! per target (default 10,000); `SEER_FUZZ_SEED` the seed.

#[path = "../fuzz/targets.rs"]
mod targets;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::alloc::{GlobalAlloc, Layout, System};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

/// The most a target may hold at once for one input: bigger than any
/// corpus file's honest expansion (a Q4 tensor dequantized to f32 is 8x
/// its bytes), far below what a length field lying by 2^40 would ask.
const ALLOC_CAP: usize = 256 << 20;

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged; the
// counters only observe sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = CURRENT.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as is.
        unsafe { System.dealloc(ptr, layout) };
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded as is.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
            let now = CURRENT.fetch_add(new_size, Ordering::Relaxed) + new_size;
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn corpus_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target)
}

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = corpus_dir(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e} (python3 tests/fuzz/make_corpus.py writes it)",
                dir.display()
            )
        })
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} is empty", dir.display());
    files
        .iter()
        .map(|f| std::fs::read(f).expect("corpus file"))
        .collect()
}

/// Values that break length and offset arithmetic.
const INTERESTING: &[u64] = &[
    0,
    1,
    0x7f,
    0x80,
    0xff,
    0x7fff,
    0xffff,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    0x1_0000_0000,
    u64::MAX / 2,
    u64::MAX,
];

/// One to eight random edits of a corpus input (libFuzzer's mutations, in
/// miniature): bit flips, interesting integers, byte runs inserted and
/// deleted, truncation, and splices with another input.
fn mutate(rng: &mut StdRng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut d = seeds[rng.random_range(0..seeds.len())].clone();
    for _ in 0..rng.random_range(1..=8) {
        let len = d.len();
        match rng.random_range(0..7) {
            0 if len > 0 => {
                let i = rng.random_range(0..len);
                d[i] ^= 1 << rng.random_range(0..8);
            }
            1 if len > 0 => {
                let i = rng.random_range(0..len);
                d[i] = rng.random();
            }
            2 if len >= 8 => {
                let v = INTERESTING[rng.random_range(0..INTERESTING.len())];
                let w = [1usize, 2, 4, 8][rng.random_range(0..4)];
                let i = rng.random_range(0..=len - w);
                d[i..i + w].copy_from_slice(&v.to_le_bytes()[..w]);
            }
            3 => {
                let i = rng.random_range(0..=len);
                let n = rng.random_range(1..64);
                let b: u8 = rng.random();
                d.splice(i..i, std::iter::repeat_n(b, n));
            }
            4 if len > 0 => {
                let i = rng.random_range(0..len);
                let n = rng.random_range(1..=(len - i).min(64));
                d.drain(i..i + n);
            }
            5 if len > 0 => d.truncate(rng.random_range(0..len)),
            _ => {
                let other = &seeds[rng.random_range(0..seeds.len())];
                if !other.is_empty() {
                    let a = rng.random_range(0..other.len());
                    let b = rng.random_range(a..=other.len());
                    let i = rng.random_range(0..=d.len());
                    d.splice(i..i, other[a..b].iter().copied());
                }
            }
        }
    }
    d
}

fn env_num(key: &str, default: u64) -> u64 {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn every_target_survives_its_corpus_and_seeded_mutations() {
    let runs = env_num("SEER_FUZZ_RUNS", 10_000);
    let seed = env_num("SEER_FUZZ_SEED", 0x5eed);
    let failures_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("fuzz-failures");
    // The targets' own error paths print nothing; a panic prints once here.
    let mut failures = Vec::new();
    for (t, target) in targets::TARGETS.iter().enumerate() {
        let seeds = corpus(target);
        let mut rng = StdRng::seed_from_u64(seed ^ ((t as u64) << 32));
        let t0 = Instant::now();
        let mut worst = 0usize;
        let mut worst_input = Vec::new();
        let total = seeds.len() + runs as usize;
        for i in 0..total {
            let input = if i < seeds.len() {
                seeds[i].clone()
            } else {
                mutate(&mut rng, &seeds)
            };
            let base = CURRENT.load(Ordering::Relaxed);
            PEAK.store(base, Ordering::Relaxed);
            let ok = std::panic::catch_unwind(|| targets::run(target, &input)).is_ok();
            let held = PEAK.load(Ordering::Relaxed).saturating_sub(base);
            if held > worst {
                worst = held;
                worst_input = input.clone();
            }
            if !ok || held > ALLOC_CAP {
                std::fs::create_dir_all(&failures_dir).expect("failures dir");
                let path = failures_dir.join(format!("{target}-{i}.bin"));
                std::fs::write(&path, &input).expect("keep the failing input");
                failures.push(format!(
                    "{target} input {i} ({} bytes): {} — kept as {}",
                    input.len(),
                    if ok {
                        format!("held {held} bytes, over the {ALLOC_CAP}-byte cap")
                    } else {
                        "panicked".to_owned()
                    },
                    path.display()
                ));
            }
        }
        // The input that made the target hold the most, to look at.
        std::fs::create_dir_all(&failures_dir).expect("failures dir");
        std::fs::write(
            failures_dir.join(format!("worst-{target}.bin")),
            &worst_input,
        )
        .expect("keep the worst input");
        println!(
            "fuzz {target}: {total} inputs ({} corpus) in {:.1} s, peak {:.1} MiB for one input",
            seeds.len(),
            t0.elapsed().as_secs_f64(),
            worst as f64 / (1 << 20) as f64
        );
    }
    assert!(
        failures.is_empty(),
        "{} failing inputs (copy each into tests/fuzz/corpus/<target>/crash-<name> once fixed):\n{}",
        failures.len(),
        failures.join("\n")
    );
}
