//! EfficientNet-B0 (Tan & Le 2019) as timm's `efficientnet_b0` without `classifier`, with timm's
//! parameter names (`conv_stem`, `bn1`, `blocks.1.0.conv_pw`, `blocks.1.0.se.conv_reduce`,
//! `conv_head`, `bn2`).
//!
//! | stage    | block (expand, kernel, stride, channels, repeats) | output at 224 px |
//! |----------|---------------------------------------------------|------------------|
//! | stem     | conv 3×3/2, 32, BN, SiLU                          | 112², 32         |
//! | blocks.0 | DS   (1, 3, 1, 16, 1)                             | 112², 16         |
//! | blocks.1 | MBConv (6, 3, 2, 24, 2)                           | 56², 24          |
//! | blocks.2 | MBConv (6, 5, 2, 40, 2)                           | 28², 40          |
//! | blocks.3 | MBConv (6, 3, 2, 80, 3)                           | 14², 80          |
//! | blocks.4 | MBConv (6, 5, 1, 112, 3)                          | 14², 112         |
//! | blocks.5 | MBConv (6, 5, 2, 192, 4)                          | 7², 192          |
//! | blocks.6 | MBConv (6, 3, 1, 320, 1)                          | 7², 320          |
//! | head     | conv 1×1, 1280, BN, SiLU, global average          | 1280             |
//!
//! Every block has squeeze-and-excitation with `RD = ¼` of the block's *input* channels, SiLU
//! activations, and a residual (with drop-path) when stride is 1 and channels are unchanged.
//! A block's widths are in its type (`MbConv<I, O, MID, K, S, RD>`, `MID = 6·I`; stable Rust
//! cannot derive them), a stage is [`Blocks`] (first block + `N` repeats), and the stem stride
//! is a parameter: [`EfficientNetB0S1`] keeps stride 1 for small (32 px) images.

use dfdx::nn::tensor_collection::{ModuleVisitor, TensorCollection};
use dfdx::nn::NumParams;
use dfdx::prelude::*;
use num_traits::Float;
use rand_distr::uniform::SampleUniform;

use super::Backbone;
use crate::backbones::trace::StageTrace;
use crate::init::{conv_fan_out, Draw};
use crate::layers::{AnyTape, BatchNorm2d, Block, Conv2d, Conv2dBias, DwConv2d, Mode};
use crate::ready::mark;
use crate::{Image, Kernels, OpError};

/// Squeeze-and-excitation: global average → 1×1 conv `C → RD` (bias) → SiLU → 1×1 conv
/// `RD → C` (bias) → sigmoid → channel scale.
#[derive(Clone, Debug)]
pub struct SqueezeExcite<const C: usize, const RD: usize, E: Dtype = f32, D: Storage<E> = Cpu> {
    /// `C → RD`.
    pub conv_reduce: Conv2dBias<C, RD, 1, 1, 0, C, E, D>,
    /// `RD → C`.
    pub conv_expand: Conv2dBias<RD, C, 1, 1, 0, RD, E, D>,
}

/// timm's `DepthwiseSeparableConv` (the expansion-1 block): depthwise `K×K` – BN – SiLU – SE –
/// pointwise `I → O` – BN.
#[derive(Clone, Debug)]
pub struct DepthwiseSeparable<
    const I: usize,
    const O: usize,
    const K: usize,
    const RD: usize,
    E: Dtype = f32,
    D: Storage<E> = Cpu,
> {
    /// Depthwise `K×K`, stride 1.
    pub conv_dw: DwConv2d<I, K, 1, E, D>,
    /// After `conv_dw`.
    pub bn1: BatchNorm2d<I, E, D>,
    /// Squeeze-and-excitation.
    pub se: SqueezeExcite<I, RD, E, D>,
    /// Pointwise `I → O`.
    pub conv_pw: Conv2d<I, O, 1, 1, 0, I, E, D>,
    /// After `conv_pw` (no activation).
    pub bn2: BatchNorm2d<O, E, D>,
    /// Drop-path probability of the residual branch (training setting; 0 when built).
    pub drop_path: f64,
}

