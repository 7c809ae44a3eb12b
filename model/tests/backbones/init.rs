//! The initialisation schemes ([`siamlab_model::init`]): each library's distribution measured
//! over large tensors of the full-size backbones, and what each scheme leaves as built.

use std::collections::BTreeMap;

use dfdx::nn::tensor_collection::TensorCollection;
use dfdx::prelude::*;
use siamlab_model::backbones::*;
use siamlab_model::init::{initialise, InitScheme};
use siamlab_model::visit_tensors;

/// Every tensor of `net` by name.
fn tensors<B: TensorCollection<f32, Cpu>>(net: &B) -> BTreeMap<String, Vec<f32>> {
    let mut out = BTreeMap::new();
    visit_tensors::<Cpu, B, ()>(net, "", &mut |s, values| {
        out.insert(s.name.to_string(), values());
        Ok(())
    })
    .unwrap();
    out
}

fn get<'a>(t: &'a BTreeMap<String, Vec<f32>>, name: &str) -> &'a [f32] {
    t.get(name).unwrap_or_else(|| panic!("no tensor {name}; have {:?}", t.keys().take(12).collect::<Vec<_>>()))
}

/// Mean and standard deviation.
fn moments(v: &[f32]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
    let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt())
}

/// Asserts `v` has mean about 0 and standard deviation `std` within relative `tol`.
fn assert_std(v: &[f32], std: f64, tol: f64, what: &str) {
    let (mean, s) = moments(v);
    assert!((s / std - 1.0).abs() < tol, "{what}: std {s:.6}, expected {std:.6} (±{:.1}%)", tol * 100.0);
    assert!(mean.abs() < 4.0 * std / (v.len() as f64).sqrt() + 1e-12, "{what}: mean {mean}");
}

fn built<B: BuildModule<Cpu, f32>>(seed: u64) -> B {
    B::build(&Cpu::seed_from_u64(seed))
}

#[test]
fn torchvision_resnet_is_kaiming_normal_fan_out() {
    let uniform = tensors(&built::<ResNet18>(3));
    let mut net = built::<ResNet18>(3);
    initialise(&mut net, InitScheme::Library, 9).unwrap();
    let lib = tensors(&net);
    // layer4.1.conv2: [512, 512, 3, 3], 2.4M values: std √(2 / (512·9)) = 0.02083; the
    // layer's own default is U(±1/√4608), std 0.0085.
    let w = get(&lib, "layer4.1.conv2.weight");
    assert_std(w, (2.0f64 / (512.0 * 9.0)).sqrt(), 0.005, "layer4.1.conv2.weight");
    assert_std(get(&uniform, "layer4.1.conv2.weight"), 1.0 / (3.0f64 * 4608.0).sqrt(), 0.005, "uniform default");
    // Normal, not uniform: about 4.6% of the values lie beyond 2σ (none would for a uniform of that std).
    let tail = w.iter().filter(|&&x| (x as f64).abs() > 2.0 * 0.02083).count() as f64 / w.len() as f64;
    assert!((tail - 0.0455).abs() < 0.003, "tail beyond 2σ: {tail}");
    // The stem: [64, 3, 7, 7], fan-out 64·49.
    assert_std(get(&lib, "conv1.weight"), (2.0f64 / (64.0 * 49.0)).sqrt(), 0.03, "conv1.weight");
    // The 1×1 shortcut: fan-out 128.
    assert_std(get(&lib, "layer2.0.downsample.0.weight"), (2.0f64 / 128.0).sqrt(), 0.03, "downsample");
    // BatchNorm at 1 and 0, running statistics as built, every block's bn2 at 1 without zero-init.
    for name in ["bn1.weight", "layer1.0.bn2.weight", "layer3.0.downsample.1.weight"] {
        assert!(get(&lib, name).iter().all(|&v| v == 1.0), "{name}");
    }
    assert!(get(&lib, "layer2.1.bn1.bias").iter().all(|&v| v == 0.0));
    assert_eq!(get(&lib, "layer2.1.bn1.running_var"), get(&uniform, "layer2.1.bn1.running_var"));
}

