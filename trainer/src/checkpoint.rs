//! Checkpoints: a folder `checkpoint/` in the run holding `model.safetensors` (every tensor,
//! BatchNorm buffers included), `optimizer.safetensors` (Adam's `exp_avg` / `exp_avg_sq` or
//! SGD's `momentum_buffer` per parameter) and `state.json` (epoch, optimizer step, pipeline
//! state, partial epoch sums — everything a resumed run needs to continue bit for bit).
//!
//! Written atomically: the new checkpoint is written and fsynced under a temporary name, the
//! old one is renamed aside, the new one renamed in, the old one removed. A crash (or a full
//! disk) at any point leaves a complete checkpoint under `checkpoint/` or `checkpoint.old/`,
//! and [`load`] takes whichever is complete.
//!
//! `digest.json` records the sha256 of both weight files; [`load`] checks them, so a damaged
//! checkpoint is an error naming the file, never a silent resume from other weights. `state.json`
//! records the checkpoint's format ([`FORMAT_KEY`]); from [`FORMAT`] 2 on, a checkpoint without
//! `digest.json` is an error (deleting it does not skip the check). Checkpoints written before
//! the format was recorded load with a warning when they have no digest. A run
//! folder is held by one process at a time ([`lock`]); temporary checkpoints left by killed
//! writes are removed when it is taken.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

use siamlab_datasets::digest::sha256_file;

use crate::error::{Error, IoContext, Result};
use crate::optim::{Optimizer, OptimizerKind};
use crate::params::{load_safetensors, save_safetensors, StateDict, TensorFn};
use crate::run::files::{
    read_json, write_atomic, write_json, CHECKPOINT as DIR, CHECKPOINT_OLD as OLD, DIGEST, LOCK, STATE, WEIGHTS,
};

/// A run folder held by this process (released when dropped, or when the process ends however
/// it ends: the operating system's file lock).
#[derive(Debug)]
pub struct RunLock {
    _file: std::fs::File,
}

/// Takes `run` (creating it) for this process: a second training into the same folder fails
/// at once. Temporary checkpoints of killed writes (`checkpoint.tmp-PID`) are removed.
pub fn lock(run: &Path) -> Result<RunLock> {
    std::fs::create_dir_all(run).at(run)?;
    let path = run.join(LOCK);
    let file = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path).at(&path)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            return Err(Error::config(format!(
                "{}: another siamlab process is training into this folder; wait for it or choose another --out",
                run.display()
            )))
        }
        Err(std::fs::TryLockError::Error(err)) => return Err(Error::Io { file: path, err }),
    }
    for e in std::fs::read_dir(run).at(run)?.flatten() {
        if e.file_name().to_string_lossy().starts_with(&format!("{DIR}.tmp-")) {
            std::fs::remove_dir_all(e.path()).at(e.path())?;
        }
    }
    Ok(RunLock { _file: file })
}

/// Why a resumed run's configuration is not the original's: the flags that differ
/// (`--epochs: 10 → 20`), or the derived settings when no flag does.
pub fn config_changes<C: Serialize>(before: &C, now: &C) -> Vec<String> {
    let (a, b) = (serde_json::to_value(before).unwrap_or_default(), serde_json::to_value(now).unwrap_or_default());
    let all = siamlab_datasets::diff::differences(&a, &b, &["config.data", "config.knn_data"]);
    // The number of ranks of a data-parallel run is no flag: name it by its launcher.
    let ranks = all.iter().filter_map(|d| d.strip_prefix("world:")).map(|rest| format!("ranks (mpirun -n):{rest}"));
    let flags: Vec<String> = ranks
        .chain(all.iter().filter_map(|d| d.strip_prefix("config.")).map(|d| match d.split_once(':') {
            Some((name, rest)) => format!("--{}:{rest}", name.replace('_', "-")),
            None => d.to_string(),
        }))
        .collect();
    if flags.is_empty() {
        all
    } else {
        flags
    }
}

/// The checkpoint names of an optimizer's two moments (PyTorch's state keys).
fn moment_names(kind: OptimizerKind) -> (&'static str, Option<&'static str>) {
    match kind {
        OptimizerKind::Adam => ("exp_avg", Some("exp_avg_sq")),
        OptimizerKind::Sgd => ("momentum_buffer", None),
    }
}

