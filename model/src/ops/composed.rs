//! The model ops as compositions of dfdx's own tensor ops, generic over the device: what runs
//! on [`Cuda`](https://docs.rs/dfdx/0.13/dfdx/tensor/struct.Cuda.html) (dfdx's CUDA kernels and
//! cuBLAS do the work, dfdx's tape does the backward pass), and a second implementation of every
//! op that the tests run on `Cpu` against the crate's own kernels, forward and backward.
//!
//! Convolution and pooling gather their windows (im2col) with dfdx's `gather` over the input
//! laid out as `[C·H·W + 1, N]` — the extra row is the padding value — with one index per
//! window tap and output position (independent of the batch size), then multiply by the
//! weights with dfdx's (batched) matmul or reduce with `max` / `sum`. BatchNorm, LayerNorm,
//! softmax, GELU, SiLU and the attention reshapes are the textbook formulas on broadcasts and
//! reductions. Results equal the `Cpu` kernels up to float rounding; one documented
//! difference: where a max-pool window holds several equal maxima, dfdx's `max` passes the
//! gradient to each of them (PyTorch and the `Cpu` kernel to the first).

use dfdx::prelude::*;

use super::Image;
use crate::{BatchNormConfig, Conv2dConfig, OpError, Pool2dConfig};

type Res<T> = Result<T, OpError>;
/// `[rows, cols]`.
type Rows<E, D, T> = Tensor<(usize, usize), E, D, T>;
/// `[G, rows, cols]`.
type Mats<E, D, T> = Tensor<(usize, usize, usize), E, D, T>;
/// `[N, T, W]`.
type Tokens<const W: usize, E, D, T> = Tensor<(usize, usize, Const<W>), E, D, T>;

/// `e` as the element type.
fn elem<E: Dtype>(v: f64) -> E {
    E::from_f64(v).expect("value fits the float type")
}

/// `x` `[N, C, H, W]` as rows `[C·H·W + 1, N]`: one row per input position, the batch along
/// the row, and a last row of `fill` that padded taps read.
fn padded_rows<const C: usize, E: Dtype, D: Device<E>, T: Tape<E, D> + Merge<NoneTape>>(
    x: Tensor<Image<C>, E, D, T>,
    fill: E,
) -> Result<Rows<E, D, T>, D::Err> {
    let &(n, _, h, w) = x.shape();
    let dev = x.device().clone();
    let rows =
        x.try_permute::<(Const<C>, usize, usize, usize), Axes4<1, 2, 3, 0>>()?.try_reshape_like(&(C * h * w, n))?;
    let pad = dev.try_zeros_like(&(1usize, n))?.try_add(fill)?;
    (rows, pad).try_concat_along(Axis::<0>)
}

#[allow(clippy::too_many_arguments)]
/// For every input channel `c`, tap `(kh, kw)` and output position `(oh, ow)` in that order,
/// the row of [`padded_rows`] it reads (`C·H·W` for padding).
fn window_index(
    c: usize,
    h: usize,
    w: usize,
    k: usize,
    stride: usize,
    padding: usize,
    ho: usize,
    wo: usize,
) -> Vec<usize> {
    let pad_row = c * h * w;
    let mut idx = Vec::with_capacity(c * k * k * ho * wo);
    for ch in 0..c {
        for kh in 0..k {
            for kw in 0..k {
                for oh in 0..ho {
                    let ih = (oh * stride + kh).checked_sub(padding).filter(|&i| i < h);
                    for ow in 0..wo {
                        let iw = (ow * stride + kw).checked_sub(padding).filter(|&i| i < w);
                        idx.push(match (ih, iw) {
                            (Some(ih), Some(iw)) => (ch * h + ih) * w + iw,
                            _ => pad_row,
                        });
                    }
                }
            }
        }
    }
    idx
}

/// The windows of `x`: `[C·K·K·Ho·Wo, N]` (see [`window_index`]).
#[allow(clippy::too_many_arguments)]
fn windows<const C: usize, E: Dtype, D: Device<E>, T: Tape<E, D> + Merge<NoneTape>>(
    x: Tensor<Image<C>, E, D, T>,
    k: usize,
    stride: usize,
    padding: usize,
    ho: usize,
    wo: usize,
    fill: E,
) -> Result<Rows<E, D, T>, D::Err> {
    let &(_, _, h, w) = x.shape();
    let dev = x.device().clone();
    let idx = window_index(C, h, w, k, stride, padding, ho, wo);
    let z = idx.len();
    let idx = dev.try_tensor_from_vec(idx, (z,))?;
    padded_rows(x, fill)?.try_gather(idx)
}

