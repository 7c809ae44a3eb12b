//! The streaming pipeline: plan → read (tokio, Parquet row groups) → decode + augment (worker
//! threads) → reorder + prefetch (bounded) → consumer, connected by bounded async-channel queues.
//!
//! Each worker takes a whole batch job and fills recycled buffers; every random draw comes from
//! a generator keyed by (seed, epoch, row id, view), and batches are re-ordered by number before
//! they leave, so the output is a pure function of data and configuration, whatever the worker
//! count or timing. Dropping the [`Pipeline`] closes the queues, stops every stage and joins the
//! worker threads.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use siamlab_datasets::shard::{Manifest, ShardBatch, ShardReader, SplitInfo};
use siamlab_datasets::store::{self, Location, StoreOptions};

use crate::augment::{sample_rng, Normalize, Recipe, Scratch};
use crate::batch::{Batch, Buffers};
use crate::decode::decode_into;
use crate::error::{Error, Result};
use crate::fetch::{read_group, Prefetch, ShardSlot, PARALLEL_FETCHES};
use crate::plan::{auto_window_rows, GroupRef, Order, PipelineState, Plan, ShuffleBy};
use crate::stats::{add, Counters, StageStats};

/// Which augmentation recipe the views use.
#[derive(Debug, Clone)]
pub enum RecipeChoice {
    /// A named recipe (`simsiam`, `finetune`, `eval`) at the pipeline's image size, normalized
    /// with the manifest's mean/std unless [`PipelineBuilder::normalize`] says otherwise.
    Named(String),
    /// A ready recipe.
    Custom(Box<Recipe>),
}

/// Configures a [`Pipeline`]; see [`Pipeline::builder`].
#[derive(Debug, Clone)]
pub struct PipelineBuilder {
    data: Data,
    store: StoreOptions,
    split: String,
    order: Order,
    recipe: RecipeChoice,
    views: usize,
    workers: usize,
    prefetch: usize,
    image_size: Option<u32>,
    normalize: Option<Normalize>,
    skip_bad: bool,
    require_labels: bool,
    start_sample: u64,
    /// Tests: the stage that panics at its first batch.
    #[cfg(test)]
    panic_in: Option<&'static str>,
}

/// Where the shards are: as given (resolved when the pipeline is built), or resolved already.
#[derive(Debug, Clone)]
enum Data {
    Spec(PathBuf),
    At(Location),
}

/// One sample handed to a worker.
struct JobSample {
    data: Arc<ShardBatch>,
    row: usize,
    row_id: u64,
    shard: usize,
    shard_row: u64,
}

struct Job {
    seq: u64,
    samples: Vec<JobSample>,
}

enum Event {
    Batch(Batch),
    Error(Error),
}

/// A running pipeline: iterate it (blocking) or `await` [`Pipeline::next`].
pub struct Pipeline {
    out: async_channel::Receiver<(u64, Event)>,
    jobs: async_channel::Receiver<Job>,
    gate: Arc<ReorderGate>,
    workers: Vec<JoinHandle<()>>,
    runtime: Option<tokio::runtime::Runtime>,
    counters: Arc<Counters>,
    state: PipelineState,
    batch_size: usize,
    batches: usize,
    shape: [usize; 4],
    finished: bool,
}

