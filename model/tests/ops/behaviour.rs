//! Behaviour beyond the numbers: errors for shapes a type cannot rule out, strided inputs,
//! gradient accumulation, batch independence, drop-path modes.

use dfdx::prelude::*;
use siamlab_model::*;

use crate::{assert_close, randn};

fn image<const C: usize>(dev: &Cpu, seed: u64, n: usize, h: usize, w: usize) -> Tensor<Image<C>, f64, Cpu> {
    dev.tensor_from_vec(randn(seed, n * C * h * w), (n, Const::<C>, h, w))
}

fn config_error<T: std::fmt::Debug>(r: Result<T, OpError>, needle: &str) {
    match r {
        Err(e @ OpError::InvalidConfig { .. }) => {
            assert!(e.to_string().contains(needle), "{e} lacks {needle:?}")
        }
        other => panic!("expected InvalidConfig containing {needle:?}, got {other:?}"),
    }
}

#[test]
fn conv_rejects_bad_groups_and_sizes() {
    let dev = Cpu::default();
    let w: Tensor<Rank4<4, 2, 3, 3>, f64, _> = dev.sample_normal();
    let x = image::<4>(&dev, 1, 1, 5, 5);
    // IG = 2 needs groups = 2 for 4 channels.
    config_error(conv2d(x.clone(), w.clone(), Conv2dConfig::default()), "input channels per group");
    config_error(conv2d(x.clone(), w.clone(), Conv2dConfig::default().groups(3)), "groups 3");
    config_error(conv2d(x.clone(), w.clone(), Conv2dConfig::default().groups(0)), "groups 0");
    let tiny = image::<4>(&dev, 1, 1, 2, 2);
    config_error(conv2d(tiny, w.clone(), Conv2dConfig::default().groups(2)), "does not fit");
    config_error(conv2d(x, w, Conv2dConfig::default().groups(2).stride(0)), "does not fit");
}

#[test]
fn pools_and_drop_path_reject_bad_configs() {
    let dev = Cpu::default();
    let x = image::<2>(&dev, 1, 1, 4, 4);
    config_error(max_pool2d(x.clone(), Pool2dConfig::new(2).padding(2)), "exceeds half");
    config_error(avg_pool2d(x.clone(), Pool2dConfig::new(5)), "does not fit");
    config_error(drop_path(x.clone(), 1.0, true), "outside [0, 1)");
    config_error(drop_path(x, -0.1, true), "outside [0, 1)");
    let empty = image::<2>(&dev, 1, 1, 0, 3);
    config_error(global_avg_pool2d(empty), "empty");
}

#[test]
fn empty_inputs() {
    let dev = Cpu::default();
    let w: Tensor<Rank4<4, 2, 3, 3>, f64, _> = dev.sample_normal();
    let cfg = Conv2dConfig::default().padding(1);
    // An empty plane is refused (padding alone would otherwise make an output).
    config_error(conv2d(image::<2>(&dev, 1, 2, 0, 5), w.clone(), cfg), "empty");
    config_error(max_pool2d(image::<2>(&dev, 1, 2, 4, 0), Pool2dConfig::new(1)), "empty");
    // An empty batch is an empty result (dfdx's `sum` cannot reduce an empty tensor, so the
    // backward pass is not exercised here).
    let x = image::<2>(&dev, 1, 0, 5, 5);
    let y = conv2d(x.leaky_trace(), w.clone(), cfg).unwrap();
    assert_eq!(y.shape(), &(0, Const::<4>, 5, 5));
    assert_eq!(max_pool2d(x, Pool2dConfig::new(2)).unwrap().shape(), &(0, Const::<2>, 2, 2));
}

#[test]
fn conv_output_size_follows_pytorch() {
    let cfg = Conv2dConfig::default().stride(2).padding(3);
    assert_eq!(cfg.output_size(224, 224, 7), Some((112, 112)));
    assert_eq!(cfg.output_size(33, 32, 7), Some((17, 16)));
    assert_eq!(Conv2dConfig::default().output_size(2, 2, 3), None);
    let dev = Cpu::default();
    let w: Tensor<Rank4<8, 3, 7, 7>, f64, _> = dev.sample_normal();
    let y = conv2d(image::<3>(&dev, 2, 2, 33, 32), w, cfg).unwrap();
    assert_eq!(y.shape(), &(2, Const::<8>, 17, 16));
}

