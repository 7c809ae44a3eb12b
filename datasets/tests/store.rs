//! Shards on object storage, against `object_store`'s in-memory and local-file stores: ingest
//! to a bucket, reading through the cache (checked, evicting, shared), and the errors that
//! name an object.

use std::path::Path;
use std::sync::Arc;

use object_store::memory::InMemory;
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use siamlab_datasets::record::{Record, Source, SourceInfo};
use siamlab_datasets::shard::{verify, Manifest, MANIFEST};
use siamlab_datasets::sources::{Random, RandomSpec};
use siamlab_datasets::store::{Remote, STAGING};
use siamlab_datasets::{ingest, ingest_to, IngestOptions, Location, Outcome, StoreOptions};

const URL: &str = "mem://bucket/noise";

fn random(count: u64) -> Box<dyn Source> {
    Box::new(Random::new(RandomSpec { count, size: 8, ..RandomSpec::default() }).unwrap())
}

fn opts() -> IngestOptions<'static> {
    IngestOptions { shard_bytes: 4096, arguments: serde_json::json!({"count": 120}), ..IngestOptions::new("unused") }
}

fn remote(store: Arc<dyn ObjectStore>, cache: &Path, limit: u64) -> Location {
    let o = StoreOptions { cache_dir: Some(cache.to_path_buf()), cache_limit: limit, ..StoreOptions::default() };
    Location::Remote(Arc::new(Remote::from_store(URL, store, ObjPath::from("noise"), false, &o)))
}

/// A bucket holding 120 noise images in a dozen small shards, and the manifest.
fn bucket() -> (Arc<dyn ObjectStore>, Manifest) {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let tmp = tempfile::tempdir().unwrap();
    let at = remote(store.clone(), tmp.path(), 1 << 30);
    let out = ingest_to(random(120), &opts(), &at).unwrap();
    (store, out.manifest().clone())
}

fn shards(m: &Manifest) -> Vec<siamlab_datasets::shard::ShardInfo> {
    m.splits["train"].shards.clone()
}

fn get(store: &Arc<dyn ObjectStore>, key: &str) -> Option<Vec<u8>> {
    futures_block(async { store.get(&ObjPath::from(key)).await.ok()?.bytes().await.ok().map(|b| b.to_vec()) })
}

fn futures_block<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
}

#[test]
fn ingest_to_a_bucket_writes_the_same_shards_as_to_a_folder_and_the_manifest_last() {
    let (store, m) = bucket();
    assert!(shards(&m).len() >= 6, "{} shards", shards(&m).len());
    let local = tempfile::tempdir().unwrap();
    let dir = local.path().join("noise");
    let lm = ingest(random(120), &IngestOptions { out: dir.clone(), ..opts() }).unwrap().manifest().clone();
    assert_eq!(lm.splits, m.splits, "same shards, same sha256");
    for sh in shards(&m) {
        assert_eq!(get(&store, &format!("noise/{}", sh.path)).unwrap(), std::fs::read(dir.join(&sh.path)).unwrap());
    }
    let text = get(&store, "noise/manifest.json").unwrap();
    assert_eq!(Manifest::from_json(std::str::from_utf8(&text).unwrap(), "m").unwrap(), m);
    // Nothing staged is left.
    let staged = futures_block(async {
        use futures_util::StreamExt;
        store.list(Some(&ObjPath::from(format!("noise/{STAGING}")))).collect::<Vec<_>>().await
    });
    assert!(staged.is_empty());
    // A second ingest with the same arguments has nothing to do.
    let cache = tempfile::tempdir().unwrap();
    let again = ingest_to(random(120), &opts(), &remote(store, cache.path(), 1 << 30)).unwrap();
    assert!(matches!(again, Outcome::AlreadyComplete(_)));
}

#[test]
fn verify_reads_a_bucket_through_the_cache() {
    let (store, m) = bucket();
    let cache = tempfile::tempdir().unwrap();
    let at = remote(store, cache.path(), 1 << 30);
    let r = verify(&at, true).unwrap();
    assert_eq!((r.shards, r.rows, r.decoded), (shards(&m).len() as u64, 120, 120));
    let st = at.cache_stats().unwrap();
    assert_eq!((st.downloads, st.misses, st.hits), (shards(&m).len() as u64, shards(&m).len() as u64, 0));
    // Second time: all from the cache.
    verify(&at, false).unwrap();
    let st = at.cache_stats().unwrap();
    assert_eq!((st.downloads, st.hits), (shards(&m).len() as u64, shards(&m).len() as u64));
    for sh in shards(&m) {
        assert!(cache.path().join("shards").join(format!("{}.parquet", sh.sha256)).is_file());
    }
}

