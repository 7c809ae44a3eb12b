//! A linear classification head whose class count is known only at run time (10 for CIFAR-10,
//! 40 attributes for CelebA, whatever an image folder holds): `logits = x·Wᵀ + b` with
//! PyTorch's `nn.Linear` initialisation and names (`fc.weight` `[K, F]`, `fc.bias` `[K]`).
//!
//! dfdx only builds const-shaped parameters into its modules, so the head is a custom op on
//! the tape: its backward pass writes the input gradient into dfdx's gradients and the
//! weight and bias gradients into the head's own buffers, which the optimizer reads.

use std::sync::{Arc, Mutex};

use dfdx::prelude::*;

use crate::error::Result;
use crate::params::{Slot, TensorFn};

/// Features or logits `[N, M]` with both sizes at run time.
pub type Matrix<T = NoneTape, D = Cpu> = Tensor<(usize, usize), f32, D, T>;

#[derive(Debug, Default)]
struct Grads {
    weight: Vec<f32>,
    bias: Vec<f32>,
}

/// `nn.Linear(F, K)` with `K` and `F` at run time.
#[derive(Debug, Clone)]
pub struct Head {
    features: usize,
    classes: usize,
    /// `[K, F]`, row-major.
    pub weight: Vec<f32>,
    /// `[K]`.
    pub bias: Vec<f32>,
    grads: Arc<Mutex<Grads>>,
}

impl Head {
    /// A head `features → classes`, initialised like PyTorch (U(-1/√F, 1/√F) for weight and
    /// bias), drawn from `seed`.
    pub fn new(features: usize, classes: usize, seed: u64) -> Self {
        let bound = 1.0 / (features as f32).sqrt();
        let mut state = seed ^ 0x4EAD_5EED;
        let weight: Vec<f32> = (0..classes * features).map(|_| uniform(&mut state, bound)).collect();
        let bias: Vec<f32> = (0..classes).map(|_| uniform(&mut state, bound)).collect();
        let grads = Grads { weight: vec![0.0; weight.len()], bias: vec![0.0; classes] };
        Head { features, classes, weight, bias, grads: Arc::new(Mutex::new(grads)) }
    }

    /// Number of classes.
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// Number of input features.
    pub fn features(&self) -> usize {
        self.features
    }

    /// Logits `[N, K]` of features `[N, F]` on any device (dfdx's matmul); with a tape, the
    /// input gradient flows through dfdx and the backward pass also accumulates the head's
    /// own weight and bias gradients (computed on the host: the head is small).
    pub fn forward<D: Device<f32>, T: Tape<f32, D>>(&self, x: Matrix<T, D>) -> Result<Matrix<T, D>> {
        let (n, f) = *x.shape();
        if f != self.features {
            return Err(crate::Error::config(format!("head expects {} features, got {f}", self.features)));
        }
        let k = self.classes;
        let dev = x.device().clone();
        let dev_err = siamlab_model::OpError::device;
        let detached = x.retaped::<NoneTape>();
        let w = dev.try_tensor_from_vec(self.weight.clone(), (k, f)).map_err(dev_err)?;
        let b = dev.try_tensor_from_vec(self.bias.clone(), (k,)).map_err(dev_err)?;
        let y = x
            .try_matmul(w.try_permute::<(usize, usize), Axes2<1, 0>>().map_err(dev_err)?)
            .and_then(|y| y.try_add(b.try_broadcast_like::<_, Axis<0>>(&(n, k))?))
            .map_err(dev_err)?;
        let (y, mut tape) = y.split_tape();
        if T::OWNS_TAPE {
            // Added after `y`'s own backward op: runs first, once `y`'s gradient is complete.
            let yg = y.ghost();
            let grads = self.grads.clone();
            tape.add_backward_op(move |g| {
                g.try_alloc_for(&yg)?;
                let gy = g.get(&yg).as_vec();
                let xs = detached.as_vec();
                let mut hg = grads.lock().unwrap_or_else(|e| e.into_inner());
                let Grads { weight: gw, bias: gb } = &mut *hg;
                for i in 0..n {
                    let xi = &xs[i * f..(i + 1) * f];
                    for c in 0..k {
                        let s = gy[i * k + c];
                        gb[c] += s;
                        for (a, x) in gw[c * f..(c + 1) * f].iter_mut().zip(xi) {
                            *a += s * x;
                        }
                    }
                }
                Ok(())
            });
        }
        Ok(y.put_tape(tape))
    }

    /// Walks `weight` and `bias` as `{prefix}weight`, `{prefix}bias`, with their gradients
    /// when `with_grads`.
    pub fn walk(&mut self, prefix: &str, with_grads: bool, f: &mut TensorFn<'_>) -> Result<()> {
        let mut guard = self.grads.lock().unwrap_or_else(|e| e.into_inner());
        let Grads { weight: gw, bias: gb } = &mut *guard;
        let name = format!("{prefix}weight");
        let slot = Slot { name: &name, shape: &[self.classes, self.features], trainable: true };
        f(slot, &mut self.weight, with_grads.then_some(gw))?;
        let name = format!("{prefix}bias");
        let slot = Slot { name: &name, shape: &[self.classes], trainable: true };
        f(slot, &mut self.bias, with_grads.then_some(gb))?;
        Ok(())
    }

    /// Sets the gradients to zero.
    pub fn zero_grads(&self) {
        let mut g = self.grads.lock().unwrap_or_else(|e| e.into_inner());
        g.weight.fill(0.0);
        g.bias.fill(0.0);
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
        let head = Head::new(3, 2, 1);
        let xv = vec![0.5f32, -1.0, 2.0, 1.5, 0.25, -0.75];
        let loss_of = |head: &Head| {
            let x: Matrix = dev.tensor_from_vec(xv.clone(), (2, 3));
            head.forward(x).unwrap().square().sum::<Rank0, _>().array()
        };
        let x: Matrix = dev.tensor_from_vec(xv.clone(), (2, 3));
        let loss = head.forward(x.leaky_trace()).unwrap().square().sum::<Rank0, _>();
        let g = loss.backward();
        let gx = g.get(&x).as_vec();
        let gw = head.grads.lock().unwrap().weight.clone();
        let eps = 1e-2;
        for (i, &g) in gw.iter().enumerate() {
            let mut hp = head.clone();
            hp.weight[i] += eps;
            let mut hm = head.clone();
            hm.weight[i] -= eps;
            let fd = (loss_of(&hp) - loss_of(&hm)) / (2.0 * eps);
            assert!((fd - g).abs() < 1e-2 * (1.0 + fd.abs()), "w{i}: {fd} vs {g}");
        }
        // d/dx of Σ(xWᵀ+b)² = 2 (xWᵀ+b) W
        let y = head.forward(dev.tensor_from_vec(xv.clone(), (2, 3))).unwrap().as_vec();
        for i in 0..2 {
            for j in 0..3 {
                let want: f32 = (0..2).map(|c| 2.0 * y[i * 2 + c] * head.weight[c * 3 + j]).sum();
                assert!((gx[i * 3 + j] - want).abs() < 1e-4);
            }
        }
        head.zero_grads();
        assert!(head.grads.lock().unwrap().weight.iter().all(|&v| v == 0.0));
    }
}
