//! `siamlab train finetune` and `siamlab eval`: a backbone (from scratch, from a SimSiam run,
//! or from a safetensors file with torchvision / timm names) with a linear head, trained with
//! cross-entropy (one class per image) or BCE-with-logits (attribute sets, CelebA); Adam 1e-3,
//! weight decay 1e-5, batch 64 by default. The best epoch by validation is kept
//! (`best.safetensors`) and evaluated on the validation and test splits.
//!
//! Finetuning batches come through [`DevicePrefetch`]: the next batch is uploaded while the
//! device runs the current step, as in pretraining.
//!
//! **Linear evaluation** (`linear = true`): the backbone is frozen, its features (evaluation
//! mode, no augmentation) are computed once per split, and only the linear head trains on
//! them — the cheap protocol of kNN/linear-probe monitors; with augmented views the head
//! would see different features each epoch, at the cost of a backbone forward per image and
//! epoch. The features and targets are copied to the device once; each step gathers its rows
//! there, and the head, its gradients and the optimizer's moments stay on the device.
//!
//! **Validation**: the dataset's `valid` / `val` split when it has one (CelebA), otherwise a
//! seeded hold-out of `val_fraction` of the train split (the rest trains).

use std::path::{Path, PathBuf};

use dfdx::prelude::*;
use serde::{Deserialize, Serialize};
use siamlab_pipeline::Subset;

use crate::checkpoint::{self, append_jsonl, read_json, write_json};
use crate::data::{for_each_batch, Dataset, Feed, Labels};
use crate::device::DeviceSpec;
use crate::error::{Error, IoContext, Result};
use crate::metrics::{multi_label_metrics, top1_accuracy, MultiLabelMetrics};
use crate::net::{build_cls, loss_of, ClsNet, Images, NetInfo};
use crate::optim::{OptimConfig, Optimizer, OptimizerKind};
use crate::params::{self, load_safetensors, save_safetensors, StateDict};
use crate::prefetch::DevicePrefetch;
use crate::progress::Progress;
use crate::schedule::Schedule;

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
    /// Pipeline workers.
    pub workers: Option<usize>,
    /// Where to compute: `cpu`, `cuda`, `cuda:N` (not part of what a resumed run must match).
    pub device: DeviceSpec,
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
            linear: false,
            epochs: 30,
            batch: 64,
            lr: 1e-3,
            wd: 1e-5,
            optimizer: OptimizerKind::Adam,
            cosine: false,
            loss: None,
            seed: 0,
            workers: None,
            device: DeviceSpec::Cpu,
        }
    }
}

impl FinetuneConfig {
    /// Reads a TOML file.
    pub fn from_toml(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).at(path)?;
        toml::from_str(&text).map_err(|e| Error::bad_file(path, e.to_string().replace('\n', " ")))
    }
}

/// Which loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Loss {
    /// Softmax cross-entropy.
    Ce,
    /// Per-output sigmoid BCE-with-logits.
    Bce,
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
}

/// Metrics of a model on a split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalMetrics {
    /// Split (and hold-out) evaluated.
    pub split: String,
    /// Images.
    pub images: usize,
    /// Mean loss.
    pub loss: f64,
    /// Top-1 accuracy (single-label).
    pub top1: Option<f64>,
    /// Multi-label metrics.
    pub multi_label: Option<MultiLabelMetrics>,
}

impl EvalMetrics {
    /// The number model selection maximises: top-1, or mean attribute accuracy.
    pub fn score(&self) -> f64 {
        self.top1.or(self.multi_label.as_ref().map(|m| m.mean_accuracy)).unwrap_or(0.0)
    }

    /// One line for the log.
    pub fn line(&self) -> String {
        match (&self.top1, &self.multi_label) {
            (Some(t), _) => format!("{}: top-1 {:.2}%  loss {:.4}", self.split, 100.0 * t, self.loss),
            (_, Some(m)) => format!(
                "{}: mean acc {:.2}%  macro AUC {:.4}  micro AUC {:.4}  macro/micro Jaccard {:.4}/{:.4}  loss {:.4}",
                self.split,
                100.0 * m.mean_accuracy,
                m.macro_auc,
                m.micro_auc,
                m.macro_jaccard,
                m.micro_jaccard,
                self.loss
            ),
            _ => format!("{}: loss {:.4}", self.split, self.loss),
        }
    }
}

