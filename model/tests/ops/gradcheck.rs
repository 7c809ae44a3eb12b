//! Finite-difference gradient checks in f64: every op's backward against central differences
//! of `L = sum(r · y)` for a fixed random `r`.

use dfdx::prelude::*;
use siamlab_model::*;

use crate::{assert_close, randn, with_threads};

/// Checks the analytic gradients of `L(inputs) = sum(r · f(inputs))` against central
/// differences. `f` runs without a tape; `grads(inputs, r)` returns one gradient per input,
/// computed with a tape.
fn gradcheck(
    inputs: Vec<Vec<f64>>,
    f: impl Fn(&[Vec<f64>]) -> Vec<f64>,
    grads: impl Fn(&[Vec<f64>], &[f64]) -> Vec<Vec<f64>>,
) {
    let y = f(&inputs);
    let r = randn(99, y.len());
    let loss = |inp: &[Vec<f64>]| -> f64 { f(inp).iter().zip(&r).map(|(a, b)| a * b).sum() };
    let analytic = grads(&inputs, &r);
    assert_eq!(analytic.len(), inputs.len());
    let eps = 1e-6;
    for (k, input) in inputs.iter().enumerate() {
        let mut numeric = vec![0.0; input.len()];
        let mut probe = inputs.clone();
        for i in 0..input.len() {
            probe[k][i] = input[i] + eps;
            let up = loss(&probe);
            probe[k][i] = input[i] - eps;
            let down = loss(&probe);
            probe[k][i] = input[i];
            numeric[i] = (up - down) / (2.0 * eps);
        }
        assert_close(&analytic[k], &numeric, 1e-6, &format!("gradient of input {k}"));
    }
}

type Img<const C: usize> = Tensor<Image<C>, f64, Cpu>;

fn img<const C: usize>(dev: &Cpu, v: &[f64], n: usize, h: usize, w: usize) -> Img<C> {
    dev.tensor_from_vec(v.to_vec(), (n, Const::<C>, h, w))
}

/// Gradient check of a convolution with `C` in, `O` out channels, kernel `K`.
fn check_conv<const C: usize, const O: usize, const IG: usize, const K: usize>(
    (n, h, w): (usize, usize, usize),
    cfg: Conv2dConfig,
    bias: bool,
) {
    let dev = Cpu::default();
    let mut inputs = vec![randn(1, n * C * h * w), randn(2, O * IG * K * K)];
    if bias {
        inputs.push(randn(3, O));
    }
    let wt = |v: &[f64]| dev.tensor_from_vec(v.to_vec(), (Const::<O>, Const::<IG>, Const::<K>, Const::<K>));
    let bt = |v: &[f64]| dev.tensor_from_vec(v.to_vec(), (Const::<O>,));
    let f = |inp: &[Vec<f64>]| {
        let x = img::<C>(&dev, &inp[0], n, h, w);
        let y = match inp.get(2) {
            Some(b) => conv2d_bias(x, wt(&inp[1]), bt(b), cfg),
            None => conv2d(x, wt(&inp[1]), cfg),
        };
        y.unwrap().as_vec()
    };
    let grads = |inp: &[Vec<f64>], r: &[f64]| {
        let x = img::<C>(&dev, &inp[0], n, h, w);
        let wv = wt(&inp[1]);
        let bv = inp.get(2).map(|b| bt(b));
        let y = match &bv {
            Some(b) => conv2d_bias(x.leaky_trace(), wv.clone(), b.clone(), cfg),
            None => conv2d(x.leaky_trace(), wv.clone(), cfg),
        }
        .unwrap();
        let rt = dev.tensor_from_vec(r.to_vec(), *y.shape());
        let g = (y * rt).sum().backward();
        let mut out = vec![g.get(&x).as_vec(), g.get(&wv).as_vec()];
        if let Some(b) = &bv {
            out.push(g.get(b).as_vec());
        }
        out
    };
    gradcheck(inputs, f, grads);
}

