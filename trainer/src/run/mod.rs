//! The run folder: its layout and JSON files ([`files`]), how a loop takes it (a fresh start
//! or a resume from its checkpoint, [`start_or_resume`], and on several ranks
//! [`start_or_resume_in`]), how a loop's model and optimizer go
//! into and come back from its checkpoint ([`save_checkpoint`], [`restore`]), and what a
//! finished run says of its model ([`model_of`]: read by `--init ssl:RUN`, `siamlab export`
//! and `siamlab eval` alike).

pub mod files;

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::checkpoint::{self, Loaded, RunLock};
use crate::error::{Error, Result};
use crate::optim::Optimizer;
use crate::params::{self, StateDict, TensorFn};
use files::{read_json, write_json, BACKBONE, BEST, CHECKPOINT, CONFIG, METRICS, WEIGHTS};

/// Walks every tensor of a net ([`crate::net::SslNet::walk`], [`crate::net::ClsNet::walk`]).
pub type Walker<'a> = dyn FnMut(&mut TensorFn<'_>) -> Result<()> + 'a;

/// Takes run folder `dir` for this process (the lock, held until the returned [`RunLock`]
/// drops) and begins it: with `resume` and a complete checkpoint there, the checkpoint, after
/// checking that `config.json` holds the same `resolved` configuration (else an error naming the
/// flags that changed); otherwise a fresh start that writes `config.json` and forgets any old
/// `metrics.jsonl` (refused when the folder holds a checkpoint and `resume` is not given).
pub fn start_or_resume<R, S>(dir: &Path, resume: bool, resolved: &R) -> Result<(RunLock, Option<Loaded<S>>)>
where
    R: Serialize + DeserializeOwned + PartialEq,
    S: DeserializeOwned,
{
    let lock = checkpoint::lock(dir)?;
    let config_path = dir.join(CONFIG);
    let loaded = if resume { checkpoint::load::<S>(dir)? } else { None };
    match loaded {
        Some(l) => {
            let before: R = read_json(&config_path)?;
            if before != *resolved {
                return Err(Error::bad_file(
                    &config_path,
                    format!(
                        "the run was started with other settings ({}); resume with the same flags or use a new --out",
                        checkpoint::config_changes(&before, resolved).join(", ")
                    ),
                ));
            }
            Ok((lock, Some(l)))
        }
        None => {
            if dir.join(CHECKPOINT).exists() && !resume {
                return Err(Error::config(format!(
                    "{} already holds a run; continue it with --resume or choose another --out",
                    dir.display()
                )));
            }
            write_json(&config_path, resolved)?;
            let _ = std::fs::remove_file(dir.join(METRICS));
            Ok((lock, None))
        }
    }
}

/// [`start_or_resume`] as one rank of `world`: rank 0 takes the run folder (and checks a
/// resume's settings) while the others wait; then the others read its checkpoint (a file
/// system all ranks share). Only rank 0 holds the lock. A failure on rank 0 ends every rank
/// (the binary aborts the world), so nobody waits at the barrier forever.
pub fn start_or_resume_in<R, S>(
    world: &siamlab_world::World,
    dir: &Path,
    resume: bool,
    resolved: &R,
) -> Result<(Option<RunLock>, Option<Loaded<S>>)>
where
    R: Serialize + DeserializeOwned + PartialEq,
    S: DeserializeOwned,
{
    if world.is_root() {
        let (lock, loaded) = start_or_resume::<R, S>(dir, resume, resolved)?;
        world.barrier();
        Ok((Some(lock), loaded))
    } else {
        world.barrier();
        Ok((None, if resume { checkpoint::load::<S>(dir)? } else { None }))
    }
}

/// Every tensor `walk` visits, as a dict (host copies).
pub fn state_of(walk: &mut Walker<'_>) -> Result<StateDict> {
    let mut out = StateDict::new();
    walk(&mut |slot, values| {
        out.insert(slot.name.to_string(), (slot.shape.to_vec(), values.clone()));
        Ok(false)
    })?;
    Ok(out)
}

