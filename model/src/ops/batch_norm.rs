//! Batch normalisation over the channel axis (PyTorch's `F.batch_norm`), optionally fused with
//! the ReLU that follows it, as one op: one pass for the statistics, one for the output, and two
//! in backward (the ReLU's mask recomputed inside both, never written out), spread over the
//! rayon pool and compiled for the CPU's vector width — instead of the dozen broadcast tensors
//! of a composition of dfdx ops.

use dfdx::prelude::{Cpu, HasShape, Merge, PutTape, Rank1, Shape, SplitTape, Tape, Tensor, TensorFromVec};
use rayon::prelude::*;

use super::grad::{grad_mut, put_grad, take_grad};
use crate::element::view;
use crate::simd::{lane_sq_dev, lane_sum, multiversion, LANES};
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
        normalize_plane(yc, xc, a[c], shift[c], cfg.relu);
    });
    let y = x.device().clone().try_tensor_from_vec(y, shape)?;
    if T::OWNS_TAPE {
        let (xg, wg, bg, yg) = (x.ghost(), w.ghost(), b.ghost(), y.ghost());
        tape.add_backward_op(move |grads| {
            let _prof = crate::profile::scope("batch_norm.backward");
            let gy = take_grad!(grads, &yg);
            let xs = view(&x);
            let n_c = C;
            let count_e = E::from_usize(count).unwrap();
            // The ReLU's mask comes from the recomputed pre-activation `x·a + shift`.
            let relu = cfg.relu.then_some((&a[..], &shift[..]));
            // Per channel: Σ g and Σ g · x̂.
            let (sum_g, sum_gx) = channel_grad_sums(xs, &gy, &mean, &invstd, relu, n_c, hw);
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
                    // dx = a·(g − mean(g) − x̂·mean(g·x̂)) in training, a·g otherwise: as
                    // `dx += k·(g − mg) + k1·(x − mu)` with per-channel constants.
                    let k = a[c];
                    let (mg, k1, mu) = if training {
                        let (mg, mgx) = (sum_g[c] / count_e, sum_gx[c] / count_e);
                        (mg, -k * invstd[c] * mgx, mean[c])
                    } else {
                        (E::zero(), E::zero(), E::zero())
                    };
                    let mask = relu.map(|(a, s)| (a[c], s[c]));
                    backward_plane(dc, gc, xc, [k, mg, k1, mu], mask);
                },
            );
            put_grad!(grads, &yg, gy);
            Ok(())
        });
    }
    Ok(y.put_tape(tape))
}

multiversion! {
    /// One plane of the output: `y = x·a + shift`, then ReLU when `relu`.
    fn normalize_plane<E: Element>(y: &mut [E], x: &[E], a: E, shift: E, relu: bool) {
        if relu {
            y.iter_mut().zip(x).for_each(|(y, &x)| *y = (x * a + shift).max(E::zero()));
        } else {
            y.iter_mut().zip(x).for_each(|(y, &x)| *y = x * a + shift);
        }
    }
}

multiversion! {
    /// One plane of the input gradient, `[k, mg, k1, mu]` its channel's constants:
    /// `dx += k·(g' − mg) + k1·(x − mu)`, where `g'` is the gradient the ReLU passed (`g`, or 0
    /// where `x·a + shift ≤ 0` under `mask = Some((a, shift))`).
    fn backward_plane<E: Element>(dx: &mut [E], g: &[E], x: &[E], consts: [E; 4], mask: Option<(E, E)>) {
        let [k, mg, k1, mu] = consts;
        match mask {
            Some((a, s)) => {
                for ((d, &g), &x) in dx.iter_mut().zip(g).zip(x) {
                    let g = if x * a + s <= E::zero() { E::zero() } else { g };
                    *d += k * (g - mg) + k1 * (x - mu);
                }
            }
            None => {
                for ((d, &g), &x) in dx.iter_mut().zip(g).zip(x) {
                    *d += k * (g - mg) + k1 * (x - mu);
                }
            }
        }
    }
}

multiversion! {
    /// Mean and biased variance of one channel of `x` (`[N, C, hw]` flattened), two-pass.
    fn channel_moments<E: Element>(x: &[E], c: usize, hw: usize, ch: usize) -> (E, E) {
        let n = x.len() / (c * hw);
        let count = E::from_usize(n * hw).unwrap();
        let plane = |i: usize| &x[(i * c + ch) * hw..(i * c + ch + 1) * hw];
        let mean = (0..n).map(|i| lane_sum(plane(i))).sum::<E>() / count;
        let var = (0..n).map(|i| lane_sq_dev(plane(i), mean)).sum::<E>() / count;
        (mean, var)
    }
}

multiversion! {
    /// `Σ g'` and `Σ g' · (x − mean)` over one channel, `g'` the gradient the ReLU passed
    /// (see [`backward_plane`]).
    fn channel_grad_moments<E: Element>(x: &[E], g: &[E], c: usize, hw: usize, ch: usize, mean: E, mask: Option<(E, E)>) -> (E, E) {
        let n = x.len() / (c * hw);
        let (mut sg, mut sgx) = ([E::zero(); LANES], [E::zero(); LANES]);
        let mut tail = (E::zero(), E::zero());
        let (a, s, masked) = match mask {
            Some((a, s)) => (a, s, true),
            None => (E::zero(), E::zero(), false),
        };
        for i in 0..n {
            let r = (i * c + ch) * hw..(i * c + ch + 1) * hw;
            let (mut gc, mut xc) = (g[r.clone()].chunks_exact(LANES), x[r].chunks_exact(LANES));
            for (gl, xl) in (&mut gc).zip(&mut xc) {
                for j in 0..LANES {
                    let v = if masked && xl[j] * a + s <= E::zero() { E::zero() } else { gl[j] };
                    sg[j] += v;
                    sgx[j] += v * (xl[j] - mean);
                }
            }
            for (&gv, &xv) in gc.remainder().iter().zip(xc.remainder()) {
                let v = if masked && xv * a + s <= E::zero() { E::zero() } else { gv };
                tail.0 += v;
                tail.1 += v * (xv - mean);
            }
        }
        (sg.iter().copied().sum::<E>() + tail.0, sgx.iter().copied().sum::<E>() + tail.1)
    }
}

/// Per-channel mean and biased variance of `x` (`[N, C, hw]` flattened).
fn channel_stats<E: Element>(x: &[E], c: usize, hw: usize) -> (Vec<E>, Vec<E>) {
    (0..c).into_par_iter().map(|ch| channel_moments(x, c, hw, ch)).unzip()
}

/// Per-channel `Σ g'` and `Σ g' · (x − mean) · invstd`, `g'` masked by the ReLU when `relu`
/// carries the per-channel `(a, shift)`.
fn channel_grad_sums<E: Element>(
    x: &[E],
    g: &[E],
    mean: &[E],
    invstd: &[E],
    relu: Option<(&[E], &[E])>,
    c: usize,
    hw: usize,
) -> (Vec<E>, Vec<E>) {
    (0..c)
        .into_par_iter()
        .map(|ch| {
            let mask = relu.map(|(a, s)| (a[ch], s[ch]));
            let (sg, sgx) = channel_grad_moments(x, g, c, hw, ch, mean[ch], mask);
            (sg, sgx * invstd[ch])
        })
        .unzip()
}