#[test]
fn conv_3x3_same_bias() {
    check_conv::<3, 4, 3, 3>((2, 5, 6), Conv2dConfig::default().padding(1), true);
}

#[test]
fn conv_3x3_stride2() {
    check_conv::<2, 3, 2, 3>((2, 7, 6), Conv2dConfig::default().stride(2).padding(1), false);
}

#[test]
fn conv_strided_rows_by_phase() {
    // Strided columns are gathered (and their gradients scattered) through planes split by
    // row and column phase: strides 2 to 4, widths that the stride does or does not divide,
    // padding wider than a phase, a 7×7/2 stem.
    check_conv::<2, 3, 2, 4>((2, 9, 11), Conv2dConfig::default().stride(3).padding(1), true);
    check_conv::<2, 2, 2, 4>((2, 8, 8), Conv2dConfig::default().stride(4), false);
    check_conv::<2, 3, 2, 5>((2, 6, 9), Conv2dConfig::default().stride(2).padding(2), false);
    check_conv::<3, 4, 3, 7>((2, 12, 13), Conv2dConfig::default().stride(2).padding(3), true);
    // Outputs narrower than a phase row (no padding): the row-by-row path.
    check_conv::<2, 3, 2, 3>((2, 7, 8), Conv2dConfig::default().stride(2), true);
    check_conv::<2, 2, 2, 2>((2, 9, 7), Conv2dConfig::default().stride(3), false);
}

#[test]
fn conv_stride1_unpadded_and_partly_padded() {
    // Stride 1 takes the flipped-kernel input gradient for any padding up to k − 1.
    check_conv::<2, 3, 2, 3>((2, 5, 6), Conv2dConfig::default(), false);
    check_conv::<2, 3, 2, 5>((2, 6, 5), Conv2dConfig::default().padding(1), true);
    check_conv::<2, 2, 2, 3>((2, 4, 4), Conv2dConfig::default().padding(3), false);
    // Few input channels (a stem) keep the col2im scatter for the input gradient.
    check_conv::<2, 9, 2, 3>((2, 5, 5), Conv2dConfig::default().padding(1), true);
    with_threads(1, || check_conv::<2, 9, 2, 3>((3, 4, 5), Conv2dConfig::default().padding(1), false));
}

#[test]
fn conv_same_padding_on_small_and_large_planes() {
    // Planes of up to 64 positions take the per-tap kernels (one GEMM per kernel tap over the
    // positions it reads inside the image); larger ones im2col.
    check_conv::<3, 2, 3, 5>((3, 4, 5), Conv2dConfig::default().padding(2), true);
    check_conv::<2, 3, 2, 3>((2, 1, 1), Conv2dConfig::default().padding(1), false);
    with_threads(1, || check_conv::<2, 3, 2, 3>((3, 3, 2), Conv2dConfig::default().padding(1), true));
    check_conv::<2, 3, 2, 3>((2, 9, 8), Conv2dConfig::default().padding(1), true);
}

#[test]
fn conv_1x1_pointwise() {
    check_conv::<4, 3, 4, 1>((2, 3, 4), Conv2dConfig::default(), true);
}

#[test]
fn conv_1x1_stride2() {
    check_conv::<3, 2, 3, 1>((2, 5, 5), Conv2dConfig::default().stride(2), false);
}

#[test]
fn conv_grouped() {
    check_conv::<4, 6, 2, 3>((2, 5, 4), Conv2dConfig::default().padding(1).groups(2), false);
}

#[test]
fn conv_depthwise_5x5_stride2() {
    check_conv::<3, 3, 1, 5>((2, 7, 8), Conv2dConfig::default().stride(2).padding(2).groups(3), true);
}

#[test]
fn conv_depthwise_stride1() {
    // Stride 1 runs the padded wide-row kernel: same, unpadded, two outputs per channel.
    check_conv::<3, 3, 1, 5>((2, 6, 7), Conv2dConfig::default().padding(2).groups(3), true);
    check_conv::<2, 2, 1, 3>((2, 5, 4), Conv2dConfig::default().groups(2), false);
    check_conv::<2, 4, 1, 3>((2, 4, 5), Conv2dConfig::default().padding(1).groups(2), true);
}

