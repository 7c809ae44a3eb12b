//! `siamlab train pretrain|finetune` and `siamlab eval`: flags (over an optional TOML
//! `--config`) into the trainer's configurations.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use siamlab_model::init::InitScheme;
use siamlab_trainer::optim::OptimizerKind;
use siamlab_trainer::run::files::{BACKBONE, SUMMARY};
use siamlab_trainer::{
    dump_finetune, evaluate_in, finetune_in, pretrain_in, DeviceSpec, FinetuneConfig, PretrainConfig,
};
use siamlab_world::World;

#[derive(Debug, Subcommand)]
pub enum TrainCommand {
    /// SimSiam pretraining on the images of a split (labels unused).
    Pretrain(PretrainArgs),
    /// Finetune (or, with --linear, linearly evaluate) a backbone on a labeled dataset.
    Finetune(FinetuneArgs),
}

#[derive(Debug, Args)]
pub struct PretrainArgs {
    /// TOML file with any of the options below (flags override it).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Run folder (checkpoints, metrics.jsonl, plots, backbone.safetensors).
    #[arg(long)]
    out: PathBuf,
    /// Continue the run in --out from its last checkpoint.
    #[arg(long)]
    resume: bool,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
    /// Under mpirun / srun: BatchNorm on each rank's own batch instead of the statistics of all
    /// ranks (synchronized BatchNorm is the default with several ranks).
    #[arg(long)]
    no_sync_bn: bool,
    /// Shard folder written by `siamlab ingest`, or its URL (s3://bucket/prefix, gs://, az://,
    /// http(s)://).
    #[arg(long)]
    data: Option<PathBuf>,
    #[command(flatten)]
    cache: super::store::CacheArgs,
    /// Split to pretrain on [default: train].
    #[arg(long)]
    split: Option<String>,
    /// Use only this fraction of the split (seeded) [default: 1].
    #[arg(long)]
    fraction: Option<f64>,
    /// resnet18, resnet18_cifar, resnet18_imagenet, efficientnet_b0, vit_s, pit_ti, or a reduced
    /// preset (resnet18_tiny, efficientnet_tiny, vit_tiny, pit_tiny) [default: resnet18].
    #[arg(long, value_parser = super::names::BACKBONE)]
    backbone: Option<String>,
    /// Input size [default: the split's image size].
    #[arg(long)]
    image_size: Option<usize>,
    /// Epochs [default: 100].
    #[arg(long)]
    epochs: Option<u64>,
    /// Images per micro-batch [default: 64].
    #[arg(long)]
    batch: Option<usize>,
    /// Micro-batches per optimizer step [default: 8].
    #[arg(long)]
    accum: Option<usize>,
    /// Peak learning rate [default: 1e-3 × batch × accum / 256 (adam), 0.05 × … (sgd)].
    #[arg(long)]
    lr: Option<f64>,
    /// Weight decay [default: 1e-5 (adam), 1e-4 (sgd; 5e-4 on CIFAR)].
    #[arg(long)]
    wd: Option<f64>,
    /// adam or sgd (momentum 0.9) [default: adam].
    #[arg(long)]
    optimizer: Option<OptimizerKind>,
    /// Epochs of linear warmup [default: 0].
    #[arg(long)]
    warmup_epochs: Option<f64>,
    /// Set the cosine once per epoch (the official code's schedule) [default: every step].
    #[arg(long)]
    cosine_per_epoch: bool,
    /// Projection dimension: 2048, 1024, 512, 256 or 128 [default: 2048].
    #[arg(long)]
    proj_dim: Option<usize>,
    /// Seed [default: 0].
    #[arg(long)]
    seed: Option<u64>,
    /// Backbone initialisation: uniform (PyTorch's layer defaults), library (torchvision's
    /// Kaiming fan-out for ResNet, timm's for the others) or simsiam (the official SimSiam
    /// encoder's: library + zero-init residual for ResNet) [default: uniform].
    #[arg(long)]
    init_scheme: Option<InitScheme>,
    /// Step the predictor at the base learning rate, not decayed (the official --fix-pred-lr).
    #[arg(long)]
    fix_pred_lr: bool,
    /// As the official projector: its last Linear's bias frozen and its output BatchNorm
    /// without affine parameters (projector.6.bias, projector.7.weight/bias not trained).
    #[arg(long)]
    frozen_projector_output: bool,
    /// No weight decay on biases, BatchNorm/LayerNorm parameters, pos_embed and cls_token
    /// (timm's rule; the official code decays every parameter).
    #[arg(long)]
    no_decay_norm_bias: bool,
    /// What each epoch permutes before shuffling rows inside a window: row-groups (across the
    /// split) or shards (then row groups inside each; for a bucket read through a cache smaller
    /// than the data) [default: row-groups].
    #[arg(long)]
    shuffle_by: Option<siamlab_pipeline::ShuffleBy>,
    /// Pipeline worker threads [default: all cores].
    #[arg(long)]
    workers: Option<usize>,
    /// Where to compute: cpu, cuda or cuda:N (cuda needs a build with the `cuda` feature,
    /// see scripts/build-cuda.sh) [default: cpu].
    #[arg(long)]
    device: Option<DeviceSpec>,
    /// kNN monitor every N epochs, 0 = off [default: 10].
    #[arg(long)]
    knn_every: Option<u64>,
    /// Labeled shard folder for the kNN monitor [default: --data].
    #[arg(long)]
    knn_data: Option<PathBuf>,
    /// Fraction of the kNN bank and query splits [default: 1].
    #[arg(long)]
    knn_fraction: Option<f64>,
    /// Held-out split for the cosine-similarity monitor [default: test, when present].
    #[arg(long)]
    monitor_split: Option<String>,
    /// Also checkpoint every N optimizer steps [default: 0 = each epoch only].
    #[arg(long)]
    checkpoint_every: Option<u64>,
    /// Stop after N optimizer steps of this invocation, with a checkpoint to `--resume` from
    /// (e.g. to fit a job into a cluster's time limit).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    max_steps: Option<u64>,
    /// Debugging: write the first N micro-batches (.npy), the initial tensors and each step's
    /// gradients and tensors (.safetensors) into DIR, then stop (tools/step_parity.py replays
    /// them in PyTorch).
    #[arg(long, num_args = 2, value_names = ["N", "DIR"])]
    dump_batches: Option<Vec<String>>,
}

