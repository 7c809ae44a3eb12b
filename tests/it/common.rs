//! Helpers: run the CLI, read shards back, check the synthetic pattern.

use std::path::Path;
use std::process::{Command, Output};

use siamlab_datasets::decode::decode_rgb;
use siamlab_datasets::shard::{Manifest, ShardReader};
use siamlab_datasets::synth::pixel;

/// Runs `siamlab` with `args`.
pub fn siamlab(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_siamlab")).args(args).env("CI", "1").output().expect("run siamlab")
}

/// Runs `siamlab` and asserts success; returns stdout.
pub fn ok(args: &[&str]) -> String {
    let out = siamlab(args);
    assert!(out.status.success(), "siamlab {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `siamlab`, asserts failure with a one-line error, returns that line.
pub fn fails(args: &[&str]) -> String {
    let out = siamlab(args);
    assert!(!out.status.success(), "siamlab {args:?} should fail");
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    assert_eq!(err.lines().count(), 1, "error must be one line: {err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

/// One row read back from shards.
#[derive(Debug, Clone)]
pub struct Row {
    pub index: i64,
    pub label: Option<i64>,
    pub coarse: Option<i64>,
    pub attributes: Option<Vec<i8>>,
    pub path: Option<String>,
    pub bytes: Vec<u8>,
    pub width: u32,
    pub height: u32,
}

impl Row {
    /// Decoded interleaved RGB.
    pub fn rgb(&self) -> Vec<u8> {
        let (w, h, px) = decode_rgb(&self.bytes).expect("decodes");
        assert_eq!((w, h), (self.width, self.height));
        px
    }
}

/// All rows of `split`, in shard order.
pub fn rows(dir: &Path, split: &str) -> Vec<Row> {
    let m = Manifest::load(dir).unwrap();
    let mut out = Vec::new();
    for shard in &m.splits[split].shards {
        let r = ShardReader::open(&dir.join(&shard.path)).unwrap();
        for g in 0..r.row_groups() {
            let b = r.read_row_group(g, None).unwrap();
            for i in 0..b.len() {
                let (width, height) = b.size(i).unwrap();
                out.push(Row {
                    index: b.index(i).unwrap(),
                    label: b.label(i),
                    coarse: b.coarse_label(i),
                    attributes: b.attributes(i),
                    path: b.image_path(i).map(String::from),
                    bytes: b.image_bytes(i).to_vec(),
                    width,
                    height,
                });
            }
        }
    }
    out
}

/// Asserts that `rgb` (w×h interleaved) is the synthetic pattern of image `i`.
pub fn assert_pattern(i: u64, w: usize, h: usize, rgb: &[u8]) {
    assert_eq!(rgb.len(), w * h * 3);
    for y in 0..h {
        for x in 0..w {
            for c in 0..3 {
                assert_eq!(rgb[(y * w + x) * 3 + c], pixel(i, c, y, x), "image {i} row {y} col {x} channel {c}");
            }
        }
    }
}

/// Lists every file under `dir` (relative), sorted.
pub fn files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    fn walk(root: &Path, d: &Path, out: &mut Vec<String>) {
        if let Ok(rd) = std::fs::read_dir(d) {
            for e in rd.flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(root, &p, out);
                } else {
                    out.push(p.strip_prefix(root).unwrap().display().to_string());
                }
            }
        }
    }
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// sha256 list of a complete output (from its manifest).
pub fn shard_hashes(dir: &Path) -> Vec<String> {
    let m = Manifest::load(dir).unwrap();
    m.split_order.iter().flat_map(|s| m.splits[s].shards.iter().map(|x| format!("{} {}", x.path, x.sha256))).collect()
}

pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}
