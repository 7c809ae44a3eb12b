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
    // A CelebA image zip whose end (the central directory) is cut off: the annotations read
    // fine, the zip reader refuses the archive, naming it.
    let root = synth::celeba(&t.path().join("celeba"), 4, 12, 15, false, true, false).unwrap();
    let zip = root.join("img_align_celeba.zip");
    let b = std::fs::read(&zip).unwrap();
    std::fs::write(&zip, &b[..b.len() - 30]).unwrap();
    let out = t.path().join("o2");
    let err = fails(&["ingest", "celeba", "--src", s(&root), "--out", s(&out)]);
    assert!(err.contains("img_align_celeba.zip") && err.contains("corrupt zip"), "{err}");
    assert_clean(&out);
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
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown source \"imagenet\"") && err.contains("cifar10"), "{err}");
    let err = fails(&["ingest", "cifar10", "--src", s(&t.path().join("nope")), "--out", s(&t.path().join("o"))]);
    assert!(err.contains("nope"), "{err}");
}

/// Flips bit `bit` of byte `at` of `path`.
fn flip(path: &Path, at: usize, bit: u8) {
    let mut b = std::fs::read(path).unwrap();
    b[at] ^= 1 << bit;
    std::fs::write(path, b).unwrap();
}

#[test]
fn gzip_bit_flips_are_errors_not_other_pixels() {
    let t = tempfile::tempdir().unwrap();
    let src = synth::cifar_binary(t.path(), 3, 2, false).unwrap();
    let tgz = t.path().join("c.tar.gz");
    synth::tar_gz(&src, &tgz).unwrap();
    let good = std::fs::read(&tgz).unwrap();
    let len = good.len();
    // In the CRC-32 of the trailer (the data is intact; the archive is not), and in the
    // compressed data (where most flips decompress to other bytes without a deflate error).
    for (at, bit) in [(len - 6, 3), (len / 2, 0), (len / 3, 5)] {
        std::fs::write(&tgz, &good).unwrap();
        flip(&tgz, at, bit);
        let out = t.path().join(format!("o{at}"));
        let err = fails(&["ingest", "cifar10", "--src", s(&tgz), "--out", s(&out), "-q"]);
        assert!(err.contains("c.tar.gz") && err.contains("corrupt archive"), "byte {at}: {err}");
        assert!(!out.exists(), "byte {at}: {:?}", files(&out));
    }
}

#[test]
fn truncated_jpeg_is_refused_at_ingest_and_by_verify_decode() {
    let t = tempfile::tempdir().unwrap();
    let root = synth::celeba(&t.path().join("c"), 6, 40, 32, false, false, true).unwrap();
    let f = root.join("img_align_celeba/000003.jpg");
    let b = std::fs::read(&f).unwrap();
    std::fs::write(&f, &b[..b.len() * 2 / 3]).unwrap();
    let out = t.path().join("o");
    let err = fails(&["ingest", "celeba", "--src", s(&root), "--out", s(&out), "-q"]);
    assert!(err.contains("000003.jpg") && err.contains("line 5") && err.contains("truncated JPEG"), "{err}");
    assert_clean(&out);
    let text = ok(&["ingest", "celeba", "--src", s(&root), "--out", s(&out), "--skip-bad", "-q"]);
    assert!(text.contains("1 skipped"), "{text}");

    // A shard written before ingest was strict: verify --decode names its shard and row.
    let shards = t.path().join("old");
    write_shards_with_images(&shards, &[b.clone(), b[..b.len() * 2 / 3].to_vec()]);
    ok(&["verify", s(&shards)]);
    let err = fails(&["verify", s(&shards), "--decode"]);
    assert!(err.contains("part-00000-of-00001.parquet: row 1: image does not decode: truncated JPEG"), "{err}");
}

/// A one-split shard folder holding `images` (40 × 32) as they are (what an older siamlab could write).
fn write_shards_with_images(dir: &Path, images: &[Vec<u8>]) {
    write_shards(dir, images.iter().map(|b| (b.clone(), None)).collect(), None, 40, 32);
}