#[derive(Debug, Args)]
pub struct FinetuneArgs {
    /// TOML file with any of the options below (flags override it).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Run folder.
    #[arg(long)]
    out: PathBuf,
    /// Continue the run in --out from its last checkpoint.
    #[arg(long)]
    resume: bool,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
    /// Labeled shard folder, or its URL (s3://bucket/prefix, …).
    #[arg(long)]
    data: Option<PathBuf>,
    #[command(flatten)]
    cache: super::store::CacheArgs,
    /// scratch, ssl:RUN_DIR (a pretraining run) or imagenet:FILE (safetensors with torchvision/timm
    /// names) [default: scratch].
    #[arg(long)]
    init: Option<String>,
    /// Initialisation of a scratch backbone: uniform, library or simsiam (see `train pretrain
    /// --help`) [default: uniform].
    #[arg(long)]
    init_scheme: Option<InitScheme>,
    /// Frozen backbone, linear head on its features.
    #[arg(long)]
    linear: bool,
    /// Backbone [default: the pretrained run's].
    #[arg(long, value_parser = super::names::BACKBONE)]
    backbone: Option<String>,
    /// Input size [default: the pretrained run's, else the images'].
    #[arg(long)]
    image_size: Option<usize>,
    /// Training split [default: train].
    #[arg(long)]
    train_split: Option<String>,
    /// Validation split [default: valid/val when present, else a hold-out of train].
    #[arg(long)]
    val_split: Option<String>,
    /// Hold-out fraction when there is no validation split [default: 0.1].
    #[arg(long)]
    val_fraction: Option<f64>,
    /// Test split [default: test, when present].
    #[arg(long)]
    test_split: Option<String>,
    /// Use only this fraction of the training rows [default: 1].
    #[arg(long)]
    fraction: Option<f64>,
    /// Epochs [default: 30].
    #[arg(long)]
    epochs: Option<u64>,
    /// Batch size [default: 64].
    #[arg(long)]
    batch: Option<usize>,
    /// Learning rate [default: 1e-3].
    #[arg(long)]
    lr: Option<f64>,
    /// Weight decay [default: 1e-5].
    #[arg(long)]
    wd: Option<f64>,
    /// adam or sgd [default: adam].
    #[arg(long)]
    optimizer: Option<OptimizerKind>,
    /// Cosine learning-rate decay [default: constant].
    #[arg(long)]
    cosine: bool,
    /// ce or bce [default: by the labels: ce for classes, bce for attributes].
    #[arg(long)]
    loss: Option<String>,
    /// Seed [default: 0].
    #[arg(long)]
    seed: Option<u64>,
    /// What each epoch permutes before shuffling rows inside a window: row-groups (across the
    /// split) or shards (then row groups inside each; for a bucket read through a cache smaller
    /// than the data) [default: row-groups].
    #[arg(long)]
    shuffle_by: Option<siamlab_pipeline::ShuffleBy>,
    /// Pipeline worker threads [default: all cores].
    #[arg(long)]
    workers: Option<usize>,
    /// Where to compute: cpu, cuda or cuda:N (cuda needs a build with the `cuda` feature,
    /// see scripts/build-cuda.sh) [default: cpu].
    #[arg(long)]
    device: Option<DeviceSpec>,
    /// Debugging: write the first N batches (.npy) and their targets, the initial tensors and
    /// each step's gradients and tensors (.safetensors) into DIR, then stop
    /// (tools/step_parity.py replays them in PyTorch).
    #[arg(long, num_args = 2, value_names = ["N", "DIR"])]
    dump_batches: Option<Vec<String>>,
    /// Under mpirun / srun: BatchNorm on each rank's own batch instead of the statistics of all
    /// ranks (synchronized BatchNorm is the default with several ranks).
    #[arg(long)]
    no_sync_bn: bool,
}

