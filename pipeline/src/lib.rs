//! siamlab's streaming data pipeline: Parquet shards (written by `siamlab ingest`) → read
//! (tokio) → decode → parallel multi-view augmentation (worker threads) → batches in reused
//! buffers → bounded prefetch, as an async stream or a blocking iterator ([`Pipeline`]).
//! Batches are a pure function of (shards, seed, epoch, rank, world, recipe, batch size), and
//! a [`PipelineState`] resumes exactly. The crate knows images and tensors, never a model: any
//! image task can use it (see `examples/supervised.rs`).
//!
//! ```no_run
//! use siamlab_pipeline::Pipeline;
//! let pipeline = Pipeline::builder("data/cifar10")
//!     .split("train").seed(0).epoch(0).shard(0, 1)
//!     .views("simsiam", 2).batch_size(256).workers(2).prefetch(4)
//!     .build()?;
//! for batch in pipeline {
//!     let batch = batch?;
//!     let (view1, view2) = (batch.view(0), batch.view(1)); // [B, 3, H, W] each, normalized
//!     # let _ = (view1, view2);
//! }
//! # Ok::<(), siamlab_pipeline::Error>(())
//! ```
//!
//! The augmentation module holds torchvision-compatible image ops (RandomResizedCrop, flip,
//! ColorJitter, grayscale, Gaussian blur, solarize, Resize + CenterCrop, RandomCrop with
//! padding, Normalize), samplers that draw their parameters with torchvision's logic from a
//! per-sample RNG, and the `simsiam`, `finetune` and `eval` recipes.
//!
//! The main types are [`augment::Recipe`] (planned once for an output size, then applied per
//! view into a caller-owned `[3, H, W]` f32 buffer), [`augment::Scratch`] (per-worker reusable
//! buffers) and [`augment::sample_rng`] (the RNG for `(seed, epoch, sample index, view)`).
//!
//! ```
//! use siamlab_pipeline::augment::{sample_rng, Normalize, Recipe, Scratch};
//!
//! let recipe = Recipe::simsiam(32, Normalize::new([0.49, 0.48, 0.45], [0.25, 0.24, 0.26])?)?;
//! let (w, h) = (32, 32);
//! let image: Vec<u8> = (0..w * h * 3).map(|i| (i % 251) as u8).collect(); // RGB8, HWC
//! let mut batch = vec![0f32; 2 * recipe.output_len()]; // owned by the pipeline
//! let mut scratch = Scratch::new();
//! for (view, out) in batch.chunks_exact_mut(recipe.output_len()).enumerate() {
//!     let mut rng = sample_rng(42, 0, 7, view as u32);
//!     recipe.apply(&image, w, h, &mut rng, out, &mut scratch)?;
//! }
//! # Ok::<(), siamlab_pipeline::augment::Error>(())
//! ```
//!
//! It is not a general image-processing library: ops exist to reproduce torchvision's
//! training augmentations exactly and fast.
#![deny(missing_docs)]

pub mod augment;
mod batch;
pub mod bench;
pub mod decode;
mod error;
mod fetch;
mod pipeline;
pub mod plan;
pub mod preview;
mod stats;

pub use batch::{Batch, BatchMut, Buffers};
pub use error::{Error, Result};
pub use pipeline::{Pipeline, PipelineBuilder, PipelineStream, RecipeChoice, Waited};
pub use plan::{PipelineState, ShuffleBy, Subset};
pub use stats::StageStats;
