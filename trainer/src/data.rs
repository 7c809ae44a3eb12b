//! The data side of a run: a shard folder's manifest (what task it is, which splits it has)
//! and the pipelines a run reads, built from a [`Feed`].

use std::path::{Path, PathBuf};

use siamlab_datasets::shard::manifest::Manifest;
use siamlab_datasets::{Location, StoreOptions};
use siamlab_pipeline::{Batch, Pipeline, PipelineState, ShuffleBy, Subset};

use crate::error::{Error, Result};

/// What the labels of a dataset are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Labels {
    /// One class per image.
    Classes(Vec<String>),
    /// A set of binary attributes per image (CelebA).
    Attributes(Vec<String>),
    /// No labels (random images, STL-10 unlabeled only).
    None,
}

/// An ingested dataset: its folder (or URL) and manifest.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// The shard folder as given (a path, or a URL such as `s3://bucket/prefix`).
    pub dir: PathBuf,
    /// Where its shards are read from (a URL's cache is shared by every pipeline of the run).
    pub location: Location,
    /// Its manifest.
    pub manifest: Manifest,
}

impl Dataset {
    /// Opens `dir` (written by `siamlab ingest`), a local folder.
    pub fn open(dir: &Path) -> Result<Self> {
        Self::open_with(dir, &StoreOptions::default())
    }

    /// Opens `dir`, a path or a URL (read through the cache `store` describes).
    pub fn open_with(dir: &Path, store: &StoreOptions) -> Result<Self> {
        let location = siamlab_datasets::store::open_path(dir, store)?;
        if !location.has_manifest()? {
            return Err(Error::config(format!(
                "{}: no manifest.json (not a shard folder written by `siamlab ingest`, or an unfinished one)",
                dir.display()
            )));
        }
        let manifest = location.manifest()?;
        Ok(Dataset { dir: dir.to_path_buf(), location, manifest })
    }

    /// The labels.
    pub fn labels(&self) -> Labels {
        if let Some(a) = &self.manifest.attributes {
            Labels::Attributes(a.clone())
        } else if let Some(c) = &self.manifest.classes {
            Labels::Classes(c.clone())
        } else {
            Labels::None
        }
    }

    /// Whether the split exists.
    pub fn has_split(&self, split: &str) -> bool {
        self.manifest.splits.contains_key(split)
    }

    /// Rows of a split, or an error naming the splits there are.
    pub fn rows(&self, split: &str) -> Result<u64> {
        Ok(self.manifest.split(split)?.rows)
    }

    /// The image size of a split when all its images share one square size.
    pub fn image_size(&self, split: &str) -> Result<Option<usize>> {
        Ok(match self.manifest.split(split)?.size_range {
            Some([w0, h0, w1, h1]) if w0 == w1 && h0 == h1 && w0 == h0 => Some(w0 as usize),
            _ => None,
        })
    }

    /// Whether this looks like CIFAR (the official SimSiam recipe uses a larger weight decay).
    pub fn is_cifar(&self) -> bool {
        self.manifest.source.to_ascii_lowercase().starts_with("cifar")
    }
}

/// What a pipeline should deliver.
#[derive(Debug, Clone)]
pub struct Feed {
    /// Split.
    pub split: String,
    /// Rows of the split to use.
    pub subset: Option<Subset>,
    /// Augmentation recipe (`simsiam`, `finetune`, `eval`).
    pub recipe: &'static str,
    /// Views per image.
    pub views: usize,
    /// Output size.
    pub image_size: usize,
    /// Batch size.
    pub batch: usize,
    /// Shuffle and drop the last short batch (training) or keep order and every row.
    pub train: bool,
    /// Seed.
    pub seed: u64,
    /// Worker threads (None: all cores).
    pub workers: Option<usize>,
    /// What a shuffled epoch permutes.
    pub shuffle_by: ShuffleBy,
}

impl Feed {
    /// The pipeline for `epoch`, resumed from `state` if given.
    pub fn open(&self, ds: &Dataset, epoch: u64, state: Option<PipelineState>) -> Result<Pipeline> {
        self.open_shard(ds, epoch, state, 0, 1)
    }

    /// [`open`](Self::open) for rank `rank` of `world`: its own block of the epoch.
    pub fn open_shard(
        &self,
        ds: &Dataset,
        epoch: u64,
        state: Option<PipelineState>,
        rank: usize,
        world: usize,
    ) -> Result<Pipeline> {
        let mut b = Pipeline::builder_at(ds.location.clone())
            .shard(rank, world)
            .split(&self.split)
            .seed(self.seed)
            .epoch(epoch)
            .views(self.recipe, self.views)
            .image_size(self.image_size as u32)
            .batch_size(self.batch)
            .shuffle(self.train)
            .shuffle_by(self.shuffle_by)
            .drop_last(self.train)
            // Every feed but SimSiam's two views serves a classifier or kNN: it needs labels.
            .require_labels(self.recipe != "simsiam");
        if let Some(s) = self.subset {
            b = b.subset(s);
        }
        if let Some(w) = self.workers {
            b = b.workers(w);
        }
        if let Some(s) = state {
            b = b.resume(s);
        }
        Ok(b.build()?)
    }
}

/// Runs `f` on every batch of a pipeline (blocking), stopping at the first error.
pub fn for_each_batch(p: Pipeline, mut f: impl FnMut(&Batch) -> Result<()>) -> Result<()> {
    for b in p {
        f(&b?)?;
    }
    Ok(())
}
