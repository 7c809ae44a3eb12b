//! What a run folder holds, by name, and how its JSON files are read and written: the one
//! place that knows the layout
//!
//! ```text
//! RUN/config.json            the resolved configuration (pretrain::Resolved / finetune::Resolved)
//! RUN/metrics.jsonl          one record per finished epoch
//! RUN/summary.json           written last: the run is finished
//! RUN/backbone.safetensors   pretraining: the backbone alone, under its own (PyTorch) names
//! RUN/best.safetensors       finetuning: backbone and head of the best epoch
//! RUN/curves.png             the run's curves, redrawn after every epoch
//! RUN/checkpoint/            state.json, digest.json, model.safetensors, optimizer.safetensors
//! RUN/.lock                  held while a process trains into the folder
//! ```

use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, IoContext, Result};

/// The resolved configuration.
pub const CONFIG: &str = "config.json";
/// One JSON record per finished epoch.
pub const METRICS: &str = "metrics.jsonl";
/// The result, written when the run finishes.
pub const SUMMARY: &str = "summary.json";
/// A pretraining run's backbone (its own tensor names).
pub const BACKBONE: &str = "backbone.safetensors";
/// A finetuning run's best model (`backbone.*`, `fc.*`).
pub const BEST: &str = "best.safetensors";
/// The run's curves.
pub const CURVES: &str = "curves.png";
/// The checkpoint folder.
pub const CHECKPOINT: &str = "checkpoint";
/// The previous checkpoint, while a new one is renamed in.
pub const CHECKPOINT_OLD: &str = "checkpoint.old";
/// Inside a checkpoint: the loop's progress.
pub const STATE: &str = "state.json";
/// Inside a checkpoint: the sha256 of its weight files.
pub const DIGEST: &str = "digest.json";
/// Inside a checkpoint: the model's and the optimizer's tensors.
pub const WEIGHTS: [&str; 2] = ["model.safetensors", "optimizer.safetensors"];
/// The lock file of a run folder.
pub const LOCK: &str = ".lock";
/// An experiment's work folder: the tables as Markdown.
pub const RESULTS_MD: &str = "results.md";
/// An experiment's work folder: the tables as JSON.
pub const RESULTS_JSON: &str = "results.json";
/// An experiment's work folder: every run's curves overlaid.
pub const RUNS_PLOT: &str = "runs.png";

/// Reads a JSON file of the run.
pub fn read_json<S: DeserializeOwned>(path: &Path) -> Result<S> {
    let text = std::fs::read_to_string(path).at(path)?;
    serde_json::from_str(&text).map_err(|e| Error::bad_file(path, e.to_string()))
}

/// Writes a JSON file of the run atomically.
pub fn write_json<S: Serialize>(path: &Path, value: &S) -> Result<()> {
    let mut json = serde_json::to_vec_pretty(value).map_err(|e| Error::bad_file(path, e.to_string()))?;
    json.push(b'\n');
    write_atomic(path, &json)
}

/// Writes `bytes` to `path` atomically ([`siamlab_datasets::write_atomic`]).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    Ok(siamlab_datasets::write_atomic(path, bytes)?)
}

/// Appends one JSON line to `path`.
pub fn append_jsonl<S: Serialize>(path: &Path, value: &S) -> Result<()> {
    use std::io::Write;
    let mut line = serde_json::to_vec(value).map_err(|e| Error::bad_file(path, e.to_string()))?;
    line.push(b'\n');
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).at(path)?;
    f.write_all(&line).at(path)
}

/// Reads `metrics.jsonl` of run `dir` (none yet: no records): one record per line; a line that
/// does not parse is an error naming the line (a line cut short by a crash mid-write is the last
/// one, and is skipped).
pub fn read_records<R: DeserializeOwned>(dir: &Path) -> Result<Vec<R>> {
    let path = dir.join(METRICS);
    let text = match std::fs::read_to_string(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        r => r.at(&path)?,
    };
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        match serde_json::from_str(line) {
            Ok(r) => out.push(r),
            Err(_) if i + 1 == lines.len() && !text.ends_with('\n') => break,
            Err(e) => return Err(Error::bad_file(&path, format!("line {}: {e}", i + 1))),
        }
    }
    Ok(out)
}