/// [`conv2d`](crate::conv2d) on any device.
pub fn conv2d<const C: usize, const O: usize, const IG: usize, const K: usize, E, D, T, TW>(
    x: Tensor<Image<C>, E, D, T>,
    weight: Tensor<Rank4<O, IG, K, K>, E, D, TW>,
    cfg: Conv2dConfig,
) -> Res<Tensor<Image<O>, E, D, T>>
where
    E: Dtype,
    D: Device<E>,
    T: Tape<E, D> + Merge<TW> + Merge<NoneTape>,
    TW: Tape<E, D>,
{
    let &(n, _, h, w) = x.shape();
    let g = cfg.geometry((n, C, h, w), O, IG, K)?;
    conv_inner(x, weight, &cfg, g.ho, g.wo).map_err(OpError::device)
}

fn conv_inner<const C: usize, const O: usize, const IG: usize, const K: usize, E, D, T, TW>(
    x: Tensor<Image<C>, E, D, T>,
    weight: Tensor<Rank4<O, IG, K, K>, E, D, TW>,
    cfg: &Conv2dConfig,
    ho: usize,
    wo: usize,
) -> Result<Tensor<Image<O>, E, D, T>, D::Err>
where
    E: Dtype,
    D: Device<E>,
    T: Tape<E, D> + Merge<TW> + Merge<NoneTape>,
    TW: Tape<E, D>,
{
    let n = x.shape().0;
    let groups = cfg.groups;
    let (og, kk) = (O / groups, K * K);
    let l = ho * wo * n;
    let cols = windows(x, K, cfg.stride, cfg.padding, ho, wo, E::default())?;
    if groups == 1 {
        // [L, C·K·K] · [C·K·K, O] → [L, O], L = (oh, ow, n).
        let cols = cols.try_reshape_like(&(C * kk, l))?.try_permute::<(usize, usize), Axes2<1, 0>>()?;
        let w = weight.try_reshape_like(&(Const::<O>, IG * kk))?.try_permute::<(usize, Const<O>), Axes2<1, 0>>()?;
        let y = cols.try_matmul(w)?; // [L, O]
        y.try_reshape_like(&(ho, wo, n, Const::<O>))?.try_permute::<Image<O>, Axes4<2, 3, 0, 1>>()
    } else {
        // Per group: [L, IG·K·K] · [IG·K·K, og] → [G, L, og].
        let cols =
            cols.try_reshape_like(&(groups, IG * kk, l))?.try_permute::<(usize, usize, usize), Axes3<0, 2, 1>>()?;
        let w =
            weight.try_reshape_like(&(groups, og, IG * kk))?.try_permute::<(usize, usize, usize), Axes3<0, 2, 1>>()?;
        let y = cols.try_matmul(w)?; // [G, L, og]
        y.try_reshape_like(&(groups, ho, wo, n, og))?
            .try_permute::<(usize, usize, usize, usize, usize), Axes5<3, 0, 4, 1, 2>>()?
            .try_reshape_like(&(n, Const::<O>, ho, wo))
    }
}

/// [`conv2d_bias`](crate::conv2d_bias) on any device.
pub fn conv2d_bias<const C: usize, const O: usize, const IG: usize, const K: usize, E, D, T, TW, TB>(
    x: Tensor<Image<C>, E, D, T>,
    weight: Tensor<Rank4<O, IG, K, K>, E, D, TW>,
    bias: Tensor<Rank1<O>, E, D, TB>,
    cfg: Conv2dConfig,
) -> Res<Tensor<Image<O>, E, D, T>>
where
    E: Dtype,
    D: Device<E>,
    T: Tape<E, D> + Merge<TW> + Merge<TB> + Merge<NoneTape>,
    TW: Tape<E, D>,
    TB: Tape<E, D>,
{
    let y = conv2d(x, weight, cfg)?;
    let shape = *y.shape();
    let b = bias.try_broadcast_like::<_, Axes3<0, 2, 3>>(&shape).map_err(OpError::device)?;
    y.try_add(b).map_err(OpError::device)
}

