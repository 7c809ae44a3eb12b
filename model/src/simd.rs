//! Runtime CPU-feature dispatch for the element-wise kernels this crate writes itself (GEMM
//! dispatches on its own). Builds target the x86-64 baseline, so without this the compiler
//! vectorizes loops with SSE2 only.

/// Defines `fn $name<E: Element>(args)` that runs `$body` compiled for AVX-512 or AVX2+FMA
/// when the CPU has them (detected at run time), else for the baseline.
macro_rules! multiversion {
    ($(#[$m:meta])* $vis:vis fn $name:ident<E: Element>($($arg:ident : $ty:ty),* $(,)?) $body:block) => {
        $(#[$m])*
        $vis fn $name<E: Element>($($arg: $ty),*) {
            #[inline(always)]
            fn imp<E: Element>($($arg: $ty),*) $body

            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                fn v4<E: Element>($($arg: $ty),*) {
                    imp($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                fn v3<E: Element>($($arg: $ty),*) {
                    imp($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU supports AVX-512F (checked just above).
                    return unsafe { v4($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: the CPU supports AVX2 and FMA (checked just above).
                    return unsafe { v3($($arg),*) };
                }
            }
            imp($($arg),*)
        }
    };
}

pub(crate) use multiversion;
