//! Training-step benchmarks on random data, on any device: what `siamlab bench simsiam` and
//! `siamlab bench finetune` run (and `benches/run.sh` beside `benches/peer_train.py`, and
//! `scripts/gpu-smoke.sh` on a GPU).

use std::time::Instant;

use dfdx::prelude::{Const, Cpu, SampleTensor};

use crate::device::DeviceSpec;
use crate::error::{Error, Result};
use crate::head::Loss;
use crate::net::{build_cls, build_ssl, Images};
use crate::optim::{OptimConfig, Optimizer};

/// A SimSiam step benchmark.
#[derive(Debug, Clone)]
pub struct SimSiamBench {
    /// Backbone name.
    pub backbone: String,
    /// Where it ran.
    pub device: DeviceSpec,
    /// Pairs per step.
    pub batch: usize,
    /// Input size.
    pub image_size: usize,
    /// Projection dim.
    pub proj_dim: usize,
    /// Optimizer steps timed.
    pub steps: usize,
    /// Steps run before timing (allocations, kernel compilation).
    pub warmup: usize,
}

/// What it measured.
#[derive(Debug, Clone, PartialEq)]
pub struct SimSiamResult {
    /// Loss of every step (warm-up included), in order.
    pub losses: Vec<f32>,
    /// Timed pairs per second.
    pub pairs_per_s: f64,
    /// Seconds per timed step.
    pub s_per_step: f64,
}

impl SimSiamResult {
    /// `true` when every loss is finite and the mean of the last tenth of the steps is below
    /// the mean of the first tenth (the net fits its fixed random batch).
    pub fn decreasing(&self) -> bool {
        decreasing(&self.losses)
    }
}

/// `true` when every loss is finite and the mean of the last tenth of `losses` (at least two)
/// is below the mean of the first tenth.
fn decreasing(losses: &[f32]) -> bool {
    let n = losses.len();
    if n < 4 || losses.iter().any(|l| !l.is_finite()) {
        return false;
    }
    let k = (n / 10).max(2);
    let mean = |s: &[f32]| s.iter().map(|&v| v as f64).sum::<f64>() / s.len() as f64;
    mean(&losses[n - k..]) < mean(&losses[..k])
}

impl SimSiamBench {
    /// Runs `warmup + steps` SimSiam steps (two views of one fixed random batch, Adam at 1e-3,
    /// weight decay 1e-5, as `benches/peer_train.py`); `on_step(step, loss)` sees
    /// every loss. Reading each step's loss waits for the device, so the timing is honest.
    pub fn run(&self, on_step: &mut dyn FnMut(usize, f32)) -> Result<SimSiamResult> {
        let mut net = build_ssl(self.device, 0, &self.backbone, self.image_size, self.proj_dim)?;
        let (n, s) = (self.batch, self.image_size);
        if n < 2 {
            return Err(Error::config("--batch must be at least 2 (BatchNorm needs two images)"));
        }
        let x1 = normal(1, (n, s));
        let x2 = normal(2, (n, s));
        let mut opt = Optimizer::new(OptimConfig::adam(1e-5));
        let mut losses = Vec::with_capacity(self.warmup + self.steps);
        let mut start = Instant::now();
        for step in 0..self.warmup + self.steps {
            if step == self.warmup {
                start = Instant::now();
            }
            let v1 = Images { data: &x1, n, h: s, w: s };
            let v2 = Images { data: &x2, n, h: s, w: s };
            let stats = net.train_micro(v1, v2, 1.0)?;
            net.step(&mut opt, 1e-3)?;
            losses.push(stats.loss);
            on_step(step, stats.loss);
            if !stats.loss.is_finite() {
                return Err(Error::NonFinite { value: stats.loss, epoch: 0, step: step as u64 });
            }
        }
        let secs = start.elapsed().as_secs_f64();
        let steps = self.steps.max(1) as f64;
        Ok(SimSiamResult { losses, pairs_per_s: n as f64 * steps / secs, s_per_step: secs / steps })
    }
}

/// A finetuning step benchmark: the backbone and a linear head of `classes` outputs
/// ([`build_cls`], as `siamlab train finetune` builds it), one view, softmax cross-entropy.
#[derive(Debug, Clone)]
pub struct FinetuneBench {
    /// Backbone name.
    pub backbone: String,
    /// Where it ran.
    pub device: DeviceSpec,
    /// Images per step.
    pub batch: usize,
    /// Input size.
    pub image_size: usize,
    /// Classes of the head.
    pub classes: usize,
    /// Optimizer steps timed.
    pub steps: usize,
    /// Steps run before timing.
    pub warmup: usize,
}

/// What a [`FinetuneBench`] measured.
#[derive(Debug, Clone, PartialEq)]
pub struct FinetuneResult {
    /// Loss of every step (warm-up included), in order.
    pub losses: Vec<f32>,
    /// Timed images per second.
    pub images_per_s: f64,
    /// Seconds per timed step.
    pub s_per_step: f64,
}

impl FinetuneResult {
    /// `true` when every loss is finite and falls over the run (the net memorises the labels
    /// of its fixed random batch), as [`SimSiamResult::decreasing`].
    pub fn decreasing(&self) -> bool {
        decreasing(&self.losses)
    }
}

