use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::*;

#[test]
fn kill_during_ingest_leaves_no_manifest_and_a_rerun_completes() {
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("o");
    let args = ["ingest", "random", "--count", "6000", "--size", "64", "--shard-size-mb", "2", "--out", s(&out)];
    let mut child = Command::new(env!("CARGO_BIN_EXE_siamlab")).args(args).spawn().unwrap();
    let start = Instant::now();
    // wait until a shard is being written, then kill -9
    loop {
        let written = files(&out).iter().any(|f| f.contains(".part-"));
        if written || start.elapsed() > Duration::from_secs(60) {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!out.join("manifest.json").exists(), "killed run must not look complete");
    let left = files(&out);
    assert!(left.iter().any(|f| f.contains(".part-")), "the kill happened mid-write: {left:?}");
    ok(&args);
    let after = files(&out);
    assert!(after.iter().all(|f| !f.contains(".tmp")), "{after:?}");
    ok(&["verify", s(&out)]);
    let fresh = t.path().join("fresh");
    let mut args2 = args.to_vec();
    let last = args2.len() - 1;
    args2[last] = s(&fresh);
    ok(&args2);
    assert_eq!(shard_hashes(&out), shard_hashes(&fresh));
}

#[test]
fn complete_output_is_kept_unless_overwrite() {
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("o");
    ok(&["ingest", "random", "--count", "10", "--size", "4", "--out", s(&out)]);
    let text = ok(&["ingest", "random", "--count", "10", "--size", "4", "--out", s(&out)]);
    assert!(text.contains("already complete"), "{text}");
    let before = shard_hashes(&out);
    // Other arguments are not "already complete": the error names what differs.
    let err = fails(&["ingest", "random", "--count", "10", "--size", "4", "--seed", "9", "--out", s(&out)]);
    assert!(err.contains("other arguments (random.seed: 0 → 9)"), "{err}");
    assert_eq!(before, shard_hashes(&out));
    ok(&["ingest", "random", "--count", "10", "--size", "4", "--seed", "9", "--out", s(&out), "--overwrite"]);
    assert_ne!(before, shard_hashes(&out));
}

#[test]
fn verify_names_a_tampered_shard() {
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("o");
    ok(&["ingest", "random", "--count", "10", "--size", "4", "--out", s(&out)]);
    let shard = out.join("train/part-00000-of-00001.parquet");
    let mut bytes = std::fs::read(&shard).unwrap();
    bytes[100] ^= 1;
    std::fs::write(&shard, bytes).unwrap();
    let err = fails(&["verify", s(&out)]);
    assert!(err.contains("part-00000-of-00001.parquet") && err.contains("differs"), "{err}");
}
