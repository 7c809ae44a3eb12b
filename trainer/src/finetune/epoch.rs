//! The end of a finetuning or linear-evaluation epoch: the log line, the best model so far
//! (`best.safetensors`), the epoch's record, the curves and the checkpoint.

use std::path::Path;

use crate::error::Result;
use crate::finetune::record::{EpochRecord, State};
use crate::net::ClsNet;
use crate::optim::Optimizer;
use crate::params::save_safetensors;
use crate::progress::Progress;
use crate::run::files::{append_jsonl, BEST, METRICS};
use crate::run::{self, state_of};

/// Which tensors the optimizer steps: the head alone for linear evaluation (`fc.*`), else all.
pub(crate) fn optimized(linear: bool) -> impl Fn(&str) -> bool {
    move |name: &str| !linear || name.starts_with("fc.")
}

/// Closes epoch `record.epoch` of run `dir`; only when `write` (rank 0 of a data-parallel
/// run) into the run folder, while every rank keeps the same state.
#[allow(clippy::too_many_arguments)]
pub(crate) fn end_epoch(
    record: EpochRecord,
    state: &mut State,
    opt: &mut Optimizer,
    net: &mut dyn ClsNet,
    dir: &Path,
    linear: bool,
    write: bool,
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
        if write {
            let dict = state_of(&mut |f| net.walk(f))?;
            save_safetensors(&dir.join(BEST), &dict)?;
        }
    }
    if write {
        append_jsonl(&dir.join(METRICS), &record)?;
        crate::plots::write_run_plot(dir)?;
    }
    state.history.push(record);
    state.epoch += 1;
    state.optimizer_t = opt.t;
    if !write {
        return Ok(());
    }
    run::save_checkpoint(dir, state, opt, &mut |f| net.walk(f), &optimized(linear))
}