impl PipelineBuilder {
    fn new(data: Data) -> Self {
        PipelineBuilder {
            data,
            store: StoreOptions::default(),
            split: "train".into(),
            order: Order {
                seed: 0,
                epoch: 0,
                shuffle: true,
                shuffle_by: ShuffleBy::RowGroups,
                window_rows: 0, // auto: about 32 MiB of encoded images
                rank: 0,
                world: 1,
                batch_size: 256,
                drop_last: false,
                subset: None,
            },
            recipe: RecipeChoice::Named("simsiam".into()),
            views: 2,
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            prefetch: 2,
            image_size: None,
            normalize: None,
            skip_bad: false,
            require_labels: false,
            start_sample: 0,
            #[cfg(test)]
            panic_in: None,
        }
    }
    /// How a URL given to [`Pipeline::builder`] is opened: cache folder and limit (a
    /// [`Location`] given to [`Pipeline::builder_at`] brings its own).
    pub fn store_options(mut self, opts: StoreOptions) -> Self {
        self.store = opts;
        self
    }
    /// Read only a seeded subset of the split's rows (a validation hold-out, or a fraction of
    /// the data); see [`Subset`](crate::Subset).
    pub fn subset(mut self, subset: crate::Subset) -> Self {
        self.order.subset = Some(subset);
        self
    }
    /// Split to read (default `train`).
    pub fn split(mut self, split: &str) -> Self {
        self.split = split.into();
        self
    }
    /// Seed of every random choice (order and augmentation).
    pub fn seed(mut self, seed: u64) -> Self {
        self.order.seed = seed;
        self
    }
    /// Epoch (a new order and new augmentations each epoch).
    pub fn epoch(mut self, epoch: u64) -> Self {
        self.order.epoch = epoch;
        self
    }
    /// This process's rank among `world` (data-parallel sharding).
    pub fn shard(mut self, rank: usize, world: usize) -> Self {
        self.order.rank = rank;
        self.order.world = world;
        self
    }
    /// `n` views per sample drawn with `recipe` (a name: `simsiam`, `finetune`, `eval`).
    pub fn views(mut self, recipe: &str, n: usize) -> Self {
        self.recipe = RecipeChoice::Named(recipe.into());
        self.views = n;
        self
    }
    /// `n` views per sample drawn with a ready recipe.
    pub fn recipe(mut self, recipe: Recipe, n: usize) -> Self {
        self.recipe = RecipeChoice::Custom(Box::new(recipe));
        self.views = n;
        self
    }
    /// Output side in pixels for named recipes (default: the split's smallest image side).
    pub fn image_size(mut self, size: u32) -> Self {
        self.image_size = Some(size);
        self
    }
    /// Normalization for named recipes (default: the manifest's mean/std).
    pub fn normalize(mut self, n: Normalize) -> Self {
        self.normalize = Some(n);
        self
    }
    /// Samples per batch.
    pub fn batch_size(mut self, b: usize) -> Self {
        self.order.batch_size = b;
        self
    }
    /// Drop the last incomplete batch.
    pub fn drop_last(mut self, d: bool) -> Self {
        self.order.drop_last = d;
        self
    }
    /// Shuffle (default on); off gives shard order.
    pub fn shuffle(mut self, s: bool) -> Self {
        self.order.shuffle = s;
        self
    }
    /// What the epoch permutes before shuffling rows inside each window: row groups across
    /// the split (default) or shards, then row groups inside each (see [`ShuffleBy`]; for a
    /// cache smaller than the data, or a cold one).
    pub fn shuffle_by(mut self, by: ShuffleBy) -> Self {
        self.order.shuffle_by = by;
        self
    }
    /// Minimum rows of a shuffle window (default, or 0: about 32 MiB of encoded images, at
    /// least 1,024 rows and at most 8,192; see [`auto_window_rows`](crate::plan::auto_window_rows)).
    /// The read stage keeps the row groups of about one window in memory.
    pub fn shuffle_window(mut self, rows: u64) -> Self {
        self.order.window_rows = rows;
        self
    }
    /// Augmentation worker threads (default: all cores). Does not change the output.
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n;
        self
    }
    /// Ready batches kept ahead of the consumer (default 2). Memory: besides the batches the
    /// consumer keeps, at most `prefetch + 2 × workers + 1` batch buffers exist, each
    /// `views × B × 3 × H × W` f32, whatever the dataset size or a slow worker.
    pub fn prefetch(mut self, n: usize) -> Self {
        self.prefetch = n;
        self
    }
    /// Skip rows whose image does not decode (counted in the stats) instead of failing.
    pub fn skip_bad(mut self, s: bool) -> Self {
        self.skip_bad = s;
        self
    }
    /// Refuse rows without a class label (the input of a classifier or of kNN) with an error
    /// naming the shard and row, instead of delivering them with label −1. Datasets with
    /// attributes (multi-label, e.g. CelebA) are exempt: their targets are the attributes.
    pub fn require_labels(mut self, r: bool) -> Self {
        self.require_labels = r;
        self
    }
    /// Resume: yield exactly the batches that were still to come after `state` was taken.
    pub fn resume(mut self, state: PipelineState) -> Self {
        self.order.seed = state.seed;
        self.order.epoch = state.epoch;
        self.start_sample = state.next_sample;
        self
    }

    /// Plans the epoch and starts the stages.
    pub fn build(self) -> Result<Pipeline> {
        let o = &self.order;
        if o.world == 0 || o.rank >= o.world {
            return Err(Error::Config(format!("rank {} is not in 0..{}", o.rank, o.world)));
        }
        if o.batch_size == 0 || self.views == 0 || self.workers == 0 || self.prefetch == 0 {
            return Err(Error::Config("batch size, views, workers and prefetch must be at least 1".into()));
        }
        if self.start_sample % o.batch_size as u64 != 0 {
            return Err(Error::Config(format!(
                "resume point {} is not a multiple of the batch size {}",
                self.start_sample, o.batch_size
            )));
        }
        let Planned { location, manifest, info, shards, shard_rows, plan } = self.plan()?;
        let recipe = self.recipe_for(&manifest, &info)?;
        let plan = Arc::new(plan);
        let start_batch = (self.start_sample / o.batch_size as u64) as usize;
        if start_batch > plan.batches() {
            return Err(Error::Config(format!("resume point {} is past the end of the epoch", self.start_sample)));
        }
        let [c, h, w] = recipe.output_shape();
        let shape = [o.batch_size, c, h, w];
        let n_attr = manifest.attributes.as_ref().map_or(0, |a| a.len());
        let classes = manifest.classes.as_ref().map_or(0, |c| c.len());

        let counters = Arc::new(Counters::default());
        let (jobs_tx, jobs_rx) = async_channel::bounded::<Job>(self.workers * 2);
        let (done_tx, done_rx) = async_channel::bounded::<(u64, Event)>(self.workers);
        let (out_tx, out_rx) = async_channel::bounded::<(u64, Event)>(self.prefetch);
        let gate = Arc::new(ReorderGate::new(start_batch as u64, self.workers as u64 * 2));
        let (pool_tx, pool_rx) = async_channel::bounded::<Buffers>(self.prefetch + self.workers * 2 + 1);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            // the read stage's one blocking read, and the prefetcher's downloads (object storage)
            .max_blocking_threads(1 + PARALLEL_FETCHES)
            .thread_name("siamlab-pipeline-io")
            .enable_time() // `next_within`'s deadline
            .build()
            .map_err(|e| Error::Config(format!("cannot start the I/O runtime: {e}")))?;

        // prefetch stage (object storage only): shards into the cache in the order of need
        let prefetch = location.remote().map(|remote| {
            let p = Arc::new(Prefetch::new(&plan, start_batch, &info.shards, remote.clone()));
            runtime.spawn(p.clone().run());
            p
        });

        // read stage
        {
            let plan = plan.clone();
            let counters = counters.clone();
            let out_err = done_tx.clone();
            let location = location.clone();
            #[cfg(test)]
            let panic_read = self.panic_in == Some("read");
            runtime.spawn(async move {
                let last_use = plan.last_use();
                let mut cache: HashMap<u32, Arc<ShardBatch>> = HashMap::new();
                for b in start_batch..plan.batches() {
                    let mut samples = Vec::with_capacity(plan.batch_size);
                    for &s in plan.batch(b) {
                        let data = match cache.get(&s.group) {
                            Some(d) => d.clone(),
                            None => {
                                let g = plan.groups[s.group as usize];
                                if let Some(p) = &prefetch {
                                    p.touch(g.shard);
                                }
                                let (shard, location) = (shards[g.shard].clone(), location.clone());
                                let t = Instant::now();
                                let read = tokio::task::spawn_blocking(move || {
                                    #[cfg(test)]
                                    if panic_read {
                                        panic!("injected into the read stage");
                                    }
                                    read_group(&location, &shard, g.group)
                                })
                                .await;
                                add(&counters.read_ns, t.elapsed());
                                counters.read_groups.fetch_add(1, Relaxed);
                                let data = match read {
                                    Ok(Ok(d)) => {
                                        if let Some(p) = &prefetch {
                                            p.group_read(g.shard);
                                        }
                                        Arc::new(d)
                                    }
                                    Ok(Err(e)) => {
                                        let _ = out_err.send((b as u64, Event::Error(e))).await;
                                        return;
                                    }
                                    Err(e) => {
                                        let err = match e.try_into_panic() {
                                            Ok(payload) => Error::panic("read", &*payload),
                                            Err(e) => Error::Panic { stage: "read", msg: e.to_string() },
                                        };
                                        let _ = out_err.send((b as u64, Event::Error(err))).await;
                                        return;
                                    }
                                };
                                cache.insert(s.group, data.clone());
                                counters.groups_peak.fetch_max(cache.len() as u64, Relaxed);
                                data
                            }
                        };
                        let g = plan.groups[s.group as usize];
                        samples.push(JobSample {
                            data,
                            row: s.row as usize,
                            row_id: plan.row_id(s),
                            shard: g.shard,
                            shard_row: shard_rows[s.group as usize] + s.row as u64,
                        });
                    }
                    cache.retain(|g, _| last_use[*g as usize].is_some_and(|l| l > b));
                    let t = Instant::now();
                    if jobs_tx.send(Job { seq: b as u64, samples }).await.is_err() {
                        return; // consumer gone
                    }
                    add(&counters.read_blocked_ns, t.elapsed());
                }
            });
        }

        // decode + augment stage
        let shard_paths: Arc<Vec<String>> = Arc::new(info.shards.iter().map(|s| location.shard_name(s)).collect());
        let recipe = Arc::new(recipe);
        let mut workers = Vec::with_capacity(self.workers);
        for i in 0..self.workers {
            let ctx = WorkerCtx {
                jobs: jobs_rx.clone(),
                done: done_tx.clone(),
                pool_rx: pool_rx.clone(),
                pool_tx: pool_tx.clone(),
                recipe: recipe.clone(),
                views: self.views,
                seed: o.seed,
                epoch: o.epoch,
                shape,
                n_attr,
                classes,
                skip_bad: self.skip_bad,
                require_labels: self.require_labels,
                shard_paths: shard_paths.clone(),
                counters: counters.clone(),
                gate: gate.clone(),
                #[cfg(test)]
                panic: self.panic_in == Some("decode/augment"),
            };
            let h = std::thread::Builder::new()
                .name(format!("siamlab-augment-{i}"))
                .spawn(move || ctx.run())
                .map_err(|e| Error::Config(format!("cannot start worker threads: {e}")))?;
            workers.push(h);
        }
        drop(done_tx);

        // reorder + prefetch stage
        let (reorder_counters, reorder_gate) = (counters.clone(), gate.clone());
        runtime.spawn(async move {
            let (counters, gate) = (reorder_counters, reorder_gate);
            let _closes = CloseOnDrop(gate.clone()); // the workers stop waiting when this stage ends
            let mut next = start_batch as u64;
            let mut held: BTreeMap<u64, Event> = BTreeMap::new();
            while let Ok((seq, ev)) = done_rx.recv().await {
                held.insert(seq, ev);
                let waiting = held.len() - usize::from(held.contains_key(&next));
                counters.reorder_peak.fetch_max(waiting as u64, Relaxed);
                while let Some(ev) = held.remove(&next) {
                    let stop = matches!(ev, Event::Error(_));
                    if out_tx.send((next, ev)).await.is_err() || stop {
                        done_rx.close();
                        return;
                    }
                    next += 1;
                    gate.advance(next);
                }
            }
            // the reader failed at a batch some worker never saw: deliver it in order
            if let Some((seq, ev)) = held.pop_first() {
                let _ = out_tx.send((seq, ev)).await;
            }
        });

        Ok(Pipeline {
            out: out_rx,
            jobs: jobs_rx,
            gate,
            workers,
            runtime: Some(runtime),
            counters,
            state: PipelineState { epoch: o.epoch, next_sample: self.start_sample, seed: o.seed },
            batch_size: o.batch_size,
            batches: plan.batches(),
            shape,
            finished: false,
        })
    }
}

