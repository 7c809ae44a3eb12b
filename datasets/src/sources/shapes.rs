//! "Shapes": a labeled image set drawn procedurally, for demos and tests where no dataset is at
//! hand. Ten classes of filled shapes — circle, square, triangle, plus, ring, diamond, star,
//! cross (×), half-disc, two dots — at a random position, scale, small rotation and colour on a
//! random textured background with pixel noise. Class is the shape only; colour, texture,
//! position and size are nuisances, which is what SimSiam's augmentations teach invariance to,
//! so self-supervision on unlabeled shapes helps a classifier trained on few labels.
//!
//! Image `i` of split `s` draws from ChaCha8 seeded with `seed` on stream `s·2³² + i`, so the
//! set is a pure function of `(seed, counts, size)`; shapes are drawn with 4×4 supersampling.

use rand_chacha::rand_core::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::{Error, Result};
use crate::record::{ImageData, Origin, Record, Source, SourceInfo};

/// The class names, in label order.
pub const SHAPE_CLASSES: [&str; 10] =
    ["circle", "square", "triangle", "plus", "ring", "diamond", "star", "cross", "half-disc", "two-dots"];

/// Parameters of a shapes set.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ShapesSpec {
    /// Training images.
    pub train: u64,
    /// Test images.
    pub test: u64,
    /// Side in pixels.
    pub size: u32,
    /// Seed.
    pub seed: u64,
}

impl Default for ShapesSpec {
    fn default() -> Self {
        ShapesSpec { train: 5000, test: 1000, size: 32, seed: 0 }
    }
}

/// Whether shape `class` covers the point `(u, v)` of its own frame (unit radius).
fn inside(class: usize, u: f32, v: f32) -> bool {
    let r2 = u * u + v * v;
    match class {
        0 => r2 < 1.0,
        1 => u.abs().max(v.abs()) < 0.8,
        2 => v > -0.6 && v < 0.9 - 1.732 * u.abs(),
        3 => (u.abs() < 0.3 && v.abs() < 0.95) || (v.abs() < 0.3 && u.abs() < 0.95),
        4 => (0.36..1.0).contains(&r2),
        5 => u.abs() + v.abs() < 1.0,
        6 => {
            let t = v.atan2(u);
            r2.sqrt() < 0.5 + 0.45 * (5.0 * t).cos()
        }
        7 => {
            let (a, b) = ((u + v) * std::f32::consts::FRAC_1_SQRT_2, (u - v) * std::f32::consts::FRAC_1_SQRT_2);
            (a.abs() < 0.28 && b.abs() < 0.95) || (b.abs() < 0.28 && a.abs() < 0.95)
        }
        8 => r2 < 1.0 && v > 0.0,
        _ => (u - 0.5).powi(2) + v * v < 0.2 || (u + 0.5).powi(2) + v * v < 0.2,
    }
}

fn hsv(h: f32, s: f32, v: f32) -> [f32; 3] {
    let h6 = (h.rem_euclid(1.0)) * 6.0;
    let c = v * s;
    let x = c * (1.0 - (h6 % 2.0 - 1.0).abs());
    let (r, g, b) = match h6 as u32 {
        0 => (c, x, 0.0),
        1 => (x, c, 0.0),
        2 => (0.0, c, x),
        3 => (0.0, x, c),
        4 => (x, 0.0, c),
        _ => (c, 0.0, x),
    };
    let m = v - c;
    [(r + m) * 255.0, (g + m) * 255.0, (b + m) * 255.0]
}