#[test]
fn strided_input_is_read_logically() {
    // A broadcast tensor has stride 0 on three axes; the op must see its logical values.
    let dev = Cpu::default();
    let per_channel = dev.tensor_from_vec(vec![1.0, -2.0, 3.0], (Const::<3>,));
    let shape = (2, Const::<3>, 5, 4);
    let broadcast: Tensor<Image<3>, f64, Cpu> = per_channel.clone().broadcast_like(&shape);
    let dense = dev.tensor_from_vec(broadcast.as_vec(), shape);
    let w: Tensor<Rank4<2, 3, 3, 3>, f64, _> = dev.sample_normal();
    let cfg = Conv2dConfig::default().padding(1);
    let a = conv2d(broadcast, w.clone(), cfg).unwrap().as_vec();
    let b = conv2d(dense, w, cfg).unwrap().as_vec();
    assert_close(&a, &b, 1e-12, "broadcast vs dense");
    // And the gradient flows back through the broadcast to the per-channel tensor.
    let traced: Tensor<Image<3>, f64, Cpu, _> = per_channel.leaky_trace().broadcast_like(&shape);
    let y = max_pool2d(traced, Pool2dConfig::new(2)).unwrap();
    let g = y.sum().backward();
    // Each plane has 2·2 windows of constant value; one element per window gets gradient 1.
    assert_eq!(g.get(&per_channel).as_vec(), vec![2.0 * 4.0; 3]);
}

type Traced = Tensor<Image<3>, f64, Cpu, OwnedTape<f64, Cpu>>;

#[test]
fn gradients_accumulate_over_uses() {
    // x feeds two convolutions and a residual add: its gradient is the sum of all three paths.
    let dev = Cpu::default();
    let x = image::<3>(&dev, 3, 2, 6, 6);
    let w1: Tensor<Rank4<3, 3, 3, 3>, f64, _> = dev.sample_normal();
    let w2: Tensor<Rank4<3, 3, 1, 1>, f64, _> = dev.sample_normal();
    let c1 = Conv2dConfig::default().padding(1);
    let c2 = Conv2dConfig::default();
    let xt = x.leaky_trace();
    let a = conv2d(xt.with_empty_tape(), w1.clone(), c1).unwrap();
    let b = conv2d(xt.with_empty_tape(), w2.clone(), c2).unwrap();
    let together = (a + b + xt).sum().backward().get(&x).as_vec();

    let one = |f: &dyn Fn(Traced) -> Traced| f(x.leaky_trace()).sum().backward().get(&x).as_vec();
    let ga = one(&|t| conv2d(t, w1.clone(), c1).unwrap());
    let gb = one(&|t| conv2d(t, w2.clone(), c2).unwrap());
    let sum: Vec<f64> = ga.iter().zip(&gb).map(|(a, b)| a + b + 1.0).collect();
    assert_close(&together, &sum, 1e-12, "accumulated gradient");
}

/// Weight, bias and input gradients of `conv2d_bias` on `n` images of `h × h`.
fn conv_grads<const C: usize, const O: usize, const IG: usize, const K: usize>(
    n: usize,
    h: usize,
    cfg: Conv2dConfig,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let dev = Cpu::default();
    let x = image::<C>(&dev, 31, n, h, h);
    let w: Tensor<Rank4<O, IG, K, K>, f64, _> =
        dev.tensor_from_vec(randn(32, O * IG * K * K), (Const, Const, Const, Const));
    let b: Tensor<Rank1<O>, f64, _> = dev.tensor_from_vec(randn(33, O), (Const,));
    let y = conv2d_bias(x.leaky_trace(), w.clone(), b.clone(), cfg).unwrap();
    let (ho, wo) = (y.shape().2, y.shape().3);
    let gy = dev.tensor_from_vec(randn(34, n * O * ho * wo), (n, Const::<O>, ho, wo));
    let mut grads = (y * gy).sum().backward();
    let gx = grads.get_or_alloc_mut(&x).unwrap().to_vec();
    (grads.get(&w).as_vec(), grads.get(&b).as_vec(), gx)
}

