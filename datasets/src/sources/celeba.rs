//! CelebA aligned & cropped: `img_align_celeba/` or `img_align_celeba.zip`, the 40 attributes
//! (`list_attr_celeba.txt` or `.csv`, -1/1 mapped to 0/1) and the official partition
//! (`list_eval_partition.txt` or `.csv`) into splits train, valid, test.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use crate::container::{basename, open_zip};
use crate::error::{Error, IoContext, Result};
use crate::record::{ImageData, Origin, Record, Source, SourceInfo, NUM_ATTRIBUTES};

/// The three official splits, by partition number.
pub const SPLITS: [&str; 3] = ["train", "valid", "test"];

enum Images {
    Dir(PathBuf),
    Zip { path: PathBuf, zip: zip::ZipArchive<BufReader<File>>, by_name: HashMap<String, usize> },
}

/// One annotated image.
struct Entry {
    name: String,
    line: usize,
    attrs: [i8; NUM_ATTRIBUTES],
    split: usize,
}

/// A CelebA source.
pub struct CelebA {
    images: Images,
    attr_file: String,
    entries: Vec<Entry>,
    info: SourceInfo,
}

fn locate(dirs: &[PathBuf], names: &[&str]) -> Option<PathBuf> {
    for d in dirs {
        for n in names {
            let p = d.join(n);
            if p.exists() {
                return Some(p);
            }
        }
    }
    None
}

impl CelebA {
    /// Opens CelebA at `path`: a folder holding the images (folder or zip) and the two
    /// annotation files (also looked for in `Anno/` and `Eval/`), or the zip itself with the
    /// annotation files beside it.
    pub fn open(path: &Path) -> Result<Self> {
        let meta = std::fs::metadata(path).at(path)?;
        let root =
            if meta.is_dir() { path.to_path_buf() } else { path.parent().unwrap_or(Path::new(".")).to_path_buf() };
        let dirs = [root.clone(), root.join("Anno"), root.join("Eval"), root.join("Img")];
        let images_path = if meta.is_dir() {
            locate(&dirs, &["img_align_celeba", "img_align_celeba.zip"]).ok_or_else(|| {
                Error::Missing(format!("{}: no img_align_celeba/ folder or img_align_celeba.zip", path.display()))
            })?
        } else {
            path.to_path_buf()
        };
        let attr_path = locate(&dirs, &["list_attr_celeba.txt", "list_attr_celeba.csv"])
            .ok_or_else(|| Error::Missing(format!("{}: list_attr_celeba.txt (or .csv) not found", root.display())))?;
        let part_path = locate(&dirs, &["list_eval_partition.txt", "list_eval_partition.csv"]).ok_or_else(|| {
            Error::Missing(format!("{}: list_eval_partition.txt (or .csv) not found", root.display()))
        })?;

        let attr_file = attr_path.display().to_string();
        let (names, rows) = parse_attributes(&attr_file, &std::fs::read_to_string(&attr_path).at(&attr_path)?)?;
        let part_file = part_path.display().to_string();
        let partition = parse_partition(&part_file, &std::fs::read_to_string(&part_path).at(&part_path)?)?;
        let mut entries = Vec::with_capacity(rows.len());
        for (name, line, attrs) in rows {
            let split = *partition.get(&name).ok_or_else(|| {
                Error::corrupt(&attr_file, format!("line {line}"), format!("{name} has no entry in {part_file}"))
            })?;
            entries.push(Entry { name, line, attrs, split });
        }

        let images = if images_path.is_dir() {
            Images::Dir(images_path)
        } else {
            let mut zip = open_zip(&images_path)?;
            let mut by_name = HashMap::new();
            for i in 0..zip.len() {
                let e = zip
                    .by_index(i)
                    .map_err(|e| Error::corrupt_file(images_path.display().to_string(), format!("corrupt zip: {e}")))?;
                if e.is_file() {
                    let name = e.name().map_err(|e| {
                        Error::corrupt_file(images_path.display().to_string(), format!("corrupt zip: {e}"))
                    })?;
                    by_name.insert(basename(&name).to_string(), i);
                }
            }
            Images::Zip { path: images_path, zip, by_name }
        };
        let info = SourceInfo {
            name: "celeba".into(),
            splits: SPLITS.iter().map(|s| s.to_string()).collect(),
            classes: None,
            coarse_classes: None,
            attributes: Some(names),
            file_source: true,
            extra: serde_json::Value::Null,
            total: Some(entries.len() as u64),
        };
        Ok(CelebA { images, attr_file, entries, info })
    }
}

fn parse_value(file: &str, line: usize, v: &str) -> Result<i8> {
    match v.trim() {
        "1" => Ok(1),
        "-1" => Ok(0),
        other => Err(Error::corrupt(file, format!("line {line}"), format!("attribute value {other:?} is not 1 or -1"))),
    }
}

type AttrRow = (String, usize, [i8; NUM_ATTRIBUTES]);