/// [`max_pool2d`](crate::max_pool2d) on any device.
pub fn max_pool2d<const C: usize, E: Dtype, D: Device<E>, T: Tape<E, D> + Merge<NoneTape>>(
    x: Tensor<Image<C>, E, D, T>,
    cfg: Pool2dConfig,
) -> Res<Tensor<Image<C>, E, D, T>> {
    let &(n, _, h, w) = x.shape();
    let (_, _, ho, wo) = cfg.check("max_pool2d", h, w)?;
    let inner = || -> Result<_, D::Err> {
        let cols = windows(x, cfg.kernel, cfg.stride, cfg.padding, ho, wo, elem(f64::NEG_INFINITY))?;
        let cols = cols.try_reshape_like(&(Const::<C>, cfg.kernel * cfg.kernel, ho * wo * n))?;
        let y = cols.try_max::<(Const<C>, usize), Axis<1>>()?;
        y.try_reshape_like(&(Const::<C>, ho, wo, n))?.try_permute::<Image<C>, Axes4<3, 0, 1, 2>>()
    };
    inner().map_err(OpError::device)
}

/// [`avg_pool2d`](crate::avg_pool2d) on any device.
pub fn avg_pool2d<const C: usize, E: Dtype, D: Device<E>, T: Tape<E, D> + Merge<NoneTape>>(
    x: Tensor<Image<C>, E, D, T>,
    cfg: Pool2dConfig,
) -> Res<Tensor<Image<C>, E, D, T>> {
    let &(n, _, h, w) = x.shape();
    let (ah, aw, ho, wo) = cfg.check("avg_pool2d", h, w)?;
    let k = cfg.kernel;
    // The divisor of each output position, repeated over the batch (L = (oh, ow, n)).
    let inside = |a: &super::window::Axis, kk: usize, o: usize| {
        let i = o * a.stride + kk;
        i >= a.padding && i - a.padding < a.len
    };
    let mut inv = Vec::with_capacity(ho * wo * n);
    for oh in 0..ho {
        for ow in 0..wo {
            let count = if cfg.count_include_pad {
                k * k
            } else {
                (0..k).filter(|&kh| inside(&ah, kh, oh)).count() * (0..k).filter(|&kw| inside(&aw, kw, ow)).count()
            };
            inv.extend(std::iter::repeat_n(elem::<E>(1.0 / count.max(1) as f64), n));
        }
    }
    let dev = x.device().clone();
    let inner = || -> Result<_, D::Err> {
        let l = ho * wo * n;
        let inv = dev.try_tensor_from_vec(inv, (l,))?.try_broadcast_like::<_, Axis<0>>(&(Const::<C>, l))?;
        let cols = windows(x, k, cfg.stride, cfg.padding, ho, wo, E::default())?;
        let y =
            cols.try_reshape_like(&(Const::<C>, k * k, l))?.try_sum::<(Const<C>, usize), Axis<1>>()?.try_mul(inv)?;
        y.try_reshape_like(&(Const::<C>, ho, wo, n))?.try_permute::<Image<C>, Axes4<3, 0, 1, 2>>()
    };
    inner().map_err(OpError::device)
}

/// [`global_avg_pool2d`](crate::global_avg_pool2d) on any device.
pub fn global_avg_pool2d<const C: usize, E: Dtype, D: Device<E>, T: Tape<E, D>>(
    x: Tensor<Image<C>, E, D, T>,
) -> Res<Tensor<(usize, Const<C>), E, D, T>> {
    let &(_, _, h, w) = x.shape();
    if h * w == 0 {
        return Err(OpError::config("global_avg_pool2d", "empty input plane"));
    }
    x.try_mean::<(usize, Const<C>), Axes2<2, 3>>().map_err(OpError::device)
}