/// timm's `InvertedResidual` (MBConv): pointwise `I → MID` – BN – SiLU – depthwise `K×K/S` –
/// BN – SiLU – SE – pointwise `MID → O` – BN.
#[derive(Clone, Debug)]
pub struct MbConv<
    const I: usize,
    const O: usize,
    const MID: usize,
    const K: usize,
    const S: usize,
    const RD: usize,
    E: Dtype = f32,
    D: Storage<E> = Cpu,
> {
    /// Expansion `I → MID`.
    pub conv_pw: Conv2d<I, MID, 1, 1, 0, I, E, D>,
    /// After `conv_pw`.
    pub bn1: BatchNorm2d<MID, E, D>,
    /// Depthwise `K×K`, stride `S`.
    pub conv_dw: DwConv2d<MID, K, S, E, D>,
    /// After `conv_dw`.
    pub bn2: BatchNorm2d<MID, E, D>,
    /// Squeeze-and-excitation.
    pub se: SqueezeExcite<MID, RD, E, D>,
    /// Projection `MID → O`.
    pub conv_pwl: Conv2d<MID, O, 1, 1, 0, MID, E, D>,
    /// After `conv_pwl` (no activation).
    pub bn3: BatchNorm2d<O, E, D>,
    /// Drop-path probability of the residual branch (training setting; 0 when built).
    pub drop_path: f64,
}

/// A stage: `first` (named `0`, changes width and stride) then `N` repeats of `R` (named
/// `1..=N`).
#[derive(Clone, Debug)]
pub struct Blocks<F, R, const N: usize> {
    /// The first block.
    pub first: F,
    /// The `N` repeats.
    pub rest: Vec<R>,
}

/// A stage or block taking `I` channels to `O`, on any tape.
pub trait Stage<const I: usize, const O: usize, D: Kernels<f32> = Cpu>: TensorCollection<f32, D> {
    /// Runs the stage.
    fn run_stage<T: AnyTape<D>>(
        &mut self,
        x: Tensor<Image<I>, f32, D, T>,
        mode: Mode,
    ) -> Result<Tensor<Image<O>, f32, D, T>, OpError>;
    /// Sets the drop-path probability of every block from `rate(block index)`, counting from
    /// `start`; returns the next index.
    fn set_drop_path(&mut self, start: usize, rate: &dyn Fn(usize) -> f64) -> usize;
}

/// EfficientNet: stem stride `SS`, widths `C0` (stem) … `C7` (last stage), head width `CH`,
/// stages `B1..B7`.
#[derive(Clone, Debug)]
#[allow(clippy::type_complexity)]
pub struct EfficientNet<
    const SS: usize,
    const C0: usize,
    const C1: usize,
    const C2: usize,
    const C3: usize,
    const C4: usize,
    const C5: usize,
    const C6: usize,
    const C7: usize,
    const CH: usize,
    B1,
    B2,
    B3,
    B4,
    B5,
    B6,
    B7,
    E: Dtype = f32,
    D: Storage<E> = Cpu,
> {
    /// 3×3/`SS`, 3 → `C0`.
    pub conv_stem: Conv2d<3, C0, 3, SS, 1, 3, E, D>,
    /// After the stem.
    pub bn1: BatchNorm2d<C0, E, D>,
    /// The seven stages, `blocks.0` … `blocks.6`.
    pub blocks: (B1, B2, B3, B4, B5, B6, B7),
    /// 1×1, `C7 → CH`.
    pub conv_head: Conv2d<C7, CH, 1, 1, 0, C7, E, D>,
    /// After the head.
    pub bn2: BatchNorm2d<CH, E, D>,
}