#[test]
fn a_corrupt_object_is_a_sha256_mismatch_naming_it_and_nothing_is_cached() {
    let (store, m) = bucket();
    let sh = &shards(&m)[2];
    let key = ObjPath::from(format!("noise/{}", sh.path));
    let mut bytes = get(&store, key.as_ref()).unwrap();
    bytes[100] ^= 0xff;
    futures_block(store.put(&key, PutPayload::from(bytes))).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let at = remote(store, cache.path(), 1 << 30);
    let e = at.shard_file(sh).unwrap_err().to_string();
    assert!(e.starts_with(&format!("{URL}/{}: content differs from the manifest (sha256 ", sh.path)), "{e}");
    assert!(e.contains(&format!("expected {}", sh.sha256)), "{e}");
    let left: Vec<_> = std::fs::read_dir(cache.path().join("shards"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".lock"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    let e = verify(&at, false).unwrap_err().to_string();
    assert!(e.contains(&sh.path) && e.contains("sha256"), "{e}");
}

#[test]
fn a_missing_object_is_named() {
    let (store, m) = bucket();
    let sh = &shards(&m)[1];
    futures_block(store.delete(&ObjPath::from(format!("noise/{}", sh.path)))).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let at = remote(store.clone(), cache.path(), 1 << 30);
    let e = at.shard_file(sh).unwrap_err().to_string();
    assert_eq!(e, format!("{URL}/{}: no such object", sh.path));
    futures_block(store.delete(&ObjPath::from("noise/manifest.json"))).unwrap();
    let e = at.manifest().unwrap_err().to_string();
    assert!(e.starts_with(&format!("{URL}/{MANIFEST}: no such object (not a shard folder")), "{e}");
}

#[test]
fn footers_read_at_once_equal_those_read_one_by_one_and_the_first_missing_shard_is_named() {
    let (store, m) = bucket();
    let all = shards(&m);
    assert!(all.len() >= 7, "{}", all.len());
    let cache = tempfile::tempdir().unwrap();
    let at = remote(store.clone(), cache.path(), 1 << 30);
    let one_by_one: Vec<Vec<u64>> = all.iter().map(|s| at.row_group_rows(s).unwrap()).collect();
    assert_eq!(at.row_group_rows_each(&all).unwrap(), one_by_one);
    for i in [3, 6] {
        futures_block(store.delete(&ObjPath::from(format!("noise/{}", all[i].path)))).unwrap();
    }
    let e = at.row_group_rows_each(&all).unwrap_err().to_string();
    assert_eq!(e, format!("{URL}/{}: no such object", all[3].path));
}

#[test]
fn the_cache_evicts_least_recently_used_shards_to_stay_under_a_small_limit() {
    let (store, m) = bucket();
    let largest = shards(&m).iter().map(|s| s.bytes).max().unwrap();
    let cache = tempfile::tempdir().unwrap();
    // Refused: less than three shards.
    let e = remote(store.clone(), cache.path(), 3 * largest - 1).manifest().unwrap_err().to_string();
    assert!(e.contains("--cache-limit") && e.contains("at least 3 of its shards"), "{e}");
    let limit = 3 * largest;
    let at = remote(store, cache.path(), limit);
    at.manifest().unwrap();
    for _ in 0..2 {
        for sh in shards(&m) {
            let f = at.shard_file(&sh).unwrap();
            assert_eq!(std::fs::read(&f.path).unwrap().len() as u64, sh.bytes);
            let held: u64 = std::fs::read_dir(cache.path().join("shards"))
                .unwrap()
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".parquet"))
                .map(|e| e.metadata().unwrap().len())
                .sum();
            assert!(held <= limit, "cache holds {held} bytes, limit {limit}");
        }
    }
    let st = at.cache_stats().unwrap();
    let n = shards(&m).len() as u64;
    // A cyclic scan larger than the cache: LRU keeps nothing that is needed next.
    assert_eq!((st.hits, st.misses, st.downloads), (0, 2 * n, 2 * n));
    let resident = std::fs::read_dir(cache.path().join("shards"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".parquet"))
        .count() as u64;
    assert!(resident >= 3);
    assert_eq!(st.evictions + resident, 2 * n, "{st:?}");
    assert!(st.peak_bytes <= limit);
}