#[test]
fn conv_without_input_grad_leaves_it_and_keeps_the_others() {
    // One case per kernel family: im2col + col2im scatter (an RGB stem, 7×7/2 and 3×3/1),
    // the flipped-kernel convolution, Winograd, per-tap, depthwise and 1×1, with one task and
    // with several images per task.
    type Case = fn(bool) -> (Vec<f64>, Vec<f64>, Vec<f64>);
    let cases: Vec<(&str, Case)> = vec![
        ("stem 7x7/2", |g| conv_grads::<3, 8, 3, 7>(5, 12, Conv2dConfig::default().stride(2).padding(3).input_grad(g))),
        ("stem 3x3/1", |g| conv_grads::<3, 8, 3, 3>(5, 9, Conv2dConfig::default().padding(1).input_grad(g))),
        ("flipped 5x5", |g| conv_grads::<6, 6, 6, 5>(3, 12, Conv2dConfig::default().padding(2).input_grad(g))),
        ("winograd", |g| conv_grads::<16, 16, 16, 3>(3, 10, Conv2dConfig::default().padding(1).input_grad(g))),
        ("per tap", |g| conv_grads::<8, 8, 8, 3>(3, 5, Conv2dConfig::default().padding(1).input_grad(g))),
        ("depthwise", |g| conv_grads::<6, 6, 1, 3>(3, 7, Conv2dConfig::default().padding(1).groups(6).input_grad(g))),
        ("1x1", |g| conv_grads::<4, 6, 4, 1>(1, 7, Conv2dConfig::default().input_grad(g))),
    ];
    for (name, case) in cases {
        let (gw, gb, gx) = case(true);
        let (gw_off, gb_off, gx_off) = case(false);
        assert_eq!(gw, gw_off, "{name}: weight gradient");
        assert_eq!(gb, gb_off, "{name}: bias gradient");
        assert!(gx.iter().any(|v| *v != 0.0), "{name}: input gradient computed when asked");
        assert!(gx_off.iter().all(|v| *v == 0.0), "{name}: input gradient left untouched");
    }
}

#[test]
fn weight_gradients_accumulate_over_uses() {
    // One weight applied to two inputs (SimSiam's two views): its gradient sums both.
    let dev = Cpu::default();
    let w: Tensor<Rank4<4, 3, 3, 3>, f64, _> = dev.sample_normal();
    let (x1, x2) = (image::<3>(&dev, 4, 2, 5, 5), image::<3>(&dev, 5, 2, 5, 5));
    let cfg = Conv2dConfig::default().stride(2).padding(1);
    let wt = w.leaky_trace();
    // The tape rides on the inputs (dfdx merges the right operand's tape into the left's).
    let y1 = conv2d(x1.leaky_trace(), wt.with_empty_tape(), cfg).unwrap();
    let y2 = conv2d(x2.leaky_trace(), wt, cfg).unwrap();
    let both = (y1.sum() + y2.sum()).backward().get(&w).as_vec();
    let single = |x: Tensor<Image<3>, f64, Cpu>| {
        conv2d(x.leaky_trace(), w.clone(), cfg).unwrap().sum().backward().get(&w).as_vec()
    };
    let sum: Vec<f64> = single(x1).iter().zip(single(x2)).map(|(a, b)| a + b).collect();
    assert_close(&both, &sum, 1e-12, "weight gradient over two views");
}

#[test]
fn batch_elements_are_independent() {
    // The per-image parallel path (batch 5) equals the GEMM-parallel path (batch 1) per image.
    let dev = Cpu::default();
    let (n, h, w) = (5, 9, 7);
    let x = image::<6>(&dev, 6, n, h, w);
    let wt: Tensor<Rank4<8, 3, 3, 3>, f64, _> = dev.sample_normal();
    let cfg = Conv2dConfig::default().stride(2).padding(1).groups(2);
    let all = conv2d(x.clone(), wt.clone(), cfg).unwrap().as_vec();
    let xv = x.as_vec();
    let per = all.len() / n;
    for i in 0..n {
        let xi = dev.tensor_from_vec(xv[i * 6 * h * w..(i + 1) * 6 * h * w].to_vec(), (1, Const::<6>, h, w));
        let yi = conv2d(xi, wt.clone(), cfg).unwrap().as_vec();
        assert_close(&yi, &all[i * per..(i + 1) * per], 1e-12, &format!("image {i}"));
    }
}