/// The stages of EfficientNet-B0 (timm's block table).
type B0<const SS: usize, D> = EfficientNet<
    SS,
    32,
    16,
    24,
    40,
    80,
    112,
    192,
    320,
    1280,
    Blocks<DepthwiseSeparable<32, 16, 3, 8, f32, D>, DepthwiseSeparable<16, 16, 3, 4, f32, D>, 0>,
    Blocks<MbConv<16, 24, 96, 3, 2, 4, f32, D>, MbConv<24, 24, 144, 3, 1, 6, f32, D>, 1>,
    Blocks<MbConv<24, 40, 144, 5, 2, 6, f32, D>, MbConv<40, 40, 240, 5, 1, 10, f32, D>, 1>,
    Blocks<MbConv<40, 80, 240, 3, 2, 10, f32, D>, MbConv<80, 80, 480, 3, 1, 20, f32, D>, 2>,
    Blocks<MbConv<80, 112, 480, 5, 1, 20, f32, D>, MbConv<112, 112, 672, 5, 1, 28, f32, D>, 2>,
    Blocks<MbConv<112, 192, 672, 5, 2, 28, f32, D>, MbConv<192, 192, 1152, 5, 1, 48, f32, D>, 3>,
    Blocks<MbConv<192, 320, 1152, 3, 1, 48, f32, D>, MbConv<320, 320, 1920, 3, 1, 80, f32, D>, 0>,
    f32,
    D,
>;

/// timm `efficientnet_b0` without classifier: 4,007,548 parameters, 1280 features.
pub type EfficientNetB0<D = Cpu> = B0<2, D>;
/// EfficientNet-B0 with a stride-1 stem, for 32 px inputs (same parameters).
pub type EfficientNetB0S1<D = Cpu> = B0<1, D>;
/// A reduced EfficientNet (widths ≈ ¼, one block per stage but one, stride-1 stem) for tests
/// and demos: 128 features.
pub type EfficientNetTiny<D = Cpu> = EfficientNet<
    1,
    8,
    8,
    16,
    24,
    32,
    32,
    48,
    64,
    128,
    Blocks<DepthwiseSeparable<8, 8, 3, 2, f32, D>, DepthwiseSeparable<8, 8, 3, 2, f32, D>, 0>,
    Blocks<MbConv<8, 16, 48, 3, 2, 2, f32, D>, MbConv<16, 16, 96, 3, 1, 4, f32, D>, 1>,
    Blocks<MbConv<16, 24, 96, 5, 2, 4, f32, D>, MbConv<24, 24, 144, 5, 1, 6, f32, D>, 0>,
    Blocks<MbConv<24, 32, 144, 3, 2, 6, f32, D>, MbConv<32, 32, 192, 3, 1, 8, f32, D>, 0>,
    Blocks<MbConv<32, 32, 192, 5, 1, 8, f32, D>, MbConv<32, 32, 192, 5, 1, 8, f32, D>, 0>,
    Blocks<MbConv<32, 48, 192, 5, 2, 8, f32, D>, MbConv<48, 48, 288, 5, 1, 12, f32, D>, 0>,
    Blocks<MbConv<48, 64, 288, 3, 1, 12, f32, D>, MbConv<64, 64, 384, 3, 1, 16, f32, D>, 0>,
    f32,
    D,
>;

impl<const C: usize, const RD: usize, E: Dtype + Float + SampleUniform, D: Device<E>> TensorCollection<E, D>
    for SqueezeExcite<C, RD, E, D>
{
    type To<E2: Dtype, D2: Device<E2>> = SqueezeExcite<C, RD, E2, D2>;

    fn iter_tensors<V: ModuleVisitor<Self, E, D>>(visitor: &mut V) -> Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
        visitor.visit_fields(
            (
                Self::module("conv_reduce", |s| &s.conv_reduce, |s| &mut s.conv_reduce),
                Self::module("conv_expand", |s| &s.conv_expand, |s| &mut s.conv_expand),
            ),
            |(conv_reduce, conv_expand)| SqueezeExcite { conv_reduce, conv_expand },
        )
    }
}

impl<const I: usize, const O: usize, const K: usize, const RD: usize, E, D> TensorCollection<E, D>
    for DepthwiseSeparable<I, O, K, RD, E, D>
