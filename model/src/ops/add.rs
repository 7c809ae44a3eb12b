//! The residual sum `x + shortcut`, optionally followed by ReLU (ResNet's block output), as one
//! multithreaded op: dfdx's add and ReLU each run on one thread and allocate their own output
//! and gradient.

use dfdx::prelude::{Cpu, HasShape, Merge, PutTape, Shape, SplitTape, Tape, Tensor, TensorFromVec};
use rayon::prelude::*;

use super::grad::{grad_mut, put_grad, take_grad};
use crate::element::{par_new, view};
use crate::simd::multiversion;
use crate::{Element, OpError};

/// Elements per rayon task.
const CHUNK: usize = 1 << 14;

/// `x + shortcut`, then `max(0, ·)` when `relu`; gradients into both. The shapes must be equal.
///
/// ```
/// use dfdx::prelude::*;
/// use siamlab_model::residual_add;
/// let dev = Cpu::default();
/// let (a, b) = (dev.tensor([1.0f32, -3.0]), dev.tensor([0.5f32, 1.0]));
/// assert_eq!(residual_add(a.clone(), b.clone(), false).unwrap().as_vec(), vec![1.5, -2.0]);
/// assert_eq!(residual_add(a, b, true).unwrap().as_vec(), vec![1.5, 0.0]);
/// ```
pub fn residual_add<S, E, T, TS>(
    x: Tensor<S, E, Cpu, T>,
    shortcut: Tensor<S, E, Cpu, TS>,
    relu: bool,
) -> Result<Tensor<S, E, Cpu, T>, OpError>
where
    S: Shape,
    E: Element,
    T: Tape<E, Cpu> + Merge<TS>,
    TS: Tape<E, Cpu>,
{
    let _prof = crate::profile::scope("residual_add.forward");
    let (s, ts) = E::contiguous(shortcut)?.split_tape();
    let (x, tx) = E::contiguous(x)?.split_tape();
    let mut tape = tx.merge(ts);
    let shape = *x.shape();
    if shape.concrete() != s.shape().concrete() {
        return Err(OpError::config(
            "residual_add",
            format!("shapes differ: {:?} and {:?}", shape.concrete().as_ref(), s.shape().concrete().as_ref()),
        ));
    }
    let (xs, ss) = (view(&x), view(&s));
    let y = par_new(shape.num_elements(), CHUNK, |i, yc| {
        let r = i * CHUNK..i * CHUNK + yc.len();
        add_forward(yc, &xs[r.clone()], &ss[r], relu)
    });
    let y = x.device().clone().try_tensor_from_vec(y, shape)?;
    if T::OWNS_TAPE {
        let (xg, sg, yg) = (x.ghost(), s.ghost(), y.ghost());
        // The output decides where ReLU passes the gradient: keep it (not the inputs).
        let out = relu.then(|| y.clone());
        // The same tensor twice (`x + x`) has one gradient buffer.
        let same = view(&x).as_ptr() == view(&s).as_ptr();
        tape.add_backward_op(move |grads| {
            let _prof = crate::profile::scope("residual_add.backward");
            let gy = take_grad!(grads, &yg);
            let out = out.as_ref().map(|o| view(o));
            if same {
                // `x + x`: one gradient, written twice.
                let dx = grad_mut!(grads, &xg);
                dx.par_chunks_mut(CHUNK).enumerate().for_each(|(i, dx)| {
                    let r = i * CHUNK..(i * CHUNK + dx.len());
                    let mut again = vec![E::zero(); dx.len()];
                    add_backward(dx, &mut again, &gy[r.clone()], out.map(|o| &o[r]));
                    dx.iter_mut().zip(&again).for_each(|(d, g)| *d += *g);
                });
                put_grad!(grads, &yg, gy);
                return Ok(());
            }
            // Take one gradient out so both can be written in one pass over `gy`.
            let mut gs = take_grad!(grads, &sg);
            grad_mut!(grads, &xg).par_chunks_mut(CHUNK).zip(gs.par_chunks_mut(CHUNK)).enumerate().for_each(
                |(i, (dx, ds))| {
                    let r = i * CHUNK..(i * CHUNK + dx.len());
                    add_backward(dx, ds, &gy[r.clone()], out.map(|o| &o[r]));
                },
            );
            put_grad!(grads, &sg, gs);
            put_grad!(grads, &yg, gy);
            Ok(())
        });
    }
    Ok(y.put_tape(tape))
}

multiversion! {
    /// `y = x + s`, then ReLU when `relu`.
    fn add_forward<E: Element>(y: &mut [E], x: &[E], s: &[E], relu: bool) {
        for ((y, &a), &b) in y.iter_mut().zip(x).zip(s) {
            let v = a + b;
            *y = if relu && v <= E::zero() { E::zero() } else { v };
        }
    }
}

multiversion! {
    /// `dx += g'`, `ds += g'`: `g'` is `g`, or 0 where the ReLU's output `out` is 0.
    fn add_backward<E: Element>(dx: &mut [E], ds: &mut [E], g: &[E], out: Option<&[E]>) {
        match out {
            Some(out) => {
                for (((dx, ds), &g), &o) in dx.iter_mut().zip(ds.iter_mut()).zip(g).zip(out) {
                    let g = if o <= E::zero() { E::zero() } else { g };
                    *dx += g;
                    *ds += g;
                }
            }
            None => {
                for ((dx, ds), &g) in dx.iter_mut().zip(ds.iter_mut()).zip(g) {
                    *dx += g;
                    *ds += g;
                }
            }
        }
    }
}
