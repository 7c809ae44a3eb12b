//! `siamlab train pretrain`: SimSiam on the images of a split, with the paper's defaults
//! (Adam, lr = 1e-3 × batch × accum / 256, cosine decay per optimizer step, weight decay 1e-5,
//! batch 64, accumulation 8, 100 epochs), monitors (loss, held-out cosine similarity, kNN
//! accuracy, the collapse std) and exact resume.

pub mod config;
pub mod record;

use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Instant;

use siamlab_model::sync_batch_norm;
use siamlab_world::World;

use siamlab_pipeline::Subset;

use crate::choices::ssl_groups;
use crate::data::{for_each_batch, Dataset, Feed, Labels};
use crate::device::DeviceSpec;
use crate::error::{Error, Result};
use crate::knn::knn_accuracy;
use crate::net::{build_ssl_with, Images, SslNet};
use crate::optim::{OptimConfig, Optimizer, OptimizerKind};
use crate::parallel::{broadcast_tensors, mean_over_ranks, rank_device, WorldStats};
use crate::params::save_safetensors;
use crate::prefetch::DevicePrefetch;
use crate::progress::Progress;
use crate::run::files::{append_jsonl, write_json, BACKBONE, METRICS, SUMMARY};
use crate::run::{self, start_or_resume_in};
use crate::schedule::{group_len, steps_per_epoch, Schedule};
use crate::step::{finite, optimizer_step};

pub use config::{PretrainConfig, Resolved};
pub use record::{EpochRecord, State};

/// What a run returns.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Run folder.
    pub run: PathBuf,
    /// Loss of every micro-batch trained in this invocation, in order.
    pub losses: Vec<f32>,
    /// All finished epochs (resumed ones included).
    pub history: Vec<EpochRecord>,
    /// `false` when stopped by `max_steps`.
    pub finished: bool,
}

fn resolve(cfg: &PretrainConfig, ds: &Dataset, world: usize) -> Result<PretrainConfig> {
    let mut c = cfg.clone();
    c.backbone = crate::names::backbone(&c.backbone)?.into();
    ds.rows(&c.split)?;
    if c.image_size.is_none() {
        c.image_size = ds.image_size(&c.split)?;
    }
    if c.image_size.is_none() {
        return Err(Error::config(format!(
            "the images of split {:?} differ in size; choose one with --image-size",
            c.split
        )));
    }
    // The global batch: every rank's micro-batches of one step.
    let scale = (c.batch * c.accum * world) as f64 / 256.0;
    if c.lr.is_none() {
        c.lr = Some(match c.optimizer {
            OptimizerKind::Adam => 1e-3 * scale,
            OptimizerKind::Sgd => 0.05 * scale,
        });
    }
    if c.wd.is_none() {
        c.wd = Some(match c.optimizer {
            OptimizerKind::Adam => 1e-5,
            OptimizerKind::Sgd if ds.is_cifar() => 5e-4,
            OptimizerKind::Sgd => 1e-4,
        });
    }
    if c.monitor_split.is_none() && ds.has_split("test") && c.split != "test" {
        c.monitor_split = Some("test".into());
    }
    if c.batch < 2 {
        return Err(Error::config("batch must be at least 2 (BatchNorm needs two samples)"));
    }
    if !(c.fraction > 0.0 && c.fraction <= 1.0) {
        return Err(Error::config(format!("fraction {} is not in (0, 1]", c.fraction)));
    }
    Ok(c)
}

fn fraction_subset(seed: u64, fraction: f64) -> Option<Subset> {
    (fraction < 1.0).then_some(Subset { seed: seed ^ 0xF4AC, lo: 0.0, hi: fraction })
}

/// Runs (or resumes, when `resume` and the run folder holds a checkpoint) a pretraining run
/// into `run`; `log` receives one line per epoch.
pub fn pretrain(
    cfg: &PretrainConfig,
    run: &Path,
    resume: bool,
    quiet: bool,
    log: &mut dyn FnMut(&str),
) -> Result<Outcome> {
    pretrain_in(&World::single(), cfg, run, resume, quiet, log)
}

