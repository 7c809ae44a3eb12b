//! Any image folder: `root/<class>/<file>` or, with a split level, `root/<split>/<class>/<file>`
//! (split names train, val, valid, validation, test). Classes sorted by name get ids 0..K-1,
//! like torchvision's `ImageFolder`; files with other extensions are ignored.

use std::path::{Path, PathBuf};

use crate::container::walk;
use crate::error::{Error, IoContext, Result};
use crate::record::{ImageData, Origin, Record, Source, SourceInfo};

/// Extensions (lower case) taken as images.
pub const EXTENSIONS: [&str; 5] = ["jpg", "jpeg", "png", "bmp", "webp"];
const SPLIT_NAMES: [&str; 5] = ["train", "val", "valid", "validation", "test"];

/// An image-folder source.
pub struct Folder {
    root: PathBuf,
    /// (split, class id, relative path) in output order.
    files: Vec<(usize, i64, String)>,
    info: SourceInfo,
}

fn subdirs(dir: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).at(dir)? {
        let e = e.at(dir)?;
        if e.path().is_dir() {
            out.push(e.file_name().to_string_lossy().into_owned());
        }
    }
    out.sort();
    Ok(out)
}

fn is_image(name: &str) -> bool {
    let lower = name.to_lowercase();
    EXTENSIONS.iter().any(|e| lower.ends_with(&format!(".{e}")))
}

impl Folder {
    /// Scans `root`.
    pub fn open(root: &Path) -> Result<Self> {
        if !root.is_dir() {
            return Err(Error::Usage(format!("{}: not a folder", root.display())));
        }
        let top = subdirs(root)?;
        let split_level = !top.is_empty() && top.iter().all(|d| SPLIT_NAMES.contains(&d.as_str()));
        let split_dirs: Vec<(String, PathBuf)> = if split_level {
            let order = |s: &str| SPLIT_NAMES.iter().position(|n| *n == s).unwrap_or(9);
            let mut s: Vec<_> = top.iter().map(|d| (d.clone(), root.join(d))).collect();
            s.sort_by_key(|(n, _)| order(n));
            s
        } else {
            vec![("train".to_string(), root.to_path_buf())]
        };
        let mut classes: Vec<String> = Vec::new();
        for (_, dir) in &split_dirs {
            classes.extend(subdirs(dir)?);
        }
        classes.sort();
        classes.dedup();
        if classes.is_empty() {
            return Err(Error::Missing(format!(
                "{}: no class folders (expected root/<class>/<image>)",
                root.display()
            )));
        }
        let mut files = Vec::new();
        for (split, (name, dir)) in split_dirs.iter().enumerate() {
            for (class, cname) in classes.iter().enumerate() {
                let cdir = dir.join(cname);
                if !cdir.is_dir() {
                    continue;
                }
                let mut list = Vec::new();
                walk(&cdir, &cdir, &mut list)?;
                for f in list.into_iter().filter(|f| is_image(f)) {
                    let rel = if split_level { format!("{name}/{cname}/{f}") } else { format!("{cname}/{f}") };
                    files.push((split, class as i64, rel));
                }
            }
        }
        if files.is_empty() {
            return Err(Error::Missing(format!("{}: no images ({}) found", root.display(), EXTENSIONS.join(", "))));
        }
        let info = SourceInfo {
            name: "folder".into(),
            splits: split_dirs.into_iter().map(|(n, _)| n).collect(),
            classes: Some(classes),
            coarse_classes: None,
            attributes: None,
            file_source: true,
            extra: serde_json::Value::Null,
            total: Some(files.len() as u64),
        };
        Ok(Folder { root: root.to_path_buf(), files, info })
    }
}

impl Source for Folder {
    fn info(&self) -> &SourceInfo {
        &self.info
    }

    fn run(&mut self, sink: &mut dyn FnMut(Record) -> Result<()>) -> Result<()> {
        let mut counts = vec![0i64; self.info.splits.len()];
        for (split, class, rel) in &self.files {
            let path = self.root.join(rel);
            let bytes = std::fs::read(&path).at(&path)?;
            let index = counts[*split];
            counts[*split] += 1;
            sink(Record {
                split: *split,
                index,
                label: Some(*class),
                coarse_label: None,
                attributes: None,
                image: ImageData::Encoded { bytes, path: rel.clone() },
                origin: Origin { file: path.display().to_string(), record: format!("image {index}") },
            })?;
        }
        Ok(())
    }
}
