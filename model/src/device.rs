//! The devices the model runs on: [`Kernels`] gives every op of the crate a path per device —
//! the crate's own multithreaded kernels on [`Cpu`], the compositions of dfdx ops in
//! [`composed`](crate::composed) on `Cuda` (with the `cuda` feature). Layers and backbones are
//! generic over `D: Kernels<f32>` and call the ops through it, so one model type runs on either.

use dfdx::prelude::{Const, Cpu, Device, Merge, NoneTape, Rank1, Rank2, Rank4, Shape, Tape, Tensor};

use crate::{BatchNormConfig, Conv2dConfig, Element, Image, OpError, Pool2dConfig};

type Res<T> = Result<T, OpError>;
/// `[G, rows, cols]`.
type Mats<E, D, T> = Tensor<(usize, usize, usize), E, D, T>;
/// `[N, T, W]`.
type Tokens<const W: usize, E, D, T> = Tensor<(usize, usize, Const<W>), E, D, T>;

/// The ops of this crate on one device. Each method is the free function of the same name
/// (see its documentation), run by this device's implementation.
///
/// ```
/// use dfdx::prelude::*;
/// use siamlab_model::{Conv2dConfig, Kernels};
/// let dev = Cpu::default();
/// let x = dev.sample_normal_like(&(2, Const::<3>, 8, 8));
/// let w: Tensor<Rank4<4, 3, 3, 3>, f32, _> = dev.sample_normal();
/// let y = Cpu::conv2d(x, w, Conv2dConfig::default().padding(1)).unwrap();
/// assert_eq!(y.shape(), &(2, Const::<4>, 8, 8));
/// ```
#[allow(missing_docs)]
pub trait Kernels<E: Element>: Device<E> {
    /// The device's name for messages (`cpu`, `cuda`).
    fn kind(&self) -> &'static str;

    fn conv2d<const C: usize, const O: usize, const IG: usize, const K: usize, T, TW>(
        x: Tensor<Image<C>, E, Self, T>,
        weight: Tensor<Rank4<O, IG, K, K>, E, Self, TW>,
        cfg: Conv2dConfig,
    ) -> Res<Tensor<Image<O>, E, Self, T>>
    where
        T: Tape<E, Self> + Merge<TW> + Merge<NoneTape>,
        TW: Tape<E, Self>;

    fn conv2d_bias<const C: usize, const O: usize, const IG: usize, const K: usize, T, TW, TB>(
        x: Tensor<Image<C>, E, Self, T>,
        weight: Tensor<Rank4<O, IG, K, K>, E, Self, TW>,
        bias: Tensor<Rank1<O>, E, Self, TB>,
        cfg: Conv2dConfig,
    ) -> Res<Tensor<Image<O>, E, Self, T>>
    where
        T: Tape<E, Self> + Merge<TW> + Merge<TB> + Merge<NoneTape>,
        TW: Tape<E, Self>,
        TB: Tape<E, Self>;

    fn max_pool2d<const C: usize, T: Tape<E, Self> + Merge<NoneTape>>(
        x: Tensor<Image<C>, E, Self, T>,
        cfg: Pool2dConfig,
    ) -> Res<Tensor<Image<C>, E, Self, T>>;

    fn avg_pool2d<const C: usize, T: Tape<E, Self> + Merge<NoneTape>>(
        x: Tensor<Image<C>, E, Self, T>,
        cfg: Pool2dConfig,
    ) -> Res<Tensor<Image<C>, E, Self, T>>;

    fn global_avg_pool2d<const C: usize, T: Tape<E, Self>>(
        x: Tensor<Image<C>, E, Self, T>,
    ) -> Res<Tensor<(usize, Const<C>), E, Self, T>>;

    fn batch_norm<S: Shape, const C: usize, T, TW, TB>(
        x: Tensor<S, E, Self, T>,
        weight: Tensor<Rank1<C>, E, Self, TW>,
        bias: Tensor<Rank1<C>, E, Self, TB>,
        running_mean: &mut Tensor<Rank1<C>, E, Self>,
        running_var: &mut Tensor<Rank1<C>, E, Self>,
        cfg: BatchNormConfig,
    ) -> Res<Tensor<S, E, Self, T>>
    where
        T: Tape<E, Self> + Merge<TW> + Merge<TB> + Merge<NoneTape>,
        TW: Tape<E, Self>,
        TB: Tape<E, Self>;