#[test]
fn conv_channel_multiplier() {
    // PiT's pooling: one input channel per group, two outputs each.
    check_conv::<2, 4, 1, 3>((2, 5, 5), Conv2dConfig::default().stride(2).padding(1).groups(2), false);
}

#[test]
fn conv_images_blocked_in_one_gemm() {
    // One thread: the whole batch is one task and small images share GEMMs.
    with_threads(1, || {
        check_conv::<3, 4, 3, 3>((3, 5, 4), Conv2dConfig::default().stride(2).padding(1), true);
        check_conv::<4, 2, 2, 1>((3, 3, 3), Conv2dConfig::default().groups(2), false);
    });
}

#[test]
fn conv_batch_of_one() {
    // Batch 1 takes the GEMM-parallel path instead of the per-image one.
    check_conv::<3, 4, 3, 3>((1, 6, 5), Conv2dConfig::default().padding(2), true);
}

/// Gradient check of a single-input image op. Each evaluation gets a freshly seeded device,
/// so ops that draw random numbers draw the same ones every time.
fn check_unary<const C: usize>(
    (n, h, w): (usize, usize, usize),
    op: impl Fn(Img<C>) -> Vec<f64>,
    op_traced: impl Fn(Tensor<Image<C>, f64, Cpu, OwnedTape<f64, Cpu>>, &[f64]) -> Loss,
) {
    let dev = || Cpu::seed_from_u64(5);
    let f = |inp: &[Vec<f64>]| op(img::<C>(&dev(), &inp[0], n, h, w));
    let grads = |inp: &[Vec<f64>], r: &[f64]| {
        let x = img::<C>(&dev(), &inp[0], n, h, w);
        let g = op_traced(x.leaky_trace(), r).backward();
        vec![g.get(&x).as_vec()]
    };
    gradcheck(vec![randn(7, n * C * h * w)], f, grads);
}

type Loss = Tensor<Rank0, f64, Cpu, OwnedTape<f64, Cpu>>;

/// `sum(r · y)` with a tape.
fn weighted_sum<S: Shape>(y: Tensor<S, f64, Cpu, OwnedTape<f64, Cpu>>, r: &[f64]) -> Loss {
    let rt = y.device().tensor_from_vec(r.to_vec(), *y.shape());
    (y * rt).sum()
}

#[test]
fn max_pool_3x3_stride2_padded() {
    let cfg = Pool2dConfig::new(3).stride(2).padding(1);
    check_unary::<2>(
        (2, 7, 6),
        |x| max_pool2d(x, cfg).unwrap().as_vec(),
        |x, r| weighted_sum(max_pool2d(x, cfg).unwrap(), r),
    );
}

#[test]
fn avg_pool_include_and_exclude_pad() {
    for include in [true, false] {
        let cfg = Pool2dConfig::new(3).stride(2).padding(1).count_include_pad(include);
        check_unary::<2>(
            (2, 6, 7),
            |x| avg_pool2d(x, cfg).unwrap().as_vec(),
            |x, r| weighted_sum(avg_pool2d(x, cfg).unwrap(), r),
        );
    }
}

#[test]
fn global_avg_pool() {
    check_unary::<3>(
        (2, 4, 3),
        |x| global_avg_pool2d(x).unwrap().as_vec(),
        |x, r| weighted_sum(global_avg_pool2d(x).unwrap(), r),
    );
}

#[test]
fn silu_any_shape() {
    check_unary::<3>((2, 4, 3), |x| silu(x).unwrap().as_vec(), |x, r| weighted_sum(silu(x).unwrap(), r));
}

#[test]
fn drop_path_is_a_per_sample_scale() {
    check_unary::<2>(
        (6, 2, 3),
        |x| drop_path(x, 0.4, true).unwrap().as_vec(),
        |x, r| weighted_sum(drop_path(x, 0.4, true).unwrap(), r),
    );
}