/// Writes the checkpoint of run `dir`: the loop's `state`, every tensor `walk` visits, and the
/// optimizer's moments of the tensors whose name `optimized` accepts (all of them, or the head
/// alone for linear evaluation).
pub fn save_checkpoint<S: Serialize>(
    dir: &Path,
    state: &S,
    opt: &Optimizer,
    walk: &mut Walker<'_>,
    optimized: &dyn Fn(&str) -> bool,
) -> Result<()> {
    let model = state_of(walk)?;
    let optimizer = checkpoint::optimizer_state(opt, &mut |f| {
        walk(&mut |s, v| if optimized(s.name) { f(s, v) } else { Ok(false) })
    })?;
    checkpoint::save(dir, state, &model, &optimizer)
}

/// Puts a loaded checkpoint back: every tensor `walk` visits, and the optimizer's moments of
/// those `optimized` accepts (as [`save_checkpoint`] wrote them); `opt.t` is the loop's to set.
pub fn restore<S>(
    l: &Loaded<S>,
    opt: &mut Optimizer,
    walk: &mut Walker<'_>,
    optimized: &dyn Fn(&str) -> bool,
) -> Result<()> {
    let model_file = l.dir.join(WEIGHTS[0]);
    walk(&mut |s, v| params::restore_one(s, v, &l.model, &model_file))?;
    let opt_file = l.dir.join(WEIGHTS[1]);
    checkpoint::restore_optimizer(opt, &l.optimizer, &opt_file, &mut |f| {
        walk(&mut |s, v| if optimized(s.name) { f(s, v) } else { Ok(false) })
    })
}

/// What a run folder says of its model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunModel {
    /// The backbone's (canonical) name.
    pub backbone: String,
    /// Its input size.
    pub image_size: usize,
    /// `backbone.safetensors` of a finished pretraining run (the backbone's own names).
    pub backbone_file: Option<PathBuf>,
    /// `best.safetensors` of a finetuning run (the backbone's names under `backbone.`, beside
    /// the head's `fc.*`).
    pub best_file: Option<PathBuf>,
}

impl RunModel {
    /// The file holding the backbone: a pretraining run's `backbone.safetensors`, else a
    /// finetuning run's `best.safetensors`.
    pub fn weights(&self) -> Option<&Path> {
        self.backbone_file.as_deref().or(self.best_file.as_deref())
    }
}

/// Reads the backbone and input size of run `dir` from its `config.json`, whichever loop wrote
/// it (both record `net.backbone` and `net.image_size`; nothing else of the file is needed, so
/// runs of older versions read too), and which weight files it holds.
pub fn model_of(dir: &Path) -> Result<RunModel> {
    #[derive(Deserialize)]
    struct Net {
        backbone: String,
        image_size: usize,
    }
    #[derive(Deserialize)]
    struct Config {
        net: Net,
    }
    let path = dir.join(CONFIG);
    if !path.is_file() {
        return Err(Error::bad_file(dir, "not a siamlab run folder (config.json missing)"));
    }
    let c: Config = read_json(&path).map_err(|e| {
        Error::bad_file(&path, format!("not a run's configuration (no net.backbone / net.image_size): {e}"))
    })?;
    let present = |name: &str| Some(dir.join(name)).filter(|p| p.is_file());
    Ok(RunModel {
        backbone: c.net.backbone,
        image_size: c.net.image_size,
        backbone_file: present(BACKBONE),
        best_file: present(BEST),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_of_reads_either_loops_config_and_finds_the_weights() {
        let t = tempfile::tempdir().unwrap();
        let e = model_of(t.path()).unwrap_err().to_string();
        assert!(e.contains("not a siamlab run folder"), "{e}");
        std::fs::write(t.path().join(CONFIG), r#"{"config": {}, "net": {"backbone": "vit_tiny", "image_size": 32}}"#)
            .unwrap();
        let m = model_of(t.path()).unwrap();
        assert_eq!((m.backbone.as_str(), m.image_size, m.weights()), ("vit_tiny", 32, None));
        std::fs::write(t.path().join(BEST), b"").unwrap();
        assert_eq!(model_of(t.path()).unwrap().weights(), Some(t.path().join(BEST).as_path()));
        std::fs::write(t.path().join(BACKBONE), b"").unwrap();
        assert_eq!(model_of(t.path()).unwrap().weights(), Some(t.path().join(BACKBONE).as_path()));
        std::fs::write(t.path().join(CONFIG), r#"{"config": {}}"#).unwrap();
        let e = model_of(t.path()).unwrap_err().to_string();
        assert!(e.contains("no net.backbone"), "{e}");
    }
}