struct Planned {
    location: Location,
    manifest: Manifest,
    info: SplitInfo,
    shards: Vec<Arc<ShardSlot>>,
    /// Row of each row group's first row within its shard.
    shard_rows: Vec<u64>,
    plan: Plan,
}

impl PipelineBuilder {
    /// Reads the manifest and the shards' footers and plans this rank's epoch.
    fn plan(&self) -> Result<Planned> {
        let location = match &self.data {
            Data::Spec(p) => store::open_path(p, &self.store)?,
            Data::At(l) => l.clone(),
        };
        let manifest = location.manifest()?;
        let info = manifest.split(&self.split)?.clone();
        let mut shards = Vec::new();
        let mut groups = Vec::new();
        let mut first = 0u64;
        // A remote shard's footer is read now (all of them at once) and the shard opened once
        // it is in the cache; a local shard is opened now, as it is read.
        let local_dir = location.local_dir();
        let mut remote_rows = match local_dir {
            Some(_) => Vec::new(),
            None => location.row_group_rows_each(&info.shards)?,
        }
        .into_iter();
        for (si, sh) in info.shards.iter().enumerate() {
            let (reader, group_rows) = match local_dir {
                Some(dir) => {
                    let reader = ShardReader::open(&dir.join(&sh.path))?;
                    let rows = (0..reader.row_groups()).map(|g| reader.row_group_rows(g)).collect();
                    (Some(Arc::new(reader)), rows)
                }
                None => (None, remote_rows.next().unwrap_or_default()),
            };
            let mut shard_row = 0u64;
            for (g, &rows) in group_rows.iter().enumerate() {
                groups.push((GroupRef { shard: si, group: g, rows: rows as u32, first_row: first }, shard_row));
                first += rows;
                shard_row += rows;
            }
            shards.push(Arc::new(ShardSlot::new(sh.clone(), location.shard_name(sh), group_rows, reader)));
        }
        let shard_rows: Vec<u64> = groups.iter().map(|(_, r)| *r).collect();
        let mut order = self.order;
        if order.window_rows == 0 {
            order.window_rows = auto_window_rows(info.shards.iter().map(|s| s.bytes).sum(), info.rows);
        }
        let plan = Plan::new(groups.into_iter().map(|(g, _)| g).collect(), &order);
        Ok(Planned { location, manifest, info, shards, shard_rows, plan })
    }

