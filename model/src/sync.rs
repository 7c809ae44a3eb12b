//! Synchronized BatchNorm (PyTorch's `SyncBatchNorm`): while a [`StatsReducer`] is set on this
//! thread ([`sync_batch_norm`]), BatchNorm in training mode takes its batch statistics over every
//! process of a data-parallel run — forward: the per-channel sum and count, then the sum of
//! squared deviations from the common mean; backward: the per-channel `Σ dy` and `Σ dy·x̂` — so
//! N processes with batch B/N normalise as one process with batch B. The model crate calls the
//! reducer; how it reaches the other processes (MPI) is the caller's.
//!
//! The reducer is per thread: the forward and backward of a training step run on the thread
//! that started them, and other threads (tests, a second run) are not touched.

use std::cell::RefCell;
use std::rc::Rc;

/// Sums per-channel statistics over every process of a run.
pub trait StatsReducer {
    /// Replaces `values` with their element-wise sum over every process (the same call, in the
    /// same order, on each). A failure must end the run (a process cannot go on alone).
    fn sum(&self, values: &mut [f64]);
}

thread_local! {
    static REDUCER: RefCell<Option<Rc<dyn StatsReducer>>> = const { RefCell::new(None) };
}

/// Synchronized BatchNorm on this thread with `reducer`, until the guard drops.
pub fn sync_batch_norm(reducer: Rc<dyn StatsReducer>) -> SyncGuard {
    let before = REDUCER.with(|r| r.borrow_mut().replace(reducer));
    SyncGuard { before }
}

/// Ends [`sync_batch_norm`] when dropped (restoring any reducer set before it).
pub struct SyncGuard {
    before: Option<Rc<dyn StatsReducer>>,
}

impl Drop for SyncGuard {
    fn drop(&mut self) {
        let before = self.before.take();
        REDUCER.with(|r| *r.borrow_mut() = before);
    }
}

/// The reducer set on this thread, if any.
pub(crate) fn reducer() -> Option<Rc<dyn StatsReducer>> {
    REDUCER.with(|r| r.borrow().clone())
}

