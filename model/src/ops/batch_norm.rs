//! Batch normalisation over the channel axis (PyTorch's `F.batch_norm`), optionally fused with
//! the ReLU that follows it, as one op: one pass for the statistics, one for the output, and two
//! in backward, spread over the rayon pool — instead of the dozen broadcast tensors of a
//! composition of dfdx ops.

use dfdx::prelude::{Cpu, HasShape, Merge, PutTape, Rank1, Shape, SplitTape, Tape, Tensor, TensorFromVec};
use rayon::prelude::*;

use super::grad::{grad_mut, put_grad, take_grad};
use crate::element::view;
use crate::{Element, OpError};

/// How [`batch_norm`] runs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BatchNormConfig {
    /// Batch statistics (and running statistics updated) when `true`; running statistics
    /// otherwise.
    pub training: bool,
    /// Weight of the batch statistic in the running average (PyTorch: 0.1).
    pub momentum: f64,
    /// Added to the variance (PyTorch: 1e-5).
    pub eps: f64,
    /// Apply ReLU to the output (fused).
    pub relu: bool,
}

impl BatchNormConfig {
    /// PyTorch's defaults (momentum 0.1, ε 1e-5), no ReLU, in the given mode.
    pub fn new(training: bool) -> Self {
        BatchNormConfig { training, momentum: 0.1, eps: 1e-5, relu: false }
    }

    /// With or without the fused ReLU.
    pub fn relu(self, relu: bool) -> Self {
        BatchNormConfig { relu, ..self }
    }
}

/// Batch normalisation of `x` (`[N, C, ...]`: channels on axis 1) with affine `weight`, `bias`
/// (`[C]`), then ReLU when `cfg.relu`. In training, normalises with the batch mean and biased
/// variance and updates `running_mean` / `running_var` (unbiased variance) in place; in
/// evaluation, uses them. Gradients flow into `x`, `weight` and `bias`.
///
/// Errors when axis 1 is not `C` long, or in training when a channel has fewer than two values.
///
/// ```
/// use dfdx::prelude::*;
/// use siamlab_model::{batch_norm, BatchNormConfig};
/// let dev = Cpu::default();
/// let x = dev.tensor_from_vec(vec![1.0f32, 3.0, 10.0, 30.0], (2, Const::<2>));
/// let (w, b) = (dev.ones::<Rank1<2>>(), dev.zeros::<Rank1<2>>());
/// let (mut mean, mut var) = (dev.zeros::<Rank1<2>>(), dev.ones::<Rank1<2>>());
/// let y = batch_norm(x, w, b, &mut mean, &mut var, BatchNormConfig::new(true)).unwrap();
/// let y = y.as_vec();
/// assert!((y[0] + 1.0).abs() < 1e-3 && (y[2] - 1.0).abs() < 1e-3);
/// assert!((mean.as_vec()[0] - 0.55).abs() < 1e-6); // 0.9 · 0 + 0.1 · 5.5
/// ```
pub fn batch_norm<S, const C: usize, E, T, TW, TB>(
    x: Tensor<S, E, Cpu, T>,
    weight: Tensor<Rank1<C>, E, Cpu, TW>,
    bias: Tensor<Rank1<C>, E, Cpu, TB>,
    running_mean: &mut Tensor<Rank1<C>, E, Cpu>,
    running_var: &mut Tensor<Rank1<C>, E, Cpu>,
    cfg: BatchNormConfig,
) -> Result<Tensor<S, E, Cpu, T>, OpError>
where
    S: Shape,
    E: Element,
    T: Tape<E, Cpu> + Merge<TW> + Merge<TB>,
    TW: Tape<E, Cpu>,
    TB: Tape<E, Cpu>,
{
    let _prof = crate::profile::scope("batch_norm.forward");
    let (w, tw) = E::contiguous(weight)?.split_tape();
    let (b, tb) = E::contiguous(bias)?.split_tape();
    let (x, tx) = E::contiguous(x)?.split_tape();
    let mut tape = tx.merge(tw).merge(tb);
    let shape = *x.shape();
    let dims = shape.concrete();
    if S::NUM_DIMS < 2 || dims.as_ref()[1] != C {
        return Err(OpError::config(
            "batch_norm",
            format!("channels must be axis 1 of length {C}, shape is {:?}", dims.as_ref()),
        ));
    }
    let n = dims.as_ref()[0];
    let count = shape.num_elements() / C.max(1);
    let hw = count.checked_div(n).unwrap_or(0);
    if count == 0 || (cfg.training && count < 2) {
        return Err(OpError::config("batch_norm", format!("{count} values per channel cannot be normalised")));
    }
    let eps = E::from_f64(cfg.eps).expect("eps fits the float type");
    let xs = view(&x);
    // Per channel: the mean used and 1/std.
    let (mean, invstd) = if cfg.training {
        let (mean, var) = channel_stats(xs, C, hw);
        let m = cfg.momentum;
        let unbias = count as f64 / (count as f64 - 1.0);
        let blend = |old: Vec<E>, new: &[E], scale: f64| -> Vec<E> {
            old.iter()
                .zip(new)
                .map(|(&o, &v)| E::from_f64((1.0 - m) * o.to_f64().unwrap() + m * scale * v.to_f64().unwrap()).unwrap())
                .collect()
        };
        let rm = blend(running_mean.as_vec(), &mean, 1.0);
        let rv = blend(running_var.as_vec(), &var, unbias);
        running_mean.copy_from(&rm);
        running_var.copy_from(&rv);
        let invstd: Vec<E> = var.iter().map(|&v| E::one() / (v + eps).sqrt()).collect();
        (mean, invstd)
    } else {
        let invstd = running_var.as_vec().iter().map(|&v| E::one() / (v + eps).sqrt()).collect();
        (running_mean.as_vec(), invstd)
    };
    let (ws, bs) = (w.as_vec(), b.as_vec());
    // y = x · a + c per channel.
    let a: Vec<E> = (0..C).map(|c| ws[c] * invstd[c]).collect();
    let shift: Vec<E> = (0..C).map(|c| bs[c] - mean[c] * a[c]).collect();
    let mut y = vec![E::zero(); xs.len()];
    y.par_chunks_mut(hw).zip(xs.par_chunks(hw)).enumerate().with_min_len(8).for_each(|(i, (yc, xc))| {
        let c = i % C;
        let (ac, sc) = (a[c], shift[c]);
        if cfg.relu {
            yc.iter_mut().zip(xc).for_each(|(y, &x)| *y = (x * ac + sc).max(E::zero()));
        } else {
            yc.iter_mut().zip(xc).for_each(|(y, &x)| *y = x * ac + sc);
        }
    });
    let y = x.device().clone().try_tensor_from_vec(y, shape)?;
    if T::OWNS_TAPE {
        let (xg, wg, bg, yg) = (x.ghost(), w.ghost(), b.ghost(), y.ghost());
        tape.add_backward_op(move |grads| {
            let _prof = crate::profile::scope("batch_norm.backward");
            let mut gy = take_grad!(grads, &yg);
            let xs = view(&x);
            let (count_e, n_c) = (E::from_usize(count).unwrap(), C);
            if cfg.relu {
                // The ReLU's mask, from the recomputed pre-activation.
                gy.par_chunks_mut(hw).zip(xs.par_chunks(hw)).enumerate().with_min_len(8).for_each(|(i, (gc, xc))| {
                    let c = i % n_c;
                    for (g, &x) in gc.iter_mut().zip(xc) {
                        if x * a[c] + shift[c] <= E::zero() {
                            *g = E::zero();
                        }
                    }
                });
            }
            // Per channel: Σ g and Σ g · x̂.
            let (sum_g, sum_gx) = channel_grad_sums(xs, &gy, &mean, &invstd, n_c, hw);
            {
                let dw = grad_mut!(grads, &wg);
                for c in 0..n_c {
                    dw[c] += sum_gx[c];
                }
            }
            {
                let db = grad_mut!(grads, &bg);
                for c in 0..n_c {
                    db[c] += sum_g[c];
                }
            }
            let dx = grad_mut!(grads, &xg);
            let training = cfg.training;
            dx.par_chunks_mut(hw).zip(gy.par_chunks(hw)).zip(xs.par_chunks(hw)).enumerate().with_min_len(8).for_each(
                |(i, ((dc, gc), xc))| {
                    let c = i % n_c;
                    let k = a[c];
                    if training {
                        let (mg, mgx) = (sum_g[c] / count_e, sum_gx[c] / count_e);
                        let (mu, is) = (mean[c], invstd[c]);
                        for ((d, &g), &x) in dc.iter_mut().zip(gc).zip(xc) {
                            *d += k * (g - mg - (x - mu) * is * mgx);
                        }
                    } else {
                        for (d, &g) in dc.iter_mut().zip(gc) {
                            *d += k * g;
                        }
                    }
                },
            );
            put_grad!(grads, &yg, gy);
            Ok(())
        });
    }
    Ok(y.put_tape(tape))
}