    fn layer_norm<S: Shape, const M: usize, T, TW, TB>(
        x: Tensor<S, E, Self, T>,
        weight: Tensor<Rank1<M>, E, Self, TW>,
        bias: Tensor<Rank1<M>, E, Self, TB>,
        eps: f64,
    ) -> Res<Tensor<S, E, Self, T>>
    where
        T: Tape<E, Self> + Merge<TW> + Merge<TB>,
        TW: Tape<E, Self>,
        TB: Tape<E, Self>;

    fn linear<const I: usize, const O: usize, T, TW, TB>(
        x: Tensor<(usize, Const<I>), E, Self, T>,
        weight: Tensor<Rank2<O, I>, E, Self, TW>,
        bias: Tensor<Rank1<O>, E, Self, TB>,
    ) -> Res<Tensor<(usize, Const<O>), E, Self, T>>
    where
        T: Tape<E, Self> + Merge<TW> + Merge<TB>,
        TW: Tape<E, Self>,
        TB: Tape<E, Self>;

    fn linear_no_bias<const I: usize, const O: usize, T, TW>(
        x: Tensor<(usize, Const<I>), E, Self, T>,
        weight: Tensor<Rank2<O, I>, E, Self, TW>,
    ) -> Res<Tensor<(usize, Const<O>), E, Self, T>>
    where
        T: Tape<E, Self> + Merge<TW>,
        TW: Tape<E, Self>;

    fn mlp<const D: usize, const M: usize, T: Tape<E, Self> + Merge<T> + Merge<NoneTape>>(
        x: Tensor<(usize, Const<D>), E, Self, T>,
        w1: Tensor<Rank2<M, D>, E, Self, T>,
        b1: Tensor<Rank1<M>, E, Self, T>,
        w2: Tensor<Rank2<D, M>, E, Self, T>,
        b2: Tensor<Rank1<D>, E, Self, T>,
    ) -> Res<Tensor<(usize, Const<D>), E, Self, T>>;

    fn batched_matmul<T, TB>(a: Mats<E, Self, T>, b: Mats<E, Self, TB>, transpose_b: bool) -> Res<Mats<E, Self, T>>
    where
        T: Tape<E, Self> + Merge<TB>,
        TB: Tape<E, Self>;

    fn silu<S: Shape, T: Tape<E, Self>>(x: Tensor<S, E, Self, T>) -> Res<Tensor<S, E, Self, T>>;

    fn gelu<S: Shape, T: Tape<E, Self> + Merge<NoneTape>>(x: Tensor<S, E, Self, T>) -> Res<Tensor<S, E, Self, T>>;

    fn scaled_softmax<S: Shape, T: Tape<E, Self>>(x: Tensor<S, E, Self, T>, scale: f64) -> Res<Tensor<S, E, Self, T>>;

    fn split_heads<const W: usize, T: Tape<E, Self>>(
        x: Tokens<W, E, Self, T>,
        part: usize,
        parts: usize,
        heads: usize,
    ) -> Res<Mats<E, Self, T>>;

    fn merge_heads<const W: usize, T: Tape<E, Self>>(x: Mats<E, Self, T>, heads: usize) -> Res<Tokens<W, E, Self, T>>;

    fn attention<const Q: usize, const D: usize, T: Tape<E, Self> + Merge<T>>(
        qkv: Tokens<Q, E, Self, T>,
        heads: usize,
        scale: f64,
    ) -> Res<Tokens<D, E, Self, T>>;

    fn scale_channels<const C: usize, T, TS>(
        x: Tensor<Image<C>, E, Self, T>,
        s: Tensor<(usize, Const<C>), E, Self, TS>,
    ) -> Res<Tensor<Image<C>, E, Self, T>>
    where
        T: Tape<E, Self> + Merge<TS>,
        TS: Tape<E, Self>;

    fn drop_path<S: Shape, T: Tape<E, Self>>(
        x: Tensor<S, E, Self, T>,
        drop_prob: f64,
        training: bool,
    ) -> Res<Tensor<S, E, Self, T>>;

    fn residual_add<S: Shape, T, TS>(
        x: Tensor<S, E, Self, T>,
        shortcut: Tensor<S, E, Self, TS>,
        relu: bool,
    ) -> Res<Tensor<S, E, Self, T>>
    where
        T: Tape<E, Self> + Merge<TS>,
        TS: Tape<E, Self>;
}

