//! Evaluating a classifier: the outputs of every image of a split, their loss and metrics
//! ([`EvalMetrics`]), and `siamlab eval` ([`evaluate`]) on a finished finetuning run.

use std::path::Path;

use dfdx::prelude::*;
use siamlab_pipeline::Subset;

use crate::data::{for_each_batch, Dataset, Feed, Labels};
use crate::device::DeviceSpec;
use crate::error::{Error, Result};
use crate::finetune::config::{FinetuneConfig, Resolved};
use crate::finetune::record::EvalMetrics;
use crate::head::{loss_of, Loss};
use crate::metrics::{multi_label_metrics, top1_accuracy};
use crate::net::{build_cls, Images};
use crate::params::{self, load_safetensors};
use crate::run::files::{read_json, CONFIG};
use crate::run::model_of;
use siamlab_world::World;

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
pub(crate) fn targets(loss: Loss, outputs: usize, labels: &[i64], attributes: &[i8]) -> Result<Vec<f32>> {
    if !attributes.is_empty() {
        return Ok(attributes.iter().map(|&a| (a > 0) as u8 as f32).collect());
    }
    let _ = loss;
    one_hot(labels, outputs)
}

pub(crate) fn eval_feed(c: &FinetuneConfig, split: &(String, Option<Subset>)) -> Feed {
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
        shuffle_by: siamlab_pipeline::ShuffleBy::RowGroups,
    }
}

pub(crate) fn split_name(s: &(String, Option<Subset>)) -> String {
    match s.1 {
        Some(sub) if sub.lo == 0.0 && sub.hi < 1.0 => format!("{} (hold-out {:.0}%)", s.0, 100.0 * sub.hi),
        _ => s.0.clone(),
    }
}

/// Logits, labels and attributes of every image of a split.
pub(crate) struct Outputs {
    pub scores: Vec<f32>,
    pub labels: Vec<i64>,
    pub attributes: Vec<i8>,
}

/// The outputs of every image of `feed`'s split by `f`, in the split's order, on the ranks of
/// `world`: each rank runs `f` on its own block of the split, and every rank gets all the
/// outputs, as one process would.
///
/// The blocks are padded to equal lengths by wrapping around (the pipeline's rank sharding),
/// so a few images are seen twice; each output is put at its image's row of the split, summed
/// over the ranks in float64 with a count per row, and divided by the count — exactly the
/// float32 value the image gave (every rank holds the same model: a k-fold sum of one float32
/// is exact in float64 for any k below 2^29).
pub(crate) fn collect_outputs(
    world: &World,
    ds: &Dataset,
    feed: &Feed,
    mut f: impl FnMut(Images<'_>) -> Result<Vec<f32>>,
) -> Result<Outputs> {
    let mut o = Outputs { scores: vec![], labels: vec![], attributes: vec![] };
    let mut rows = Vec::new();
    for_each_batch(feed.open_shard(ds, 0, None, world.rank(), world.size())?, |b| {
        let s = feed.image_size;
        o.scores.extend(f(Images { data: b.view(0), n: b.len(), h: s, w: s })?);
        o.labels.extend_from_slice(b.labels());
        o.attributes.extend_from_slice(b.attributes());
        rows.extend_from_slice(b.rows());
        Ok(())
    })?;
    if world.size() == 1 {
        return Ok(o);
    }
    let n = rows.len();
    let split_rows = ds.rows(&feed.split)? as usize;
    // Per row of the split: count, label, scores, attributes. A rank with no image knows
    // neither width: every rank takes the largest.
    let (k, a) = (o.scores.len().checked_div(n).unwrap_or(0), o.attributes.len().checked_div(n).unwrap_or(0));
    let [k, a] = max_over(world, [k, a])?;
    let width = 2 + k + a;
    let mut table = vec![0f64; split_rows * width];
    for (i, &r) in rows.iter().enumerate() {
        let r = r as usize;
        if r >= split_rows {
            return Err(Error::config(format!("row {r} of split {:?}, which has {split_rows} rows", feed.split)));
        }
        let t = &mut table[r * width..(r + 1) * width];
        t[0] += 1.0;
        t[1] += o.labels[i] as f64;
        t[2..2 + k].iter_mut().zip(&o.scores[i * k..(i + 1) * k]).for_each(|(t, &v)| *t += v as f64);
        t[2 + k..].iter_mut().zip(&o.attributes[i * a..(i + 1) * a]).for_each(|(t, &v)| *t += v as f64);
    }
    world.all_reduce_sum_f64(&mut table)?;
    let mut all = Outputs { scores: vec![], labels: vec![], attributes: vec![] };
    for t in table.chunks_exact(width).filter(|t| t[0] > 0.0) {
        let c = t[0];
        all.labels.push((t[1] / c) as i64);
        all.scores.extend(t[2..2 + k].iter().map(|v| (v / c) as f32));
        all.attributes.extend(t[2 + k..].iter().map(|v| (v / c) as i8));
    }
    Ok(all)
}

/// The largest of each of `v` over the ranks.
fn max_over<const N: usize>(world: &World, v: [usize; N]) -> Result<[usize; N]> {
    let mut all = vec![0f64; world.size() * N];
    all[world.rank() * N..][..N].iter_mut().zip(v).for_each(|(a, v)| *a = v as f64);
    world.all_reduce_sum_f64(&mut all)?;
    Ok(std::array::from_fn(|i| all.chunks_exact(N).map(|r| r[i] as usize).max().unwrap_or(0)))
}

pub(crate) fn metrics_of(
    split: String,
    loss: Loss,
    outputs: usize,
    logits: &[f32],
    o: &Outputs,
) -> Result<EvalMetrics> {
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

/// `siamlab eval`: the best model of finetuning run `run` on `split` of its dataset (or of
/// `data`, which must have the same labels), a URL's shards read through `store`'s cache.
pub fn evaluate(
    run: &Path,
    split: &str,
    data: Option<&Path>,
    workers: Option<usize>,
    device: DeviceSpec,
    store: &siamlab_datasets::StoreOptions,
) -> Result<EvalMetrics> {
    evaluate_in(&World::single(), run, split, data, workers, device, store)
}

/// [`evaluate`] on the ranks of `world`: each evaluates its own block of the split, and every
/// rank returns the metrics of the whole split, the same as one process's.
pub fn evaluate_in(
    world: &World,
    run: &Path,
    split: &str,
    data: Option<&Path>,
    workers: Option<usize>,
    device: DeviceSpec,
    store: &siamlab_datasets::StoreOptions,
) -> Result<EvalMetrics> {
    let model = model_of(run)?;
    let config_path = run.join(CONFIG);
    let r: Resolved = read_json(&config_path).map_err(|_| {
        Error::bad_file(
            &config_path,
            "not a finetuning run's configuration (pretraining runs are evaluated by finetuning them)",
        )
    })?;
    let best_file = model.best_file.ok_or_else(|| {
        Error::bad_file(run, "best.safetensors is missing (the finetuning run has not finished an epoch; resume it)")
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
    let mut net = build_cls(device, 0, &model.backbone, model.image_size, r.outputs)?;
    let best = load_safetensors(&best_file)?;
    net.walk(&mut |s, v| params::restore_one(s, v, &best, &best_file))?;
    let mut c = r.config.clone();
    c.workers = workers.or(c.workers);
    let feed = eval_feed(&c, &(split.to_string(), None));
    let o = collect_outputs(world, &ds, &feed, |x| net.logits(x))?;
    metrics_of(split.to_string(), r.loss, r.outputs, &o.scores, &o)
}
