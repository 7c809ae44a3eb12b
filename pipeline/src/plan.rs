//! The plan stage: which rows this rank reads in this epoch, in which order, cut into batches.
//!
//! **Shuffling** (documented choice): row groups are permuted per epoch, then rows are shuffled
//! inside consecutive windows of row groups (a shuffle buffer of `window_rows` rows or more), like
//! FFCV's quasi-random order and MosaicML streaming's shuffle blocks. Reads stay sequential within
//! a row group and memory is bounded by the window, whatever the dataset size. With
//! [`ShuffleBy::Shards`] the shards are permuted instead, then the row groups inside each shard:
//! a window then holds rows of one or two shards, and the epoch moves through the shards one
//! after another (MosaicML's shard-then-sample shuffle), which a cache smaller than the data
//! and a cold cache need.
//!
//! **Rank sharding**: the epoch order is padded by wrapping around to a multiple of `world`
//! (PyTorch `DistributedSampler` semantics; with `drop_last` the tail is dropped instead), then
//! rank `r` takes the `r`-th contiguous block: blocks are disjoint, cover every row, and all have
//! the same length, hence the same batch count.

use rand_chacha::rand_core::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::augment::splitmix64;

/// A row group of the split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupRef {
    /// Shard number in the manifest.
    pub shard: usize,
    /// Row group within the shard.
    pub group: usize,
    /// Rows in the row group.
    pub rows: u32,
    /// Position of its first row in the split (shard order).
    pub first_row: u64,
}

/// One sample of the plan: a row of a row group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SampleRef {
    /// Index into [`Plan::groups`].
    pub group: u32,
    /// Row within that row group.
    pub row: u32,
}

/// Where a pipeline stands in an epoch: serialize it with a checkpoint, and build a pipeline
/// from it to get exactly the batches that were still to come.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PipelineState {
    /// Epoch.
    pub epoch: u64,
    /// Samples of this rank's epoch already delivered (a multiple of the batch size).
    pub next_sample: u64,
    /// Seed.
    pub seed: u64,
}

/// A seeded subset of a split: row `i` belongs to it when `u(seed, i)`, a uniform draw in
/// `[0, 1)` hashed from the seed and the row's position in the split, falls in `[lo, hi)`.
/// Disjoint ranges give disjoint subsets (a validation hold-out `[0, 0.1)` and the rest
/// `[0.1, 1)`), decided per row without reading the data.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Subset {
    /// Seed of the draw.
    pub seed: u64,
    /// Lower end (inclusive).
    pub lo: f64,
    /// Upper end (exclusive; 1 includes every row above `lo`).
    pub hi: f64,
}

impl Subset {
    /// Whether row `row_id` of the split is in the subset.
    pub fn contains(&self, row_id: u64) -> bool {
        let u = (splitmix64(self.seed ^ splitmix64(row_id ^ 0x5B5E_7000)) >> 11) as f64 / (1u64 << 53) as f64;
        u >= self.lo && (u < self.hi || self.hi >= 1.0)
    }
}

/// What the epoch permutes before the rows are shuffled inside each window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ShuffleBy {
    /// Row groups across the whole split (the default): a window mixes rows of many shards,
    /// so every shard is read from throughout the epoch.
    #[default]
    RowGroups,
    /// Shards, then the row groups inside each shard: a window holds rows of one or two
    /// shards, and each shard is read in one stretch of the epoch. For shards in an object
    /// store read through a cache smaller than the data (each shard is then downloaded at most
    /// once an epoch) or cold (reading starts once the first shard is in). Rows are less
    /// mixed: a batch draws from the one or two shards of its window.
    Shards,
}

impl std::str::FromStr for ShuffleBy {
    type Err = String;

    /// `row-groups` or `shards`, matched as every typed name is
    /// ([`siamlab_datasets::names::match_name`]: case, `-`, `_` and spaces forgiven), singulars
    /// too.
    fn from_str(s: &str) -> Result<Self, String> {
        const NAMES: [&str; 4] = ["row-groups", "shards", "row-group", "shard"];
        match siamlab_datasets::names::match_name(s, &NAMES) {
            Ok("row-groups" | "row-group") => Ok(ShuffleBy::RowGroups),
            Ok(_) => Ok(ShuffleBy::Shards),
            Err(closest) => {
                let hint = closest.map(|n| format!("; did you mean {n}?")).unwrap_or_default();
                Err(format!("unknown shuffle order {s:?}{hint}: expected row-groups or shards"))
            }
        }
    }
}