where
    E: Dtype + Float + SampleUniform,
    D: Device<E>,
{
    type To<E2: Dtype, D2: Device<E2>> = DepthwiseSeparable<I, O, K, RD, E2, D2>;

    fn iter_tensors<V: ModuleVisitor<Self, E, D>>(visitor: &mut V) -> Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
        visitor.visit_fields(
            (
                Self::module("conv_dw", |s| &s.conv_dw, |s| &mut s.conv_dw),
                Self::module("bn1", |s| &s.bn1, |s| &mut s.bn1),
                Self::module("se", |s| &s.se, |s| &mut s.se),
                Self::module("conv_pw", |s| &s.conv_pw, |s| &mut s.conv_pw),
                Self::module("bn2", |s| &s.bn2, |s| &mut s.bn2),
            ),
            |(conv_dw, bn1, se, conv_pw, bn2)| DepthwiseSeparable { conv_dw, bn1, se, conv_pw, bn2, drop_path: 0.0 },
        )
    }
}

impl<const I: usize, const O: usize, const MID: usize, const K: usize, const S: usize, const RD: usize, E, D>
    TensorCollection<E, D> for MbConv<I, O, MID, K, S, RD, E, D>
where
    E: Dtype + Float + SampleUniform,
    D: Device<E>,
{
    type To<E2: Dtype, D2: Device<E2>> = MbConv<I, O, MID, K, S, RD, E2, D2>;

    fn iter_tensors<V: ModuleVisitor<Self, E, D>>(visitor: &mut V) -> Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
        visitor.visit_fields(
            (
                (
                    Self::module("conv_pw", |s| &s.conv_pw, |s| &mut s.conv_pw),
                    Self::module("bn1", |s| &s.bn1, |s| &mut s.bn1),
                    Self::module("conv_dw", |s| &s.conv_dw, |s| &mut s.conv_dw),
                    Self::module("bn2", |s| &s.bn2, |s| &mut s.bn2),
                ),
                Self::module("se", |s| &s.se, |s| &mut s.se),
                Self::module("conv_pwl", |s| &s.conv_pwl, |s| &mut s.conv_pwl),
                Self::module("bn3", |s| &s.bn3, |s| &mut s.bn3),
            ),
            |((conv_pw, bn1, conv_dw, bn2), se, conv_pwl, bn3)| MbConv {
                conv_pw,
                bn1,
                conv_dw,
                bn2,
                se,
                conv_pwl,
                bn3,
                drop_path: 0.0,
            },
        )
    }
}

impl<F: TensorCollection<E, D>, R: TensorCollection<E, D>, const N: usize, E: Dtype, D: Device<E>>
    TensorCollection<E, D> for Blocks<F, R, N>
{
    type To<E2: Dtype, D2: Device<E2>> = Blocks<F::To<E2, D2>, R::To<E2, D2>, N>;

    fn iter_tensors<V: ModuleVisitor<Self, E, D>>(visitor: &mut V) -> Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
        let names: Vec<String> = (1..=N).map(|i| i.to_string()).collect();
        let rest = names
            .iter()
            .enumerate()
            .map(|(i, name)| Self::module(name, move |s| &s.rest[i], move |s| &mut s.rest[i]))
            .collect::<Vec<_>>();
        visitor.visit_fields((Self::module("0", |s| &s.first, |s| &mut s.first), rest), |(first, rest)| Blocks {
            first,
            rest,
        })
    }
}