macro_rules! set {
    ($cfg:ident, $args:ident: $($field:ident),*) => {
        $(if let Some(v) = $args.$field { $cfg.$field = v.into(); })*
    };
}

pub fn pretrain_config(a: PretrainArgs) -> anyhow::Result<(PretrainConfig, PathBuf, bool, bool)> {
    let mut c = PretrainConfig::read(a.config.as_deref())?;
    c.store = a.cache.options();
    set!(c, a: data, split, fraction, backbone, epochs, batch, accum, optimizer, warmup_epochs, proj_dim, seed,
         knn_every, knn_fraction, checkpoint_every, init_scheme, shuffle_by);
    for (dst, on) in [
        (&mut c.fix_pred_lr, a.fix_pred_lr),
        (&mut c.frozen_projector_output, a.frozen_projector_output),
        (&mut c.no_decay_norm_bias, a.no_decay_norm_bias),
        (&mut c.cosine_per_epoch, a.cosine_per_epoch),
    ] {
        if on {
            *dst = true;
        }
    }
    if a.image_size.is_some() {
        c.image_size = a.image_size;
    }
    if a.lr.is_some() {
        c.lr = a.lr;
    }
    if a.wd.is_some() {
        c.wd = a.wd;
    }
    if a.workers.is_some() {
        c.workers = a.workers;
    }
    if let Some(d) = a.device {
        c.device = d;
    }
    if a.knn_data.is_some() {
        c.knn_data = a.knn_data;
    }
    if a.monitor_split.is_some() {
        c.monitor_split = a.monitor_split;
    }
    if a.no_sync_bn {
        c.sync_bn = false;
    }
    if a.max_steps.is_some() {
        c.max_steps = a.max_steps;
    }
    if let Some(d) = a.dump_batches {
        c.dump = Some(dump_config(&d)?);
    }
    c.require_data()?;
    Ok((c, a.out, a.resume, a.quiet))
}

