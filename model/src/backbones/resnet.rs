//! ResNet-18 (He et al. 2016; torchvision's `resnet18` without `fc`), with torchvision's
//! parameter names (`conv1.weight`, `layer2.0.downsample.0.weight`, ...).
//!
//! | stage  | output (224 px / 32 px, CIFAR stem) | blocks                                  |
//! |--------|-------------------------------------|-----------------------------------------|
//! | conv1  | 112² / 32², C1                      | 7×7/2 pad 3 + BN + ReLU + max-pool 3/2/1, or 3×3/1 pad 1 + BN + ReLU |
//! | layer1 | 56² / 32², C1                       | 2 × BasicBlock                          |
//! | layer2 | 28² / 16², C2                       | DownBlock (3×3/2, 1×1/2 + BN shortcut) + BasicBlock |
//! | layer3 | 14² / 8², C3                        | DownBlock + BasicBlock                  |
//! | layer4 | 7² / 4², C4                         | DownBlock + BasicBlock                  |
//! | avgpool| C4 features                         | global average                          |
//!
//! The stem is a type parameter: [`CifarStem`] (3×3 stride 1, no max-pool, for 32–96 px
//! inputs) or [`ImageNetStem`] (7×7 stride 2 and the 3/2/1 max-pool).

use dfdx::nn::tensor_collection::{ModuleVisitor, TensorCollection};
use dfdx::nn::NumParams;
use dfdx::prelude::{Const, Cpu, Device, Dtype, Storage, Tensor};

use crate::Kernels;
use num_traits::Float;
use rand_distr::uniform::SampleUniform;

use super::Backbone;
use crate::backbones::trace::StageTrace;
use crate::init::{conv_fan_out, Draw};
use crate::layers::{AnyTape, BatchNorm2d, Block, Conv2d, Mode};
use crate::ready::mark;
use crate::{Image, OpError, Pool2dConfig};

/// The residual block of ResNet-18/34 with an identity shortcut: conv3×3 – BN – ReLU –
/// conv3×3 – BN, plus the input, then ReLU.
#[derive(Clone, Debug)]
pub struct BasicBlock<const C: usize, E: Dtype = f32, D: Storage<E> = Cpu> {
    /// 3×3/1.
    pub conv1: Conv2d<C, C, 3, 1, 1, C, E, D>,
    /// After `conv1`.
    pub bn1: BatchNorm2d<C, E, D>,
    /// 3×3/1.
    pub conv2: Conv2d<C, C, 3, 1, 1, C, E, D>,
    /// After `conv2`.
    pub bn2: BatchNorm2d<C, E, D>,
}

/// The first block of layers 2–4: stride 2 and `I → O` channels, so the shortcut is torchvision's
/// `downsample` (1×1 stride-2 conv + BN).
#[derive(Clone, Debug)]
pub struct DownBlock<const I: usize, const O: usize, E: Dtype = f32, D: Storage<E> = Cpu> {
    /// 3×3/2.
    pub conv1: Conv2d<I, O, 3, 2, 1, I, E, D>,
    /// After `conv1`.
    pub bn1: BatchNorm2d<O, E, D>,
    /// 3×3/1.
    pub conv2: Conv2d<O, O, 3, 1, 1, O, E, D>,
    /// After `conv2`.
    pub bn2: BatchNorm2d<O, E, D>,
    /// The projection shortcut: `downsample.0` (1×1/2 conv), `downsample.1` (BN).
    pub downsample: (Conv2d<I, O, 1, 2, 0, I, E, D>, BatchNorm2d<O, E, D>),
}

/// The stem convolution of a ResNet and whether a max-pool follows it.
pub trait Stem<const C: usize, D: Kernels<f32> = Cpu> {
    /// torchvision's ImageNet stem pools after conv1 + BN + ReLU; the CIFAR stem does not.
    const MAX_POOL: bool;
    /// Short name for summaries.
    const NAME: &'static str;
    /// The convolution alone, with no gradient for the images `x`.
    fn conv<T: AnyTape<D>>(&mut self, x: Tensor<Image<3>, f32, D, T>) -> Result<Tensor<Image<C>, f32, D, T>, OpError>;
}

/// The CIFAR stem: 3×3 stride 1, padding 1, no max-pool.
pub type CifarStem<const C: usize, E = f32, D = Cpu> = Conv2d<3, C, 3, 1, 1, 3, E, D>;
/// The ImageNet stem: 7×7 stride 2, padding 3, then max-pool 3/2/1.
pub type ImageNetStem<const C: usize, E = f32, D = Cpu> = Conv2d<3, C, 7, 2, 3, 3, E, D>;

impl<const C: usize, D: Kernels<f32>> Stem<C, D> for CifarStem<C, f32, D> {
    const MAX_POOL: bool = false;
    const NAME: &'static str = "cifar stem";
    fn conv<T: AnyTape<D>>(&mut self, x: Tensor<Image<3>, f32, D, T>) -> Result<Tensor<Image<C>, f32, D, T>, OpError> {
        self.run_on_images(x)
    }
}