#[test]
fn drop_path_modes() {
    let x = image::<2>(&Cpu::seed_from_u64(1), 1, 16, 2, 2);
    // Evaluation, or probability 0: the input itself.
    assert_eq!(drop_path(x.clone(), 0.3, false).unwrap().as_vec(), x.as_vec());
    assert_eq!(drop_path(x.clone(), 0.0, true).unwrap().as_vec(), x.as_vec());
    // Training: every sample is dropped or scaled by 1/keep, as a whole; some of each at 0.5.
    let y = drop_path(x.to_device(&Cpu::seed_from_u64(2)), 0.5, true).unwrap().as_vec();
    let xv = x.as_vec();
    let mut kinds = [0, 0];
    for (yc, xc) in y.chunks(8).zip(xv.chunks(8)) {
        if yc.iter().all(|&v| v == 0.0) {
            kinds[0] += 1;
        } else {
            assert_close(yc, &xc.iter().map(|v| v * 2.0).collect::<Vec<_>>(), 1e-15, "kept sample");
            kinds[1] += 1;
        }
    }
    assert!(kinds[0] > 0 && kinds[1] > 0, "16 samples at p=0.5 drop some and keep some: {kinds:?}");
    // Same seed, same mask.
    let again = drop_path(x.to_device(&Cpu::seed_from_u64(2)), 0.5, true).unwrap().as_vec();
    assert_eq!(y, again);
}

#[test]
fn max_pool_all_negative_infinity_window_picks_a_real_input() {
    let dev = Cpu::default();
    let x = dev.tensor_from_vec(vec![f64::NEG_INFINITY; 4], (1, Const::<1>, 2, 2));
    let y = max_pool2d(x.leaky_trace(), Pool2dConfig::new(2)).unwrap();
    assert_eq!(y.as_vec(), vec![f64::NEG_INFINITY]);
    let g = y.sum().backward().get(&x).as_vec();
    assert_eq!(g.iter().sum::<f64>(), 1.0);
}

#[test]
fn max_pool_ties_go_to_the_first_maximum_and_nan_propagates() {
    // As PyTorch: equal maxima pass the gradient to the first in (row, column) order of the
    // window's taps inside the plane; a NaN wins its window and takes the gradient.
    let dev = Cpu::default();
    let x = dev.tensor_from_vec(vec![7.0f64; 9], (1, Const::<1>, 3, 3));
    let y = max_pool2d(x.leaky_trace(), Pool2dConfig::new(3).stride(2).padding(1)).unwrap();
    assert_eq!(y.as_vec(), vec![7.0; 4]);
    let g = y.sum().backward().get(&x).as_vec();
    assert_eq!(g, vec![1.0, 1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]);
    let x = dev.tensor_from_vec(vec![1.0f64, f64::NAN, 3.0, 2.0], (1, Const::<1>, 2, 2));
    let y = max_pool2d(x.leaky_trace(), Pool2dConfig::new(2)).unwrap();
    assert!(y.as_vec()[0].is_nan());
    assert_eq!(y.sum().backward().get(&x).as_vec(), vec![0.0, 1.0, 0.0, 0.0]);
}

/// Max pooling by its definition, one window at a time: the first maximum of the taps inside
/// the plane in `(kh, kw)` order, a NaN winning; returns the outputs and the index taken.
fn max_pool_reference(x: &[f64], h: usize, w: usize, cfg: Pool2dConfig) -> (Vec<f64>, Vec<usize>) {
    let (ho, wo) = cfg.output_size(h, w).unwrap();
    let (mut y, mut at) = (vec![], vec![]);
    for oh in 0..ho {
        for ow in 0..wo {
            let mut best: Option<(f64, usize)> = None;
            for kh in 0..cfg.kernel {
                for kw in 0..cfg.kernel {
                    let (r, c) = (
                        (oh * cfg.stride + kh) as isize - cfg.padding as isize,
                        (ow * cfg.stride + kw) as isize - cfg.padding as isize,
                    );
                    if r < 0 || c < 0 || r >= h as isize || c >= w as isize {
                        continue;
                    }
                    let i = r as usize * w + c as usize;
                    let v = x[i];
                    best = match best {
                        Some((b, _)) if b.is_nan() || !(v > b || v.is_nan()) => best,
                        _ => Some((v, i)),
                    };
                }
            }
            let (v, i) = best.unwrap();
            y.push(v);
            at.push(i);
        }
    }
    (y, at)
}

