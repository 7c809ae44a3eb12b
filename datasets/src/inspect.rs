//! `inspect`: counts per split and class, image size summary, and evenly spread decoded samples
//! with their captions (what a contact sheet shows; drawing it is for the pipeline's preview).

use crate::decode::decode_rgb;
use crate::error::{Error, Result};
use crate::shard::{Manifest, ShardReader};
use crate::store::Location;

/// Counts of one split.
#[derive(Debug, Clone, PartialEq)]
pub struct SplitSummary {
    /// Split name.
    pub name: String,
    /// Rows.
    pub rows: u64,
    /// Rows per class id (empty when the dataset has no classes).
    pub per_class: Vec<u64>,
    /// Rows without a label.
    pub unlabeled: u64,
    /// Fraction of rows with each attribute set (CelebA).
    pub attribute_rates: Option<Vec<f64>>,
    /// `[min_w, min_h, max_w, max_h]`.
    pub size_range: Option<[u32; 4]>,
}

/// Reads the label / attribute columns of `split` (or every split) and counts.
pub fn summarize(at: impl Into<Location>, split: Option<&str>) -> Result<(Manifest, Vec<SplitSummary>)> {
    let at: Location = at.into();
    let manifest = at.manifest()?;
    let names: Vec<String> = match split {
        Some(s) => {
            manifest.split(s)?;
            vec![s.to_string()]
        }
        None => manifest.split_order.clone(),
    };
    let n_classes = manifest.classes.as_ref().map_or(0, |c| c.len());
    let mut out = Vec::new();
    for name in names {
        let info = manifest.split(&name)?;
        let mut s = SplitSummary {
            name: name.clone(),
            rows: info.rows,
            per_class: vec![0; n_classes],
            unlabeled: 0,
            attribute_rates: None,
            size_range: info.size_range,
        };
        let mut attr_sums: Option<Vec<u64>> = None;
        for shard in &info.shards {
            let file = at.shard_file(shard)?;
            let path = at.shard_name(shard);
            let reader = ShardReader::open(&file.path)?;
            for g in 0..reader.row_groups() {
                let batch = reader.read_row_group(g, Some(&["label", "attributes"]))?;
                for i in 0..batch.len() {
                    match batch.label(i) {
                        Some(l) if (l as usize) < n_classes => s.per_class[l as usize] += 1,
                        Some(l) => {
                            return Err(Error::corrupt(
                                path.clone(),
                                format!("row {i} of row group {g}"),
                                format!("label {l} has no class name"),
                            ))
                        }
                        None => s.unlabeled += 1,
                    }
                    if let Some(a) = batch.attributes(i) {
                        let sums = attr_sums.get_or_insert_with(|| vec![0; a.len()]);
                        for (t, v) in sums.iter_mut().zip(a) {
                            *t += v as u64;
                        }
                    }
                }
            }
        }
        s.attribute_rates = attr_sums.map(|v| v.iter().map(|&x| x as f64 / info.rows.max(1) as f64).collect());
        out.push(s);
    }
    Ok((manifest, out))
}

/// One decoded sample of a split, for a contact sheet.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Row of the split (0-based, in shard order).
    pub row: u64,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// RGB8, row by row.
    pub rgb: Vec<u8>,
    /// Class id, if labeled.
    pub label: Option<i64>,
    /// CelebA attributes (`1` set, `-1` / `0` not), if any.
    pub attributes: Option<Vec<i8>>,
    /// The source's own index of the image.
    pub index: Option<i64>,
}

/// Reads and decodes `n` samples of `split` spread evenly over it (rows `k · rows / n`).
pub fn samples(at: impl Into<Location>, split: &str, n: usize) -> Result<(Manifest, Vec<Sample>)> {
    let at: Location = at.into();
    let manifest = at.manifest()?;
    let info = manifest.split(split)?.clone();
    if info.rows == 0 || n == 0 {
        return Err(Error::Usage(format!("split {split} of {at} has no rows to draw")));
    }
    let n = n.min(info.rows as usize);
    let wanted: Vec<u64> = (0..n as u64).map(|k| k * info.rows / n as u64).collect();
    let mut out = Vec::with_capacity(n);
    let mut base = 0u64;
    for shard in &info.shards {
        let file = at.shard_file(shard)?;
        let path = at.shard_name(shard);
        let reader = ShardReader::open(&file.path)?;
        for g in 0..reader.row_groups() {
            let len = reader.row_group_rows(g);
            let k = out.len();
            if k < n && wanted[k] < base + len {
                let batch = reader.read_row_group(g, None)?;
                while out.len() < n && wanted[out.len()] < base + len {
                    let row = wanted[out.len()];
                    let i = (row - base) as usize;
                    let (width, height, rgb) = decode_rgb(batch.image_bytes(i)).map_err(|e| {
                        Error::corrupt(
                            path.clone(),
                            format!("row {i} of row group {g}"),
                            format!("image does not decode: {e}"),
                        )
                    })?;
                    out.push(Sample {
                        row,
                        width,
                        height,
                        rgb,
                        label: batch.label(i),
                        attributes: batch.attributes(i),
                        index: batch.index(i),
                    });
                }
            }
            base += len;
        }
    }
    Ok((manifest, out))
}

/// What to write under a sample: its full class name; for CelebA the attributes it has
/// (`Smiling, Young, …`, names with spaces for `_`, or `no attributes`); `#INDEX` when unlabeled.
pub fn caption(manifest: &Manifest, s: &Sample) -> String {
    if let (Some(a), Some(names)) = (&s.attributes, &manifest.attributes) {
        let set: Vec<String> = names.iter().zip(a).filter(|(_, &v)| v > 0).map(|(n, _)| n.replace('_', " ")).collect();
        return if set.is_empty() { "no attributes".into() } else { set.join(", ") };
    }
    match (s.label, &manifest.classes) {
        (Some(l), Some(c)) => c.get(l as usize).cloned().unwrap_or_else(|| format!("class {l}")),
        (Some(l), None) => format!("class {l}"),
        _ => format!("#{}", s.index.unwrap_or(s.row as i64)),
    }
}
