//! Every bad input gets one clear line naming the file and record, a non-zero exit, and no
//! manifest or stray shard.

use std::path::Path;

use siamlab_datasets::synth;

use crate::common::*;

fn assert_clean(out: &Path) {
    assert!(!out.join("manifest.json").exists());
    let left = files(out);
    assert!(left.iter().all(|f| !f.contains("part-")), "stray shards: {left:?}");
}

#[test]
fn truncated_cifar_file() {
    let t = tempfile::tempdir().unwrap();
    let src = synth::cifar_binary(t.path(), 3, 2, false).unwrap();
    let f = src.join("data_batch_2.bin");
    let b = std::fs::read(&f).unwrap();
    std::fs::write(&f, &b[..b.len() - 10]).unwrap();
    let out = t.path().join("o");
    let err = fails(&["ingest", "cifar10", "--src", s(&src), "--out", s(&out)]);
    assert!(err.contains("data_batch_2.bin") && err.contains("not a multiple of the 3073-byte record"), "{err}");
    assert_clean(&out);
}

#[test]
fn cifar_label_out_of_range() {
    let t = tempfile::tempdir().unwrap();
    let src = synth::cifar_binary(t.path(), 3, 2, false).unwrap();
    let f = src.join("data_batch_4.bin");
    let mut b = std::fs::read(&f).unwrap();
    b[3073 * 2] = 12;
    std::fs::write(&f, b).unwrap();
    let tgz = t.path().join("c.tar.gz");
    synth::tar_gz(&src, &tgz).unwrap();
    let out = t.path().join("o");
    let err = fails(&["ingest", "cifar10", "--src", s(&tgz), "--out", s(&out)]);
    assert!(err.contains("data_batch_4.bin: record 2: label byte 12 out of range"), "{err}");
    assert_clean(&out);
}

#[test]
fn stl10_x_y_count_mismatch() {
    let t = tempfile::tempdir().unwrap();
    let src = synth::stl10(t.path(), 4, 2, 0).unwrap();
    std::fs::write(src.join("train_y.bin"), [1u8, 2, 3]).unwrap();
    let out = t.path().join("o");
    let err = fails(&["ingest", "stl10", "--src", s(&src), "--out", s(&out)]);
    assert!(err.contains("train_y.bin") && err.contains("3 labels but train_X.bin holds 4 images"), "{err}");
    assert_clean(&out);
}

#[test]
fn celeba_line_with_wrong_number_of_values() {
    let t = tempfile::tempdir().unwrap();
    let root = synth::celeba(&t.path().join("c"), 6, 4, 4, false, false, false).unwrap();
    let f = root.join("list_attr_celeba.txt");
    let text = std::fs::read_to_string(&f).unwrap();
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    lines[5] = lines[5].rsplit_once(' ').unwrap().0.to_string();
    std::fs::write(&f, lines.join("\n")).unwrap();
    let out = t.path().join("o");
    let err = fails(&["ingest", "celeba", "--src", s(&root), "--out", s(&out)]);
    assert!(err.contains("list_attr_celeba.txt: line 6: expected 40 attribute values, found 39"), "{err}");
    assert_clean(&out);
}

#[test]
fn celeba_image_listed_but_missing_and_undecodable() {
    let t = tempfile::tempdir().unwrap();
    let root = synth::celeba(&t.path().join("c"), 6, 4, 4, false, false, false).unwrap();
    std::fs::remove_file(root.join("img_align_celeba/000004.jpg")).unwrap();
    let out = t.path().join("o");
    let err = fails(&["ingest", "celeba", "--src", s(&root), "--out", s(&out)]);
    assert!(err.contains("line 6") && err.contains("000004.jpg is missing"), "{err}");
    assert_clean(&out);
    std::fs::write(root.join("img_align_celeba/000004.jpg"), b"junk").unwrap();
    let err = fails(&["ingest", "celeba", "--src", s(&root), "--out", s(&out)]);
    assert!(err.contains("000004.jpg") && err.contains("does not decode"), "{err}");
    assert_clean(&out);
}

#[test]
fn corrupt_archive() {
    let t = tempfile::tempdir().unwrap();
    let src = synth::cifar_binary(t.path(), 50, 10, false).unwrap();
    let tgz = t.path().join("c.tar.gz");
    synth::tar_gz(&src, &tgz).unwrap();
    let b = std::fs::read(&tgz).unwrap();
    std::fs::write(&tgz, &b[..b.len() / 2]).unwrap();
    let out = t.path().join("o");
    let err = fails(&["ingest", "cifar10", "--src", s(&tgz), "--out", s(&out)]);
    assert!(err.contains("c.tar.gz") && err.contains("corrupt archive"), "{err}");
    assert_clean(&out);
    let zip = t.path().join("bad.zip");
    std::fs::write(&zip, b"PK\x03\x04 not really").unwrap();
    std::fs::write(t.path().join("list_attr_celeba.txt"), "0\n").unwrap();
    std::fs::write(t.path().join("list_eval_partition.txt"), "").unwrap();
    let err = fails(&["ingest", "folder", "--src", s(&zip), "--out", s(&out)]);
    assert!(err.contains("bad.zip"), "{err}");
}

#[test]
fn out_is_an_existing_file_and_unknown_source() {
    let t = tempfile::tempdir().unwrap();
    let f = t.path().join("file");
    std::fs::write(&f, b"x").unwrap();
    let err = fails(&["ingest", "random", "--count", "2", "--out", s(&f)]);
    assert!(err.contains("is an existing file"), "{err}");
    assert_eq!(std::fs::read(&f).unwrap(), b"x");
    let out = siamlab(&["ingest", "imagenet", "--src", "x", "--out", "y"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid value 'imagenet'"));
    let err = fails(&["ingest", "cifar10", "--src", s(&t.path().join("nope")), "--out", s(&t.path().join("o"))]);
    assert!(err.contains("nope"), "{err}");
}
