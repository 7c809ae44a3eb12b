//! Moving gradient buffers in and out of dfdx's `Gradients` without copying them.
//!
//! Macros rather than functions: dfdx's `Gradients` accessors take `impl Tensorlike`, a trait
//! outside code cannot name, so the expressions are expanded where the ghost's type is known.

/// Takes the gradient buffer of a tensor (or ghost) out of `grads` as a `Vec`, allocating
/// zeros if absent, so it can be read while other gradients are written. Use inside a
/// backward closure (it returns early with the device error). Give it back with `put_grad!`.
macro_rules! take_grad {
    ($grads:expr, $t:expr) => {
        ::std::mem::take(&mut **$grads.get_or_alloc_mut($t)?)
    };
}

/// Puts back a buffer taken with `take_grad!`.
macro_rules! put_grad {
    ($grads:expr, $t:expr, $buf:expr) => {
        **$grads.get_or_alloc_mut($t)? = $buf
    };
}

/// The gradient of a tensor (or ghost) as `&mut [E]`, allocated (zeros) if absent.
macro_rules! grad_mut {
    ($grads:expr, $t:expr) => {
        $grads.get_or_alloc_mut($t)?.as_mut_slice()
    };
}

pub(crate) use {grad_mut, put_grad, take_grad};
