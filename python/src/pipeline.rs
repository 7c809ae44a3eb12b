//! `siamlab.Pipeline`: a re-iterable, PyTorch-style view of [`siamlab_pipeline::Pipeline`].
//! Each `iter()` starts the Rust pipeline for the current epoch (and resume point) and
//! returns an [`EpochIterator`] that owns it; when that iterator is released (the end of a
//! `for` loop, a `break`, an exception, `close()`), the pipeline drops and every one of its
//! threads stops. The GIL is released while a batch is awaited (the stages never hold it).

use std::sync::{Arc, Mutex};

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use siamlab_pipeline::{PipelineBuilder, PipelineState, ShuffleBy, StageStats, Waited};

use crate::arrays;
use crate::errors;

/// How long a batch is awaited before Python's signal handlers (Ctrl-C) get a turn.
const SIGNAL_CHECK: std::time::Duration = std::time::Duration::from_millis(100);

/// What the iterators report back to their `Pipeline`.
#[derive(Default)]
struct Progress {
    state: Option<PipelineState>,
    stats: Option<StageStats>,
}

/// Streams augmented multi-view batches from a shard folder written by `siamlab.ingest` (or
/// `siamlab ingest`). Iterate it once per epoch; call `set_epoch(e)` before each epoch, as
/// with PyTorch's `DistributedSampler`.
///
/// Batches equal the Rust pipeline's bit for bit for the same shards, seed, epoch, rank,
/// world, recipe and batch size, whatever `workers` is.
#[pyclass(module = "siamlab")]
pub struct Pipeline {
    data: String,
    split: String,
    views: String,
    n_views: usize,
    batch_size: usize,
    workers: Option<usize>,
    prefetch: usize,
    seed: u64,
    epoch: u64,
    rank: usize,
    world: usize,
    drop_last: bool,
    image_size: Option<u32>,
    shuffle: bool,
    shuffle_by: ShuffleBy,
    skip_bad: bool,
    batches: usize,
    /// Samples to skip at the next `iter()` (set by `load_state_dict`).
    resume_at: u64,
    progress: Arc<Mutex<Progress>>,
}

impl Pipeline {
    fn builder(&self) -> PipelineBuilder {
        let mut b = siamlab_pipeline::Pipeline::builder(&self.data)
            .split(&self.split)
            .views(&self.views, self.n_views)
            .batch_size(self.batch_size)
            .prefetch(self.prefetch)
            .shard(self.rank, self.world)
            .drop_last(self.drop_last)
            .shuffle(self.shuffle)
            .shuffle_by(self.shuffle_by)
            .skip_bad(self.skip_bad)
            .resume(PipelineState { epoch: self.epoch, next_sample: self.resume_at, seed: self.seed });
        if let Some(w) = self.workers {
            b = b.workers(w);
        }
        if let Some(s) = self.image_size {
            b = b.image_size(s);
        }
        b
    }

    fn state(&self) -> PipelineState {
        let progress = self.progress.lock().unwrap_or_else(|e| e.into_inner());
        progress.state.unwrap_or(PipelineState { epoch: self.epoch, next_sample: self.resume_at, seed: self.seed })
    }
}

