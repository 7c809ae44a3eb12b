//! Element-wise activations dfdx 0.13 lacks: SiLU (swish), as one fused op.

use dfdx::prelude::{Cpu, HasShape, PutTape, Shape, SplitTape, Tape, Tensor, TensorFromVec};
use rayon::prelude::*;

use super::grad::{grad_mut, put_grad, take_grad};
use crate::element::Scratch;
use crate::{Element, OpError};

/// Elements per rayon task for element-wise ops.
const CHUNK: usize = 1 << 14;

fn sigmoid<E: Element>(x: E) -> E {
    E::one() / (E::one() + (-x).exp())
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
    let (x, mut tape) = E::contiguous(x)?.split_tape();
    let shape = *x.shape();
    let mut y = vec![E::zero(); shape.num_elements()];
    {
        let xs = Scratch::copy_of(&x);
        y.par_chunks_mut(CHUNK).zip(xs.par_chunks(CHUNK)).for_each(|(yc, xc)| {
            for (y, &x) in yc.iter_mut().zip(xc) {
                *y = x * sigmoid(x);
            }
        });
    }
    let y = x.device().clone().try_tensor_from_vec(y, shape)?;
    if T::OWNS_TAPE {
        let (xg, yg) = (x.ghost(), y.ghost());
        tape.add_backward_op(move |grads| {
            let gy = take_grad!(grads, &yg);
            let xs = Scratch::copy_of(&x);
            grad_mut!(grads, &xg).par_chunks_mut(CHUNK).zip(xs.par_chunks(CHUNK)).zip(gy.par_chunks(CHUNK)).for_each(
                |((dc, xc), gc)| {
                    for ((d, &x), &g) in dc.iter_mut().zip(xc).zip(gc) {
                        let s = sigmoid(x);
                        *d += g * s * (E::one() + x * (E::one() - s));
                    }
                },
            );
            put_grad!(grads, &yg, gy);
            Ok(())
        });
    }
    Ok(y.put_tape(tape))
}
