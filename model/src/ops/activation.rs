//! Element-wise activations as single multithreaded ops: SiLU (swish), which dfdx 0.13 lacks,
//! and the exact (erf) GELU, which dfdx computes on one thread in two passes. The kernels are
//! compiled for AVX-512 / AVX2 as the CPU allows, with `f32`'s `exp` and `erf` in branch-free
//! forms that vectorize ([`Element`]).

use dfdx::prelude::{Cpu, HasShape, PutTape, Shape, SplitTape, Tape, Tensor, TensorFromVec};
use rayon::prelude::*;

use super::grad::{grad_mut, put_grad, take_grad};
use crate::element::{par_new, view};
use crate::simd::multiversion;
use crate::{Element, OpError};

/// Elements per rayon task for element-wise ops.
const CHUNK: usize = 1 << 14;

#[inline(always)]
fn sigmoid<E: Element>(x: E) -> E {
    E::one() / (E::one() + (-x).exp_fast())
}

multiversion! {
    /// `y = x · sigmoid(x)`.
    fn silu_forward<E: Element>(y: &mut [E], x: &[E]) {
        for (y, &x) in y.iter_mut().zip(x) {
            *y = x * sigmoid(x);
        }
    }
}

multiversion! {
    /// `dx += g · s · (1 + x · (1 − s))`, `s = sigmoid(x)`.
    fn silu_backward<E: Element>(dx: &mut [E], x: &[E], g: &[E]) {
        for ((d, &x), &g) in dx.iter_mut().zip(x).zip(g) {
            let s = sigmoid(x);
            *d += g * s * (E::one() + x * (E::one() - s));
        }
    }
}

multiversion! {
    /// `y = ½x(1 + erf(x/√2))`.
    pub(super) fn gelu_forward<E: Element>(y: &mut [E], x: &[E]) {
        let half = E::from_f64(0.5).unwrap();
        let inv_sqrt2 = E::from_f64(std::f64::consts::FRAC_1_SQRT_2).unwrap();
        for (y, &x) in y.iter_mut().zip(x) {
            *y = half * x * (E::one() + (x * inv_sqrt2).erf());
        }
    }
}

multiversion! {
    /// `dx += g · (Φ(x) + x · φ(x))`, `φ` floored where it would be a denormal (|x| > 12.6,
    /// where `x · φ(x)` is far below `Φ(x)`'s precision; denormals cost a hundred cycles each).
    fn gelu_backward<E: Element>(dx: &mut [E], x: &[E], g: &[E]) {
        let floor = E::from_f64(-80.0).unwrap();
        let half = E::from_f64(0.5).unwrap();
        let inv_sqrt2 = E::from_f64(std::f64::consts::FRAC_1_SQRT_2).unwrap();
        let inv_sqrt_2pi = E::from_f64(0.5 * std::f64::consts::FRAC_2_SQRT_PI * std::f64::consts::FRAC_1_SQRT_2).unwrap();
        for ((d, &x), &g) in dx.iter_mut().zip(x).zip(g) {
            let cdf = half * (E::one() + (x * inv_sqrt2).erf());
            let pdf = inv_sqrt_2pi * (-half * x * x).max(floor).exp_fast();
            *d += g * (cdf + x * pdf);
        }
    }
}

multiversion! {
    /// `g = x · Φ(x)` and its slope `s = Φ(x) + x · φ(x)` from one `erf` (the fused MLP's
    /// backward pass, which keeps only the pre-activation).
    pub(super) fn gelu_with_slope<E: Element>(g: &mut [E], s: &mut [E], x: &[E]) {
        let floor = E::from_f64(-80.0).unwrap();
        let half = E::from_f64(0.5).unwrap();
        let inv_sqrt2 = E::from_f64(std::f64::consts::FRAC_1_SQRT_2).unwrap();
        let inv_sqrt_2pi = E::from_f64(0.5 * std::f64::consts::FRAC_2_SQRT_PI * std::f64::consts::FRAC_1_SQRT_2).unwrap();
        for ((g, s), &x) in g.iter_mut().zip(s.iter_mut()).zip(x) {
            let cdf = half * (E::one() + (x * inv_sqrt2).erf());
            let pdf = inv_sqrt_2pi * (-half * x * x).max(floor).exp_fast();
            *g = x * cdf;
            *s = cdf + x * pdf;
        }
    }
}

/// An element-wise op `y = f(x)` with `dx += g · f'(x)`, both over the rayon pool.
fn unary<S: Shape, E: Element, T: Tape<E, Cpu>>(
    x: Tensor<S, E, Cpu, T>,
    names: [&'static str; 2],
    forward: fn(&mut [E], &[E]),
    backward: fn(&mut [E], &[E], &[E]),
) -> Result<Tensor<S, E, Cpu, T>, OpError> {
    let _prof = crate::profile::scope(names[0]);
    let (x, mut tape) = E::contiguous(x)?.split_tape();
    let shape = *x.shape();
    let xs = view(&x);
    let y = par_new(shape.num_elements(), CHUNK, |i, yc| forward(yc, &xs[i * CHUNK..][..yc.len()]));
    let y = x.device().clone().try_tensor_from_vec(y, shape)?;
    if T::OWNS_TAPE {
        let (xg, yg) = (x.ghost(), y.ghost());
        tape.add_backward_op(move |grads| {
            let _prof = crate::profile::scope(names[1]);
            let gy = take_grad!(grads, &yg);
            grad_mut!(grads, &xg)
                .par_chunks_mut(CHUNK)
                .zip(view(&x).par_chunks(CHUNK))
                .zip(gy.par_chunks(CHUNK))
                .for_each(|((dc, xc), gc)| backward(dc, xc, gc));
            put_grad!(grads, &yg, gy);
            Ok(())
        });
    }
    Ok(y.put_tape(tape))
}

/// SiLU (swish): `x · sigmoid(x)`, element-wise over any shape; its gradient is
/// `s · (1 + x · (1 − s))` with `s = sigmoid(x)`.
///
/// ```
/// use dfdx::prelude::*;
/// use siamlab_model::silu;
/// let dev = Cpu::default();
/// let y = silu(dev.tensor([0.0f32, 1.0])).unwrap();
/// assert!((y.as_vec()[1] - 0.7310586).abs() < 1e-6);
/// ```
pub fn silu<S: Shape, E: Element, T: Tape<E, Cpu>>(x: Tensor<S, E, Cpu, T>) -> Result<Tensor<S, E, Cpu, T>, OpError> {
    unary(x, ["silu.forward", "silu.backward"], silu_forward::<E>, silu_backward::<E>)
}

/// GELU with the exact error function (PyTorch's default `approximate='none'`):
/// `x · Φ(x) = ½x(1 + erf(x/√2))`, element-wise over any shape; its gradient is
/// `Φ(x) + x · φ(x)` with `φ` the standard normal density. In `f32` the error function is an
/// approximation within 1e-6, as in PyTorch's vectorized CPU kernel.
///
/// ```
/// use dfdx::prelude::*;
/// use siamlab_model::gelu;
/// let dev = Cpu::default();
/// let y = gelu(dev.tensor([0.0f32, 1.0, -1.0])).unwrap().as_vec();
/// assert!((y[1] - 0.8413447).abs() < 1e-6 && (y[2] + 0.15865526).abs() < 1e-6);
/// ```
pub fn gelu<S: Shape, E: Element, T: Tape<E, Cpu>>(x: Tensor<S, E, Cpu, T>) -> Result<Tensor<S, E, Cpu, T>, OpError> {
    unary(x, ["gelu.forward", "gelu.backward"], gelu_forward::<E>, gelu_backward::<E>)
}
