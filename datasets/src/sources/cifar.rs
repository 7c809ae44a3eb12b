//! CIFAR-10 / CIFAR-100, binary (`*-binary.tar.gz`) or python (`*-python.tar.gz`) version,
//! from the archive or its extracted folder (layouts in shared/FORMATS.md).

use std::path::Path;

use crate::container::{find, Container, Member};
use crate::error::{Error, Result};
use crate::pickle;
use crate::record::{ImageData, Origin, Record, Source, SourceInfo};

const PIXELS: usize = 3072;
const SIDE: u32 = 32;

/// CIFAR-10's class names, used when the archive lacks `batches.meta.txt`.
pub const CIFAR10_CLASSES: [&str; 10] =
    ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Binary,
    Python,
}

/// A CIFAR-10 or CIFAR-100 source.
pub struct Cifar {
    container: Container,
    hundred: bool,
    format: Format,
    /// Per split: the members in order, with the split index of their first record.
    files: Vec<Vec<(Member, i64)>>,
    info: SourceInfo,
}

impl Cifar {
    /// Opens CIFAR-10 (`hundred == false`) or CIFAR-100 at `path` (archive or folder).
    pub fn open(path: &Path, hundred: bool) -> Result<Self> {
        let container = Container::open(path)?;
        let small = |m: &Member| {
            let b = m.basename();
            b.ends_with(".txt") || b == "batches.meta" || b == "meta"
        };
        let (members, meta) = container.scan(&small)?;
        let name = if hundred { "cifar100" } else { "cifar10" };
        let bin_train: Vec<String> =
            if hundred { vec!["train.bin".into()] } else { (1..=5).map(|i| format!("data_batch_{i}.bin")).collect() };
        let bin_test = if hundred { "test.bin" } else { "test_batch.bin" };
        let py_train: Vec<String> =
            if hundred { vec!["train".into()] } else { (1..=5).map(|i| format!("data_batch_{i}")).collect() };
        let py_test = if hundred { "test" } else { "test_batch" };

        let pick = |names: &[String]| names.iter().filter_map(|n| find(&members, n).cloned()).collect::<Vec<_>>();
        let (format, train, test) =
            if bin_train.iter().chain([&bin_test.to_string()]).any(|n| find(&members, n).is_some()) {
                (Format::Binary, pick(&bin_train), pick(&[bin_test.to_string()]))
            } else if py_train.iter().chain([&py_test.to_string()]).any(|n| find(&members, n).is_some()) {
                (Format::Python, pick(&py_train), pick(&[py_test.to_string()]))
            } else {
                return Err(Error::Missing(format!(
                    "{}: no {} data files found (expected {} or {})",
                    path.display(),
                    name,
                    bin_train[0],
                    py_train[0]
                )));
            };

        let text = |base: &str| -> Option<Vec<String>> {
            let m = find(&members, base)?;
            let t = String::from_utf8_lossy(meta.get(&m.name)?).into_owned();
            Some(t.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect())
        };
        let pickled = |base: &str, key: &str| -> Result<Option<Vec<String>>> {
            let Some(m) = find(&members, base) else {
                return Ok(None);
            };
            let Some(bytes) = meta.get(&m.name) else {
                return Ok(None);
            };
            let v = pickle::parse(bytes).map_err(|e| Error::corrupt_file(container.display(&m.name), e.to_string()))?;
            Ok(v.get(key).and_then(|l| l.items()).map(|items| {
                items.iter().filter_map(|x| x.bytes()).map(|b| String::from_utf8_lossy(b).into_owned()).collect()
            }))
        };
        let (classes, coarse) = match (hundred, format) {
            (false, Format::Binary) => (text("batches.meta.txt"), None),
            (false, Format::Python) => (pickled("batches.meta", "label_names")?, None),
            (true, Format::Binary) => (text("fine_label_names.txt"), text("coarse_label_names.txt")),
            (true, Format::Python) => (pickled("meta", "fine_label_names")?, pickled("meta", "coarse_label_names")?),
        };
        let classes = match classes {
            Some(c) => c,
            None if !hundred => CIFAR10_CLASSES.iter().map(|s| s.to_string()).collect(),
            None => (0..100).map(|i| format!("class_{i}")).collect(),
        };
        let n_classes = if hundred { 100 } else { 10 };
        if classes.len() != n_classes {
            return Err(Error::corrupt_file(
                container.display("class names"),
                format!("expected {n_classes} class names, found {}", classes.len()),
            ));
        }

        let rec = record_size(hundred);
        let mut splits = Vec::new();
        let mut files = Vec::new();
        for (split, list) in [("train", train), ("test", test)] {
            if list.is_empty() {
                continue;
            }
            let mut offset = 0i64;
            let mut with_offsets = Vec::new();
            for m in list {
                if format == Format::Binary {
                    if m.size == 0 {
                        return Err(Error::corrupt_file(container.display(&m.name), "empty file: no records"));
                    }
                    if m.size % rec as u64 != 0 {
                        return Err(Error::corrupt_file(
                            container.display(&m.name),
                            format!("size {} is not a multiple of the {rec}-byte record (truncated file?)", m.size),
                        ));
                    }
                    with_offsets.push((m.clone(), offset));
                    offset += (m.size / rec as u64) as i64;
                } else {
                    with_offsets.push((m, -1));
                }
            }
            splits.push(split.to_string());
            files.push(with_offsets);
        }
        let info = SourceInfo {
            name: name.into(),
            splits,
            classes: Some(classes),
            coarse_classes: if hundred {
                coarse.or_else(|| Some((0..20).map(|i| format!("superclass_{i}")).collect()))
            } else {
                None
            },
            attributes: None,
            file_source: false,
            extra: serde_json::json!({ "format": if format == Format::Binary { "binary" } else { "python" } }),
            total: Some(files.iter().flatten().map(|(m, _)| m.size / rec as u64).sum()),
        };
        Ok(Cifar { container, hundred, format, files, info })
    }
}