/// Per-channel mean and biased variance of `x` (`[N, C, hw]` flattened), two-pass.
fn channel_stats<E: Element>(x: &[E], c: usize, hw: usize) -> (Vec<E>, Vec<E>) {
    let n = x.len() / (c * hw);
    let count = E::from_usize(n * hw).unwrap();
    (0..c)
        .into_par_iter()
        .map(|ch| {
            let planes = || (0..n).map(move |i| &x[(i * c + ch) * hw..(i * c + ch + 1) * hw]);
            let mean = planes().map(|p| p.iter().copied().sum::<E>()).sum::<E>() / count;
            let var = planes().map(|p| p.iter().map(|&v| (v - mean) * (v - mean)).sum::<E>()).sum::<E>() / count;
            (mean, var)
        })
        .unzip()
}

/// Per-channel `Σ g` and `Σ g · (x − mean) · invstd`.
fn channel_grad_sums<E: Element>(x: &[E], g: &[E], mean: &[E], invstd: &[E], c: usize, hw: usize) -> (Vec<E>, Vec<E>) {
    let n = x.len() / (c * hw);
    (0..c)
        .into_par_iter()
        .map(|ch| {
            let (mut sg, mut sgx) = (E::zero(), E::zero());
            for i in 0..n {
                let r = (i * c + ch) * hw..(i * c + ch + 1) * hw;
                for (&gv, &xv) in g[r.clone()].iter().zip(&x[r]) {
                    sg += gv;
                    sgx += gv * (xv - mean[ch]);
                }
            }
            (sg, sgx * invstd[ch])
        })
        .unzip()
}
