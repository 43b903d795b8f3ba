//! Where a fused step's time goes, phase by phase, for `seer-bench llm
//! --profile`. Off by default: then a phase costs one relaxed load.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

/// A part of the step timed on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// RMSNorm.
    Norm,
    /// Activations quantised to 8-bit blocks before each product.
    Quantize,
    /// The q/k/v projection.
    Qkv,
    /// Biases, RoPE and the KV cache write.
    Rope,
    /// Scores, softmax and the weighted sum of values.
    Attention,
    /// The attention output projection.
    Out,
    /// The gate/up projection.
    GateUp,
    /// The down projection.
    Down,
    /// SiLU·up and the residual additions.
    Elementwise,
    /// The output (vocabulary) projection.
    Head,
}

const PHASES: [Phase; 10] = [
    Phase::Norm,
    Phase::Quantize,
    Phase::Qkv,
    Phase::Rope,
    Phase::Attention,
    Phase::Out,
    Phase::GateUp,
    Phase::Down,
    Phase::Elementwise,
    Phase::Head,
];

static ON: AtomicBool = AtomicBool::new(false);
static NANOS: [AtomicU64; 10] = [const { AtomicU64::new(0) }; 10];

impl Phase {
    /// The phase's name as `seer-bench` prints it.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Norm => "rms_norm",
            Phase::Quantize => "quantize",
            Phase::Qkv => "matvec_qkv",
            Phase::Rope => "rope_kv_write",
            Phase::Attention => "attention",
            Phase::Out => "matvec_out",
            Phase::GateUp => "matvec_gate_up",
            Phase::Down => "matvec_down",
            Phase::Elementwise => "silu_residual",
            Phase::Head => "matvec_head",
        }
    }
}

/// Starts (and zeroes) or stops the per-phase timers. Process-wide.
pub fn set_profiling(on: bool) {
    for n in &NANOS {
        n.store(0, Ordering::Relaxed);
    }
    ON.store(on, Ordering::Relaxed);
}

/// Milliseconds spent in each phase since [`set_profiling`]`(true)`.
pub fn profile() -> Vec<(&'static str, f64)> {
    PHASES
        .iter()
        .map(|&p| {
            (
                p.name(),
                NANOS[p as usize].load(Ordering::Relaxed) as f64 / 1e6,
            )
        })
        .collect()
}

/// Runs `f`, adding its time to `phase` when profiling is on.
#[inline]
pub(crate) fn timed<T>(phase: Phase, f: impl FnOnce() -> T) -> T {
    if !ON.load(Ordering::Relaxed) {
        return f();
    }
    let t0 = Instant::now();
    let r = f();
    NANOS[phase as usize].fetch_add(t0.elapsed().as_nanos() as u64, Ordering::Relaxed);
    r
}