#[test]
fn scale_channels_both_inputs() {
    let dev = Cpu::default();
    let (n, h, w) = (2, 3, 4);
    let f = |inp: &[Vec<f64>]| {
        let x = img::<3>(&dev, &inp[0], n, h, w);
        let s = dev.tensor_from_vec(inp[1].clone(), (n, Const::<3>));
        scale_channels(x, s).unwrap().as_vec()
    };
    let grads = |inp: &[Vec<f64>], r: &[f64]| {
        let x = img::<3>(&dev, &inp[0], n, h, w);
        let s = dev.tensor_from_vec(inp[1].clone(), (n, Const::<3>));
        let g = weighted_sum(scale_channels(x.leaky_trace(), s.leaky_trace()).unwrap(), r).backward();
        vec![g.get(&x).as_vec(), g.get(&s).as_vec()]
    };
    gradcheck(vec![randn(8, n * 3 * h * w), randn(9, n * 3)], f, grads);
}

/// Gradient check of `batch_norm` on `[2, 3, 2, 3]` images (and `[5, 3]` features) in the given
/// mode, with or without the fused ReLU.
fn check_batch_norm(training: bool, relu: bool, image: bool) {
    let dev = Cpu::default();
    let (n, hw) = if image { (2, 6) } else { (5, 1) };
    let cfg = BatchNormConfig::new(training).relu(relu);
    let stats = || {
        let m = dev.tensor_from_vec(randn(20, 3).iter().map(|v| 0.3 * v).collect(), (Const::<3>,));
        let v = dev.tensor_from_vec(randn(21, 3).iter().map(|v| 1.0 + 0.3 * v.abs()).collect(), (Const::<3>,));
        (m, v)
    };
    let f = |inp: &[Vec<f64>]| {
        let (mut m, mut v) = stats();
        let w = dev.tensor_from_vec(inp[1].clone(), (Const::<3>,));
        let b = dev.tensor_from_vec(inp[2].clone(), (Const::<3>,));
        if image {
            batch_norm(img::<3>(&dev, &inp[0], n, 2, 3), w, b, &mut m, &mut v, cfg).unwrap().as_vec()
        } else {
            let x = dev.tensor_from_vec(inp[0].clone(), (n, Const::<3>));
            batch_norm(x, w, b, &mut m, &mut v, cfg).unwrap().as_vec()
        }
    };
    let grads = |inp: &[Vec<f64>], r: &[f64]| {
        let (mut m, mut v) = stats();
        let w = dev.tensor_from_vec(inp[1].clone(), (Const::<3>,));
        let b = dev.tensor_from_vec(inp[2].clone(), (Const::<3>,));
        if image {
            let x = img::<3>(&dev, &inp[0], n, 2, 3);
            let y = batch_norm(x.leaky_trace(), w.clone(), b.clone(), &mut m, &mut v, cfg).unwrap();
            let g = weighted_sum(y, r).backward();
            vec![g.get(&x).as_vec(), g.get(&w).as_vec(), g.get(&b).as_vec()]
        } else {
            let x = dev.tensor_from_vec(inp[0].clone(), (n, Const::<3>));
            let y = batch_norm(x.leaky_trace(), w.clone(), b.clone(), &mut m, &mut v, cfg).unwrap();
            let g = weighted_sum(y, r).backward();
            vec![g.get(&x).as_vec(), g.get(&w).as_vec(), g.get(&b).as_vec()]
        }
    };
    gradcheck(vec![randn(22, n * 3 * hw), randn(23, 3), randn(24, 3)], f, grads);
}

#[test]
fn batch_norm_training_images_and_features() {
    for relu in [false, true] {
        check_batch_norm(true, relu, true);
        check_batch_norm(true, relu, false);
    }
}

#[test]
fn batch_norm_eval_images_and_features() {
    for relu in [false, true] {
        check_batch_norm(false, relu, true);
        check_batch_norm(false, relu, false);
    }
}

