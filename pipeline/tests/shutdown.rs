//! Dropping a pipeline mid-epoch stops every stage: its own test binary, so that no other
//! test's threads are counted.

use std::path::Path;
use std::time::{Duration, Instant};

use siamlab_datasets::sources::Cifar;
use siamlab_datasets::{ingest, synth, IngestOptions};
use siamlab_pipeline::Pipeline;

fn cifar_shards(dir: &Path) -> std::path::PathBuf {
    let src = synth::cifar_binary(dir, 40, 4, false).unwrap();
    let out = dir.join("shards");
    let mut o = IngestOptions::new(&out);
    o.shard_bytes = 24 << 10;
    o.jobs = 1;
    ingest(Box::new(Cifar::open(&src, false).unwrap()), &o).unwrap();
    out
}

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").map(|d| d.count()).unwrap_or(0)
}

#[test]
fn dropping_mid_epoch_stops_every_stage() {
    let t = tempfile::tempdir().unwrap();
    let dir = cifar_shards(t.path());
    // let the ingest's pool threads finish exiting before counting
    std::thread::sleep(Duration::from_millis(300));
    let before = threads();
    let mut p = Pipeline::builder(&dir).batch_size(4).workers(3).prefetch(2).build().unwrap();
    p.next_blocking().unwrap().unwrap();
    assert!(threads() > before);
    drop(p);
    let start = Instant::now();
    while threads() > before && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(threads(), before, "no leaked threads");
}
