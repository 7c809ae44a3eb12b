//! A run at a glance (`siamlab show RUN`): what a run folder already holds — `config.json`,
//! `metrics.jsonl`, `summary.json`, the plots — read back into the configuration, the best and
//! last value of each metric, wall time, throughput and where the plots are. Reads only; works
//! on finished, interrupted and still-running runs alike.

use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};
use crate::finetune::config::Resolved as FinetuneResolved;
use crate::finetune::record::{EpochRecord as FinetuneRecord, EvalMetrics, Summary};
use crate::head::Loss;
use crate::pretrain::config::Resolved as PretrainResolved;
use crate::pretrain::record::EpochRecord as PretrainRecord;
use crate::run::files::{read_json, read_records as records, CONFIG, SUMMARY};

/// Which way a metric improves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    /// Lower is better (a loss).
    Lower,
    /// Higher is better (an accuracy).
    Higher,
}

/// One metric over the epochs of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    /// Its name with its unit (`kNN top-1 (%)`).
    pub name: String,
    /// Which way it improves.
    pub better: Better,
    /// `(epoch, value)` of the epochs that have it (epochs counted from 1).
    pub values: Vec<(u64, f64)>,
}

impl Metric {
    /// The last `(epoch, value)`.
    pub fn last(&self) -> Option<(u64, f64)> {
        self.values.last().copied()
    }

    /// The best `(epoch, value)` (the first of equals).
    pub fn best(&self) -> Option<(u64, f64)> {
        self.values.iter().copied().filter(|v| v.1.is_finite()).fold(None, |b, v| match b {
            Some(b) if !self.beats(v.1, b.1) => Some(b),
            _ => Some(v),
        })
    }

    fn beats(&self, a: f64, b: f64) -> bool {
        match self.better {
            Better::Lower => a < b,
            Better::Higher => a > b,
        }
    }
}