#[pymethods]
impl Pipeline {
    #[new]
    #[pyo3(signature = (data, split="train", views="simsiam", n_views=2, batch_size=256, workers=None,
        prefetch=2, seed=0, epoch=0, rank=0, world=1, drop_last=false, image_size=None, shuffle=true,
        skip_bad=false, shuffle_by="row-groups"))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        data: std::path::PathBuf,
        split: &str,
        views: &str,
        n_views: usize,
        batch_size: usize,
        workers: Option<usize>,
        prefetch: usize,
        seed: u64,
        epoch: u64,
        rank: usize,
        world: usize,
        drop_last: bool,
        image_size: Option<u32>,
        shuffle: bool,
        skip_bad: bool,
        shuffle_by: &str,
    ) -> PyResult<Self> {
        let shuffle_by: ShuffleBy = shuffle_by.parse().map_err(PyValueError::new_err)?;
        let mut p = Pipeline {
            data: data.display().to_string(),
            split: split.into(),
            views: views.into(),
            n_views,
            batch_size,
            workers,
            prefetch,
            seed,
            epoch,
            rank,
            world,
            drop_last,
            image_size,
            shuffle,
            shuffle_by,
            skip_bad,
            batches: 0,
            resume_at: 0,
            progress: Arc::default(),
        };
        if batch_size == 0 || n_views == 0 || prefetch == 0 || workers == Some(0) {
            return Err(PyValueError::new_err("batch_size, n_views, workers and prefetch must be at least 1"));
        }
        if world == 0 || rank >= world {
            return Err(PyValueError::new_err(format!("rank {rank} is not in 0..{world}")));
        }
        let builder = p.builder();
        p.batches = py.detach(|| builder.batches_per_epoch()).map_err(errors::config)?;
        Ok(p)
    }

    /// Batches per epoch for this rank.
    fn __len__(&self) -> usize {
        self.batches
    }

    /// Starts the pipeline for the current epoch (from the loaded state, if any).
    fn __iter__(&mut self, py: Python<'_>) -> PyResult<EpochIterator> {
        let builder = self.builder();
        let pipeline = py.detach(|| builder.build()).map_err(errors::config)?;
        let progress = self.progress.clone();
        {
            let mut pr = progress.lock().unwrap_or_else(|e| e.into_inner());
            pr.state = Some(pipeline.state());
            pr.stats = Some(pipeline.stats());
        }
        self.resume_at = 0;
        Ok(EpochIterator { inner: Some(pipeline), progress })
    }

    /// Sets the epoch of the next iteration (a new order and new augmentations), and forgets
    /// any loaded resume point.
    fn set_epoch(&mut self, epoch: u64) {
        self.epoch = epoch;
        self.resume_at = 0;
        self.progress.lock().unwrap_or_else(|e| e.into_inner()).state = None;
    }

    /// Where the last iteration stands: `{"epoch", "next_sample", "seed"}` plus the settings
    /// a resume must share (`batch_size`, `rank`, `world`, `split`). Save it with a checkpoint.
    fn state_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.state();
        let d = PyDict::new(py);
        d.set_item("epoch", s.epoch)?;
        d.set_item("next_sample", s.next_sample)?;
        d.set_item("seed", s.seed)?;
        d.set_item("batch_size", self.batch_size)?;
        d.set_item("rank", self.rank)?;
        d.set_item("world", self.world)?;
        d.set_item("split", &self.split)?;
        Ok(d)
    }

    /// Makes the next iteration yield exactly the batches that were still to come when
    /// `state` was taken (same data, recipe, batch size, rank and world).
    fn load_state_dict(&mut self, state: &Bound<'_, PyDict>) -> PyResult<()> {
        let get = |k: &str| -> PyResult<Bound<'_, PyAny>> {
            state.get_item(k)?.ok_or_else(|| PyValueError::new_err(format!("state_dict has no {k:?}")))
        };
        for (key, mine) in [("batch_size", self.batch_size), ("rank", self.rank), ("world", self.world)] {
            if let Some(v) = state.get_item(key)? {
                let theirs: usize = v.extract()?;
                if theirs != mine {
                    return Err(PyValueError::new_err(format!(
                        "state_dict was taken with {key}={theirs}, this pipeline has {key}={mine}"
                    )));
                }
            }
        }
        if let Some(v) = state.get_item("split")? {
            let theirs: String = v.extract()?;
            if theirs != self.split {
                return Err(PyValueError::new_err(format!(
                    "state_dict was taken on split {theirs:?}, this pipeline reads {:?}",
                    self.split
                )));
            }
        }
        let next_sample: u64 = get("next_sample")?.extract()?;
        if next_sample % self.batch_size as u64 != 0 {
            return Err(PyValueError::new_err(format!(
                "next_sample {next_sample} is not a multiple of the batch size {}",
                self.batch_size
            )));
        }
        self.epoch = get("epoch")?.extract()?;
        self.seed = get("seed")?.extract()?;
        self.resume_at = next_sample;
        self.progress.lock().unwrap_or_else(|e| e.into_inner()).state =
            Some(PipelineState { epoch: self.epoch, next_sample, seed: self.seed });
        Ok(())
    }

    /// Per-stage counters of the last iteration (seconds summed over threads) and the
    /// bottleneck, in words; empty before the first iteration.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let stats = self.progress.lock().unwrap_or_else(|e| e.into_inner()).stats;
        stats_dict(py, stats)
    }

    /// The epoch the next iteration reads.
    #[getter]
    fn epoch(&self) -> u64 {
        self.epoch
    }

    fn __repr__(&self) -> String {
        format!(
            "siamlab.Pipeline({:?}, split={:?}, views={:?}, n_views={}, batch_size={}, epoch={}, rank={}, world={}, \
             batches={})",
            self.data,
            self.split,
            self.views,
            self.n_views,
            self.batch_size,
            self.epoch,
            self.rank,
            self.world,
            self.batches
        )
    }
}