/// Per-epoch record (`metrics.jsonl`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// Epoch.
    pub epoch: u64,
    /// Mean training loss.
    pub train_loss: f64,
    /// Validation metrics.
    pub val: EvalMetrics,
    /// Images per second.
    pub images_per_sec: f64,
    /// Seconds the epoch took, validation included (0 in runs written before it was recorded).
    #[serde(default)]
    pub seconds: f64,
}

/// Checkpointed progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct State {
    epoch: u64,
    step: u64,
    optimizer_t: u64,
    best: Option<(u64, f64)>,
    history: Vec<EpochRecord>,
}

/// The result (`summary.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Initialisation.
    pub init: String,
    /// Linear evaluation or full finetuning.
    pub linear: bool,
    /// Best epoch by validation.
    pub best_epoch: u64,
    /// Validation metrics of the best epoch.
    pub val: EvalMetrics,
    /// Test metrics of the best epoch.
    pub test: Option<EvalMetrics>,
    /// Every epoch.
    pub history: Vec<EpochRecord>,
}

fn one_hot(labels: &[i64], k: usize) -> Result<Vec<f32>> {
    let mut out = vec![0f32; labels.len() * k];
    for (i, &l) in labels.iter().enumerate() {
        if l < 0 || l as usize >= k {
            return Err(Error::config(format!(
                "label {l} is not a class of this dataset (0..{k}); unlabeled rows cannot train a classifier"
            )));
        }
        out[i * k + l as usize] = 1.0;
    }
    Ok(out)
}

/// Targets of a batch as floats `[n, K]`.
fn targets(loss: Loss, outputs: usize, labels: &[i64], attributes: &[i8]) -> Result<Vec<f32>> {
    if !attributes.is_empty() {
        return Ok(attributes.iter().map(|&a| (a > 0) as u8 as f32).collect());
    }
    let _ = loss;
    one_hot(labels, outputs)
}

fn resolve(cfg: &FinetuneConfig, ds: &Dataset) -> Result<(FinetuneConfig, Loss, Vec<String>, Option<PathBuf>)> {
    let mut c = cfg.clone();
    if let Some(b) = &c.backbone {
        c.backbone = Some(crate::names::backbone(b)?.into());
    }
    ds.rows(&c.train_split)?;
    let (names, natural) = match ds.labels() {
        Labels::Classes(n) => (n, Loss::Ce),
        Labels::Attributes(n) => (n, Loss::Bce),
        Labels::None => {
            return Err(Error::config(format!(
                "{} has no labels (classes or attributes); finetuning needs a labeled dataset",
                ds.dir.display()
            )))
        }
    };
    let loss =
        match c.loss.as_deref() {
            None => natural,
            Some("ce") if natural == Loss::Bce => return Err(Error::config(
                "this dataset is multi-label (attributes); cross-entropy assumes one class per image — use --loss bce",
            )),
            Some("ce") => Loss::Ce,
            Some("bce") => Loss::Bce,
            Some(other) => return Err(Error::config(format!("unknown loss {other:?} (ce or bce)"))),
        };
    // The backbone and size, from the pretrained run when there is one.
    let mut weights = None;
    if let Some(run) = c.init.strip_prefix("ssl:") {
        let run = PathBuf::from(run);
        let rc = run.join("config.json");
        if !rc.is_file() {
            return Err(Error::config(format!(
                "--init ssl:{}: no pretraining run there (config.json missing)",
                run.display()
            )));
        }
        let pre: crate::pretrain::Resolved = read_json(&rc)?;
        match &c.backbone {
            Some(b) if *b != pre.net.backbone => {
                return Err(Error::config(format!(
                    "--init ssl:{} was pretrained with backbone {}, not {b}",
                    run.display(),
                    pre.net.backbone
                )))
            }
            _ => c.backbone = Some(pre.net.backbone.clone()),
        }
        if c.image_size.is_none() {
            c.image_size = Some(pre.net.image_size);
        }
        let file = run.join("backbone.safetensors");
        if !file.is_file() {
            return Err(Error::config(format!(
                "--init ssl:{}: backbone.safetensors is missing (the pretraining run has not finished; resume it)",
                run.display()
            )));
        }
        weights = Some(file);
    } else if let Some(file) = c.init.strip_prefix("imagenet:") {
        weights = Some(PathBuf::from(file));
    } else if c.init != "scratch" {
        return Err(Error::config(format!("--init {:?}: expected scratch, ssl:RUN_DIR or imagenet:FILE", c.init)));
    }
    if c.backbone.is_none() {
        return Err(Error::config("--backbone is required (or --init ssl:RUN to take the pretrained one)"));
    }
    if c.image_size.is_none() {
        c.image_size = ds.image_size(&c.train_split)?;
    }
    if c.image_size.is_none() {
        return Err(Error::config("the training images differ in size; choose one with --image-size"));
    }
    if c.test_split.is_none() && ds.has_split("test") {
        c.test_split = Some("test".into());
    }
    if c.val_split.is_none() {
        c.val_split = ["valid", "val", "validation"].iter().find(|s| ds.has_split(s)).map(|s| s.to_string());
    }
    if let Some(v) = &c.val_split {
        ds.rows(v)?;
    }
    if let Some(t) = &c.test_split {
        ds.rows(t)?;
    }
    if c.batch < 2 && !c.linear {
        return Err(Error::config("batch must be at least 2 (BatchNorm needs two samples)"));
    }
    Ok((c, loss, names, weights))
}