#[allow(clippy::type_complexity)]
impl<
        const SS: usize,
        const C0: usize,
        const C1: usize,
        const C2: usize,
        const C3: usize,
        const C4: usize,
        const C5: usize,
        const C6: usize,
        const C7: usize,
        const CH: usize,
        B1: TensorCollection<E, D>,
        B2: TensorCollection<E, D>,
        B3: TensorCollection<E, D>,
        B4: TensorCollection<E, D>,
        B5: TensorCollection<E, D>,
        B6: TensorCollection<E, D>,
        B7: TensorCollection<E, D>,
        E: Dtype + Float + SampleUniform,
        D: Device<E>,
    > TensorCollection<E, D>
    for EfficientNet<SS, C0, C1, C2, C3, C4, C5, C6, C7, CH, B1, B2, B3, B4, B5, B6, B7, E, D>
{
    type To<E2: Dtype, D2: Device<E2>> = EfficientNet<
        SS,
        C0,
        C1,
        C2,
        C3,
        C4,
        C5,
        C6,
        C7,
        CH,
        B1::To<E2, D2>,
        B2::To<E2, D2>,
        B3::To<E2, D2>,
        B4::To<E2, D2>,
        B5::To<E2, D2>,
        B6::To<E2, D2>,
        B7::To<E2, D2>,
        E2,
        D2,
    >;

    fn iter_tensors<V: ModuleVisitor<Self, E, D>>(visitor: &mut V) -> Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
        visitor.visit_fields(
            (
                Self::module("conv_stem", |s| &s.conv_stem, |s| &mut s.conv_stem),
                Self::module("bn1", |s| &s.bn1, |s| &mut s.bn1),
                (
                    Self::module("blocks.0", |s| &s.blocks.0, |s| &mut s.blocks.0),
                    Self::module("blocks.1", |s| &s.blocks.1, |s| &mut s.blocks.1),
                    Self::module("blocks.2", |s| &s.blocks.2, |s| &mut s.blocks.2),
                    Self::module("blocks.3", |s| &s.blocks.3, |s| &mut s.blocks.3),
                    Self::module("blocks.4", |s| &s.blocks.4, |s| &mut s.blocks.4),
                    Self::module("blocks.5", |s| &s.blocks.5, |s| &mut s.blocks.5),
                ),
                Self::module("blocks.6", |s| &s.blocks.6, |s| &mut s.blocks.6),
                Self::module("conv_head", |s| &s.conv_head, |s| &mut s.conv_head),
                Self::module("bn2", |s| &s.bn2, |s| &mut s.bn2),
            ),
            |(conv_stem, bn1, (b1, b2, b3, b4, b5, b6), b7, conv_head, bn2)| EfficientNet {
                conv_stem,
                bn1,
                blocks: (b1, b2, b3, b4, b5, b6, b7),
                conv_head,
                bn2,
            },
        )
    }
}

impl<const C: usize, const RD: usize, D: Kernels<f32>> SqueezeExcite<C, RD, f32, D> {
    fn excite<T: AnyTape<D>>(
        &mut self,
        x: Tensor<Image<C>, f32, D, T>,
        mode: Mode,
    ) -> Result<Tensor<Image<C>, f32, D, T>, OpError> {
        let n = x.shape().0;
        let s = D::global_avg_pool2d(x.retaped::<T>())?
            .try_reshape_like(&(n, Const::<C>, 1, 1))
            .map_err(OpError::device)?;
        let s = D::silu(self.conv_reduce.run(s, mode)?)?;
        let s = self.conv_expand.run(s, mode)?;
        let s = s.try_sigmoid().and_then(|s| s.try_reshape_like(&(n, Const::<C>))).map_err(OpError::device)?;
        D::scale_channels(x, s)
    }
}

impl<const I: usize, const O: usize, const K: usize, const RD: usize, D: Kernels<f32>> Stage<I, O, D>
    for DepthwiseSeparable<I, O, K, RD, f32, D>
{
    fn run_stage<T: AnyTape<D>>(
        &mut self,
        x: Tensor<Image<I>, f32, D, T>,
        mode: Mode,
    ) -> Result<Tensor<Image<O>, f32, D, T>, OpError> {
        let shortcut = x.retaped::<T>();
        let y = D::silu(self.bn1.run(self.conv_dw.run(x, mode)?, mode)?)?;
        let y = self.se.excite(y, mode)?;
        let y = self.bn2.run(self.conv_pw.run(y, mode)?, mode)?;
        residual::<I, O, D, T>(y, shortcut, 1, self.drop_path, mode)
    }

    fn set_drop_path(&mut self, start: usize, rate: &dyn Fn(usize) -> f64) -> usize {
        self.drop_path = rate(start);
        start + 1
    }
}

