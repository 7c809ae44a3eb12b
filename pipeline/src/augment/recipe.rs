//! Recipes: named chains of ops, planned once for an output size and applied per view into a
//! caller's `[3, H, W]` f32 buffer.
//!
//! A view is made in two steps: [`Recipe::sample`] draws every random choice into a
//! [`ViewParams`] from the per-sample RNG, [`Recipe::apply_params`] runs the ops with them.
//! [`Recipe::apply`] does both. The ops run in the order
//! crop/resize → flip → color jitter → grayscale → blur → solarize → normalize; torchvision's
//! SimSiam order puts the flip last, but the flip commutes with every op after it (the blur's
//! kernel and reflect padding are symmetric), so the result is identical and the flip is
//! fused into the crop's copy.

use fast_image_resize::Resizer;
use rand_chacha::rand_core::Rng;

use super::blur::{gaussian_blur, BlurScratch, GaussianBlur};
use super::color::{grayscale, sample_grayscale, solarize, ColorJitter, JitterParams};
use super::crop::{
    center_crop_box, crop_to_planes, resize, resized_crop, sample_flip, shorter_side_size, CropBox, PaddedCrop,
    RandomCrop, RandomResizedCrop,
};
use super::error::{check_len, invalid, Result};
use super::normalize::Normalize;
use super::rng::bernoulli;

/// The recipes [`Recipe::by_name`] knows.
pub const RECIPE_NAMES: [&str; 3] = ["simsiam", "finetune", "eval"];

/// The SimCLR / SimSiam blur kernel for an image side: 10% of it, made odd
/// (`int(0.1 * size)` → `2 * (k / 2) + 1`; 9 at 96 px, 23 at 224 px).
pub fn blur_kernel_for(size: u32) -> u32 {
    (size / 10) / 2 * 2 + 1
}

/// The SimSiam pretraining augmentation (the paper's, after MoCo v2).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SimSiamConfig {
    /// Output side in pixels.
    pub size: u32,
    /// RandomResizedCrop parameters (paper: scale 0.2–1, ratio 3/4–4/3).
    pub crop: RandomResizedCrop,
    /// ColorJitter with its apply probability (paper: 0.4/0.4/0.4/0.1, p 0.8).
    pub jitter: ColorJitter,
    /// RandomGrayscale probability (paper: 0.2).
    pub grayscale_p: f64,
    /// Gaussian blur, if any (paper: σ 0.1–2, p 0.5, only for images above 32 px).
    pub blur: Option<GaussianBlur>,
    /// Solarize probability with threshold 128 (not in SimSiam; BYOL uses it).
    pub solarize_p: f64,
    /// RandomHorizontalFlip probability (paper: 0.5).
    pub flip_p: f64,
}

impl SimSiamConfig {
    /// The paper's recipe at `size` px; blur (kernel [`blur_kernel_for`]) only above 32 px.
    pub fn paper(size: u32) -> Self {
        let blur =
            (size > 32).then(|| GaussianBlur::new(blur_kernel_for(size), (0.1, 2.0), 0.5).expect("valid constants"));
        SimSiamConfig {
            size,
            crop: RandomResizedCrop::new((0.2, 1.0), (3.0 / 4.0, 4.0 / 3.0)).expect("valid constants"),
            jitter: ColorJitter::simsiam(),
            grayscale_p: 0.2,
            blur,
            solarize_p: 0.0,
            flip_p: 0.5,
        }
    }
}

/// How the fine-tuning recipe crops.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FinetuneCrop {
    /// RandomResizedCrop (torchvision's default scale 0.08–1 for ImageNet-style training).
    ResizedCrop(RandomResizedCrop),
    /// RandomCrop of the output size from the image zero-padded by this many pixels (the CIFAR
    /// recipe: 4). The input must be at least `size - 2 * padding` on each side.
    Padded(u32),
}

/// Supervised fine-tuning / linear-probe training augmentation: a crop, a flip, Normalize.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FinetuneConfig {
    /// Output side in pixels.
    pub size: u32,
    /// The crop.
    pub crop: FinetuneCrop,
    /// RandomHorizontalFlip probability.
    pub flip_p: f64,
}

