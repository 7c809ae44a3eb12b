use siamlab_datasets::shard::Manifest;
use siamlab_datasets::synth;

use crate::common::*;

#[test]
fn column_major_images_labels_and_folds() {
    let t = tempfile::tempdir().unwrap();
    let src = synth::stl10(t.path(), 12, 5, 23).unwrap();
    let tgz = t.path().join("stl10_binary.tar.gz");
    synth::tar_gz(&src, &tgz).unwrap();
    let (a, b) = (t.path().join("a"), t.path().join("b"));
    ok(&["ingest", "stl10", "--src", s(&src), "--out", s(&a)]);
    ok(&["ingest", "stl10", "--src", s(&tgz), "--out", s(&b)]);
    assert_eq!(shard_hashes(&a), shard_hashes(&b));
    let m = Manifest::load(&a).unwrap();
    assert_eq!(m.split_order, ["train", "test", "unlabeled"]);
    assert_eq!(m.classes.as_ref().unwrap()[7], "monkey");
    assert_eq!(m.extra["folds"][3], serde_json::json!([3]));
    assert_eq!(m.extra["folds"][1], serde_json::json!([1, 11]));
    for (split, n, labeled) in [("train", 12, true), ("test", 5, true), ("unlabeled", 23, false)] {
        let rows = rows(&a, split);
        assert_eq!(rows.len(), n);
        for (k, r) in rows.iter().enumerate() {
            assert_eq!(r.index, k as i64);
            assert_eq!(r.label, labeled.then_some(k as i64 % 10), "file labels are 1..10, stored 0..9");
            assert_pattern(k as u64, 96, 96, &r.rgb());
        }
    }
}
