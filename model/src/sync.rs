//! Synchronized BatchNorm (PyTorch's `SyncBatchNorm`): while a [`StatsReducer`] is set on this
//! thread ([`sync_batch_norm`]), BatchNorm in training mode takes its batch statistics over every
//! process of a data-parallel run — forward: the per-channel sum and count, then the sum of
//! squared deviations from the common mean; backward: the per-channel `Σ dy` and `Σ dy·x̂` — so
//! N processes with batch B/N normalise as one process with batch B. The model crate calls the
//! reducer; how it reaches the other processes (MPI) is the caller's. The CPU kernel reduces
//! host buffers directly; the composition of dfdx ops that GPUs run takes the same sums through
//! a differentiable op (`ops::ranks_sum`).
//!
//! The reducer is per thread ([`crate::Scoped`]).

use std::cell::RefCell;
use std::rc::Rc;

use crate::scoped::{self, Scoped};

/// Sums per-channel statistics over every process of a run.
pub trait StatsReducer {
    /// Replaces `values` with their element-wise sum over every process (the same call, in the
    /// same order, on each). A failure must end the run (a process cannot go on alone).
    fn sum(&self, values: &mut [f64]);

    /// Ends the run on every process after a failure that this one cannot go on from (a
    /// device copy of synchronized statistics inside the backward pass), saying `why`.
    fn fail(&self, why: &str) -> !;
}

thread_local! {
    static REDUCER: RefCell<Option<Rc<dyn StatsReducer>>> = const { RefCell::new(None) };
}

/// Ends [`sync_batch_norm`] when dropped (restoring any reducer set before it).
pub type SyncGuard = Scoped<Rc<dyn StatsReducer>>;

/// Synchronized BatchNorm on this thread with `reducer`, until the guard drops.
pub fn sync_batch_norm(reducer: Rc<dyn StatsReducer>) -> SyncGuard {
    Scoped::set(&REDUCER, reducer)
}

/// The reducer set on this thread, if any.
pub(crate) fn reducer() -> Option<Rc<dyn StatsReducer>> {
    scoped::current(&REDUCER)
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Barrier, Mutex};

    use dfdx::prelude::*;

    use super::*;
    use crate::{batch_norm, BatchNormConfig};

    /// Two threads as two processes: each hands in its values, both get the sum.
    struct Pair {
        shared: Arc<(Mutex<[Vec<f64>; 2]>, Barrier)>,
        me: usize,
    }

    impl StatsReducer for Pair {
        fn sum(&self, values: &mut [f64]) {
            let (slots, barrier) = &*self.shared;
            slots.lock().unwrap()[self.me] = values.to_vec();
            barrier.wait();
            let sum: Vec<f64> = {
                let s = slots.lock().unwrap();
                s[0].iter().zip(&s[1]).map(|(a, b)| a + b).collect()
            };
            barrier.wait();
            values.copy_from_slice(&sum);
        }

        fn fail(&self, why: &str) -> ! {
            panic!("process {}: {why}", self.me)
        }
    }

    const N: usize = 6;
    const C: usize = 3;
    const HW: usize = 4;

    fn values(seed: u32, len: usize) -> Vec<f32> {
        (0..len)
            .map(|i| (((i as u32).wrapping_mul(2654435761) ^ seed).wrapping_mul(40503) % 1000) as f32 / 250.0 - 1.7)
            .collect()
    }

    /// BatchNorm (with ReLU) of images `rows` of the batch, trained against `Σ y·r`: output, input
    /// gradient, weight and bias gradients, running statistics.
    fn run(rows: std::ops::Range<usize>) -> [Vec<f32>; 6] {
        run_with(rows, false)
    }

    /// [`run`] with the CPU kernel, or with `composed`'s dfdx composition (what GPUs run).
    fn run_with(rows: std::ops::Range<usize>, composed: bool) -> [Vec<f32>; 6] {
        let dev = Cpu::default();
        let per = C * HW * HW;
        let n = rows.len();
        let x =
            dev.tensor_from_vec(values(1, N * per)[rows.start * per..rows.end * per].to_vec(), (n, Const::<C>, HW, HW));
        let r =
            dev.tensor_from_vec(values(2, N * per)[rows.start * per..rows.end * per].to_vec(), (n, Const::<C>, HW, HW));
        let w = dev.tensor_from_vec(vec![0.5f32, 1.5, -1.0], (Const::<C>,));
        let b = dev.tensor_from_vec(vec![0.1f32, -0.2, 0.3], (Const::<C>,));
        let (mut rm, mut rv) = (dev.zeros::<Rank1<C>>(), dev.ones::<Rank1<C>>());
        let cfg = BatchNormConfig::new(true).relu(true);
        let y = if composed {
            crate::composed::batch_norm(x.leaky_trace(), w.leaky_trace(), b.leaky_trace(), &mut rm, &mut rv, cfg)
        } else {
            batch_norm(x.leaky_trace(), w.leaky_trace(), b.leaky_trace(), &mut rm, &mut rv, cfg)
        };
        let y = y.unwrap();
        let out = y.as_vec();
        let g = (y * r).sum().backward();
        [out, g.get(&x).as_vec(), g.get(&w).as_vec(), g.get(&b).as_vec(), rm.as_vec(), rv.as_vec()]
    }

    /// Two processes with half the batch each normalise as one process with the whole batch:
    /// outputs, input gradients and running statistics; the weight and bias gradients add up.
    #[test]
    fn two_halves_synchronized_are_the_whole_batch() {
        halves_against_the_whole_batch(false);
    }

    /// The same for the composition of dfdx ops that GPUs run: its statistics and their
    /// gradients go through `ranks_sum`.
    #[test]
    fn two_halves_synchronized_are_the_whole_batch_composed() {
        halves_against_the_whole_batch(true);
    }

    fn halves_against_the_whole_batch(composed: bool) {
        let whole = run(0..N);
        let run = |rows| run_with(rows, composed);
        let shared = Arc::new((Mutex::new([Vec::new(), Vec::new()]), Barrier::new(2)));
        let halves: Vec<[Vec<f32>; 6]> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..2)
                .map(|me| {
                    let shared = shared.clone();
                    s.spawn(move || {
                        let _sync = sync_batch_norm(Rc::new(Pair { shared, me }));
                        run(me * N / 2..(me + 1) * N / 2)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let close = |a: &[f32], b: &[f32], what: &str| {
            assert_eq!(a.len(), b.len(), "{what}");
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                assert!((x - y).abs() < 1e-5, "{what}[{i}]: {x} vs {y}");
            }
        };
        for (k, what) in [(0, "output"), (1, "input gradient")] {
            close(&[halves[0][k].clone(), halves[1][k].clone()].concat(), &whole[k], what);
        }
        for (k, what) in [(2, "weight gradient"), (3, "bias gradient")] {
            let sum: Vec<f32> = halves[0][k].iter().zip(&halves[1][k]).map(|(a, b)| a + b).collect();
            close(&sum, &whole[k], what);
        }
        for (k, what) in [(4, "running mean"), (5, "running var")] {
            close(&halves[0][k], &whole[k], what);
            close(&halves[1][k], &whole[k], what);
        }
        // Without the reducer a half is normalised on its own: different.
        let alone = run(0..N / 2);
        assert!(alone[0].iter().zip(&halves[0][0]).any(|(a, b)| (a - b).abs() > 1e-3));
    }
}
