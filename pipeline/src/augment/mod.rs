//! Image augmentations with torchvision's semantics: ops, their parameter samplers, and the
//! `simsiam` / `finetune` / `eval` recipes.
//!
//! Layouts: sources are RGB8 interleaved (HWC u8, any size). Geometry ops resize in HWC
//! (fast_image_resize) and then copy into planar RGB8 (CHW u8), where the color ops and the
//! blur work (contiguous planes vectorize); [`Normalize`] writes the final CHW f32 view into a
//! caller-provided slice. Every op is a plain function with explicit parameters; samplers draw
//! those parameters with torchvision's logic from an RNG the caller passes, normally
//! [`sample_rng`] keyed by `(seed, epoch, sample index, view)`.
//!
//! The reference is `torchvision.transforms.functional` (v1) on uint8 tensors; fixtures
//! produced by `tools/augment_fixtures.py` check every op against it.

mod blur;
mod color;
mod crop;
mod error;
mod normalize;
mod recipe;
mod rng;
mod simd;

pub use blur::{gaussian_blur, gaussian_kernel1d, BlurScratch, GaussianBlur};
pub use color::{
    adjust_brightness, adjust_contrast, adjust_hue, adjust_saturation, grayscale, grayscale_mean, sample_grayscale,
    solarize, ColorJitter, JitterOp, JitterParams,
};
pub use crop::{
    center_crop_box, crop_to_planes, hflip, resize, resized_crop, sample_flip, shorter_side_size, CropBox, PaddedCrop,
    RandomCrop, RandomResizedCrop,
};
pub use error::{Error, Result};
pub use fast_image_resize::Resizer;
pub use normalize::Normalize;
pub use recipe::{
    blur_kernel_for, EvalConfig, FinetuneConfig, FinetuneCrop, Geometry, Recipe, RecipeConfig, Scratch, SimSiamConfig,
    ViewParams, RECIPE_NAMES,
};
pub use rng::{below, bernoulli, permutation, sample_key, sample_rng, splitmix64, uniform, unit_f64, SampleRng};
