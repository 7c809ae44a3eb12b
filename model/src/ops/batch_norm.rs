//! Batch normalisation over the channel axis (PyTorch's `F.batch_norm`), optionally fused with
//! the ReLU that follows it, as one op: one pass for the statistics, one for the output, and two
//! in backward (the ReLU's mask recomputed inside both, never written out), spread over the
//! rayon pool and compiled for the CPU's vector width — instead of the dozen broadcast tensors
//! of a composition of dfdx ops.

use dfdx::prelude::{Cpu, HasShape, Merge, PutTape, Rank1, Shape, SplitTape, Tape, Tensor, TensorFromVec};
use rayon::prelude::*;

use super::grad::{grad_mut, put_grad, take_grad};
use crate::element::{par_new, view};
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
    // Synchronized BatchNorm: statistics over every process ([`crate::sync`]).
    let sync = if cfg.training { crate::sync::reducer() } else { None };
    let mut total = count;
    let (mean, invstd) = if cfg.training {
        let (mut mean, mut var) = channel_stats(xs, C, hw);
        if let Some(r) = &sync {
            (total, mean, var) = global_stats(&**r, count, &mean, &var);
        }
        if total < 2 {
            return Err(OpError::config("batch_norm", format!("{total} values per channel cannot be normalised")));
        }
        let m = cfg.momentum;
        let unbias = total as f64 / (total as f64 - 1.0);
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
    let task = planes_per_task(hw) * hw;
    let y = par_new(xs.len(), task, |t, yc| {
        normalize_planes(yc, &xs[t * task..][..yc.len()], hw, t * task / hw % C, &a, &shift, cfg.relu);
    });
    let y = x.device().clone().try_tensor_from_vec(y, shape)?;
    if T::OWNS_TAPE {
        let (xg, wg, bg, yg) = (x.ghost(), w.ghost(), b.ghost(), y.ghost());
        tape.add_backward_op(move |grads| {
            let _prof = crate::profile::scope("batch_norm.backward");
            let gy = take_grad!(grads, &yg);
            let xs = view(&x);
            let n_c = C;
            let count_e = E::from_usize(total).unwrap();
            // The ReLU's mask comes from the recomputed pre-activation `x·a + shift`.
            let relu = cfg.relu.then_some((&a[..], &shift[..]));
            // Per channel: Σ g and Σ g · x̂.
            let (sum_g, sum_gx) = channel_grad_sums(xs, &gy, &mean, &invstd, relu, n_c, hw);
            // Synchronized: the input gradient takes Σ g and Σ g·x̂ over every process; the
            // weight and bias keep this process's (the gradient average adds them up).
            let (sum_g_all, sum_gx_all) = match &sync {
                Some(r) => global_grad_sums(&**r, &sum_g, &sum_gx),
                None => (sum_g.clone(), sum_gx.clone()),
            };
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
            // dx = a·(g − mean(g) − x̂·mean(g·x̂)) in training, a·g otherwise: per channel
            // `dx += k·(g − mg) + k1·(x − mu)`, the constants `[k, mg, k1, mu]`.
            let consts: Vec<[E; 4]> = (0..n_c)
                .map(|c| {
                    let k = a[c];
                    if cfg.training {
                        let (mg, mgx) = (sum_g_all[c] / count_e, sum_gx_all[c] / count_e);
                        [k, mg, -k * invstd[c] * mgx, mean[c]]
                    } else {
                        [k, E::zero(), E::zero(), E::zero()]
                    }
                })
                .collect();
            let dx = grad_mut!(grads, &xg);
            let task = planes_per_task(hw) * hw;
            dx.par_chunks_mut(task)
                .zip(gy.par_chunks(task))
                .zip(xs.par_chunks(task))
                .enumerate()
                .for_each(|(t, ((dc, gc), xc))| backward_planes(dc, gc, xc, hw, t * task / hw % n_c, &consts, relu));
            put_grad!(grads, &yg, gy);
            Ok(())
        });
    }
    Ok(y.put_tape(tape))
}