/// Draws image `index` of split `split` (0 train, 1 test); returns its class and pixels
/// (`size²·3` interleaved RGB).
pub fn draw_shape(spec: &ShapesSpec, split: u64, index: u64) -> (usize, Vec<u8>) {
    let mut rng = ChaCha8Rng::seed_from_u64(spec.seed ^ 0x5AA9E5);
    rng.set_stream((split << 32) | index);
    let mut unit = || (rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
    let class = (unit() * 10.0) as usize % 10;
    let n = spec.size as usize;
    let scale = 0.28 + 0.14 * unit(); // radius as a fraction of the side
    let cx = 0.5 + (unit() - 0.5) * (1.0 - 2.0 * scale) * 0.9;
    let cy = 0.5 + (unit() - 0.5) * (1.0 - 2.0 * scale) * 0.9;
    let angle = (unit() - 0.5) * 0.6; // ±17°
    let (sin, cos) = angle.sin_cos();
    let fg_v = 0.35 + 0.65 * unit();
    let fg = hsv(unit(), 0.3 + 0.7 * unit(), fg_v);
    let bg_v = if fg_v > 0.65 { 0.1 + 0.35 * unit() } else { 0.55 + 0.45 * unit() };
    let bg = hsv(unit(), 0.6 * unit(), bg_v);
    // Texture: three random plane waves (angles and phases in 0..6.28; the constant is part of
    // the set's definition, so it stays as written).
    #[allow(clippy::approx_constant)]
    let waves: Vec<[f32; 4]> =
        (0..3).map(|_| [unit() * 6.28, unit() * 6.28, (0.5 + 3.0 * unit()) * 6.28, unit() * 6.28]).collect();
    let texture_amp = 8.0 + 22.0 * unit();
    let noise_amp = 4.0 + 12.0 * unit();
    let mut px = vec![0u8; n * n * 3];
    let ss = 4;
    for y in 0..n {
        for x in 0..n {
            let mut cover = 0u32;
            for sy in 0..ss {
                for sx in 0..ss {
                    let fx = (x as f32 + (sx as f32 + 0.5) / ss as f32) / n as f32 - cx;
                    let fy = (y as f32 + (sy as f32 + 0.5) / ss as f32) / n as f32 - cy;
                    let (u, v) = ((cos * fx + sin * fy) / scale, (-sin * fx + cos * fy) / scale);
                    cover += inside(class, u, -v) as u32;
                }
            }
            let a = cover as f32 / (ss * ss) as f32;
            let (fx, fy) = (x as f32 / n as f32, y as f32 / n as f32);
            let tex: f32 = waves.iter().map(|w| (w[2] * (fx * w[0].cos() + fy * w[0].sin()) + w[3]).sin()).sum::<f32>()
                * texture_amp
                / 3.0;
            for c in 0..3 {
                let noise = (unit() - 0.5) * 2.0 * noise_amp;
                let v = a * fg[c] + (1.0 - a) * (bg[c] + tex) + noise;
                px[(y * n + x) * 3 + c] = v.round().clamp(0.0, 255.0) as u8;
            }
        }
    }
    (class, px)
}

/// The shapes source: splits `train` and `test`, ten classes.
pub struct Shapes {
    spec: ShapesSpec,
    info: SourceInfo,
}

impl Shapes {
    /// Validates `spec`.
    pub fn new(spec: ShapesSpec) -> Result<Self> {
        if spec.train == 0 || spec.size < 8 || spec.size > 1024 {
            return Err(Error::Usage("shapes: --count must be > 0 and --size in 8..=1024".into()));
        }
        let info = SourceInfo {
            name: "shapes".into(),
            splits: vec!["train".into(), "test".into()],
            classes: Some(SHAPE_CLASSES.iter().map(|s| s.to_string()).collect()),
            extra: serde_json::to_value(spec).unwrap_or_default(),
            total: Some(spec.train + spec.test),
            ..SourceInfo::default()
        };
        Ok(Shapes { spec, info })
    }
}

impl Source for Shapes {
    fn info(&self) -> &SourceInfo {
        &self.info
    }

    fn run(&mut self, sink: &mut dyn FnMut(Record) -> Result<()>) -> Result<()> {
        use rayon::prelude::*;
        for (split, count) in [(0u64, self.spec.train), (1, self.spec.test)] {
            let chunk = 256u64;
            let mut start = 0;
            while start < count {
                let end = (start + chunk).min(count);
                let images: Vec<(usize, Vec<u8>)> =
                    (start..end).into_par_iter().map(|i| draw_shape(&self.spec, split, i)).collect();
                for (i, (class, pixels)) in (start..end).zip(images) {
                    sink(Record {
                        split: split as usize,
                        index: i as i64,
                        label: Some(class as i64),
                        coarse_label: None,
                        attributes: None,
                        image: ImageData::Rgb { width: self.spec.size, height: self.spec.size, pixels },
                        origin: Origin { file: "shapes".into(), record: format!("image {i}") },
                    })?;
                }
                start = end;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_balanced_and_shapes_differ() {
        let spec = ShapesSpec { size: 32, ..ShapesSpec::default() };
        assert_eq!(draw_shape(&spec, 0, 5), draw_shape(&spec, 0, 5));
        assert_ne!(draw_shape(&spec, 0, 5).1, draw_shape(&spec, 1, 5).1);
        let mut counts = [0; 10];
        for i in 0..1000 {
            counts[draw_shape(&spec, 0, i).0] += 1;
        }
        assert!(counts.iter().all(|&c| (60..140).contains(&c)), "{counts:?}");
        // Every class covers a different set of points of the unit disc.
        let masks: Vec<Vec<bool>> = (0..10)
            .map(|c| {
                (0..400).map(|k| inside(c, (k % 20) as f32 / 10.0 - 0.95, (k / 20) as f32 / 10.0 - 0.95)).collect()
            })
            .collect();
        for a in 0..10 {
            for b in a + 1..10 {
                assert_ne!(masks[a], masks[b], "{} vs {}", SHAPE_CLASSES[a], SHAPE_CLASSES[b]);
            }
        }
    }
}