pub fn finetune_config(a: FinetuneArgs) -> anyhow::Result<(FinetuneConfig, PathBuf, bool, bool)> {
    let mut c = FinetuneConfig::read(a.config.as_deref())?;
    c.store = a.cache.options();
    set!(c, a: data, init, train_split, val_fraction, fraction, epochs, batch, lr, wd, optimizer, seed, init_scheme,
         shuffle_by);
    if a.linear {
        c.linear = true;
    }
    if a.cosine {
        c.cosine = true;
    }
    for (dst, src) in [
        (&mut c.backbone, a.backbone),
        (&mut c.val_split, a.val_split),
        (&mut c.test_split, a.test_split),
        (&mut c.loss, a.loss),
    ] {
        if src.is_some() {
            *dst = src;
        }
    }
    if a.image_size.is_some() {
        c.image_size = a.image_size;
    }
    if a.workers.is_some() {
        c.workers = a.workers;
    }
    if let Some(d) = a.device {
        c.device = d;
    }
    if let Some(d) = a.dump_batches {
        c.dump = Some(dump_config(&d)?);
    }
    if a.no_sync_bn {
        c.sync_bn = false;
    }
    c.require_data()?;
    Ok((c, a.out, a.resume, a.quiet))
}

/// `--dump-batches N DIR`.
fn dump_config(d: &[String]) -> anyhow::Result<siamlab_trainer::dump::DumpConfig> {
    let batches = d[0]
        .parse()
        .map_err(|_| anyhow::anyhow!("--dump-batches N DIR: N must be a count of micro-batches, not {:?}", d[0]))?;
    Ok(siamlab_trainer::dump::DumpConfig { batches, dir: PathBuf::from(&d[1]) })
}

pub fn run(cmd: TrainCommand, world: &World) -> anyhow::Result<()> {
    let mut log = |line: &str| outln!("{line}");
    match cmd {
        TrainCommand::Pretrain(a) => {
            let (c, out, resume, quiet) = pretrain_config(a)?;
            let o = pretrain_in(world, &c, &out, resume, quiet, &mut log)?;
            if world.is_root() {
                outln!("pretrained backbone: {}", o.run.join(BACKBONE).display());
            }
        }
        TrainCommand::Finetune(a) => {
            let (c, out, resume, quiet) = finetune_config(a)?;
            if c.dump.is_some() {
                if resume {
                    anyhow::bail!("--dump-batches records a run from its initial weights; not with --resume");
                }
                let dir = dump_finetune(&c, &out, quiet, &mut log)?;
                outln!("dump: {}", dir.display());
            } else {
                finetune_in(world, &c, &out, resume, quiet, &mut log)?;
                if world.is_root() {
                    outln!("summary: {}", out.join(SUMMARY).display());
                }
            }
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
pub fn eval(
    world: &World,
    run: PathBuf,
    split: String,
    data: Option<PathBuf>,
    workers: Option<usize>,
    device: DeviceSpec,
    json: bool,
    store: &siamlab_datasets::StoreOptions,
) -> anyhow::Result<()> {
    let m = evaluate_in(world, &run, &split, data.as_deref(), workers, device, store)?;
    if !world.is_root() {
        return Ok(());
    }
    if json {
        outln!("{}", serde_json::to_string_pretty(&m)?);
    } else {
        outln!("{}", m.line());
    }
    Ok(())
}