#[test]
fn max_pool_equals_its_definition_on_every_window() {
    // Few distinct values (ties everywhere), a few NaNs and -inf; planes wide enough for the
    // row-at-a-time inner outputs and narrow ones that are all edge.
    let dev = Cpu::default();
    for (k, stride, padding) in [(3, 2, 1), (2, 2, 0), (3, 1, 1), (5, 3, 2), (3, 3, 0), (1, 2, 0), (4, 2, 1)] {
        for (h, w) in [(1, 1), (5, 4), (9, 13), (16, 24), (7, 31)] {
            let cfg = Pool2dConfig::new(k).stride(stride).padding(padding);
            if cfg.output_size(h, w).is_none() {
                continue;
            }
            let planes = 3;
            let data: Vec<f64> = randn(41 + (h * w) as u64, planes * h * w)
                .iter()
                .enumerate()
                .map(|(i, v)| match i % 37 {
                    5 => f64::NAN,
                    11 => f64::NEG_INFINITY,
                    _ => (v * 1.5).round(),
                })
                .collect();
            let x = dev.tensor_from_vec(data.clone(), (1, Const::<3>, h, w));
            let y = max_pool2d(x.leaky_trace(), cfg).unwrap();
            let (ho, wo) = (y.shape().2, y.shape().3);
            let gy: Vec<f64> = (0..planes * ho * wo).map(|i| 1.0 + i as f64).collect();
            let got = y.as_vec();
            let gx = (y * dev.tensor_from_vec(gy.clone(), (1, Const::<3>, ho, wo))).sum().backward().get(&x).as_vec();
            let mut want_gx = vec![0.0; planes * h * w];
            for p in 0..planes {
                let (want, at) = max_pool_reference(&data[p * h * w..][..h * w], h, w, cfg);
                for (j, (v, i)) in want.iter().zip(&at).enumerate() {
                    let g = got[p * ho * wo + j];
                    let what = format!("k{k} s{stride} p{padding} {h}x{w} plane {p} output {j}");
                    assert!(g == *v || (g.is_nan() && v.is_nan()), "{what}: got {g}, want {v}");
                    want_gx[p * h * w + i] += gy[p * ho * wo + j];
                }
            }
            assert_eq!(gx, want_gx, "k{k} s{stride} p{padding} {h}x{w}: gradient routing");
        }
    }
}

#[test]
fn composes_with_dfdx_layers() {
    // conv → dfdx BatchNorm2D (training) → ReLU → max-pool → SiLU → global pool → dfdx Linear,
    // one tape through all of it; a gradient step on the conv weight lowers the loss.
    let dev = Cpu::default();
    let x = dev.tensor_from_vec(randn(11, 4 * 3 * 8 * 8), (4, Const::<3>, 8, 8));
    let mut w: Tensor<Rank4<6, 3, 3, 3>, f64, _> = dev.tensor_from_vec(randn(12, 6 * 27), (Const, Const, Const, Const));
    let mut bn = dev.build_module::<dfdx::nn::builders::BatchNorm2D<6>, f64>();
    let head = dev.build_module::<dfdx::nn::builders::Linear<6, 2>, f64>();
    let cfg = Conv2dConfig::default().padding(1);
    let mut loss_of = |w: &Tensor<Rank4<6, 3, 3, 3>, f64, Cpu>| {
        let y = conv2d(x.leaky_trace(), w.clone(), cfg).unwrap();
        let y = bn.forward_mut(y).relu();
        let y = max_pool2d(y, Pool2dConfig::new(2)).unwrap();
        let y = global_avg_pool2d(silu(y).unwrap()).unwrap();
        let loss = head.forward(y).square().mean();
        let value = loss.array();
        let grads = loss.backward();
        (value, grads.get(w).as_vec(), grads.get(&x).as_vec())
    };
    let (before, gw, gx) = loss_of(&w);
    assert!(gw.iter().any(|g| *g != 0.0) && gx.iter().all(|g| g.is_finite()));
    let stepped: Vec<f64> = w.as_vec().iter().zip(&gw).map(|(w, g)| w - 0.05 * g).collect();
    w.copy_from(&stepped);
    let (after, _, _) = loss_of(&w);
    assert!(after < before, "loss {before} → {after}");
}

