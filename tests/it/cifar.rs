use siamlab_datasets::shard::Manifest;
use siamlab_datasets::synth;

use crate::common::*;

fn check_cifar10(out: &std::path::Path, per_file: u64, test: u64) {
    let m = Manifest::load(out).unwrap();
    assert_eq!(m.split_order, ["train", "test"]);
    assert_eq!(m.classes.as_ref().unwrap()[9], "truck");
    assert_eq!(m.splits["train"].rows, per_file * 5);
    assert_eq!(m.splits["test"].rows, test);
    for (split, n) in [("train", per_file * 5), ("test", test)] {
        let rows = rows(out, split);
        assert_eq!(rows.len() as u64, n);
        for (k, r) in rows.iter().enumerate() {
            assert_eq!(r.index, k as i64);
            assert_eq!(r.label, Some(k as i64 % 10));
            assert_eq!((r.width, r.height), (32, 32));
            assert_pattern(k as u64, 32, 32, &r.rgb());
        }
    }
    // mean of the pattern over the train split, computed directly
    let st = m.stats.unwrap();
    for c in 0..3 {
        let mut sum = 0u64;
        for i in 0..per_file * 5 {
            for y in 0..32 {
                for x in 0..32 {
                    sum += synth::pixel(i, c, y, x) as u64;
                }
            }
        }
        let mean = sum as f64 / (per_file * 5 * 1024) as f64 / 255.0;
        assert!((st.mean[c] - mean).abs() < 1e-12, "channel {c}: {} vs {mean}", st.mean[c]);
    }
}

#[test]
fn binary_folder_and_archive_round_trip_exactly_and_identically() {
    let t = tempfile::tempdir().unwrap();
    let src = synth::cifar_binary(t.path(), 7, 5, false).unwrap();
    let tgz = t.path().join("cifar-10-binary.tar.gz");
    synth::tar_gz(&src, &tgz).unwrap();
    let (a, b) = (t.path().join("a"), t.path().join("b"));
    ok(&["ingest", "cifar10", "--src", s(&src), "--out", s(&a)]);
    ok(&["ingest", "cifar10", "--src", s(&tgz), "--out", s(&b), "--jobs", "1"]);
    check_cifar10(&a, 7, 5);
    assert_eq!(shard_hashes(&a), shard_hashes(&b), "folder vs archive, 2 jobs vs 1");
    let v = ok(&["verify", s(&a), "--decode"]);
    assert!(v.contains("OK (2 shards, 40 rows, 40 images decoded)"), "{v}");
}

#[test]
fn python_pickle_layout_matches_the_binary_layout() {
    let t = tempfile::tempdir().unwrap();
    let py = synth::cifar_python(t.path(), 6, 4).unwrap();
    let tgz = t.path().join("cifar-10-python.tar.gz");
    synth::tar_gz(&py, &tgz).unwrap();
    let bin = synth::cifar_binary(t.path(), 6, 4, false).unwrap();
    let (a, b) = (t.path().join("py"), t.path().join("bin"));
    ok(&["ingest", "cifar10", "--src", s(&tgz), "--out", s(&a)]);
    ok(&["ingest", "cifar10", "--src", s(&bin), "--out", s(&b)]);
    check_cifar10(&a, 6, 4);
    assert_eq!(shard_hashes(&a), shard_hashes(&b));
    assert_eq!(Manifest::load(&a).unwrap().extra["format"], "python");
}

#[test]
fn real_numpy_pickle_fixture_parses() {
    // Written by tools/cifar_pickle_fixture.py with numpy + pickle protocol 2 (Python 3:
    // bytes arrive through _codecs.encode).
    let data = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/cifar_py3_protocol2.pkl")).unwrap();
    let v = siamlab_datasets::pickle::parse(&data).unwrap();
    let (shape, raw) = v.get("data").unwrap().ndarray().unwrap();
    assert_eq!(shape, vec![3, 3072]);
    for i in 0..3u64 {
        let img = &raw[i as usize * 3072..(i as usize + 1) * 3072];
        assert_eq!(img[0], synth::pixel(i, 0, 0, 0));
        assert_eq!(img[1024 + 32 * 5 + 7], synth::pixel(i, 1, 5, 7));
    }
    let labels = v.get("labels").unwrap().items().unwrap();
    assert_eq!(labels.len(), 3);
}

#[test]
fn cifar100_keeps_fine_and_coarse_labels() {
    let t = tempfile::tempdir().unwrap();
    let src = synth::cifar_binary(t.path(), 30, 3, true).unwrap();
    let out = t.path().join("o");
    ok(&["ingest", "cifar100", "--src", s(&src), "--out", s(&out)]);
    let m = Manifest::load(&out).unwrap();
    assert_eq!(m.classes.as_ref().unwrap().len(), 100);
    assert_eq!(m.coarse_classes.as_ref().unwrap()[3], "coarse3");
    let rows = rows(&out, "train");
    for (k, r) in rows.iter().enumerate() {
        assert_eq!(r.label, Some(k as i64 % 100));
        assert_eq!(r.coarse, Some(k as i64 % 20));
        assert_pattern(k as u64, 32, 32, &r.rgb());
    }
}

#[test]
fn small_shard_size_gives_numbered_shards_and_resize_works() {
    let t = tempfile::tempdir().unwrap();
    let src = synth::cifar_binary(t.path(), 20, 2, false).unwrap();
    let out = t.path().join("o");
    ok(&["ingest", "cifar10", "--src", s(&src), "--out", s(&out), "--shard-size-mb", "0.02", "--resize", "16"]);
    let m = Manifest::load(&out).unwrap();
    let shards = &m.splits["train"].shards;
    assert!(shards.len() >= 3, "{} shards", shards.len());
    let n = shards.len();
    for (i, sh) in shards.iter().enumerate() {
        assert_eq!(sh.path, format!("train/part-{i:05}-of-{n:05}.parquet"));
    }
    assert_eq!(shards.iter().map(|s| s.rows).sum::<u64>(), 100);
    let r = rows(&out, "train");
    assert_eq!((r[0].width, r[0].height), (16, 16));
    ok(&["verify", s(&out), "--decode"]);
}
