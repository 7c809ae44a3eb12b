//! Convolution layers with PyTorch's `nn.Conv2d` parameters: `weight` `[O, IG, K, K]` and, for
//! [`Conv2dBias`], `bias` `[O]`. Kernel, stride and padding are in the type, as in an
//! architecture table (`Conv2d<3, 64, 7, 2, 3>` is "7×7/2, 64, pad 3"); `IG` is the number of
//! input channels per group (`I` for a dense convolution, 1 for depthwise), so `groups = I / IG`.
//! PyTorch's default initialisation: uniform in ±1/√fan_in.

use dfdx::nn::tensor_collection::{ModuleVisitor, TensorCollection, TensorOptions};
use dfdx::prelude::{Cpu, Device, Dtype, Rank1, Rank4, Storage, Tensor};
use num_traits::Float;
use rand_distr::uniform::SampleUniform;
use rand_distr::Uniform;

use super::{AnyTape, Block, Mode};
use crate::{Conv2dConfig, Image, Kernels, OpError};

/// A convolution without bias (followed by a BatchNorm in the CNN backbones).
#[derive(Clone, Debug)]
pub struct Conv2d<
    const I: usize,
    const O: usize,
    const K: usize,
    const S: usize,
    const P: usize,
    const IG: usize = I,
    E: Dtype = f32,
    D: Storage<E> = Cpu,
> {
    /// `[O, IG, K, K]`.
    pub weight: Tensor<Rank4<O, IG, K, K>, E, D>,
}

/// A convolution with bias.
#[derive(Clone, Debug)]
pub struct Conv2dBias<
    const I: usize,
    const O: usize,
    const K: usize,
    const S: usize,
    const P: usize,
    const IG: usize = I,
    E: Dtype = f32,
    D: Storage<E> = Cpu,
> {
    /// `[O, IG, K, K]`.
    pub weight: Tensor<Rank4<O, IG, K, K>, E, D>,
    /// `[O]`.
    pub bias: Tensor<Rank1<O>, E, D>,
}

fn config<const I: usize, const IG: usize, const S: usize, const P: usize>() -> Conv2dConfig {
    Conv2dConfig::default().stride(S).padding(P).groups(I / IG.max(1))
}

/// The bound of PyTorch's default initialisation, 1/√fan_in.
fn bound<E: Dtype + Float>(fan_in: usize) -> E {
    E::one() / E::from(fan_in).expect("fan-in fits the float type").sqrt()
}

impl<const I: usize, const O: usize, const K: usize, const S: usize, const P: usize, const IG: usize, E, D>
    TensorCollection<E, D> for Conv2d<I, O, K, S, P, IG, E, D>
where
    E: Dtype + Float + SampleUniform,
    D: Device<E>,
{
    type To<E2: Dtype, D2: Device<E2>> = Conv2d<I, O, K, S, P, IG, E2, D2>;

    fn iter_tensors<V: ModuleVisitor<Self, E, D>>(visitor: &mut V) -> Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
        visitor.visit_fields(
            Self::tensor(
                "weight",
                |s| &s.weight,
                |s| &mut s.weight,
                TensorOptions::reset_with(|t| {
                    let b: E = bound(IG * K * K);
                    t.try_fill_with_distr(Uniform::new(-b, b))
                }),
            ),
            |weight| Conv2d { weight },
        )
    }
}

impl<const I: usize, const O: usize, const K: usize, const S: usize, const P: usize, const IG: usize, E, D>
    TensorCollection<E, D> for Conv2dBias<I, O, K, S, P, IG, E, D>
where
    E: Dtype + Float + SampleUniform,
    D: Device<E>,
{
    type To<E2: Dtype, D2: Device<E2>> = Conv2dBias<I, O, K, S, P, IG, E2, D2>;

    fn iter_tensors<V: ModuleVisitor<Self, E, D>>(visitor: &mut V) -> Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
        visitor.visit_fields(
            (
                Self::tensor(
                    "weight",
                    |s| &s.weight,
                    |s| &mut s.weight,
                    TensorOptions::reset_with(|t| {
                        let b: E = bound(IG * K * K);
                        t.try_fill_with_distr(Uniform::new(-b, b))
                    }),
                ),
                Self::tensor(
                    "bias",
                    |s| &s.bias,
                    |s| &mut s.bias,
                    TensorOptions::reset_with(|t| {
                        let b: E = bound(IG * K * K);
                        t.try_fill_with_distr(Uniform::new(-b, b))
                    }),
                ),
            ),
            |(weight, bias)| Conv2dBias { weight, bias },
        )
    }
}