/// A one-split (`train`) shard folder of `rows` (image bytes of `w` × `h`, label) as they
/// are, with `classes` in the manifest: rows no ingest would write.
fn write_shards(dir: &Path, rows: Vec<(Vec<u8>, Option<i64>)>, classes: Option<Vec<String>>, w: u32, h: u32) {
    use siamlab_datasets::shard::{self, Columns, Layout, Manifest, Row, SplitInfo, SplitWriter, SCHEMA_VERSION};
    use siamlab_datasets::SourceInfo;
    let info = SourceInfo {
        name: "folder".into(),
        splits: vec!["train".into()],
        classes: classes.clone(),
        ..Default::default()
    };
    let cols = Columns::of(&info);
    let mut wr = SplitWriter::new(dir, "train", shard::schema(&info, cols), cols, Layout::with_shard_bytes(1 << 20));
    let n = rows.len() as u64;
    for (i, (bytes, label)) in rows.into_iter().enumerate() {
        let row = Row {
            index: i as i64,
            label,
            coarse_label: None,
            attributes: None,
            bytes,
            path: None,
            width: w,
            height: h,
        };
        wr.push(row).unwrap();
    }
    let shards = wr.finish().unwrap();
    let split = SplitInfo { rows: n, skipped: 0, size_range: Some([w, h, w, h]), stats: None, shards };
    Manifest {
        schema_version: SCHEMA_VERSION,
        source: "folder".into(),
        arguments: serde_json::Value::Null,
        created_by: "test".into(),
        split_order: vec!["train".into()],
        splits: [("train".to_string(), split)].into(),
        classes,
        coarse_classes: None,
        attributes: None,
        stats_split: None,
        stats: None,
        extra: serde_json::Value::Null,
    }
    .store(dir)
    .unwrap();
}

#[test]
fn overwrite_with_a_failing_source_keeps_the_old_dataset() {
    let t = tempfile::tempdir().unwrap();
    let src = synth::cifar_binary(t.path(), 3, 2, false).unwrap();
    let out = t.path().join("o");
    ok(&["ingest", "cifar10", "--src", s(&src), "--out", s(&out), "-q"]);
    std::fs::write(out.join("NOTES.txt"), b"mine").unwrap();
    let before = shard_hashes(&out);
    // The source now fails on its fourth file, after the first three were written.
    let f = src.join("data_batch_4.bin");
    let good = std::fs::read(&f).unwrap();
    let mut bad = good.clone();
    bad[3073] = 12;
    std::fs::write(&f, &bad).unwrap();
    let err = fails(&["ingest", "cifar10", "--src", s(&src), "--out", s(&out), "--overwrite", "-q"]);
    assert!(err.contains("data_batch_4.bin: record 1: label byte 12"), "{err}");
    assert_eq!(shard_hashes(&out), before);
    ok(&["verify", s(&out)]);
    let beside: Vec<_> = std::fs::read_dir(t.path()).unwrap().flatten().map(|e| e.file_name()).collect();
    assert!(beside.iter().all(|n| !n.to_string_lossy().contains("siamlab")), "{beside:?}");
    // A replacement that completes replaces it, and keeps the user's file.
    std::fs::write(&f, &good).unwrap();
    ok(&["ingest", "cifar10", "--src", s(&src), "--out", s(&out), "--overwrite", "--shard-size-mb", "0.01", "-q"]);
    assert_ne!(shard_hashes(&out), before);
    ok(&["verify", s(&out)]);
    assert_eq!(std::fs::read(out.join("NOTES.txt")).unwrap(), b"mine");
    let beside: Vec<_> = std::fs::read_dir(t.path()).unwrap().flatten().map(|e| e.file_name()).collect();
    assert!(beside.iter().all(|n| !n.to_string_lossy().contains("siamlab")), "{beside:?}");
}