#[test]
fn simsiam_zero_inits_the_residual_branches_and_uniform_leaves_the_build() {
    let mut net = built::<ResNet18CifarTiny>(5);
    initialise(&mut net, InitScheme::Simsiam, 1).unwrap();
    let t = tensors(&net);
    let zeroed: Vec<_> = t.keys().filter(|k| k.ends_with("bn2.weight")).cloned().collect();
    assert_eq!(zeroed.len(), 8, "{zeroed:?}");
    for k in &zeroed {
        assert!(get(&t, k).iter().all(|&v| v == 0.0), "{k}");
    }
    for k in ["bn1.weight", "layer1.0.bn1.weight", "layer2.0.downsample.1.weight"] {
        assert!(get(&t, k).iter().all(|&v| v == 1.0), "{k}");
    }
    let mut same = built::<ResNet18CifarTiny>(5);
    initialise(&mut same, InitScheme::Uniform, 1).unwrap();
    assert_eq!(tensors(&same), tensors(&built::<ResNet18CifarTiny>(5)), "uniform redraws nothing");
    // The draw is a function of the seed.
    let mut again = built::<ResNet18CifarTiny>(5);
    initialise(&mut again, InitScheme::Simsiam, 1).unwrap();
    assert_eq!(tensors(&again), t);
}

#[test]
fn timm_efficientnet_uses_group_fan_out() {
    let mut net = built::<EfficientNetB0>(2);
    initialise(&mut net, InitScheme::Library, 4).unwrap();
    let t = tensors(&net);
    // Depthwise [1152, 1, 5, 5]: fan-out 1152·25 / 1152 groups = 25.
    assert_std(get(&t, "blocks.5.1.conv_dw.weight"), (2.0f64 / 25.0).sqrt(), 0.03, "conv_dw");
    // conv_head [1280, 320, 1, 1]: fan-out 1280.
    assert_std(get(&t, "conv_head.weight"), (2.0f64 / 1280.0).sqrt(), 0.01, "conv_head");
    assert!(get(&t, "blocks.1.0.se.conv_reduce.bias").iter().all(|&v| v == 0.0));
    assert!(get(&t, "blocks.1.0.se.conv_expand.bias").iter().all(|&v| v == 0.0));
    assert!(get(&t, "bn2.weight").iter().all(|&v| v == 1.0));
}

#[test]
fn timm_vit_and_pit_use_truncated_normals() {
    let before = tensors(&built::<VitS32>(6));
    let mut net = built::<VitS32>(6);
    initialise(&mut net, InitScheme::Library, 8).unwrap();
    let t = tensors(&net);
    // qkv [1152, 384]: truncated N(0, 0.02²) at ±2, biases 0.
    let qkv = get(&t, "blocks.3.attn.qkv.weight");
    assert_std(qkv, 0.02, 0.01, "qkv");
    assert!(qkv.iter().any(|&x| x.abs() > 0.02 * 3f32.sqrt()), "normal, not the uniform of the same std");
    assert_std(get(&t, "blocks.11.mlp.fc2.weight"), 0.02, 0.01, "fc2");
    for b in ["blocks.0.attn.qkv.bias", "blocks.0.attn.proj.bias", "blocks.0.mlp.fc1.bias", "blocks.0.mlp.fc2.bias"] {
        assert!(get(&t, b).iter().all(|&v| v == 0.0), "{b}");
    }
    assert_std(get(&t, "pos_embed"), 0.02, 0.08, "pos_embed");
    assert!(get(&t, "cls_token").iter().all(|&v| v.abs() < 1e-5) && get(&t, "cls_token").iter().any(|&v| v != 0.0));
    // The patch convolution and LayerNorms keep PyTorch's defaults.
    for k in ["patch_embed.proj.weight", "patch_embed.proj.bias", "norm.weight", "blocks.2.norm1.bias"] {
        assert_eq!(get(&t, k), get(&before, k), "{k}");
    }

    let before = tensors(&built::<PitTi32>(6));
    let mut net = built::<PitTi32>(6);
    initialise(&mut net, InitScheme::Simsiam, 8).unwrap();
    let t = tensors(&net);
    let changed: Vec<_> = t.keys().filter(|k| t[*k] != before[*k]).cloned().collect();
    assert_eq!(changed, ["cls_token", "pos_embed"], "timm's PiT redraws its embeddings only");
    let pos = get(&t, "pos_embed");
    assert_std(pos, 0.02, 0.08, "pit pos_embed");
    assert!(pos.iter().any(|&x| x.abs() > 0.02 * 3f32.sqrt()), "normal, not the uniform of the same std");
}
