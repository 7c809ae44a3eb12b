//! `--dump-batches N DIR`: what a pretraining or finetuning run computed on its first `N`
//! micro-batches, so that another implementation can replay the same steps
//! (`tools/step_parity.py` does it in PyTorch and compares). The folder holds:
//!
//! - `batch-NNNNN.npy` (0-based): a micro-batch exactly as the pipeline produced it, float32
//!   `[views, n, 3, h, w]` (one view when finetuning);
//! - `targets-NNNNN.npy` (finetuning): the loss's targets of that micro-batch, float32 `[n, K]`
//!   (one-hot classes or 0/1 attributes);
//! - `init.safetensors`: every tensor of the model before the first step, parameters and
//!   BatchNorm buffers (`backbone.*` with the torchvision / timm names, then `projector.*`,
//!   `predictor.*` when pretraining, `fc.*` when finetuning);
//! - `step-NNNNN.safetensors` (1-based): `grad.NAME`, the accumulated gradient the step applied,
//!   and `NAME`, every tensor after the step;
//! - `dump.json`, written last (its presence means complete): the run's resolved configuration,
//!   the loss and loss scale of each micro-batch, and the learning rate and micro-batches of
//!   each optimizer step.
//!
//! The run stops after the optimizer step that completes the `N`-th micro-batch.

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};
use crate::params::{save_safetensors, StateDict};
use crate::prefetch::{Uploaded, Uploader};
use crate::run::files::write_atomic;
use crate::run::Walker;

/// What to dump: the first `batches` micro-batches, into `dir`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DumpConfig {
    /// Micro-batches to record.
    pub batches: usize,
    /// Folder to write (created; files in it are replaced).
    pub dir: PathBuf,
}

/// One micro-batch's record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MicroRecord {
    /// The loss (before scaling).
    pub loss: f32,
    /// The factor its gradient was scaled by (1 / the micro-batches of its step).
    pub scale: f32,
}

/// One optimizer step's record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// 1-based step number (the file `step-NNNNN.safetensors`).
    pub step: u64,
    /// Learning rate it ran at.
    pub lr: f64,
    /// Its micro-batches (indices of `batch-NNNNN.npy`).
    pub micros: Vec<usize>,
}

/// Writes `values` as a little-endian float32 `.npy` array of `shape` (format version 1.0).
pub fn write_npy(path: &Path, shape: &[usize], values: &[f32]) -> Result<()> {
    let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
    let dims = if dims.len() == 1 { format!("{},", dims[0]) } else { dims.join(", ") };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({dims}), }}");
    // Magic (6) + version (2) + length (2) + header + newline: a multiple of 64 bytes.
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = Vec::with_capacity(10 + header.len() + 4 * values.len());
    bytes.extend_from_slice(b"\x93NUMPY\x01\x00");
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend(values.iter().flat_map(|v| v.to_le_bytes()));
    write_atomic(path, &bytes)
}

/// Writes the batches it uploads (while the recorder is active), then hands them on.
struct DumpingUploader {
    inner: Box<dyn Uploader>,
    dir: PathBuf,
    /// Batches to write: the prefetcher uploads one ahead of the last recorded step.
    limit: usize,
    next: Rc<Cell<usize>>,
    active: Rc<Cell<bool>>,
}

impl Uploader for DumpingUploader {
    fn upload(&self, views: &[&[f32]], n: usize, h: usize, w: usize) -> Result<Uploaded> {
        if self.active.get() && self.next.get() < self.limit {
            let i = self.next.get();
            self.next.set(i + 1);
            let all: Vec<f32> = views.iter().flat_map(|v| v.iter().copied()).collect();
            write_npy(&self.dir.join(format!("batch-{i:05}.npy")), &[views.len(), n, 3, h, w], &all)?;
        }
        self.inner.upload(views, n, h, w)
    }
}

/// Records a run's first micro-batches and steps (see the module doc).
#[derive(Debug)]
pub struct Recorder {
    cfg: DumpConfig,
    next: Rc<Cell<usize>>,
    active: Rc<Cell<bool>>,
    micro: Vec<MicroRecord>,
    steps: Vec<StepRecord>,
    pending: Vec<usize>,
}