/// Ordering options.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Order {
    /// Seed.
    pub seed: u64,
    /// Epoch.
    pub epoch: u64,
    /// Shuffle at all.
    pub shuffle: bool,
    /// What is permuted before the windowed row shuffle.
    pub shuffle_by: ShuffleBy,
    /// Minimum rows per shuffle window (the pipeline builder turns 0 into
    /// [`auto_window_rows`]; [`Plan::new`] reads 0 as 1).
    pub window_rows: u64,
    /// This rank.
    pub rank: usize,
    /// Number of ranks.
    pub world: usize,
    /// Samples per batch.
    pub batch_size: usize,
    /// Drop the last incomplete batch (and, across ranks, the tail instead of padding).
    pub drop_last: bool,
    /// Only these rows of the split.
    pub subset: Option<Subset>,
}

/// The plan of one rank's epoch.
#[derive(Debug, Clone)]
pub struct Plan {
    /// All row groups of the split.
    pub groups: Vec<GroupRef>,
    /// This rank's samples, in delivery order.
    pub samples: Vec<SampleRef>,
    /// Samples per batch.
    pub batch_size: usize,
}

/// Encoded bytes the default shuffle window aims at.
pub const AUTO_WINDOW_BYTES: u64 = 32 << 20;

/// The default shuffle window of a split of `rows` rows in `bytes` bytes of shards: about
/// [`AUTO_WINDOW_BYTES`] of encoded images, at least 1,024 rows and at most 8,192. The window's
/// row groups are what the read stage keeps in memory, so it is sized in bytes, not rows:
/// 8,192 rows are 25 MB of 32 px PNGs but 230 MB of 96 px ones.
pub fn auto_window_rows(bytes: u64, rows: u64) -> u64 {
    let per_row = (bytes / rows.max(1)).max(1);
    (AUTO_WINDOW_BYTES / per_row).clamp(1024, 8192)
}

fn shuffle<T>(v: &mut [T], rng: &mut ChaCha8Rng) {
    for i in (1..v.len()).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
}

impl Plan {
    /// Builds the plan for `order` over `groups`.
    pub fn new(groups: Vec<GroupRef>, order: &Order) -> Plan {
        let mut rng = ChaCha8Rng::seed_from_u64(splitmix64(order.seed ^ splitmix64(order.epoch ^ 0x5EED_0F0D_5E00)));
        let mut group_order: Vec<u32> = (0..groups.len() as u32).collect();
        if order.shuffle {
            match order.shuffle_by {
                ShuffleBy::RowGroups => shuffle(&mut group_order, &mut rng),
                ShuffleBy::Shards => {
                    // `groups` lists each shard's row groups together (builder order).
                    let mut runs: Vec<&[u32]> =
                        group_order.chunk_by(|&a, &b| groups[a as usize].shard == groups[b as usize].shard).collect();
                    shuffle(&mut runs, &mut rng);
                    let mut by_shard = Vec::with_capacity(group_order.len());
                    for run in runs {
                        let at = by_shard.len();
                        by_shard.extend_from_slice(run);
                        shuffle(&mut by_shard[at..], &mut rng);
                    }
                    group_order = by_shard;
                }
            }
        }
        let total: u64 = groups.iter().map(|g| g.rows as u64).sum();
        let mut all = Vec::with_capacity(total as usize);
        let mut window = Vec::new();
        let mut window_rows = 0u64;
        let flush = |window: &mut Vec<SampleRef>, all: &mut Vec<SampleRef>, rng: &mut ChaCha8Rng| {
            if order.shuffle {
                shuffle(window, rng);
            }
            all.append(window);
        };
        for &g in &group_order {
            let GroupRef { rows, first_row, .. } = groups[g as usize];
            let keep = |row: &u32| order.subset.is_none_or(|s| s.contains(first_row + *row as u64));
            window.extend((0..rows).filter(keep).map(|row| SampleRef { group: g, row }));
            window_rows += rows as u64;
            if window_rows >= order.window_rows.max(1) {
                flush(&mut window, &mut all, &mut rng);
                window_rows = 0;
            }
        }
        flush(&mut window, &mut all, &mut rng);

        let world = order.world.max(1);
        let n = all.len();
        let per_rank = if order.drop_last { n / world } else { n.div_ceil(world) };
        let start = order.rank * per_rank;
        let samples: Vec<SampleRef> =
            if n == 0 { Vec::new() } else { (start..start + per_rank).map(|i| all[i % n]).collect() };
        let mut plan = Plan { groups, samples, batch_size: order.batch_size.max(1) };
        if order.drop_last {
            let keep = plan.samples.len() / plan.batch_size * plan.batch_size;
            plan.samples.truncate(keep);
        }
        plan
    }