    /// The recipe the views use, planned for the split.
    fn recipe_for(&self, manifest: &Manifest, info: &SplitInfo) -> Result<Recipe> {
        Ok(match self.recipe.clone() {
            RecipeChoice::Custom(r) => *r,
            RecipeChoice::Named(name) => named_recipe(manifest, info, &name, self.image_size, self.normalize)?,
        })
    }

    /// Batches per epoch for this rank (the same every epoch), without starting anything:
    /// reads the manifest and the shards' footers and plans the recipe, so a bad folder or
    /// a bad recipe fails here.
    pub fn batches_per_epoch(&self) -> Result<usize> {
        let planned = self.plan()?;
        self.recipe_for(&planned.manifest, &planned.info)?;
        Ok(planned.plan.batches())
    }
}

struct WorkerCtx {
    jobs: async_channel::Receiver<Job>,
    done: async_channel::Sender<(u64, Event)>,
    pool_rx: async_channel::Receiver<Buffers>,
    pool_tx: async_channel::Sender<Buffers>,
    recipe: Arc<Recipe>,
    views: usize,
    seed: u64,
    epoch: u64,
    shape: [usize; 4],
    n_attr: usize,
    /// Classes in the manifest (0: none; labels are then not checked).
    classes: usize,
    skip_bad: bool,
    require_labels: bool,
    shard_paths: Arc<Vec<String>>,
    counters: Arc<Counters>,
    gate: Arc<ReorderGate>,
    #[cfg(test)]
    panic: bool,
}

