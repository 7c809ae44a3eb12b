//! Shards for the read stage: opened where they lie (a local folder), or fetched into the
//! local cache of an object store first — ahead of the reader, in the order the epoch plan
//! needs them, a bounded number of shards and bytes ahead ([`Prefetch`]).

use std::sync::atomic::Ordering::SeqCst;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize};
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
const FETCHING: u8 = 1;
const FETCHED: u8 = 2;
const TOUCHED: u8 = 3;

/// Downloads the prefetcher keeps in flight at once: two hide a far-away bucket's request
/// latency behind each other's transfer (the read stage's blocking pool has room for them).
pub(crate) const PARALLEL_FETCHES: usize = 2;

/// Fetches shards into the cache ahead of the reader: in the order of their first use in this
/// epoch (from the resume point), [`PARALLEL_FETCHES`] at a time, at most [`Remote::ahead`]
/// shards past the reader's, at most half the cache limit of fetched-or-fetching but unread
/// bytes, and only while the shards the reader still needs (touched, not yet read to the end)
/// and those fetched for it fit in the limit together: a prefetch never pushes out a shard
/// the epoch will read again. A shard whose last row group of the epoch has been read is
/// retired in the cache (evicted first). A shard the reader reaches first is skipped (the
/// reader fetches it itself, or waits for the download in flight); a failed fetch stops
/// prefetching (the reader then meets the error with its own message).
pub(crate) struct Prefetch {
    order: Vec<usize>,
    shards: Vec<ShardInfo>,
    state: Vec<AtomicU8>,
    /// Row groups of each shard this epoch still reads.
    unread: Vec<AtomicUsize>,
    touched: AtomicUsize,
    /// Fetched or fetching, not yet touched by the reader.
    ahead_bytes: AtomicU64,
    /// Fetched, fetching or touched, and not yet read to the end.
    held_bytes: AtomicU64,
    in_flight: AtomicUsize,
    failed: AtomicBool,
    wake_tx: async_channel::Sender<()>,
    wake_rx: async_channel::Receiver<()>,
    remote: Arc<Remote>,
}

impl Prefetch {
    pub(crate) fn new(plan: &Plan, start_batch: usize, shards: &[ShardInfo], remote: Arc<Remote>) -> Self {
        let mut group_seen = vec![false; plan.groups.len()];
        let mut unread = vec![0usize; shards.len()];
        let mut order = Vec::new();
        for b in start_batch..plan.batches() {
            for s in plan.batch(b) {
                let shard = plan.groups[s.group as usize].shard;
                if !std::mem::replace(&mut group_seen[s.group as usize], true) {
                    unread[shard] += 1;
                    // The shard's first group: the shard is first needed here.
                    if unread[shard] == 1 {
                        order.push(shard);
                    }
                }
            }
        }
        let (wake_tx, wake_rx) = async_channel::bounded(1);
        Prefetch {
            order,
            shards: shards.to_vec(),
            state: shards.iter().map(|_| AtomicU8::new(NOT_YET)).collect(),
            unread: unread.into_iter().map(AtomicUsize::new).collect(),
            touched: AtomicUsize::new(0),
            ahead_bytes: AtomicU64::new(0),
            held_bytes: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            failed: AtomicBool::new(false),
            wake_tx,
            wake_rx,
            remote,
        }
    }

    /// The reader is about to read a row group of `shard`.
    pub(crate) fn touch(&self, shard: usize) {
        let prev = self.state[shard].swap(TOUCHED, SeqCst);
        if prev != TOUCHED {
            self.touched.fetch_add(1, SeqCst);
            if prev == FETCHED || prev == FETCHING {
                self.ahead_bytes.fetch_sub(self.shards[shard].bytes, SeqCst);
            } else {
                self.held_bytes.fetch_add(self.shards[shard].bytes, SeqCst);
            }
            let _ = self.wake_tx.try_send(());
        }
    }

    /// The reader has read a row group of `shard`: after its last one of the epoch, the
    /// shard no longer counts against the limit and is the first the cache evicts.
    pub(crate) fn group_read(&self, shard: usize) {
        let before = self.unread[shard].fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1));
        if before == Ok(1) {
            self.held_bytes.fetch_sub(self.shards[shard].bytes, SeqCst);
            self.remote.cache().retire(&self.shards[shard].sha256);
            let _ = self.wake_tx.try_send(());
        }
    }

    /// Downloads `shard` (on the blocking pool), then records it and wakes the planner.
    fn fetch(self: &Arc<Self>, shard: usize) {
        let me = self.clone();
        tokio::task::spawn_blocking(move || {
            let ok = me.remote.prefetch(&me.shards[shard]).is_ok();
            let done = if ok { FETCHED } else { NOT_YET };
            if me.state[shard].compare_exchange(FETCHING, done, SeqCst, SeqCst).is_ok() && !ok {
                me.ahead_bytes.fetch_sub(me.shards[shard].bytes, SeqCst);
                me.held_bytes.fetch_sub(me.shards[shard].bytes, SeqCst);
            }
            if !ok {
                me.failed.store(true, SeqCst);
            }
            me.in_flight.fetch_sub(1, SeqCst);
            let _ = me.wake_tx.try_send(());
        });
    }

    pub(crate) async fn run(self: Arc<Self>) {
        let limit = self.remote.cache().limit();
        let budget = limit / 2;
        for (i, &shard) in self.order.iter().enumerate() {
            let bytes = self.shards[shard].bytes;
            loop {
                if self.failed.load(SeqCst) {
                    return;
                }
                if self.state[shard].load(SeqCst) != NOT_YET {
                    break;
                }
                let (ahead, held) = (self.ahead_bytes.load(SeqCst), self.held_bytes.load(SeqCst));
                if self.in_flight.load(SeqCst) < PARALLEL_FETCHES
                    && i < self.touched.load(SeqCst) + self.remote.ahead()
                    && (ahead == 0 || ahead + bytes <= budget)
                    && (held == 0 || held + bytes <= limit)
                {
                    if self.state[shard].compare_exchange(NOT_YET, FETCHING, SeqCst, SeqCst).is_ok() {
                        self.ahead_bytes.fetch_add(bytes, SeqCst);
                        self.held_bytes.fetch_add(bytes, SeqCst);
                        self.in_flight.fetch_add(1, SeqCst);
                        self.fetch(shard);
                    }
                    break;
                }
                // Wait for the reader to move on or a download to end; the pipeline is gone
                // when only this task and the downloads in flight hold the prefetcher.
                if Arc::strong_count(&self) <= 1 + self.in_flight.load(SeqCst) || self.wake_rx.recv().await.is_err() {
                    return;
                }
            }
        }
    }
}