impl<const C: usize, D: Kernels<f32>> Stem<C, D> for ImageNetStem<C, f32, D> {
    const MAX_POOL: bool = true;
    const NAME: &'static str = "imagenet stem";
    fn conv<T: AnyTape<D>>(&mut self, x: Tensor<Image<3>, f32, D, T>) -> Result<Tensor<Image<C>, f32, D, T>, OpError> {
        self.run_on_images(x)
    }
}

/// ResNet-18 with stage widths `C1..C4` (64, 128, 256, 512 in the paper) and stem `St`.
#[derive(Clone, Debug)]
pub struct ResNet<
    St,
    const C1: usize,
    const C2: usize,
    const C3: usize,
    const C4: usize,
    E: Dtype = f32,
    D: Storage<E> = Cpu,
> {
    /// The stem convolution ([`CifarStem`] or [`ImageNetStem`]).
    pub conv1: St,
    /// After `conv1`.
    pub bn1: BatchNorm2d<C1, E, D>,
    /// Two identity blocks at `C1`.
    pub layer1: (BasicBlock<C1, E, D>, BasicBlock<C1, E, D>),
    /// Down to `C2`.
    pub layer2: (DownBlock<C1, C2, E, D>, BasicBlock<C2, E, D>),
    /// Down to `C3`.
    pub layer3: (DownBlock<C2, C3, E, D>, BasicBlock<C3, E, D>),
    /// Down to `C4`.
    pub layer4: (DownBlock<C3, C4, E, D>, BasicBlock<C4, E, D>),
}

/// torchvision `resnet18` (ImageNet stem) without `fc`: 11,176,512 parameters.
pub type ResNet18<D = Cpu> = ResNet<ImageNetStem<64, f32, D>, 64, 128, 256, 512, f32, D>;
/// ResNet-18 with the CIFAR stem: 11,168,832 parameters, 512 features.
pub type ResNet18Cifar<D = Cpu> = ResNet<CifarStem<64, f32, D>, 64, 128, 256, 512, f32, D>;
/// Width/8 ResNet-18 with the ImageNet stem, for tests and demos: 64 features.
pub type ResNet18Tiny<D = Cpu> = ResNet<ImageNetStem<8, f32, D>, 8, 16, 32, 64, f32, D>;
/// Width/8 ResNet-18 with the CIFAR stem, for tests and demos: 64 features.
pub type ResNet18CifarTiny<D = Cpu> = ResNet<CifarStem<8, f32, D>, 8, 16, 32, 64, f32, D>;

impl<const C: usize, E: Dtype + Float + SampleUniform, D: Device<E>> TensorCollection<E, D> for BasicBlock<C, E, D> {
    type To<E2: Dtype, D2: Device<E2>> = BasicBlock<C, E2, D2>;

    fn iter_tensors<V: ModuleVisitor<Self, E, D>>(visitor: &mut V) -> Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
        visitor.visit_fields(
            (
                Self::module("conv1", |s| &s.conv1, |s| &mut s.conv1),
                Self::module("bn1", |s| &s.bn1, |s| &mut s.bn1),
                Self::module("conv2", |s| &s.conv2, |s| &mut s.conv2),
                Self::module("bn2", |s| &s.bn2, |s| &mut s.bn2),
            ),
            |(conv1, bn1, conv2, bn2)| BasicBlock { conv1, bn1, conv2, bn2 },
        )
    }
}

impl<const I: usize, const O: usize, E: Dtype + Float + SampleUniform, D: Device<E>> TensorCollection<E, D>
    for DownBlock<I, O, E, D>
{
    type To<E2: Dtype, D2: Device<E2>> = DownBlock<I, O, E2, D2>;

    fn iter_tensors<V: ModuleVisitor<Self, E, D>>(visitor: &mut V) -> Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
        visitor.visit_fields(
            (
                Self::module("conv1", |s| &s.conv1, |s| &mut s.conv1),
                Self::module("bn1", |s| &s.bn1, |s| &mut s.bn1),
                Self::module("conv2", |s| &s.conv2, |s| &mut s.conv2),
                Self::module("bn2", |s| &s.bn2, |s| &mut s.bn2),
                Self::module("downsample", |s| &s.downsample, |s| &mut s.downsample),
            ),
            |(conv1, bn1, conv2, bn2, downsample)| DownBlock { conv1, bn1, conv2, bn2, downsample },
        )
    }
}

impl<St, const C1: usize, const C2: usize, const C3: usize, const C4: usize, E, D> TensorCollection<E, D>
    for ResNet<St, C1, C2, C3, C4, E, D>
