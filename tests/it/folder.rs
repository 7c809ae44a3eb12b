use siamlab_datasets::shard::Manifest;
use siamlab_datasets::synth;

use crate::common::*;

fn put(root: &std::path::Path, rel: &str, bytes: &[u8]) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, bytes).unwrap();
}

#[test]
fn class_folders_sorted_like_imagefolder() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("imgs");
    put(&root, "zebra/b.png", &synth::pattern_png(1, 8, 6));
    put(&root, "zebra/a.PNG", &synth::pattern_png(0, 8, 6));
    put(&root, "ant/x.png", &synth::pattern_png(2, 5, 9));
    put(&root, "ant/notes.txt", b"not an image");
    let out = t.path().join("o");
    ok(&["ingest", "folder", "--src", s(&root), "--out", s(&out)]);
    let m = Manifest::load(&out).unwrap();
    assert_eq!(m.classes.as_ref().unwrap(), &["ant", "zebra"]);
    let r = rows(&out, "train");
    let got: Vec<_> = r.iter().map(|r| (r.path.clone().unwrap(), r.label.unwrap())).collect();
    assert_eq!(got, [("ant/x.png".to_string(), 0), ("zebra/a.PNG".to_string(), 1), ("zebra/b.png".to_string(), 1)]);
    assert_pattern(2, 5, 9, &r[0].rgb());
    assert_eq!(m.splits["train"].size_range, Some([5, 6, 8, 9]));
}

#[test]
fn split_level_and_skip_bad() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("imgs");
    put(&root, "train/cat/1.png", &synth::pattern_png(0, 4, 4));
    put(&root, "train/dog/2.png", &synth::pattern_png(1, 4, 4));
    put(&root, "train/dog/broken.jpg", b"\xff\xd8\xff garbage");
    put(&root, "val/cat/3.png", &synth::pattern_png(2, 4, 4));
    let out = t.path().join("o");
    let err = fails(&["ingest", "folder", "--src", s(&root), "--out", s(&out)]);
    assert!(err.contains("broken.jpg") && err.contains("does not decode"), "{err}");
    assert!(!out.exists(), "nothing left behind");
    ok(&["ingest", "folder", "--src", s(&root), "--out", s(&out), "--skip-bad"]);
    let m = Manifest::load(&out).unwrap();
    assert_eq!(m.split_order, ["train", "val"]);
    assert_eq!((m.splits["train"].rows, m.splits["train"].skipped), (2, 1));
    assert_eq!(rows(&out, "val")[0].label, Some(0));
    let grid = t.path().join("g.png");
    let text = ok(&["inspect", s(&out), "--split", "train", "--grid", s(&grid), "--n", "2"]);
    assert!(text.contains("cat") && text.contains("dog"), "{text}");
    let img = image::open(&grid).unwrap();
    // Two cells of at least 96 px each (small images are enlarged) with captions under them.
    assert!(img.width() >= 2 * 96 && img.height() >= 96 + 30, "{}x{}", img.width(), img.height());
}