/// What a run folder holds, read back.
#[derive(Debug, Clone)]
pub struct Overview {
    /// The run folder.
    pub dir: PathBuf,
    /// `SimSiam pretraining`, `finetuning` or `linear evaluation`.
    pub kind: &'static str,
    /// The resolved configuration, as `(name, value)`.
    pub config: Vec<(&'static str, String)>,
    /// Epochs finished.
    pub epochs_done: u64,
    /// Epochs configured.
    pub epochs: u64,
    /// `summary.json` is there: the run completed.
    pub finished: bool,
    /// Each metric over the epochs.
    pub metrics: Vec<Metric>,
    /// Test metrics of the best epoch (finished finetuning runs with a test split).
    pub test: Option<String>,
    /// Seconds of all recorded epochs (`None` when a record lacks its time: older runs).
    pub wall_secs: Option<f64>,
    /// Mean throughput over the epochs and its unit (`pairs/s`, `images/s`).
    pub throughput: Option<(f64, &'static str)>,
    /// The PNGs in the folder.
    pub plots: Vec<PathBuf>,
}

fn metric(name: &str, better: Better, values: impl Iterator<Item = (u64, Option<f64>)>) -> Option<Metric> {
    let values: Vec<(u64, f64)> = values.filter_map(|(e, v)| v.map(|v| (e, v))).collect();
    (!values.is_empty()).then(|| Metric { name: name.to_string(), better, values })
}

fn total_secs(secs: impl Iterator<Item = f64>) -> Option<f64> {
    let s: Vec<f64> = secs.collect();
    (!s.is_empty() && s.iter().all(|&x| x > 0.0)).then(|| s.iter().sum())
}

fn mean(v: impl Iterator<Item = f64>) -> Option<f64> {
    let v: Vec<f64> = v.filter(|x| x.is_finite() && *x > 0.0).collect();
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

impl Overview {
    /// Reads the run folder `dir` (of `siamlab train pretrain` or `finetune`).
    pub fn read(dir: &Path) -> Result<Overview> {
        let config_path = dir.join(CONFIG);
        if !config_path.is_file() {
            return Err(Error::bad_file(
                dir,
                "not a run folder (no config.json): give a folder of `siamlab train ...`",
            ));
        }
        let raw: serde_json::Value = read_json(&config_path)?;
        let mut plots: Vec<PathBuf> = match std::fs::read_dir(dir) {
            Ok(entries) => entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "png"))
                .collect(),
            Err(e) => return Err(e).at(dir),
        };
        plots.sort();
        let finished = dir.join(SUMMARY).is_file();
        let mut o = if raw.get("schedule").is_some() {
            Self::pretrain(dir, &config_path, finished)?
        } else {
            Self::finetune(dir, &config_path, finished)?
        };
        o.plots = plots;
        Ok(o)
    }

    fn pretrain(dir: &Path, config_path: &Path, finished: bool) -> Result<Overview> {
        let r: PretrainResolved = read_json(config_path)?;
        let c = &r.config;
        let h: Vec<PretrainRecord> = records(dir)?;
        let e = |r: &PretrainRecord| r.epoch + 1;
        let metrics = [
            metric("loss (−cos, −1 best)", Better::Lower, h.iter().map(|r| (e(r), Some(r.loss)))),
            metric("kNN top-1 (%)", Better::Higher, h.iter().map(|r| (e(r), r.knn_top1.map(|k| 100.0 * k)))),
            metric("held-out cos similarity", Better::Higher, h.iter().map(|r| (e(r), r.holdout_similarity))),
            metric(
                "projection std (×√D, 1 healthy)",
                Better::Higher,
                h.iter().map(|r| (e(r), Some(r.z_std / r.z_std_healthy))),
            ),
        ];
        Ok(Overview {
            dir: dir.to_path_buf(),
            kind: "SimSiam pretraining",
            config: vec![
                (
                    "backbone",
                    format!(
                        "{} ({}), {} px, {} parameters",
                        r.net.backbone, r.net.architecture, r.net.image_size, r.net.backbone_params
                    ),
                ),
                ("data", format!("{} (split {}{})", c.data.display(), c.split, fraction(c.fraction))),
                (
                    "batch",
                    format!(
                        "{} × {} accumulated = {} per step, {} steps per epoch",
                        c.batch,
                        c.accum,
                        c.batch * c.accum,
                        r.batches_per_epoch / c.accum.max(1)
                    ),
                ),
                (
                    "optimizer",
                    format!(
                        "{} lr {} wd {}, warmup {} epochs",
                        optimizer(&r.config.optimizer),
                        opt_num(c.lr),
                        opt_num(c.wd),
                        c.warmup_epochs
                    ),
                ),
                ("projection", format!("{} dims", c.proj_dim)),
                ("seed", c.seed.to_string()),
            ],
            epochs_done: h.len() as u64,
            epochs: c.epochs,
            finished,
            metrics: metrics.into_iter().flatten().collect(),
            test: None,
            wall_secs: total_secs(h.iter().map(|r| r.seconds)),
            throughput: mean(h.iter().map(|r| r.pairs_per_sec)).map(|t| (t, "image pairs/s")),
            plots: vec![],
        })
    }

    fn finetune(dir: &Path, config_path: &Path, finished: bool) -> Result<Overview> {
        let r: FinetuneResolved = read_json(config_path)?;
        let c = &r.config;
        let h: Vec<FinetuneRecord> = records(dir)?;
        let e = |r: &FinetuneRecord| r.epoch + 1;
        let val = |m: &EvalMetrics| m.top1.or(m.multi_label.as_ref().map(|x| x.mean_accuracy)).map(|v| 100.0 * v);
        let val_name = if h.first().is_some_and(|r| r.val.top1.is_none() && r.val.multi_label.is_some()) {
            "validation mean attribute accuracy (%)"
        } else {
            "validation top-1 (%)"
        };
        let metrics = [
            metric(val_name, Better::Higher, h.iter().map(|r| (e(r), val(&r.val)))),
            metric("validation loss", Better::Lower, h.iter().map(|r| (e(r), Some(r.val.loss)))),
            metric("training loss", Better::Lower, h.iter().map(|r| (e(r), Some(r.train_loss)))),
        ];
        let test = if finished {
            let s: Summary = read_json(&dir.join(SUMMARY))?;
            s.test.map(|t| format!("{} (the best epoch, {})", t.line(), s.best_epoch + 1))
        } else {
            None
        };
        Ok(Overview {
            dir: dir.to_path_buf(),
            kind: if c.linear { "linear evaluation" } else { "finetuning" },
            config: vec![
                (
                    "backbone",
                    format!(
                        "{} ({}), {} px, {} parameters",
                        r.net.backbone, r.net.architecture, r.net.image_size, r.net.backbone_params
                    ),
                ),
                ("init", c.init.clone()),
                (
                    "data",
                    format!(
                        "{} (train {}{}, validation {})",
                        c.data.display(),
                        r.train.0,
                        fraction(c.fraction),
                        r.val.0
                    ),
                ),
                (
                    "labels",
                    format!(
                        "{} {} ({:?} loss)",
                        r.outputs,
                        if r.loss == Loss::Bce { "attributes" } else { "classes" },
                        r.loss
                    ),
                ),
                ("batch", c.batch.to_string()),
                (
                    "optimizer",
                    format!(
                        "{} lr {} wd {}{}",
                        optimizer(&c.optimizer),
                        c.lr,
                        c.wd,
                        if c.cosine { ", cosine decay" } else { "" }
                    ),
                ),
                ("seed", c.seed.to_string()),
            ],
            epochs_done: h.len() as u64,
            epochs: c.epochs,
            finished,
            metrics: metrics.into_iter().flatten().collect(),
            test,
            wall_secs: total_secs(h.iter().map(|r| r.seconds)),
            throughput: mean(h.iter().map(|r| r.images_per_sec)).map(|t| (t, "images/s")),
            plots: vec![],
        })
    }

    /// The overview as lines of text, for a terminal.
    pub fn lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        let state = if self.finished {
            format!("finished, {} epochs", self.epochs_done)
        } else {
            format!("not finished: {} of {} epochs (continue with --resume)", self.epochs_done, self.epochs)
        };
        out.push(format!("{}: {} — {state}", self.dir.display(), self.kind));
        for (k, v) in &self.config {
            out.push(format!("  {k:<10} {v}"));
        }
        if !self.metrics.is_empty() {
            let w = self.metrics.iter().map(|m| m.name.chars().count()).max().unwrap_or(0);
            out.push(format!("  {:<w$}  {:>18}  {:>18}", "metric", "best (epoch)", "last (epoch)"));
            for m in &self.metrics {
                let cell = |v: Option<(u64, f64)>| v.map_or("-".into(), |(e, x)| format!("{} ({e})", num(x)));
                out.push(format!("  {:<w$}  {:>18}  {:>18}", m.name, cell(m.best()), cell(m.last())));
            }
        }
        if let Some(t) = &self.test {
            out.push(format!("  test       {t}"));
        }
        let wall = self.wall_secs.map_or("not recorded".into(), duration);
        let speed = self.throughput.map_or("-".into(), |(t, unit)| format!("{t:.1} {unit} (mean of the epochs)"));
        out.push(format!("  wall time  {wall}; throughput {speed}"));
        if self.plots.is_empty() {
            out.push("  plots      none yet".into());
        } else {
            for p in &self.plots {
                out.push(format!("  plot       {}", p.display()));
            }
        }
        out
    }
}