#[test]
fn out_folder_not_written_by_siamlab_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("theirs");
    std::fs::create_dir_all(out.join("train")).unwrap();
    std::fs::write(out.join("train/part-00000-of-00001.parquet"), b"someone else's").unwrap();
    std::fs::write(out.join("README"), b"theirs").unwrap();
    let before = files(&out);
    for overwrite in [false, true] {
        let mut args = vec!["ingest", "random", "--count", "4", "--size", "4", "--out", s(&out), "-q"];
        if overwrite {
            args.push("--overwrite");
        }
        let err = fails(&args);
        assert!(err.contains("theirs") && err.contains("not written by siamlab"), "{err}");
        assert_eq!(files(&out), before);
        assert_eq!(std::fs::read(out.join("train/part-00000-of-00001.parquet")).unwrap(), b"someone else's");
    }
    // An empty folder is fine.
    let empty = t.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    ok(&["ingest", "random", "--count", "4", "--size", "4", "--out", s(&empty), "-q"]);
}

#[test]
fn deeply_nested_pickle_is_an_error_not_a_crash() {
    let t = tempfile::tempdir().unwrap();
    let src = synth::cifar_python(t.path(), 3, 2).unwrap();
    let mut p = vec![0x80, 2];
    p.extend(std::iter::repeat_n(b']', 50_000));
    p.extend(std::iter::repeat_n(b'a', 49_999));
    p.push(b'.');
    std::fs::write(src.join("data_batch_2"), p).unwrap();
    let out = t.path().join("o");
    let o = siamlab(&["ingest", "cifar10", "--src", s(&src), "--out", s(&out), "-q"]);
    assert_eq!(o.status.code(), Some(1), "{}", String::from_utf8_lossy(&o.stderr));
    let err = fails(&["ingest", "cifar10", "--src", s(&src), "--out", s(&out), "-q"]);
    assert!(err.contains("data_batch_2") && err.contains("nested deeper than 100 levels"), "{err}");
    assert_clean(&out);
}

#[test]
fn resize_is_bounded_before_allocating() {
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("o");
    let err = fails(&["ingest", "random", "--count", "2", "--size", "32", "--resize", "100000", "--out", s(&out)]);
    assert!(err.contains("resize 100000: the shorter side must be 1..=8192"), "{err}");
    let err = fails(&["ingest", "random", "--count", "2", "--size", "32", "--resize", "0", "--out", s(&out)]);
    assert!(err.contains("resize 0"), "{err}");
    assert!(!out.exists());
    // Within the bound, an image whose resized size would be too large names its file.
    let root = t.path().join("f");
    std::fs::create_dir_all(root.join("a")).unwrap();
    std::fs::write(root.join("a/wide.png"), synth::pattern_png(0, 400, 1)).unwrap();
    let err = fails(&["ingest", "folder", "--src", s(&root), "--resize", "8192", "--out", s(&out), "-q"]);
    assert!(err.contains("wide.png") && err.contains("3276800x8192") && err.contains("more than"), "{err}");
    assert!(!out.exists());
}

#[test]
fn empty_cifar_files_are_refused() {
    let t = tempfile::tempdir().unwrap();
    let src = synth::cifar_binary(t.path(), 3, 2, false).unwrap();
    for f in ["data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin", "data_batch_5.bin"] {
        std::fs::write(src.join(f), b"").unwrap();
    }
    std::fs::write(src.join("test_batch.bin"), b"").unwrap();
    let out = t.path().join("o");
    let err = fails(&["ingest", "cifar10", "--src", s(&src), "--out", s(&out), "-q"]);
    assert!(err.contains("data_batch_1.bin: empty file: no records"), "{err}");
    assert!(!out.exists());
}

#[test]
fn stl10_fold_index_past_the_train_split() {
    let t = tempfile::tempdir().unwrap();
    let src = synth::stl10(t.path(), 20, 4, 0).unwrap();
    std::fs::write(src.join("fold_indices.txt"), "0 1 2\n3 4 20\n").unwrap();
    let out = t.path().join("o");
    let err = fails(&["ingest", "stl10", "--src", s(&src), "--out", s(&out), "-q"]);
    assert!(err.contains("fold_indices.txt: line 2: index 20 is past the train split (20 images)"), "{err}");
    assert!(!out.exists());
}