/// Parses `list_attr_celeba.txt` (count line, names line, rows) or the `.csv` variant.
fn parse_attributes(file: &str, text: &str) -> Result<(Vec<String>, Vec<AttrRow>)> {
    let csv = file.ends_with(".csv");
    let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l.trim_end_matches('\r')));
    let expected: Option<usize> = if csv {
        None
    } else {
        let (n, l) = lines.next().ok_or_else(|| Error::corrupt_file(file, "empty file"))?;
        Some(l.trim().parse().map_err(|_| Error::corrupt(file, format!("line {n}"), "expected the image count"))?)
    };
    let (n, header) = lines.next().ok_or_else(|| Error::corrupt_file(file, "no attribute names line"))?;
    let names: Vec<String> = if csv {
        let mut cols = header.split(',').map(|s| s.trim().to_string());
        cols.next();
        cols.collect()
    } else {
        header.split_whitespace().map(String::from).collect()
    };
    if names.len() != NUM_ATTRIBUTES {
        return Err(Error::corrupt(
            file,
            format!("line {n}"),
            format!("expected {NUM_ATTRIBUTES} attribute names, found {}", names.len()),
        ));
    }
    let mut rows = Vec::new();
    for (n, l) in lines {
        if l.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = if csv { l.split(',').collect() } else { l.split_whitespace().collect() };
        if fields.len() != NUM_ATTRIBUTES + 1 {
            return Err(Error::corrupt(
                file,
                format!("line {n}"),
                format!("expected {NUM_ATTRIBUTES} attribute values, found {}", fields.len().saturating_sub(1)),
            ));
        }
        let mut attrs = [0i8; NUM_ATTRIBUTES];
        for (a, v) in attrs.iter_mut().zip(&fields[1..]) {
            *a = parse_value(file, n, v)?;
        }
        rows.push((fields[0].trim().to_string(), n, attrs));
    }
    if let Some(e) = expected.filter(|&e| e != rows.len()) {
        return Err(Error::corrupt(file, "line 1", format!("announces {e} images but lists {}", rows.len())));
    }
    Ok((names, rows))
}

/// Parses `list_eval_partition.txt` (`name split`) or `.csv` (`image_id,partition`).
fn parse_partition(file: &str, text: &str) -> Result<HashMap<String, usize>> {
    let csv = file.ends_with(".csv");
    let mut out = HashMap::new();
    for (i, l) in text.lines().enumerate() {
        let n = i + 1;
        let l = l.trim();
        if l.is_empty() || (csv && n == 1) {
            continue;
        }
        let fields: Vec<&str> =
            if csv { l.split(',').map(str::trim).collect() } else { l.split_whitespace().collect() };
        let split = match fields.as_slice() {
            [name, p] => match *p {
                "0" => (name, 0),
                "1" => (name, 1),
                "2" => (name, 2),
                other => {
                    return Err(Error::corrupt(
                        file,
                        format!("line {n}"),
                        format!("partition {other:?} is not 0, 1 or 2"),
                    ))
                }
            },
            _ => {
                return Err(Error::corrupt(
                    file,
                    format!("line {n}"),
                    format!("expected 2 values, found {}", fields.len()),
                ))
            }
        };
        out.insert(split.0.to_string(), split.1);
    }
    Ok(out)
}

impl Source for CelebA {
    fn info(&self) -> &SourceInfo {
        &self.info
    }

    fn run(&mut self, sink: &mut dyn FnMut(Record) -> Result<()>) -> Result<()> {
        for split in 0..SPLITS.len() {
            for (index, e) in self.entries.iter().enumerate().filter(|(_, e)| e.split == split) {
                let (file, bytes) = match &mut self.images {
                    Images::Dir(dir) => {
                        let p = dir.join(&e.name);
                        let file = p.display().to_string();
                        match std::fs::read(&p) {
                            Ok(b) => (file, b),
                            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                                return Err(Error::corrupt(
                                    &self.attr_file,
                                    format!("line {}", e.line),
                                    format!("image {file} is missing"),
                                ))
                            }
                            Err(err) => return Err(Error::io(&p, err)),
                        }
                    }
                    Images::Zip { path, zip, by_name } => {
                        let file = format!("{}:{}", path.display(), e.name);
                        let Some(&i) = by_name.get(&e.name) else {
                            return Err(Error::corrupt(
                                &self.attr_file,
                                format!("line {}", e.line),
                                format!("image {file} is missing"),
                            ));
                        };
                        let mut entry =
                            zip.by_index(i).map_err(|err| Error::corrupt_file(&file, format!("corrupt zip: {err}")))?;
                        let mut b = Vec::with_capacity(entry.size() as usize);
                        entry
                            .read_to_end(&mut b)
                            .map_err(|err| Error::corrupt_file(&file, format!("corrupt zip: {err}")))?;
                        (file, b)
                    }
                };
                sink(Record {
                    split,
                    index: index as i64,
                    label: None,
                    coarse_label: None,
                    attributes: Some(e.attrs),
                    image: ImageData::Encoded { bytes, path: e.name.clone() },
                    origin: Origin { file, record: format!("{} line {}", basename(&self.attr_file), e.line) },
                })?;
            }
        }
        Ok(())
    }
}
