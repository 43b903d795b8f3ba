//! Small pieces shared by the CPU-only paths that call the `gemm` crate
//! directly (the Piper voice's convolutions, the vision tower): how many
//! threads a product may use, and an output pointer that parallel tasks
//! writing disjoint parts of one buffer can share; and a vectorisable `e^x`
//! (the LLM's fused step uses it too).

use gemm::Parallelism;

/// Whether the AVX2 copies of the kernels can run: AVX2, FMA and F16C (the
/// f16 scales), detected at run time (cached by std); `false` off x86-64,
/// where the portable bodies run.
pub(crate) fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
            && std::arch::is_x86_feature_detected!("f16c")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Runs `f` inside a function compiled for AVX2, FMA and F16C when the CPU
/// has them (the binary targets the baseline ISA): `exp`'s `mul_add`s are
/// then instructions, where the baseline makes each a libm call, and loops
/// vectorise eight wide. `f` is inlined there; what it calls through a
/// function pointer or thread hand-off is not, so call this per row.
#[inline(always)]
pub(crate) fn with_avx2<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2,fma,f16c")]
        fn avx2<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        if has_avx2() {
            // SAFETY: the features were just detected.
            return unsafe { avx2(f) };
        }
    }
    f()
}

/// A product's threads: the crate's rayon pool (sized by
/// `device::set_cpu_threads`), or none when that pool has one thread, so a
/// one-thread run never pays rayon's hand-off.
pub(crate) fn parallelism() -> Parallelism {
    if rayon::current_num_threads() > 1 {
        Parallelism::Rayon(0)
    } else {
        Parallelism::None
    }
}

/// The output pointer shared by parallel tasks that write disjoint parts of
/// one buffer (column ranges, row blocks).
#[derive(Clone, Copy)]
pub(crate) struct SendPtr(pub(crate) *mut f32);
// SAFETY: only used for writes to disjoint ranges, one task each.
unsafe impl Send for SendPtr {}
// SAFETY: as above.
unsafe impl Sync for SendPtr {}

impl SendPtr {
    pub(crate) fn get(self) -> *mut f32 {
        self.0
    }
}

/// `e^x` for the softmax and SiLU, as a polynomial the compiler vectorises
/// (libm's `expf` is a call per element: ~1 ms a token in SiLU alone, more
/// in attention at long contexts). The algorithm ggml's vector `expf`
/// uses (Arm's optimized-routines `expf`: x = n·ln2 + b with n rounded by
/// the 1.5·2²³ trick, a degree-5 polynomial in b, 2ⁿ built in the exponent
/// bits, FMAs where it has them), so SiLU and softmax round as llama.cpp's
/// do; within 2 ulp of libm.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    const SHIFT: f32 = 12_582_912.0; // 0x1.8p23
    let z = x.mul_add(f32::from_bits(0x3fb8_aa3b), SHIFT); // log2(e)
    let n = z - SHIFT;
    let b = (-n).mul_add(
        f32::from_bits(0x35bf_be8e), // ln2 low part, 0x1.7f7d1cp-20
        (-n).mul_add(f32::from_bits(0x3f31_7200), x), // ln2 high part, 0x1.62e4p-1
    );
    let e = z.to_bits() << 23;
    let k = f32::from_bits(e.wrapping_add(1f32.to_bits()));
    let u = b * b;
    let c5 = f32::from_bits(0x3c07_2010); // 0x1.0e4020p-7
    let c4 = f32::from_bits(0x3d2b_9f17); // 0x1.573e2ep-5
    let c3 = f32::from_bits(0x3e2a_af33); // 0x1.555e66p-3
    let c2 = f32::from_bits(0x3eff_fedb); // 0x1.fffdb6p-2
    let c1 = f32::from_bits(0x3f7f_fff6); // 0x1.ffffecp-1
    let j = c5
        .mul_add(b, c4)
        .mul_add(u, c3.mul_add(b, c2))
        .mul_add(u, c1 * b);
    // Past 2^±126 ggml rescales; here it is enough that large inputs give
    // infinity and small ones 0 (only subnormal results differ, which
    // neither a probability nor 1 + e^-x can tell apart). A select, so the
    // loops around stay vectorised.
    if n.abs() > 126.0 {
        if x > 0.0 { f32::INFINITY } else { 0.0 }
    } else {
        j.mul_add(k, k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_within_two_ulp_of_libm() {
        let mut worst = 0f32;
        // Where 2ⁿ is a normal number (|n| ≤ 126); beyond, 0 or infinity.
        let mut x = -87.0f32;
        while x < 87.3 {
            let (got, want) = (exp(x), x.exp());
            worst = worst.max(((got - want) / want).abs());
            x += 0.0137;
        }
        assert!(worst < 3.6e-7, "relative error {worst}");
        assert_eq!(exp(-1e4), 0.0);
        assert_eq!(exp(1e4), f32::INFINITY);
        assert_eq!(exp(0.0), 1.0);
    }
}