/// The reorder window: a worker starts batch `seq` only once it is less than `window` batches
/// ahead of the next batch to deliver. So however long one worker stalls, the others finish at
/// most `window` batches (each a batch buffer) that wait in the reorder stage. Jobs are taken
/// in order, so the batch the reorder stage waits for is always allowed to run.
struct ReorderGate {
    /// Next batch to deliver, and whether the pipeline is shutting down.
    state: Mutex<(u64, bool)>,
    moved: Condvar,
    window: u64,
}

impl ReorderGate {
    fn new(next: u64, window: u64) -> Self {
        ReorderGate { state: Mutex::new((next, false)), moved: Condvar::new(), window: window.max(1) }
    }

    /// Blocks until batch `seq` may start; false when the pipeline shuts down.
    fn wait(&self, seq: u64) -> bool {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        while !st.1 && seq >= st.0 + self.window {
            st = self.moved.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        !st.1
    }

    fn advance(&self, next: u64) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).0 = next;
        self.moved.notify_all();
    }

    fn close(&self) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).1 = true;
        self.moved.notify_all();
    }
}

struct CloseOnDrop(Arc<ReorderGate>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close();
    }
}

impl WorkerCtx {
    fn run(self) {
        let mut scratch = Scratch::new();
        let (mut rgb, mut tmp) = (Vec::new(), Vec::new());
        loop {
            let t = Instant::now();
            let Ok(job) = self.jobs.recv_blocking() else { return };
            add(&self.counters.worker_idle_ns, t.elapsed());
            let seq = job.seq;
            if !self.gate.wait(seq) {
                return; // consumer gone
            }
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                #[cfg(test)]
                if self.panic {
                    panic!("injected into a worker");
                }
                self.fill(job, &mut scratch, &mut rgb, &mut tmp)
            }));
            let ev = match result {
                Ok(Ok(b)) => Event::Batch(b),
                Ok(Err(e)) => Event::Error(e),
                Err(p) => Event::Error(Error::panic("decode/augment", &*p)),
            };
            let t = Instant::now();
            if self.done.send_blocking((seq, ev)).is_err() {
                return; // consumer gone
            }
            add(&self.counters.worker_blocked_ns, t.elapsed());
        }
    }

    fn fill(&self, job: Job, scratch: &mut Scratch, rgb: &mut Vec<u8>, tmp: &mut Vec<u8>) -> Result<Batch> {
        let per = self.shape[1] * self.shape[2] * self.shape[3];
        let mut buf = self.pool_rx.try_recv().unwrap_or_else(|_| {
            self.counters.buffers_allocated.fetch_add(1, Relaxed);
            Buffers::default()
        });
        buf.views.resize_with(self.views, Vec::new);
        for v in &mut buf.views {
            v.resize(self.shape[0] * per, 0.0);
        }
        buf.labels.clear();
        buf.attributes.clear();
        buf.indices.clear();
        buf.rows.clear();
        let mut k = 0;
        for s in &job.samples {
            let t = Instant::now();
            let decoded = decode_into(s.data.image_bytes(s.row), rgb, tmp);
            add(&self.counters.decode_ns, t.elapsed());
            let (w, h) = match decoded {
                Ok(wh) => wh,
                Err(_) if self.skip_bad => {
                    self.counters.skipped.fetch_add(1, Relaxed);
                    continue;
                }
                Err(err) => {
                    return Err(Error::Decode { shard: self.shard_paths[s.shard].clone(), row: s.shard_row, err })
                }
            };
            let t = Instant::now();
            for (v, out) in buf.views.iter_mut().enumerate() {
                let mut rng = sample_rng(self.seed, self.epoch, s.row_id, v as u32);
                self.recipe.apply(rgb, w, h, &mut rng, &mut out[k * per..(k + 1) * per], scratch)?;
            }
            add(&self.counters.augment_ns, t.elapsed());
            let label = s.data.label(s.row).unwrap_or(-1);
            if label < -1 || (self.classes > 0 && label >= self.classes as i64) {
                return Err(Error::Label {
                    shard: self.shard_paths[s.shard].clone(),
                    row: s.shard_row,
                    label,
                    classes: self.classes,
                });
            }
            if label == -1 && self.require_labels && self.n_attr == 0 {
                return Err(Error::Unlabeled { shard: self.shard_paths[s.shard].clone(), row: s.shard_row });
            }
            buf.labels.push(label);
            if self.n_attr > 0 {
                match s.data.attributes(s.row) {
                    Some(a) => buf.attributes.extend_from_slice(&a),
                    None => buf.attributes.extend(std::iter::repeat_n(0, self.n_attr)),
                }
            }
            buf.indices.push(s.data.index(s.row).unwrap_or(s.row_id as i64));
            buf.rows.push(s.row_id);
            k += 1;
        }
        self.counters.samples.fetch_add(k as u64, Relaxed);
        let mut shape = self.shape;
        shape[0] = k;
        Ok(Batch { seq: job.seq, shape, num_attributes: self.n_attr, buf, pool: Some(self.pool_tx.clone()) })
    }
}

