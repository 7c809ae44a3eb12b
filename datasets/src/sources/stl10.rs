//! STL-10 binary version (`stl10_binary.tar.gz` or `stl10_binary/`): splits train, test and
//! unlabeled; images stored column-major (shared/FORMATS.md); the 10 folds go to the manifest.

use std::path::Path;

use crate::container::{find, Container, Member};
use crate::error::{Error, Result};
use crate::record::{ImageData, Origin, Record, Source, SourceInfo};

/// Side of an STL-10 image.
pub const SIDE: usize = 96;
/// Bytes per STL-10 image.
pub const IMAGE_BYTES: usize = 3 * SIDE * SIDE;
/// STL-10's class names, used when `class_names.txt` is absent.
pub const STL10_CLASSES: [&str; 10] =
    ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"];

/// An STL-10 source.
pub struct Stl10 {
    container: Container,
    /// Per split: the X member and its labels (None for unlabeled).
    parts: Vec<(Member, Option<Vec<u8>>)>,
    info: SourceInfo,
}

impl Stl10 {
    /// Opens STL-10 at `path` (archive or folder).
    pub fn open(path: &Path) -> Result<Self> {
        let container = Container::open(path)?;
        let small = |m: &Member| m.basename().ends_with("_y.bin") || m.basename().ends_with(".txt");
        let (members, meta) = container.scan(&small)?;
        let mut splits = Vec::new();
        let mut parts = Vec::new();
        for split in ["train", "test", "unlabeled"] {
            let Some(x) = find(&members, &format!("{split}_X.bin")) else {
                continue;
            };
            let xfile = container.display(&x.name);
            if x.size % IMAGE_BYTES as u64 != 0 {
                return Err(Error::corrupt_file(
                    xfile,
                    format!("size {} is not a multiple of the {IMAGE_BYTES}-byte image (truncated file?)", x.size),
                ));
            }
            let count = x.size / IMAGE_BYTES as u64;
            let labels = if split == "unlabeled" {
                None
            } else {
                let y = find(&members, &format!("{split}_y.bin"))
                    .ok_or_else(|| Error::Missing(format!("{}: {split}_y.bin is missing", path.display())))?;
                let yfile = container.display(&y.name);
                let labels = meta.get(&y.name).cloned().unwrap_or_default();
                if labels.len() as u64 != count {
                    return Err(Error::corrupt_file(
                        yfile,
                        format!("{} labels but {split}_X.bin holds {count} images", labels.len()),
                    ));
                }
                if let Some((i, l)) = labels.iter().enumerate().find(|(_, &l)| !(1..=10).contains(&l)) {
                    return Err(Error::corrupt(yfile, format!("record {i}"), format!("label {l} out of range 1..=10")));
                }
                Some(labels.iter().map(|l| l - 1).collect())
            };
            splits.push(split.to_string());
            parts.push((x.clone(), labels));
        }
        if parts.is_empty() {
            return Err(Error::Missing(format!("{}: no STL-10 *_X.bin files found", path.display())));
        }
        let text = |base: &str| -> Option<(String, String)> {
            let m = find(&members, base)?;
            Some((container.display(&m.name), String::from_utf8_lossy(meta.get(&m.name)?).into_owned()))
        };
        let classes: Vec<String> = match text("class_names.txt") {
            Some((_, t)) => t.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect(),
            None => STL10_CLASSES.iter().map(|s| s.to_string()).collect(),
        };
        if classes.len() != 10 {
            return Err(Error::corrupt_file(
                container.display("class_names.txt"),
                format!("expected 10 class names, found {}", classes.len()),
            ));
        }
        let folds = match text("fold_indices.txt") {
            None => serde_json::Value::Null,
            Some((file, t)) => {
                let mut folds = Vec::new();
                for (i, line) in t.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
                    let fold: Vec<u32> = line
                        .split_whitespace()
                        .map(|v| v.parse::<u32>())
                        .collect::<std::result::Result<_, _>>()
                        .map_err(|e| Error::corrupt(&file, format!("line {}", i + 1), format!("bad index: {e}")))?;
                    // Folds index the train split (0-based).
                    let train = splits.iter().position(|s| s == "train").map(|t| parts[t].0.size / IMAGE_BYTES as u64);
                    let past = fold.iter().find(|&&v| train.is_none_or(|n| v as u64 >= n));
                    if let Some(v) = past {
                        let why = match train {
                            Some(n) => format!("index {v} is past the train split ({n} images)"),
                            None => format!("index {v} given, but there is no train split (train_X.bin)"),
                        };
                        return Err(Error::corrupt(&file, format!("line {}", i + 1), why));
                    }
                    folds.push(fold);
                }
                serde_json::json!(folds)
            }
        };
        let info = SourceInfo {
            name: "stl10".into(),
            splits,
            classes: Some(classes),
            coarse_classes: None,
            attributes: None,
            file_source: false,
            extra: serde_json::json!({ "folds": folds }),
            total: Some(parts.iter().map(|(m, _)| m.size / IMAGE_BYTES as u64).sum()),
        };
        Ok(Stl10 { container, parts, info })
    }
}

/// Converts one STL-10 image (channel, column, row order) to interleaved row-major RGB.
pub fn column_major_to_rgb(src: &[u8], out: &mut [u8]) {
    for c in 0..3 {
        let plane = &src[c * SIDE * SIDE..(c + 1) * SIDE * SIDE];
        for x in 0..SIDE {
            let col = &plane[x * SIDE..(x + 1) * SIDE];
            for (y, &v) in col.iter().enumerate() {
                out[(y * SIDE + x) * 3 + c] = v;
            }
        }
    }
}

impl Source for Stl10 {
    fn info(&self) -> &SourceInfo {
        &self.info
    }

    fn run(&mut self, sink: &mut dyn FnMut(Record) -> Result<()>) -> Result<()> {
        let names: Vec<String> = self.parts.iter().map(|(m, _)| m.name.clone()).collect();
        let container = &self.container;
        let parts = &self.parts;
        let mut split = 0;
        container.stream_in_order(&names, &mut |m, r| {
            let file = container.display(&m.name);
            let labels = &parts[split].1;
            let mut buf = vec![0u8; IMAGE_BYTES];
            for i in 0..m.size / IMAGE_BYTES as u64 {
                r.read_exact(&mut buf)
                    .map_err(|e| Error::corrupt(&file, format!("record {i}"), format!("read failed: {e}")))?;
                let mut pixels = vec![0u8; IMAGE_BYTES];
                column_major_to_rgb(&buf, &mut pixels);
                sink(Record {
                    split,
                    index: i as i64,
                    label: labels.as_ref().map(|l| l[i as usize] as i64),
                    coarse_label: None,
                    attributes: None,
                    image: ImageData::Rgb { width: SIDE as u32, height: SIDE as u32, pixels },
                    origin: Origin { file: file.clone(), record: format!("record {i}") },
                })?;
            }
            split += 1;
            Ok(())
        })
    }
}
