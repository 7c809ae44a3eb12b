//! The paper's "random images": i.i.d. Gaussian pixels, fully defined by
//! (seed, count, size, mean, std) and byte-identical on every machine.
//!
//! Image `i` draws from ChaCha8 seeded with `seed` on stream `i` (a counter-based layout, so
//! images can be made in any order or in parallel); normals come from Box–Muller computed with
//! the pure-Rust `libm` (not the platform's maths library), rounded and clamped to 0..=255.

use rand_chacha::rand_core::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::{Error, Result};
use crate::record::{ImageData, Origin, Record, Source, SourceInfo};

/// Parameters of a random-image set.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RandomSpec {
    /// Number of images.
    pub count: u64,
    /// Side in pixels (images are square).
    pub size: u32,
    /// Seed.
    pub seed: u64,
    /// Mean of the Gaussian, in 0..255 units.
    pub mean: f64,
    /// Standard deviation, in 0..255 units.
    pub std: f64,
}

impl Default for RandomSpec {
    fn default() -> Self {
        RandomSpec { count: 10_000, size: 32, seed: 0, mean: 127.5, std: 64.0 }
    }
}

/// Draws image `index` of the set into `out` (`size*size*3` interleaved RGB bytes).
pub fn draw_image(spec: &RandomSpec, index: u64, out: &mut [u8]) {
    let mut rng = ChaCha8Rng::seed_from_u64(spec.seed);
    rng.set_stream(index);
    let unit = |rng: &mut ChaCha8Rng| ((rng.next_u64() >> 11) as f64 + 1.0) * (1.0 / (1u64 << 53) as f64);
    let to_byte = |z: f64| libm::round(spec.mean + spec.std * z).clamp(0.0, 255.0) as u8;
    for pair in out.chunks_mut(2) {
        let (u1, u2) = (unit(&mut rng), unit(&mut rng));
        let r = libm::sqrt(-2.0 * libm::log(u1));
        let theta = 2.0 * std::f64::consts::PI * u2;
        pair[0] = to_byte(r * libm::cos(theta));
        if let Some(p) = pair.get_mut(1) {
            *p = to_byte(r * libm::sin(theta));
        }
    }
}

/// A random-image source (one split, `train`, unlabeled).
pub struct Random {
    spec: RandomSpec,
    info: SourceInfo,
}

impl Random {
    /// Validates `spec`.
    pub fn new(spec: RandomSpec) -> Result<Self> {
        if spec.count == 0 || spec.size == 0 || spec.size > 4096 {
            return Err(Error::Usage("random: --count must be > 0 and --size in 1..=4096".into()));
        }
        if !(spec.std >= 0.0 && spec.std.is_finite() && spec.mean.is_finite()) {
            return Err(Error::Usage("random: --mean must be finite and --std >= 0".into()));
        }
        let info = SourceInfo {
            name: "random".into(),
            splits: vec!["train".into()],
            extra: serde_json::to_value(spec).unwrap_or_default(),
            total: Some(spec.count),
            ..SourceInfo::default()
        };
        Ok(Random { spec, info })
    }
}

impl Source for Random {
    fn info(&self) -> &SourceInfo {
        &self.info
    }

    fn run(&mut self, sink: &mut dyn FnMut(Record) -> Result<()>) -> Result<()> {
        use rayon::prelude::*;
        let n = (self.spec.size as usize).pow(2) * 3;
        let chunk = 256u64;
        let mut start = 0;
        while start < self.spec.count {
            let end = (start + chunk).min(self.spec.count);
            let images: Vec<Vec<u8>> = (start..end)
                .into_par_iter()
                .map(|i| {
                    let mut px = vec![0u8; n];
                    draw_image(&self.spec, i, &mut px);
                    px
                })
                .collect();
            for (i, pixels) in (start..end).zip(images) {
                sink(Record {
                    split: 0,
                    index: i as i64,
                    label: None,
                    coarse_label: None,
                    attributes: None,
                    image: ImageData::Rgb { width: self.spec.size, height: self.spec.size, pixels },
                    origin: Origin { file: "random".into(), record: format!("image {i}") },
                })?;
            }
            start = end;
        }
        Ok(())
    }
}
