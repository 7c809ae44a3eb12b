//! A linear classification head whose class count is known only at run time (10 for CIFAR-10,
//! 40 attributes for CelebA, whatever an image folder holds): `logits = x·Wᵀ + b` with
//! PyTorch's `nn.Linear` initialisation and names (`fc.weight` `[K, F]`, `fc.bias` `[K]`).
//!
//! dfdx only builds const-shaped parameters into its modules (its module traits cannot describe
//! a run-time shape), so the head's two tensors live outside them, on the model's device. dfdx's
//! own backward pass computes their gradients (they are inputs of its matmul and add); an op
//! on the tape reads each as soon as it is complete and adds it to the head's gradient tensors,
//! on the device, which [`Head::step`] hands to the optimizer.
//!
//! The head's losses live here too: [`Loss`] and [`loss_of`] (cross-entropy or BCE on its logits).

use std::sync::{Arc, Mutex};

use dfdx::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::optim::Optimizer;
use crate::params::{Slot, TensorFn};

/// Which loss a head trains with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Loss {
    /// Softmax cross-entropy.
    Ce,
    /// Per-output sigmoid BCE-with-logits.
    Bce,
}

/// `loss(logits, targets)`, mean over the batch: softmax cross-entropy or per-output BCE.
pub fn loss_of<D: Device<f32>, T: Tape<f32, D>>(
    loss: Loss,
    logits: Matrix<T, D>,
    t: Matrix<NoneTape, D>,
) -> Tensor<Rank0, f32, D, T> {
    match loss {
        Loss::Ce => cross_entropy_with_logits_loss(logits, t),
        Loss::Bce => binary_cross_entropy_with_logits_loss(logits, t),
    }
}

/// Features or logits `[N, M]` with both sizes at run time.
pub type Matrix<T = NoneTape, D = Cpu> = Tensor<(usize, usize), f32, D, T>;

/// The head's accumulated gradients (none before the first backward pass).
#[derive(Debug)]
struct Grads<D: Storage<f32>> {
    weight: Option<Matrix<NoneTape, D>>,
    bias: Option<Tensor<(usize,), f32, D>>,
}

/// `nn.Linear(F, K)` with `K` and `F` at run time, on device `D`.
#[derive(Debug, Clone)]
pub struct Head<D: Storage<f32> = Cpu> {
    /// `[K, F]`.
    pub weight: Matrix<NoneTape, D>,
    /// `[K]`.
    pub bias: Tensor<(usize,), f32, D>,
    grads: Arc<Mutex<Grads<D>>>,
}

/// A device error as the trainer's error.
fn dev_err(e: impl std::fmt::Debug) -> crate::Error {
    crate::Error::Model(siamlab_model::OpError::device(e))
}

/// Adds `g` to `acc` (`acc = g` the first time).
fn accumulate<S: Shape, D: Device<f32>>(
    acc: &mut Option<Tensor<S, f32, D>>,
    g: Tensor<S, f32, D>,
) -> std::result::Result<(), D::Err> {
    match acc {
        Some(a) => a.try_axpy(1.0f32, &g, 1.0f32),
        None => {
            *acc = Some(g);
            Ok(())
        }
    }
}

impl<D: Device<f32>> Head<D> {
    /// A head `features → classes` on `dev`, initialised like PyTorch (U(-1/√F, 1/√F) for
    /// weight and bias), drawn from `seed` (the same values on every device).
    pub fn new(features: usize, classes: usize, seed: u64, dev: &D) -> Result<Self> {
        let bound = 1.0 / (features as f32).sqrt();
        let mut state = seed ^ 0x4EAD_5EED;
        let weight: Vec<f32> = (0..classes * features).map(|_| uniform(&mut state, bound)).collect();
        let bias: Vec<f32> = (0..classes).map(|_| uniform(&mut state, bound)).collect();
        Ok(Head {
            weight: dev.try_tensor_from_vec(weight, (classes, features)).map_err(dev_err)?,
            bias: dev.try_tensor_from_vec(bias, (classes,)).map_err(dev_err)?,
            grads: Arc::new(Mutex::new(Grads { weight: None, bias: None })),
        })
    }

    /// Number of classes.
    pub fn classes(&self) -> usize {
        self.bias.shape().0
    }

