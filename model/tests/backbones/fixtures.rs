//! The backbones against torchvision / timm (`tests/fixtures/backbones.json`, written by
//! `tools/model_fixtures.py`): every tensor is filled by the same formula of its state_dict key
//! on both sides, so equal features mean equal names, shapes and arithmetic.

use dfdx::nn::tensor_collection::TensorCollection;
use dfdx::prelude::*;
use serde_json::Value;
use siamlab_model::backbones::*;
use siamlab_model::layers::Mode;
use siamlab_model::{named_tensors, walk_tensors};

fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xCBF2_9CE4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01B3))
}

/// `fill` of the script: the value of every tensor from its key.
fn fill(name: &str, shape: &[usize]) -> Vec<f32> {
    let n: usize = shape.iter().product();
    let phase = (fnv1a(name) % 10007) as f64 * 1e-3;
    (0..n)
        .map(|i| {
            let s = (phase + 0.61 * i as f64).sin();
            let v = if name.ends_with("running_var") {
                0.75 + 0.25 * s
            } else if name.ends_with("running_mean") || name.ends_with("bias") {
                0.1 * s
            } else if name.ends_with("weight") && shape.len() == 1 {
                1.0 + 0.1 * s
            } else if name.ends_with("weight") {
                s * (3.0 / (n / shape[0]) as f64).sqrt()
            } else {
                0.1 * s
            };
            v as f32
        })
        .collect()
}

fn fixture(case: &str) -> Value {
    let text = include_str!("../fixtures/backbones.json");
    let doc: Value = serde_json::from_str(text).expect("fixture parses");
    doc["cases"][case].clone()
}

fn check<B: Backbone<F> + TensorCollection<f32, Cpu>, const F: usize>(case: &str, mut net: B) {
    let fx = fixture(case);
    // Same keys, same shapes, same order as the PyTorch state_dict.
    let ours: Vec<(String, Vec<usize>)> = named_tensors(&net).into_iter().map(|t| (t.name, t.shape)).collect();
    let theirs: Vec<(String, Vec<usize>)> = fx["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            let shape = k["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect();
            (k["name"].as_str().unwrap().to_string(), shape)
        })
        .collect();
    assert_eq!(ours, theirs, "{case}: state_dict keys");

    walk_tensors::<Cpu, B, std::convert::Infallible>(&mut net, "", &mut |s, v| {
        *v = fill(s.name, s.shape);
        Ok(true)
    })
    .unwrap();
    let size = fx["size"].as_u64().unwrap() as usize;
    let n = 2 * 3 * size * size;
    let x: Vec<f32> = (0..n).map(|i| (0.37 * i as f64 + 0.1).sin() as f32).collect();
    let dev = Cpu::default();
    let y = net.forward_features(dev.tensor_from_vec(x, (2, Const::<3>, size, size)), Mode::Eval).unwrap();
    let want: Vec<f64> = fx["y"]["data"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    for (i, (g, w)) in y.as_vec().iter().zip(&want).enumerate() {
        let err = (*g as f64 - w).abs();
        assert!(err <= 1e-4 * (1.0 + scale), "{case}[{i}]: got {g}, want {w} (scale {scale})");
    }
    assert_eq!(y.as_vec().len(), want.len());
}

#[test]
fn resnet18_cifar_stem_matches_torchvision() {
    check("resnet18_cifar", ResNet18Cifar::build(&Cpu::default()));
}

#[test]
fn resnet18_imagenet_stem_matches_torchvision() {
    check("resnet18_imagenet", ResNet18::build(&Cpu::default()));
}

#[test]
fn efficientnet_b0_stride1_stem_matches_timm() {
    check("efficientnet_b0_s1", EfficientNetB0S1::build(&Cpu::default()));
}

#[test]
fn vit_matches_timm() {
    check("vit_tiny_32", VitTiny32::build(&Cpu::default()));
}

#[test]
fn pit_matches_timm() {
    check("pit_tiny_32", PitTiny32::build(&Cpu::default()));
}
