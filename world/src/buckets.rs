//! Gradient averaging in buckets, as PyTorch's DDP: the gradients of one optimizer step laid
//! end to end in one flat buffer, all-reduced [`BUCKET_BYTES`] at a time (one collective per
//! bucket rather than per tensor, and no single collective holding every byte), then divided
//! by the number of ranks.

use crate::{Result, World};

/// Bytes per all-reduce (DDP's default `bucket_cap_mb` = 25).
pub const BUCKET_BYTES: usize = 25 << 20;

/// Every rank's `flat` averaged element-wise into every rank's `flat`, in all-reduces of at most
/// `bucket_bytes`; returns the number of all-reduces. The single process leaves `flat` as it is.
pub fn all_reduce_mean(world: &World, flat: &mut [f32], bucket_bytes: usize) -> Result<usize> {
    if world.size() == 1 {
        return Ok(0);
    }
    let per = (bucket_bytes / size_of::<f32>()).max(1);
    let mut calls = 0;
    for bucket in flat.chunks_mut(per) {
        world.all_reduce_sum(bucket)?;
        calls += 1;
    }
    let inv = 1.0 / world.size() as f32;
    flat.iter_mut().for_each(|v| *v *= inv);
    Ok(calls)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_process_keeps_its_gradients() {
        let mut g = vec![0.5f32, -1.0, 3.0];
        assert_eq!(all_reduce_mean(&World::single(), &mut g, 4).unwrap(), 0);
        assert_eq!(g, [0.5, -1.0, 3.0]);
    }
}
