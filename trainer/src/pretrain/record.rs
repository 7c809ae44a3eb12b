//! What a pretraining run records as it goes: one [`EpochRecord`] per line of `metrics.jsonl`,
//! and its checkpointed progress ([`State`], the checkpoint's `state.json`).

use serde::{Deserialize, Serialize};
use siamlab_pipeline::PipelineState;

/// Per-epoch record (`metrics.jsonl`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// Epoch (0-based).
    pub epoch: u64,
    /// Optimizer steps done at its end.
    pub step: u64,
    /// Mean loss.
    pub loss: f64,
    /// Learning rate of its last step.
    pub lr: f64,
    /// Mean collapse std of the normalized projections (healthy ≈ 1/√D).
    pub z_std: f64,
    /// `1/√D` for reference.
    pub z_std_healthy: f64,
    /// Mean cosine similarity of held-out pairs (eval mode).
    pub holdout_similarity: Option<f64>,
    /// kNN top-1 accuracy.
    pub knn_top1: Option<f64>,
    /// Image pairs per second.
    pub pairs_per_sec: f64,
    /// Seconds the epoch took, monitors included (0 in runs written before it was recorded;
    /// a resumed epoch counts from the resume).
    #[serde(default)]
    pub seconds: f64,
    /// Mean fill of the pipeline's prefetch queue when the trainer asked for a batch.
    pub queue_fill: f64,
    /// Batches after the first of the epoch that were not yet on the compute device when the
    /// step wanted them (0 when the device prefetch keeps up).
    #[serde(default)]
    pub device_waits: usize,
    /// Seconds of the epoch spent outside forward/backward/optimizer (waiting on data,
    /// bookkeeping), as a fraction of the training time.
    pub overhead: f64,
}

/// Checkpointed progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// The epoch in progress (or next to start).
    pub epoch: u64,
    /// Optimizer steps done.
    pub step: u64,
    /// Optimizer's step counter.
    pub optimizer_t: u64,
    /// Where the pipeline stands inside `epoch` (None: at its start).
    pub pipeline: Option<PipelineState>,
    /// Partial sums of the epoch in progress: loss, z std, micro-batches.
    pub partial: (f64, f64, u64),
    /// Finished epochs.
    pub history: Vec<EpochRecord>,
}
