//! One rank of a data-parallel run (PyTorch DDP's semantics on a [`World`]): the tensors
//! broadcast from rank 0 at the start, the gradients of each optimizer step averaged over the
//! ranks in buckets ([`siamlab_world::buckets`]), the micro-batch statistics averaged so every
//! rank logs and stops alike, and the world lent to the model crate's synchronized BatchNorm
//! ([`WorldStats`]).

use siamlab_model::StatsReducer;
use siamlab_world::World;

use crate::device::DeviceSpec;
use crate::error::Result;
use crate::run::Walker;

/// Rank 0's value of every tensor `walk` visits (parameters and BatchNorm buffers) on every
/// rank.
pub fn broadcast_tensors(world: &World, walk: &mut Walker<'_>) -> Result<()> {
    if world.size() == 1 {
        return Ok(());
    }
    walk(&mut |_, values| {
        world.broadcast(values)?;
        Ok(true)
    })
}

/// The world this rank trains in and its device: on several ranks `cuda` means
/// `cuda:<local rank>` (PyTorch's convention under torchrun / mpirun), where the ranks join
/// NCCL so that their gradients are averaged in GPU memory (the `nccl` build; without it,
/// several GPU ranks are refused in one line).
pub fn rank_device(world: &World, device: DeviceSpec) -> Result<(World, DeviceSpec)> {
    match device {
        DeviceSpec::Cuda(_) if world.size() > 1 => {
            let ordinal = world.local_rank();
            #[cfg(feature = "nccl")]
            {
                Ok((world.join_gpus(ordinal)?, DeviceSpec::Cuda(ordinal)))
            }
            #[cfg(not(feature = "nccl"))]
            {
                Err(crate::Error::config(format!(
                    "{} ranks on GPUs (cuda:{ordinal} here) need a build with the `nccl` feature, which \
                     averages the gradients in GPU memory",
                    world.size()
                )))
            }
        }
        d => Ok((world.clone(), d)),
    }
}

/// `values` averaged element-wise over the ranks.
pub fn mean_over_ranks(world: &World, values: &mut [f32]) -> Result<()> {
    if world.size() > 1 {
        world.all_reduce_sum(values)?;
        let inv = 1.0 / world.size() as f32;
        values.iter_mut().for_each(|v| *v *= inv);
    }
    Ok(())
}

/// The world as synchronized BatchNorm's reducer (on a communicator of its own, so its
/// collectives never interleave with the gradients'). A failed collective ends every rank.
pub struct WorldStats(pub World);

impl StatsReducer for WorldStats {
    fn sum(&self, values: &mut [f64]) {
        if let Err(e) = self.0.all_reduce_sum_f64(values) {
            eprintln!("error (rank {} of {}): synchronized BatchNorm: {e}", self.0.rank(), self.0.size());
            self.0.abort(1);
        }
    }

    fn fail(&self, why: &str) -> ! {
        eprintln!("error (rank {} of {}): {why}", self.0.rank(), self.0.size());
        self.0.abort(1)
    }
}
