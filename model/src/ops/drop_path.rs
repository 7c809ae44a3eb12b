//! Stochastic depth (timm's `drop_path`): whole samples of a residual branch are zeroed.

use dfdx::prelude::{Cpu, HasShape, PutTape, Shape, SplitTape, Tape, Tensor, TensorFromVec};
use dfdx::tensor::RandomU64;

use super::grad::{grad_mut, put_grad, take_grad};
use crate::element::view;
use crate::{Element, OpError};

/// Drop path: with probability `drop_prob` a sample (index along the first axis) is zeroed,
/// otherwise scaled by `1 / (1 − drop_prob)`, so the expectation is unchanged. The identity when
/// `training` is false or `drop_prob` is 0. Draws come from the tensor's device RNG
/// (`Cpu::seed_from_u64` makes them repeatable).
///
/// Errors when `drop_prob` is outside `[0, 1)` or the shape has no axis.
///
/// ```
/// use dfdx::prelude::*;
/// use siamlab_model::drop_path;
/// let dev = Cpu::seed_from_u64(0);
/// let x: Tensor<_, f32, _> = dev.ones_like(&(8, Const::<4>));
/// let y = drop_path(x, 0.5, true).unwrap().as_vec();
/// // Each row is all 0 or all 2.
/// assert!(y.chunks(4).all(|r| r.iter().all(|&v| v == r[0]) && (r[0] == 0.0 || r[0] == 2.0)));
/// ```
pub fn drop_path<S: Shape, E: Element, T: Tape<E, Cpu>>(
    x: Tensor<S, E, Cpu, T>,
    drop_prob: f64,
    training: bool,
) -> Result<Tensor<S, E, Cpu, T>, OpError> {
    let _prof = crate::profile::scope("drop_path.forward");
    if !(0.0..1.0).contains(&drop_prob) {
        return Err(OpError::config("drop_path", format!("drop probability {drop_prob} outside [0, 1)")));
    }
    if S::NUM_DIMS == 0 {
        return Err(OpError::config("drop_path", "a scalar has no sample axis"));
    }
    if !training || drop_prob == 0.0 {
        return Ok(x);
    }
    let (x, mut tape) = E::contiguous(x)?.split_tape();
    let shape = *x.shape();
    let batch = shape.concrete()[0];
    let per = shape.num_elements() / batch.max(1);
    let keep = 1.0 - drop_prob;
    let scale = E::from_f64(1.0 / keep).expect("scale fits the float type");
    let dev = x.device().clone();
    let mask: Vec<E> = (0..batch)
        .map(|_| {
            // 53 random bits → uniform in [0, 1).
            let u = (dev.random_u64() >> 11) as f64 / (1u64 << 53) as f64;
            if u < keep {
                scale
            } else {
                E::zero()
            }
        })
        .collect();
    let mut y = vec![E::zero(); shape.num_elements()];
    {
        let xs = view(&x);
        for ((yc, xc), &m) in y.chunks_mut(per).zip(xs.chunks(per)).zip(&mask) {
            if m != E::zero() {
                yc.iter_mut().zip(xc).for_each(|(y, &x)| *y = x * m);
            }
        }
    }
    let y = dev.try_tensor_from_vec(y, shape)?;
    if T::OWNS_TAPE {
        let (xg, yg) = (x.ghost(), y.ghost());
        drop(x);
        tape.add_backward_op(move |grads| {
            let _prof = crate::profile::scope("drop_path.backward");
            let gy = take_grad!(grads, &yg);
            let dx = grad_mut!(grads, &xg);
            for ((dc, gc), &m) in dx.chunks_mut(per).zip(gy.chunks(per)).zip(&mask) {
                if m != E::zero() {
                    dc.iter_mut().zip(gc).for_each(|(d, &g)| *d += g * m);
                }
            }
            put_grad!(grads, &yg, gy);
            Ok(())
        });
    }
    Ok(y.put_tape(tape))
}
