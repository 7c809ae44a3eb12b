//! Replays PyTorch reference values (tools/model_fixtures.py, float64) in f64 and f32:
//! outputs without and with a tape, and the gradients of `sum(r · y)` for every input.

use std::sync::LazyLock;

use dfdx::prelude::*;
use serde_json::Value;
use siamlab_model::*;

use crate::{assert_close, cast, widen, with_threads};

static CONV: LazyLock<Value> = LazyLock::new(|| parse(include_str!("../fixtures/conv2d.json")));
static POOL: LazyLock<Value> = LazyLock::new(|| parse(include_str!("../fixtures/pool.json")));
static ELEMENTWISE: LazyLock<Value> = LazyLock::new(|| parse(include_str!("../fixtures/elementwise.json")));

fn parse(text: &str) -> Value {
    serde_json::from_str(text).expect("fixture is JSON")
}

/// Tolerances: PyTorch computed in f64; f32 reruns carry rounding of the inputs and sums.
const TOL_F64: f64 = 1e-10;
const TOL_F32: f64 = 1e-4;

struct Arr {
    shape: Vec<usize>,
    data: Vec<f64>,
}

fn arr(case: &Value, key: &str) -> Option<Arr> {
    let v = case.get(key)?;
    let nums =
        |v: &Value| -> Vec<f64> { v.as_array().expect("array").iter().map(|x| x.as_f64().expect("number")).collect() };
    Some(Arr { shape: nums(&v["shape"]).into_iter().map(|d| d as usize).collect(), data: nums(&v["data"]) })
}

fn num(case: &Value, key: &str) -> usize {
    case[key].as_u64().unwrap_or_else(|| panic!("{key} missing")) as usize
}

fn case<'a>(doc: &'a Value, name: &str) -> &'a Value {
    doc["cases"].get(name).unwrap_or_else(|| panic!("fixture case {name} missing"))
}

fn image<const C: usize, E: Element>(dev: &Cpu, a: &Arr) -> Tensor<Image<C>, E, Cpu> {
    assert_eq!(a.shape[1], C, "fixture channel count");
    dev.tensor_from_vec(cast(&a.data), (a.shape[0], Const::<C>, a.shape[2], a.shape[3]))
}

fn check<E: Element>(got: &[E], want: &Arr, tol: f64, what: &str) {
    assert_close(&widen(got), &want.data, tol, what);
}

fn conv_case<const C: usize, const O: usize, const IG: usize, const K: usize, E: Element>(name: &str, tol: f64)
where
    Cpu: Device<E>,
{
    let c = case(&CONV, name);
    let dev = Cpu::default();
    let (xa, wa) = (arr(c, "x").unwrap(), arr(c, "weight").unwrap());
    assert_eq!(wa.shape, [O, IG, K, K], "{name}: weight shape");
    let cfg = Conv2dConfig::default().stride(num(c, "stride")).padding(num(c, "padding")).groups(num(c, "groups"));
    let x: Tensor<Image<C>, E, Cpu> = image(&dev, &xa);
    let w = dev.tensor_from_vec(cast::<E>(&wa.data), (Const::<O>, Const::<IG>, Const::<K>, Const::<K>));
    let b = arr(c, "bias").map(|b| dev.tensor_from_vec(cast::<E>(&b.data), (Const::<O>,)));
    let want_y = arr(c, "y").unwrap();

    let plain = match &b {
        Some(b) => conv2d_bias(x.clone(), w.clone(), b.clone(), cfg),
        None => conv2d(x.clone(), w.clone(), cfg),
    }
    .unwrap();
    let &(n, _, ho, wo) = plain.shape();
    assert_eq!(vec![n, O, ho, wo], want_y.shape, "{name}: output shape");
    check(&plain.as_vec(), &want_y, tol, &format!("{name} y (no tape)"));

    let y = match &b {
        Some(b) => conv2d_bias(x.leaky_trace(), w.clone(), b.clone(), cfg),
        None => conv2d(x.leaky_trace(), w.clone(), cfg),
    }
    .unwrap();
    check(&y.as_vec(), &want_y, tol, &format!("{name} y (tape)"));
    let r = dev.tensor_from_vec(cast::<E>(&arr(c, "r").unwrap().data), *y.shape());
    let g = (y * r).sum().backward();
    check(&g.get(&x).as_vec(), &arr(c, "grad_x").unwrap(), tol, &format!("{name} grad x"));
    check(&g.get(&w).as_vec(), &arr(c, "grad_weight").unwrap(), tol, &format!("{name} grad w"));
    if let Some(b) = &b {
        check(&g.get(b).as_vec(), &arr(c, "grad_bias").unwrap(), tol, &format!("{name} grad b"));
    }
}