/// Implements [`Kernels`] for a device by forwarding every op to the functions of a module
/// with the same names and signatures.
macro_rules! forward_kernels {
    ($dev:ty, $kind:literal, $($m:ident)::+) => {
        impl<E: Element> Kernels<E> for $dev
        where
            $dev: Device<E>,
        {
            fn kind(&self) -> &'static str {
                $kind
            }
            fn conv2d<const C: usize, const O: usize, const IG: usize, const K: usize, T, TW>(
                x: Tensor<Image<C>, E, Self, T>,
                weight: Tensor<Rank4<O, IG, K, K>, E, Self, TW>,
                cfg: Conv2dConfig,
            ) -> Res<Tensor<Image<O>, E, Self, T>>
            where
                T: Tape<E, Self> + Merge<TW> + Merge<NoneTape>,
                TW: Tape<E, Self>,
            {
                $($m)::+::conv2d(x, weight, cfg)
            }
            fn conv2d_bias<const C: usize, const O: usize, const IG: usize, const K: usize, T, TW, TB>(
                x: Tensor<Image<C>, E, Self, T>,
                weight: Tensor<Rank4<O, IG, K, K>, E, Self, TW>,
                bias: Tensor<Rank1<O>, E, Self, TB>,
                cfg: Conv2dConfig,
            ) -> Res<Tensor<Image<O>, E, Self, T>>
            where
                T: Tape<E, Self> + Merge<TW> + Merge<TB> + Merge<NoneTape>,
                TW: Tape<E, Self>,
                TB: Tape<E, Self>,
            {
                $($m)::+::conv2d_bias(x, weight, bias, cfg)
            }
            fn max_pool2d<const C: usize, T: Tape<E, Self> + Merge<NoneTape>>(
                x: Tensor<Image<C>, E, Self, T>,
                cfg: Pool2dConfig,
            ) -> Res<Tensor<Image<C>, E, Self, T>> {
                $($m)::+::max_pool2d(x, cfg)
            }
            fn avg_pool2d<const C: usize, T: Tape<E, Self> + Merge<NoneTape>>(
                x: Tensor<Image<C>, E, Self, T>,
                cfg: Pool2dConfig,
            ) -> Res<Tensor<Image<C>, E, Self, T>> {
                $($m)::+::avg_pool2d(x, cfg)
            }
            fn global_avg_pool2d<const C: usize, T: Tape<E, Self>>(
                x: Tensor<Image<C>, E, Self, T>,
            ) -> Res<Tensor<(usize, Const<C>), E, Self, T>> {
                $($m)::+::global_avg_pool2d(x)
            }
            fn batch_norm<S: Shape, const C: usize, T, TW, TB>(
                x: Tensor<S, E, Self, T>,
                weight: Tensor<Rank1<C>, E, Self, TW>,
                bias: Tensor<Rank1<C>, E, Self, TB>,
                running_mean: &mut Tensor<Rank1<C>, E, Self>,
                running_var: &mut Tensor<Rank1<C>, E, Self>,
                cfg: BatchNormConfig,
            ) -> Res<Tensor<S, E, Self, T>>
            where
                T: Tape<E, Self> + Merge<TW> + Merge<TB> + Merge<NoneTape>,
                TW: Tape<E, Self>,
                TB: Tape<E, Self>,
            {
                $($m)::+::batch_norm(x, weight, bias, running_mean, running_var, cfg)
            }
            fn layer_norm<S: Shape, const M: usize, T, TW, TB>(
                x: Tensor<S, E, Self, T>,
                weight: Tensor<Rank1<M>, E, Self, TW>,
                bias: Tensor<Rank1<M>, E, Self, TB>,
                eps: f64,
            ) -> Res<Tensor<S, E, Self, T>>
            where
                T: Tape<E, Self> + Merge<TW> + Merge<TB>,
                TW: Tape<E, Self>,
                TB: Tape<E, Self>,
            {
                $($m)::+::layer_norm(x, weight, bias, eps)
            }
            fn linear<const I: usize, const O: usize, T, TW, TB>(
                x: Tensor<(usize, Const<I>), E, Self, T>,
                weight: Tensor<Rank2<O, I>, E, Self, TW>,
                bias: Tensor<Rank1<O>, E, Self, TB>,
            ) -> Res<Tensor<(usize, Const<O>), E, Self, T>>
            where
                T: Tape<E, Self> + Merge<TW> + Merge<TB>,
                TW: Tape<E, Self>,
                TB: Tape<E, Self>,
            {
                $($m)::+::linear(x, weight, bias)
            }
            fn linear_no_bias<const I: usize, const O: usize, T, TW>(
                x: Tensor<(usize, Const<I>), E, Self, T>,
                weight: Tensor<Rank2<O, I>, E, Self, TW>,
            ) -> Res<Tensor<(usize, Const<O>), E, Self, T>>
            where
                T: Tape<E, Self> + Merge<TW>,
                TW: Tape<E, Self>,
            {
                $($m)::+::linear_no_bias(x, weight)
            }
            fn mlp<const D: usize, const M: usize, T: Tape<E, Self> + Merge<T> + Merge<NoneTape>>(
                x: Tensor<(usize, Const<D>), E, Self, T>,
                w1: Tensor<Rank2<M, D>, E, Self, T>,
                b1: Tensor<Rank1<M>, E, Self, T>,
                w2: Tensor<Rank2<D, M>, E, Self, T>,
                b2: Tensor<Rank1<D>, E, Self, T>,
            ) -> Res<Tensor<(usize, Const<D>), E, Self, T>> {
                $($m)::+::mlp(x, w1, b1, w2, b2)
            }
            fn batched_matmul<T, TB>(
                a: Mats<E, Self, T>,
                b: Mats<E, Self, TB>,
                transpose_b: bool,
            ) -> Res<Mats<E, Self, T>>
            where
                T: Tape<E, Self> + Merge<TB>,
                TB: Tape<E, Self>,
            {
                $($m)::+::batched_matmul(a, b, transpose_b)
            }
            fn silu<S: Shape, T: Tape<E, Self>>(x: Tensor<S, E, Self, T>) -> Res<Tensor<S, E, Self, T>> {
                $($m)::+::silu(x)
            }
            fn gelu<S: Shape, T: Tape<E, Self> + Merge<NoneTape>>(
                x: Tensor<S, E, Self, T>,
            ) -> Res<Tensor<S, E, Self, T>> {
                $($m)::+::gelu(x)
            }
            fn scaled_softmax<S: Shape, T: Tape<E, Self>>(
                x: Tensor<S, E, Self, T>,
                scale: f64,
            ) -> Res<Tensor<S, E, Self, T>> {
                $($m)::+::scaled_softmax(x, scale)
            }
            fn split_heads<const W: usize, T: Tape<E, Self>>(
                x: Tokens<W, E, Self, T>,
                part: usize,
                parts: usize,
                heads: usize,
            ) -> Res<Mats<E, Self, T>> {
                $($m)::+::split_heads(x, part, parts, heads)
            }
            fn merge_heads<const W: usize, T: Tape<E, Self>>(
                x: Mats<E, Self, T>,
                heads: usize,
            ) -> Res<Tokens<W, E, Self, T>> {
                $($m)::+::merge_heads(x, heads)
            }
            fn attention<const Q: usize, const D: usize, T: Tape<E, Self> + Merge<T>>(
                qkv: Tokens<Q, E, Self, T>,
                heads: usize,
                scale: f64,
            ) -> Res<Tokens<D, E, Self, T>> {
                $($m)::+::attention(qkv, heads, scale)
            }
            fn scale_channels<const C: usize, T, TS>(
                x: Tensor<Image<C>, E, Self, T>,
                s: Tensor<(usize, Const<C>), E, Self, TS>,
            ) -> Res<Tensor<Image<C>, E, Self, T>>
            where
                T: Tape<E, Self> + Merge<TS>,
                TS: Tape<E, Self>,
            {
                $($m)::+::scale_channels(x, s)
            }
            fn drop_path<S: Shape, T: Tape<E, Self>>(
                x: Tensor<S, E, Self, T>,
                drop_prob: f64,
                training: bool,
            ) -> Res<Tensor<S, E, Self, T>> {
                $($m)::+::drop_path(x, drop_prob, training)
            }
            fn residual_add<S: Shape, T, TS>(
                x: Tensor<S, E, Self, T>,
                shortcut: Tensor<S, E, Self, TS>,
                relu: bool,
            ) -> Res<Tensor<S, E, Self, T>>
            where
                T: Tape<E, Self> + Merge<TS>,
                TS: Tape<E, Self>,
            {
                $($m)::+::residual_add(x, shortcut, relu)
            }
        }
    };
}

forward_kernels!(Cpu, "cpu", crate::ops);
#[cfg(feature = "cuda")]
forward_kernels!(dfdx::tensor::Cuda, "cuda", crate::ops::composed);