impl Pipeline {
    /// Starts configuring a pipeline over the shard folder `dir` (written by `siamlab ingest`):
    /// a path, or a URL (`s3://bucket/prefix`, …) read through a local cache (see
    /// [`PipelineBuilder::store_options`]).
    pub fn builder(dir: impl AsRef<Path>) -> PipelineBuilder {
        PipelineBuilder::new(Data::Spec(dir.as_ref().to_path_buf()))
    }

    /// Starts configuring a pipeline over a resolved [`Location`] ([`store::open`]): pipelines
    /// of successive epochs share its cache (and its counters).
    pub fn builder_at(location: Location) -> PipelineBuilder {
        PipelineBuilder::new(Data::At(location))
    }

    /// Batches in this epoch for this rank (including those already delivered).
    pub fn batches(&self) -> usize {
        self.batches
    }

    /// `[B, 3, H, W]` of a full batch.
    pub fn shape(&self) -> [usize; 4] {
        self.shape
    }

    /// Where the pipeline stands: a state to resume from after the batches delivered so far.
    pub fn state(&self) -> PipelineState {
        self.state
    }

    /// Per-stage counters so far.
    pub fn stats(&self) -> StageStats {
        self.counters.snapshot(self.workers.len())
    }

    /// Ready batches waiting in the prefetch queue.
    pub fn queue_fill(&self) -> usize {
        self.out.len()
    }

