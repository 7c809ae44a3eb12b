//! Learning-rate schedule: linear warmup, then cosine decay to zero, evaluated per optimizer
//! step. Its length is exact: an epoch of `b` batches with accumulation `a` has `⌈b / a⌉`
//! optimizer steps (a short last group is stepped too), so `epochs · ⌈b / a⌉` steps in all and
//! the last step runs at the schedule's last value (the SimSiam seed code counted one step too
//! many per epoch). The official SimSiam code sets its cosine once per epoch instead
//! ([`Schedule::epoch_steps`]).

use serde::{Deserialize, Serialize};

/// Optimizer steps per epoch for `batches` batches and accumulation `accum`.
pub fn steps_per_epoch(batches: usize, accum: usize) -> u64 {
    batches.div_ceil(accum.max(1)) as u64
}

/// The micro-batches that make up the optimizer step `micro / accum` of an epoch of `batches`
/// batches: `accum`, or fewer for the last group.
pub fn group_len(micro: usize, batches: usize, accum: usize) -> usize {
    let accum = accum.max(1);
    let start = micro / accum * accum;
    accum.min(batches - start)
}

/// A learning-rate schedule over `total` optimizer steps.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    /// Peak learning rate.
    pub base_lr: f64,
    /// Steps of linear warmup from `base_lr / warmup` to `base_lr`.
    pub warmup: u64,
    /// All optimizer steps.
    pub total: u64,
    /// Cosine decay after warmup (`false`: constant).
    pub cosine: bool,
    /// 0: the cosine moves every step. `n`: it moves once per epoch of `n` steps, as the
    /// official SimSiam code sets it (`lr · ½(1 + cos(π·epoch/epochs))`: the first epoch at the
    /// full rate, the last at the rate of epoch `epochs − 1`). Absent from older `config.json`s: 0.
    #[serde(default)]
    pub epoch_steps: u64,
}

impl Schedule {
    /// The learning rate of optimizer step `step` (0-based).
    pub fn lr(&self, step: u64) -> f64 {
        if step < self.warmup {
            return self.base_lr * (step + 1) as f64 / self.warmup as f64;
        }
        if !self.cosine {
            return self.base_lr;
        }
        let span = self.total.saturating_sub(self.warmup).max(1) as f64;
        let mut done = step - self.warmup;
        if self.epoch_steps > 0 {
            done -= done % self.epoch_steps;
        }
        let t = done as f64 / span;
        self.base_lr * 0.5 * (1.0 + (std::f64::consts::PI * t.min(1.0)).cos())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_length_with_a_short_last_group() {
        // 10 batches, accumulation 4: groups of 4, 4, 2.
        assert_eq!(steps_per_epoch(10, 4), 3);
        assert_eq!((0..10).map(|m| group_len(m, 10, 4)).collect::<Vec<_>>(), [4, 4, 4, 4, 4, 4, 4, 4, 2, 2]);
        assert_eq!(steps_per_epoch(8, 8), 1);
        assert_eq!(steps_per_epoch(7, 1), 7);
    }

    #[test]
    fn warmup_then_cosine_to_zero() {
        let s = Schedule { base_lr: 1.0, warmup: 2, total: 6, cosine: true, epoch_steps: 0 };
        let lrs: Vec<f64> = (0..6).map(|i| s.lr(i)).collect();
        assert_eq!(lrs[0], 0.5);
        assert_eq!(lrs[1], 1.0);
        assert_eq!(lrs[2], 1.0);
        assert!((lrs[4] - 0.5).abs() < 1e-12);
        assert!(lrs[5] < 0.15 && lrs[5] > 0.0, "last step still learns: {}", lrs[5]);
        let flat = Schedule { cosine: false, ..s };
        assert_eq!(flat.lr(5), 1.0);
    }

    /// The official code's `adjust_learning_rate`: at epoch e of E, `lr · ½(1 + cos(π·e/E))`
    /// for every step of the epoch.
    #[test]
    fn per_epoch_cosine_is_the_official_one() {
        let (epochs, spe) = (5u64, 3u64);
        let s = Schedule { base_lr: 0.1, warmup: 0, total: epochs * spe, cosine: true, epoch_steps: spe };
        for step in 0..epochs * spe {
            let e = (step / spe) as f64;
            let official = 0.1 * 0.5 * (1.0 + (std::f64::consts::PI * e / epochs as f64).cos());
            assert!((s.lr(step) - official).abs() < 1e-15, "step {step}: {} vs {official}", s.lr(step));
        }
        assert_eq!(s.lr(0), 0.1);
        assert_ne!(s.lr(1), Schedule { epoch_steps: 0, ..s }.lr(1), "per step decays within the epoch");
    }
}