/// [`pretrain`] as one rank of `world` (data-parallel, PyTorch DDP's semantics): every rank
/// streams its own block of each epoch with `cfg.batch` images per micro-batch (the global
/// batch is `world × batch × accum`), starts from rank 0's tensors, and averages its gradients
/// with the others' once per optimizer step; BatchNorm's statistics span all ranks unless
/// `cfg.sync_bn` is off. Rank 0 alone writes the run folder and logs, and computes the
/// monitors; the others return the same losses and no history.
pub fn pretrain_in(
    world: &World,
    cfg: &PretrainConfig,
    run: &Path,
    resume: bool,
    quiet: bool,
    log: &mut dyn FnMut(&str),
) -> Result<Outcome> {
    let (rank, ranks, root) = (world.rank(), world.size(), world.is_root());
    let quiet = quiet || !root;
    let mut log = |line: &str| {
        if root {
            log(line)
        }
    };
    let ds = Dataset::open_with(&cfg.data, &cfg.store)?;
    let cfg = resolve(cfg, &ds, ranks)?;
    if ranks > 1 && cfg.dump.is_some() {
        return Err(Error::config("--dump-batches records one process's run; not under mpirun / srun"));
    }
    // Synchronized BatchNorm on this thread while the run lasts.
    let _sync = (ranks > 1 && cfg.sync_bn).then(|| sync_batch_norm(Rc::new(WorldStats(world.split_off()))));
    // The gradient buckets that start during the backward pass have a communicator of their own.
    let grad_world = world.split_off();
    let image_size = cfg.image_size.unwrap_or(32);
    let monitor = Monitors::new(&cfg, &ds, image_size)?;
    let (world, device) = rank_device(world, cfg.device)?;
    let world = &world;
    let mut net = build_ssl_with(device, cfg.seed, &cfg.backbone, image_size, cfg.proj_dim, cfg.init_scheme)?;
    let feed = Feed {
        split: cfg.split.clone(),
        subset: fraction_subset(cfg.seed, cfg.fraction),
        recipe: "simsiam",
        views: 2,
        image_size,
        batch: cfg.batch,
        train: true,
        seed: cfg.seed,
        workers: cfg.workers,
        shuffle_by: cfg.shuffle_by,
    };
    let batches = feed.open_shard(&ds, 0, None, rank, ranks)?.batches();
    if batches == 0 {
        return Err(Error::config(format!(
            "split {:?} has fewer images than one batch of {} per rank on {ranks} rank(s) (after --fraction)",
            cfg.split, cfg.batch
        )));
    }
    let spe = steps_per_epoch(batches, cfg.accum);
    let total = spe * cfg.epochs;
    let schedule = Schedule {
        base_lr: cfg.lr.unwrap_or(1e-3),
        warmup: (cfg.warmup_epochs * spe as f64).round() as u64,
        total,
        cosine: true,
        epoch_steps: if cfg.cosine_per_epoch { spe } else { 0 },
    };
    let wd = cfg.wd.unwrap_or(0.0);
    let optim = match cfg.optimizer {
        OptimizerKind::Adam => OptimConfig::adam(wd),
        OptimizerKind::Sgd => OptimConfig::sgd(wd),
    };
    // What a resumed run must share with the original (not how it is run: workers, max_steps).
    let mut same = cfg.clone();
    same.workers = None;
    same.device = DeviceSpec::Cpu;
    same.max_steps = None;
    same.dump = None;
    let resolved =
        Resolved { config: same, optim, batches_per_epoch: batches, schedule, net: net.info().clone(), world: ranks };
    let groups = ssl_groups(cfg.frozen_projector_output, cfg.fix_pred_lr, cfg.no_decay_norm_bias, schedule.base_lr);
    let mut opt = Optimizer::with_groups(optim, groups);
    let mut state =
        State { epoch: 0, step: 0, optimizer_t: 0, pipeline: None, partial: (0.0, 0.0, 0), history: vec![] };
    if cfg.dump.is_some() && resume {
        return Err(Error::config("--dump-batches records a run from its initial weights; not with --resume"));
    }
    // Rank 0 takes the run folder, the others read its checkpoint; then everyone starts from
    // rank 0's tensors.
    let (_lock, loaded) = start_or_resume_in::<_, State>(world, run, resume, &resolved)?;
    if let Some(l) = loaded {
        opt.t = l.state.optimizer_t;
        run::restore(&l, &mut opt, &mut |f| net.walk(f), &|_| true)?;
        state = l.state;
        log(&format!("resuming {} at epoch {}, step {}", run.display(), state.epoch, state.step));
    }
    broadcast_tensors(world, &mut |f| net.walk(f))?;
    let mut dump = match &cfg.dump {
        Some(d) => Some(crate::dump::Recorder::start(d, &mut |f| net.walk(f))?),
        None => None,
    };

    let mut losses = Vec::new();
    let mut steps_this_run = 0u64;
    let d = net.proj_dim();
    let bar = Progress::new(quiet, total, state.step, "pretrain");
    while state.epoch < cfg.epochs {
        let epoch = state.epoch;
        let pipeline = feed.open_shard(&ds, epoch, state.pipeline, rank, ranks)?;
        let mut micro = (state.pipeline.map_or(0, |p| p.next_sample) / cfg.batch as u64) as usize;
        let uploader = match &dump {
            Some(d) => d.wrap(net.uploader()),
            None => net.uploader(),
        };
        let mut stage = DevicePrefetch::new(pipeline, uploader, 2, (image_size, image_size));
        let t0 = Instant::now();
        let mut busy = 0f64;
        let mut fill = (0f64, 0u64);
        let mut pairs = 0usize;
        let mut stopped = false;
        // Time in the gradient all-reduce, bytes per step, steps.
        let mut reduce = (0f64, 0usize, 0usize);
        loop {
            let Some(b) = stage.next_batch() else { break };
            let b = b?;
            fill.0 += b.host_queue as f64;
            fill.1 += 1;
            let tb = Instant::now();
            let n = b.len;
            let position = b.state;
            let scale = 1.0 / group_len(micro, batches, cfg.accum) as f32;
            if ranks > 1 && ((micro + 1).is_multiple_of(cfg.accum) || micro + 1 == batches) {
                // This micro-batch ends the optimizer step: its backward pass starts the average.
                net.overlap_next(&grad_world);
            }
            let mut s = net.train_uploaded(b.views, scale, &mut || stage.fill())?;
            if ranks > 1 {
                // The global batch's loss and collapse monitor, the same on every rank.
                let mut v = [s.loss, s.z_std];
                mean_over_ranks(world, &mut v)?;
                (s.loss, s.z_std) = (v[0], v[1]);
            }
            finite(s.loss, epoch, state.step)?;
            losses.push(s.loss);
            if let Some(d) = &mut dump {
                d.micro(s.loss, scale);
            }
            state.partial.0 += s.loss as f64;
            state.partial.1 += s.z_std as f64;
            state.partial.2 += 1;
            pairs += n * ranks; // the global batch
            micro += 1;
            if micro.is_multiple_of(cfg.accum) || micro == batches {
                let grads = match &dump {
                    Some(d) if d.active() => Some(net.grads()?),
                    _ => None,
                };
                if ranks > 1 {
                    let t = Instant::now();
                    reduce.1 = net.average_grads(world)?;
                    reduce.0 += t.elapsed().as_secs_f64();
                    reduce.2 += 1;
                }
                let lr = optimizer_step(&schedule, &mut state.step, |lr| net.step(&mut opt, lr))?;
                let mut dumped = false;
                if let (Some(d), Some(g)) = (&mut dump, grads) {
                    d.step(state.step, lr, g, &mut |f| net.walk(f))?;
                    if !d.active() {
                        d.finish(&resolved)?;
                        dumped = true;
                    }
                }
                steps_this_run += 1;
                state.optimizer_t = opt.t;
                bar.step(state.step, s.loss, lr, pairs as f64 / t0.elapsed().as_secs_f64());
                let mid_epoch = micro < batches;
                let stop = dumped || cfg.max_steps.is_some_and(|m| steps_this_run >= m);
                if root
                    && mid_epoch
                    && (stop || (cfg.checkpoint_every > 0 && state.step.is_multiple_of(cfg.checkpoint_every)))
                {
                    state.pipeline = Some(position);
                    save_checkpoint(run, &state, &mut *net, &opt)?;
                }
                if stop && mid_epoch {
                    stopped = true;
                    busy += tb.elapsed().as_secs_f64();
                    break;
                }
            }
            busy += tb.elapsed().as_secs_f64();
        }
        let (taken, waits) = stage.waits();
        drop(stage);
        if stopped {
            bar.finish();
            return Ok(Outcome { run: run.to_path_buf(), losses, history: state.history, finished: false });
        }
        let train_secs = t0.elapsed().as_secs_f64();
        let (sum, zsum, count) = state.partial;
        let count = count.max(1) as f64;
        let knn_due = cfg.knn_every > 0 && ((epoch + 1).is_multiple_of(cfg.knn_every) || epoch + 1 == cfg.epochs);
        let record = EpochRecord {
            epoch,
            step: state.step,
            loss: sum / count,
            lr: schedule.lr(state.step.saturating_sub(1)),
            z_std: zsum / count,
            z_std_healthy: 1.0 / (d as f64).sqrt(),
            // The monitors run once, on rank 0 (in evaluation mode: no collective).
            holdout_similarity: if root { monitor.similarity(&mut *net)? } else { None },
            knn_top1: if knn_due && root { monitor.knn(&mut *net)? } else { None },
            pairs_per_sec: pairs as f64 / train_secs,
            queue_fill: fill.0 / fill.1.max(1) as f64,
            device_waits: waits.saturating_sub(1).min(taken),
            overhead: ((train_secs - busy) / train_secs).max(0.0),
            seconds: 0.0,
        };
        let record = EpochRecord { seconds: t0.elapsed().as_secs_f64(), ..record };
        let mut line = format!(
            "epoch {:>3}/{}  loss {:+.4}  lr {:.2e}  z-std {:.4} (healthy {:.4})  {:.1} pairs/s",
            epoch + 1,
            cfg.epochs,
            record.loss,
            record.lr,
            record.z_std,
            record.z_std_healthy,
            record.pairs_per_sec
        );
        if let Some(s) = record.holdout_similarity {
            line += &format!("  held-out cos {s:.4}");
        }
        if let Some(k) = record.knn_top1 {
            line += &format!("  kNN {:.2}%", 100.0 * k);
        }
        if reduce.2 > 0 {
            line += &format!(
                "  all-reduce {:.1} ms/step of {:.2} MB",
                1e3 * reduce.0 / reduce.2 as f64,
                reduce.1 as f64 / 1e6
            );
        }
        if record.z_std < 0.2 * record.z_std_healthy {
            line += "  WARNING: collapse (projection std far below 1/sqrt(D))";
        }
        bar.suspend(|| log(&line));
        state.epoch += 1;
        state.pipeline = None;
        state.partial = (0.0, 0.0, 0);
        if root {
            append_jsonl(&run.join(METRICS), &record)?;
            state.history.push(record);
            save_checkpoint(run, &state, &mut *net, &opt)?;
            crate::plots::write_run_plot(run)?;
        }
        let dumped = dump.as_ref().is_some_and(|d| !d.active());
        if (dumped || cfg.max_steps.is_some_and(|m| steps_this_run >= m)) && state.epoch < cfg.epochs {
            bar.finish();
            return Ok(Outcome { run: run.to_path_buf(), losses, history: state.history, finished: false });
        }
    }
    bar.finish();
    if let Some(d) = dump.as_ref().filter(|d| d.active()) {
        d.finish(&resolved)?; // the run had fewer micro-batches than asked for
    }
    if !root {
        return Ok(Outcome { run: run.to_path_buf(), losses, history: state.history, finished: true });
    }
    save_safetensors(&run.join(BACKBONE), &net.backbone_state()?)?;
    let last = state.history.last().cloned();
    write_json(
        &run.join(SUMMARY),
        &serde_json::json!({
            "kind": "pretrain",
            "backbone": net.info().backbone,
            "epochs": cfg.epochs,
            "steps": state.step,
            "final": last,
        }),
    )?;
    Ok(Outcome { run: run.to_path_buf(), losses, history: state.history, finished: true })
}

