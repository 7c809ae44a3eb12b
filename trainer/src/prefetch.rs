//! The last pipeline stage on the training side: batches moved to the compute device one step
//! ahead. While the device runs a step (its kernels are queued, not finished: CUDA runs them
//! asynchronously), the trainer takes the next host batch from the pipeline and queues its
//! upload into device memory; only then does it wait for the step's loss. So the next step
//! finds its inputs already in GPU memory — two batches on the device at a time (double
//! buffering) — and the pipeline's own workers keep producing host batches meanwhile. On `Cpu`
//! the same order of work costs nothing extra.
//!
//! Each batch travels with the pipeline position after it, so a checkpoint taken after a step
//! resumes at exactly the next batch although the pipeline is one batch further.
//!
//! (dfdx's `Cuda` device is not `Send` — cudarc's stream handle is not — so the upload is
//! queued from the training thread rather than from a thread of its own.)

use siamlab_pipeline::{Pipeline, PipelineState};

use crate::error::Result;

/// Data already on the compute device: the views of a batch, for
/// [`SslNet::train_uploaded`](crate::net::SslNet::train_uploaded) /
/// [`ClsNet::train_uploaded`](crate::net::ClsNet::train_uploaded), or a linear-evaluation
/// feature set ([`ClsNet::upload_features`](crate::net::ClsNet::upload_features)); what is
/// inside depends on the device.
pub struct Uploaded(pub(crate) Box<dyn std::any::Any>);

/// Moves host views to the compute device; made by the net
/// ([`SslNet::uploader`](crate::net::SslNet::uploader), [`ClsNet::uploader`](crate::net::ClsNet::uploader)).
pub trait Uploader {
    /// Copies the `views` (each `[n, 3, h, w]`) to the device (queues the copy on a GPU).
    fn upload(&self, views: &[&[f32]], n: usize, h: usize, w: usize) -> Result<Uploaded>;
}

/// A batch on the device with what the loop needs of it.
pub struct DeviceBatch {
    /// The views, uploaded.
    pub views: Uploaded,
    /// Images in the batch.
    pub len: usize,
    /// The pipeline's position after this batch.
    pub state: PipelineState,
    /// Host batches that were ready in the pipeline's queue when this one was taken.
    pub host_queue: usize,
    /// The batch's class labels (host; finetuning turns them into targets).
    pub labels: Vec<i64>,
    /// The batch's attributes, row-major (empty without attributes).
    pub attributes: Vec<i8>,
}

/// The stage: a pipeline, an uploader and the batch already uploaded.
pub struct DevicePrefetch {
    pipeline: Pipeline,
    uploader: Box<dyn Uploader>,
    views: usize,
    size: (usize, usize),
    ahead: Option<Result<DeviceBatch>>,
    done: bool,
    taken: usize,
    waits: usize,
}

impl DevicePrefetch {
    /// The stage over `pipeline` (`views` views per batch of `h × w` images).
    pub fn new(pipeline: Pipeline, uploader: Box<dyn Uploader>, views: usize, size: (usize, usize)) -> Self {
        DevicePrefetch { pipeline, uploader, views, size, ahead: None, done: false, taken: 0, waits: 0 }
    }

    /// Takes the next host batch and uploads it, unless one is already waiting on the device
    /// or the epoch is over. Call it while the device works on the current step.
    pub fn fill(&mut self) {
        if self.ahead.is_some() || self.done {
            return;
        }
        let host_queue = self.pipeline.queue_fill();
        self.ahead = match self.pipeline.next_blocking() {
            None => {
                self.done = true;
                None
            }
            Some(Err(e)) => Some(Err(e.into())),
            Some(Ok(b)) => {
                let v: Vec<&[f32]> = (0..self.views).map(|i| b.view(i)).collect();
                Some(self.uploader.upload(&v, b.len(), self.size.0, self.size.1).map(|views| DeviceBatch {
                    views,
                    len: b.len(),
                    state: self.pipeline.state(),
                    host_queue,
                    labels: b.labels().to_vec(),
                    attributes: b.attributes().to_vec(),
                }))
            }
        };
    }

    /// The next batch on the device (uploaded now when it was not prefetched); `None` at the
    /// end of the epoch.
    pub fn next_batch(&mut self) -> Option<Result<DeviceBatch>> {
        if self.ahead.is_none() && !self.done {
            self.waits += 1;
            self.fill();
        }
        let b = self.ahead.take()?;
        self.taken += 1;
        Some(b)
    }

    /// Batches taken so far, and how many of them were not on the device yet when asked for
    /// (in steady state only the first of an epoch).
    pub fn waits(&self) -> (usize, usize) {
        (self.taken, self.waits)
    }
}
