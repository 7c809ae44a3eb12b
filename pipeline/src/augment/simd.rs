//! Helpers for the hot loops: runtime dispatch to an AVX2 build of a kernel, and float → u8
//! conversions that vectorize.
//!
//! The kernels are plain Rust loops written so LLVM vectorizes them (no branches in the body,
//! no bounds checks); [`multiversion!`] compiles each one twice, for the baseline target and
//! with AVX2 enabled, and picks the AVX2 build at run time when the CPU has it. Both builds
//! compute the same IEEE operations in the same order, so results do not depend on the CPU.

/// Defines `fn $name(args) -> ret` that runs an AVX2 build of `$body` when the CPU supports
/// it and the baseline build otherwise.
macro_rules! multiversion {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn __body($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2")]
                unsafe fn __avx2($($arg: $ty),*) $(-> $ret)? {
                    __body($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx2") {
                    // SAFETY: the CPU supports AVX2, checked just above.
                    return unsafe { __avx2($($arg),*) };
                }
            }
            __body($($arg),*)
        }
    };
}
pub(crate) use multiversion;

/// `trunc(clamp(x, 0, 255))` as u8 (torch's `.clamp(0, 255).to(uint8)`); NaN gives 0.
#[inline(always)]
#[allow(clippy::manual_clamp)] // `clamp` keeps NaN; max/min map it to 0, which the cast needs.
pub(crate) fn sat_u8(x: f32) -> u8 {
    let c = x.max(0.0).min(255.0);
    // SAFETY: `max` returns 0.0 for NaN, so `c` is a finite value in [0, 255], representable
    // in i32 after truncation.
    unsafe { c.to_int_unchecked::<i32>() as u8 }
}

/// `floor(x)` for `x` in `[0, 2^23)` (truncation), as f32; NaN and negatives give 0.
#[inline(always)]
#[allow(clippy::manual_clamp)] // As in `sat_u8`: NaN must not reach the unchecked cast.
pub(crate) fn floor_small(x: f32) -> f32 {
    let c = x.max(0.0).min(8_388_607.0);
    // SAFETY: `c` is finite and in [0, 2^23), representable in i32 after truncation.
    unsafe { c.to_int_unchecked::<i32>() as f32 }
}
