//! The backbones, one file per architecture, each with the same face: [`Backbone`] maps
//! `[N, 3, H, W]` images to `[N, F]` features (headless, for Siamese training; SimSiam's heads
//! live in [`crate::simsiam`], the classification head in the trainer).
//!
//! An architecture is a type: its table (channels, kernels, strides, repeats) is in const
//! generics, so a preset is a type alias (`ResNet18Cifar`) and a variant is a few lines of
//! configuration. Build one with dfdx's `BuildModule::build(&dev)`; parameter names
//! (`NumParams`, dfdx's tensor visitors) are the PyTorch `state_dict` keys of torchvision
//! (ResNet) and timm (the others).

mod by_name;
mod efficientnet;
mod pit;
mod resnet;
pub mod trace;
mod vit;

pub use by_name::{summary_by_name, with_backbone, BackboneVisitor, BACKBONE_NAMES};
pub use efficientnet::{
    Blocks, DepthwiseSeparable, EfficientNet, EfficientNetB0, EfficientNetB0S1, EfficientNetTiny, MbConv,
    SqueezeExcite, Stage,
};
pub use pit::{
    ConvEmbedding, Pit, PitPoolStage, PitStage, PitTi, PitTi128, PitTi224, PitTi32, PitTi64, PitTi96, PitTiny32,
    Pooling, TokenStage,
};
pub use resnet::{
    BasicBlock, CifarStem, DownBlock, ImageNetStem, ResNet, ResNet18, ResNet18Cifar, ResNet18CifarTiny, ResNet18Tiny,
    Stem,
};

pub use vit::{
    vit_s_patch_size, Attention, Mlp, PatchEmbed, Tokens, TransformerBlock, Vit, VitS128, VitS224, VitS32, VitS64,
    VitS96, VitTiny32, VitTiny96,
};

use dfdx::nn::tensor_collection::TensorCollection;
use dfdx::prelude::{Const, Cpu, Tensor};

use crate::Kernels;

use crate::layers::{AnyTape, Mode};
use crate::{Image, OpError};
use trace::StageTrace;

/// A feature extractor: images in, `F` features per image out.
///
/// Generic over the device `D` ([`Cpu`] unless named): the same preset type runs on `Cpu` or,
/// with the `cuda` feature, on `Cuda` (`ResNet18Cifar<Cuda>`).
pub trait Backbone<const F: usize, D: Kernels<f32> = Cpu>: TensorCollection<f32, D> {
    /// The architecture's name as timm / torchvision spell it, with the variant
    /// (`resnet18 (cifar stem)`).
    fn name(&self) -> String;

    /// The forward pass, reporting each stage to `trace`.
    fn forward_traced<T: AnyTape<D>>(
        &mut self,
        x: Tensor<Image<3>, f32, D, T>,
        mode: Mode,
        trace: &mut StageTrace,
    ) -> Result<Tensor<(usize, Const<F>), f32, D, T>, OpError>;

    /// Pooled features `[N, F]` of images `[N, 3, H, W]`.
    fn forward_features<T: AnyTape<D>>(
        &mut self,
        x: Tensor<Image<3>, f32, D, T>,
        mode: Mode,
    ) -> Result<Tensor<(usize, Const<F>), f32, D, T>, OpError> {
        self.forward_traced(x, mode, &mut StageTrace::off())
    }
}
