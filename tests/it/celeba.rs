use siamlab_datasets::shard::Manifest;
use siamlab_datasets::synth;

use crate::common::*;

fn check(out: &std::path::Path, n: u64, src_images: Option<&std::path::Path>) {
    let m = Manifest::load(out).unwrap();
    assert_eq!(m.split_order, ["train", "valid", "test"]);
    assert_eq!(m.attributes.as_ref().unwrap()[0], "5_o_Clock_Shadow");
    assert_eq!(m.attributes.as_ref().unwrap()[39], "Young");
    let mut seen = 0;
    for (p, split) in ["train", "valid", "test"].iter().enumerate() {
        for r in rows(out, split) {
            let i = r.index as u64;
            let part = match i % 5 {
                0..=2 => 0,
                3 => 1,
                _ => 2,
            };
            assert_eq!(part, p, "image {i} in split {split}");
            let want: Vec<i8> = (0..40).map(|a| synth::attribute(i, a)).collect();
            assert_eq!(r.attributes.as_deref(), Some(&want[..]));
            assert_eq!(r.label, None);
            assert_eq!(r.path.as_deref(), Some(format!("{:06}.jpg", i + 1).as_str()));
            assert_eq!((r.width, r.height), (12, 15));
            assert_pattern(i, 12, 15, &r.rgb());
            if let Some(dir) = src_images {
                let orig = std::fs::read(dir.join(format!("{:06}.jpg", i + 1))).unwrap();
                assert_eq!(r.bytes, orig, "file bytes are kept as they are");
            }
            seen += 1;
        }
    }
    assert_eq!(seen, n);
}

#[test]
fn txt_annotations_with_image_folder() {
    let t = tempfile::tempdir().unwrap();
    let root = synth::celeba(&t.path().join("celeba"), 11, 12, 15, false, false, false).unwrap();
    let out = t.path().join("o");
    ok(&["ingest", "celeba", "--src", s(&root), "--out", s(&out)]);
    check(&out, 11, Some(&root.join("img_align_celeba")));
}

#[test]
fn csv_annotations_with_zip() {
    let t = tempfile::tempdir().unwrap();
    let root = synth::celeba(&t.path().join("celeba"), 9, 12, 15, true, true, false).unwrap();
    let out = t.path().join("o");
    ok(&["ingest", "celeba", "--src", s(&root), "--out", s(&out)]);
    check(&out, 9, None);
    let out2 = t.path().join("o2");
    ok(&["ingest", "celeba", "--src", s(&root.join("img_align_celeba.zip")), "--out", s(&out2)]);
    assert_eq!(shard_hashes(&out), shard_hashes(&out2));
}

#[test]
fn jpeg_images_resized_to_shorter_side() {
    let t = tempfile::tempdir().unwrap();
    let root = synth::celeba(&t.path().join("celeba"), 5, 40, 50, false, false, true).unwrap();
    let out = t.path().join("o");
    ok(&["ingest", "celeba", "--src", s(&root), "--out", s(&out), "--resize", "20"]);
    for r in rows(&out, "train") {
        assert_eq!((r.width, r.height), (20, 25));
        assert!(r.bytes.starts_with(b"\x89PNG"), "resized images are stored as PNG");
    }
    let text = ok(&["inspect", s(&out)]);
    assert!(text.contains("Young"), "{text}");
}