fn splits(c: &FinetuneConfig) -> ((String, Option<Subset>), (String, Option<Subset>)) {
    let seed = c.seed ^ 0x007A_11D0;
    match &c.val_split {
        Some(v) => {
            let train = (c.fraction < 1.0).then_some(Subset { seed, lo: 0.0, hi: c.fraction });
            ((c.train_split.clone(), train), (v.clone(), None))
        }
        None => {
            let vf = c.val_fraction;
            let hi = vf + (1.0 - vf) * c.fraction;
            (
                (c.train_split.clone(), Some(Subset { seed, lo: vf, hi })),
                (c.train_split.clone(), Some(Subset { seed, lo: 0.0, hi: vf })),
            )
        }
    }
}

fn eval_feed(c: &FinetuneConfig, split: &(String, Option<Subset>)) -> Feed {
    Feed {
        split: split.0.clone(),
        subset: split.1,
        recipe: "eval",
        views: 1,
        image_size: c.image_size.unwrap_or(32),
        batch: c.batch.max(64),
        train: false,
        seed: c.seed,
        workers: c.workers,
    }
}

fn split_name(s: &(String, Option<Subset>)) -> String {
    match s.1 {
        Some(sub) if sub.lo == 0.0 && sub.hi < 1.0 => format!("{} (hold-out {:.0}%)", s.0, 100.0 * sub.hi),
        _ => s.0.clone(),
    }
}

/// Logits, labels and attributes of every image of a split.
struct Outputs {
    scores: Vec<f32>,
    labels: Vec<i64>,
    attributes: Vec<i8>,
}