impl<
        const I: usize,
        const O: usize,
        const MID: usize,
        const K: usize,
        const S: usize,
        const RD: usize,
        D: Kernels<f32>,
    > Stage<I, O, D> for MbConv<I, O, MID, K, S, RD, f32, D>
{
    fn run_stage<T: AnyTape<D>>(
        &mut self,
        x: Tensor<Image<I>, f32, D, T>,
        mode: Mode,
    ) -> Result<Tensor<Image<O>, f32, D, T>, OpError> {
        let shortcut = x.retaped::<T>();
        let y = D::silu(self.bn1.run(self.conv_pw.run(x, mode)?, mode)?)?;
        let y = D::silu(self.bn2.run(self.conv_dw.run(y, mode)?, mode)?)?;
        let y = self.se.excite(y, mode)?;
        let y = self.bn3.run(self.conv_pwl.run(y, mode)?, mode)?;
        residual::<I, O, D, T>(y, shortcut, S, self.drop_path, mode)
    }

    fn set_drop_path(&mut self, start: usize, rate: &dyn Fn(usize) -> f64) -> usize {
        self.drop_path = rate(start);
        start + 1
    }
}

/// Adds the block input when the block keeps stride 1 and width (`I == O`), after drop-path on
/// the branch; returns the branch unchanged otherwise.
fn residual<const I: usize, const O: usize, D: Kernels<f32>, T: AnyTape<D>>(
    y: Tensor<Image<O>, f32, D, T>,
    shortcut: Tensor<Image<I>, f32, D, T>,
    stride: usize,
    drop_prob: f64,
    mode: Mode,
) -> Result<Tensor<Image<O>, f32, D, T>, OpError> {
    if I != O || stride != 1 {
        return Ok(y);
    }
    let shape = *y.shape();
    let shortcut = shortcut.try_reshape_like(&shape).map_err(OpError::device)?;
    D::residual_add(D::drop_path(y, drop_prob, mode.training())?, shortcut, false)
}

impl<const I: usize, const O: usize, D: Kernels<f32>, F: Stage<I, O, D>, R: Stage<O, O, D>, const N: usize>
    Stage<I, O, D> for Blocks<F, R, N>
{
    fn run_stage<T: AnyTape<D>>(
        &mut self,
        x: Tensor<Image<I>, f32, D, T>,
        mode: Mode,
    ) -> Result<Tensor<Image<O>, f32, D, T>, OpError> {
        let mut y = self.first.run_stage(x, mode)?;
        for block in &mut self.rest {
            y = block.run_stage(y, mode)?;
        }
        Ok(y)
    }

    fn set_drop_path(&mut self, start: usize, rate: &dyn Fn(usize) -> f64) -> usize {
        let mut next = self.first.set_drop_path(start, rate);
        for block in &mut self.rest {
            next = block.set_drop_path(next, rate);
        }
        next
    }
}

#[allow(clippy::type_complexity)]
impl<
        const SS: usize,
        const C0: usize,
        const C1: usize,
        const C2: usize,
        const C3: usize,
        const C4: usize,
        const C5: usize,
        const C6: usize,
        const C7: usize,
        const CH: usize,
        B1: Stage<C0, C1, D>,
        B2: Stage<C1, C2, D>,
        B3: Stage<C2, C3, D>,
        B4: Stage<C3, C4, D>,
        B5: Stage<C4, C5, D>,
        B6: Stage<C5, C6, D>,
        B7: Stage<C6, C7, D>,
        D: Kernels<f32>,
    > EfficientNet<SS, C0, C1, C2, C3, C4, C5, C6, C7, CH, B1, B2, B3, B4, B5, B6, B7, f32, D>
{
    /// Sets timm's stochastic-depth schedule: block `i` of `n` drops its residual branch with
    /// probability `rate · i / n` (blocks without a residual ignore it).
    pub fn set_drop_path(&mut self, rate: f64) {
        let count = self.count_blocks();
        let f = move |i: usize| rate * i as f64 / count as f64;
        let b = &mut self.blocks;
        let next = b.0.set_drop_path(0, &f);
        let next = b.1.set_drop_path(next, &f);
        let next = b.2.set_drop_path(next, &f);
        let next = b.3.set_drop_path(next, &f);
        let next = b.4.set_drop_path(next, &f);
        let next = b.5.set_drop_path(next, &f);
        b.6.set_drop_path(next, &f);
    }

    fn count_blocks(&mut self) -> usize {
        let zero = |_: usize| 0.0;
        let b = &mut self.blocks;
        let mut n = b.0.set_drop_path(0, &zero);
        n = b.1.set_drop_path(n, &zero);
        n = b.2.set_drop_path(n, &zero);
        n = b.3.set_drop_path(n, &zero);
        n = b.4.set_drop_path(n, &zero);
        n = b.5.set_drop_path(n, &zero);
        b.6.set_drop_path(n, &zero)
    }
}