#[test]
fn linear_with_and_without_bias() {
    let dev = Cpu::default();
    let m = 5;
    let x = |v: &[f64]| dev.tensor_from_vec(v.to_vec(), (m, Const::<4>));
    let w = |v: &[f64]| dev.tensor_from_vec(v.to_vec(), (Const::<3>, Const::<4>));
    let b = |v: &[f64]| dev.tensor_from_vec(v.to_vec(), (Const::<3>,));
    let f = |inp: &[Vec<f64>]| linear(x(&inp[0]), w(&inp[1]), b(&inp[2])).unwrap().as_vec();
    let grads = |inp: &[Vec<f64>], r: &[f64]| {
        let (xv, wv, bv) = (x(&inp[0]), w(&inp[1]), b(&inp[2]));
        let g = weighted_sum(linear(xv.leaky_trace(), wv.clone(), bv.clone()).unwrap(), r).backward();
        vec![g.get(&xv).as_vec(), g.get(&wv).as_vec(), g.get(&bv).as_vec()]
    };
    gradcheck(vec![randn(30, m * 4), randn(31, 12), randn(32, 3)], f, grads);
    let f = |inp: &[Vec<f64>]| linear_no_bias(x(&inp[0]), w(&inp[1])).unwrap().as_vec();
    let grads = |inp: &[Vec<f64>], r: &[f64]| {
        let (xv, wv) = (x(&inp[0]), w(&inp[1]));
        let g = weighted_sum(linear_no_bias(xv.leaky_trace(), wv.clone()).unwrap(), r).backward();
        vec![g.get(&xv).as_vec(), g.get(&wv).as_vec()]
    };
    gradcheck(vec![randn(33, m * 4), randn(34, 12)], f, grads);
}

#[test]
fn batched_matmul_plain_and_transposed() {
    let dev = Cpu::default();
    let (g, m, k, n) = (3, 2, 4, 5);
    for transpose_b in [false, true] {
        let b_shape = if transpose_b { (g, n, k) } else { (g, k, n) };
        let a = |v: &[f64]| dev.tensor_from_vec(v.to_vec(), (g, m, k));
        let b = |v: &[f64]| dev.tensor_from_vec(v.to_vec(), b_shape);
        let f = |inp: &[Vec<f64>]| batched_matmul(a(&inp[0]), b(&inp[1]), transpose_b).unwrap().as_vec();
        let grads = |inp: &[Vec<f64>], r: &[f64]| {
            let (av, bv) = (a(&inp[0]), b(&inp[1]));
            let gr = weighted_sum(batched_matmul(av.leaky_trace(), bv.clone(), transpose_b).unwrap(), r).backward();
            vec![gr.get(&av).as_vec(), gr.get(&bv).as_vec()]
        };
        gradcheck(vec![randn(40, g * m * k), randn(41, g * k * n)], f, grads);
    }
}

#[test]
fn layer_norm_over_the_last_axis() {
    let dev = Cpu::default();
    let x = |v: &[f64]| dev.tensor_from_vec(v.to_vec(), (2, 3, Const::<5>));
    let p = |v: &[f64]| dev.tensor_from_vec(v.to_vec(), (Const::<5>,));
    let f = |inp: &[Vec<f64>]| layer_norm(x(&inp[0]), p(&inp[1]), p(&inp[2]), 1e-6).unwrap().as_vec();
    let grads = |inp: &[Vec<f64>], r: &[f64]| {
        let (xv, wv, bv) = (x(&inp[0]), p(&inp[1]), p(&inp[2]));
        let g = weighted_sum(layer_norm(xv.leaky_trace(), wv.clone(), bv.clone(), 1e-6).unwrap(), r).backward();
        vec![g.get(&xv).as_vec(), g.get(&wv).as_vec(), g.get(&bv).as_vec()]
    };
    gradcheck(vec![randn(50, 30), randn(51, 5), randn(52, 5)], f, grads);
}

