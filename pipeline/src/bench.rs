//! The pipeline's throughput benchmark (`siamlab bench pipeline`): epochs of a multi-view
//! pipeline over a shard folder, drained as fast as it delivers, with samples per second, the
//! mean fill of the prefetch queue and the per-stage times of each epoch; over an object store,
//! the cache's hits and downloads too.

use std::time::Instant;

use siamlab_datasets::store::{CacheStats, Location};

use crate::error::Result;
use crate::plan::ShuffleBy;
use crate::stats::StageStats;
use crate::Pipeline;

/// What to run.
#[derive(Debug, Clone)]
pub struct PipelineBench {
    /// The shards: a folder or an object-store prefix, opened once so that every epoch shares
    /// its cache.
    pub at: Location,
    /// Split to read.
    pub split: String,
    /// Augmentation recipe.
    pub recipe: String,
    /// Views per sample.
    pub views: usize,
    /// Batch size.
    pub batch: usize,
    /// Worker threads.
    pub workers: usize,
    /// Epochs (each reshuffles).
    pub epochs: u64,
    /// What each epoch permutes.
    pub shuffle_by: ShuffleBy,
    /// Output size (`None`: the recipe's default for the data).
    pub image_size: Option<u32>,
}

/// One epoch's figures.
#[derive(Debug, Clone, PartialEq)]
pub struct EpochFigures {
    /// The epoch.
    pub epoch: u64,
    /// Samples delivered.
    pub samples: u64,
    /// Seconds from the pipeline's first batch request to its last batch.
    pub secs: f64,
    /// Seconds spent planning the epoch (reading the manifest and the shards' footers).
    pub planning_secs: f64,
    /// The cache's counters over this epoch (shards on an object store only).
    pub cache: Option<CacheStats>,
    /// Mean fill of the prefetch queue when a batch was taken.
    pub mean_fill: f64,
    /// The stages' counters.
    pub stats: StageStats,
}

/// The whole run.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchFigures {
    /// Every epoch.
    pub epochs: Vec<EpochFigures>,
    /// Samples per second over the epochs after the first (all of them when there is one):
    /// the first pays for cold caches.
    pub samples_per_s: f64,
    /// Epochs that count in `samples_per_s`.
    pub timed_epochs: u64,
}

impl PipelineBench {
    /// Runs every epoch; `progress(epoch, batches_done, batches_in_epoch)` is called before the
    /// first batch of an epoch and after each, `on_epoch` with each epoch's figures.
    pub fn run(
        &self,
        progress: &mut dyn FnMut(u64, usize, usize),
        on_epoch: &mut dyn FnMut(&EpochFigures),
    ) -> Result<BenchFigures> {
        let mut epochs = Vec::new();
        let (mut samples, mut secs) = (0u64, 0f64);
        for epoch in 0..self.epochs {
            let before = self.at.cache_stats();
            let planning = Instant::now();
            let mut b = Pipeline::builder_at(self.at.clone())
                .split(&self.split)
                .epoch(epoch)
                .views(&self.recipe, self.views)
                .batch_size(self.batch)
                .shuffle_by(self.shuffle_by);
            if let Some(size) = self.image_size {
                b = b.image_size(size);
            }
            let mut p = b.workers(self.workers).build()?;
            let planning_secs = planning.elapsed().as_secs_f64();
            let total = p.batches();
            progress(epoch, 0, total);
            let start = Instant::now();
            let (mut n, mut fill, mut batches) = (0u64, 0usize, 0usize);
            while let Some(batch) = p.next_blocking() {
                n += batch?.len() as u64;
                fill += p.queue_fill();
                batches += 1;
                progress(epoch, batches, total);
            }
            let figures = EpochFigures {
                epoch,
                samples: n,
                secs: start.elapsed().as_secs_f64(),
                planning_secs,
                mean_fill: fill as f64 / batches.max(1) as f64,
                stats: p.stats(),
                cache: match (self.at.cache_stats(), before) {
                    (Some(now), Some(before)) => Some(now.since(&before)),
                    _ => None,
                },
            };
            on_epoch(&figures);
            if epoch > 0 || self.epochs == 1 {
                samples += figures.samples;
                secs += figures.secs;
            }
            epochs.push(figures);
        }
        Ok(BenchFigures {
            epochs,
            samples_per_s: samples as f64 / secs.max(1e-9),
            timed_epochs: if self.epochs > 1 { self.epochs - 1 } else { 1 },
        })
    }
}