impl FinetuneConfig {
    /// RandomCrop with padding 4 up to 32 px (CIFAR), RandomResizedCrop above; flip p 0.5.
    pub fn standard(size: u32) -> Self {
        let crop =
            if size <= 32 { FinetuneCrop::Padded(4) } else { FinetuneCrop::ResizedCrop(RandomResizedCrop::default()) };
        FinetuneConfig { size, crop, flip_p: 0.5 }
    }
}

/// Evaluation: Resize (shorter side) + CenterCrop, Normalize; deterministic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EvalConfig {
    /// The shorter side after resizing.
    pub resize: u32,
    /// The side of the center crop (the output size); at most `resize`.
    pub crop: u32,
}

impl EvalConfig {
    /// Resize the shorter side to `size`, then center-crop `size` × `size`.
    pub fn new(size: u32) -> Self {
        EvalConfig { resize: size, crop: size }
    }

    /// ImageNet style: resize to `round(size / crop_pct)` (e.g. 0.875), center-crop `size`.
    pub fn with_crop_pct(size: u32, crop_pct: f64) -> Result<Self> {
        if !(crop_pct.is_finite() && crop_pct > 0.0 && crop_pct <= 1.0) {
            return Err(invalid("crop_pct", format!("must be in (0, 1], got {crop_pct}")));
        }
        Ok(EvalConfig { resize: (f64::from(size) / crop_pct).floor() as u32, crop: size })
    }
}

/// One of the recipes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RecipeConfig {
    /// SimSiam pretraining views.
    SimSiam(SimSiamConfig),
    /// Supervised training views.
    Finetune(FinetuneConfig),
    /// Deterministic evaluation views.
    Eval(EvalConfig),
}

/// The geometric part of a view's parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Geometry {
    /// Crop this box, resize it to the output size.
    ResizedCrop(CropBox),
    /// Copy the output-size window at this (possibly negative) origin, zero outside.
    PaddedCrop(PaddedCrop),
    /// Resize the whole image to `(width, height)`, then crop this box out of it.
    ResizeCenterCrop {
        /// Size after resizing, `(width, height)`.
        resized: (u32, u32),
        /// The crop, in the resized image.
        crop: CropBox,
    },
}

/// Every random choice for one view, drawn by [`Recipe::sample`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ViewParams {
    /// Crop / resize.
    pub geometry: Geometry,
    /// Mirror left-right.
    pub flip: bool,
    /// ColorJitter's order and factors, if applied.
    pub jitter: Option<JitterParams>,
    /// Convert to grayscale.
    pub grayscale: bool,
    /// Blur sigma, if blurred (with the recipe's kernel size).
    pub blur_sigma: Option<f64>,
    /// Solarize with threshold 128.
    pub solarize: bool,
}

/// Reusable per-worker buffers for [`Recipe::apply`]: the resizer's state and intermediate
/// images. They grow to the largest size seen and are then reused, so steady-state calls do
/// not allocate (fast_image_resize's coefficient tables excepted).
#[derive(Default)]
pub struct Scratch {
    resizer: Resizer,
    rgb: Vec<u8>,
    planes: Vec<u8>,
    blur: BlurScratch,
}

impl Scratch {
    /// Empty buffers; they are sized on first use.
    pub fn new() -> Self {
        Self::default()
    }
}

impl std::fmt::Debug for Scratch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scratch")
            .field("rgb", &self.rgb.len())
            .field("planes", &self.planes.len())
            .finish_non_exhaustive()
    }
}

/// A recipe planned for a fixed output size: samples view parameters and writes normalized
/// `[3, size, size]` f32 views into caller-owned buffers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Recipe {
    config: RecipeConfig,
    normalize: Normalize,
    size: u32,
}

impl Recipe {
    /// Validates `config` and fixes the output shape.
    pub fn new(config: RecipeConfig, normalize: Normalize) -> Result<Self> {
        let probability = |name, p: f64| {
            if (0.0..=1.0).contains(&p) {
                Ok(())
            } else {
                Err(invalid(name, format!("probability must be in [0, 1], got {p}")))
            }
        };
        let size = match &config {
            RecipeConfig::SimSiam(c) => {
                probability("grayscale_p", c.grayscale_p)?;
                probability("solarize_p", c.solarize_p)?;
                probability("flip_p", c.flip_p)?;
                if let Some(b) = &c.blur {
                    if b.kernel_size() / 2 >= c.size {
                        return Err(invalid(
                            "kernel_size",
                            format!("{} is too large for {} px views", b.kernel_size(), c.size),
                        ));
                    }
                }
                c.size
            }
            RecipeConfig::Finetune(c) => {
                probability("flip_p", c.flip_p)?;
                c.size
            }
            RecipeConfig::Eval(c) => {
                if c.crop > c.resize {
                    return Err(invalid(
                        "crop",
                        format!("center crop {} exceeds the resized side {}", c.crop, c.resize),
                    ));
                }
                c.crop
            }
        };
        if size == 0 || size > 1 << 14 {
            return Err(invalid("size", format!("must be in 1..=16384, got {size}")));
        }
        Ok(Recipe { config, normalize, size })
    }

