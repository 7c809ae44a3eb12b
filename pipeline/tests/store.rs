//! The pipeline over object storage (object_store's local-file store standing in for a
//! bucket): batches are bit-identical to those from the folder itself, with any cache limit,
//! over several epochs; URLs given to the builder resolve through the same resolver.

use std::path::Path;
use std::sync::Arc;

use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjPath;
use object_store::ObjectStore;
use siamlab_datasets::sources::Cifar;
use siamlab_datasets::store::Remote;
use siamlab_datasets::{ingest, synth, IngestOptions, Location, StoreOptions};
use siamlab_pipeline::{Batch, Pipeline};

fn collect(p: Pipeline) -> Vec<Batch> {
    p.map(|b| b.unwrap()).collect()
}

fn same(a: &[Batch], b: &[Batch]) {
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        assert_eq!((x.shape, x.rows(), x.labels()), (y.shape, y.rows(), y.labels()));
        for v in 0..x.num_views() {
            assert!(
                x.view(v).iter().zip(y.view(v)).all(|(a, b)| a.to_bits() == b.to_bits()),
                "batch {} differs",
                x.seq
            );
        }
    }
}

/// 5 × 20 CIFAR-layout images in shards of ~8 KB, under `root/shards`.
fn shards(root: &Path) -> (std::path::PathBuf, u64) {
    let src = synth::cifar_binary(root, 20, 4, false).unwrap();
    let out = root.join("shards");
    let mut o = IngestOptions::new(&out);
    o.shard_bytes = 8 << 10;
    let m = ingest(Box::new(Cifar::open(&src, false).unwrap()), &o).unwrap().manifest().clone();
    (out, m.splits["train"].shards.iter().map(|s| s.bytes).max().unwrap())
}

fn bucket(root: &Path, cache: &Path, limit: u64) -> Location {
    let store: Arc<dyn ObjectStore> = Arc::new(LocalFileSystem::new_with_prefix(root).unwrap());
    let o = StoreOptions { cache_dir: Some(cache.to_path_buf()), cache_limit: limit, ahead: 2, added_latency: None };
    Location::Remote(Arc::new(Remote::from_store("file-store://shards", store, ObjPath::from("shards"), true, &o)))
}

#[test]
fn batches_from_a_bucket_are_bit_identical_to_those_from_the_folder_over_three_epochs() {
    let t = tempfile::tempdir().unwrap();
    let (dir, largest) = shards(t.path());
    let cache = tempfile::tempdir().unwrap();
    for limit in [1 << 30, 3 * largest] {
        let at = bucket(t.path(), cache.path(), limit);
        for epoch in 0..3 {
            let build = |b: siamlab_pipeline::PipelineBuilder| {
                b.seed(3).epoch(epoch).batch_size(16).workers(2).shuffle_window(20).build().unwrap()
            };
            let local = collect(build(Pipeline::builder(&dir)));
            let remote = collect(build(Pipeline::builder_at(at.clone())));
            same(&local, &remote);
        }
        let st = at.cache_stats().unwrap();
        assert!(st.peak_bytes <= limit, "{st:?}");
        if limit > 3 * largest {
            // Everything fits: each shard came down once; epochs 2 and 3 hit only.
            let n = std::fs::read_dir(dir.join("train")).unwrap().count() as u64;
            assert_eq!(st.downloads, n, "{st:?}");
        } else {
            assert!(st.evictions > 0, "{st:?}");
        }
    }
}

#[test]
fn a_resumed_pipeline_over_a_bucket_yields_the_rest_exactly() {
    let t = tempfile::tempdir().unwrap();
    let (dir, largest) = shards(t.path());
    let cache = tempfile::tempdir().unwrap();
    let at = bucket(t.path(), cache.path(), 3 * largest);
    let all = collect(Pipeline::builder(&dir).seed(1).epoch(1).batch_size(12).workers(2).build().unwrap());
    let mut p = Pipeline::builder_at(at.clone()).seed(1).epoch(1).batch_size(12).workers(2).build().unwrap();
    let first: Vec<Batch> = (0..3).map(|_| p.next_blocking().unwrap().unwrap()).collect();
    let state = p.state();
    drop(p);
    let rest = collect(Pipeline::builder_at(at).batch_size(12).workers(3).resume(state).build().unwrap());
    same(&all[..3], &first);
    same(&all[3..], &rest);
}

#[test]
fn file_urls_and_paths_give_the_same_batches() {
    let t = tempfile::tempdir().unwrap();
    let (dir, _) = shards(t.path());
    let url = format!("file://{}", dir.display());
    let a = collect(Pipeline::builder(&dir).batch_size(10).workers(2).build().unwrap());
    let b = collect(Pipeline::builder(&url).batch_size(10).workers(2).build().unwrap());
    same(&a, &b);
}

#[test]
fn shuffling_by_shards_downloads_each_shard_once_an_epoch_through_a_small_cache() {
    use siamlab_pipeline::ShuffleBy;
    let t = tempfile::tempdir().unwrap();
    let (dir, largest) = shards(t.path());
    let n = std::fs::read_dir(dir.join("train")).unwrap().count() as u64;
    let epoch_downloads = |by: ShuffleBy| {
        let cache = tempfile::tempdir().unwrap();
        let at = bucket(t.path(), cache.path(), 3 * largest);
        let mut most = 0;
        for epoch in 0..3 {
            let build = |b: siamlab_pipeline::PipelineBuilder| {
                b.seed(5).epoch(epoch).batch_size(8).workers(2).shuffle_window(1).shuffle_by(by).build().unwrap()
            };
            let before = at.cache_stats().unwrap();
            let remote = collect(build(Pipeline::builder_at(at.clone())));
            let st = at.cache_stats().unwrap().since(&before);
            assert!(st.peak_bytes <= 3 * largest, "{st:?}");
            same(&collect(build(Pipeline::builder(&dir))), &remote);
            most = most.max(st.downloads);
        }
        most
    };
    assert!(n >= 8, "enough shards to matter: {n}");
    let by_shards = epoch_downloads(ShuffleBy::Shards);
    assert!(by_shards <= n, "a shard downloaded twice in one epoch: {by_shards} downloads of {n} shards");
    // Row groups of every shard interleaved: the same cache keeps downloading shards again.
    let by_groups = epoch_downloads(ShuffleBy::RowGroups);
    assert!(by_groups > n, "{by_groups} downloads of {n} shards");
}
