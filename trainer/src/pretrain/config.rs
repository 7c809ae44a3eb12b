//! What a pretraining run is configured by: [`PretrainConfig`] (TOML names = flag names) and
//! its resolved form stored as the run's `config.json` ([`Resolved`]).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use siamlab_model::init::InitScheme;

use crate::device::DeviceSpec;
use crate::error::{Error, IoContext, Result};
use crate::net::NetInfo;
use crate::optim::{OptimConfig, OptimizerKind};
use crate::schedule::Schedule;

/// Everything a pretraining run is configured by; the TOML file (`--config`) uses these
/// names, command-line flags override them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PretrainConfig {
    /// Shard folder (a path, or a URL such as `s3://bucket/prefix`).
    pub data: PathBuf,
    /// How a URL in `data` is read: cache folder and limit (not part of the run's
    /// configuration: not saved, never compared).
    #[serde(skip)]
    pub store: siamlab_datasets::StoreOptions,
    /// Split to pretrain on.
    pub split: String,
    /// Use only this fraction of the split (seeded), for quick runs.
    pub fraction: f64,
    /// Backbone name (see `siamlab model summary`).
    pub backbone: String,
    /// Input size (default: the split's image size).
    pub image_size: Option<usize>,
    /// Epochs.
    pub epochs: u64,
    /// Images per micro-batch.
    pub batch: usize,
    /// Micro-batches per optimizer step.
    pub accum: usize,
    /// Peak learning rate (default: 1e-3 × batch × accum / 256 for Adam, 0.05 × … for SGD).
    pub lr: Option<f64>,
    /// Weight decay (default: 1e-5 for Adam; 1e-4 for SGD, 5e-4 on CIFAR).
    pub wd: Option<f64>,
    /// `adam` or `sgd`.
    pub optimizer: OptimizerKind,
    /// Epochs of linear warmup.
    pub warmup_epochs: f64,
    /// Set the cosine once per epoch, as the official code does (default: every optimizer step).
    pub cosine_per_epoch: bool,
    /// Projection dimension (2048, 1024, 512, 256, 128).
    pub proj_dim: usize,
    /// How the backbone is initialised: `uniform` (PyTorch's generic layer defaults),
    /// `library` (torchvision's for ResNet, timm's for the others) or `simsiam` (the official
    /// SimSiam encoder's: the library's, with `zero_init_residual` for ResNet).
    #[serde(with = "crate::choices::init_scheme")]
    pub init_scheme: InitScheme,
    /// Step the predictor at the base learning rate throughout, not decayed (the official
    /// code's `--fix-pred-lr`).
    pub fix_pred_lr: bool,
    /// The projector's output as the official code builds it: the bias of its last Linear
    /// (`projector.6.bias`) frozen and its output BatchNorm without affine parameters
    /// (`projector.7.weight` / `.bias` frozen at 1 and 0).
    pub frozen_projector_output: bool,
    /// No weight decay on biases, BatchNorm / LayerNorm parameters, `pos_embed` and
    /// `cls_token` (timm's rule; the official code decays every parameter).
    pub no_decay_norm_bias: bool,
    /// Seed of initialisation, order and augmentation.
    pub seed: u64,
    /// What each epoch permutes before the rows are shuffled inside a window: `row-groups`
    /// (across the split, the default) or `shards` (then the row groups inside each: for shards
    /// in a bucket read through a cache smaller than the data, or a cold one).
    pub shuffle_by: siamlab_pipeline::ShuffleBy,
    /// Pipeline worker threads (default: all cores).
    pub workers: Option<usize>,
    /// Where to compute: `cpu`, `cuda`, `cuda:N` (not part of what a resumed run must match).
    pub device: DeviceSpec,
    /// kNN monitor every N epochs (0: off; the last epoch always when on).
    pub knn_every: u64,
    /// Labeled shard folder for the kNN monitor (default: `data`).
    pub knn_data: Option<PathBuf>,
    /// Split of the kNN bank.
    pub knn_bank_split: String,
    /// Split of the kNN queries.
    pub knn_query_split: String,
    /// Fraction of the bank and query splits used by the monitor.
    pub knn_fraction: f64,
    /// Neighbours.
    pub knn_k: usize,
    /// Temperature of the vote weights.
    pub knn_temperature: f32,
    /// Held-out split for the cosine-similarity monitor (default: `test` when the data has it).
    pub monitor_split: Option<String>,
    /// Images of the held-out split used by it.
    pub monitor_images: usize,
    /// Also checkpoint every N optimizer steps (0: once per epoch only).
    pub checkpoint_every: u64,
    /// Stop after this many optimizer steps of this invocation (testing interruptions).
    pub max_steps: Option<u64>,
    /// Write the first micro-batches, the initial tensors and each step's gradients and
    /// tensors to a folder, then stop ([`crate::dump`]; `--dump-batches N DIR`).
    pub dump: Option<crate::dump::DumpConfig>,
    /// With several processes: BatchNorm's batch statistics over all of them (PyTorch's
    /// `SyncBatchNorm`, as the official SimSiam recipe trains), so N ranks of batch B normalise
    /// as one of batch N·B; `false` (`--no-sync-bn`): each rank's own batch.
    pub sync_bn: bool,
}

