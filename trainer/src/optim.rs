//! Adam and SGD with momentum, PyTorch's update rules, with state that a checkpoint can hold
//! (dfdx's own optimizers keep their moments private, so a run could not resume exactly).
//!
//! - **Adam** (`torch.optim.Adam`, L2 weight decay): `g += wd·p; m = β₁m + (1-β₁)g;
//!   v = β₂v + (1-β₂)g²; p -= lr · (m / (1-β₁ᵗ)) / (√(v / (1-β₂ᵗ)) + ε)`.
//! - **SGD** (`torch.optim.SGD`, momentum, dampening 0): `g += wd·p; b = μb + g` (`b = g` at
//!   the first step); `p -= lr·b`.

use serde::{Deserialize, Serialize};

/// Which optimizer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// Adam.
    Adam,
    /// SGD with momentum.
    Sgd,
}

impl std::str::FromStr for OptimizerKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "adam" => Ok(OptimizerKind::Adam),
            "sgd" => Ok(OptimizerKind::Sgd),
            _ => Err(format!("unknown optimizer {s:?} (adam or sgd)")),
        }
    }
}

/// Hyperparameters besides the learning rate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct OptimConfig {
    /// Adam or SGD.
    pub kind: OptimizerKind,
    /// L2 weight decay.
    pub weight_decay: f64,
    /// SGD momentum.
    pub momentum: f64,
    /// Adam β₁, β₂.
    pub betas: [f64; 2],
    /// Adam ε.
    pub eps: f64,
}

impl OptimConfig {
    /// Adam with PyTorch's defaults and weight decay `wd`.
    pub fn adam(wd: f64) -> Self {
        OptimConfig { kind: OptimizerKind::Adam, weight_decay: wd, momentum: 0.0, betas: [0.9, 0.999], eps: 1e-8 }
    }
    /// SGD with momentum 0.9 and weight decay `wd`.
    pub fn sgd(wd: f64) -> Self {
        OptimConfig { kind: OptimizerKind::Sgd, weight_decay: wd, momentum: 0.9, betas: [0.9, 0.999], eps: 1e-8 }
    }
}

/// An optimizer and its state: one slot per trainable tensor, in visiting order.
#[derive(Debug, Clone)]
pub struct Optimizer {
    /// Hyperparameters.
    pub cfg: OptimConfig,
    /// Steps taken.
    pub t: u64,
    /// Per tensor: Adam's `exp_avg` or SGD's `momentum_buffer` (empty until first used).
    pub first: Vec<Vec<f32>>,
    /// Per tensor: Adam's `exp_avg_sq` (empty for SGD).
    pub second: Vec<Vec<f32>>,
}

impl Optimizer {
    /// A fresh optimizer.
    pub fn new(cfg: OptimConfig) -> Self {
        Optimizer { cfg, t: 0, first: Vec::new(), second: Vec::new() }
    }

    /// Starts a step: call once, then [`update`](Self::update) for every trainable tensor.
    pub fn begin_step(&mut self) {
        self.t += 1;
    }

    /// Updates tensor number `slot` in place from its gradient, at learning rate `lr`.
    pub fn update(&mut self, slot: usize, lr: f64, p: &mut [f32], g: &[f32]) {
        if self.first.len() <= slot {
            self.first.resize(slot + 1, Vec::new());
            self.second.resize(slot + 1, Vec::new());
        }
        let wd = self.cfg.weight_decay as f32;
        let lr32 = lr as f32;
        match self.cfg.kind {
            OptimizerKind::Adam => {
                let m = &mut self.first[slot];
                let v = &mut self.second[slot];
                if m.len() != p.len() {
                    *m = vec![0.0; p.len()];
                    *v = vec![0.0; p.len()];
                }
                let [b1, b2] = self.cfg.betas;
                let t = self.t.min(i32::MAX as u64) as i32;
                let c1 = 1.0 - b1.powi(t);
                let c2 = 1.0 - b2.powi(t);
                let step = (lr / c1) as f32;
                let c2_sqrt = c2.sqrt() as f32;
                let (b1, b2, eps) = (b1 as f32, b2 as f32, self.cfg.eps as f32);
                for i in 0..p.len() {
                    let gi = g[i] + wd * p[i];
                    m[i] = b1 * m[i] + (1.0 - b1) * gi;
                    v[i] = b2 * v[i] + (1.0 - b2) * gi * gi;
                    p[i] -= step * m[i] / (v[i].sqrt() / c2_sqrt + eps);
                }
            }
            OptimizerKind::Sgd => {
                let b = &mut self.first[slot];
                let mu = self.cfg.momentum as f32;
                if b.len() != p.len() {
                    *b = g.iter().zip(p.iter()).map(|(&g, &p)| g + wd * p).collect();
                } else {
                    for i in 0..p.len() {
                        b[i] = mu * b[i] + g[i] + wd * p[i];
                    }
                }
                for i in 0..p.len() {
                    p[i] -= lr32 * b[i];
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values from `torch.optim.Adam([p], lr=0.1, weight_decay=0.01)` with p = [1, -2],
    /// gradient [0.5, 0.25] at both steps.
    #[test]
    fn adam_matches_pytorch_rule() {
        let mut o = Optimizer::new(OptimConfig::adam(0.01));
        let mut p = [1.0f32, -2.0];
        for _ in 0..2 {
            o.begin_step();
            o.update(0, 0.1, &mut p, &[0.5, 0.25]);
        }
        // torch 2.x prints [0.8000051975250244, -2.19998836517334] for this loop.
        assert!((p[0] - 0.800_005_2).abs() < 2e-6, "{p:?}");
        assert!((p[1] + 2.199_988_4).abs() < 2e-6, "{p:?}");
    }

    #[test]
    fn sgd_momentum_matches_pytorch_rule() {
        let mut o = Optimizer::new(OptimConfig::sgd(0.0));
        let mut p = [1.0f32];
        for _ in 0..3 {
            o.begin_step();
            o.update(0, 0.1, &mut p, &[1.0]);
        }
        // buffers 1, 1.9, 2.71 → p = 1 - 0.1·(1 + 1.9 + 2.71); torch.optim.SGD gives 0.4389999806880951
        assert!((p[0] - (1.0 - 0.561)).abs() < 1e-6, "{p:?}");
    }
}