where
    St: TensorCollection<E, D>,
    E: Dtype + Float + SampleUniform,
    D: Device<E>,
{
    type To<E2: Dtype, D2: Device<E2>> = ResNet<St::To<E2, D2>, C1, C2, C3, C4, E2, D2>;

    fn iter_tensors<V: ModuleVisitor<Self, E, D>>(visitor: &mut V) -> Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
        visitor.visit_fields(
            (
                Self::module("conv1", |s| &s.conv1, |s| &mut s.conv1),
                Self::module("bn1", |s| &s.bn1, |s| &mut s.bn1),
                Self::module("layer1", |s| &s.layer1, |s| &mut s.layer1),
                Self::module("layer2", |s| &s.layer2, |s| &mut s.layer2),
                Self::module("layer3", |s| &s.layer3, |s| &mut s.layer3),
                Self::module("layer4", |s| &s.layer4, |s| &mut s.layer4),
            ),
            |(conv1, bn1, layer1, layer2, layer3, layer4)| ResNet { conv1, bn1, layer1, layer2, layer3, layer4 },
        )
    }
}

impl<const C: usize, D: Kernels<f32>, T: AnyTape<D>> Block<Tensor<Image<C>, f32, D, T>> for BasicBlock<C, f32, D> {
    type Output = Tensor<Image<C>, f32, D, T>;
    fn run(&mut self, x: Tensor<Image<C>, f32, D, T>, mode: Mode) -> Result<Self::Output, OpError> {
        let shortcut = x.retaped::<T>();
        let y = self.conv1.run(x, mode)?;
        let y = self.bn1.run_relu(y, mode)?;
        let y = self.conv2.run(y, mode)?;
        let y = self.bn2.run(y, mode)?;
        D::residual_add(y, shortcut, true)
    }
}

impl<const I: usize, const O: usize, D: Kernels<f32>, T: AnyTape<D>> Block<Tensor<Image<I>, f32, D, T>>
    for DownBlock<I, O, f32, D>
{
    type Output = Tensor<Image<O>, f32, D, T>;
    fn run(&mut self, x: Tensor<Image<I>, f32, D, T>, mode: Mode) -> Result<Self::Output, OpError> {
        let shortcut = self.downsample.run(x.retaped::<T>(), mode)?;
        let y = self.conv1.run(x, mode)?;
        let y = self.bn1.run_relu(y, mode)?;
        let y = self.conv2.run(y, mode)?;
        let y = self.bn2.run(y, mode)?;
        D::residual_add(y, shortcut, true)
    }
}

impl<St, const C1: usize, const C2: usize, const C3: usize, const C4: usize, D: Kernels<f32>> Backbone<C4, D>
    for ResNet<St, C1, C2, C3, C4, f32, D>
where
    St: Stem<C1, D> + TensorCollection<f32, D>,
{
    fn name(&self) -> String {
        format!("resnet18 ({}, widths {C1}/{C2}/{C3}/{C4})", St::NAME)
    }

    /// torchvision's `ResNet.__init__`: every convolution `kaiming_normal_(mode="fan_out",
    /// nonlinearity="relu")`, BatchNorm at 1 and 0 (as built); with `zero_init_residual`,
    /// `bn2.weight` of every block at 0.
    fn library_init(name: &str, shape: &[usize], zero_init_residual: bool) -> Option<Draw> {
        if zero_init_residual && name.starts_with("layer") && name.ends_with(".bn2.weight") {
            return Some(Draw::Constant(0.0));
        }
        (shape.len() == 4).then(|| Draw::kaiming_normal(conv_fan_out(shape)))
    }

    fn forward_traced<T: AnyTape<D>>(
        &mut self,
        x: Tensor<Image<3>, f32, D, T>,
        mode: Mode,
        trace: &mut StageTrace,
    ) -> Result<Tensor<(usize, Const<C4>), f32, D, T>, OpError> {
        // `mark`: each group's gradients final from here on in the backward pass (`ready`).
        let x = mark(mark(x, &self.conv1), &self.bn1);
        let y = self.conv1.conv(x)?;
        let mut y = self.bn1.run_relu(y, mode)?;
        if St::MAX_POOL {
            y = D::max_pool2d(y, Pool2dConfig::new(3).stride(2).padding(1))?;
        }
        trace.record("conv1+bn1+relu", &y, || self.conv1.num_trainable_params() + self.bn1.num_trainable_params());
        let y = self.layer1.run(mark(y, &self.layer1), mode)?;
        trace.record("layer1", &y, || self.layer1.num_trainable_params());
        let y = self.layer2.run(mark(y, &self.layer2), mode)?;
        trace.record("layer2", &y, || self.layer2.num_trainable_params());
        let y = self.layer3.run(mark(y, &self.layer3), mode)?;
        trace.record("layer3", &y, || self.layer3.num_trainable_params());
        let y = self.layer4.run(mark(y, &self.layer4), mode)?;
        trace.record("layer4", &y, || self.layer4.num_trainable_params());
        let y = D::global_avg_pool2d(y)?;
        trace.record("avgpool", &y, || 0);
        Ok(y)
    }
}