#[test]
fn batch_norm_updates_running_stats_only_in_training() {
    let dev = Cpu::default();
    // Channel 0 holds 1, 2, 3, 6 (mean 3, unbiased variance 14/3); channel 1 holds 0s.
    let x: Tensor<Image<2>, f64, Cpu> =
        dev.tensor_from_vec(vec![1.0, 2.0, 0.0, 0.0, 3.0, 6.0, 0.0, 0.0], (2, Const::<2>, 1, 2));
    let (w, b) = (dev.ones::<Rank1<2>>(), dev.zeros::<Rank1<2>>());
    let (mut mean, mut var) = (dev.zeros::<Rank1<2>>(), dev.ones::<Rank1<2>>());
    let eval = BatchNormConfig::new(false);
    let y = batch_norm(x.clone(), w.clone(), b.clone(), &mut mean, &mut var, eval).unwrap();
    assert_eq!(mean.as_vec(), vec![0.0, 0.0]);
    assert_close(
        &y.as_vec(),
        &x.as_vec().iter().map(|v| v / (1.0f64 + 1e-5).sqrt()).collect::<Vec<_>>(),
        1e-12,
        "eval",
    );
    let y = batch_norm(x, w, b, &mut mean, &mut var, BatchNormConfig::new(true).relu(true)).unwrap();
    assert_close(&mean.as_vec(), &[0.3, 0.0], 1e-12, "running mean");
    assert_close(&var.as_vec(), &[0.9 + 0.1 * 14.0 / 3.0, 0.9], 1e-12, "running var");
    // Biased variance 3.5 normalises channel 0; ReLU zeroes its negative half.
    let s = (3.5f64 + 1e-5).sqrt();
    let want = [0.0, 0.0, 0.0, 0.0, 0.0, 3.0 / s, 0.0, 0.0];
    assert_close(&y.as_vec(), &want, 1e-12, "train + relu");
    config_error(
        batch_norm(
            dev.zeros_like(&(1, Const::<2>)),
            dev.ones::<Rank1<2>>(),
            dev.zeros::<Rank1<2>>(),
            &mut mean,
            &mut var,
            BatchNormConfig::new(true),
        ),
        "1 values per channel",
    );
}

#[test]
fn same_padding_on_a_1x1_plane_uses_the_centre_tap_only() {
    // Regression: ResNet-18 with the ImageNet stem at 32 px runs layer4 on 1x1 maps, where every
    // 3x3 tap but the centre lies in the padding; the stride-1 same-padding kernels indexed
    // past the plane for those taps (forward and input gradient).
    let dev = Cpu::default();
    let x = image::<3>(&dev, 6, 2, 1, 1);
    let w: Tensor<Rank4<4, 3, 3, 3>, f64, _> = dev.sample_normal();
    let centre: Vec<f64> = w.as_vec().chunks_exact(9).map(|k| k[4]).collect();
    let centre: Tensor<Rank4<4, 3, 1, 1>, f64, _> = dev.tensor_from_vec(centre, (Const, Const, Const, Const));
    let run = |w: &dyn Fn(Traced) -> Tensor<Image<4>, f64, Cpu, OwnedTape<f64, Cpu>>| {
        let y = w(x.leaky_trace());
        let values = y.as_vec();
        (values, y.sum().backward().get(&x).as_vec())
    };
    let (y, dx) = run(&|t| conv2d(t, w.clone(), Conv2dConfig::default().padding(1)).unwrap());
    let (y1, dx1) = run(&|t| conv2d(t, centre.clone(), Conv2dConfig::default()).unwrap());
    assert_close(&y, &y1, 1e-12, "output");
    assert_close(&dx, &dx1, 1e-12, "input gradient");
}
