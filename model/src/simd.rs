//! Runtime CPU-feature dispatch for the element-wise kernels this crate writes itself (GEMM
//! dispatches on its own). Builds target the x86-64 baseline, so without this the compiler
//! vectorizes loops with SSE2 only.

/// Defines `fn $name<E: Element>(args) [-> R]` that runs `$body` compiled for AVX-512 or AVX2+FMA
/// when the CPU has them (detected at run time), else for the baseline.
macro_rules! multiversion {
    ($(#[$m:meta])* $vis:vis fn $name:ident<E: Element>($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$m])*
        $vis fn $name<E: Element>($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            #[allow(clippy::too_many_arguments)]
            fn imp<E: Element>($($arg: $ty),*) $(-> $ret)? $body

            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                #[allow(clippy::too_many_arguments)]
                fn v4<E: Element>($($arg: $ty),*) $(-> $ret)? {
                    imp($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                fn v3<E: Element>($($arg: $ty),*) $(-> $ret)? {
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

use crate::Element;

/// Lanes of the running sums of the reductions below: independent accumulators let the
/// compiler keep a loop in vector registers (one running sum would be a serial chain of
/// additions). Inline them into a [`multiversion!`] function to get its vector width.
pub(crate) const LANES: usize = 16;

/// `Σ x`, over [`LANES`] running sums.
#[inline(always)]
pub(crate) fn lane_sum<E: Element>(x: &[E]) -> E {
    let mut acc = [E::zero(); LANES];
    let mut chunks = x.chunks_exact(LANES);
    for c in &mut chunks {
        for (s, &v) in acc.iter_mut().zip(c) {
            *s += v;
        }
    }
    acc.iter().copied().sum::<E>() + chunks.remainder().iter().copied().sum::<E>()
}

/// `Σ (x − m)²`, over [`LANES`] running sums.
#[inline(always)]
pub(crate) fn lane_sq_dev<E: Element>(x: &[E], m: E) -> E {
    let mut acc = [E::zero(); LANES];
    let mut chunks = x.chunks_exact(LANES);
    for c in &mut chunks {
        for (s, &v) in acc.iter_mut().zip(c) {
            *s += (v - m) * (v - m);
        }
    }
    acc.iter().copied().sum::<E>() + chunks.remainder().iter().map(|&v| (v - m) * (v - m)).sum::<E>()
}

/// `Σ a·b`, over [`LANES`] running sums.
#[inline(always)]
pub(crate) fn lane_dot<E: Element>(a: &[E], b: &[E]) -> E {
    let mut acc = [E::zero(); LANES];
    let (mut ca, mut cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    for (x, y) in (&mut ca).zip(&mut cb) {
        for ((s, &x), &y) in acc.iter_mut().zip(x).zip(y) {
            *s += x * y;
        }
    }
    let tail = ca.remainder().iter().zip(cb.remainder()).map(|(&x, &y)| x * y).sum::<E>();
    acc.iter().copied().sum::<E>() + tail
}