#[test]
fn gelu_any_shape() {
    check_unary::<3>(
        (2, 4, 3),
        |x| siamlab_model::gelu(x).unwrap().as_vec(),
        |x, r| weighted_sum(siamlab_model::gelu(x).unwrap(), r),
    );
}

#[test]
fn residual_add_with_and_without_relu() {
    let dev = Cpu::default();
    let (n, h, w) = (2, 3, 4);
    for relu in [false, true] {
        let f = |inp: &[Vec<f64>]| {
            residual_add(img::<3>(&dev, &inp[0], n, h, w), img::<3>(&dev, &inp[1], n, h, w), relu).unwrap().as_vec()
        };
        let grads = |inp: &[Vec<f64>], r: &[f64]| {
            let (x, s) = (img::<3>(&dev, &inp[0], n, h, w), img::<3>(&dev, &inp[1], n, h, w));
            let g = weighted_sum(residual_add(x.leaky_trace(), s.leaky_trace(), relu).unwrap(), r).backward();
            vec![g.get(&x).as_vec(), g.get(&s).as_vec()]
        };
        gradcheck(vec![randn(60, n * 3 * h * w), randn(61, n * 3 * h * w)], f, grads);
    }
}

#[test]
fn residual_add_of_a_tensor_to_itself_counts_twice() {
    let dev = Cpu::default();
    let x = dev.tensor_from_vec(vec![1.0f64, -2.0], (Const::<2>,));
    let g = residual_add(x.leaky_trace(), x.clone(), false).unwrap().sum().backward();
    assert_eq!(g.get(&x).as_vec(), vec![2.0, 2.0]);
    let a: Tensor<(usize, usize), f64, _> = dev.zeros_like(&(2, 3));
    let b: Tensor<(usize, usize), f64, _> = dev.zeros_like(&(3, 2));
    assert!(residual_add(a, b, false).is_err());
}

#[test]
fn scaled_softmax_last_axis() {
    let dev = Cpu::default();
    let x = |v: &[f64]| dev.tensor_from_vec(v.to_vec(), (2, 3, 5));
    let f = |inp: &[Vec<f64>]| scaled_softmax(x(&inp[0]), 0.7).unwrap().as_vec();
    let grads = |inp: &[Vec<f64>], r: &[f64]| {
        let xv = x(&inp[0]);
        vec![weighted_sum(scaled_softmax(xv.leaky_trace(), 0.7).unwrap(), r).backward().get(&xv).as_vec()]
    };
    gradcheck(vec![randn(62, 30)], f, grads);
}

#[test]
fn split_and_merge_heads_are_the_reshape_permute_of_pytorch() {
    // qkv [N=2, T=3, 3·D] with D = 4, 2 heads of 2: each part through attention's layout and back.
    let dev = Cpu::default();
    let (n, t) = (2, 3);
    let qkv = |v: &[f64]| dev.tensor_from_vec(v.to_vec(), (n, t, Const::<12>));
    let values = randn(63, n * t * 12);
    for part in 0..3 {
        let heads = split_heads(qkv(&values), part, 3, 2).unwrap();
        assert_eq!(*heads.shape(), (n * 2, t, 2));
        // x[n, t, part·4 + h·2 + e] lands at heads[n·2 + h, t, e]
        let got = heads.as_vec();
        for (i, j, h, e) in
            (0..n).flat_map(|i| (0..t).flat_map(move |j| (0..2).flat_map(move |h| (0..2).map(move |e| (i, j, h, e)))))
        {
            assert_eq!(got[((i * 2 + h) * t + j) * 2 + e], values[(i * t + j) * 12 + part * 4 + h * 2 + e]);
        }
        let back = merge_heads::<4, _, _>(heads, 2).unwrap().as_vec();
        for (k, v) in back.iter().enumerate() {
            assert_eq!(*v, values[k / 4 * 12 + part * 4 + k % 4]);
        }
        let f = |inp: &[Vec<f64>]| split_heads(qkv(&inp[0]), part, 3, 2).unwrap().as_vec();
        let grads = |inp: &[Vec<f64>], r: &[f64]| {
            let xv = qkv(&inp[0]);
            vec![weighted_sum(split_heads(xv.leaky_trace(), part, 3, 2).unwrap(), r).backward().get(&xv).as_vec()]
        };
        gradcheck(vec![values.clone()], f, grads);
    }
    let y = |v: &[f64]| dev.tensor_from_vec(v.to_vec(), (n * 2, t, 2));
    let f = |inp: &[Vec<f64>]| merge_heads::<4, _, _>(y(&inp[0]), 2).unwrap().as_vec();
    let grads = |inp: &[Vec<f64>], r: &[f64]| {
        let yv = y(&inp[0]);
        vec![weighted_sum(merge_heads::<4, _, _>(yv.leaky_trace(), 2).unwrap(), r).backward().get(&yv).as_vec()]
    };
    gradcheck(vec![randn(64, n * 2 * t * 2)], f, grads);
    assert!(split_heads(qkv(&values), 3, 3, 2).is_err() && split_heads(qkv(&values), 0, 3, 3).is_err());
    assert!(merge_heads::<5, _, _>(y(&randn(65, n * 2 * t * 2)), 2).is_err());
}

