//! The residual sum `x + shortcut`, optionally followed by ReLU (ResNet's block output), as one
//! multithreaded op: dfdx's add and ReLU each run on one thread and allocate their own output
//! and gradient.

use dfdx::prelude::{Cpu, HasShape, Merge, PutTape, Shape, SplitTape, Tape, Tensor, TensorFromVec};
use rayon::prelude::*;

use super::grad::{grad_mut, put_grad, take_grad};
use crate::element::view;
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
    let mut y = vec![E::zero(); shape.num_elements()];
    y.par_chunks_mut(CHUNK).zip(view(&x).par_chunks(CHUNK)).zip(view(&s).par_chunks(CHUNK)).for_each(
        |((yc, xc), sc)| {
            for ((y, &a), &b) in yc.iter_mut().zip(xc).zip(sc) {
                let v = a + b;
                *y = if relu && v <= E::zero() { E::zero() } else { v };
            }
        },
    );
    let y = x.device().clone().try_tensor_from_vec(y, shape)?;
    if T::OWNS_TAPE {
        let (xg, sg, yg) = (x.ghost(), s.ghost(), y.ghost());
        // The output decides where ReLU passes the gradient: keep it (not the inputs).
        let out = relu.then(|| y.clone());
        tape.add_backward_op(move |grads| {
            let _prof = crate::profile::scope("residual_add.backward");
            let mut gy = take_grad!(grads, &yg);
            if let Some(out) = &out {
                gy.par_chunks_mut(CHUNK).zip(view(out).par_chunks(CHUNK)).for_each(|(gc, oc)| {
                    for (g, &o) in gc.iter_mut().zip(oc) {
                        if o <= E::zero() {
                            *g = E::zero();
                        }
                    }
                });
            }
            accumulate(grad_mut!(grads, &xg), &gy);
            accumulate(grad_mut!(grads, &sg), &gy);
            put_grad!(grads, &yg, gy);
            Ok(())
        });
    }
    Ok(y.put_tape(tape))
}

/// `dst += src`, element-wise, over the rayon pool.
fn accumulate<E: Element>(dst: &mut [E], src: &[E]) {
    dst.par_chunks_mut(CHUNK).zip(src.par_chunks(CHUNK)).for_each(|(dc, sc)| {
        for (d, &g) in dc.iter_mut().zip(sc) {
            *d += g;
        }
    });
}