/// Optimizer state by parameter name, from the slots of `opt` in walking order (copied from
/// the device where it lives there).
pub fn optimizer_state(opt: &Optimizer, walk: &mut dyn FnMut(&mut TensorFn<'_>) -> Result<()>) -> Result<StateDict> {
    let mut out = StateDict::new();
    let mut slot = 0usize;
    let (a, b) = moment_names(opt.cfg.kind);
    walk(&mut |s, _| {
        if s.trainable {
            let (first, second) = opt.moments(slot);
            if !first.is_empty() {
                out.insert(format!("{a}.{}", s.name), (s.shape.to_vec(), first));
            }
            if let (Some(b), false) = (b, second.is_empty()) {
                out.insert(format!("{b}.{}", s.name), (s.shape.to_vec(), second));
            }
            slot += 1;
        }
        Ok(false)
    })?;
    Ok(out)
}

/// Puts optimizer state read from `dict` (the file `file`) back into `opt`'s slots; a moment
/// of another shape than its parameter, Adam's `exp_avg` without its `exp_avg_sq`, or (once
/// `opt.t`, set from the checkpoint first, counts steps taken) a trainable tensor without its
/// moments is an error naming the tensor: the optimizer never silently restarts from zero.
pub fn restore_optimizer(
    opt: &mut Optimizer,
    dict: &StateDict,
    file: &Path,
    walk: &mut dyn FnMut(&mut TensorFn<'_>) -> Result<()>,
) -> Result<()> {
    let (a, b) = moment_names(opt.cfg.kind);
    let steps = opt.t;
    let mut slots = Vec::new();
    walk(&mut |s, _| {
        if !s.trainable {
            return Ok(false);
        }
        let get = |key: String| -> Result<Vec<f32>> {
            match dict.get(&key) {
                None => Ok(Vec::new()),
                Some((shape, data)) if shape.as_slice() == s.shape => Ok(data.clone()),
                Some((shape, _)) => Err(Error::bad_file(
                    file,
                    format!("tensor {key} has shape {shape:?}, the parameter {} has {:?}", s.name, s.shape),
                )),
            }
        };
        let first = get(format!("{a}.{}", s.name))?;
        if first.is_empty() && steps > 0 {
            return Err(Error::bad_file(
                file,
                format!(
                    "holds no {a}.{} though the run took {steps} optimizer steps (incomplete optimizer state; \
                     delete the checkpoint folder to restart the run from scratch)",
                    s.name
                ),
            ));
        }
        let second = match b {
            Some(b) => {
                let second = get(format!("{b}.{}", s.name))?;
                if first.is_empty() != second.is_empty() {
                    return Err(Error::bad_file(
                        file,
                        format!("holds only one of {a}.{0} and {b}.{0} (incomplete optimizer state)", s.name),
                    ));
                }
                second
            }
            None => Vec::new(),
        };
        slots.push((first, second));
        Ok(false)
    })?;
    opt.set_moments(slots);
    Ok(())
}

/// The key in `state.json` that records the checkpoint's format. Absent: format 1, written before
/// the format was recorded (with or without `digest.json`).
pub const FORMAT_KEY: &str = "checkpoint_format";
/// The format [`save`] writes: 2, `digest.json` always written and required by [`load`].
pub const FORMAT: u64 = 2;

/// What [`load`] returns.
#[derive(Debug)]
pub struct Loaded<S> {
    /// `state.json`.
    pub state: S,
    /// The model's tensors.
    pub model: StateDict,
    /// The optimizer's tensors.
    pub optimizer: StateDict,
    /// The folder it came from (for error messages).
    pub dir: PathBuf,
}

/// Writes a checkpoint into `run` (`state` must serialize to a JSON object: [`FORMAT_KEY`] is
/// added to it).
pub fn save<S: Serialize>(run: &Path, state: &S, model: &StateDict, optimizer: &StateDict) -> Result<()> {
    let tmp = run.join(format!("{DIR}.tmp-{}", std::process::id()));
    let result = (|| {
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).at(&tmp)?;
        }
        std::fs::create_dir_all(&tmp).at(&tmp)?;
        save_safetensors(&tmp.join(WEIGHTS[0]), model)?;
        save_safetensors(&tmp.join(WEIGHTS[1]), optimizer)?;
        let mut digest = serde_json::Map::new();
        for name in WEIGHTS {
            digest.insert(name.into(), sha256_file(&tmp.join(name))?.0.into());
        }
        write_json(&tmp.join(DIGEST), &digest)?;
        let json = stamped(state).map_err(|e| Error::bad_file(tmp.join(STATE), e))?;
        write_atomic(&tmp.join(STATE), &json)?;
        let (cur, old) = (run.join(DIR), run.join(OLD));
        if cur.exists() {
            if old.exists() {
                std::fs::remove_dir_all(&old).at(&old)?;
            }
            std::fs::rename(&cur, &old).at(&cur)?;
        }
        std::fs::rename(&tmp, &cur).at(&cur)?;
        if old.exists() {
            std::fs::remove_dir_all(&old).at(&old)?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result
}

/// Reads the newest complete checkpoint of `run`, if any.
pub fn load<S: DeserializeOwned>(run: &Path) -> Result<Option<Loaded<S>>> {
    for name in [DIR, OLD] {
        let dir = run.join(name);
        let state_path = dir.join(STATE);
        if !state_path.is_file() {
            continue;
        }
        let text = std::fs::read_to_string(&state_path).at(&state_path)?;
        let mut value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| Error::bad_file(&state_path, e.to_string()))?;
        let format = match value.as_object_mut().and_then(|o| o.remove(FORMAT_KEY)) {
            None => 1,
            Some(v) => match v.as_u64() {
                Some(f @ 2..=FORMAT) => f,
                Some(f) if f > FORMAT => {
                    return Err(Error::bad_file(
                        &state_path,
                        format!(
                            "{FORMAT_KEY} {f}: written by a newer siamlab (this one reads up to {FORMAT}); \
                             resume with that version"
                        ),
                    ))
                }
                _ => {
                    return Err(Error::bad_file(
                        &state_path,
                        format!(
                            "{FORMAT_KEY} {v} is not a checkpoint format ({FORMAT} expected); \
                             delete {} to restart the run from scratch",
                            dir.display()
                        ),
                    ))
                }
            },
        };
        let state: S = serde_json::from_value(value).map_err(|e| Error::bad_file(&state_path, e.to_string()))?;
        check_digest(&dir, format)?;
        let model = load_safetensors(&dir.join(WEIGHTS[0]))?;
        let optimizer = load_safetensors(&dir.join(WEIGHTS[1]))?;
        return Ok(Some(Loaded { state, model, optimizer, dir }));
    }
    Ok(None)
}

/// `state` as `state.json`: its JSON object with [`FORMAT_KEY`] added.
fn stamped<S: Serialize>(state: &S) -> std::result::Result<Vec<u8>, String> {
    let mut value = serde_json::to_value(state).map_err(|e| e.to_string())?;
    let object = value.as_object_mut().ok_or("the loop's state is not a JSON object")?;
    object.insert(FORMAT_KEY.into(), FORMAT.into());
    serde_json::to_vec_pretty(&value).map_err(|e| e.to_string())
}

/// Checks the weight files of checkpoint folder `dir` (of format `format`) against its
/// `digest.json`. Without one: an error from format 2 on; a warning on stderr for format 1
/// (written before the format was recorded, possibly before digests were).
fn check_digest(dir: &Path, format: u64) -> Result<()> {
    let path = dir.join(DIGEST);
    if !path.exists() {
        if format >= 2 {
            return Err(Error::bad_file(
                &path,
                format!(
                    "missing, so the checkpoint's weights cannot be verified; \
                     delete {} to restart the run from scratch",
                    dir.display()
                ),
            ));
        }
        eprintln!(
            "warning: {}: checkpoint written before siamlab recorded its format, without {DIGEST}: \
             its weights cannot be verified",
            dir.display()
        );
        return Ok(());
    }
    let digest: std::collections::BTreeMap<String, String> = read_json(&path)?;
    for name in WEIGHTS {
        let file = dir.join(name);
        let expected = digest.get(name).ok_or_else(|| Error::bad_file(&path, format!("no digest of {name}")))?;
        let (sha, _) = sha256_file(&file)?;
        if &sha != expected {
            return Err(Error::bad_file(
                &file,
                format!(
                    "damaged: its sha256 {sha} is not the {expected} recorded in {DIGEST}; \
                     delete {} to restart the run from scratch",
                    dir.display()
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A loop's state (a JSON object, as the loops' are).
    #[derive(Debug, PartialEq, Serialize, serde::Deserialize)]
    struct Epoch {
        epoch: u32,
    }

    /// A write that fails half-way (here: a tensor whose data does not fill its shape, as a
    /// full disk would fail the write) leaves the previous checkpoint complete and loadable.
    #[test]
    fn a_failed_write_keeps_the_previous_checkpoint() {
        let t = tempfile::tempdir().unwrap();
        let mut good = StateDict::new();
        good.insert("w".into(), (vec![2], vec![1.0, 2.0]));
        save(t.path(), &Epoch { epoch: 1 }, &good, &StateDict::new()).unwrap();
        save(t.path(), &Epoch { epoch: 2 }, &good, &StateDict::new()).unwrap();
        let mut bad = StateDict::new();
        bad.insert("w".into(), (vec![3], vec![1.0, 2.0]));
        assert!(save(t.path(), &Epoch { epoch: 3 }, &bad, &StateDict::new()).is_err());
        let l = load::<Epoch>(t.path()).unwrap().unwrap();
        assert_eq!(l.state, Epoch { epoch: 2 });
        assert_eq!(l.model["w"].1, vec![1.0, 2.0]);
        let names: Vec<String> =
            std::fs::read_dir(t.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
        assert_eq!(names, ["checkpoint"], "no temporary folder left behind");
        // A crash between the two renames leaves only checkpoint.old: it is used.
        std::fs::rename(t.path().join(DIR), t.path().join(OLD)).unwrap();
        assert_eq!(load::<Epoch>(t.path()).unwrap().unwrap().state, Epoch { epoch: 2 });
    }

    #[test]
    fn a_flipped_byte_in_the_weights_is_an_error_naming_the_file() {
        let t = tempfile::tempdir().unwrap();
        let mut w = StateDict::new();
        w.insert("w".into(), (vec![4], vec![1.0, 2.0, 3.0, 4.0]));
        save(t.path(), &Epoch { epoch: 1 }, &w, &w).unwrap();
        let file = t.path().join(DIR).join("model.safetensors");
        let mut b = std::fs::read(&file).unwrap();
        let n = b.len();
        b[n - 3] ^= 0x10;
        std::fs::write(&file, b).unwrap();
        let err = load::<Epoch>(t.path()).unwrap_err().to_string();
        assert!(err.contains("model.safetensors: damaged: its sha256"), "{err}");
    }

    /// Deleting `digest.json` does not skip the check: a checkpoint that records its format is
    /// refused without it, in one line naming the folder and what to do. One written before the
    /// format was recorded (no key in `state.json`, no digest) still loads, with a warning.
    #[test]
    fn a_missing_digest_is_an_error_unless_the_checkpoint_predates_it() {
        let t = tempfile::tempdir().unwrap();
        let mut w = StateDict::new();
        w.insert("w".into(), (vec![2], vec![1.0, 2.0]));
        save(t.path(), &Epoch { epoch: 4 }, &w, &w).unwrap();
        let dir = t.path().join(DIR);
        let state: serde_json::Value = read_json(&dir.join(STATE)).unwrap();
        assert_eq!(state, serde_json::json!({"epoch": 4, FORMAT_KEY: FORMAT}));
        std::fs::remove_file(dir.join(DIGEST)).unwrap();
        let err = load::<Epoch>(t.path()).unwrap_err().to_string();
        let expected = format!(
            "{}: missing, so the checkpoint's weights cannot be verified; delete {} to restart the run from scratch",
            dir.join(DIGEST).display(),
            dir.display()
        );
        assert!(err.contains(&expected), "{err}");
        assert!(!err.contains('\n'), "{err}");
        // A format-1 checkpoint: state.json as the loops wrote it before, no digest.
        std::fs::write(dir.join(STATE), br#"{"epoch": 4}"#).unwrap();
        let l = load::<Epoch>(t.path()).unwrap().unwrap();
        assert_eq!((l.state, l.model), (Epoch { epoch: 4 }, w.clone()));
        // A format this siamlab does not know is refused, not read as if it were one it does.
        std::fs::write(dir.join(STATE), format!(r#"{{"epoch": 4, "{FORMAT_KEY}": {}}}"#, FORMAT + 1)).unwrap();
        let err = load::<Epoch>(t.path()).unwrap_err().to_string();
        assert!(err.contains("written by a newer siamlab"), "{err}");
    }

    #[test]
    fn a_run_folder_is_held_by_one_process_and_stale_temporaries_go() {
        let t = tempfile::tempdir().unwrap();
        let stale = t.path().join(format!("{DIR}.tmp-999999"));
        std::fs::create_dir_all(&stale).unwrap();
        std::fs::write(stale.join("model.safetensors"), b"half").unwrap();
        let held = lock(t.path()).unwrap();
        assert!(!stale.exists());
        let err = lock(t.path()).unwrap_err().to_string();
        assert!(err.contains("another siamlab process is training into this folder"), "{err}");
        drop(held);
        lock(t.path()).unwrap();
    }

    #[test]
    fn config_changes_name_the_flags() {
        #[derive(Serialize)]
        struct C {
            epochs: u32,
            image_size: u32,
        }
        #[derive(Serialize)]
        struct R {
            config: C,
            batches_per_epoch: u32,
        }
        let a = R { config: C { epochs: 10, image_size: 32 }, batches_per_epoch: 4 };
        let b = R { config: C { epochs: 20, image_size: 32 }, batches_per_epoch: 4 };
        assert_eq!(config_changes(&a, &b), ["--epochs: 10 → 20"]);
        let c = R { config: C { epochs: 10, image_size: 32 }, batches_per_epoch: 5 };
        assert_eq!(config_changes(&a, &c), ["batches_per_epoch: 4 → 5"]);
    }
}