impl Default for PretrainConfig {
    fn default() -> Self {
        PretrainConfig {
            data: PathBuf::new(),
            store: siamlab_datasets::StoreOptions::default(),
            split: "train".into(),
            fraction: 1.0,
            backbone: "resnet18".into(),
            image_size: None,
            epochs: 100,
            batch: 64,
            accum: 8,
            lr: None,
            wd: None,
            optimizer: OptimizerKind::Adam,
            warmup_epochs: 0.0,
            cosine_per_epoch: false,
            proj_dim: 2048,
            init_scheme: InitScheme::Uniform,
            fix_pred_lr: false,
            frozen_projector_output: false,
            no_decay_norm_bias: false,
            seed: 0,
            shuffle_by: siamlab_pipeline::ShuffleBy::RowGroups,
            workers: None,
            device: DeviceSpec::Cpu,
            knn_every: 10,
            knn_data: None,
            knn_bank_split: "train".into(),
            knn_query_split: "test".into(),
            knn_fraction: 1.0,
            knn_k: 200,
            knn_temperature: 0.1,
            monitor_split: None,
            monitor_images: 512,
            checkpoint_every: 0,
            max_steps: None,
            dump: None,
            sync_bn: true,
        }
    }
}

impl PretrainConfig {
    /// Reads a TOML file.
    pub fn from_toml(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).at(path)?;
        toml::from_str(&text).map_err(|e| Error::bad_file(path, e.to_string().replace('\n', " ")))
    }

    /// The configuration a run starts from: the TOML file `file` (`--config`), or the defaults
    /// without one; flags then override its fields.
    pub fn read(file: Option<&Path>) -> Result<Self> {
        file.map_or_else(|| Ok(Self::default()), Self::from_toml)
    }

    /// Refuses a configuration without `data` (neither the file nor a flag gave it).
    pub fn require_data(&self) -> Result<()> {
        if self.data.as_os_str().is_empty() {
            return Err(Error::config("--data is required (a shard folder written by `siamlab ingest`)"));
        }
        Ok(())
    }
}

/// The configuration with every default resolved, as stored in `config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Resolved {
    /// The configuration (`lr`, `wd`, `image_size`, `monitor_split` filled in).
    pub config: PretrainConfig,
    /// Optimizer hyperparameters.
    pub optim: OptimConfig,
    /// Batches per epoch.
    pub batches_per_epoch: usize,
    /// The learning-rate schedule.
    pub schedule: Schedule,
    /// The model.
    pub net: NetInfo,
    /// Processes of the run (each streams its own block of every epoch; batch per process).
    #[serde(default = "one")]
    pub world: usize,
}

fn one() -> usize {
    1
}