/// [`batch_norm`](crate::batch_norm) on any device: `x` is `[N, C, ...]`.
pub fn batch_norm<S, const C: usize, E, D, T, TW, TB>(
    x: Tensor<S, E, D, T>,
    weight: Tensor<Rank1<C>, E, D, TW>,
    bias: Tensor<Rank1<C>, E, D, TB>,
    running_mean: &mut Tensor<Rank1<C>, E, D>,
    running_var: &mut Tensor<Rank1<C>, E, D>,
    cfg: BatchNormConfig,
) -> Res<Tensor<S, E, D, T>>
where
    S: Shape,
    E: Dtype,
    D: Device<E>,
    T: Tape<E, D> + Merge<TW> + Merge<TB> + Merge<NoneTape>,
    TW: Tape<E, D>,
    TB: Tape<E, D>,
{
    let shape = *x.shape();
    let dims = shape.concrete();
    if S::NUM_DIMS < 2 || dims[1] != C {
        return Err(OpError::config("batch_norm", format!("axis 1 of {:?} is not {C} long", dims.as_ref())));
    }
    let n = dims[0];
    let l = shape.num_elements() / (n * C).max(1);
    let count = n * l;
    if cfg.training && count < 2 {
        return Err(OpError::config("batch_norm", format!("{count} value per channel in training")));
    }
    // Synchronized BatchNorm ([`crate::sync`]): the statistics' sums over every process.
    let sync = if cfg.training { crate::sync::reducer() } else { None };
    let s3 = (n, Const::<C>, l);
    let d = OpError::device;
    let x = x.try_reshape_like(&s3).map_err(d)?;
    let eps: E = elem(cfg.eps);
    let xhat = if cfg.training {
        // The mean detached (for the running statistics; the taped one is inside `centered`).
        let (mean_nt, centered, var, total) = match &sync {
            None => {
                let mean = x.retaped::<T>().try_mean::<Rank1<C>, Axes2<0, 2>>().map_err(d)?;
                let mean_nt = mean.retaped::<NoneTape>();
                let centered = x.try_sub(mean.try_broadcast_like::<_, Axes2<0, 2>>(&s3).map_err(d)?).map_err(d)?;
                let var = centered.retaped::<T>().try_square().and_then(|q| q.try_mean::<Rank1<C>, Axes2<0, 2>>());
                (mean_nt, centered, var.map_err(d)?, count as f64)
            }
            Some(r) => {
                // The sum and count, then the squared deviations from the common mean, summed
                // over every process (the CPU kernel's two reductions).
                let mut total = [count as f64];
                let sum = x.retaped::<T>().try_sum::<Rank1<C>, Axes2<0, 2>>().map_err(d)?;
                let sum = super::ranks_sum::ranks_sum(sum, r, &mut total)?;
                let total = total[0];
                if total < 2.0 {
                    return Err(OpError::config("batch_norm", format!("{total} values per channel in training")));
                }
                let mean = sum.try_mul(elem::<E>(1.0 / total)).map_err(d)?;
                let mean_nt = mean.retaped::<NoneTape>();
                let centered = x.try_sub(mean.try_broadcast_like::<_, Axes2<0, 2>>(&s3).map_err(d)?).map_err(d)?;
                let sq = centered.retaped::<T>().try_square().and_then(|q| q.try_sum::<Rank1<C>, Axes2<0, 2>>());
                let sq = super::ranks_sum::ranks_sum(sq.map_err(d)?, r, &mut [])?;
                (mean_nt, centered, sq.try_mul(elem::<E>(1.0 / total)).map_err(d)?, total)
            }
        };
        // Running statistics (detached copies; the taped ones carry the backward ops): the
        // unbiased variance, as PyTorch.
        let var_nt = var.retaped::<NoneTape>();
        let m: E = elem(cfg.momentum);
        let keep: E = elem(1.0 - cfg.momentum);
        let unbias: E = elem(total / (total - 1.0));
        let running = || -> Result<_, D::Err> {
            let rm = running_mean.clone().try_mul(keep)?.try_add(mean_nt.try_mul(m)?)?;
            let rv = running_var.clone().try_mul(keep)?.try_add(var_nt.try_mul(unbias)?.try_mul(m)?)?;
            Ok((rm, rv))
        };
        (*running_mean, *running_var) = running().map_err(d)?;
        let std = var.try_add(eps).and_then(|v| v.try_sqrt()).map_err(d)?;
        centered.try_div(std.try_broadcast_like::<_, Axes2<0, 2>>(&s3).map_err(d)?).map_err(d)?
    } else {
        let eval = || -> Result<_, D::Err> {
            let mean = running_mean.clone().try_broadcast_like::<_, Axes2<0, 2>>(&s3)?;
            let std = running_var.clone().try_add(eps)?.try_sqrt()?.try_broadcast_like::<_, Axes2<0, 2>>(&s3)?;
            x.try_sub(mean)?.try_div(std)
        };
        eval().map_err(d)?
    };
    let out = || -> Result<_, D::Err> {
        let y = xhat
            .try_mul(weight.try_broadcast_like::<_, Axes2<0, 2>>(&s3)?)?
            .try_add(bias.try_broadcast_like::<_, Axes2<0, 2>>(&s3)?)?;
        let y = if cfg.relu { y.try_relu()? } else { y };
        y.try_reshape_like(&shape)
    };
    out().map_err(d)
}