#[test]
fn attention_is_the_separate_ops_and_its_gradient_checks() {
    // qkv [N=2, T=5, 3·D] with D = 6, 2 heads of 3; on 1 and 2 threads (one image per task).
    let dev = Cpu::default();
    let (n, t) = (2, 5);
    let qkv = |v: &[f64]| dev.tensor_from_vec(v.to_vec(), (n, t, Const::<18>));
    let values = randn(66, n * t * 18);
    let separate = |x: Tensor<(usize, usize, Const<18>), f64, Cpu, OwnedTape<f64, Cpu>>| {
        let q = split_heads(x.retaped::<OwnedTape<f64, Cpu>>(), 0, 3, 2).unwrap();
        let k = split_heads(x.retaped::<OwnedTape<f64, Cpu>>(), 1, 3, 2).unwrap();
        let v = split_heads(x, 2, 3, 2).unwrap();
        let w = scaled_softmax(batched_matmul(q, k, true).unwrap(), 0.6).unwrap();
        merge_heads::<6, _, _>(batched_matmul(w, v, false).unwrap(), 2).unwrap()
    };
    let r = randn(67, n * t * 6);
    let xs = qkv(&values);
    let (want, want_grad) = {
        let y = separate(xs.leaky_trace());
        (y.as_vec(), weighted_sum(y, &r).backward().get(&xs).as_vec())
    };
    for threads in [1, 2] {
        let (got, got_grad) = with_threads(threads, || {
            let y = attention::<18, 6, _, _>(xs.leaky_trace(), 2, 0.6).unwrap();
            (y.as_vec(), weighted_sum(y, &r).backward().get(&xs).as_vec())
        });
        assert_close(&got, &want, 1e-12, "attention forward against the separate ops");
        assert_close(&got_grad, &want_grad, 1e-12, "attention gradient against the separate ops");
    }
    let f = |inp: &[Vec<f64>]| attention::<18, 6, _, _>(qkv(&inp[0]), 2, 0.6).unwrap().as_vec();
    let grads = |inp: &[Vec<f64>], r: &[f64]| {
        let xv = qkv(&inp[0]);
        vec![weighted_sum(attention::<18, 6, _, _>(xv.leaky_trace(), 2, 0.6).unwrap(), r).backward().get(&xv).as_vec()]
    };
    gradcheck(vec![values], f, grads);
    assert!(attention::<18, 5, _, _>(qkv(&randn(68, n * t * 18)), 1, 1.0).is_err());
    assert!(attention::<18, 6, _, _>(qkv(&randn(68, n * t * 18)), 4, 1.0).is_err());
}

