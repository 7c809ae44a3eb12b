//! Per-stage counters: work time, time blocked on a full queue, time idle on an empty one.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Live counters, shared by the stages.
#[derive(Debug, Default)]
pub struct Counters {
    pub(crate) read_ns: AtomicU64,
    pub(crate) read_groups: AtomicU64,
    pub(crate) read_blocked_ns: AtomicU64,
    pub(crate) decode_ns: AtomicU64,
    pub(crate) augment_ns: AtomicU64,
    pub(crate) worker_idle_ns: AtomicU64,
    pub(crate) worker_blocked_ns: AtomicU64,
    pub(crate) samples: AtomicU64,
    pub(crate) skipped: AtomicU64,
    pub(crate) batches: AtomicU64,
    pub(crate) consumer_wait_ns: AtomicU64,
    pub(crate) buffers_allocated: AtomicU64,
    pub(crate) reorder_peak: AtomicU64,
    pub(crate) groups_peak: AtomicU64,
}

pub(crate) fn add(c: &AtomicU64, d: Duration) {
    c.fetch_add(d.as_nanos() as u64, Relaxed);
}

/// A snapshot of the counters (times summed over the threads of a stage).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StageStats {
    /// Row groups read and their read+decode-from-Parquet time.
    pub read_groups: u64,
    /// Seconds spent reading Parquet.
    pub read_s: f64,
    /// Seconds the reader waited for room in the job queue.
    pub read_blocked_s: f64,
    /// Seconds the workers spent decoding images.
    pub decode_s: f64,
    /// Seconds the workers spent augmenting.
    pub augment_s: f64,
    /// Seconds the workers waited for a job (starved by the reader).
    pub worker_idle_s: f64,
    /// Seconds the workers waited for room in the output queue (consumer slower).
    pub worker_blocked_s: f64,
    /// Samples produced.
    pub samples: u64,
    /// Samples skipped (undecodable, with `skip_bad`).
    pub skipped: u64,
    /// Batches delivered.
    pub batches: u64,
    /// Seconds the consumer waited for a batch (the pipeline was the bottleneck).
    pub consumer_wait_s: f64,
    /// Worker threads.
    pub workers: usize,
    /// Batch buffers allocated (the pool was empty); bounded by the queue sizes, see
    /// [`PipelineBuilder::prefetch`](crate::PipelineBuilder::prefetch).
    pub buffers_allocated: u64,
    /// Most finished batches the reorder stage held at once, waiting for an earlier one.
    pub reorder_peak: u64,
    /// Most row groups the read stage's cache held at once (one shuffle window, two while
    /// passing from one window to the next).
    pub row_groups_peak: u64,
}

impl Counters {
    /// Snapshot.
    pub fn snapshot(&self, workers: usize) -> StageStats {
        let s = |c: &AtomicU64| c.load(Relaxed) as f64 * 1e-9;
        StageStats {
            read_groups: self.read_groups.load(Relaxed),
            read_s: s(&self.read_ns),
            read_blocked_s: s(&self.read_blocked_ns),
            decode_s: s(&self.decode_ns),
            augment_s: s(&self.augment_ns),
            worker_idle_s: s(&self.worker_idle_ns),
            worker_blocked_s: s(&self.worker_blocked_ns),
            samples: self.samples.load(Relaxed),
            skipped: self.skipped.load(Relaxed),
            batches: self.batches.load(Relaxed),
            consumer_wait_s: s(&self.consumer_wait_ns),
            workers,
            buffers_allocated: self.buffers_allocated.load(Relaxed),
            reorder_peak: self.reorder_peak.load(Relaxed),
            row_groups_peak: self.groups_peak.load(Relaxed),
        }
    }
}

impl StageStats {
    /// Names the stage that limits throughput, with the evidence.
    pub fn bottleneck(&self) -> String {
        let busy = self.decode_s + self.augment_s;
        let total = busy + self.worker_idle_s + self.worker_blocked_s;
        if total <= 0.0 {
            return "no work measured".into();
        }
        let frac = |x: f64| 100.0 * x / total;
        if self.worker_blocked_s > busy.max(self.worker_idle_s) {
            format!(
                "consumer: workers spent {:.0}% of their time waiting for room in the output queue",
                frac(self.worker_blocked_s)
            )
        } else if self.worker_idle_s > busy {
            format!("read: workers spent {:.0}% of their time waiting for row groups", frac(self.worker_idle_s))
        } else if self.augment_s >= self.decode_s {
            format!(
                "augment (workers, CPU-bound): augment {:.0}%, decode {:.0}%, idle {:.0}% of worker time",
                frac(self.augment_s),
                frac(self.decode_s),
                frac(self.worker_idle_s)
            )
        } else {
            format!(
                "decode (workers, CPU-bound): decode {:.0}%, augment {:.0}%, idle {:.0}% of worker time",
                frac(self.decode_s),
                frac(self.augment_s),
                frac(self.worker_idle_s)
            )
        }
    }
}