fn stats_dict(py: Python<'_>, stats: Option<StageStats>) -> PyResult<Bound<'_, PyDict>> {
    let d = PyDict::new(py);
    let Some(s) = stats else { return Ok(d) };
    d.set_item("read_groups", s.read_groups)?;
    d.set_item("read_s", s.read_s)?;
    d.set_item("read_blocked_s", s.read_blocked_s)?;
    d.set_item("decode_s", s.decode_s)?;
    d.set_item("augment_s", s.augment_s)?;
    d.set_item("worker_idle_s", s.worker_idle_s)?;
    d.set_item("worker_blocked_s", s.worker_blocked_s)?;
    d.set_item("samples", s.samples)?;
    d.set_item("skipped", s.skipped)?;
    d.set_item("batches", s.batches)?;
    d.set_item("consumer_wait_s", s.consumer_wait_s)?;
    d.set_item("workers", s.workers)?;
    d.set_item("buffers_allocated", s.buffers_allocated)?;
    d.set_item("reorder_peak", s.reorder_peak)?;
    d.set_item("row_groups_peak", s.row_groups_peak)?;
    d.set_item("bottleneck", s.bottleneck())?;
    Ok(d)
}

/// One epoch of a [`Pipeline`]: owns the running Rust pipeline and its threads.
#[pyclass(module = "siamlab")]
pub struct EpochIterator {
    inner: Option<siamlab_pipeline::Pipeline>,
    progress: Arc<Mutex<Progress>>,
}

impl EpochIterator {
    fn stop(&mut self, py: Python<'_>) {
        if let Some(p) = self.inner.take() {
            self.progress.lock().unwrap_or_else(|e| e.into_inner()).stats = Some(p.stats());
            py.detach(move || drop(p)); // joins the workers
        }
    }
}

#[pymethods]
impl EpochIterator {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&mut self, py: Python<'_>) -> PyResult<Option<Batch>> {
        let item = loop {
            let Some(p) = self.inner.as_mut() else { return Ok(None) };
            match py.detach(|| p.next_within(SIGNAL_CHECK)) {
                Waited::Item(item) => break item,
                Waited::TimedOut => {
                    // Ctrl-C while a batch is slow: raise now, and stop the threads as `break` would
                    if let Err(e) = py.check_signals() {
                        self.stop(py);
                        return Err(e);
                    }
                }
            }
        };
        let Some(p) = self.inner.as_mut() else { return Ok(None) };
        match item {
            Some(Ok(batch)) => {
                {
                    let mut pr = self.progress.lock().unwrap_or_else(|e| e.into_inner());
                    pr.state = Some(p.state());
                    pr.stats = Some(p.stats());
                }
                let (seq, len) = (batch.seq, batch.len());
                let a = arrays::wrap(py, batch)?;
                Ok(Some(Batch {
                    seq,
                    len,
                    views: a.views,
                    labels: a.labels,
                    attributes: a.attributes,
                    indices: a.indices,
                }))
            }
            None => {
                self.stop(py);
                Ok(None)
            }
            Some(Err(e)) => {
                self.stop(py);
                Err(errors::pipeline(e))
            }
        }
    }

    /// Stops the pipeline now (every thread); later `next()` calls end the iteration.
    fn close(&mut self, py: Python<'_>) {
        self.stop(py);
    }

    /// Per-stage counters so far, as `Pipeline.stats()`.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let stats = match &self.inner {
            Some(p) => Some(p.stats()),
            None => self.progress.lock().unwrap_or_else(|e| e.into_inner()).stats,
        };
        stats_dict(py, stats)
    }

    fn __len__(&self) -> usize {
        self.inner.as_ref().map_or(0, |p| {
            let done = (p.state().next_sample / p.shape()[0] as u64) as usize;
            p.batches().saturating_sub(done)
        })
    }
}

/// A batch: `views` (a list of `[B, 3, H, W]` float32 arrays, normalized), `labels` (`[B]`
/// int64, -1 where unlabeled), `attributes` (`[B, A]` int8 for datasets with attributes such
/// as CelebA, else `None`) and `indices` (`[B]` int64, the samples' source indices). The
/// arrays are views of the pipeline's buffers (writable, no copy; `torch.from_numpy` works
/// on them); the buffers return to the pipeline when the last array is released.
#[pyclass(module = "siamlab", frozen)]
pub struct Batch {
    /// Batch number within the epoch (for this rank).
    #[pyo3(get)]
    seq: u64,
    len: usize,
    #[pyo3(get)]
    views: Vec<Py<PyAny>>,
    #[pyo3(get)]
    labels: Py<PyAny>,
    #[pyo3(get)]
    attributes: Option<Py<PyAny>>,
    #[pyo3(get)]
    indices: Py<PyAny>,
}

#[pymethods]
impl Batch {
    fn __len__(&self) -> usize {
        self.len
    }

    fn __repr__(&self) -> String {
        format!("siamlab.Batch(seq={}, len={}, views={})", self.seq, self.len, self.views.len())
    }
}