#[test]
fn celeba_attribute_value_zero() {
    let t = tempfile::tempdir().unwrap();
    let root = synth::celeba(&t.path().join("c"), 6, 4, 4, false, false, false).unwrap();
    let f = root.join("list_attr_celeba.txt");
    let text = std::fs::read_to_string(&f).unwrap();
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    lines[4] = lines[4].replacen("-1", " 0", 1);
    std::fs::write(&f, lines.join("\n")).unwrap();
    let out = t.path().join("o");
    let err = fails(&["ingest", "celeba", "--src", s(&root), "--out", s(&out), "-q"]);
    assert!(err.contains("list_attr_celeba.txt: line 5: attribute value \"0\" is not 1 or -1"), "{err}");
    assert!(!out.exists());
}

#[test]
fn reingest_from_another_source_or_arguments_names_what_differs() {
    let t = tempfile::tempdir().unwrap();
    let a = synth::cifar_binary(&t.path().join("a"), 3, 2, false).unwrap();
    let b = synth::cifar_binary(&t.path().join("b"), 4, 2, false).unwrap();
    let out = t.path().join("o");
    ok(&["ingest", "cifar10", "--src", s(&a), "--out", s(&out), "-q"]);
    let before = shard_hashes(&out);
    // The same source, named another way, and the same arguments: nothing to do.
    let again = format!("{}/../{}", a.display(), a.file_name().unwrap().to_string_lossy());
    let text = ok(&["ingest", "cifar10", "--src", &again, "--out", s(&out), "-q"]);
    assert!(text.contains("already complete"), "{text}");
    let err = fails(&["ingest", "cifar10", "--src", s(&b), "--out", s(&out), "-q"]);
    assert!(err.contains("other arguments (src: ") && err.contains("--overwrite"), "{err}");
    let err = fails(&["ingest", "cifar10", "--src", s(&a), "--out", s(&out), "--resize", "16", "-q"]);
    assert!(err.contains("(resize: null → 16)"), "{err}");
    let err = fails(&["ingest", "random", "--out", s(&out), "-q"]);
    assert!(err.contains("source: \"cifar10\" → \"random\""), "{err}");
    assert_eq!(shard_hashes(&out), before);
}

/// An experiment with one dataset (`dataset` is its TOML body) and one finetuning cell on it.
fn experiment(dir: &Path, dataset: &str) -> std::path::PathBuf {
    let file = dir.join("exp.toml");
    let text = format!(
        "name = \"x\"\n[datasets.d]\n{dataset}\n[finetune_defaults]\ndata = \"d\"\nbackbone = \"resnet18_tiny\"\n\
         epochs = 1\n[[cells]]\nrow = \"r\"\ncolumn = \"c\"\ninit = \"scratch\"\n"
    );
    std::fs::write(&file, text).unwrap();
    file
}

#[test]
fn experiment_dataset_checks_are_the_command_lines() {
    let t = tempfile::tempdir().unwrap();
    let f = experiment(t.path(), "source = \"cifar10\"");
    let err = fails(&["ablate", s(&f), "--dry-run"]);
    assert!(err.contains("[datasets.d]: source cifar10 needs a path"), "{err}");
    let f = experiment(t.path(), "source = \"random\"\ncount = 8\nsize = 8\nresize = 0");
    let err = fails(&["ablate", s(&f), "--dry-run"]);
    assert!(err.contains("[datasets.d]: resize 0: the shorter side must be 1..=8192"), "{err}");
    let work = t.path().join("work");
    let err = fails(&["ablate", s(&f), "--work", s(&work), "-q"]);
    assert!(err.contains("resize 0"), "{err}");
    assert!(!work.join("data/d/manifest.json").exists());
    let f = experiment(t.path(), "source = \"imagenet\"\nsrc = \"x\"");
    let err = fails(&["ablate", s(&f), "--dry-run"]);
    assert!(err.contains("unknown source \"imagenet\""), "{err}");
    let f = experiment(t.path(), "source = \"random\"\ncount = 8\nsize = 8");
    ok(&["ablate", s(&f), "--dry-run"]);
}