fn fraction(f: f64) -> String {
    if f < 1.0 {
        format!(", {:.0}% of it", 100.0 * f)
    } else {
        String::new()
    }
}

fn optimizer(o: &crate::optim::OptimizerKind) -> &'static str {
    match o {
        crate::optim::OptimizerKind::Adam => "Adam",
        crate::optim::OptimizerKind::Sgd => "SGD",
    }
}

fn opt_num(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v}"))
}

/// A metric value with four significant digits.
fn num(x: f64) -> String {
    if x == 0.0 || (0.01..10_000.0).contains(&x.abs()) {
        let decimals = (3 - x.abs().max(1.0).log10().floor() as i32).max(0) as usize;
        format!("{x:.decimals$}")
    } else {
        format!("{x:.3e}")
    }
}

/// `1h 02m`, `3m 05s`, `12.3s`.
fn duration(s: f64) -> String {
    if s < 60.0 {
        format!("{s:.1}s")
    } else if s < 3600.0 {
        format!("{}m {:02}s", (s / 60.0) as u64, (s % 60.0) as u64)
    } else {
        format!("{}h {:02}m", (s / 3600.0) as u64, ((s % 3600.0) / 60.0) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn best_follows_the_direction_and_numbers_read_well() {
        let m = |better| Metric { name: "m".into(), better, values: vec![(1, 2.0), (2, 1.0), (3, f64::NAN), (4, 1.5)] };
        assert_eq!(m(Better::Lower).best(), Some((2, 1.0)));
        assert_eq!(m(Better::Higher).best(), Some((1, 2.0)));
        assert_eq!(m(Better::Higher).last().map(|l| l.0), Some(4));
        assert_eq!(num(41.234), "41.23");
        assert_eq!(num(-0.9871), "-0.987");
        assert_eq!(num(1234.6), "1235");
        assert_eq!(num(1e-5), "1.000e-5");
        assert_eq!(duration(75.0), "1m 15s");
        assert_eq!(duration(3725.0), "1h 02m");
    }
}
