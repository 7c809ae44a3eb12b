//! Normalisation layers with PyTorch's parameter names: [`BatchNorm`] (`nn.BatchNorm1d` /
//! `nn.BatchNorm2d`: `weight`, `bias`, and the `running_mean` / `running_var` buffers, which are
//! not trained; computed by the fused [`batch_norm`](crate::batch_norm) op) and [`LayerNorm`] (`weight`, `bias`, ε = 1e-6 as in timm's ViT and PiT; the
//! [`layer_norm`](crate::layer_norm) op).

use dfdx::nn::tensor_collection::{ModuleVisitor, TensorCollection, TensorOptions};
use dfdx::prelude::*;
use num_traits::Float;
use rand_distr::uniform::SampleUniform;

use super::{AnyTape, Block, Mode};
use crate::{BatchNormConfig, Image, Kernels, OpError};

/// BatchNorm over the channel axis, PyTorch's defaults: ε = 1e-5, momentum 0.1, running
/// variance updated with the unbiased batch variance.
#[derive(Clone, Debug)]
pub struct BatchNorm<const C: usize, E: Dtype = f32, D: Storage<E> = Cpu> {
    /// Scale γ, `[C]` (initialised to 1).
    pub weight: Tensor<Rank1<C>, E, D>,
    /// Shift β, `[C]` (initialised to 0).
    pub bias: Tensor<Rank1<C>, E, D>,
    /// Running mean (buffer), `[C]`.
    pub running_mean: Tensor<Rank1<C>, E, D>,
    /// Running variance (buffer), `[C]`.
    pub running_var: Tensor<Rank1<C>, E, D>,
}

/// `nn.BatchNorm1d`: normalises `[N, C]` features.
pub type BatchNorm1d<const C: usize, E = f32, D = Cpu> = BatchNorm<C, E, D>;
/// `nn.BatchNorm2d`: normalises `[N, C, H, W]` images per channel.
pub type BatchNorm2d<const C: usize, E = f32, D = Cpu> = BatchNorm<C, E, D>;

const BN_EPS: f64 = 1e-5;
const BN_MOMENTUM: f64 = 0.1;

impl<const C: usize, E: Dtype + Float + SampleUniform, D: Device<E>> TensorCollection<E, D> for BatchNorm<C, E, D> {
    type To<E2: Dtype, D2: Device<E2>> = BatchNorm<C, E2, D2>;

    fn iter_tensors<V: ModuleVisitor<Self, E, D>>(visitor: &mut V) -> Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
        visitor.visit_fields(
            (
                Self::tensor("weight", |s| &s.weight, |s| &mut s.weight, TensorOptions::reset_to_ones()),
                Self::tensor("bias", |s| &s.bias, |s| &mut s.bias, TensorOptions::reset_to_zeros()),
                Self::tensor(
                    "running_mean",
                    |s| &s.running_mean,
                    |s| &mut s.running_mean,
                    TensorOptions::detached(|t| t.try_fill_with_zeros()),
                ),
                Self::tensor(
                    "running_var",
                    |s| &s.running_var,
                    |s| &mut s.running_var,
                    TensorOptions::detached(|t| t.try_fill_with_ones()),
                ),
            ),
            |(weight, bias, running_mean, running_var)| BatchNorm { weight, bias, running_mean, running_var },
        )
    }
}

impl<const C: usize, Dv: Kernels<f32>> BatchNorm<C, f32, Dv> {
    /// BatchNorm then ReLU, fused (one op, as `nn.Sequential(bn, nn.ReLU())` computes).
    pub fn run_relu<S: Shape, T: AnyTape<Dv>>(
        &mut self,
        x: Tensor<S, f32, Dv, T>,
        mode: Mode,
    ) -> Result<Tensor<S, f32, Dv, T>, OpError> {
        self.apply(x, mode, true)
    }

