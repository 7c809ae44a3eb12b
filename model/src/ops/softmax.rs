//! Softmax over the last axis with the attention scale folded in, rows spread over the rayon
//! pool (dfdx's scale and softmax are three single-threaded passes with two temporaries).

use dfdx::prelude::{Cpu, HasShape, PutTape, Shape, SplitTape, Tape, Tensor, TensorFromVec};
use rayon::prelude::*;

use super::grad::{grad_mut, put_grad, take_grad};
use crate::element::view;
use crate::{Element, OpError};

/// Elements per rayon task (whole rows).
const CHUNK: usize = 1 << 13;

/// `softmax(scale · x)` along the last axis (attention weights with `scale = 1/√d`); gradient
/// `scale · y ⊙ (g − Σ g ⊙ y)` into `x`.
///
/// ```
/// use dfdx::prelude::*;
/// use siamlab_model::scaled_softmax;
/// let dev = Cpu::default();
/// let y = scaled_softmax(dev.tensor([[0.0f32, 2.0], [1.0, 1.0]]), 0.5).unwrap().as_vec();
/// assert!((y[0] - 0.26894143).abs() < 1e-6 && (y[2] - 0.5).abs() < 1e-7);
/// ```
pub fn scaled_softmax<S: Shape, E: Element, T: Tape<E, Cpu>>(
    x: Tensor<S, E, Cpu, T>,
    scale: f64,
) -> Result<Tensor<S, E, Cpu, T>, OpError> {
    let _prof = crate::profile::scope("scaled_softmax.forward");
    let (x, mut tape) = E::contiguous(x)?.split_tape();
    let shape = *x.shape();
    let dims = shape.concrete();
    let len = if S::NUM_DIMS == 0 { 1 } else { dims.as_ref()[S::NUM_DIMS - 1] };
    let n = shape.num_elements();
    let mut y = vec![E::zero(); n];
    if len == 0 || n == 0 {
        return Ok(x.device().clone().try_tensor_from_vec(y, shape)?.put_tape(tape));
    }
    let scale = E::from_f64(scale).expect("scale fits the float type");
    let chunk = (CHUNK / len).max(1) * len;
    y.par_chunks_mut(chunk).zip(view(&x).par_chunks(chunk)).for_each(|(yc, xc)| {
        for (yr, xr) in yc.chunks_exact_mut(len).zip(xc.chunks_exact(len)) {
            let max = xr.iter().map(|&x| x * scale).fold(E::neg_infinity(), E::max);
            let mut sum = E::zero();
            for (y, &x) in yr.iter_mut().zip(xr) {
                *y = (x * scale - max).exp_fast();
                sum += *y;
            }
            let inv = E::one() / sum;
            yr.iter_mut().for_each(|y| *y *= inv);
        }
    });
    let y = x.device().clone().try_tensor_from_vec(y, shape)?;
    if T::OWNS_TAPE {
        let (xg, yg) = (x.ghost(), y.ghost());
        let out = y.clone();
        tape.add_backward_op(move |grads| {
            let _prof = crate::profile::scope("scaled_softmax.backward");
            let gy = take_grad!(grads, &yg);
            grad_mut!(grads, &xg)
                .par_chunks_mut(chunk)
                .zip(view(&out).par_chunks(chunk))
                .zip(gy.par_chunks(chunk))
                .for_each(|((dc, yc), gc)| {
                    for ((dr, yr), gr) in dc.chunks_exact_mut(len).zip(yc.chunks_exact(len)).zip(gc.chunks_exact(len)) {
                        let dot = yr.iter().zip(gr).map(|(&y, &g)| y * g).sum::<E>();
                        for ((d, &y), &g) in dr.iter_mut().zip(yr).zip(gr) {
                            *d += scale * y * (g - dot);
                        }
                    }
                });
            put_grad!(grads, &yg, gy);
            Ok(())
        });
    }
    Ok(y.put_tape(tape))
}