#[test]
fn two_readers_sharing_a_cache_download_each_shard_once() {
    let (store, m) = bucket();
    let cache = tempfile::tempdir().unwrap();
    // Two independent handles (as two processes would have), one folder.
    let readers: Vec<Location> = (0..2).map(|_| remote(store.clone(), cache.path(), 1 << 30)).collect();
    std::thread::scope(|s| {
        for at in &readers {
            let list = shards(&m);
            s.spawn(move || {
                for sh in &list {
                    at.shard_file(sh).unwrap();
                }
            });
        }
    });
    let downloads: u64 = readers.iter().map(|r| r.cache_stats().unwrap().downloads).sum();
    assert_eq!(downloads, shards(&m).len() as u64);
}

/// A source that fails after `n` records.
struct Breaks {
    inner: Box<dyn Source>,
    n: usize,
}

impl Source for Breaks {
    fn info(&self) -> &SourceInfo {
        self.inner.info()
    }
    fn run(&mut self, sink: &mut dyn FnMut(Record) -> siamlab_datasets::Result<()>) -> siamlab_datasets::Result<()> {
        let mut k = 0;
        let n = self.n;
        self.inner.run(&mut |r| {
            k += 1;
            if k > n {
                // Time for the writer to take in the records before it (ingest hands them
                // over in chunks of 512 and an error stops it at once).
                std::thread::sleep(std::time::Duration::from_millis(500));
                return Err(siamlab_datasets::Error::Missing("the source broke".into()));
            }
            sink(r)
        })
    }
}

#[test]
fn an_interrupted_ingest_leaves_no_manifest_and_a_rerun_completes() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let cache = tempfile::tempdir().unwrap();
    let at = remote(store.clone(), cache.path(), 1 << 30);
    // Past the first chunk of 512 records (a dozen shards of `opts`): those are uploaded
    // before the source breaks.
    let e = ingest_to(Box::new(Breaks { inner: random(700), n: 600 }), &opts(), &at).unwrap_err();
    assert_eq!(e.to_string(), "the source broke");
    assert!(!at.has_manifest().unwrap());
    assert!(
        get(&store, &format!("noise/{STAGING}/train/part-00000.parquet")).is_some(),
        "shards were uploaded as finished"
    );
    let m = ingest_to(random(120), &opts(), &at).unwrap().manifest().clone();
    assert!(at.has_manifest().unwrap());
    assert_eq!(verify(&at, false).unwrap().rows, 120);
    let keys = futures_block(async {
        use futures_util::StreamExt;
        store.list(None).map(|m| m.unwrap().location.to_string()).collect::<Vec<_>>().await
    });
    assert_eq!(keys.len(), shards(&m).len() + 1, "{keys:?}");
}

#[test]
fn overwrite_replaces_a_dataset_and_removes_its_extra_shards() {
    let (store, m) = bucket();
    let cache = tempfile::tempdir().unwrap();
    let at = remote(store.clone(), cache.path(), 1 << 30);
    let e = ingest_to(random(30), &IngestOptions { arguments: serde_json::json!({"count": 30}), ..opts() }, &at)
        .unwrap_err()
        .to_string();
    assert!(e.contains("made with other arguments"), "{e}");
    let small = IngestOptions { arguments: serde_json::json!({"count": 30}), overwrite: true, ..opts() };
    let m2 = ingest_to(random(30), &small, &at).unwrap().manifest().clone();
    assert!(shards(&m2).len() < shards(&m).len());
    assert_eq!(at.manifest().unwrap(), m2);
    let last = shards(&m).last().unwrap().path.clone();
    assert!(get(&store, &format!("noise/{last}")).is_none(), "{last} of the old dataset is gone");
}

#[test]
fn large_files_upload_in_parts_and_arrive_whole() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let cache = tempfile::tempdir().unwrap();
    let at = remote(store.clone(), cache.path(), 1 << 30);
    let file = cache.path().join("big.bin");
    let data: Vec<u8> = (0..(17u32 << 20)).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    std::fs::write(&file, &data).unwrap();
    at.remote().unwrap().put_file("big.bin", &file).unwrap();
    assert!(get(&store, "noise/big.bin").unwrap() == data);
}

#[test]
fn a_local_file_store_works_like_a_bucket() {
    let root = tempfile::tempdir().unwrap();
    let fs: Arc<dyn ObjectStore> =
        Arc::new(object_store::local::LocalFileSystem::new_with_prefix(root.path()).unwrap());
    let cache = tempfile::tempdir().unwrap();
    let at = remote(fs, cache.path(), 1 << 30);
    ingest_to(random(40), &opts(), &at).unwrap();
    assert!(root.path().join("noise/manifest.json").is_file());
    assert_eq!(verify(&at, true).unwrap().rows, 40);
    // The plain folder reads the same.
    assert_eq!(verify(root.path().join("noise"), false).unwrap().rows, 40);
}