impl FinetuneBench {
    /// Runs `warmup + steps` finetuning steps on one fixed random batch with fixed random
    /// labels (Adam at 1e-3, weight decay 1e-5, as `benches/peer_train.py ... finetune`);
    /// `on_step(step, loss)` sees every loss. Reading each step's loss waits for the device.
    pub fn run(&self, on_step: &mut dyn FnMut(usize, f32)) -> Result<FinetuneResult> {
        let (n, s, k) = (self.batch, self.image_size, self.classes);
        if n < 2 {
            return Err(Error::config("--batch must be at least 2 (BatchNorm needs two images)"));
        }
        if k < 2 {
            return Err(Error::config("--classes must be at least 2"));
        }
        let mut net = build_cls(self.device, 0, &self.backbone, s, k)?;
        let x = normal(1, (n, s));
        // Labels 0..k in a fixed scrambled order, one-hot.
        let mut targets = vec![0f32; n * k];
        for i in 0..n {
            targets[i * k + (i * 7 + 3) % k] = 1.0;
        }
        let mut opt = Optimizer::new(OptimConfig::adam(1e-5));
        let mut losses = Vec::with_capacity(self.warmup + self.steps);
        let mut start = Instant::now();
        for step in 0..self.warmup + self.steps {
            if step == self.warmup {
                start = Instant::now();
            }
            let images = Images { data: &x, n, h: s, w: s };
            let loss = net.train_micro(images, Loss::Ce, targets.clone(), 1.0)?;
            net.step(&mut opt, 1e-3)?;
            losses.push(loss);
            on_step(step, loss);
            if !loss.is_finite() {
                return Err(Error::NonFinite { value: loss, epoch: 0, step: step as u64 });
            }
        }
        let secs = start.elapsed().as_secs_f64();
        let steps = self.steps.max(1) as f64;
        Ok(FinetuneResult { losses, images_per_s: n as f64 * steps / secs, s_per_step: secs / steps })
    }
}

/// `[n, 3, s, s]` standard-normal values drawn by dfdx's seeded CPU generator.
fn normal(seed: u64, (n, s): (usize, usize)) -> Vec<f32> {
    Cpu::seed_from_u64(seed).sample_normal_like(&(n, Const::<3>, s, s)).as_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tiny_simsiam_fits_its_random_batch_and_reports_speed() {
        let b = SimSiamBench {
            backbone: "resnet18_tiny".into(),
            device: DeviceSpec::Cpu,
            batch: 8,
            image_size: 16,
            proj_dim: 128,
            steps: 20,
            warmup: 1,
        };
        let mut seen = 0;
        let r = b.run(&mut |_, _| seen += 1).unwrap();
        assert_eq!((seen, r.losses.len()), (21, 21));
        assert!(r.pairs_per_s > 0.0 && r.s_per_step > 0.0);
        assert!(r.decreasing(), "{:?}", r.losses);
        let flat = SimSiamResult { losses: vec![-0.5; 20], ..r.clone() };
        assert!(!flat.decreasing());
        let nan = SimSiamResult { losses: vec![-0.1, f32::NAN, -0.3, -0.4, -0.9], ..r };
        assert!(!nan.decreasing());
    }

    #[test]
    fn a_tiny_finetuning_net_fits_its_random_labels_and_reports_speed() {
        let b = FinetuneBench {
            backbone: "resnet18_tiny".into(),
            device: DeviceSpec::Cpu,
            batch: 8,
            image_size: 16,
            classes: 10,
            steps: 20,
            warmup: 1,
        };
        let mut seen = Vec::new();
        let r = b.run(&mut |step, loss| seen.push((step, loss))).unwrap();
        assert_eq!(seen.len(), 21);
        assert_eq!(seen.iter().map(|&(s, _)| s).collect::<Vec<_>>(), (0..21).collect::<Vec<_>>());
        assert_eq!(seen.iter().map(|&(_, l)| l).collect::<Vec<_>>(), r.losses);
        assert!(r.images_per_s > 0.0 && r.s_per_step > 0.0);
        // Cross-entropy over 10 classes starts near ln 10 and falls as the labels are learnt.
        assert!((r.losses[0] - 10f32.ln()).abs() < 1.0, "{:?}", r.losses);
        assert!(r.decreasing(), "{:?}", r.losses);
        assert!(r.losses[20] < 0.5 * r.losses[0], "{:?}", r.losses);
        let rising = FinetuneResult { losses: (0..20).map(|i| i as f32).collect(), ..r.clone() };
        assert!(!rising.decreasing());
    }

    #[test]
    fn the_finetune_bench_refuses_a_batch_of_one_and_a_single_class() {
        let mut b = FinetuneBench {
            backbone: "resnet18_tiny".into(),
            device: DeviceSpec::Cpu,
            batch: 1,
            image_size: 16,
            classes: 10,
            steps: 1,
            warmup: 0,
        };
        assert!(b.run(&mut |_, _| {}).unwrap_err().to_string().contains("--batch"));
        (b.batch, b.classes) = (4, 1);
        assert!(b.run(&mut |_, _| {}).unwrap_err().to_string().contains("--classes"));
    }
}