/// [`layer_norm`](crate::layer_norm) on any device: over the last axis, of length `M`.
pub fn layer_norm<S, const M: usize, E, D, T, TW, TB>(
    x: Tensor<S, E, D, T>,
    weight: Tensor<Rank1<M>, E, D, TW>,
    bias: Tensor<Rank1<M>, E, D, TB>,
    eps: f64,
) -> Res<Tensor<S, E, D, T>>
where
    S: Shape,
    E: Dtype,
    D: Device<E>,
    T: Tape<E, D> + Merge<TW> + Merge<TB>,
    TW: Tape<E, D>,
    TB: Tape<E, D>,
{
    let shape = *x.shape();
    let dims = shape.concrete();
    if S::NUM_DIMS == 0 || dims[S::NUM_DIMS - 1] != M {
        return Err(OpError::config("layer_norm", format!("last axis of {:?} is not {M} long", dims.as_ref())));
    }
    let s2 = (shape.num_elements() / M, Const::<M>);
    let inner = || -> Result<_, D::Err> {
        let x = x.try_reshape_like(&s2)?;
        let mean = x.retaped::<T>().try_mean::<(usize,), Axis<1>>()?;
        let centered = x.try_sub(mean.try_broadcast_like::<_, Axis<1>>(&s2)?)?;
        let var = centered.retaped::<T>().try_square()?.try_mean::<(usize,), Axis<1>>()?;
        let std = var.try_add(elem::<E>(eps))?.try_sqrt()?;
        let y = centered
            .try_div(std.try_broadcast_like::<_, Axis<1>>(&s2)?)?
            .try_mul(weight.try_broadcast_like::<_, Axis<0>>(&s2)?)?
            .try_add(bias.try_broadcast_like::<_, Axis<0>>(&s2)?)?;
        y.try_reshape_like(&shape)
    };
    inner().map_err(OpError::device)
}

/// [`linear`](crate::linear) on any device.
pub fn linear<const I: usize, const O: usize, E, D, T, TW, TB>(
    x: Tensor<(usize, Const<I>), E, D, T>,
    weight: Tensor<Rank2<O, I>, E, D, TW>,
    bias: Tensor<Rank1<O>, E, D, TB>,
) -> Res<Tensor<(usize, Const<O>), E, D, T>>
where
    E: Dtype,
    D: Device<E>,
    T: Tape<E, D> + Merge<TW> + Merge<TB>,
    TW: Tape<E, D>,
    TB: Tape<E, D>,
{
    let y = linear_no_bias(x, weight)?;
    let shape = *y.shape();
    y.try_add(bias.try_broadcast_like::<_, Axis<0>>(&shape).map_err(OpError::device)?).map_err(OpError::device)
}

/// [`mlp`](crate::mlp) on any device: `linear`, `gelu`, `linear`.
pub fn mlp<const D: usize, const M: usize, E, Dev, T>(
    x: Tensor<(usize, Const<D>), E, Dev, T>,
    w1: Tensor<Rank2<M, D>, E, Dev, T>,
    b1: Tensor<Rank1<M>, E, Dev, T>,
    w2: Tensor<Rank2<D, M>, E, Dev, T>,
    b2: Tensor<Rank1<D>, E, Dev, T>,
) -> Res<Tensor<(usize, Const<D>), E, Dev, T>>
where
    E: Dtype,
    Dev: Device<E>,
    T: Tape<E, Dev> + Merge<T> + Merge<NoneTape>,
{
    linear(gelu(linear(x, w1, b1)?)?, w2, b2)
}