    fn accept(&mut self, item: std::result::Result<(u64, Event), async_channel::RecvError>) -> Option<Result<Batch>> {
        match item {
            Err(_) => {
                self.finished = true;
                None
            }
            Ok((_, Event::Batch(b))) => {
                self.state.next_sample += self.batch_size as u64;
                self.counters.batches.fetch_add(1, Relaxed);
                Some(Ok(b))
            }
            Ok((_, Event::Error(e))) => {
                self.finished = true;
                Some(Err(e))
            }
        }
    }

    /// The next batch (async); `None` at the end of the epoch. After an error, `None`.
    pub async fn next(&mut self) -> Option<Result<Batch>> {
        if self.finished {
            return None;
        }
        let t = Instant::now();
        let item = self.out.recv().await;
        add(&self.counters.consumer_wait_ns, t.elapsed());
        self.accept(item)
    }

    /// The next batch, blocking; `None` at the end of the epoch.
    pub fn next_blocking(&mut self) -> Option<Result<Batch>> {
        if self.finished {
            return None;
        }
        let t = Instant::now();
        let item = self.out.recv_blocking();
        add(&self.counters.consumer_wait_ns, t.elapsed());
        self.accept(item)
    }

    /// The next batch if one comes within `wait`, else [`Waited::TimedOut`] (call again): for a
    /// caller that must look up between waits, e.g. Python's signal check while a batch is slow.
    pub fn next_within(&mut self, wait: std::time::Duration) -> Waited {
        if self.finished {
            return Waited::Item(None);
        }
        let t = Instant::now();
        let Some(rt) = self.runtime.as_ref() else { return Waited::Item(None) };
        // (the timer is made inside the runtime: `timeout` outside it panics)
        let item = rt.block_on(async { tokio::time::timeout(wait, self.out.recv()).await });
        add(&self.counters.consumer_wait_ns, t.elapsed());
        match item {
            Ok(item) => Waited::Item(self.accept(item)),
            Err(_) => Waited::TimedOut,
        }
    }

    /// The pipeline as an async `Stream` of batches (ends at the end of the epoch or after an error).
    pub fn into_stream(self) -> PipelineStream {
        PipelineStream { p: Some(self), fut: None }
    }
}

/// What [`Pipeline::next_within`] found.
#[derive(Debug)]
pub enum Waited {
    /// What [`Pipeline::next_blocking`] would have returned.
    Item(Option<Result<Batch>>),
    /// Nothing arrived within the wait; the pipeline runs on.
    TimedOut,
}

type NextFuture = std::pin::Pin<Box<dyn std::future::Future<Output = (Pipeline, Option<Result<Batch>>)> + Send>>;