/// The count, mean and biased variance over every process of per-channel `mean` and `var` of
/// `count` values here: the sums and counts added up, then the squared deviations from the
/// common mean (`count · (var + (mean − m)²)` here), added up — as exact as the two passes of
/// one process.
fn global_stats<E: Element>(
    r: &dyn crate::StatsReducer,
    count: usize,
    mean: &[E],
    var: &[E],
) -> (usize, Vec<E>, Vec<E>) {
    let f = |v: E| v.to_f64().unwrap();
    let n = count as f64;
    let mut sums: Vec<f64> = std::iter::once(n).chain(mean.iter().map(|&m| f(m) * n)).collect();
    r.sum(&mut sums);
    let total = sums[0];
    let m: Vec<f64> = sums[1..].iter().map(|s| s / total).collect();
    let mut dev: Vec<f64> =
        mean.iter().zip(var).zip(&m).map(|((&mu, &v), &g)| n * (f(v) + (f(mu) - g).powi(2))).collect();
    r.sum(&mut dev);
    let back = |v: f64| E::from_f64(v).unwrap();
    (total as usize, m.into_iter().map(back).collect(), dev.into_iter().map(|d| back(d / total)).collect())
}

/// Per-channel `Σ g` and `Σ g·x̂` summed over every process.
fn global_grad_sums<E: Element>(r: &dyn crate::StatsReducer, sum_g: &[E], sum_gx: &[E]) -> (Vec<E>, Vec<E>) {
    let mut all: Vec<f64> = sum_g.iter().chain(sum_gx).map(|v| v.to_f64().unwrap()).collect();
    r.sum(&mut all);
    let back: Vec<E> = all.into_iter().map(|v| E::from_f64(v).unwrap()).collect();
    let (g, gx) = back.split_at(sum_g.len());
    (g.to_vec(), gx.to_vec())
}

/// Elements per rayon task in the element-wise passes (whole planes).
const TASK_ELEMS: usize = 1 << 14;

/// Whole planes of `hw` elements per element-wise task.
fn planes_per_task(hw: usize) -> usize {
    (TASK_ELEMS / hw.max(1)).max(1)
}

multiversion! {
    /// Consecutive planes of the output, the first of channel `c0` (of `a.len()`):
    /// `y = x·a + shift` per channel, then ReLU when `relu`.
    fn normalize_planes<E: Element>(y: &mut [E], x: &[E], hw: usize, c0: usize, a: &[E], shift: &[E], relu: bool) {
        let mut c = c0;
        for (y, x) in y.chunks_exact_mut(hw).zip(x.chunks_exact(hw)) {
            let (ac, sc) = (a[c], shift[c]);
            if relu {
                y.iter_mut().zip(x).for_each(|(y, &x)| *y = (x * ac + sc).max(E::zero()));
            } else {
                y.iter_mut().zip(x).for_each(|(y, &x)| *y = x * ac + sc);
            }
            c = if c + 1 == a.len() { 0 } else { c + 1 };
        }
    }
}