impl<
        const I: usize,
        const O: usize,
        const K: usize,
        const S: usize,
        const P: usize,
        const IG: usize,
        Dv: Kernels<f32>,
        T: AnyTape<Dv>,
    > Block<Tensor<Image<I>, f32, Dv, T>> for Conv2d<I, O, K, S, P, IG, f32, Dv>
{
    type Output = Tensor<Image<O>, f32, Dv, T>;
    fn run(&mut self, x: Tensor<Image<I>, f32, Dv, T>, _: Mode) -> Result<Self::Output, OpError> {
        Dv::conv2d(x, self.weight.retaped::<T>(), config::<I, IG, S, P>())
    }
}

impl<const I: usize, const O: usize, const K: usize, const S: usize, const P: usize, const IG: usize, Dv>
    Conv2d<I, O, K, S, P, IG, f32, Dv>
where
    Dv: Kernels<f32>,
{
    /// The convolution as a network's first layer: backward computes no gradient for `x`,
    /// the images (PyTorch's inputs do not require grad either); the weight's is as in `run`.
    pub fn run_on_images<T: AnyTape<Dv>>(
        &mut self,
        x: Tensor<Image<I>, f32, Dv, T>,
    ) -> Result<Tensor<Image<O>, f32, Dv, T>, OpError> {
        Dv::conv2d(x, self.weight.retaped::<T>(), config::<I, IG, S, P>().input_grad(false))
    }
}

impl<const I: usize, const O: usize, const K: usize, const S: usize, const P: usize, const IG: usize, Dv>
    Conv2dBias<I, O, K, S, P, IG, f32, Dv>
where
    Dv: Kernels<f32>,
{
    /// As [`Conv2d::run_on_images`]: no gradient for the images `x`.
    pub fn run_on_images<T: AnyTape<Dv>>(
        &mut self,
        x: Tensor<Image<I>, f32, Dv, T>,
    ) -> Result<Tensor<Image<O>, f32, Dv, T>, OpError> {
        let cfg = config::<I, IG, S, P>().input_grad(false);
        Dv::conv2d_bias(x, self.weight.retaped::<T>(), self.bias.retaped::<T>(), cfg)
    }
}

impl<
        const I: usize,
        const O: usize,
        const K: usize,
        const S: usize,
        const P: usize,
        const IG: usize,
        Dv: Kernels<f32>,
        T: AnyTape<Dv>,
    > Block<Tensor<Image<I>, f32, Dv, T>> for Conv2dBias<I, O, K, S, P, IG, f32, Dv>
{
    type Output = Tensor<Image<O>, f32, Dv, T>;
    fn run(&mut self, x: Tensor<Image<I>, f32, Dv, T>, _: Mode) -> Result<Self::Output, OpError> {
        Dv::conv2d_bias(x, self.weight.retaped::<T>(), self.bias.retaped::<T>(), config::<I, IG, S, P>())
    }
}

/// A depthwise convolution (one filter per channel, `groups = C`, no bias) with "same" padding
/// `K / 2`: `weight` `[C, 1, K, K]`.
#[derive(Clone, Debug)]
pub struct DwConv2d<const C: usize, const K: usize, const S: usize, E: Dtype = f32, D: Storage<E> = Cpu> {
    /// `[C, 1, K, K]`.
    pub weight: Tensor<Rank4<C, 1, K, K>, E, D>,
}

impl<const C: usize, const K: usize, const S: usize, E, D> TensorCollection<E, D> for DwConv2d<C, K, S, E, D>
where
    E: Dtype + Float + SampleUniform,
    D: Device<E>,
{
    type To<E2: Dtype, D2: Device<E2>> = DwConv2d<C, K, S, E2, D2>;

    fn iter_tensors<V: ModuleVisitor<Self, E, D>>(visitor: &mut V) -> Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
        visitor.visit_fields(
            Self::tensor(
                "weight",
                |s| &s.weight,
                |s| &mut s.weight,
                TensorOptions::reset_with(|t| {
                    let b: E = bound(K * K);
                    t.try_fill_with_distr(Uniform::new(-b, b))
                }),
            ),
            |weight| DwConv2d { weight },
        )
    }
}

impl<const C: usize, const K: usize, const S: usize, Dv: Kernels<f32>, T: AnyTape<Dv>>
    Block<Tensor<Image<C>, f32, Dv, T>> for DwConv2d<C, K, S, f32, Dv>
{
    type Output = Tensor<Image<C>, f32, Dv, T>;
    fn run(&mut self, x: Tensor<Image<C>, f32, Dv, T>, _: Mode) -> Result<Self::Output, OpError> {
        Dv::conv2d(x, self.weight.retaped::<T>(), Conv2dConfig::default().stride(S).padding(K / 2).groups(C))
    }
}