    fn apply<S: Shape, T: AnyTape<Dv>>(
        &mut self,
        x: Tensor<S, f32, Dv, T>,
        mode: Mode,
        relu: bool,
    ) -> Result<Tensor<S, f32, Dv, T>, OpError> {
        let cfg = BatchNormConfig { training: mode.training(), momentum: BN_MOMENTUM, eps: BN_EPS, relu };
        Dv::batch_norm(
            x,
            self.weight.retaped::<T>(),
            self.bias.retaped::<T>(),
            &mut self.running_mean,
            &mut self.running_var,
            cfg,
        )
    }
}

impl<const C: usize, Dv: Kernels<f32>, T: AnyTape<Dv>> Block<Tensor<Image<C>, f32, Dv, T>> for BatchNorm<C, f32, Dv> {
    type Output = Tensor<Image<C>, f32, Dv, T>;
    fn run(&mut self, x: Tensor<Image<C>, f32, Dv, T>, mode: Mode) -> Result<Self::Output, OpError> {
        self.apply(x, mode, false)
    }
}

impl<const C: usize, Dv: Kernels<f32>, T: AnyTape<Dv>> Block<Tensor<(usize, Const<C>), f32, Dv, T>>
    for BatchNorm<C, f32, Dv>
{
    type Output = Tensor<(usize, Const<C>), f32, Dv, T>;
    fn run(&mut self, x: Tensor<(usize, Const<C>), f32, Dv, T>, mode: Mode) -> Result<Self::Output, OpError> {
        self.apply(x, mode, false)
    }
}

/// LayerNorm over the last axis, ε = 1e-6.
#[derive(Clone, Debug)]
pub struct LayerNorm<const M: usize, E: Dtype = f32, D: Storage<E> = Cpu> {
    /// Scale, `[M]` (initialised to 1).
    pub weight: Tensor<Rank1<M>, E, D>,
    /// Shift, `[M]` (initialised to 0).
    pub bias: Tensor<Rank1<M>, E, D>,
}

const LN_EPS: f64 = 1e-6;

impl<const M: usize, E: Dtype + Float + SampleUniform, D: Device<E>> TensorCollection<E, D> for LayerNorm<M, E, D> {
    type To<E2: Dtype, D2: Device<E2>> = LayerNorm<M, E2, D2>;

    fn iter_tensors<V: ModuleVisitor<Self, E, D>>(visitor: &mut V) -> Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
        visitor.visit_fields(
            (
                Self::tensor("weight", |s| &s.weight, |s| &mut s.weight, TensorOptions::reset_to_ones()),
                Self::tensor("bias", |s| &s.bias, |s| &mut s.bias, TensorOptions::reset_to_zeros()),
            ),
            |(weight, bias)| LayerNorm { weight, bias },
        )
    }
}

/// Tokens: `[N, L, M]`, normalised over `M`.
impl<const M: usize, Dv: Kernels<f32>, T: AnyTape<Dv>> Block<Tensor<(usize, usize, Const<M>), f32, Dv, T>>
    for LayerNorm<M, f32, Dv>
{
    type Output = Tensor<(usize, usize, Const<M>), f32, Dv, T>;
    fn run(&mut self, x: Tensor<(usize, usize, Const<M>), f32, Dv, T>, _: Mode) -> Result<Self::Output, OpError> {
        Dv::layer_norm(x, self.weight.retaped::<T>(), self.bias.retaped::<T>(), LN_EPS)
    }
}

/// Features: `[N, M]`, normalised over `M`.
impl<const M: usize, Dv: Kernels<f32>, T: AnyTape<Dv>> Block<Tensor<(usize, Const<M>), f32, Dv, T>>
    for LayerNorm<M, f32, Dv>
{
    type Output = Tensor<(usize, Const<M>), f32, Dv, T>;
    fn run(&mut self, x: Tensor<(usize, Const<M>), f32, Dv, T>, _: Mode) -> Result<Self::Output, OpError> {
        Dv::layer_norm(x, self.weight.retaped::<T>(), self.bias.retaped::<T>(), LN_EPS)
    }
}