#[test]
fn a_second_training_into_a_held_run_folder_fails_at_once() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("d");
    ok(&["ingest", "random", "--count", "64", "--size", "16", "--out", s(&data), "-q"]);
    let run = t.path().join("run");
    let args = [
        "train",
        "pretrain",
        "--data",
        s(&data),
        "--backbone",
        "resnet18_tiny",
        "--batch",
        "16",
        "--proj-dim",
        "128",
        "--epochs",
        "1000",
        "--knn-every",
        "0",
        "--out",
        s(&run),
        "-q",
    ];
    let mut first = std::process::Command::new(env!("CARGO_BIN_EXE_siamlab"))
        .args(args)
        .env("CI", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while !run.join("config.json").exists() && start.elapsed().as_secs() < 300 {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let mut resume = args.to_vec();
    resume.push("--resume");
    let err = fails(&resume);
    first.kill().unwrap();
    first.wait().unwrap();
    assert!(err.contains("another siamlab process is training into this folder"), "{err}");
}

#[test]
fn a_damaged_parquet_footer_names_the_shard() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("d");
    ok(&["ingest", "random", "--count", "16", "--size", "8", "--out", s(&data), "-q"]);
    let shard = data.join("train/part-00000-of-00001.parquet");
    let mut b = std::fs::read(&shard).unwrap();
    // Invalid UTF-8 in the footer's key-value metadata (the `ARROW:schema` key).
    let key = b"ARROW:schema";
    let at = b.windows(key.len()).rposition(|w| w == key).unwrap();
    b[at + 2] = 0xFF;
    std::fs::write(&shard, b).unwrap();
    let err = fails(&["inspect", s(&data)]);
    assert!(err.contains("part-00000-of-00001.parquet") && err.contains("Parquet footer"), "{err}");
    let err = fails(&[
        "train",
        "pretrain",
        "--data",
        s(&data),
        "--backbone",
        "resnet18_tiny",
        "--knn-every",
        "0",
        "--epochs",
        "1",
        "--out",
        s(&t.path().join("run")),
        "-q",
    ]);
    assert!(err.contains("part-00000-of-00001.parquet") && err.contains("Parquet footer"), "{err}");
    let err = fails(&["verify", s(&data)]);
    assert!(err.contains("part-00000-of-00001.parquet"), "{err}");
}

/// Issue 17: a label outside the manifest's classes stopped finetuning with "label 12 is not a
/// class of this dataset" and no word of where it came from.
#[test]
fn an_out_of_range_label_names_its_shard_and_row() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("d");
    let rows =
        (0..8u64).map(|i| (synth::pattern_png(i, 16, 16), Some(if i == 5 { 12 } else { (i % 2) as i64 }))).collect();
    write_shards(&data, rows, Some(vec!["a".into(), "b".into()]), 16, 16);
    let err = fails(&[
        "train",
        "finetune",
        "--data",
        s(&data),
        "--backbone",
        "resnet18_tiny",
        "--batch",
        "4",
        "--epochs",
        "1",
        "--out",
        s(&t.path().join("run")),
        "-q",
    ]);
    assert!(
        err.contains("train/part-00000-of-00001.parquet: row 5: label 12 is not a class of this dataset (0..2)"),
        "{err}"
    );
}

/// Issue 17: the error chain printed a cause twice when an error's message already held it
/// (`model: backbone: unknown backbone "foo"; known: …: backbone: unknown backbone "foo"; …`).
#[test]
fn the_error_chain_prints_each_cause_once() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("d");
    ok(&["ingest", "random", "--count", "16", "--size", "16", "--out", s(&data), "-q"]);
    let file = t.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    let cases: [(&[&str], &str, &str); 3] = [
        (&["--backbone", "foo"], "run", "unknown backbone \"foo\""),
        (&["--backbone", "vit_s", "--image-size", "48"], "run", "no preset for 48 px"),
        (&["--backbone", "resnet18_tiny"], "file/run", "Not a directory"),
    ];
    for (flags, out, cause) in cases {
        let out = t.path().join(out);
        let mut args =
            vec!["train", "pretrain", "--data", s(&data), "--knn-every", "0", "--batch", "8", "--out", s(&out), "-q"];
        args.extend_from_slice(flags);
        let err = fails(&args);
        assert_eq!(err.matches(cause).count(), 1, "{err}");
    }
}