#[allow(clippy::type_complexity)]
impl<
        const SS: usize,
        const C0: usize,
        const C1: usize,
        const C2: usize,
        const C3: usize,
        const C4: usize,
        const C5: usize,
        const C6: usize,
        const C7: usize,
        const CH: usize,
        B1: Stage<C0, C1, D>,
        B2: Stage<C1, C2, D>,
        B3: Stage<C2, C3, D>,
        B4: Stage<C3, C4, D>,
        B5: Stage<C4, C5, D>,
        B6: Stage<C5, C6, D>,
        B7: Stage<C6, C7, D>,
        D: Kernels<f32>,
    > Backbone<CH, D> for EfficientNet<SS, C0, C1, C2, C3, C4, C5, C6, C7, CH, B1, B2, B3, B4, B5, B6, B7, f32, D>
{
    fn name(&self) -> String {
        format!("efficientnet (stem stride {SS}, widths {C0}/{C1}/{C2}/{C3}/{C4}/{C5}/{C6}/{C7}, head {CH})")
    }

    /// timm's `_init_weight_goog` (`fix_group_fanout=True`): every convolution N(0, 2/fan_out)
    /// with fan-out `O·k²/groups` (groups = O for the depthwise `conv_dw`), convolution biases
    /// (squeeze-and-excitation) 0, BatchNorm at 1 and 0 (as built).
    fn library_init(name: &str, shape: &[usize], _: bool) -> Option<Draw> {
        match shape.len() {
            4 => {
                let groups = if name.contains("conv_dw.") { shape[0] } else { 1 };
                Some(Draw::kaiming_normal(conv_fan_out(shape) / groups))
            }
            1 if name.contains(".se.") && name.ends_with(".bias") => Some(Draw::Constant(0.0)),
            _ => None,
        }
    }

    fn forward_traced<T: AnyTape<D>>(
        &mut self,
        x: Tensor<Image<3>, f32, D, T>,
        mode: Mode,
        trace: &mut StageTrace,
    ) -> Result<Tensor<(usize, Const<CH>), f32, D, T>, OpError> {
        // `mark`: each group's gradients final from here on in the backward pass (`ready`).
        let x = mark(mark(x, &self.conv_stem), &self.bn1);
        let y = D::silu(self.bn1.run(self.conv_stem.run_on_images(x)?, mode)?)?;
        trace.record("conv_stem+bn1", &y, || self.conv_stem.num_trainable_params() + self.bn1.num_trainable_params());
        let b = &mut self.blocks;
        let y = b.0.run_stage(mark(y, &b.0), mode)?;
        trace.record("blocks.0", &y, || b.0.num_trainable_params());
        let y = b.1.run_stage(mark(y, &b.1), mode)?;
        trace.record("blocks.1", &y, || b.1.num_trainable_params());
        let y = b.2.run_stage(mark(y, &b.2), mode)?;
        trace.record("blocks.2", &y, || b.2.num_trainable_params());
        let y = b.3.run_stage(mark(y, &b.3), mode)?;
        trace.record("blocks.3", &y, || b.3.num_trainable_params());
        let y = b.4.run_stage(mark(y, &b.4), mode)?;
        trace.record("blocks.4", &y, || b.4.num_trainable_params());
        let y = b.5.run_stage(mark(y, &b.5), mode)?;
        trace.record("blocks.5", &y, || b.5.num_trainable_params());
        let y = b.6.run_stage(mark(y, &b.6), mode)?;
        trace.record("blocks.6", &y, || b.6.num_trainable_params());
        let y = mark(mark(y, &self.conv_head), &self.bn2);
        let y = D::silu(self.bn2.run(self.conv_head.run(y, mode)?, mode)?)?;
        trace.record("conv_head+bn2", &y, || self.conv_head.num_trainable_params() + self.bn2.num_trainable_params());
        let y = D::global_avg_pool2d(y)?;
        trace.record("global_pool", &y, || 0);
        Ok(y)
    }
}
