//! The gradient average of a data-parallel optimizer step, started during its backward pass
//! (PyTorch DDP's overlap of communication with computation): the model marks each group of
//! parameters ([`siamlab_model::ready`]), and as each group's gradients become final this
//! sink appends them to [`Buckets`], whose all-reduces start as each bucket fills. After the
//! backward pass, [`Overlap::finish`] waits for the rest and writes the averages back. The same
//! values are summed as by the average after the backward pass, so the step is the same.
//!
//! CPU ranks only (on GPUs NCCL averages in GPU memory after the backward pass). Setting
//! `SIAMLAB_OVERLAP=0` averages after the backward pass instead (to measure what the overlap
//! gains).

use std::cell::RefCell;

use dfdx::prelude::{Cpu, Gradients};
use siamlab_model::ready::{GradGroup, GradsReady};
use siamlab_world::{Buckets, World, BUCKET_BYTES};

use crate::error::{Error, Result};

/// Whether steps overlap their all-reduce with the backward pass (`SIAMLAB_OVERLAP`, on
/// unless `0`).
pub fn enabled() -> bool {
    std::env::var("SIAMLAB_OVERLAP").map_or(true, |v| v.trim() != "0")
}

/// One optimizer step's gradient average, fed during its last micro-batch's backward pass.
pub struct Overlap {
    state: RefCell<State>,
}

struct State {
    buckets: Option<Buckets>,
    groups: Vec<GradGroup>,
    error: Option<Error>,
}

impl Overlap {
    /// An average over `world`'s ranks, in buckets of [`BUCKET_BYTES`].
    pub fn new(world: &World) -> Overlap {
        Overlap {
            state: RefCell::new(State {
                buckets: Some(Buckets::new(world, BUCKET_BYTES)),
                groups: Vec::new(),
                error: None,
            }),
        }
    }

    /// Waits for every bucket and writes the averages back into `grads`, group by group in the
    /// order they came; returns the values averaged. `expected`: the model's trainable values
    /// (every one must have come exactly once).
    pub fn finish(&self, grads: &mut Gradients<f32, Cpu>, expected: usize) -> Result<usize> {
        let mut state = self.state.borrow_mut();
        if let Some(e) = state.error.take() {
            return Err(e);
        }
        let buckets = state.buckets.take().ok_or_else(|| Error::config("a gradient average finished twice"))?;
        let n = buckets.len();
        if n != expected {
            return Err(Error::config(format!(
                "the backward pass handed {n} gradient values to the all-reduce, the model has {expected}"
            )));
        }
        let mean = buckets.finish()?;
        let mut at = 0;
        for group in &state.groups {
            group.visit(grads, &mut |g| {
                g.copy_from_slice(&mean[at..at + g.len()]);
                at += g.len();
            })?;
        }
        Ok(n)
    }
}

impl GradsReady for Overlap {
    fn ready(&self, group: GradGroup, grads: &mut Gradients<f32, Cpu>) {
        let mut state = self.state.borrow_mut();
        let State { buckets, groups, error } = &mut *state;
        let (Some(b), None) = (buckets.as_mut(), error.as_ref()) else { return };
        let mut failed = None;
        let visited = group.visit(grads, &mut |g| {
            if failed.is_none() {
                failed = b.push(g).err();
            }
        });
        *error = match (visited, failed) {
            (Err(e), _) => Some(e.into()),
            (_, Some(e)) => Some(e.into()),
            _ => b.poll().err().map(Into::into),
        };
        groups.push(group);
    }
}
