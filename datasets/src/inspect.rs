//! `inspect`: counts per split and class, image size summary, and a PNG contact sheet.

use std::path::Path;

use font8x8::UnicodeFonts;

use crate::decode::decode_rgb;
use crate::encode::encode_png;
use crate::error::{write_atomic, Error, Result};
use crate::shard::{Manifest, ShardReader};

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
pub fn summarize(dir: &Path, split: Option<&str>) -> Result<(Manifest, Vec<SplitSummary>)> {
    let manifest = Manifest::load(dir)?;
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
            let path = dir.join(&shard.path);
            let reader = ShardReader::open(&path)?;
            for g in 0..reader.row_groups() {
                let batch = reader.read_row_group(g, Some(&["label", "attributes"]))?;
                for i in 0..batch.len() {
                    match batch.label(i) {
                        Some(l) if (l as usize) < n_classes => s.per_class[l as usize] += 1,
                        Some(l) => {
                            return Err(Error::corrupt(
                                path.display().to_string(),
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

/// Writes a PNG grid of `n` images of `split`, spread evenly over the split, each captioned
/// with its class name (or index for unlabeled data).
pub fn contact_sheet(dir: &Path, split: &str, n: usize, out: &Path) -> Result<()> {
    let manifest = Manifest::load(dir)?;
    let info = manifest.split(split)?;
    if info.rows == 0 || n == 0 {
        return Err(Error::Usage(format!("split {split} has no rows to draw")));
    }
    let n = n.min(info.rows as usize);
    let wanted: Vec<u64> = (0..n as u64).map(|k| k * info.rows / n as u64).collect();
    let max_side = info.size_range.map_or(64, |r| r[2].max(r[3]));
    let tile = max_side.clamp(32, 96) as usize;
    let caption = 10;
    let cols = (n as f64).sqrt().ceil() as usize;
    let rows = n.div_ceil(cols);
    let (cw, ch) = (tile + 2, tile + caption + 2);
    let (w, h) = (cols * cw, rows * ch);
    let mut canvas = vec![255u8; w * h * 3];

    let mut k = 0;
    let mut base = 0u64;
    for shard in &info.shards {
        let path = dir.join(&shard.path);
        let reader = ShardReader::open(&path)?;
        for g in 0..reader.row_groups() {
            let len = reader.row_group_rows(g);
            if k < n && wanted[k] < base + len {
                let batch = reader.read_row_group(g, None)?;
                while k < n && wanted[k] < base + len {
                    let i = (wanted[k] - base) as usize;
                    let (iw, ih, px) = decode_rgb(batch.image_bytes(i)).map_err(|e| {
                        Error::corrupt(
                            path.display().to_string(),
                            format!("row {i} of row group {g}"),
                            format!("image does not decode: {e}"),
                        )
                    })?;
                    let text = match (batch.label(i), &manifest.classes) {
                        (Some(l), Some(c)) => c.get(l as usize).cloned().unwrap_or_else(|| l.to_string()),
                        _ => format!("#{}", batch.index(i).unwrap_or(0)),
                    };
                    let (x0, y0) = ((k % cols) * cw + 1, (k / cols) * ch + 1);
                    blit_fit(&mut canvas, w, x0, y0, tile, iw as usize, ih as usize, &px);
                    draw_text(&mut canvas, w, x0, y0 + tile + 1, tile, &text);
                    k += 1;
                }
            }
            base += len;
        }
    }
    write_atomic(out, &encode_png(w as u32, h as u32, &canvas))
}

/// Nearest-neighbour scale of an image into a `tile`-sized square, aspect kept, centred.
#[allow(clippy::too_many_arguments)]
fn blit_fit(canvas: &mut [u8], cw: usize, x0: usize, y0: usize, tile: usize, iw: usize, ih: usize, px: &[u8]) {
    let scale = tile as f64 / iw.max(ih) as f64;
    let (tw, th) = (((iw as f64 * scale) as usize).max(1), ((ih as f64 * scale) as usize).max(1));
    let (ox, oy) = (x0 + (tile - tw) / 2, y0 + (tile - th) / 2);
    for y in 0..th {
        let sy = (y * ih / th).min(ih - 1);
        for x in 0..tw {
            let sx = (x * iw / tw).min(iw - 1);
            let d = ((oy + y) * cw + ox + x) * 3;
            let s = (sy * iw + sx) * 3;
            canvas[d..d + 3].copy_from_slice(&px[s..s + 3]);
        }
    }
}

/// Draws `text` in the 8×8 bitmap font, clipped to `width` pixels.
fn draw_text(canvas: &mut [u8], cw: usize, x0: usize, y0: usize, width: usize, text: &str) {
    for (ci, ch) in text.chars().take(width / 8).enumerate() {
        let glyph = font8x8::BASIC_FONTS.get(ch).or_else(|| font8x8::BASIC_FONTS.get('?')).unwrap_or([0; 8]);
        for (gy, bits) in glyph.iter().enumerate() {
            for gx in 0..8 {
                if bits & (1 << gx) != 0 {
                    let d = ((y0 + gy) * cw + x0 + ci * 8 + gx) * 3;
                    canvas[d..d + 3].fill(0);
                }
            }
        }
    }
}