/// [`linear_no_bias`](crate::linear_no_bias) on any device.
pub fn linear_no_bias<const I: usize, const O: usize, E, D, T, TW>(
    x: Tensor<(usize, Const<I>), E, D, T>,
    weight: Tensor<Rank2<O, I>, E, D, TW>,
) -> Res<Tensor<(usize, Const<O>), E, D, T>>
where
    E: Dtype,
    D: Device<E>,
    T: Tape<E, D> + Merge<TW>,
    TW: Tape<E, D>,
{
    let w = weight.try_permute::<Rank2<I, O>, Axes2<1, 0>>().map_err(OpError::device)?;
    x.try_matmul(w).map_err(OpError::device)
}

/// [`batched_matmul`](crate::batched_matmul) on any device.
pub fn batched_matmul<E, D, T, TB>(a: Mats<E, D, T>, b: Mats<E, D, TB>, transpose_b: bool) -> Res<Mats<E, D, T>>
where
    E: Dtype,
    D: Device<E>,
    T: Tape<E, D> + Merge<TB>,
    TB: Tape<E, D>,
{
    let (ga, _, ka) = *a.shape();
    let (gb, r, c) = *b.shape();
    let kb = if transpose_b { c } else { r };
    if ga != gb || ka != kb {
        return Err(OpError::config(
            "batched_matmul",
            format!("{:?} × {:?} (transpose_b {transpose_b}) do not fit", a.shape(), b.shape()),
        ));
    }
    let b = if transpose_b {
        b.try_permute::<(usize, usize, usize), Axes3<0, 2, 1>>().map_err(OpError::device)?
    } else {
        b
    };
    a.try_matmul(b).map_err(OpError::device)
}

/// [`silu`](crate::silu) on any device: `x · σ(x)`.
pub fn silu<S: Shape, E: Dtype, D: Device<E>, T: Tape<E, D>>(x: Tensor<S, E, D, T>) -> Res<Tensor<S, E, D, T>> {
    let s = x.retaped::<T>().try_sigmoid().map_err(OpError::device)?;
    x.try_mul(s).map_err(OpError::device)
}

/// [`gelu`](crate::gelu) on any device.
///
/// dfdx 0.13's `accurate_gelu` computes the exact forward `½x(1 + erf(x/√2))` but its gradient
/// misses the chain-rule factor 1/√2 of the density term: it gives `Φ(x) + x·e^(−x²/2)/√π`
/// for `Φ(x) + x·e^(−x²/2)/√(2π)`. So the composition is
/// `(1/√2)·accurate_gelu(x) + (1 − 1/√2)·x·sg(Φ(x))` — the same forward, and the gradient
/// `(1/√2)(Φ + B) + (1 − 1/√2)Φ = Φ + B/√2` with `B` dfdx's density term — where `sg(Φ)` is
/// computed without a tape by the Abramowitz–Stegun form the `Cpu` kernel uses.
pub fn gelu<S: Shape, E: Dtype, D: Device<E>, T: Tape<E, D> + Merge<NoneTape>>(
    x: Tensor<S, E, D, T>,
) -> Res<Tensor<S, E, D, T>> {
    let inner = || -> Result<_, D::Err> {
        let phi = normal_cdf(x.retaped::<NoneTape>())?;
        let c = std::f64::consts::FRAC_1_SQRT_2;
        let exact = x.retaped::<T>().try_accurate_gelu()?.try_mul(elem::<E>(c))?;
        x.try_mul(phi)?.try_mul(elem::<E>(1.0 - c))?.try_add(exact)
    };
    inner().map_err(OpError::device)
}

