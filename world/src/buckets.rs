//! Gradient averaging in buckets, as PyTorch's DDP: the gradients of one optimizer step laid
//! end to end in one flat buffer, all-reduced [`BUCKET_BYTES`] at a time (one collective per
//! bucket rather than per tensor, and no single collective holding every byte), then divided
//! by the number of ranks. [`Buckets`] does the same while the gradients still arrive (DDP's
//! overlap of communication with the backward pass): each bucket's all-reduce starts as soon as
//! it is full.

use crate::{Pending, Result, World};

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

/// Gradients averaged over the ranks while they arrive: [`push`](Self::push) appends values
/// and starts a bucket's all-reduce each time `bucket_bytes` have gathered;
/// [`finish`](Self::finish) starts the rest, waits, and returns every value pushed, averaged,
/// in push order. Every rank pushes the same lengths in the same order.
pub struct Buckets {
    world: World,
    per: usize,
    filling: Vec<f32>,
    started: Vec<Box<dyn Pending>>,
    pushed: usize,
}

impl Buckets {
    /// Buckets of at most `bucket_bytes` over `world`'s ranks.
    pub fn new(world: &World, bucket_bytes: usize) -> Buckets {
        Buckets {
            world: world.clone(),
            per: (bucket_bytes / size_of::<f32>()).max(1),
            filling: Vec::new(),
            started: Vec::new(),
            pushed: 0,
        }
    }

    /// Appends `values`, starting the all-reduce of each bucket that fills.
    pub fn push(&mut self, mut values: &[f32]) -> Result<()> {
        self.pushed += values.len();
        while !values.is_empty() {
            let take = values.len().min(self.per - self.filling.len());
            self.filling.extend_from_slice(&values[..take]);
            values = &values[take..];
            if self.filling.len() == self.per {
                self.start()?;
            }
        }
        Ok(())
    }

    /// Lets the started all-reduces progress (MPI moves non-blocking collectives on only inside
    /// its calls).
    pub fn poll(&mut self) -> Result<()> {
        for p in &mut self.started {
            if !p.poll()? {
                break;
            }
        }
        Ok(())
    }

    /// Values pushed so far.
    pub fn len(&self) -> usize {
        self.pushed
    }

    /// Whether nothing was pushed.
    pub fn is_empty(&self) -> bool {
        self.pushed == 0
    }

    /// Bucket all-reduces started so far.
    pub fn started(&self) -> usize {
        self.started.len()
    }

    fn start(&mut self) -> Result<()> {
        let bucket = std::mem::take(&mut self.filling);
        self.started.push(self.world.start_all_reduce_sum(bucket)?);
        Ok(())
    }

    /// Starts the last bucket, waits for all, and returns the averages in push order.
    pub fn finish(mut self) -> Result<Vec<f32>> {
        if !self.filling.is_empty() {
            self.start()?;
        }
        let inv = 1.0 / self.world.size() as f32;
        let mut out = Vec::with_capacity(self.pushed);
        for p in self.started {
            out.extend(p.wait()?.into_iter().map(|v| v * inv));
        }
        Ok(out)
    }
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

    #[test]
    fn buckets_cut_where_they_fill_and_keep_the_order() {
        let mut b = Buckets::new(&World::single(), 3 * size_of::<f32>());
        b.push(&[1.0, 2.0]).unwrap();
        assert_eq!(b.started(), 0);
        b.push(&[3.0, 4.0, 5.0, 6.0, 7.0]).unwrap();
        assert_eq!((b.started(), b.len()), (2, 7));
        b.poll().unwrap();
        assert_eq!(b.finish().unwrap(), [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]);
    }
}
