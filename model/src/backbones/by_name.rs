//! Backbones by name and input size, for the command line (`siamlab model summary --backbone
//! NAME --image-size S`): the preset each name means at each size.

use dfdx::prelude::{BuildModule, Cpu};

use super::*;
use crate::summary::{summary, Summary};
use crate::OpError;

/// The names [`summary_by_name`] knows.
pub const BACKBONE_NAMES: &[&str] = &[
    "resnet18",
    "resnet18_cifar",
    "resnet18_imagenet",
    "efficientnet_b0",
    "vit_s",
    "pit_ti",
    "resnet18_tiny",
    "efficientnet_tiny",
    "vit_tiny",
    "pit_tiny",
];

/// Builds the preset `name` means at `image_size` (freshly initialised) and tabulates it with
/// [`summary`]:
///
/// | name                | preset                                                            |
/// |---------------------|-------------------------------------------------------------------|
/// | `resnet18`          | CIFAR stem up to 96 px, ImageNet stem above                       |
/// | `resnet18_cifar` / `resnet18_imagenet` | that stem at any size                          |
/// | `efficientnet_b0`   | stride-1 stem up to 64 px, timm's stride 2 above                  |
/// | `vit_s`             | patch 4 at 32 px, 8 at 64 and 96 px, 16 at 128 and 224 px          |
/// | `pit_ti`            | patch/stride 4/2 at 32 px, 8/4 at 96 px, 16/8 at 224 px            |
/// | `*_tiny`            | the reduced presets (`vit_tiny` at 32 or 96 px, `pit_tiny` at 32) |
///
/// Errors for an unknown name or a size a position embedding does not fit.
///
/// ```
/// let s = siamlab_model::backbones::summary_by_name("resnet18_tiny", 32).unwrap();
/// assert_eq!(s.rows.last().unwrap().shape, vec![1, 64]);
/// assert!(siamlab_model::backbones::summary_by_name("vit_s", 48).is_err());
/// ```
pub fn summary_by_name(name: &str, image_size: usize) -> Result<Summary, OpError> {
    let dev = Cpu::default();
    let unsupported = || {
        OpError::config("summary", format!("{name} has no preset for {image_size} px (see summary_by_name's table)"))
    };
    match (name, image_size) {
        ("resnet18", 0..=96) | ("resnet18_cifar", _) => summary(&mut ResNet18Cifar::try_build(&dev)?, image_size),
        ("resnet18", _) | ("resnet18_imagenet", _) => summary(&mut ResNet18::try_build(&dev)?, image_size),
        ("efficientnet_b0", 0..=64) => summary(&mut EfficientNetB0S1::try_build(&dev)?, image_size),
        ("efficientnet_b0", _) => summary(&mut EfficientNetB0::try_build(&dev)?, image_size),
        ("vit_s", 32) => summary(&mut VitS32::try_build(&dev)?, image_size),
        ("vit_s", 64) => summary(&mut VitS64::try_build(&dev)?, image_size),
        ("vit_s", 96) => summary(&mut VitS96::try_build(&dev)?, image_size),
        ("vit_s", 128) => summary(&mut VitS128::try_build(&dev)?, image_size),
        ("vit_s", 224) => summary(&mut VitS224::try_build(&dev)?, image_size),
        ("pit_ti", 32) => summary(&mut PitTi32::try_build(&dev)?, image_size),
        ("pit_ti", 96) => summary(&mut PitTi96::try_build(&dev)?, image_size),
        ("pit_ti", 224) => summary(&mut PitTi224::try_build(&dev)?, image_size),
        ("resnet18_tiny", 0..=96) => summary(&mut ResNet18CifarTiny::try_build(&dev)?, image_size),
        ("resnet18_tiny", _) => summary(&mut ResNet18Tiny::try_build(&dev)?, image_size),
        ("efficientnet_tiny", _) => summary(&mut EfficientNetTiny::try_build(&dev)?, image_size),
        ("vit_tiny", 32) => summary(&mut VitTiny32::try_build(&dev)?, image_size),
        ("vit_tiny", 96) => summary(&mut VitTiny96::try_build(&dev)?, image_size),
        ("pit_tiny", 32) => summary(&mut PitTiny32::try_build(&dev)?, image_size),
        _ if BACKBONE_NAMES.contains(&name) => Err(unsupported()),
        _ => {
            Err(OpError::config("summary", format!("unknown backbone {name:?}; known: {}", BACKBONE_NAMES.join(", "))))
        }
    }
}
