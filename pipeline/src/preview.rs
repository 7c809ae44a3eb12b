//! Contact sheets of a split (`siamlab inspect --grid`): evenly spread samples with their class
//! names (or CelebA attributes) under them, or — with a recipe — the views the pipeline feeds
//! the model for each sample, side by side, drawn with the pipeline's own recipe and RNG.

use std::path::Path;

use image::RgbImage;
use siamlab_datasets::inspect::{caption, samples};
use siamlab_datasets::Location;
use siamlab_draw::sheet::{contact_sheet, Cell, Layout};

use crate::augment::{sample_rng, Scratch};
use crate::error::{Error, Result};
use crate::pipeline::named_recipe;

/// What a sheet shows and how.
#[derive(Debug, Clone, PartialEq)]
pub struct SheetOptions {
    /// Samples.
    pub n: usize,
    /// Cells per row (default: about square).
    pub cols: Option<usize>,
    /// Whole enlargement factor (default: the least that makes images at least 96 px).
    pub scale: Option<u32>,
    /// Show this recipe's views of each sample instead of the stored image.
    pub augment: Option<String>,
    /// Views per sample with `augment`.
    pub views: u32,
    /// Seed and epoch of the views (the pipeline's defaults: 0, 0).
    pub seed: u64,
    /// Epoch of the views.
    pub epoch: u64,
}

impl Default for SheetOptions {
    fn default() -> Self {
        SheetOptions { n: 64, cols: None, scale: None, augment: None, views: 2, seed: 0, epoch: 0 }
    }
}

/// Draws the contact sheet of `split` of the shard folder `at` (a path or a [`Location`]).
pub fn sheet(at: impl Into<Location>, split: &str, o: &SheetOptions) -> Result<RgbImage> {
    let at: Location = at.into();
    let (manifest, samples) = samples(&at, split, o.n)?;
    let rows = manifest.split(split)?.rows;
    let info = manifest.split(split)?.clone();
    let recipe = match &o.augment {
        Some(name) => Some(named_recipe(&manifest, &info, name, None, None)?),
        None => None,
    };
    let mut scratch = Scratch::new();
    let mut cells = Vec::with_capacity(samples.len());
    for s in &samples {
        let images = match &recipe {
            None => vec![rgb_image(s.width, s.height, s.rgb.clone())?],
            Some(r) => {
                let mut out = vec![0f32; r.output_len()];
                let n = r.size();
                let (mean, std) = (r.normalize().mean(), r.normalize().std());
                let mut views = Vec::new();
                for v in 0..o.views.max(1) {
                    let mut rng = sample_rng(o.seed, o.epoch, s.row, v);
                    r.apply(&s.rgb, s.width, s.height, &mut rng, &mut out, &mut scratch)?;
                    // Back to pixels: x · std + mean, in [0, 1], planar → interleaved.
                    let plane = (n * n) as usize;
                    let px: Vec<u8> = (0..plane * 3)
                        .map(|i| {
                            let (p, c) = (i / 3, i % 3);
                            let x = out[c * plane + p] * std[c] + mean[c];
                            (x * 255.0).round().clamp(0.0, 255.0) as u8
                        })
                        .collect();
                    views.push(rgb_image(n, n, px)?);
                }
                views
            }
        };
        cells.push(Cell { images, caption: caption(&manifest, s) });
    }
    let attrs = manifest.attributes.is_some();
    let title = format!("{} · {split} · {} of {rows} samples", dataset_name(&at, &manifest.source), samples.len());
    let mut sub = match &o.augment {
        Some(name) => format!(
            "{} views of each sample from the {name} recipe (seed {}, epoch {})",
            o.views.max(1),
            o.seed,
            o.epoch
        ),
        None => "stored images".to_string(),
    };
    let (w, h) =
        (samples.iter().map(|s| s.width).max().unwrap_or(0), samples.iter().map(|s| s.height).max().unwrap_or(0));
    let side = match &recipe {
        Some(r) => r.size(),
        None => w.max(h),
    };
    let shown = siamlab_draw::sheet::image_side(side, o.scale);
    sub += &format!(
        ", {side} px shown at {shown} px{}",
        if attrs { "; captions list the attributes present" } else { "" }
    );
    let layout = Layout { cols: o.cols, scale: o.scale, caption_lines: if attrs { 4 } else { 2 } };
    Ok(contact_sheet(&title, &sub, &cells, &layout))
}

/// Writes [`sheet`] as a PNG to `out` atomically.
pub fn write_sheet(at: impl Into<Location>, split: &str, o: &SheetOptions, out: &Path) -> Result<()> {
    let img = sheet(at, split, o)?;
    let png = siamlab_draw::encode_png(&img).map_err(|e| Error::Config(format!("{}: {e}", out.display())))?;
    Ok(siamlab_datasets::write_atomic(out, &png)?)
}

fn rgb_image(w: u32, h: u32, px: Vec<u8>) -> Result<RgbImage> {
    RgbImage::from_raw(w, h, px).ok_or_else(|| Error::Config(format!("a decoded image is not {w}×{h} RGB")))
}

/// `cifar10 (data/c10)`: the source and the folder's name.
fn dataset_name(at: &Location, source: &str) -> String {
    let shown = at.to_string();
    match shown.trim_end_matches('/').rsplit('/').next() {
        Some(n) if !n.is_empty() && n != source => format!("{source} ({n})"),
        _ => source.to_string(),
    }
}
