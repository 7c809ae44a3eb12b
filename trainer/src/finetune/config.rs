//! What a finetuning run is configured by: [`FinetuneConfig`] (TOML names = flag names) and its
//! resolved form stored as the run's `config.json` ([`Resolved`]).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use siamlab_model::init::InitScheme;
use siamlab_pipeline::Subset;

use crate::device::DeviceSpec;
use crate::error::{Error, IoContext, Result};
use crate::head::Loss;
use crate::net::NetInfo;
use crate::optim::OptimizerKind;

/// Everything a finetuning run is configured by (TOML names = flag names).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FinetuneConfig {
    /// Labeled shard folder (a path, or a URL such as `s3://bucket/prefix`).
    pub data: PathBuf,
    /// How a URL in `data` is read: cache folder and limit (not part of the run's
    /// configuration: not saved, never compared).
    #[serde(skip)]
    pub store: siamlab_datasets::StoreOptions,
    /// Training split.
    pub train_split: String,
    /// Validation split (default: `valid` / `val` when present, else a hold-out of train).
    pub val_split: Option<String>,
    /// Hold-out fraction when there is no validation split.
    pub val_fraction: f64,
    /// Test split (default: `test` when present).
    pub test_split: Option<String>,
    /// Use only this fraction of the training rows (seeded).
    pub fraction: f64,
    /// Backbone (default: the pretrained run's).
    pub backbone: Option<String>,
    /// Input size (default: the pretrained run's, else the split's image size).
    pub image_size: Option<usize>,
    /// `scratch`, `ssl:RUN_DIR` or `imagenet:FILE.safetensors`.
    pub init: String,
    /// How a `scratch` backbone is initialised: `uniform` (PyTorch's generic layer defaults),
    /// `library` (torchvision's for ResNet, timm's for the others) or `simsiam` (the library's,
    /// with `zero_init_residual` for ResNet).
    #[serde(with = "crate::choices::init_scheme")]
    pub init_scheme: InitScheme,
    /// Frozen backbone, linear head on its features.
    pub linear: bool,
    /// Epochs.
    pub epochs: u64,
    /// Batch size.
    pub batch: usize,
    /// Learning rate.
    pub lr: f64,
    /// Weight decay.
    pub wd: f64,
    /// `adam` or `sgd`.
    pub optimizer: OptimizerKind,
    /// Cosine decay of the learning rate (default: constant, as the paper).
    pub cosine: bool,
    /// `ce` or `bce` (default: by the labels).
    pub loss: Option<String>,
    /// Seed.
    pub seed: u64,
    /// What each epoch permutes before the rows are shuffled inside a window: `row-groups`
    /// (across the split, the default) or `shards` (then the row groups inside each: for shards
    /// in a bucket read through a cache smaller than the data, or a cold one).
    pub shuffle_by: siamlab_pipeline::ShuffleBy,
    /// Pipeline workers.
    pub workers: Option<usize>,
    /// Where to compute: `cpu`, `cuda`, `cuda:N` (not part of what a resumed run must match).
    pub device: DeviceSpec,
    /// Debugging: record the first micro-batches, their targets, gradients and the tensors
    /// after each step to a folder, then stop ([`crate::dump`]; `--dump-batches N DIR`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dump: Option<crate::dump::DumpConfig>,
    /// With several processes: BatchNorm's batch statistics over all of them (synchronized
    /// BatchNorm), so N ranks of batch B train as one process of batch N·B; `false`
    /// (`--no-sync-bn`): each rank's own batch, and rank 0's running statistics (PyTorch DDP's
    /// `broadcast_buffers`) for validation and the saved model.
    pub sync_bn: bool,
}

impl Default for FinetuneConfig {
    fn default() -> Self {
        FinetuneConfig {
            data: PathBuf::new(),
            store: siamlab_datasets::StoreOptions::default(),
            train_split: "train".into(),
            val_split: None,
            val_fraction: 0.1,
            test_split: None,
            fraction: 1.0,
            backbone: None,
            image_size: None,
            init: "scratch".into(),
            init_scheme: InitScheme::Uniform,
            linear: false,
            epochs: 30,
            batch: 64,
            lr: 1e-3,
            wd: 1e-5,
            optimizer: OptimizerKind::Adam,
            cosine: false,
            loss: None,
            seed: 0,
            shuffle_by: siamlab_pipeline::ShuffleBy::RowGroups,
            workers: None,
            device: DeviceSpec::Cpu,
            dump: None,
            sync_bn: true,
        }
    }
}

impl FinetuneConfig {
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
            return Err(Error::config("--data is required (a labeled shard folder written by `siamlab ingest`)"));
        }
        Ok(())
    }
}

/// The resolved run configuration (`config.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Resolved {
    /// Configuration with defaults filled in.
    pub config: FinetuneConfig,
    /// The model.
    pub net: NetInfo,
    /// Outputs of the head.
    pub outputs: usize,
    /// Loss.
    pub loss: Loss,
    /// Names of the classes or attributes.
    pub label_names: Vec<String>,
    /// Validation split and hold-out (if any).
    pub val: (String, Option<Subset>),
    /// Training rows.
    pub train: (String, Option<Subset>),
    /// Processes of the run (each streams its own block of every epoch; batch per process).
    #[serde(default = "one")]
    pub world: usize,
}

fn one() -> usize {
    1
}
