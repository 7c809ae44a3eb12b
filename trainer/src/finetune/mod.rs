//! `siamlab train finetune` and `siamlab eval`: a backbone (from scratch, from a SimSiam run,
//! or from a safetensors file with torchvision / timm names) with a linear head, trained with
//! cross-entropy (one class per image) or BCE-with-logits (attribute sets, CelebA); Adam 1e-3,
//! weight decay 1e-5, batch 64 by default. The best epoch by validation is kept
//! (`best.safetensors`) and evaluated on the validation and test splits.
//!
//! Finetuning batches come through [`DevicePrefetch`]: the next batch is uploaded while the
//! device runs the current step, as in pretraining.
//!
//! **Linear evaluation** (`linear = true`, [`linear`]): the backbone is frozen, its features
//! (evaluation mode, no augmentation) are computed once per split, and only the linear head
//! trains on them — the cheap protocol of kNN/linear-probe monitors; with augmented views the
//! head would see different features each epoch, at the cost of a backbone forward per image
//! and epoch.
//!
//! **Validation**: the dataset's `valid` / `val` split when it has one (CelebA), otherwise a
//! seeded hold-out of `val_fraction` of the train split (the rest trains).
//!
//! **Several ranks** ([`finetune_in`], [`evaluate_in`]): data-parallel as pretraining — each
//! rank trains on its block of every epoch, gradients are averaged each step, BatchNorm is
//! synchronized unless `sync_bn` is off; every evaluation splits the images over the ranks and
//! gathers their outputs in the split's order, so the metrics are one process's.

pub mod config;
mod epoch;
pub mod eval;
mod linear;
pub mod record;

use std::path::{Path, PathBuf};
use std::rc::Rc;

use siamlab_model::sync_batch_norm;
use siamlab_pipeline::Subset;
use siamlab_world::World;

use crate::data::{Dataset, Feed, Labels};
use crate::device::DeviceSpec;
use crate::error::{Error, Result};
use crate::finetune::epoch::{end_epoch, optimized};
use crate::finetune::eval::{collect_outputs, eval_feed, metrics_of, split_name, targets};
use crate::finetune::record::State;
use crate::head::Loss;
use crate::net::{build_cls_with, ClsNet};
use crate::optim::{OptimConfig, Optimizer, OptimizerKind};
use crate::parallel::{broadcast_tensors, mean_over_ranks, rank_device, WorldStats};
use crate::params::{self, load_safetensors};
use crate::prefetch::DevicePrefetch;
use crate::progress::Progress;
use crate::run::files::{write_json, BEST, SUMMARY};
use crate::run::{self, model_of, start_or_resume_in};
use crate::schedule::Schedule;
use crate::step::{finite, optimizer_step};

pub use config::{FinetuneConfig, Resolved};
pub use eval::{evaluate, evaluate_in};
pub use record::{EpochRecord, EvalMetrics, Summary};

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
        let pre = model_of(&run).map_err(|e| Error::config(format!("--init ssl:{}: {e}", run.display())))?;
        match &c.backbone {
            Some(b) if *b != pre.backbone => {
                return Err(Error::config(format!(
                    "--init ssl:{} was pretrained with backbone {}, not {b}",
                    run.display(),
                    pre.backbone
                )))
            }
            _ => c.backbone = Some(pre.backbone.clone()),
        }
        if c.image_size.is_none() {
            c.image_size = Some(pre.image_size);
        }
        let Some(file) = pre.backbone_file else {
            return Err(Error::config(format!(
                "--init ssl:{}: backbone.safetensors is missing (not a pretraining run, or it has not finished; resume it)",
                run.display()
            )));
        };
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

/// Runs (or resumes) a finetuning or linear-evaluation run into `run`. A configuration with
/// `dump` is for [`dump_finetune`].
pub fn finetune(
    cfg: &FinetuneConfig,
    run: &Path,
    resume: bool,
    quiet: bool,
    log: &mut dyn FnMut(&str),
) -> Result<Summary> {
    finetune_in(&World::single(), cfg, run, resume, quiet, log)
}

/// [`finetune`] as one rank of `world` (data-parallel, as [`crate::pretrain_in`]): every rank
/// trains on its own block of each epoch with `cfg.batch` images per step (the global batch is
/// `world × batch`), starts from rank 0's tensors and averages its gradients with the others'
/// each step; BatchNorm's statistics span all ranks unless `cfg.sync_bn` is off. Validation and
/// the final evaluation split their images over the ranks and give every rank the same
/// metrics. Rank 0 alone writes the run folder and logs. Linear evaluation computes the
/// features on all ranks and trains the (small) head on each, identically.
pub fn finetune_in(
    world: &World,
    cfg: &FinetuneConfig,
    run: &Path,
    resume: bool,
    quiet: bool,
    log: &mut dyn FnMut(&str),
) -> Result<Summary> {
    run_finetune(world, cfg, run, resume, quiet, log)?
        .ok_or_else(|| Error::config("--dump-batches stops the run once the dump is written (dump_finetune)"))
}

