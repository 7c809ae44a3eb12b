//! Every op on a device against the crate's `Cpu` kernels, forward and backward: what
//! `siamlab bench ops --device cuda` prints on a GPU, and what the tests run on `Cpu` with the
//! [`composed`] implementations (the ones `Cuda` runs).
//!
//! Each case draws its inputs on the host from a fixed seed, runs the op on the reference
//! (`Cpu`, the crate's kernels) and on the target, and reports the largest difference of the
//! output and of each input gradient (loss `Σ y·r` with a random `r`), relative to the largest
//! reference magnitude.
//!
//! ```
//! use dfdx::prelude::Cpu;
//! use siamlab_model::check::{compare_ops, Path};
//! let rows = compare_ops(&Cpu::default(), Path::Composed).unwrap();
//! assert!(rows.iter().all(|r| r.worst() < 1e-4), "{rows:?}");
//! ```

use dfdx::prelude::*;

use crate::{composed, BatchNormConfig, Conv2dConfig, Kernels, OpError, Pool2dConfig};

/// Which implementation runs on the target device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    /// The device's own [`Kernels`] (on `Cuda`: the compositions).
    Kernels,
    /// [`composed`] called directly (to test it on `Cpu`).
    Composed,
}

/// One op's comparison.
#[derive(Clone, Debug, PartialEq)]
pub struct OpCheck {
    /// The case, e.g. `conv2d 3x3/1 pad 1`.
    pub op: String,
    /// Largest |target − reference| of the output over the largest |reference|.
    pub forward: f64,
    /// The same for each input gradient, worst first.
    pub backward: f64,
}

impl OpCheck {
    /// The larger of the two errors.
    pub fn worst(&self) -> f64 {
        self.forward.max(self.backward)
    }
}

/// Output and input gradients of one run, on the host.
struct Outcome {
    out: Vec<f32>,
    grads: Vec<Vec<f32>>,
}