    /// Number of batches.
    pub fn batches(&self) -> usize {
        self.samples.len().div_ceil(self.batch_size)
    }

    /// The samples of batch `b`.
    pub fn batch(&self, b: usize) -> &[SampleRef] {
        let s = b * self.batch_size;
        &self.samples[s..(s + self.batch_size).min(self.samples.len())]
    }

    /// Global row id (position in the split) of a sample: the key of its random stream.
    pub fn row_id(&self, s: SampleRef) -> u64 {
        self.groups[s.group as usize].first_row + s.row as u64
    }

    /// For each row group, the last batch that uses it (`None` if unused).
    pub fn last_use(&self) -> Vec<Option<usize>> {
        let mut last = vec![None; self.groups.len()];
        for (i, s) in self.samples.iter().enumerate() {
            last[s.group as usize] = Some(i / self.batch_size);
        }
        last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn groups(sizes: &[u32]) -> Vec<GroupRef> {
        let mut first = 0;
        sizes
            .iter()
            .enumerate()
            .map(|(i, &rows)| {
                let g = GroupRef { shard: 0, group: i, rows, first_row: first };
                first += rows as u64;
                g
            })
            .collect()
    }

    fn order(rank: usize, world: usize, drop_last: bool) -> Order {
        Order {
            seed: 7,
            epoch: 1,
            shuffle: true,
            shuffle_by: ShuffleBy::RowGroups,
            window_rows: 10,
            rank,
            world,
            batch_size: 4,
            drop_last,
            subset: None,
        }
    }

    /// `shards` shards of `per_shard` row groups of `rows` rows each, in builder order.
    fn sharded(shards: usize, per_shard: usize, rows: u32) -> Vec<GroupRef> {
        let mut out = Vec::new();
        for shard in 0..shards {
            for group in 0..per_shard {
                let first_row = out.len() as u64 * rows as u64;
                out.push(GroupRef { shard, group, rows, first_row });
            }
        }
        out
    }

    #[test]
    fn shuffling_by_shards_reads_each_shard_in_one_stretch() {
        let g = sharded(6, 4, 5);
        let mut o = order(0, 1, false);
        o.shuffle_by = ShuffleBy::Shards;
        o.window_rows = 1; // rows shuffled inside each row group only
        let p = Plan::new(g.clone(), &o);
        let shard_seq: Vec<usize> = p.samples.iter().map(|s| g[s.group as usize].shard).collect();
        let mut runs = shard_seq.clone();
        runs.dedup();
        assert_eq!(runs.len(), 6, "each shard in one stretch: {shard_seq:?}");
        assert_ne!(runs, (0..6).collect::<Vec<_>>(), "shards permuted");
        let groups_seq: Vec<u32> = p.samples.iter().map(|s| s.group).collect();
        let mut distinct = groups_seq.clone();
        distinct.dedup();
        assert_eq!(distinct.len(), 24);
        let sorted_inside = |shard: usize| {
            let own: Vec<u32> = distinct.iter().copied().filter(|&x| g[x as usize].shard == shard).collect();
            own.windows(2).all(|w| w[0] < w[1])
        };
        assert!(!(0..6).all(sorted_inside), "row groups permuted inside shards");
        let mut ids: Vec<u64> = p.samples.iter().map(|&s| p.row_id(s)).collect();
        ids.sort();
        assert_eq!(ids, (0..120).collect::<Vec<u64>>(), "every row once");

        // A window of two row groups mixes rows of at most two shards at a time.
        o.window_rows = 10;
        let p = Plan::new(g.clone(), &o);
        for w in p.samples.chunks(10) {
            let mut s: Vec<usize> = w.iter().map(|s| g[s.group as usize].shard).collect();
            s.sort();
            s.dedup();
            assert!(s.len() <= 2, "{s:?}");
        }
        let again = Plan::new(g.clone(), &o);
        assert_eq!(p.samples, again.samples, "reproducible");
        o.epoch = 2;
        assert_ne!(Plan::new(g.clone(), &o).samples, p.samples, "reshuffled each epoch");
        o.shuffle_by = ShuffleBy::RowGroups;
        o.epoch = 1;
        assert_ne!(Plan::new(g, &o).samples, p.samples);
    }

    #[test]
    fn shuffle_orders_are_read_forgivingly() {
        for s in ["shards", "Shard", "SHARDS "] {
            assert_eq!(s.parse::<ShuffleBy>(), Ok(ShuffleBy::Shards));
        }
        for s in ["row-groups", "row_groups", "row group", "rowgroups"] {
            assert_eq!(s.parse::<ShuffleBy>(), Ok(ShuffleBy::RowGroups));
        }
        assert!("rows".parse::<ShuffleBy>().unwrap_err().contains("row-groups or shards"));
        assert_eq!(ShuffleBy::default(), ShuffleBy::RowGroups);
    }

    #[test]
    fn ranks_are_disjoint_covering_and_equal() {
        let g = groups(&[7, 9, 3, 11, 5]);
        let n = 35;
        let plans: Vec<Plan> = (0..3).map(|r| Plan::new(g.clone(), &order(r, 3, false))).collect();
        let mut seen: Vec<u64> = plans.iter().flat_map(|p| p.samples.iter().map(|&s| p.row_id(s))).collect();
        assert!(plans.iter().all(|p| p.samples.len() == 12 && p.batches() == 3));
        seen.sort();
        let distinct: std::collections::BTreeSet<u64> = seen.iter().copied().collect();
        assert_eq!(distinct.len(), n, "covering");
        assert_eq!(seen.len(), 36, "one padded duplicate");
        let dropped: Vec<Plan> = (0..3).map(|r| Plan::new(g.clone(), &order(r, 3, true))).collect();
        let mut ids: Vec<u64> = dropped.iter().flat_map(|p| p.samples.iter().map(|&s| p.row_id(s))).collect();
        assert!(dropped.iter().all(|p| p.samples.len() == 8));
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 24, "disjoint with drop_last");
    }