/// Runs the first steps of a finetuning run into `run`, recording them as `cfg.dump` says
/// ([`crate::dump`]), then stops; returns the dump folder.
pub fn dump_finetune(cfg: &FinetuneConfig, run: &Path, quiet: bool, log: &mut dyn FnMut(&str)) -> Result<PathBuf> {
    let Some(d) = &cfg.dump else {
        return Err(Error::config("dump_finetune needs --dump-batches N DIR"));
    };
    run_finetune(&World::single(), cfg, run, false, quiet, log)?;
    Ok(d.dir.clone())
}

/// What `dump.json` records of a finetuning run besides its batches: the resolved
/// configuration, and the schedule and optimizer as a pretraining run's configuration names
/// them (`tools/step_parity.py` reads both kinds).
#[derive(serde::Serialize)]
struct DumpedRun<'a> {
    #[serde(flatten)]
    config: &'a Resolved,
    schedule: Schedule,
    optim: OptimConfig,
}

/// [`finetune_in`]; `None` when a dump stopped it.
fn run_finetune(
    world: &World,
    cfg: &FinetuneConfig,
    run: &Path,
    resume: bool,
    quiet: bool,
    log: &mut dyn FnMut(&str),
) -> Result<Option<Summary>> {
    let (rank, ranks, root) = (world.rank(), world.size(), world.is_root());
    let quiet = quiet || !root;
    let mut log = |line: &str| {
        if root {
            log(line)
        }
    };
    let log = &mut log;
    let ds = Dataset::open_with(&cfg.data, &cfg.store)?;
    let (c, loss, names, weights) = resolve(cfg, &ds)?;
    if ranks > 1 && c.dump.is_some() {
        return Err(Error::config("--dump-batches records one process's run; not under mpirun / srun"));
    }
    // Synchronized BatchNorm on this thread while the run lasts (the linear probe's backbone
    // runs in evaluation mode only).
    let _sync = (ranks > 1 && c.sync_bn && !c.linear).then(|| sync_batch_norm(Rc::new(WorldStats(world.split_off()))));
    // The gradient average of each step runs on a communicator of its own (started during the
    // backward pass: `ClsNet::overlap_next`).
    let grad_world = world.split_off();
    let outputs = names.len();
    let image_size = c.image_size.unwrap_or(32);
    let backbone = c.backbone.clone().unwrap_or_default();
    let (world, device) = rank_device(world, c.device)?;
    let world = &world;
    let mut net = build_cls_with(device, c.seed, &backbone, image_size, outputs, c.init_scheme)?;
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
    same.dump = None;
    let resolved = Resolved {
        config: same,
        net: net.info().clone(),
        outputs,
        loss,
        label_names: names,
        val: val.clone(),
        train: train.clone(),
        world: ranks,
    };
    let optim = match c.optimizer {
        OptimizerKind::Adam => OptimConfig::adam(c.wd),
        OptimizerKind::Sgd => OptimConfig::sgd(c.wd),
    };
    if c.dump.is_some() && (resume || c.linear) {
        return Err(Error::config(
            "--dump-batches records finetuning steps from the initial weights; not with --resume or --linear",
        ));
    }
    let mut opt = Optimizer::new(optim);
    let mut state = State { epoch: 0, step: 0, optimizer_t: 0, best: None, history: vec![] };
    let (_lock, loaded) = start_or_resume_in::<_, State>(world, run, resume, &resolved)?;
    if let Some(l) = loaded {
        opt.t = l.state.optimizer_t;
        run::restore(&l, &mut opt, &mut |f| net.walk(f), &optimized(c.linear))?;
        state = l.state;
        log(&format!("resuming {} at epoch {}", run.display(), state.epoch));
    }
    broadcast_tensors(world, &mut |f| net.walk(f))?;
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
        shuffle_by: c.shuffle_by,
    };
    let val_feed = eval_feed(&c, &val);
    let val_name = split_name(&val);

    if c.linear {
        linear::train(
            world,
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
        let batches = train_feed.open_shard(&ds, 0, None, rank, ranks)?.batches();
        if batches == 0 {
            return Err(Error::config(format!(
                "the training split has fewer images than one batch of {} per rank on {ranks} rank(s)",
                c.batch
            )));
        }
        let schedule =
            Schedule { base_lr: c.lr, warmup: 0, total: batches as u64 * c.epochs, cosine: c.cosine, epoch_steps: 0 };
        let mut dump = match &c.dump {
            Some(d) => Some(crate::dump::Recorder::start(d, &mut |f| net.walk(f))?),
            None => None,
        };
        let bar = Progress::new(quiet, schedule.total, state.step, "finetune");
        while state.epoch < c.epochs {
            let t0 = std::time::Instant::now();
            let (mut sum, mut count, mut images) = (0f64, 0usize, 0usize);
            let pipeline = train_feed.open_shard(&ds, state.epoch, None, rank, ranks)?;
            let uploader = match &dump {
                Some(d) => d.wrap(net.uploader()),
                None => net.uploader(),
            };
            let mut stage = DevicePrefetch::new(pipeline, uploader, 1, (image_size, image_size));
            while let Some(b) = stage.next_batch() {
                let b = b?;
                let n = b.len;
                let t = targets(loss, outputs, &b.labels, &b.attributes)?;
                if let Some(d) = &dump {
                    d.targets(&t, n, outputs)?;
                }
                net.overlap_next(&grad_world);
                let mut value = net.train_uploaded(b.views, loss, t, 1.0, &mut || stage.fill())?;
                if ranks > 1 {
                    // The global batch's loss, the same on every rank.
                    let mut v = [value];
                    mean_over_ranks(world, &mut v)?;
                    value = v[0];
                }
                finite(value, state.epoch, state.step)?;
                if let Some(d) = &mut dump {
                    d.micro(value, 1.0);
                }
                let grads = match &dump {
                    Some(d) if d.active() => Some(net.grads()?),
                    _ => None,
                };
                net.average_grads(world)?;
                let lr = optimizer_step(&schedule, &mut state.step, |lr| net.step(&mut opt, lr))?;
                if let (Some(d), Some(g)) = (&mut dump, grads) {
                    d.step(state.step, lr, g, &mut |f| net.walk(f))?;
                    if !d.active() {
                        d.finish(&DumpedRun { config: &resolved, schedule, optim })?;
                        bar.finish();
                        log(&format!("dumped {} finetuning steps to {}", state.step, d.dir().display()));
                        return Ok(None);
                    }
                }
                sum += value as f64;
                count += 1;
                images += n * ranks; // the global batch
                bar.step(state.step, value, lr, images as f64 / t0.elapsed().as_secs_f64());
            }
            drop(stage);
            let secs = t0.elapsed().as_secs_f64();
            if !c.sync_bn {
                // Each rank's running statistics are its own: validate with rank 0's (DDP's
                // `broadcast_buffers`).
                broadcast_tensors(world, &mut |f| net.walk(f))?;
            }
            let o = collect_outputs(world, &ds, &val_feed, |x| net.logits(x))?;
            let val_m = metrics_of(val_name.clone(), loss, outputs, &o.scores, &o)?;
            let record = EpochRecord {
                epoch: state.epoch,
                train_loss: sum / count.max(1) as f64,
                val: val_m,
                images_per_sec: images as f64 / secs,
                seconds: t0.elapsed().as_secs_f64(),
            };
            end_epoch(record, &mut state, &mut opt, &mut *net, run, c.linear, root, &bar, log)?;
        }
        bar.finish();
        if let Some(d) = dump.as_ref().filter(|d| d.active()) {
            d.finish(&DumpedRun { config: &resolved, schedule, optim })?; // fewer batches than asked for
        }
    }
    finish(world, &c, &ds, &mut *net, &val_feed, &val_name, loss, outputs, &state, run, log).map(Some)
}

#[allow(clippy::too_many_arguments)]
fn finish(
    world: &World,
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
    // Rank 0 reads the best model and lends it to the others.
    if world.is_root() {
        let best_file = run.join(BEST);
        let best = load_safetensors(&best_file)?;
        net.walk(&mut |s, v| params::restore_one(s, v, &best, &best_file))?;
    }
    broadcast_tensors(world, &mut |f| net.walk(f))?;
    let o = collect_outputs(world, ds, val_feed, |x| net.logits(x))?;
    let val = metrics_of(val_name.to_string(), loss, outputs, &o.scores, &o)?;
    let test = match &c.test_split {
        Some(t) => {
            let feed = eval_feed(c, &(t.clone(), None));
            let o = collect_outputs(world, ds, &feed, |x| net.logits(x))?;
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
    if world.is_root() {
        write_json(&run.join(SUMMARY), &summary)?;
    }
    Ok(summary)
}