macro_rules! conv_fixture {
    ($test:ident, $case:literal, $c:literal, $o:literal, $ig:literal, $k:literal) => {
        #[test]
        fn $test() {
            conv_case::<$c, $o, $ig, $k, f64>($case, TOL_F64);
            conv_case::<$c, $o, $ig, $k, f32>($case, TOL_F32);
            // One task with all images in one GEMM block; three tasks of uneven size.
            with_threads(1, || conv_case::<$c, $o, $ig, $k, f64>($case, TOL_F64));
            with_threads(3, || conv_case::<$c, $o, $ig, $k, f64>($case, TOL_F64));
        }
    };
}

conv_fixture!(conv_k3_s1_p1_bias, "k3_s1_p1_bias", 4, 5, 4, 3);
conv_fixture!(conv_k3_s2_p1, "k3_s2_p1", 4, 6, 4, 3);
conv_fixture!(conv_k1_s2_p0, "k1_s2_p0", 4, 6, 4, 1);
conv_fixture!(conv_k1_s1_p0_bias, "k1_s1_p0_bias", 4, 8, 4, 1);
conv_fixture!(conv_k7_s2_p3, "k7_s2_p3", 3, 4, 3, 7);
conv_fixture!(conv_k3_s1_p1_g2, "k3_s1_p1_g2", 4, 6, 2, 3);
conv_fixture!(conv_dw_k5_s2_p2, "dw_k5_s2_p2", 4, 4, 1, 5);
conv_fixture!(conv_dw_k3_s1_p1_bias, "dw_k3_s1_p1_bias", 3, 3, 1, 3);
conv_fixture!(conv_pit_pool_k3_s2_p1, "pit_pool_k3_s2_p1", 3, 6, 1, 3);
conv_fixture!(conv_patch_k4_s4_bias, "patch_k4_s4_bias", 3, 5, 3, 4);

/// Replays a single-input case: `op` runs with whatever tape it is given.
fn unary_case<const C: usize, E: Element, Y: Shape>(
    doc: &Value,
    name: &str,
    tol: f64,
    op: impl Fn(Tensor<Image<C>, E, Cpu>) -> Tensor<Y, E, Cpu>,
    op_traced: impl Fn(Tensor<Image<C>, E, Cpu, OwnedTape<E, Cpu>>) -> Tensor<Y, E, Cpu, OwnedTape<E, Cpu>>,
) where
    Cpu: Device<E>,
{
    let c = case(doc, name);
    let dev = Cpu::default();
    let x: Tensor<Image<C>, E, Cpu> = image(&dev, &arr(c, "x").unwrap());
    let want_y = arr(c, "y").unwrap();
    let plain = op(x.clone());
    assert_eq!(plain.shape().concrete().into_iter().collect::<Vec<_>>(), want_y.shape, "{name}: output shape");
    check(&plain.as_vec(), &want_y, tol, &format!("{name} y (no tape)"));
    let y = op_traced(x.leaky_trace());
    check(&y.as_vec(), &want_y, tol, &format!("{name} y (tape)"));
    let r = dev.tensor_from_vec(cast::<E>(&arr(c, "r").unwrap().data), *y.shape());
    let g = (y * r).sum().backward();
    check(&g.get(&x).as_vec(), &arr(c, "grad_x").unwrap(), tol, &format!("{name} grad x"));
}

fn pool_cfg(c: &Value) -> Pool2dConfig {
    Pool2dConfig::new(num(c, "kernel"))
        .stride(num(c, "stride"))
        .padding(num(c, "padding"))
        .count_include_pad(c["count_include_pad"].as_bool().unwrap_or(true))
}

fn pool_case<E: Element>(name: &str, tol: f64, max: bool)
where
    Cpu: Device<E>,
{
    let cfg = pool_cfg(case(&POOL, name));
    if max {
        unary_case::<3, E, _>(&POOL, name, tol, |x| max_pool2d(x, cfg).unwrap(), |x| max_pool2d(x, cfg).unwrap());
    } else {
        unary_case::<3, E, _>(&POOL, name, tol, |x| avg_pool2d(x, cfg).unwrap(), |x| avg_pool2d(x, cfg).unwrap());
    }
}

#[test]
fn pools() {
    for (name, max) in [
        ("max_k3_s2_p1", true),
        ("max_k2_s2_p0", true),
        ("avg_k3_s1_p1", false),
        ("avg_k3_s2_p1_exclude", false),
        ("avg_k2_s2_p0", false),
    ] {
        pool_case::<f64>(name, TOL_F64, max);
        pool_case::<f32>(name, TOL_F32, max);
    }
}

#[test]
fn global_avg() {
    unary_case::<4, f64, _>(
        &POOL,
        "global_avg",
        TOL_F64,
        |x| global_avg_pool2d(x).unwrap(),
        |x| global_avg_pool2d(x).unwrap(),
    );
    unary_case::<4, f32, _>(
        &POOL,
        "global_avg",
        TOL_F32,
        |x| global_avg_pool2d(x).unwrap(),
        |x| global_avg_pool2d(x).unwrap(),
    );
}