impl Recorder {
    /// Starts a dump of the net `walk` visits, as it is now (`init.safetensors`).
    pub fn start(cfg: &DumpConfig, walk: &mut Walker<'_>) -> Result<Self> {
        if cfg.batches == 0 {
            return Err(Error::config("--dump-batches needs at least one batch"));
        }
        std::fs::create_dir_all(&cfg.dir).at(&cfg.dir)?;
        let _ = std::fs::remove_file(cfg.dir.join("dump.json"));
        save_safetensors(&cfg.dir.join("init.safetensors"), &crate::run::state_of(walk)?)?;
        Ok(Recorder {
            cfg: cfg.clone(),
            next: Rc::new(Cell::new(0)),
            active: Rc::new(Cell::new(true)),
            micro: Vec::new(),
            steps: Vec::new(),
            pending: Vec::new(),
        })
    }

    /// `inner`, writing each batch it uploads while the dump lasts.
    pub fn wrap(&self, inner: Box<dyn Uploader>) -> Box<dyn Uploader> {
        Box::new(DumpingUploader {
            inner,
            dir: self.cfg.dir.clone(),
            limit: self.cfg.batches,
            next: self.next.clone(),
            active: self.active.clone(),
        })
    }

    /// The folder it writes.
    pub fn dir(&self) -> &Path {
        &self.cfg.dir
    }

    /// Whether it still records.
    pub fn active(&self) -> bool {
        self.active.get()
    }

    /// The targets (`[n, k]`) of the micro-batch trained next (finetuning); call it before
    /// that micro-batch's [`micro`](Self::micro).
    pub fn targets(&self, targets: &[f32], n: usize, k: usize) -> Result<()> {
        if !self.active() {
            return Ok(());
        }
        let i = self.micro.len();
        write_npy(&self.cfg.dir.join(format!("targets-{i:05}.npy")), &[n, k], targets)
    }

    /// A micro-batch was trained.
    pub fn micro(&mut self, loss: f32, scale: f32) {
        if self.active() {
            self.pending.push(self.micro.len());
            self.micro.push(MicroRecord { loss, scale });
        }
    }

    /// Step number `step` (1-based) ran at `lr` with the gradients `grads` (read before it); the
    /// tensors `walk` visits are those after it. Ends the dump once `N` micro-batches are
    /// recorded.
    pub fn step(&mut self, step: u64, lr: f64, grads: StateDict, walk: &mut Walker<'_>) -> Result<()> {
        if !self.active() {
            return Ok(());
        }
        let mut out: StateDict = grads.into_iter().map(|(k, v)| (format!("grad.{k}"), v)).collect();
        out.extend(crate::run::state_of(walk)?);
        save_safetensors(&self.cfg.dir.join(format!("step-{step:05}.safetensors")), &out)?;
        self.steps.push(StepRecord { step, lr, micros: std::mem::take(&mut self.pending) });
        if self.micro.len() >= self.cfg.batches {
            self.active.set(false);
        }
        Ok(())
    }

    /// Writes `dump.json` with `config` (the run's resolved configuration).
    pub fn finish(&self, config: &impl Serialize) -> Result<()> {
        let doc = serde_json::json!({ "config": config, "micro": self.micro, "steps": self.steps });
        let text = serde_json::to_string_pretty(&doc).map_err(|e| Error::config(e.to_string()))?;
        write_atomic(&self.cfg.dir.join("dump.json"), text.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_header_is_aligned_and_holds_the_shape() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.npy");
        write_npy(&p, &[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
        let b = std::fs::read(&p).unwrap();
        let len = u16::from_le_bytes([b[8], b[9]]) as usize;
        assert_eq!((10 + len) % 64, 0);
        let header = std::str::from_utf8(&b[10..10 + len]).unwrap();
        assert!(header.contains("'shape': (2, 3)"), "{header}");
        assert!(header.ends_with('\n'));
        assert_eq!(&b[10 + len..10 + len + 4], &1.0f32.to_le_bytes());
        assert_eq!(&b[b.len() - 4..], &6.0f32.to_le_bytes());
        assert_eq!(b.len(), 10 + len + 24);
    }
}
