//! Linear evaluation (the linear probe): the backbone frozen, its features (evaluation mode, no
//! augmentation) computed once per split, and only the linear head trained on them. The
//! features and targets are copied to the device once; each step gathers its rows there, and
//! the head, its gradients and the optimizer's moments stay on the device.

use std::path::Path;

use siamlab_world::World;

use crate::data::{Dataset, Feed};
use crate::error::{Error, Result};
use crate::finetune::config::FinetuneConfig;
use crate::finetune::epoch::end_epoch;
use crate::finetune::eval::{collect_outputs, metrics_of, targets};
use crate::finetune::record::{EpochRecord, State};
use crate::head::Loss;
use crate::net::ClsNet;
use crate::optim::Optimizer;
use crate::progress::Progress;
use crate::schedule::Schedule;
use crate::step::{finite, optimizer_step};

/// Trains the head of `net` (its backbone frozen) on the backbone's features of the training
/// feed until `c.epochs`, validating each epoch on the validation feed.
#[allow(clippy::too_many_arguments)]
pub(crate) fn train(
    world: &World,
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
    // On several ranks each computes the features of its block and every rank gets them all.
    let tr = collect_outputs(world, ds, train_feed, |x| net.features(x))?;
    let va = collect_outputs(world, ds, val_feed, |x| net.features(x))?;
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
    let schedule =
        Schedule { base_lr: c.lr, warmup: 0, total: steps_per_epoch * c.epochs, cosine: c.cosine, epoch_steps: 0 };
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
            let value = finite(net.train_head(&train_set, chunk, loss)?, state.epoch, state.step)?;
            let lr = optimizer_step(&schedule, &mut state.step, |lr| net.step(opt, lr))?;
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
        end_epoch(record, state, opt, net, run, true, world.is_root(), &bar, log)?;
    }
    bar.finish();
    Ok(())
}
