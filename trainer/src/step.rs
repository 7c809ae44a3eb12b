//! One optimizer step of a training loop, as pretraining, finetuning and the linear probe all
//! take it: a loss that became NaN or infinite stops the run, the learning rate comes from the
//! schedule at the step's number, the step is counted.

use crate::error::{Error, Result};
use crate::schedule::Schedule;

/// `value` (a micro-batch's loss) when finite; else the error naming `epoch` and optimizer
/// `step`.
pub fn finite(value: f32, epoch: u64, step: u64) -> Result<f32> {
    if value.is_finite() {
        Ok(value)
    } else {
        Err(Error::NonFinite { value, epoch, step })
    }
}

/// Applies the accumulated gradients (`apply(lr)`: the net's step with its optimizer) at the
/// learning rate of step `*step`, counts the step, and returns the rate.
pub fn optimizer_step(schedule: &Schedule, step: &mut u64, apply: impl FnOnce(f64) -> Result<()>) -> Result<f64> {
    let lr = schedule.lr(*step);
    apply(lr)?;
    *step += 1;
    Ok(lr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_uses_the_rate_of_its_number_then_counts() {
        let schedule = Schedule { base_lr: 1.0, warmup: 2, total: 4, cosine: false };
        let (mut step, mut seen) = (0u64, Vec::new());
        for _ in 0..3 {
            let lr = optimizer_step(&schedule, &mut step, |lr| {
                seen.push(lr);
                Ok(())
            })
            .unwrap();
            assert_eq!(Some(&lr), seen.last());
        }
        assert_eq!(step, 3);
        assert_eq!(seen, [schedule.lr(0), schedule.lr(1), schedule.lr(2)]);
        assert!(optimizer_step(&schedule, &mut step, |_| Err(Error::config("device"))).is_err());
        assert_eq!(step, 3, "a failed step is not counted");
        assert_eq!(finite(0.5, 0, 0).unwrap(), 0.5);
        let e = finite(f32::NAN, 2, 7).unwrap_err().to_string();
        assert!(e.contains("epoch 2, step 7"), "{e}");
    }
}
