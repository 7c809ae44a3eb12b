//! Layer normalisation over the last axis (PyTorch's `F.layer_norm` with a 1-D
//! `normalized_shape`) as one op, rows spread over the rayon pool.

use dfdx::prelude::{Cpu, HasShape, Merge, PutTape, Rank1, Shape, SplitTape, Tape, Tensor, TensorFromVec};
use rayon::prelude::*;

use super::grad::{grad_mut, put_grad, take_grad};
use crate::element::{par_new2, view};
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
    let inv_m = E::one() / E::from_usize(M).unwrap();
    let (ws, bs) = (w.as_vec(), b.as_vec());
    let xs = view(&x);
    let rows = xs.len() / M;
    let (y, stats) = par_new2((xs.len(), M * ROWS), (rows, ROWS), |i, yc: &mut [E], sc: &mut [(E, E)]| {
        let xc = &xs[i * M * ROWS..][..yc.len()];
        {
            for ((yr, xr), st) in yc.chunks_exact_mut(M).zip(xc.chunks_exact(M)).zip(sc.iter_mut()) {
                let mean = xr.iter().copied().sum::<E>() * inv_m;
                let var = xr.iter().map(|&v| (v - mean) * (v - mean)).sum::<E>() * inv_m;
                let invstd = E::one() / (var + eps).sqrt();
                for (((yv, &xv), &wv), &bv) in yr.iter_mut().zip(xr).zip(&ws).zip(&bs) {
                    *yv = (xv - mean) * invstd * wv + bv;
                }
                *st = (mean, invstd);
            }
        }
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
                    for (((dr, gr), xr), &(mean, invstd)) in
                        dc.chunks_exact_mut(M).zip(gc.chunks_exact(M)).zip(xc.chunks_exact(M)).zip(sc)
                    {
                        let (mut sum_g, mut sum_gx) = (E::zero(), E::zero());
                        for (i, (&g, &xv)) in gr.iter().zip(xr).enumerate() {
                            let xhat = (xv - mean) * invstd;
                            let gw = g * ws[i];
                            sum_g += gw;
                            sum_gx += gw * xhat;
                            acc[i] += g * xhat;
                            acc[M + i] += g;
                        }
                        let (mg, mgx) = (sum_g * inv_m, sum_gx * inv_m);
                        for (i, (d, (&g, &xv))) in dr.iter_mut().zip(gr.iter().zip(xr)).enumerate() {
                            let xhat = (xv - mean) * invstd;
                            *d += invstd * (g * ws[i] - mg - xhat * mgx);
                        }
                    }
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
