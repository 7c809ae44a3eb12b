//! Softmax over the last axis with the attention scale folded in, rows spread over the rayon
//! pool (dfdx's scale and softmax are three single-threaded passes with two temporaries).

use dfdx::prelude::{Cpu, HasShape, PutTape, Shape, SplitTape, Tape, Tensor, TensorFromVec};
use rayon::prelude::*;

use super::grad::{grad_mut, put_grad, take_grad};
use crate::element::view;
use crate::simd::{lane_dot, lane_sum, multiversion, LANES};
use crate::{Element, OpError};

/// The largest of `x` (NaNs ignored; `-∞` for an empty row), over [`LANES`] running maxima.
#[inline(always)]
fn row_max<E: Element>(x: &[E]) -> E {
    let mut m = [E::neg_infinity(); LANES];
    let mut chunks = x.chunks_exact(LANES);
    for c in &mut chunks {
        for (m, &v) in m.iter_mut().zip(c) {
            *m = if v > *m { v } else { *m };
        }
    }
    chunks.remainder().iter().chain(&m).fold(E::neg_infinity(), |a, &v| if v > a { v } else { a })
}

multiversion! {
    /// One row: `y = softmax(scale · x)`.
    pub(super) fn softmax_row<E: Element>(y: &mut [E], x: &[E], scale: E) {
        let max = row_max(x);
        // `scale > 0` (an attention scale), so the largest of `scale · x` is `scale · max`.
        let shift = if scale > E::zero() { scale * max } else { x.iter().map(|&v| v * scale).fold(E::neg_infinity(), E::max) };
        for (y, &x) in y.iter_mut().zip(x) {
            *y = (x * scale - shift).exp_fast();
        }
        let sum = lane_sum(y);
        let inv = E::one() / sum;
        y.iter_mut().for_each(|y| *y *= inv);
    }
}

multiversion! {
    /// One row of the gradient in place: `g ← scale · y ⊙ (g − ⟨y, g⟩)`.
    pub(super) fn softmax_row_grad<E: Element>(g: &mut [E], y: &[E], scale: E) {
        let dot = lane_dot(y, g);
        for (g, &y) in g.iter_mut().zip(y) {
            *g = scale * y * (*g - dot);
        }
    }
}

multiversion! {
    /// One row of the gradient: `dx += scale · y ⊙ (g − ⟨y, g⟩)`.
    fn softmax_row_backward<E: Element>(dx: &mut [E], y: &[E], g: &[E], scale: E) {
        let dot = lane_dot(y, g);
        for ((d, &y), &g) in dx.iter_mut().zip(y).zip(g) {
            *d += scale * y * (g - dot);
        }
    }
}

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
            softmax_row(yr, xr, scale);
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
                        softmax_row_backward(dr, yr, gr, scale);
                    }
                });
            put_grad!(grads, &yg, gy);
            Ok(())
        });
    }
    Ok(y.put_tape(tape))
}
