//! Backbones by name and input size, for the command line (`siamlab model summary --backbone
//! NAME --image-size S`): the preset each name means at each size.

use dfdx::prelude::{BuildModule, Cpu};

use crate::Kernels;

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

/// Something to do with a backbone chosen at run time: [`with_backbone`] builds the preset and
/// calls [`visit`](BackboneVisitor::visit) with its concrete type, so code generic over
/// `B: Backbone<F>` (a training loop, a summary) runs on a name from the command line.
pub trait BackboneVisitor<D: Kernels<f32> = Cpu> {
    /// What the visit produces.
    type Output;
    /// Called with the freshly built backbone and its name as given.
    fn visit<B: Backbone<F, D> + BuildModule<D, f32> + 'static, const F: usize>(self, backbone: B) -> Self::Output;
}

/// Builds the preset `name` means at `image_size` on `dev` (freshly initialised from the
/// device's RNG) and hands it to `visitor`:
///
/// | name                | preset                                                            |
/// |---------------------|-------------------------------------------------------------------|
/// | `resnet18`          | CIFAR stem up to 96 px, ImageNet stem above                       |
/// | `resnet18_cifar` / `resnet18_imagenet` | that stem at any size                          |
/// | `efficientnet_b0`   | stride-1 stem up to 64 px, timm's stride 2 above                  |
/// | `vit_s`             | patch 4 at 32 px, 8 at 64 and 96 px, 16 at 128 and 224 px          |
/// | `pit_ti`            | patch/stride 4/2 at 32 px, 8/4 at 64 and 96 px, 16/8 at 128 and 224 px |
/// | `*_tiny`            | the reduced presets (`vit_tiny` at 32 or 96 px, `pit_tiny` at 32) |
///
/// Errors for an unknown name or a size a position embedding does not fit.
pub fn with_backbone<D: Kernels<f32>, V: BackboneVisitor<D>>(
    name: &str,
    image_size: usize,
    dev: &D,
    visitor: V,
) -> Result<V::Output, OpError> {
    let unsupported =
        || OpError::config("backbone", format!("{name} has no preset for {image_size} px (see with_backbone's table)"));
    Ok(match (name, image_size) {
        ("resnet18", 0..=96) | ("resnet18_cifar", _) => {
            visitor.visit(ResNet18Cifar::<D>::try_build(dev).map_err(OpError::device)?)
        }
        ("resnet18", _) | ("resnet18_imagenet", _) => {
            visitor.visit(ResNet18::<D>::try_build(dev).map_err(OpError::device)?)
        }
        ("efficientnet_b0", 0..=64) => visitor.visit(EfficientNetB0S1::<D>::try_build(dev).map_err(OpError::device)?),
        ("efficientnet_b0", _) => visitor.visit(EfficientNetB0::<D>::try_build(dev).map_err(OpError::device)?),
        ("vit_s", 32) => visitor.visit(VitS32::<D>::try_build(dev).map_err(OpError::device)?),
        ("vit_s", 64) => visitor.visit(VitS64::<D>::try_build(dev).map_err(OpError::device)?),
        ("vit_s", 96) => visitor.visit(VitS96::<D>::try_build(dev).map_err(OpError::device)?),
        ("vit_s", 128) => visitor.visit(VitS128::<D>::try_build(dev).map_err(OpError::device)?),
        ("vit_s", 224) => visitor.visit(VitS224::<D>::try_build(dev).map_err(OpError::device)?),
        ("pit_ti", 32) => visitor.visit(PitTi32::<D>::try_build(dev).map_err(OpError::device)?),
        ("pit_ti", 64) => visitor.visit(PitTi64::<D>::try_build(dev).map_err(OpError::device)?),
        ("pit_ti", 96) => visitor.visit(PitTi96::<D>::try_build(dev).map_err(OpError::device)?),
        ("pit_ti", 128) => visitor.visit(PitTi128::<D>::try_build(dev).map_err(OpError::device)?),
        ("pit_ti", 224) => visitor.visit(PitTi224::<D>::try_build(dev).map_err(OpError::device)?),
        ("resnet18_tiny", 0..=96) => visitor.visit(ResNet18CifarTiny::<D>::try_build(dev).map_err(OpError::device)?),
        ("resnet18_tiny", _) => visitor.visit(ResNet18Tiny::<D>::try_build(dev).map_err(OpError::device)?),
        ("efficientnet_tiny", _) => visitor.visit(EfficientNetTiny::<D>::try_build(dev).map_err(OpError::device)?),
        ("vit_tiny", 32) => visitor.visit(VitTiny32::<D>::try_build(dev).map_err(OpError::device)?),
        ("vit_tiny", 96) => visitor.visit(VitTiny96::<D>::try_build(dev).map_err(OpError::device)?),
        ("pit_tiny", 32) => visitor.visit(PitTiny32::<D>::try_build(dev).map_err(OpError::device)?),
        _ if BACKBONE_NAMES.contains(&name) => return Err(unsupported()),
        _ => {
            return Err(OpError::config(
                "backbone",
                format!("unknown backbone {name:?}; known: {}", BACKBONE_NAMES.join(", ")),
            ))
        }
    })
}

struct SummaryVisitor(usize);

impl BackboneVisitor for SummaryVisitor {
    type Output = Result<Summary, OpError>;
    fn visit<B: Backbone<F> + BuildModule<Cpu, f32> + 'static, const F: usize>(self, mut b: B) -> Self::Output {
        summary(&mut b, self.0)
    }
}

/// Builds the preset `name` means at `image_size` (see [`with_backbone`]) and tabulates it with
/// [`summary`].
///
/// ```
/// let s = siamlab_model::backbones::summary_by_name("resnet18_tiny", 32).unwrap();
/// assert_eq!(s.rows.last().unwrap().shape, vec![1, 64]);
/// assert!(siamlab_model::backbones::summary_by_name("vit_s", 48).is_err());
/// ```
pub fn summary_by_name(name: &str, image_size: usize) -> Result<Summary, OpError> {
    with_backbone(name, image_size, &Cpu::default(), SummaryVisitor(image_size))?
}