    /// Logits `[N, K]` of features `[N, F]` (dfdx's matmul on the head's device); with a tape,
    /// the input gradient flows through dfdx and the backward pass also adds the weight and
    /// bias gradients to the head's own, on the device.
    pub fn forward<T: Tape<f32, D>>(&self, x: Matrix<T, D>) -> Result<Matrix<T, D>> {
        let (n, f) = *x.shape();
        let features = self.weight.shape().1;
        if f != features {
            return Err(crate::Error::config(format!("head expects {features} features, got {f}")));
        }
        let k = self.classes();
        let (w, mut wtape) = self.weight.retaped::<T>().split_tape();
        let (b, mut btape) = self.bias.retaped::<T>().split_tape();
        if T::OWNS_TAPE {
            // Added before the ops that use `w` and `b`: runs after their backward passes,
            // once the gradients are complete.
            let (wg, bg) = (w.ghost(), b.ghost());
            let grads = self.grads.clone();
            wtape.add_backward_op(move |g| {
                g.try_alloc_for(&wg)?;
                let mut acc = grads.lock().unwrap_or_else(|e| e.into_inner());
                accumulate(&mut acc.weight, g.get(&wg))
            });
            let grads = self.grads.clone();
            btape.add_backward_op(move |g| {
                g.try_alloc_for(&bg)?;
                let mut acc = grads.lock().unwrap_or_else(|e| e.into_inner());
                accumulate(&mut acc.bias, g.get(&bg))
            });
        }
        let w = w.put_tape(wtape).try_permute::<(usize, usize), Axes2<1, 0>>().map_err(dev_err)?;
        let b = b.put_tape(btape).try_broadcast_like::<_, Axis<0>>(&(n, k)).map_err(dev_err)?;
        x.try_matmul(w).and_then(|y| y.try_add(b)).map_err(dev_err)
    }

    /// Walks `weight` and `bias` as `{prefix}weight`, `{prefix}bias` (host copies of the
    /// values, written back when `f` returns `true`).
    pub fn walk(&mut self, prefix: &str, f: &mut TensorFn<'_>) -> Result<()> {
        let name = format!("{prefix}weight");
        let mut values = self.weight.as_vec();
        if f(Slot { name: &name, shape: &[self.classes(), self.weight.shape().1], trainable: true }, &mut values)? {
            self.weight.copy_from(&values);
        }
        let name = format!("{prefix}bias");
        let mut values = self.bias.as_vec();
        if f(Slot { name: &name, shape: &[self.classes()], trainable: true }, &mut values)? {
            self.bias.copy_from(&values);
        }
        Ok(())
    }

    /// Applies the accumulated gradients with `opt` at learning rate `lr` (slots `slot` and
    /// `slot + 1`, the walking order), on the device; returns the next free slot.
    pub fn step(&mut self, opt: &mut Optimizer, lr: f64, slot: usize) -> Result<usize> {
        let (gw, gb) = {
            let mut g = self.grads.lock().unwrap_or_else(|e| e.into_inner());
            (g.weight.take(), g.bias.take())
        };
        let dev = self.weight.device().clone();
        let gw = match gw {
            Some(g) => g,
            None => dev.try_zeros_like(self.weight.shape()).map_err(dev_err)?,
        };
        let gb = match gb {
            Some(g) => g,
            None => dev.try_zeros_like(self.bias.shape()).map_err(dev_err)?,
        };
        opt.update_with(slot, lr, &mut self.weight, gw)?;
        opt.update_with(slot + 1, lr, &mut self.bias, gb)?;
        Ok(slot + 2)
    }

    /// Forgets the accumulated gradients.
    pub fn zero_grads(&self) {
        let mut g = self.grads.lock().unwrap_or_else(|e| e.into_inner());
        g.weight = None;
        g.bias = None;
    }

    /// Replaces the accumulated gradients with `weight` (`[K, F]`) and `bias` (`[K]`) from the
    /// host (a data-parallel run's averages).
    pub fn set_grads_host(&self, weight: &[f32], bias: &[f32]) -> Result<()> {
        let (k, f) = (self.classes(), self.weight.shape().1);
        let dev = self.weight.device().clone();
        let w = dev.try_tensor_from_vec(weight.to_vec(), (k, f)).map_err(dev_err)?;
        let b = dev.try_tensor_from_vec(bias.to_vec(), (k,)).map_err(dev_err)?;
        let mut g = self.grads.lock().unwrap_or_else(|e| e.into_inner());
        g.weight = Some(w);
        g.bias = Some(b);
        Ok(())
    }

    /// The accumulated gradients on the host (zeros when none): weight `[K, F]`, bias `[K]`.
    pub fn grads_host(&self) -> (Vec<f32>, Vec<f32>) {
        let g = self.grads.lock().unwrap_or_else(|e| e.into_inner());
        let (k, f) = (self.classes(), self.weight.shape().1);
        (
            g.weight.as_ref().map_or(vec![0.0; k * f], |t| t.as_vec()),
            g.bias.as_ref().map_or(vec![0.0; k], |t| t.as_vec()),
        )
    }
}