/// Deterministic inputs: a splitmix64 stream mapped to roughly normal values.
fn values(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(1);
    (0..n)
        .map(|_| {
            let mut acc = 0f32;
            for _ in 0..4 {
                s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
                let mut z = s;
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                z ^= z >> 31;
                acc += (z >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
            }
            acc * 1.7
        })
        .collect()
}

fn input<S: Shape, D: Kernels<f32>>(dev: &D, seed: u64, shape: S) -> Result<Tensor<S, f32, D>, OpError> {
    dev.try_tensor_from_vec(values(seed, shape.num_elements()), shape).map_err(OpError::device)
}

/// `Σ y·r` backward; the output and the gradients of `inputs` on the host.
fn finish<S: Shape, D: Kernels<f32>>(
    y: Tensor<S, f32, D, OwnedTape<f32, D>>,
    grads_of: impl FnOnce(&Gradients<f32, D>) -> Vec<Vec<f32>>,
) -> Result<Outcome, OpError> {
    let shape = *y.shape();
    let out = y.retaped::<NoneTape>().as_vec();
    let r = input(y.device(), 999, shape)?;
    let loss = y.try_mul(r).and_then(|l| l.try_sum::<Rank0, _>()).map_err(OpError::device)?;
    let g = loss.backward();
    Ok(Outcome { out, grads: grads_of(&g) })
}

/// Runs `$kernel` (through [`Kernels`]) or `$composed` on `dev` per `path`.
macro_rules! pick {
    ($path:expr, $dev:ty, $name:ident ($($arg:expr),*)) => {
        match $path {
            Path::Kernels => <$dev as Kernels<f32>>::$name($($arg),*),
            Path::Composed => composed::$name($($arg),*),
        }
    };
}

type CaseFn<D> = fn(&D, Path) -> Result<Outcome, OpError>;

fn conv<const C: usize, const O: usize, const IG: usize, const K: usize, D: Kernels<f32>>(
    dev: &D,
    path: Path,
    hw: usize,
    cfg: Conv2dConfig,
    bias: bool,
) -> Result<Outcome, OpError> {
    let x = input(dev, 1, (2, Const::<C>, hw, hw))?;
    let w: Tensor<Rank4<O, IG, K, K>, f32, D> = input(dev, 2, Default::default())?;
    let b: Tensor<Rank1<O>, f32, D> = input(dev, 3, Default::default())?;
    let y = if bias {
        pick!(path, D, conv2d_bias(x.leaky_trace(), w.leaky_trace(), b.leaky_trace(), cfg))?
    } else {
        pick!(path, D, conv2d(x.leaky_trace(), w.leaky_trace(), cfg))?
    };
    finish(y, |g| {
        let mut v = vec![g.get(&x).as_vec(), g.get(&w).as_vec()];
        if bias {
            v.push(g.get(&b).as_vec());
        }
        v
    })
}

fn pool<D: Kernels<f32>>(dev: &D, path: Path, max: bool, cfg: Pool2dConfig) -> Result<Outcome, OpError> {
    let x = input(dev, 4, (2, Const::<3>, 9, 9))?;
    let y = if max {
        pick!(path, D, max_pool2d(x.leaky_trace(), cfg))?
    } else {
        pick!(path, D, avg_pool2d(x.leaky_trace(), cfg))?
    };
    finish(y, |g| vec![g.get(&x).as_vec()])
}

fn global_pool<D: Kernels<f32>>(dev: &D, path: Path) -> Result<Outcome, OpError> {
    let x = input(dev, 5, (3, Const::<4>, 5, 6))?;
    let y = pick!(path, D, global_avg_pool2d(x.leaky_trace()))?;
    finish(y, |g| vec![g.get(&x).as_vec()])
}

fn batch_norm<D: Kernels<f32>>(dev: &D, path: Path, training: bool, relu: bool) -> Result<Outcome, OpError> {
    let x = input(dev, 6, (3, Const::<4>, 5, 5))?;
    let w: Tensor<Rank1<4>, f32, D> = input(dev, 7, Default::default())?;
    let b: Tensor<Rank1<4>, f32, D> = input(dev, 8, Default::default())?;
    let mut mean: Tensor<Rank1<4>, f32, D> = input(dev, 9, Default::default())?;
    let mut var = dev.try_tensor([0.5f32, 1.0, 2.0, 0.25]).map_err(OpError::device)?;
    let cfg = BatchNormConfig::new(training).relu(relu);
    let y = pick!(path, D, batch_norm(x.leaky_trace(), w.leaky_trace(), b.leaky_trace(), &mut mean, &mut var, cfg))?;
    finish(y, |g| vec![g.get(&x).as_vec(), g.get(&w).as_vec(), g.get(&b).as_vec(), mean.as_vec(), var.as_vec()])
}

fn layer_norm<D: Kernels<f32>>(dev: &D, path: Path) -> Result<Outcome, OpError> {
    let x = input(dev, 10, (2, 5, Const::<8>))?;
    let w: Tensor<Rank1<8>, f32, D> = input(dev, 11, Default::default())?;
    let b: Tensor<Rank1<8>, f32, D> = input(dev, 12, Default::default())?;
    let y = pick!(path, D, layer_norm(x.leaky_trace(), w.leaky_trace(), b.leaky_trace(), 1e-6))?;
    finish(y, |g| vec![g.get(&x).as_vec(), g.get(&w).as_vec(), g.get(&b).as_vec()])
}

fn linear<D: Kernels<f32>>(dev: &D, path: Path, bias: bool) -> Result<Outcome, OpError> {
    let x = input(dev, 13, (5, Const::<6>))?;
    let w: Tensor<Rank2<7, 6>, f32, D> = input(dev, 14, Default::default())?;
    let b: Tensor<Rank1<7>, f32, D> = input(dev, 15, Default::default())?;
    let y = if bias {
        pick!(path, D, linear(x.leaky_trace(), w.leaky_trace(), b.leaky_trace()))?
    } else {
        pick!(path, D, linear_no_bias(x.leaky_trace(), w.leaky_trace()))?
    };
    finish(y, |g| vec![g.get(&x).as_vec(), g.get(&w).as_vec(), if bias { g.get(&b).as_vec() } else { vec![] }])
}

fn bmm<D: Kernels<f32>>(dev: &D, path: Path, transpose_b: bool) -> Result<Outcome, OpError> {
    let a = input(dev, 16, (3, 4, 5))?;
    let b = input(dev, 17, if transpose_b { (3, 6, 5) } else { (3, 5, 6) })?;
    let y = pick!(path, D, batched_matmul(a.leaky_trace(), b.leaky_trace(), transpose_b))?;
    finish(y, |g| vec![g.get(&a).as_vec(), g.get(&b).as_vec()])
}

fn unary<D: Kernels<f32>>(dev: &D, path: Path, which: &str) -> Result<Outcome, OpError> {
    let x = input(dev, 18, (2, 3, 7))?;
    let t = x.leaky_trace();
    let y = match which {
        "silu" => pick!(path, D, silu(t))?,
        "gelu" => pick!(path, D, gelu(t))?,
        _ => pick!(path, D, scaled_softmax(t, 0.35))?,
    };
    finish(y, |g| vec![g.get(&x).as_vec()])
}

fn heads<D: Kernels<f32>>(dev: &D, path: Path) -> Result<Outcome, OpError> {
    let x = input(dev, 19, (2, 5, Const::<24>))?;
    // Split part 1 of 3 (k of qkv) into 2 heads of 4, scale, merge back to width 8.
    let h = pick!(path, D, split_heads(x.leaky_trace(), 1, 3, 2))?;
    let h = h.try_mul(1.5f32).map_err(OpError::device)?;
    let y = match path {
        Path::Kernels => D::merge_heads::<8, _>(h, 2)?,
        Path::Composed => composed::merge_heads::<8, _, _, _>(h, 2)?,
    };
    finish(y, |g| vec![g.get(&x).as_vec()])
}

fn attention<D: Kernels<f32>>(dev: &D, path: Path) -> Result<Outcome, OpError> {
    // Two images of 5 tokens, qkv of width 3 × 8, 2 heads of 4.
    let x = input(dev, 24, (2, 5, Const::<24>))?;
    let y: Tensor<(usize, usize, Const<8>), f32, D, _> = match path {
        Path::Kernels => D::attention(x.leaky_trace(), 2, 0.5)?,
        Path::Composed => composed::attention(x.leaky_trace(), 2, 0.5)?,
    };
    finish(y, |g| vec![g.get(&x).as_vec()])
}

fn scale<D: Kernels<f32>>(dev: &D, path: Path) -> Result<Outcome, OpError> {
    let x = input(dev, 20, (2, Const::<3>, 4, 5))?;
    let s = input(dev, 21, (2, Const::<3>))?;
    let y = pick!(path, D, scale_channels(x.leaky_trace(), s.leaky_trace()))?;
    finish(y, |g| vec![g.get(&x).as_vec(), g.get(&s).as_vec()])
}

fn residual<D: Kernels<f32>>(dev: &D, path: Path) -> Result<Outcome, OpError> {
    let x = input(dev, 22, (2, Const::<3>, 4, 5))?;
    let s = input(dev, 23, (2, Const::<3>, 4, 5))?;
    let y = pick!(path, D, residual_add(x.leaky_trace(), s.leaky_trace(), true))?;
    finish(y, |g| vec![g.get(&x).as_vec(), g.get(&s).as_vec()])
}

/// The cases: name and function.
fn cases<D: Kernels<f32>>() -> Vec<(&'static str, CaseFn<D>)> {
    vec![
        ("conv2d 3x3/1 pad 1", |d, p| conv::<4, 6, 4, 3, D>(d, p, 7, Conv2dConfig::default().padding(1), false)),
        ("conv2d 3x3/2 pad 1", |d, p| {
            conv::<4, 6, 4, 3, D>(d, p, 7, Conv2dConfig::default().stride(2).padding(1), false)
        }),
        ("conv2d 1x1/2", |d, p| conv::<4, 6, 4, 1, D>(d, p, 7, Conv2dConfig::default().stride(2), false)),
        ("conv2d 7x7/2 pad 3 (stem)", |d, p| {
            conv::<3, 4, 3, 7, D>(d, p, 12, Conv2dConfig::default().stride(2).padding(3), false)
        }),
        ("conv2d depthwise 3x3/2 pad 1", |d, p| {
            conv::<6, 6, 1, 3, D>(d, p, 7, Conv2dConfig::default().stride(2).padding(1).groups(6), false)
        }),
        ("conv2d depthwise 5x5/1 pad 2", |d, p| {
            conv::<6, 6, 1, 5, D>(d, p, 7, Conv2dConfig::default().padding(2).groups(6), false)
        }),
        ("conv2d grouped 4→8 3x3/2 + bias (PiT pool)", |d, p| {
            conv::<4, 8, 1, 3, D>(d, p, 7, Conv2dConfig::default().stride(2).padding(1).groups(4), true)
        }),
        ("conv2d 4x4/4 + bias (patch embed)", |d, p| {
            conv::<3, 5, 3, 4, D>(d, p, 8, Conv2dConfig::default().stride(4), true)
        }),
        ("max_pool2d 3/2/1", |d, p| pool(d, p, true, Pool2dConfig::new(3).stride(2).padding(1))),
        ("avg_pool2d 2", |d, p| pool(d, p, false, Pool2dConfig::new(2))),
        ("global_avg_pool2d", global_pool),
        ("batch_norm train", |d, p| batch_norm(d, p, true, false)),
        ("batch_norm train + relu", |d, p| batch_norm(d, p, true, true)),
        ("batch_norm eval", |d, p| batch_norm(d, p, false, false)),
        ("layer_norm", layer_norm),
        ("linear", |d, p| linear(d, p, true)),
        ("linear_no_bias", |d, p| linear(d, p, false)),
        ("batched_matmul", |d, p| bmm(d, p, false)),
        ("batched_matmul transpose_b", |d, p| bmm(d, p, true)),
        ("silu", |d, p| unary(d, p, "silu")),
        ("gelu", |d, p| unary(d, p, "gelu")),
        ("scaled_softmax", |d, p| unary(d, p, "softmax")),
        ("split_heads + merge_heads", heads),
        ("attention (2 heads)", attention),
        ("scale_channels", scale),
        ("residual_add + relu", residual),
    ]
}

/// Largest |a − b| over the largest |b|.
fn rel(a: &[f32], b: &[f32]) -> f64 {
    if a.len() != b.len() {
        return f64::INFINITY;
    }
    let scale = b.iter().fold(0f64, |m, &v| m.max((v as f64).abs())).max(1e-12);
    a.iter().zip(b).fold(0f64, |m, (&x, &y)| m.max((x as f64 - y as f64).abs())) / scale
}

/// Every op on `dev` (by `path`) against the crate's `Cpu` kernels.
pub fn compare_ops<D: Kernels<f32>>(dev: &D, path: Path) -> Result<Vec<OpCheck>, OpError> {
    let cpu = Cpu::default();
    let reference = cases::<Cpu>();
    let target = cases::<D>();
    let mut rows = Vec::new();
    for ((name, r), (_, t)) in reference.into_iter().zip(target) {
        let want = r(&cpu, Path::Kernels)?;
        let got = t(dev, path)?;
        rows.push(check(name, &got, &want));
    }
    Ok(rows)
}

/// `got` against the reference `want`: a missing gradient counts as infinitely wrong.
fn check(op: &str, got: &Outcome, want: &Outcome) -> OpCheck {
    let backward = if got.grads.len() == want.grads.len() {
        want.grads.iter().zip(&got.grads).map(|(w, g)| rel(g, w)).fold(0f64, f64::max)
    } else {
        f64::INFINITY
    };
    OpCheck { op: op.to_string(), forward: rel(&got.out, &want.out), backward }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(out: &[f32], grads: &[&[f32]]) -> Outcome {
        Outcome { out: out.to_vec(), grads: grads.iter().map(|g| g.to_vec()).collect() }
    }

    /// What the comparison must catch in a device's op: a wrong output value, a wrong value in
    /// any one gradient, a gradient of the wrong length, a gradient that is not there.
    #[test]
    fn the_comparison_catches_wrong_outputs_and_gradients() {
        let want = outcome(&[1.0, -4.0], &[&[2.0, 0.5], &[8.0]]);
        let same = check("op", &outcome(&[1.0, -4.0], &[&[2.0, 0.5], &[8.0]]), &want);
        assert_eq!((same.forward, same.backward), (0.0, 0.0));
        let out = check("op", &outcome(&[1.0, -3.0], &[&[2.0, 0.5], &[8.0]]), &want);
        assert_eq!((out.forward, out.backward), (0.25, 0.0));
        let second = check("op", &outcome(&[1.0, -4.0], &[&[2.0, 0.5], &[6.0]]), &want);
        assert_eq!((second.forward, second.backward), (0.0, 0.25));
        assert_eq!(second.worst(), 0.25);
        let short = check("op", &outcome(&[1.0, -4.0], &[&[2.0], &[8.0]]), &want);
        assert_eq!(short.backward, f64::INFINITY);
        let missing = check("op", &outcome(&[1.0, -4.0], &[&[2.0, 0.5]]), &want);
        assert_eq!(missing.backward, f64::INFINITY);
    }
}