    /// The paper's SimSiam recipe ([`SimSiamConfig::paper`]).
    pub fn simsiam(size: u32, normalize: Normalize) -> Result<Self> {
        Self::new(RecipeConfig::SimSiam(SimSiamConfig::paper(size)), normalize)
    }

    /// The standard fine-tuning recipe ([`FinetuneConfig::standard`]).
    pub fn finetune(size: u32, normalize: Normalize) -> Result<Self> {
        Self::new(RecipeConfig::Finetune(FinetuneConfig::standard(size)), normalize)
    }

    /// The evaluation recipe ([`EvalConfig::new`]).
    pub fn eval(size: u32, normalize: Normalize) -> Result<Self> {
        Self::new(RecipeConfig::Eval(EvalConfig::new(size)), normalize)
    }

    /// A recipe by name: one of [`RECIPE_NAMES`].
    pub fn by_name(name: &str, size: u32, normalize: Normalize) -> Result<Self> {
        match name {
            "simsiam" => Self::simsiam(size, normalize),
            "finetune" => Self::finetune(size, normalize),
            "eval" => Self::eval(size, normalize),
            other => Err(invalid("recipe", format!("unknown recipe {other:?} (simsiam, finetune, eval)"))),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &RecipeConfig {
        &self.config
    }

    /// The normalization.
    pub fn normalize(&self) -> &Normalize {
        &self.normalize
    }

    /// The output side in pixels.
    pub fn size(&self) -> u32 {
        self.size
    }

    /// The output shape `[3, size, size]`.
    pub fn output_shape(&self) -> [usize; 3] {
        [3, self.size as usize, self.size as usize]
    }

    /// The number of f32 values of one output view.
    pub fn output_len(&self) -> usize {
        3 * self.size as usize * self.size as usize
    }

    /// Draws every random choice for one view of a `width` × `height` image, in torchvision's
    /// order (crop, jitter, grayscale, blur, solarize, flip).
    pub fn sample<R: Rng + ?Sized>(&self, width: u32, height: u32, rng: &mut R) -> Result<ViewParams> {
        let mut params = ViewParams {
            geometry: Geometry::ResizedCrop(CropBox::full(width, height)),
            flip: false,
            jitter: None,
            grayscale: false,
            blur_sigma: None,
            solarize: false,
        };
        match &self.config {
            RecipeConfig::SimSiam(c) => {
                params.geometry = Geometry::ResizedCrop(c.crop.get_params(width, height, rng)?);
                params.jitter = c.jitter.sample(rng);
                params.grayscale = sample_grayscale(c.grayscale_p, rng);
                params.blur_sigma = c.blur.as_ref().and_then(|b| b.sample(rng));
                params.solarize = c.solarize_p > 0.0 && bernoulli(rng, c.solarize_p);
                params.flip = sample_flip(c.flip_p, rng);
            }
            RecipeConfig::Finetune(c) => {
                params.geometry = match &c.crop {
                    FinetuneCrop::ResizedCrop(rrc) => Geometry::ResizedCrop(rrc.get_params(width, height, rng)?),
                    FinetuneCrop::Padded(pad) => {
                        Geometry::PaddedCrop(RandomCrop::new(c.size, c.size, *pad)?.get_params(width, height, rng)?)
                    }
                };
                params.flip = sample_flip(c.flip_p, rng);
            }
            RecipeConfig::Eval(c) => {
                let resized = shorter_side_size(width, height, c.resize)?;
                let crop = center_crop_box(resized.0, resized.1, c.crop, c.crop)?;
                params.geometry = Geometry::ResizeCenterCrop { resized, crop };
            }
        }
        Ok(params)
    }

    /// Makes one view of the RGB8 (HWC) image `src` (`width` × `height`) with `params` and
    /// writes it, normalized, into `out` (`[3, size, size]` f32, [`Recipe::output_len`]).
    pub fn apply_params(
        &self,
        src: &[u8],
        width: u32,
        height: u32,
        params: &ViewParams,
        out: &mut [f32],
        scratch: &mut Scratch,
    ) -> Result<()> {
        check_len("source RGB8 image", src.len(), width, height, 3)?;
        let s = self.size;
        check_len("output CHW f32", out.len(), s, s, 3)?;
        let n = s as usize * s as usize;
        let Scratch { resizer, rgb, planes, blur } = scratch;
        planes.resize(3 * n, 0);
        match params.geometry {
            Geometry::ResizedCrop(crop) => {
                rgb.resize(3 * n, 0);
                resized_crop(resizer, src, width, height, crop, rgb, s, s)?;
                crop_to_planes(rgb, s, s, 0, 0, params.flip, planes, s, s)?;
            }
            Geometry::PaddedCrop(p) => {
                crop_to_planes(src, width, height, p.top, p.left, params.flip, planes, s, s)?;
            }
            Geometry::ResizeCenterCrop { resized, crop } => {
                let (rw, rh) = resized;
                let (img, iw, ih): (&[u8], u32, u32) = if (rw, rh) == (width, height) {
                    (src, width, height)
                } else {
                    let len = 3 * u64::from(rw) * u64::from(rh);
                    if len > 1 << 30 {
                        return Err(super::Error::ImageSize {
                            width,
                            height,
                            reason: format!("resizing it to {rw}x{rh} would need {len} bytes"),
                        });
                    }
                    rgb.resize(3 * rw as usize * rh as usize, 0);
                    resize(resizer, src, width, height, rgb, rw, rh)?;
                    (rgb, rw, rh)
                };
                crop.check_inside(iw, ih)?;
                if (crop.width, crop.height) != (s, s) {
                    return Err(invalid("crop", format!("{crop:?} does not match the output size {s}")));
                }
                let (top, left) = (i64::from(crop.top), i64::from(crop.left));
                crop_to_planes(img, iw, ih, top, left, params.flip, planes, s, s)?;
            }
        }
        if let Some(j) = &params.jitter {
            j.apply(planes)?;
        }
        if params.grayscale {
            grayscale(planes)?;
        }
        if let Some(sigma) = params.blur_sigma {
            let k = match &self.config {
                RecipeConfig::SimSiam(SimSiamConfig { blur: Some(b), .. }) => b.kernel_size(),
                _ => blur_kernel_for(s),
            };
            gaussian_blur(planes, s, s, k, sigma, blur)?;
        }
        if params.solarize {
            solarize(planes, 128.0)?;
        }
        self.normalize.apply(planes, s, s, out)
    }

    /// Samples parameters with `rng` ([`Recipe::sample`]) and applies them
    /// ([`Recipe::apply_params`]); returns the parameters used.
    ///
    /// ```
    /// use siamlab_pipeline::augment::{sample_rng, Normalize, Recipe, Scratch};
    /// let recipe = Recipe::simsiam(32, Normalize::new([0.5; 3], [0.25; 3])?)?;
    /// let image = vec![128u8; 40 * 30 * 3]; // RGB8, HWC
    /// let mut out = vec![0f32; recipe.output_len()];
    /// let mut scratch = Scratch::new();
    /// let mut rng = sample_rng(0, 0, 17, 1); // seed, epoch, sample index, view
    /// recipe.apply(&image, 40, 30, &mut rng, &mut out, &mut scratch)?;
    /// assert_eq!(recipe.output_shape(), [3, 32, 32]);
    /// # Ok::<(), siamlab_pipeline::augment::Error>(())
    /// ```
    pub fn apply<R: Rng + ?Sized>(
        &self,
        src: &[u8],
        width: u32,
        height: u32,
        rng: &mut R,
        out: &mut [f32],
        scratch: &mut Scratch,
    ) -> Result<ViewParams> {
        let params = self.sample(width, height, rng)?;
        self.apply_params(src, width, height, &params, out, scratch)?;
        Ok(params)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::augment::rng::sample_rng;

    fn test_image(w: u32, h: u32) -> Vec<u8> {
        let mut v = Vec::with_capacity((w * h * 3) as usize);
        for y in 0..h {
            for x in 0..w {
                v.extend([(x * 7 + y) as u8, (y * 5 + 3 * x) as u8, (x * y) as u8]);
            }
        }
        v
    }

    #[test]
    fn recipes_are_deterministic_per_sample_and_differ_across_views() {
        let norm = Normalize::new([0.5; 3], [0.25; 3]).unwrap();
        let img = test_image(96, 96);
        let mut scratch = Scratch::new();
        for name in ["simsiam", "finetune", "eval"] {
            let r = Recipe::by_name(name, 96, norm).unwrap();
            let run = |view, scratch: &mut Scratch| {
                let mut out = vec![0f32; r.output_len()];
                r.apply(&img, 96, 96, &mut sample_rng(11, 2, 5, view), &mut out, scratch).unwrap();
                out
            };
            let a = run(0, &mut scratch);
            assert_eq!(a, run(0, &mut Scratch::new()));
            if name == "eval" {
                assert_eq!(a, run(1, &mut scratch));
            } else {
                assert_ne!(a, run(1, &mut scratch));
            }
        }
    }

    #[test]
    fn recipes_are_shareable_and_scratch_moves_between_threads() {
        fn send_sync<T: Send + Sync>() {}
        fn send<T: Send>() {}
        send_sync::<Recipe>();
        send::<Scratch>();
    }

    #[test]
    fn simsiam_paper_blurs_only_above_32_px() {
        let r32 = SimSiamConfig::paper(32);
        assert!(r32.blur.is_none());
        let r96 = SimSiamConfig::paper(96);
        assert_eq!(r96.blur.unwrap().kernel_size(), 9);
        assert_eq!(blur_kernel_for(224), 23);
    }

    #[test]
    fn eval_of_an_image_of_the_output_size_is_just_normalize() {
        let norm = Normalize::new([0.0; 3], [1.0; 3]).unwrap();
        let img = test_image(32, 32);
        let r = Recipe::eval(32, norm).unwrap();
        let mut out = vec![0f32; r.output_len()];
        r.apply(&img, 32, 32, &mut sample_rng(0, 0, 0, 0), &mut out, &mut Scratch::new()).unwrap();
        // Pixel (x = 3, y = 2), channel 1 = 2 * 5 + 3 * 3 = 19.
        assert!((out[1024 + 2 * 32 + 3] - 19.0 / 255.0).abs() < 1e-6);
    }

    #[test]
    fn wrong_buffers_and_configs_are_errors() {
        let norm = Normalize::new([0.5; 3], [0.25; 3]).unwrap();
        let r = Recipe::simsiam(32, norm).unwrap();
        let img = test_image(40, 30);
        let mut s = Scratch::new();
        let mut rng = sample_rng(0, 0, 0, 0);
        let mut short = vec![0f32; 10];
        assert!(r.apply(&img, 40, 30, &mut rng, &mut short, &mut s).is_err());
        let mut out = vec![0f32; r.output_len()];
        assert!(r.apply(&img, 41, 30, &mut rng, &mut out, &mut s).is_err());
        assert!(r.apply(&[], 0, 0, &mut rng, &mut out, &mut s).is_err());
        assert!(Recipe::by_name("byol", 32, norm).is_err());
        assert!(Recipe::new(RecipeConfig::Eval(EvalConfig { resize: 30, crop: 32 }), norm).is_err());
        let mut c = SimSiamConfig::paper(96);
        c.grayscale_p = 1.5;
        assert!(Recipe::new(RecipeConfig::SimSiam(c), norm).is_err());
        // Padded RandomCrop needs an input of at least size - 2 * padding.
        let f = Recipe::finetune(32, norm).unwrap();
        let tiny = test_image(20, 20);
        assert!(f.apply(&tiny, 20, 20, &mut rng, &mut out, &mut s).is_err());
    }

    #[test]
    fn outputs_are_finite_and_within_the_normalized_range() {
        let norm = Normalize::new([0.5; 3], [0.25; 3]).unwrap();
        let img = test_image(37, 29);
        let mut s = Scratch::new();
        for size in [32, 64] {
            let r = Recipe::simsiam(size, norm).unwrap();
            let mut out = vec![0f32; r.output_len()];
            for i in 0..200 {
                r.apply(&img, 37, 29, &mut sample_rng(1, 0, i, 0), &mut out, &mut s).unwrap();
                assert!(out.iter().all(|v| (-2.0..=2.0).contains(v)));
            }
        }
    }
}