/// `Φ(x) = ½(1 + erf(x/√2))` without a tape: erf by Abramowitz & Stegun 7.1.26 (absolute
/// error below 1.5e-7), its sign from `x / (|x| + 1e-30)`.
fn normal_cdf<S: Shape, E: Dtype, D: Device<E>>(x: Tensor<S, E, D>) -> Result<Tensor<S, E, D>, D::Err> {
    let a = x.clone().try_abs()?.try_mul(elem::<E>(std::f64::consts::FRAC_1_SQRT_2))?;
    let t = a.clone().try_mul(elem::<E>(0.327_591_1))?.try_add(elem::<E>(1.0))?.try_recip()?;
    let mut poly = t.clone().try_mul(elem::<E>(1.061_405_429))?;
    for coef in [-1.453_152_027, 1.421_413_741, -0.284_496_736] {
        poly = poly.try_add(elem::<E>(coef))?.try_mul(t.clone())?;
    }
    let poly = poly.try_add(elem::<E>(0.254_829_592))?.try_mul(t)?;
    let e = poly.try_mul(a.try_square()?.try_negate()?.try_exp()?)?.try_negate()?.try_add(elem::<E>(1.0))?;
    let sign = x.clone().try_div(x.try_abs()?.try_add(elem::<E>(1e-30))?)?;
    e.try_mul(sign)?.try_add(elem::<E>(1.0))?.try_mul(elem::<E>(0.5))
}

/// [`scaled_softmax`](crate::scaled_softmax) on any device: over the last axis.
pub fn scaled_softmax<S: Shape, E: Dtype, D: Device<E>, T: Tape<E, D>>(
    x: Tensor<S, E, D, T>,
    scale: f64,
) -> Res<Tensor<S, E, D, T>> {
    let shape = *x.shape();
    let dims = shape.concrete();
    let len = if S::NUM_DIMS == 0 { 1 } else { dims[S::NUM_DIMS - 1] };
    if len == 0 || shape.num_elements() == 0 {
        return Ok(x);
    }
    let inner = || -> Result<_, D::Err> {
        x.try_reshape_like(&(shape.num_elements() / len, len))?
            .try_mul(elem::<E>(scale))?
            .try_softmax::<Axis<1>>()?
            .try_reshape_like(&shape)
    };
    inner().map_err(OpError::device)
}

/// [`split_heads`](crate::split_heads) on any device.
pub fn split_heads<const W: usize, E: Dtype, D: Device<E>, T: Tape<E, D>>(
    x: Tokens<W, E, D, T>,
    part: usize,
    parts: usize,
    heads: usize,
) -> Res<Mats<E, D, T>> {
    if parts == 0 || heads == 0 || part >= parts || !W.is_multiple_of(parts) || !(W / parts).is_multiple_of(heads) {
        return Err(OpError::config(
            "split_heads",
            format!("part {part} of {parts} of width {W} into {heads} heads: widths do not divide"),
        ));
    }
    let (n, t, _) = *x.shape();
    let (d, dh) = (W / parts, W / parts / heads);
    let inner = || -> Result<_, D::Err> {
        x.try_slice((.., .., part * d..(part + 1) * d))?
            .try_reshape_like(&(n, t, heads, dh))?
            .try_permute::<(usize, usize, usize, usize), Axes4<0, 2, 1, 3>>()?
            .try_reshape_like(&(n * heads, t, dh))
    };
    inner().map_err(OpError::device)
}

/// [`attention`](crate::attention) on any device: the separate head, product and softmax ops.
pub fn attention<const Q: usize, const D: usize, E, Dev, T>(
    qkv: Tokens<Q, E, Dev, T>,
    heads: usize,
    scale: f64,
) -> Res<Tokens<D, E, Dev, T>>
where
    E: Dtype,
    Dev: Device<E>,
    T: Tape<E, Dev> + Merge<T>,
{
    if Q != 3 * D || heads == 0 || !D.is_multiple_of(heads) {
        return Err(OpError::config(
            "attention",
            format!("qkv width {Q} must be 3 × {D} and {heads} heads divide {D}"),
        ));
    }
    let q = split_heads(qkv.retaped::<T>(), 0, 3, heads)?;
    let k = split_heads(qkv.retaped::<T>(), 1, 3, heads)?;
    let v = split_heads(qkv, 2, 3, heads)?;
    let weights = scaled_softmax(batched_matmul(q, k, true)?, scale)?;
    merge_heads::<D, _, _, _>(batched_matmul(weights, v, false)?, heads)
}