multiversion! {
    /// Consecutive planes of the input gradient, the first of channel `c0`: per channel
    /// `[k, mg, k1, mu]` of `consts`, `dx += k·(g' − mg) + k1·(x − mu)`, where `g'` is the
    /// gradient the ReLU passed (`g`, or 0 where `x·a + shift ≤ 0` under `relu = Some((a, shift))`).
    fn backward_planes<E: Element>(dx: &mut [E], g: &[E], x: &[E], hw: usize, c0: usize, consts: &[[E; 4]], relu: Option<(&[E], &[E])>) {
        let mut c = c0;
        for ((dx, g), x) in dx.chunks_exact_mut(hw).zip(g.chunks_exact(hw)).zip(x.chunks_exact(hw)) {
            let [k, mg, k1, mu] = consts[c];
            match relu {
                Some((a, s)) => {
                    let (a, s) = (a[c], s[c]);
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
            c = if c + 1 == consts.len() { 0 } else { c + 1 };
        }
    }
}

/// Channels per task of the per-channel reductions: a few tasks per thread, each reading
/// runs of consecutive planes (one per image) rather than one small plane per image.
fn channels_per_task(c: usize) -> usize {
    c.div_ceil(4 * rayon::current_num_threads().max(1)).max(1)
}

multiversion! {
    /// Mean and biased variance of channels `c0..c0 + mean.len()` of `x` (`[N, C, hw]`
    /// flattened), two-pass, each channel's sum taken over the images in order.
    fn moments_block<E: Element>(x: &[E], c: usize, hw: usize, c0: usize, mean: &mut [E], var: &mut [E]) {
        let n = x.len() / (c * hw);
        let cb = mean.len();
        let count = E::from_usize(n * hw).unwrap();
        let run = |i: usize| &x[(i * c + c0) * hw..(i * c + c0 + cb) * hw];
        mean.fill(E::zero());
        for i in 0..n {
            for (m, p) in mean.iter_mut().zip(run(i).chunks_exact(hw)) {
                *m += lane_sum(p);
            }
        }
        mean.iter_mut().for_each(|m| *m /= count);
        var.fill(E::zero());
        for i in 0..n {
            for ((v, &m), p) in var.iter_mut().zip(mean.iter()).zip(run(i).chunks_exact(hw)) {
                *v += lane_sq_dev(p, m);
            }
        }
        var.iter_mut().for_each(|v| *v /= count);
    }
}

multiversion! {
    /// `Σ g'` and `Σ g' · (x − mean)` for channels `c0..c0 + sg.len()`, `g'` the gradient
    /// the ReLU passed (see [`backward_planes`]; `relu` holds all channels' `(a, shift)`).
    #[allow(clippy::too_many_arguments)]
    fn grad_moments_block<E: Element>(x: &[E], g: &[E], c: usize, hw: usize, c0: usize, mean: &[E], relu: Option<(&[E], &[E])>, sg: &mut [E], sgx: &mut [E]) {
        let n = x.len() / (c * hw);
        let cb = sg.len();
        sg.fill(E::zero());
        sgx.fill(E::zero());
        for i in 0..n {
            let r = (i * c + c0) * hw..(i * c + c0 + cb) * hw;
            let planes = g[r.clone()].chunks_exact(hw).zip(x[r].chunks_exact(hw));
            for (j, (gp, xp)) in planes.enumerate() {
                let ch = c0 + j;
                let mask = relu.map(|(a, s)| (a[ch], s[ch]));
                let (a, b) = plane_grad_moments(gp, xp, mean[ch], mask);
                sg[j] += a;
                sgx[j] += b;
            }
        }
    }
}

/// One plane's `Σ g'` and `Σ g' · (x − mean)`, over [`LANES`] running sums.
#[inline(always)]
fn plane_grad_moments<E: Element>(g: &[E], x: &[E], mean: E, mask: Option<(E, E)>) -> (E, E) {
    let (mut sg, mut sgx) = ([E::zero(); LANES], [E::zero(); LANES]);
    let (a, s, masked) = match mask {
        Some((a, s)) => (a, s, true),
        None => (E::zero(), E::zero(), false),
    };
    let pass = |g: E, x: E| if masked && x * a + s <= E::zero() { E::zero() } else { g };
    let (mut gc, mut xc) = (g.chunks_exact(LANES), x.chunks_exact(LANES));
    for (gl, xl) in (&mut gc).zip(&mut xc) {
        for j in 0..LANES {
            let v = pass(gl[j], xl[j]);
            sg[j] += v;
            sgx[j] += v * (xl[j] - mean);
        }
    }
    let mut tail = (E::zero(), E::zero());
    for (&gv, &xv) in gc.remainder().iter().zip(xc.remainder()) {
        let v = pass(gv, xv);
        tail.0 += v;
        tail.1 += v * (xv - mean);
    }
    (sg.iter().copied().sum::<E>() + tail.0, sgx.iter().copied().sum::<E>() + tail.1)
}

/// Per-channel mean and biased variance of `x` (`[N, C, hw]` flattened).
fn channel_stats<E: Element>(x: &[E], c: usize, hw: usize) -> (Vec<E>, Vec<E>) {
    let (mut mean, mut var) = (vec![E::zero(); c], vec![E::zero(); c]);
    let cb = channels_per_task(c);
    mean.par_chunks_mut(cb).zip(var.par_chunks_mut(cb)).enumerate().for_each(|(t, (m, v))| {
        moments_block(x, c, hw, t * cb, m, v);
    });
    (mean, var)
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
    let (mut sg, mut sgx) = (vec![E::zero(); c], vec![E::zero(); c]);
    let cb = channels_per_task(c);
    sg.par_chunks_mut(cb).zip(sgx.par_chunks_mut(cb)).enumerate().for_each(|(t, (a, b))| {
        grad_moments_block(x, g, c, hw, t * cb, mean, relu, a, b);
    });
    sgx.iter_mut().zip(invstd).for_each(|(v, &is)| *v *= is);
    (sg, sgx)
}