    #[test]
    fn subsets_split_rows_disjointly() {
        let g = groups(&[700, 900, 300]);
        let ids = |lo, hi| {
            let mut o = order(0, 1, false);
            o.subset = Some(Subset { seed: 3, lo, hi });
            let p = Plan::new(g.clone(), &o);
            p.samples.iter().map(|&s| p.row_id(s)).collect::<std::collections::BTreeSet<u64>>()
        };
        let (held, rest) = (ids(0.0, 0.1), ids(0.1, 1.0));
        assert!(held.is_disjoint(&rest));
        assert_eq!(held.len() + rest.len(), 1900);
        assert!((150..230).contains(&held.len()), "about 10%: {}", held.len());
        assert_eq!(held, ids(0.0, 0.1), "a pure function of the seed");
    }

    #[test]
    fn auto_window_is_about_32_mib_of_encoded_rows() {
        // 100k noise images of 96 px: 2.78 GB of PNG shards, 27.8 kB a row
        assert_eq!(auto_window_rows(2_780_000_000, 100_000), 1206);
        // 32 px PNGs (~3.1 kB a row) hit the 8,192-row ceiling, tiny rows too
        assert_eq!(auto_window_rows(93_000_000, 30_000), 8192);
        assert_eq!(auto_window_rows(0, 0), 8192);
        // huge rows keep a 1,024-row floor
        assert_eq!(auto_window_rows(1 << 30, 1000), 1024);
    }

    #[test]
    fn order_changes_with_epoch_and_is_reproducible() {
        let g = groups(&[7, 9, 3, 11, 5]);
        let a = Plan::new(g.clone(), &order(0, 1, false));
        let b = Plan::new(g.clone(), &order(0, 1, false));
        let mut o = order(0, 1, false);
        o.epoch = 2;
        let c = Plan::new(g, &o);
        assert_eq!(a.samples, b.samples);
        assert_ne!(a.samples, c.samples);
    }
}