#[test]
fn mlp_is_linear_gelu_linear_and_its_gradient_checks() {
    // 600 rows cross several row blocks and both threads' runs; D = 3, M = 8.
    let dev = Cpu::default();
    let x = |v: &[f64], m: usize| dev.tensor_from_vec(v.to_vec(), (m, Const::<3>));
    let w1 = |v: &[f64]| dev.tensor_from_vec(v.to_vec(), (Const::<8>, Const::<3>));
    let b1 = |v: &[f64]| dev.tensor_from_vec(v.to_vec(), (Const::<8>,));
    let w2 = |v: &[f64]| dev.tensor_from_vec(v.to_vec(), (Const::<3>, Const::<8>));
    let b2 = |v: &[f64]| dev.tensor_from_vec(v.to_vec(), (Const::<3>,));
    let m = 600;
    let inputs = [randn(70, m * 3), randn(71, 24), randn(72, 8), randn(73, 24), randn(74, 3)];
    let (xv, w1v, b1v, w2v, b2v) = (x(&inputs[0], m), w1(&inputs[1]), b1(&inputs[2]), w2(&inputs[3]), b2(&inputs[4]));
    let r = randn(75, m * 3);
    let grads = |y: Tensor<(usize, Const<3>), f64, Cpu, OwnedTape<f64, Cpu>>| {
        let g = weighted_sum(y, &r).backward();
        vec![
            g.get(&xv).as_vec(),
            g.get(&w1v).as_vec(),
            g.get(&b1v).as_vec(),
            g.get(&w2v).as_vec(),
            g.get(&b2v).as_vec(),
        ]
    };
    type Tp = OwnedTape<f64, Cpu>;
    let t = || xv.leaky_trace();
    let h = linear(t(), w1v.retaped::<Tp>(), b1v.retaped::<Tp>()).unwrap();
    let separate = linear(siamlab_model::gelu(h).unwrap(), w2v.retaped::<Tp>(), b2v.retaped::<Tp>()).unwrap();
    let (want, want_grads) = (separate.as_vec(), grads(separate));
    for threads in [1, 2] {
        let (got, got_grads) = with_threads(threads, || {
            let y = mlp(t(), w1v.retaped(), b1v.retaped(), w2v.retaped(), b2v.retaped()).unwrap();
            (y.as_vec(), grads(y))
        });
        assert_close(&got, &want, 1e-12, "mlp forward against the separate ops");
        for (k, (g, w)) in got_grads.iter().zip(&want_grads).enumerate() {
            assert_close(g, w, 1e-12, &format!("mlp gradient {k} against the separate ops"));
        }
    }
    // Inference (no tape) gives the same rows.
    let plain = mlp(xv.clone(), w1v.clone(), b1v.clone(), w2v.clone(), b2v.clone()).unwrap().as_vec();
    assert_close(&plain, &want, 1e-12, "mlp without a tape");
    // Finite differences on a few rows.
    let n = 4;
    let f = |inp: &[Vec<f64>]| mlp(x(&inp[0], n), w1(&inp[1]), b1(&inp[2]), w2(&inp[3]), b2(&inp[4])).unwrap().as_vec();
    let g = |inp: &[Vec<f64>], r: &[f64]| {
        let (xv, w1v, b1v, w2v, b2v) = (x(&inp[0], n), w1(&inp[1]), b1(&inp[2]), w2(&inp[3]), b2(&inp[4]));
        let y = mlp(xv.leaky_trace(), w1v.retaped(), b1v.retaped(), w2v.retaped(), b2v.retaped()).unwrap();
        let g = weighted_sum(y, r).backward();
        vec![
            g.get(&xv).as_vec(),
            g.get(&w1v).as_vec(),
            g.get(&b1v).as_vec(),
            g.get(&w2v).as_vec(),
            g.get(&b2v).as_vec(),
        ]
    };
    gradcheck(vec![randn(76, n * 3), randn(77, 24), randn(78, 8), randn(79, 24), randn(80, 3)], f, g);
}
