//! EfficientNet-B0: timm's parameter count and names, forward and backward at 32 px, the
//! stochastic-depth schedule.

use dfdx::prelude::*;
use siamlab_model::backbones::*;
use siamlab_model::layers::Mode;
use siamlab_model::{named_tensors, summary};

use crate::{grad_norm, images};

#[test]
fn parameter_count_matches_timm() {
    let dev = Cpu::default();
    assert_eq!(EfficientNetB0::build(&dev).num_trainable_params(), 4_007_548);
    assert_eq!(EfficientNetB0S1::build(&dev).num_trainable_params(), 4_007_548);
}

#[test]
fn names_are_timm_state_dict_keys() {
    let names = named_tensors(&EfficientNetB0::build(&Cpu::default()));
    let find = |key: &str| names.iter().find(|t| t.name == key).unwrap_or_else(|| panic!("no {key}")).shape.clone();
    assert_eq!(find("conv_stem.weight"), vec![32, 3, 3, 3]);
    assert_eq!(find("bn1.running_mean"), vec![32]);
    assert_eq!(find("blocks.0.0.conv_dw.weight"), vec![32, 1, 3, 3]);
    assert_eq!(find("blocks.0.0.se.conv_reduce.weight"), vec![8, 32, 1, 1]);
    assert_eq!(find("blocks.0.0.conv_pw.weight"), vec![16, 32, 1, 1]);
    assert_eq!(find("blocks.1.0.conv_pw.weight"), vec![96, 16, 1, 1]);
    assert_eq!(find("blocks.1.0.se.conv_reduce.bias"), vec![4]);
    assert_eq!(find("blocks.2.1.conv_dw.weight"), vec![240, 1, 5, 5]);
    assert_eq!(find("blocks.5.3.conv_pwl.weight"), vec![192, 1152, 1, 1]);
    assert_eq!(find("blocks.6.0.bn3.weight"), vec![320]);
    assert_eq!(find("conv_head.weight"), vec![1280, 320, 1, 1]);
    assert_eq!(find("bn2.running_var"), vec![1280]);
    assert!(!names.iter().any(|t| t.name.starts_with("blocks.6.1")));
}

#[test]
fn tiny_trains_at_32px() {
    let dev = Cpu::seed_from_u64(1);
    let mut net = EfficientNetTiny::build(&dev);
    net.set_drop_path(0.2);
    let grads = net.alloc_grads();
    let f = net.forward_features(images(&dev, 2, 32).traced(grads), Mode::Train).unwrap();
    assert_eq!(f.shape(), &(2, Const::<128>));
    let grads = f.square().mean().backward();
    assert!(grad_norm(grads.get(&net.conv_stem.weight).as_vec()) > 0.0);
    assert!(grad_norm(grads.get(&net.blocks.1.first.se.conv_reduce.weight).as_vec()) > 0.0);
    assert!(grad_norm(grads.get(&net.blocks.6.first.conv_dw.weight).as_vec()) > 0.0);
}

#[test]
fn drop_path_schedule_rises_over_the_blocks() {
    let mut net = EfficientNetTiny::build(&Cpu::default());
    net.set_drop_path(0.2);
    // Eight blocks: block i gets 0.2 · i / 8.
    assert_eq!(net.blocks.0.first.drop_path, 0.0);
    assert!((net.blocks.1.rest[0].drop_path - 0.2 * 2.0 / 8.0).abs() < 1e-12);
    assert!((net.blocks.6.first.drop_path - 0.2 * 7.0 / 8.0).abs() < 1e-12);
}

#[test]
fn summary_at_32px() {
    let mut net = EfficientNetTiny::build(&Cpu::default());
    let s = summary(&mut net, 32).unwrap();
    let shapes: Vec<_> = s.rows.iter().map(|r| r.shape.clone()).collect();
    assert_eq!(shapes[0], vec![1, 8, 32, 32]);
    assert_eq!(shapes[2], vec![1, 16, 16, 16]);
    assert_eq!(shapes[7], vec![1, 64, 2, 2]);
    assert_eq!(shapes.last().unwrap(), &vec![1, 128]);
    assert_eq!(s.rows.iter().map(|r| r.params).sum::<usize>(), s.total_params);
}