fn save_checkpoint(run: &Path, state: &State, net: &mut dyn SslNet, opt: &Optimizer) -> Result<()> {
    run::save_checkpoint(run, state, opt, &mut |f| net.walk(f), &|_| true)
}

/// The held-out similarity and kNN monitors.
struct Monitors {
    holdout: Option<(Dataset, Feed)>,
    knn: Option<(Dataset, Feed, Feed, usize)>,
    k: usize,
    temperature: f32,
}

impl Monitors {
    fn new(cfg: &PretrainConfig, ds: &Dataset, image_size: usize) -> Result<Self> {
        let eval_feed = |split: &str, recipe: &'static str, views, subset| Feed {
            split: split.to_string(),
            subset,
            recipe,
            views,
            image_size,
            batch: cfg.batch.max(64),
            train: false,
            seed: cfg.seed ^ 0x30A1,
            workers: cfg.workers,
            shuffle_by: siamlab_pipeline::ShuffleBy::RowGroups,
        };
        let holdout = match &cfg.monitor_split {
            Some(split) => {
                let rows = ds.rows(split)?.max(1);
                let fraction = (cfg.monitor_images as f64 / rows as f64).min(1.0);
                let subset = Subset { seed: 0x40_1D, lo: 0.0, hi: fraction };
                Some((ds.clone(), eval_feed(split, "simsiam", 2, Some(subset))))
            }
            None => None,
        };
        let knn = if cfg.knn_every > 0 {
            let kds = match &cfg.knn_data {
                Some(d) => Dataset::open_with(d, &cfg.store)?,
                None => ds.clone(),
            };
            match kds.labels() {
                Labels::Classes(c) => {
                    kds.rows(&cfg.knn_bank_split)?;
                    kds.rows(&cfg.knn_query_split)?;
                    let sub = fraction_subset(7, cfg.knn_fraction);
                    let bank = eval_feed(&cfg.knn_bank_split, "eval", 1, sub);
                    let query = eval_feed(&cfg.knn_query_split, "eval", 1, sub);
                    Some((kds, bank, query, c.len()))
                }
                _ => {
                    return Err(Error::config(format!(
                        "the kNN monitor needs single-label classes, and {} has none; pass --knn-data DIR \
                         (labeled shards) or --knn-every 0",
                        kds.dir.display()
                    )))
                }
            }
        } else {
            None
        };
        Ok(Monitors { holdout, knn, k: cfg.knn_k, temperature: cfg.knn_temperature })
    }

    fn similarity(&self, net: &mut dyn SslNet) -> Result<Option<f64>> {
        let Some((ds, feed)) = &self.holdout else { return Ok(None) };
        let (mut sum, mut n) = (0f64, 0usize);
        for_each_batch(feed.open(ds, 0, None)?, |b| {
            let (len, s) = (b.len(), feed.image_size);
            if len < 2 {
                return Ok(());
            }
            let sim = net.similarity(
                Images { data: b.view(0), n: len, h: s, w: s },
                Images { data: b.view(1), n: len, h: s, w: s },
            )?;
            sum += sim as f64 * len as f64;
            n += len;
            Ok(())
        })?;
        Ok((n > 0).then(|| sum / n as f64))
    }

    fn knn(&self, net: &mut dyn SslNet) -> Result<Option<f64>> {
        let Some((ds, bank, query, classes)) = &self.knn else { return Ok(None) };
        let (bf, bl) = extract(net, ds, bank)?;
        let (qf, ql) = extract(net, ds, query)?;
        let dim = net.info().features;
        Ok(Some(knn_accuracy(&bf, &bl, &qf, dim, *classes, self.k, self.temperature, &ql)))
    }
}

/// Backbone features and labels of every image a feed delivers.
fn extract(net: &mut dyn SslNet, ds: &Dataset, feed: &Feed) -> Result<(Vec<f32>, Vec<i64>)> {
    let (mut feats, mut labels) = (Vec::new(), Vec::new());
    for_each_batch(feed.open(ds, 0, None)?, |b| {
        let s = feed.image_size;
        feats.extend(net.features(Images { data: b.view(0), n: b.len(), h: s, w: s })?);
        labels.extend_from_slice(b.labels());
        Ok(())
    })?;
    Ok((feats, labels))
}
