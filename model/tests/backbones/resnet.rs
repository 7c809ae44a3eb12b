//! ResNet-18: torchvision's parameter counts and names, forward and backward at 32 and 96 px,
//! training vs evaluation mode.

use dfdx::prelude::*;
use siamlab_model::backbones::summary_by_name;
use siamlab_model::backbones::*;
use siamlab_model::layers::Mode;
use siamlab_model::{named_tensors, summary};

use crate::{grad_norm, images};

#[test]
fn parameter_counts_match_torchvision() {
    let dev = Cpu::default();
    assert_eq!(ResNet18::build(&dev).num_trainable_params(), 11_176_512);
    assert_eq!(ResNet18Cifar::build(&dev).num_trainable_params(), 11_168_832);
}

#[test]
fn names_are_torchvision_state_dict_keys() {
    let net = ResNet18CifarTiny::build(&Cpu::default());
    let names = named_tensors(&net);
    let find = |key: &str| names.iter().find(|t| t.name == key).unwrap_or_else(|| panic!("no {key}"));
    assert_eq!(find("conv1.weight").shape, vec![8, 3, 3, 3]);
    assert_eq!(find("bn1.running_var").shape, vec![8]);
    assert!(!find("bn1.running_mean").trainable);
    assert_eq!(find("layer1.1.conv2.weight").shape, vec![8, 8, 3, 3]);
    assert_eq!(find("layer2.0.downsample.0.weight").shape, vec![16, 8, 1, 1]);
    assert_eq!(find("layer4.0.downsample.1.bias").shape, vec![64]);
    assert_eq!(find("layer4.1.bn2.weight").shape, vec![64]);
    // torchvision's resnet18 has 62 parameter tensors, 2 of them in `fc`.
    assert_eq!(names.iter().filter(|t| t.trainable).count(), 60);
}

#[test]
fn cifar_tiny_trains_at_32px() {
    let dev = Cpu::seed_from_u64(1);
    let mut net = ResNet18CifarTiny::build(&dev);
    let x = images(&dev, 2, 32);
    let grads = net.alloc_grads();
    let f = net.forward_features(x.traced(grads), Mode::Train).unwrap();
    assert_eq!(f.shape(), &(2, Const::<64>));
    let grads = f.square().mean().backward();
    assert!(grad_norm(grads.get(&net.conv1.weight).as_vec()) > 0.0);
    assert!(grad_norm(grads.get(&net.layer3.0.downsample.0.weight).as_vec()) > 0.0);
}

#[test]
fn imagenet_stem_tiny_trains_at_96px() {
    let dev = Cpu::seed_from_u64(2);
    let mut net = ResNet18Tiny::build(&dev);
    let s = summary(&mut net, 96).unwrap();
    // 96 → conv 48 → pool 24 → 24, 12, 6, 3.
    let shapes: Vec<_> = s.rows.iter().map(|r| r.shape.clone()).collect();
    assert_eq!(shapes[0], vec![1, 8, 24, 24]);
    assert_eq!(shapes[4], vec![1, 64, 3, 3]);
    let x = images(&dev, 2, 96);
    let grads = net.alloc_grads();
    let f = net.forward_features(x.traced(grads), Mode::Train).unwrap();
    let grads = f.square().mean().backward();
    assert!(grad_norm(grads.get(&net.conv1.weight).as_vec()) > 0.0);
}

#[test]
fn train_mode_updates_running_stats_and_eval_does_not() {
    let dev = Cpu::seed_from_u64(3);
    let mut net = ResNet18CifarTiny::build(&dev);
    let x = images(&dev, 4, 16);
    let before = net.bn1.running_mean.as_vec();
    let _ = net.forward_features(x.clone(), Mode::Eval).unwrap();
    assert_eq!(net.bn1.running_mean.as_vec(), before);
    let _ = net.forward_features(x.clone(), Mode::Train).unwrap();
    assert_ne!(net.bn1.running_mean.as_vec(), before);
    // Eval: each image's features do not depend on the rest of the batch.
    let all = net.forward_features(x.clone(), Mode::Eval).unwrap().as_vec();
    let first: Tensor<_, f32, _> = dev.tensor_from_vec(x.as_vec()[..3 * 16 * 16].to_vec(), (1, Const::<3>, 16, 16));
    let one = net.forward_features(first, Mode::Eval).unwrap().as_vec();
    for (a, b) in one.iter().zip(&all[..64]) {
        assert!((a - b).abs() < 1e-5, "{a} vs {b}");
    }
}

#[test]
fn summary_rows_add_up_and_print() {
    let mut net = ResNet18CifarTiny::build(&Cpu::default());
    let s = summary(&mut net, 32).unwrap();
    let names: Vec<_> = s.rows.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["conv1+bn1+relu", "layer1", "layer2", "layer3", "layer4", "avgpool"]);
    assert_eq!(s.rows.iter().map(|r| r.params).sum::<usize>(), s.total_params);
    let text = s.to_string();
    assert!(text.contains("layer4") && text.contains("[1, 64, 4, 4]"), "{text}");
}

#[test]
fn summary_by_name_picks_the_preset_for_the_size() {
    let s = summary_by_name("resnet18", 32).unwrap();
    assert_eq!(s.total_params, 11_168_832);
    assert_eq!(s.rows[0].shape, vec![1, 64, 32, 32]);
    let s = summary_by_name("resnet18_tiny", 128).unwrap();
    assert_eq!(s.rows[0].shape, vec![1, 8, 32, 32]); // ImageNet stem: 128 → 64 → 32
    assert!(summary_by_name("pit_tiny", 32).is_ok());
    let err = summary_by_name("vit_s", 48).unwrap_err().to_string();
    assert!(err.contains("no preset for 48 px"), "{err}");
    let err = summary_by_name("resnet50", 32).unwrap_err().to_string();
    assert!(err.contains("unknown backbone") && err.contains("pit_ti"), "{err}");
}