#[test]
fn silu_matches() {
    unary_case::<3, f64, _>(&ELEMENTWISE, "silu", TOL_F64, |x| silu(x).unwrap(), |x| silu(x).unwrap());
    unary_case::<3, f32, _>(&ELEMENTWISE, "silu", TOL_F32, |x| silu(x).unwrap(), |x| silu(x).unwrap());
}

fn scale_case<E: Element>(tol: f64)
where
    Cpu: Device<E>,
{
    let c = case(&ELEMENTWISE, "scale_channels");
    let dev = Cpu::default();
    let x: Tensor<Image<3>, E, Cpu> = image(&dev, &arr(c, "x").unwrap());
    let sa = arr(c, "s").unwrap();
    let s = dev.tensor_from_vec(cast::<E>(&sa.data), (sa.shape[0], Const::<3>));
    let want_y = arr(c, "y").unwrap();
    let y = scale_channels(x.leaky_trace(), s.leaky_trace()).unwrap();
    check(&y.as_vec(), &want_y, tol, "scale y");
    let r = dev.tensor_from_vec(cast::<E>(&arr(c, "r").unwrap().data), *y.shape());
    let g = (y * r).sum().backward();
    check(&g.get(&x).as_vec(), &arr(c, "grad_x").unwrap(), tol, "scale grad x");
    check(&g.get(&s).as_vec(), &arr(c, "grad_s").unwrap(), tol, "scale grad s");
}

#[test]
fn scale_channels_matches() {
    scale_case::<f64>(TOL_F64);
    scale_case::<f32>(TOL_F32);
}

#[test]
fn gelu_matches() {
    unary_case::<3, f64, _>(
        &ELEMENTWISE,
        "gelu",
        TOL_F64,
        |x| siamlab_model::gelu(x).unwrap(),
        |x| siamlab_model::gelu(x).unwrap(),
    );
    unary_case::<3, f32, _>(
        &ELEMENTWISE,
        "gelu",
        TOL_F32,
        |x| siamlab_model::gelu(x).unwrap(),
        |x| siamlab_model::gelu(x).unwrap(),
    );
}

fn residual_case<E: Element>(tol: f64)
where
    Cpu: Device<E>,
{
    let c = case(&ELEMENTWISE, "residual_add_relu");
    let dev = Cpu::default();
    let x: Tensor<Image<3>, E, Cpu> = image(&dev, &arr(c, "x").unwrap());
    let s: Tensor<Image<3>, E, Cpu> = image(&dev, &arr(c, "s").unwrap());
    let want_y = arr(c, "y").unwrap();
    check(&residual_add(x.clone(), s.clone(), true).unwrap().as_vec(), &want_y, tol, "add+relu y (no tape)");
    let y = residual_add(x.leaky_trace(), s.leaky_trace(), true).unwrap();
    check(&y.as_vec(), &want_y, tol, "add+relu y");
    let r = dev.tensor_from_vec(cast::<E>(&arr(c, "r").unwrap().data), *y.shape());
    let g = (y * r).sum().backward();
    check(&g.get(&x).as_vec(), &arr(c, "grad_x").unwrap(), tol, "add+relu grad x");
    check(&g.get(&s).as_vec(), &arr(c, "grad_s").unwrap(), tol, "add+relu grad shortcut");
}

#[test]
fn residual_add_relu_matches() {
    residual_case::<f64>(TOL_F64);
    residual_case::<f32>(TOL_F32);
}

fn softmax_case<E: Element>(tol: f64)
where
    Cpu: Device<E>,
{
    let c = case(&ELEMENTWISE, "scaled_softmax");
    let dev = Cpu::default();
    let xa = arr(c, "x").unwrap();
    let x: Tensor<(usize, usize, usize), E, Cpu> =
        dev.tensor_from_vec(cast::<E>(&xa.data), (xa.shape[0], xa.shape[1], xa.shape[2]));
    let scale = c["scale"].as_f64().unwrap();
    let want_y = arr(c, "y").unwrap();
    check(&scaled_softmax(x.clone(), scale).unwrap().as_vec(), &want_y, tol, "softmax y (no tape)");
    let y = scaled_softmax(x.leaky_trace(), scale).unwrap();
    check(&y.as_vec(), &want_y, tol, "softmax y");
    let r = dev.tensor_from_vec(cast::<E>(&arr(c, "r").unwrap().data), *y.shape());
    let g = (y * r).sum().backward();
    check(&g.get(&x).as_vec(), &arr(c, "grad_x").unwrap(), tol, "softmax grad x");
}

#[test]
fn scaled_softmax_matches() {
    softmax_case::<f64>(TOL_F64);
    softmax_case::<f32>(TOL_F32);
}