fn collect_outputs(ds: &Dataset, feed: &Feed, mut f: impl FnMut(Images<'_>) -> Result<Vec<f32>>) -> Result<Outputs> {
    let mut o = Outputs { scores: vec![], labels: vec![], attributes: vec![] };
    for_each_batch(feed.open(ds, 0, None)?, |b| {
        let s = feed.image_size;
        o.scores.extend(f(Images { data: b.view(0), n: b.len(), h: s, w: s })?);
        o.labels.extend_from_slice(b.labels());
        o.attributes.extend_from_slice(b.attributes());
        Ok(())
    })?;
    Ok(o)
}

fn metrics_of(split: String, loss: Loss, outputs: usize, logits: &[f32], o: &Outputs) -> Result<EvalMetrics> {
    let n = o.labels.len();
    let t = targets(loss, outputs, &o.labels, &o.attributes)?;
    let dev = Cpu::default();
    let l = if n == 0 {
        0.0
    } else {
        loss_of(loss, dev.tensor_from_vec(logits.to_vec(), (n, outputs)), dev.tensor_from_vec(t, (n, outputs))).array()
            as f64
    };
    let (top1, multi) = if o.attributes.is_empty() {
        (Some(top1_accuracy(logits, outputs, &o.labels)), None)
    } else {
        (None, Some(multi_label_metrics(logits, &o.attributes, outputs)))
    };
    Ok(EvalMetrics { split, images: n, loss: l, top1, multi_label: multi })
}

/// Runs (or resumes) a finetuning or linear-evaluation run into `run`.
pub fn finetune(
    cfg: &FinetuneConfig,
    run: &Path,
    resume: bool,
    quiet: bool,
    log: &mut dyn FnMut(&str),
) -> Result<Summary> {
    let ds = Dataset::open_with(&cfg.data, &cfg.store)?;
    let (c, loss, names, weights) = resolve(cfg, &ds)?;
    let outputs = names.len();
    let image_size = c.image_size.unwrap_or(32);
    let backbone = c.backbone.clone().unwrap_or_default();
    let mut net = build_cls(c.device, c.seed, &backbone, image_size, outputs)?;
    if let Some(file) = &weights {
        let report = net.load_backbone(&load_safetensors(file)?, file)?;
        for line in report.lines() {
            log(&format!("{}: {line}", file.display()));
        }
    }
    let (train, val) = splits(&c);
    let mut same = c.clone();
    same.workers = None;
    same.device = DeviceSpec::Cpu;
    let resolved = Resolved {
        config: same,
        net: net.info().clone(),
        outputs,
        loss,
        label_names: names,
        val: val.clone(),
        train: train.clone(),
    };
    let _lock = checkpoint::lock(run)?;
    let config_path = run.join("config.json");
    let optim = match c.optimizer {
        OptimizerKind::Adam => OptimConfig::adam(c.wd),
        OptimizerKind::Sgd => OptimConfig::sgd(c.wd),
    };
    let mut opt = Optimizer::new(optim);
    let mut state = State { epoch: 0, step: 0, optimizer_t: 0, best: None, history: vec![] };
    match if resume { checkpoint::load::<State>(run)? } else { None } {
        Some(l) => {
            let before: Resolved = read_json(&config_path)?;
            if before != resolved {
                return Err(Error::bad_file(
                    &config_path,
                    format!(
                        "the run was started with other settings ({}); resume with the same flags or use a new --out",
                        checkpoint::config_changes(&before, &resolved).join(", ")
                    ),
                ));
            }
            let file = l.dir.join("model.safetensors");
            net.walk(&mut |s, v| params::restore_one(s, v, &l.model, &file))?;
            restore_opt(&mut opt, &l.optimizer, &l.dir.join("optimizer.safetensors"), &mut *net, c.linear)?;
            opt.t = l.state.optimizer_t;
            state = l.state;
            log(&format!("resuming {} at epoch {}", run.display(), state.epoch));
        }
        None => {
            if run.join("checkpoint").exists() {
                return Err(Error::config(format!(
                    "{} already holds a run; continue it with --resume or choose another --out",
                    run.display()
                )));
            }
            write_json(&config_path, &resolved)?;
            let _ = std::fs::remove_file(run.join("metrics.jsonl"));
        }
    }
    let train_feed = Feed {
        split: train.0.clone(),
        subset: train.1,
        recipe: if c.linear { "eval" } else { "finetune" },
        views: 1,
        image_size,
        batch: c.batch,
        train: !c.linear,
        seed: c.seed,
        workers: c.workers,
    };
    let val_feed = eval_feed(&c, &val);
    let val_name = split_name(&val);

    if c.linear {
        linear(
            &c,
            &ds,
            &mut *net,
            &train_feed,
            &val_feed,
            &val_name,
            loss,
            outputs,
            &mut opt,
            &mut state,
            run,
            quiet,
            log,
        )?;
    } else {
        let batches = train_feed.open(&ds, 0, None)?.batches();
        if batches == 0 {
            return Err(Error::config(format!("the training split has fewer images than one batch of {}", c.batch)));
        }
        let schedule = Schedule { base_lr: c.lr, warmup: 0, total: batches as u64 * c.epochs, cosine: c.cosine };
        let bar = Progress::new(quiet, schedule.total, state.step, "finetune");
        while state.epoch < c.epochs {
            let t0 = std::time::Instant::now();
            let (mut sum, mut count, mut images) = (0f64, 0usize, 0usize);
            let pipeline = train_feed.open(&ds, state.epoch, None)?;
            let mut stage = DevicePrefetch::new(pipeline, net.uploader(), 1, (image_size, image_size));
            while let Some(b) = stage.next_batch() {
                let b = b?;
                let n = b.len;
                let t = targets(loss, outputs, &b.labels, &b.attributes)?;
                let value = net.train_uploaded(b.views, loss, t, 1.0, &mut || stage.fill())?;
                if !value.is_finite() {
                    return Err(Error::NonFinite { value, epoch: state.epoch, step: state.step });
                }
                let lr = schedule.lr(state.step);
                net.step(&mut opt, lr)?;
                state.step += 1;
                sum += value as f64;
                count += 1;
                images += n;
                bar.step(state.step, value, lr, images as f64 / t0.elapsed().as_secs_f64());
            }
            drop(stage);
            let secs = t0.elapsed().as_secs_f64();
            let o = collect_outputs(&ds, &val_feed, |x| net.logits(x))?;
            let val_m = metrics_of(val_name.clone(), loss, outputs, &o.scores, &o)?;
            let record = EpochRecord {
                epoch: state.epoch,
                train_loss: sum / count.max(1) as f64,
                val: val_m,
                images_per_sec: images as f64 / secs,
                seconds: t0.elapsed().as_secs_f64(),
            };
            end_epoch(record, &mut state, &mut opt, &mut *net, run, c.linear, &bar, log)?;
        }
        bar.finish();
    }
    finish(&c, &ds, &mut *net, &val_feed, &val_name, loss, outputs, &state, run, log)
}

#[allow(clippy::too_many_arguments)]
fn end_epoch(
    record: EpochRecord,
    state: &mut State,
    opt: &mut Optimizer,
    net: &mut dyn ClsNet,
    run: &Path,
    linear: bool,
    bar: &Progress,
    log: &mut dyn FnMut(&str),
) -> Result<()> {
    let score = record.val.score();
    let better = state.best.is_none_or(|(_, b)| score > b);
    let line = format!(
        "epoch {:>3}  train loss {:.4}  {}{}  {:.1} img/s",
        record.epoch + 1,
        record.train_loss,
        record.val.line(),
        if better { "  (best)" } else { "" },
        record.images_per_sec
    );
    bar.suspend(|| log(&line));
    if better {
        state.best = Some((record.epoch, score));
        let dict = crate::net::state_of(&mut |f| net.walk(f))?;
        save_safetensors(&run.join("best.safetensors"), &dict)?;
    }
    append_jsonl(&run.join("metrics.jsonl"), &record)?;
    crate::plots::write_run_plot(run)?;
    state.history.push(record);
    state.epoch += 1;
    state.optimizer_t = opt.t;
    let model = crate::net::state_of(&mut |f| net.walk(f))?;
    let optimizer = opt_state(opt, net, linear)?;
    checkpoint::save(run, state, &model, &optimizer)
}

/// Optimizer state names: the head only for linear evaluation, else backbone and head.
fn opt_state(opt: &Optimizer, net: &mut dyn ClsNet, linear: bool) -> Result<StateDict> {
    checkpoint::optimizer_state(opt, &mut |f| {
        net.walk(&mut |s, v| if linear && !s.name.starts_with("fc.") { Ok(false) } else { f(s, v) })
    })
}

fn restore_opt(opt: &mut Optimizer, dict: &StateDict, file: &Path, net: &mut dyn ClsNet, linear: bool) -> Result<()> {
    checkpoint::restore_optimizer(opt, dict, file, &mut |f| {
        net.walk(&mut |s, v| if linear && !s.name.starts_with("fc.") { Ok(false) } else { f(s, v) })
    })
}

#[allow(clippy::too_many_arguments)]
fn linear(
    c: &FinetuneConfig,
    ds: &Dataset,
    net: &mut dyn ClsNet,
    train_feed: &Feed,
    val_feed: &Feed,
    val_name: &str,
    loss: Loss,
    outputs: usize,
    opt: &mut Optimizer,
    state: &mut State,
    run: &Path,
    quiet: bool,
    log: &mut dyn FnMut(&str),
) -> Result<()> {
    let dim = net.info().features;
    log(&format!("linear evaluation: extracting frozen {dim}-d features"));
    let tr = collect_outputs(ds, train_feed, |x| net.features(x))?;
    let va = collect_outputs(ds, val_feed, |x| net.features(x))?;
    let n = tr.labels.len();
    if n == 0 {
        return Err(Error::config("the training split is empty"));
    }
    let t_all = targets(loss, outputs, &tr.labels, &tr.attributes)?;
    // Features and targets on the device once; the head (fresh, or resumed from the
    // checkpoint) is the net's, on the device too.
    net.freeze_backbone(true);
    let train_set = net.upload_features(&tr.scores, &t_all, n)?;
    let val_rows = va.labels.len();
    let val_set = if val_rows == 0 {
        None
    } else {
        let t_val = targets(loss, outputs, &va.labels, &va.attributes)?;
        Some(net.upload_features(&va.scores, &t_val, val_rows)?)
    };
    let batch = c.batch.max(1);
    let steps_per_epoch = n.div_ceil(batch) as u64;
    let schedule = Schedule { base_lr: c.lr, warmup: 0, total: steps_per_epoch * c.epochs, cosine: c.cosine };
    let bar = Progress::new(quiet, schedule.total, state.step, "linear");
    while state.epoch < c.epochs {
        let t0 = std::time::Instant::now();
        let mut order: Vec<usize> = (0..n).collect();
        let mut rng = c.seed ^ (state.epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        for i in (1..n).rev() {
            rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            order.swap(i, (rng >> 33) as usize % (i + 1));
        }
        let mut sum = 0f64;
        for chunk in order.chunks(batch) {
            let value = net.train_head(&train_set, chunk, loss)?;
            if !value.is_finite() {
                return Err(Error::NonFinite { value, epoch: state.epoch, step: state.step });
            }
            let lr = schedule.lr(state.step);
            net.step(opt, lr)?;
            state.step += 1;
            sum += value as f64 * chunk.len() as f64;
            bar.step(state.step, value, lr, n as f64 / t0.elapsed().as_secs_f64());
        }
        let logits = match &val_set {
            Some(set) => net.head_logits(set)?,
            None => vec![],
        };
        let val_m = metrics_of(val_name.to_string(), loss, outputs, &logits, &va)?;
        let record = EpochRecord {
            epoch: state.epoch,
            train_loss: sum / n as f64,
            val: val_m,
            images_per_sec: n as f64 / t0.elapsed().as_secs_f64(),
            seconds: t0.elapsed().as_secs_f64(),
        };
        end_epoch(record, state, opt, net, run, true, &bar, log)?;
    }
    bar.finish();
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn finish(
    c: &FinetuneConfig,
    ds: &Dataset,
    net: &mut dyn ClsNet,
    val_feed: &Feed,
    val_name: &str,
    loss: Loss,
    outputs: usize,
    state: &State,
    run: &Path,
    log: &mut dyn FnMut(&str),
) -> Result<Summary> {
    let best_file = run.join("best.safetensors");
    let best = load_safetensors(&best_file)?;
    net.walk(&mut |s, v| params::restore_one(s, v, &best, &best_file))?;
    let o = collect_outputs(ds, val_feed, |x| net.logits(x))?;
    let val = metrics_of(val_name.to_string(), loss, outputs, &o.scores, &o)?;
    let test = match &c.test_split {
        Some(t) => {
            let feed = eval_feed(c, &(t.clone(), None));
            let o = collect_outputs(ds, &feed, |x| net.logits(x))?;
            Some(metrics_of(t.clone(), loss, outputs, &o.scores, &o)?)
        }
        None => None,
    };
    let best_epoch = state.best.map_or(0, |b| b.0);
    log(&format!("best epoch {}: {}", best_epoch + 1, val.line()));
    if let Some(t) = &test {
        log(&format!("best epoch {}: {}", best_epoch + 1, t.line()));
    }
    let summary =
        Summary { init: c.init.clone(), linear: c.linear, best_epoch, val, test, history: state.history.clone() };
    write_json(&run.join("summary.json"), &summary)?;
    Ok(summary)
}

/// `siamlab eval`: the best model of finetuning run `run` on `split` of its dataset (or of
/// `data`, which must have the same labels).
pub fn evaluate(
    run: &Path,
    split: &str,
    data: Option<&Path>,
    workers: Option<usize>,
    device: DeviceSpec,
    store: &siamlab_datasets::StoreOptions,
) -> Result<EvalMetrics> {
    let config_path = run.join("config.json");
    if !config_path.is_file() {
        return Err(Error::config(format!("{}: not a finetuning run (config.json missing)", run.display())));
    }
    let r: Resolved = read_json(&config_path).map_err(|_| {
        Error::bad_file(
            &config_path,
            "not a finetuning run's configuration (pretraining runs are evaluated by finetuning them)",
        )
    })?;
    let ds = Dataset::open_with(data.unwrap_or(&r.config.data), store)?;
    let names = match ds.labels() {
        Labels::Classes(n) | Labels::Attributes(n) => n,
        Labels::None => return Err(Error::config(format!("{} has no labels", ds.dir.display()))),
    };
    if names != r.label_names {
        return Err(Error::config(format!("{} has other classes than the run was trained on", ds.dir.display())));
    }
    ds.rows(split)?;
    let mut net = build_cls(device, 0, &r.net.backbone, r.net.image_size, r.outputs)?;
    let best_file = run.join("best.safetensors");
    let best = load_safetensors(&best_file)?;
    net.walk(&mut |s, v| params::restore_one(s, v, &best, &best_file))?;
    let mut c = r.config.clone();
    c.workers = workers.or(c.workers);
    let feed = eval_feed(&c, &(split.to_string(), None));
    let o = collect_outputs(&ds, &feed, |x| net.logits(x))?;
    metrics_of(split.to_string(), r.loss, r.outputs, &o.scores, &o)
}
