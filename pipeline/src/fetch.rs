//! Shards for the read stage: opened where they lie (a local folder), or fetched into the
//! local cache of an object store first — ahead of the reader, in the order the epoch plan
//! needs them, a bounded number of shards and bytes ahead ([`Prefetch`]).

use std::sync::atomic::Ordering::SeqCst;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize};
use std::sync::{Arc, Mutex};

use siamlab_datasets::shard::{ShardBatch, ShardInfo, ShardReader};
use siamlab_datasets::store::{Location, Remote};

use crate::error::{Error, Result};
use crate::plan::Plan;

/// Columns the pipeline reads.
const COLUMNS: &[&str] = &["image", "label", "attributes", "index"];

/// One shard of the split: its manifest entry, its name in messages, the rows of its row
/// groups (as planned) and, once open, its reader.
pub(crate) struct ShardSlot {
    info: ShardInfo,
    name: String,
    group_rows: Vec<u64>,
    reader: Mutex<Option<Arc<ShardReader>>>,
}

impl ShardSlot {
    pub(crate) fn new(info: ShardInfo, name: String, group_rows: Vec<u64>, reader: Option<Arc<ShardReader>>) -> Self {
        ShardSlot { info, name, group_rows, reader: Mutex::new(reader) }
    }

    fn reader(&self) -> Option<Arc<ShardReader>> {
        self.reader.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set_reader(&self, r: Option<Arc<ShardReader>>) {
        *self.reader.lock().unwrap_or_else(|e| e.into_inner()) = r;
    }
}

/// Reads row group `group` of `slot` (blocking). From a store, the shard comes from the cache
/// (downloaded and checked first if need be) and stays pinned while it is read; should
/// another process have evicted it between two reads, it is fetched again.
pub(crate) fn read_group(at: &Location, slot: &ShardSlot, group: usize) -> Result<ShardBatch> {
    let Some(remote) = at.remote() else {
        let reader = slot.reader().expect("local shards are opened when planned");
        return Ok(reader.read_row_group(group, Some(COLUMNS))?);
    };
    let mut tries = 0;
    loop {
        tries += 1;
        let file = remote.shard_file(&slot.info)?;
        let reader = match slot.reader() {
            Some(r) => r,
            None => {
                let r = ShardReader::open(&file.path)?;
                let rows: Vec<u64> = (0..r.row_groups()).map(|g| r.row_group_rows(g)).collect();
                if rows != slot.group_rows {
                    return Err(Error::Config(format!(
                        "{}: its row groups changed since the epoch was planned ({rows:?}, planned {:?})",
                        slot.name, slot.group_rows
                    )));
                }
                let r = Arc::new(r);
                slot.set_reader(Some(r.clone()));
                r
            }
        };
        match reader.read_row_group(group, Some(COLUMNS)) {
            Err(siamlab_datasets::Error::Io { err, .. }) if err.kind() == std::io::ErrorKind::NotFound && tries < 3 => {
                slot.set_reader(None);
            }
            other => return Ok(other?),
        }
    }
}

const NOT_YET: u8 = 0;
const FETCHED: u8 = 1;
const TOUCHED: u8 = 2;

/// Fetches shards into the cache ahead of the reader: in the order of their first use in this
/// epoch (from the resume point), at most [`Remote::ahead`] shards past the reader's and at
/// most half the cache limit of fetched-but-unread bytes. A shard the reader reaches first is
/// skipped (the reader fetches it itself); a failed fetch stops prefetching (the reader then
/// meets the error with its own message).
pub(crate) struct Prefetch {
    order: Vec<usize>,
    shards: Vec<ShardInfo>,
    state: Vec<AtomicU8>,
    touched: AtomicUsize,
    ahead_bytes: AtomicU64,
    wake_tx: async_channel::Sender<()>,
    wake_rx: async_channel::Receiver<()>,
    remote: Arc<Remote>,
}

impl Prefetch {
    pub(crate) fn new(plan: &Plan, start_batch: usize, shards: &[ShardInfo], remote: Arc<Remote>) -> Self {
        let mut seen = vec![false; shards.len()];
        let mut order = Vec::new();
        for b in start_batch..plan.batches() {
            for s in plan.batch(b) {
                let shard = plan.groups[s.group as usize].shard;
                if !seen[shard] {
                    seen[shard] = true;
                    order.push(shard);
                }
            }
        }
        let (wake_tx, wake_rx) = async_channel::bounded(1);
        Prefetch {
            order,
            shards: shards.to_vec(),
            state: shards.iter().map(|_| AtomicU8::new(NOT_YET)).collect(),
            touched: AtomicUsize::new(0),
            ahead_bytes: AtomicU64::new(0),
            wake_tx,
            wake_rx,
            remote,
        }
    }

    /// The reader is about to read from `shard`.
    pub(crate) fn touch(&self, shard: usize) {
        let prev = self.state[shard].swap(TOUCHED, SeqCst);
        if prev != TOUCHED {
            self.touched.fetch_add(1, SeqCst);
            if prev == FETCHED {
                self.ahead_bytes.fetch_sub(self.shards[shard].bytes, SeqCst);
            }
            let _ = self.wake_tx.try_send(());
        }
    }

    pub(crate) async fn run(self: Arc<Self>) {
        let budget = self.remote.cache().limit() / 2;
        for (i, &shard) in self.order.iter().enumerate() {
            let bytes = self.shards[shard].bytes;
            loop {
                if self.state[shard].load(SeqCst) != NOT_YET {
                    break;
                }
                let ahead = self.ahead_bytes.load(SeqCst);
                if i < self.touched.load(SeqCst) + self.remote.ahead() && (ahead == 0 || ahead + bytes <= budget) {
                    let (remote, info) = (self.remote.clone(), self.shards[shard].clone());
                    match tokio::task::spawn_blocking(move || remote.prefetch(&info)).await {
                        Ok(Ok(())) => {}
                        _ => return,
                    }
                    if self.state[shard].compare_exchange(NOT_YET, FETCHED, SeqCst, SeqCst).is_ok() {
                        self.ahead_bytes.fetch_add(bytes, SeqCst);
                    }
                    break;
                }
                // Wait for the reader to move on; it is gone when the sender is dropped.
                if Arc::strong_count(&self) == 1 || self.wake_rx.recv().await.is_err() {
                    return;
                }
            }
        }
    }
}