fn record_size(hundred: bool) -> usize {
    PIXELS + if hundred { 2 } else { 1 }
}

/// Converts CIFAR's planar R, G, B 32×32 planes to interleaved RGB.
pub fn planar_to_rgb(planes: &[u8]) -> Vec<u8> {
    let n = planes.len() / 3;
    let mut out = vec![0u8; planes.len()];
    for i in 0..n {
        out[3 * i] = planes[i];
        out[3 * i + 1] = planes[n + i];
        out[3 * i + 2] = planes[2 * n + i];
    }
    out
}

fn rgb(planes: &[u8]) -> ImageData {
    ImageData::Rgb { width: SIDE, height: SIDE, pixels: planar_to_rgb(planes) }
}

impl Source for Cifar {
    fn info(&self) -> &SourceInfo {
        &self.info
    }

    fn run(&mut self, sink: &mut dyn FnMut(Record) -> Result<()>) -> Result<()> {
        let hundred = self.hundred;
        let n_classes = if hundred { 100 } else { 10 };
        for (split, files) in self.files.iter().enumerate() {
            let names: Vec<String> = files.iter().map(|(m, _)| m.name.clone()).collect();
            let mut file_no = 0;
            let mut next_index = 0i64;
            let container = &self.container;
            let format = self.format;
            container.stream_in_order(&names, &mut |m, r| {
                let file = container.display(&m.name);
                let (_, offset) = &files[file_no];
                file_no += 1;
                match format {
                    Format::Binary => {
                        let rec = record_size(hundred);
                        let mut buf = vec![0u8; rec];
                        let count = m.size / rec as u64;
                        for i in 0..count {
                            r.read_exact(&mut buf).map_err(|e| read_err(&file, i, e))?;
                            let (fine_at, coarse) = if hundred { (1, Some(buf[0] as i64)) } else { (0, None) };
                            let label = buf[fine_at] as i64;
                            if label >= n_classes {
                                return Err(Error::corrupt(
                                    &file,
                                    format!("record {i}"),
                                    format!("label byte {label} out of range 0..={}", n_classes - 1),
                                ));
                            }
                            if let Some(c) = coarse.filter(|&c| c >= 20) {
                                return Err(Error::corrupt(
                                    &file,
                                    format!("record {i}"),
                                    format!("coarse label byte {c} out of range 0..=19"),
                                ));
                            }
                            sink(Record {
                                split,
                                index: offset + i as i64,
                                label: Some(label),
                                coarse_label: coarse,
                                attributes: None,
                                image: rgb(&buf[fine_at + 1..]),
                                origin: Origin { file: file.clone(), record: format!("record {i}") },
                            })?;
                        }
                    }
                    Format::Python => {
                        let mut bytes = Vec::with_capacity(m.size as usize);
                        r.read_to_end(&mut bytes)
                            .map_err(|e| Error::corrupt_file(&file, format!("read failed: {e}")))?;
                        let v = pickle::parse(&bytes).map_err(|e| Error::corrupt_file(&file, e.to_string()))?;
                        drop(bytes);
                        let data =
                            v.get("data").ok_or_else(|| Error::corrupt_file(&file, "pickle has no 'data' entry"))?;
                        let (shape, raw) =
                            data.ndarray().ok_or_else(|| Error::corrupt_file(&file, "'data' is not a numpy array"))?;
                        if shape.len() != 2 || shape[1] != PIXELS as i64 || raw.len() as i64 != shape[0] * PIXELS as i64
                        {
                            return Err(Error::corrupt_file(
                                &file,
                                format!("'data' has shape {shape:?} and {} bytes, expected (N, 3072) uint8", raw.len()),
                            ));
                        }
                        let key = if hundred { "fine_labels" } else { "labels" };
                        let labels = v
                            .get(key)
                            .and_then(|l| l.items())
                            .ok_or_else(|| Error::corrupt_file(&file, format!("pickle has no '{key}' list")))?;
                        let coarse = if hundred { v.get("coarse_labels").and_then(|l| l.items()) } else { None };
                        let n = shape[0] as usize;
                        if n == 0 {
                            return Err(Error::corrupt_file(&file, "'data' holds no images"));
                        }
                        if labels.len() != n || coarse.is_some_and(|c| c.len() != n) {
                            return Err(Error::corrupt_file(&file, format!("{n} images but {} labels", labels.len())));
                        }
                        for i in 0..n {
                            let label = match &labels[i] {
                                pickle::Value::Int(l) if (0..n_classes).contains(l) => *l,
                                other => {
                                    return Err(Error::corrupt(
                                        &file,
                                        format!("record {i}"),
                                        format!("label {other:?} out of range 0..={}", n_classes - 1),
                                    ))
                                }
                            };
                            let coarse_label = match coarse.map(|c| &c[i]) {
                                None => None,
                                Some(pickle::Value::Int(c)) if (0..20).contains(c) => Some(*c),
                                Some(other) => {
                                    return Err(Error::corrupt(
                                        &file,
                                        format!("record {i}"),
                                        format!("coarse label {other:?} out of range 0..=19"),
                                    ))
                                }
                            };
                            sink(Record {
                                split,
                                index: next_index + i as i64,
                                label: Some(label),
                                coarse_label,
                                attributes: None,
                                image: rgb(&raw[i * PIXELS..(i + 1) * PIXELS]),
                                origin: Origin { file: file.clone(), record: format!("record {i}") },
                            })?;
                        }
                        next_index += n as i64;
                    }
                }
                Ok(())
            })?;
        }
        Ok(())
    }
}

fn read_err(file: &str, record: u64, e: std::io::Error) -> Error {
    Error::corrupt(file, format!("record {record}"), format!("read failed: {e}"))
}