/// A uniform draw in `[-bound, bound)` from a splitmix64 stream.
fn uniform(state: &mut u64, bound: f32) -> f32 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    let u = (z >> 40) as f32 / (1u64 << 24) as f32;
    (2.0 * u - 1.0) * bound
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gradients_match_finite_differences() {
        let dev = Cpu::default();
        let head = Head::new(3, 2, 1, &dev).unwrap();
        let xv = vec![0.5f32, -1.0, 2.0, 1.5, 0.25, -0.75];
        let loss_of = |head: &Head| {
            let x: Matrix = dev.tensor_from_vec(xv.clone(), (2, 3));
            head.forward(x).unwrap().square().sum::<Rank0, _>().array()
        };
        let x: Matrix = dev.tensor_from_vec(xv.clone(), (2, 3));
        let g = head.forward(x.leaky_trace()).unwrap().square().sum::<Rank0, _>().backward();
        let gx = g.get(&x).as_vec();
        let (gw, gb) = head.grads_host();
        let (w, b) = (head.weight.as_vec(), head.bias.as_vec());
        let eps = 1e-2;
        // Every weight and every bias by central differences (a bias gradient that is lost, or
        // summed over the wrong axis, fails here).
        for (i, &g) in gw.iter().chain(&gb).enumerate() {
            let nudged = |d: f32| {
                let mut h = head.clone();
                if i < w.len() {
                    let mut v = w.clone();
                    v[i] += d;
                    h.weight = dev.tensor_from_vec(v, (2, 3));
                } else {
                    let mut v = b.clone();
                    v[i - w.len()] += d;
                    h.bias = dev.tensor_from_vec(v, (2,));
                }
                loss_of(&h)
            };
            let fd = (nudged(eps) - nudged(-eps)) / (2.0 * eps);
            assert!((fd - g).abs() < 1e-2 * (1.0 + fd.abs()), "parameter {i}: {fd} vs {g}");
        }
        assert_eq!(gb.len(), 2);
        // d/db of Σ(xWᵀ+b)² = 2 Σ_rows (xWᵀ+b); d/dx = 2 (xWᵀ+b) W
        let y = head.forward(dev.tensor_from_vec(xv.clone(), (2, 3))).unwrap().as_vec();
        for c in 0..2 {
            assert!((gb[c] - 2.0 * (y[c] + y[2 + c])).abs() < 1e-4);
        }
        for i in 0..2 {
            for j in 0..3 {
                let want: f32 = (0..2).map(|c| 2.0 * y[i * 2 + c] * w[c * 3 + j]).sum();
                assert!((gx[i * 3 + j] - want).abs() < 1e-4);
            }
        }
    }

    /// The head's gradients accumulate over backward passes (also when dfdx's gradients are
    /// restricted to other leaves, as the backbone's are) until zeroed.
    #[test]
    fn head_gradients_accumulate_until_zeroed() {
        use dfdx::nn::ZeroGrads;
        let dev = Cpu::default();
        let head = Head::new(3, 2, 7, &dev).unwrap();
        let other: Tensor<Rank1<2>, f32, Cpu> = dev.zeros();
        let x: Matrix = dev.tensor_from_vec(vec![1.0, 2.0, 3.0], (1, 3));
        for _ in 0..2 {
            let grads = other.alloc_grads();
            let _ = head.forward(x.clone().traced(grads)).unwrap().sum::<Rank0, _>().backward();
        }
        assert_eq!(head.grads_host(), (vec![2.0, 4.0, 6.0, 2.0, 4.0, 6.0], vec![2.0, 2.0]));
        head.zero_grads();
        assert_eq!(head.grads_host(), (vec![0.0; 6], vec![0.0; 2]));
    }

    /// The walk names the head's tensors as PyTorch does and writes values back.
    #[test]
    fn walked_as_fc_weight_and_fc_bias() {
        let mut head = Head::new(4, 3, 0, &Cpu::default()).unwrap();
        let mut seen = Vec::new();
        head.walk("fc.", &mut |s, v| {
            seen.push((s.name.to_string(), s.shape.to_vec(), v.len(), s.trainable));
            v.fill(1.5);
            Ok(true)
        })
        .unwrap();
        assert_eq!(seen, [("fc.weight".into(), vec![3, 4], 12, true), ("fc.bias".into(), vec![3], 3, true)]);
        assert_eq!(head.bias.as_vec(), [1.5; 3]);
    }
}
