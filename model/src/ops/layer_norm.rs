//! Layer normalisation over the last axis (PyTorch's `F.layer_norm` with a 1-D
//! `normalized_shape`) as one op, rows spread over the rayon pool.

use dfdx::prelude::{Cpu, HasShape, Merge, PutTape, Rank1, Shape, SplitTape, Tape, Tensor, TensorFromVec};
use rayon::prelude::*;

use super::grad::{grad_mut, put_grad, take_grad};
use crate::element::{par_new2, view};
use crate::simd::{lane_dot, lane_sq_dev, lane_sum, multiversion};
use crate::{Element, OpError};

/// Rows per rayon task.
const ROWS: usize = 16;

/// `(x − mean) / √(var + eps) · weight + bias` over the last axis of `x` (of length `M`), with
/// the biased variance; gradients into `x`, `weight` and `bias`.
///
/// Errors when the last axis is not `M` long.
///
/// ```
/// use dfdx::prelude::*;
/// use siamlab_model::layer_norm;
/// let dev = Cpu::default();
/// let x = dev.tensor_from_vec(vec![1.0f32, 3.0, 7.0, 5.0], (2, Const::<2>));
/// let y = layer_norm(x, dev.ones::<Rank1<2>>(), dev.zeros::<Rank1<2>>(), 0.0).unwrap();
/// assert_eq!(y.as_vec(), vec![-1.0, 1.0, 1.0, -1.0]);
/// ```
pub fn layer_norm<S, const M: usize, E, T, TW, TB>(
    x: Tensor<S, E, Cpu, T>,
    weight: Tensor<Rank1<M>, E, Cpu, TW>,
    bias: Tensor<Rank1<M>, E, Cpu, TB>,
    eps: f64,
) -> Result<Tensor<S, E, Cpu, T>, OpError>
where
    S: Shape,
    E: Element,
    T: Tape<E, Cpu> + Merge<TW> + Merge<TB>,
    TW: Tape<E, Cpu>,
    TB: Tape<E, Cpu>,
{
    let _prof = crate::profile::scope("layer_norm.forward");
    let (w, tw) = E::contiguous(weight)?.split_tape();
    let (b, tb) = E::contiguous(bias)?.split_tape();
    let (x, tx) = E::contiguous(x)?.split_tape();
    let mut tape = tx.merge(tw).merge(tb);
    let shape = *x.shape();
    let dims = shape.concrete();
    if S::NUM_DIMS == 0 || dims.as_ref()[S::NUM_DIMS - 1] != M || M == 0 {
        return Err(OpError::config("layer_norm", format!("last axis must be {M} long, shape is {:?}", dims.as_ref())));
    }
    let eps = E::from_f64(eps).expect("eps fits the float type");
    let (ws, bs) = (w.as_vec(), b.as_vec());
    let xs = view(&x);
    let rows = xs.len() / M;
    let (y, stats) = par_new2((xs.len(), M * ROWS), (rows, ROWS), |i, yc: &mut [E], sc: &mut [(E, E)]| {
        forward_rows(yc, sc, &xs[i * M * ROWS..][..yc.len()], &ws, &bs, eps);
    });
    let y = x.device().clone().try_tensor_from_vec(y, shape)?;
    if T::OWNS_TAPE {
        let (xg, wg, bg, yg) = (x.ghost(), w.ghost(), b.ghost(), y.ghost());
        tape.add_backward_op(move |grads| {
            let _prof = crate::profile::scope("layer_norm.backward");
            let gy = take_grad!(grads, &yg);
            let xs = view(&x);
            let dx = grad_mut!(grads, &xg);
            // dx per row; Σ g·x̂ and Σ g per task, added up after.
            let partial: Vec<Vec<E>> = dx
                .par_chunks_mut(M * ROWS)
                .zip(gy.par_chunks(M * ROWS))
                .zip(xs.par_chunks(M * ROWS))
                .zip(stats.par_chunks(ROWS))
                .map(|(((dc, gc), xc), sc)| {
                    let mut acc = vec![E::zero(); 2 * M];
                    backward_rows(dc, &mut acc, gc, xc, sc, &ws);
                    acc
                })
                .collect();
            let dw = grad_mut!(grads, &wg);
            for acc in &partial {
                for (d, &a) in dw.iter_mut().zip(&acc[..M]) {
                    *d += a;
                }
            }
            let db = grad_mut!(grads, &bg);
            for acc in &partial {
                for (d, &a) in db.iter_mut().zip(&acc[M..]) {
                    *d += a;
                }
            }
            put_grad!(grads, &yg, gy);
            Ok(())
        });
    }
    Ok(y.put_tape(tape))
}

multiversion! {
    /// LayerNorm of the rows of `x` (each `w.len()` long) into `y`, with each row's
    /// `(mean, 1/std)` into `stats`; the row sums over the [`lane_sum`] running sums, so
    /// that they vectorize.
    fn forward_rows<E: Element>(y: &mut [E], stats: &mut [(E, E)], x: &[E], w: &[E], b: &[E], eps: E) {
        let m = w.len();
        let inv_m = E::one() / E::from_usize(m).unwrap();
        for ((yr, xr), st) in y.chunks_exact_mut(m).zip(x.chunks_exact(m)).zip(stats.iter_mut()) {
            let mean = lane_sum(xr) * inv_m;
            let invstd = E::one() / (lane_sq_dev(xr, mean) * inv_m + eps).sqrt();
            for (((yv, &xv), &wv), &bv) in yr.iter_mut().zip(xr).zip(w).zip(b) {
                *yv = (xv - mean) * invstd * wv + bv;
            }
            *st = (mean, invstd);
        }
    }
}

multiversion! {
    /// LayerNorm's backward pass over rows: `dx += (g·w − mean(g·w) − x̂ · mean(g·w·x̂)) / std`
    /// per row; `acc[..M] += g · x̂` (the weight's gradient) and `acc[M..] += g` (the bias's).
    fn backward_rows<E: Element>(dx: &mut [E], acc: &mut [E], g: &[E], x: &[E], stats: &[(E, E)], w: &[E]) {
        let m = w.len();
        let inv_m = E::one() / E::from_usize(m).unwrap();
        let (acc_w, acc_b) = acc.split_at_mut(m);
        // One row's g·w and x̂, so that the two row sums are vector reductions.
        let (mut gw, mut xh) = (vec![E::zero(); m], vec![E::zero(); m]);
        for (((dr, gr), xr), &(mean, invstd)) in
            dx.chunks_exact_mut(m).zip(g.chunks_exact(m)).zip(x.chunks_exact(m)).zip(stats)
        {
            for (j, ((&gv, &xv), &wv)) in gr.iter().zip(xr).zip(w).enumerate() {
                xh[j] = (xv - mean) * invstd;
                gw[j] = gv * wv;
                acc_w[j] += gv * xh[j];
                acc_b[j] += gv;
            }
            let (mg, mgx) = (lane_sum(&gw) * inv_m, lane_dot(&gw, &xh) * inv_m);
            for ((d, &gwv), &xhv) in dr.iter_mut().zip(&gw).zip(&xh) {
                *d += invstd * (gwv - mg - xhv * mgx);
            }
        }
    }
}