/// [`Pipeline`] as a `futures_core::Stream`.
pub struct PipelineStream {
    p: Option<Pipeline>,
    fut: Option<NextFuture>,
}

// The stream moves `Pipeline` in and out of its boxed future and never pins a field in place.
impl Unpin for PipelineStream {}

impl futures_core::Stream for PipelineStream {
    type Item = Result<Batch>;
    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.fut.is_none() {
            let Some(mut p) = this.p.take() else { return std::task::Poll::Ready(None) };
            this.fut = Some(Box::pin(async move {
                let item = p.next().await;
                (p, item)
            }));
        }
        let fut = this.fut.as_mut().expect("set above");
        match fut.as_mut().poll(cx) {
            std::task::Poll::Pending => std::task::Poll::Pending,
            std::task::Poll::Ready((p, item)) => {
                this.fut = None;
                this.p = Some(p);
                std::task::Poll::Ready(item)
            }
        }
    }
}

impl Iterator for Pipeline {
    type Item = Result<Batch>;

    /// Blocking iteration. A stage's panic arrives as [`Error::Panic`] naming the stage.
    fn next(&mut self) -> Option<Result<Batch>> {
        self.next_blocking()
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        self.out.close();
        self.jobs.close();
        self.gate.close();
        for h in self.workers.drain(..) {
            let _ = h.join();
        }
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// The recipe `name` for a split: at `image_size` (default: the split's smallest image side),
/// normalized with `normalize` (default: the manifest's mean/std, else ImageNet's).
pub(crate) fn named_recipe(
    manifest: &Manifest,
    info: &SplitInfo,
    name: &str,
    image_size: Option<u32>,
    normalize: Option<Normalize>,
) -> Result<Recipe> {
    let size = image_size.or(info.size_range.map(|r| r[0].min(r[1]))).unwrap_or(32);
    let normalize = match (normalize, &manifest.stats) {
        (Some(n), _) => n,
        (None, Some(st)) => Normalize::new(st.mean.map(|v| v as f32), st.std.map(|v| (v as f32).max(1e-3)))?,
        (None, None) => Normalize::imagenet(),
    };
    Ok(Recipe::by_name(name, size, normalize)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 17: a panic in a worker was re-raised by the blocking iterator, so a consumer
    /// (finetuning, eval, the kNN monitor) died with a panic of its own instead of an error.
    /// Each stage's panic now reaches the consumer as one error naming the stage, through
    /// the iterator and `next_blocking` alike, and the pipeline ends and shuts down.
    #[test]
    fn a_panic_in_any_stage_reaches_the_consumer_as_an_error_naming_the_stage() {
        let t = tempfile::tempdir().unwrap();
        let src = siamlab_datasets::synth::cifar_binary(t.path(), 4, 2, false).unwrap();
        let dir = t.path().join("shards");
        let cifar = siamlab_datasets::sources::Cifar::open(&src, false).unwrap();
        siamlab_datasets::ingest(Box::new(cifar), &siamlab_datasets::IngestOptions::new(&dir)).unwrap();
        for stage in ["read", "decode/augment"] {
            let build = || {
                let mut b = Pipeline::builder(&dir).batch_size(4).workers(2);
                b.panic_in = Some(stage);
                b.build().unwrap()
            };
            let items: Vec<Result<Batch>> = build().collect();
            assert_eq!(items.len(), 1, "{stage}: the error, then the end");
            let err = items[0].as_ref().unwrap_err();
            assert!(matches!(err, Error::Panic { stage: s, .. } if *s == stage), "{err}");
            assert!(err.to_string().starts_with(&format!("pipeline {stage} stage panicked: injected")), "{err}");
            let mut p = build();
            assert!(matches!(p.next_blocking(), Some(Err(Error::Panic { .. }))), "{stage}");
            assert!(p.next_blocking().is_none(), "{stage}");
        }
    }

    /// Regression, issue 3: the builder's default window was a fixed 8,192 rows (220 MiB of
    /// 96 px PNGs held by the read stage) instead of the documented ~32 MiB.
    #[test]
    fn default_shuffle_window_is_sized_from_the_bytes() {
        assert_eq!(super::Pipeline::builder("shards").order.window_rows, 0);
    }
}