/// [`merge_heads`](crate::merge_heads) on any device.
pub fn merge_heads<const W: usize, E: Dtype, D: Device<E>, T: Tape<E, D>>(
    x: Mats<E, D, T>,
    heads: usize,
) -> Res<Tokens<W, E, D, T>> {
    let (nh, t, dh) = *x.shape();
    if heads == 0 || nh % heads != 0 || dh * heads != W {
        return Err(OpError::config("merge_heads", format!("[{nh}, {t}, {dh}] into {heads} heads of width {W}")));
    }
    let inner = || -> Result<_, D::Err> {
        x.try_reshape_like(&(nh / heads, heads, t, dh))?
            .try_permute::<(usize, usize, usize, usize), Axes4<0, 2, 1, 3>>()?
            .try_reshape_like(&(nh / heads, t, Const::<W>))
    };
    inner().map_err(OpError::device)
}

/// [`scale_channels`](crate::scale_channels) on any device.
pub fn scale_channels<const C: usize, E, D, T, TS>(
    x: Tensor<Image<C>, E, D, T>,
    s: Tensor<(usize, Const<C>), E, D, TS>,
) -> Res<Tensor<Image<C>, E, D, T>>
where
    E: Dtype,
    D: Device<E>,
    T: Tape<E, D> + Merge<TS>,
    TS: Tape<E, D>,
{
    let shape = *x.shape();
    if s.shape().0 != shape.0 {
        return Err(OpError::config("scale_channels", format!("{} scales for {} images", s.shape().0, shape.0)));
    }
    let s = s.try_broadcast_like::<_, Axes2<2, 3>>(&shape).map_err(OpError::device)?;
    x.try_mul(s).map_err(OpError::device)
}

/// [`drop_path`](crate::drop_path) on any device: the per-sample mask drawn on the host from
/// the device's generator, as the `Cpu` kernel draws it.
pub fn drop_path<S: Shape, E: Dtype, D: Device<E>, T: Tape<E, D>>(
    x: Tensor<S, E, D, T>,
    drop_prob: f64,
    training: bool,
) -> Res<Tensor<S, E, D, T>> {
    if !(0.0..1.0).contains(&drop_prob) {
        return Err(OpError::config("drop_path", format!("drop probability {drop_prob} outside [0, 1)")));
    }
    if S::NUM_DIMS == 0 {
        return Err(OpError::config("drop_path", "a scalar has no sample axis"));
    }
    if !training || drop_prob == 0.0 {
        return Ok(x);
    }
    let shape = *x.shape();
    let batch = shape.concrete()[0];
    let per = shape.num_elements() / batch.max(1);
    let keep = 1.0 - drop_prob;
    let dev = x.device().clone();
    let mask: Vec<E> = (0..batch)
        .map(|_| {
            let u = (dev.random_u64() >> 11) as f64 / (1u64 << 53) as f64;
            elem(if u < keep { 1.0 / keep } else { 0.0 })
        })
        .collect();
    let inner = || -> Result<_, D::Err> {
        let m = dev.try_tensor_from_vec(mask, (batch,))?.try_broadcast_like::<_, Axis<1>>(&(batch, per))?;
        x.try_reshape_like(&(batch, per))?.try_mul(m)?.try_reshape_like(&shape)
    };
    inner().map_err(OpError::device)
}

/// [`residual_add`](crate::residual_add) on any device.
pub fn residual_add<S, E, D, T, TS>(
    x: Tensor<S, E, D, T>,
    shortcut: Tensor<S, E, D, TS>,
    relu: bool,
) -> Res<Tensor<S, E, D, T>>
where
    S: Shape,
    E: Dtype,
    D: Device<E>,
    T: Tape<E, D> + Merge<TS>,
    TS: Tape<E, D>,
{
    if x.shape().concrete() != shortcut.shape().concrete() {
        return Err(OpError::config(
            "residual_add",
            format!(
                "shapes differ: {:?} and {:?}",
                x.shape().concrete().as_ref(),
                shortcut.shape().concrete().as_ref()
            ),
        ));
    }
    let y = x.try_add(shortcut).map_err(OpError::device)?;
    if relu {
        y.try_relu().map_err(OpError::device)
    } else {
        Ok(y)
    }
}
