//! ViT-S: timm's parameter counts and names, forward and backward at 32 and 96 px, the token
//! grid check, stochastic depth only in training.

use dfdx::prelude::*;
use siamlab_model::backbones::*;
use siamlab_model::layers::Mode;
use siamlab_model::{named_tensors, summary, OpError};

use crate::{grad_norm, images};

#[test]
fn parameter_counts_match_timm() {
    let dev = Cpu::default();
    assert_eq!(VitS224::build(&dev).num_trainable_params(), 21_665_664);
    assert_eq!(VitS32::build(&dev).num_trainable_params(), 21_338_496);
}

#[test]
fn names_are_timm_state_dict_keys() {
    let names = named_tensors(&VitTiny32::build(&Cpu::default()));
    let find = |key: &str| names.iter().find(|t| t.name == key).unwrap_or_else(|| panic!("no {key}")).shape.clone();
    assert_eq!(find("patch_embed.proj.weight"), vec![48, 3, 4, 4]);
    assert_eq!(find("cls_token"), vec![1, 1, 48]);
    assert_eq!(find("pos_embed"), vec![1, 65, 48]);
    assert_eq!(find("blocks.1.attn.qkv.weight"), vec![144, 48]);
    assert_eq!(find("blocks.1.attn.proj.bias"), vec![48]);
    assert_eq!(find("blocks.0.mlp.fc1.weight"), vec![192, 48]);
    assert_eq!(find("blocks.0.norm2.weight"), vec![48]);
    assert_eq!(find("norm.bias"), vec![48]);
}

#[test]
fn tiny_trains_at_32_and_96px() {
    let dev = Cpu::seed_from_u64(1);
    let mut net = VitTiny32::build(&dev);
    let grads = net.alloc_grads();
    let f = net.forward_features(images(&dev, 2, 32).traced(grads), Mode::Train).unwrap();
    assert_eq!(f.shape(), &(2, Const::<48>));
    let grads = f.square().mean().backward();
    assert!(grad_norm(grads.get(&net.pos_embed).as_vec()) > 0.0);
    assert!(grad_norm(grads.get(&net.blocks.modules[0].attn.qkv.weight).as_vec()) > 0.0);
    assert!(grad_norm(grads.get(&net.patch_embed.proj.weight).as_vec()) > 0.0);

    let mut net = VitTiny96::build(&dev);
    let grads = net.alloc_grads();
    let f = net.forward_features(images(&dev, 2, 96).traced(grads), Mode::Train).unwrap();
    let grads = f.square().mean().backward();
    assert!(grad_norm(grads.get(&net.cls_token).as_vec()) > 0.0);
}

#[test]
fn the_token_grid_must_match_the_position_embedding() {
    let dev = Cpu::default();
    let mut net = VitTiny32::build(&dev);
    match net.forward_features(images(&dev, 1, 64), Mode::Eval) {
        Err(e @ OpError::InvalidConfig { .. }) => assert!(e.to_string().contains("16x16 patch grid"), "{e}"),
        other => panic!("expected a config error, got {other:?}"),
    }
    assert_eq!([32, 64, 96, 128, 224].map(vit_s_patch_size), [4, 8, 8, 16, 16]);
}

#[test]
fn drop_path_only_in_training_and_samples_stay_independent_in_eval() {
    let dev = Cpu::seed_from_u64(4);
    let mut net = VitTiny32::build(&dev);
    net.set_drop_path(0.5);
    assert_eq!(net.blocks.modules[1].drop_path, 0.5);
    let x = images(&dev, 3, 32);
    let a = net.forward_features(x.clone(), Mode::Eval).unwrap().as_vec();
    let b = net.forward_features(x.clone(), Mode::Eval).unwrap().as_vec();
    assert_eq!(a, b);
    let first = dev.tensor_from_vec(x.as_vec()[..3 * 32 * 32].to_vec(), (1, Const::<3>, 32, 32));
    let one = net.forward_features(first, Mode::Eval).unwrap().as_vec();
    for (p, q) in one.iter().zip(&a[..48]) {
        assert!((p - q).abs() < 1e-5);
    }
    let c = net.forward_features(x, Mode::Train).unwrap().as_vec();
    assert_ne!(a, c);
}

#[test]
fn summary_at_32px() {
    let mut net = VitTiny32::build(&Cpu::default());
    let s = summary(&mut net, 32).unwrap();
    assert_eq!(s.rows[0].shape, vec![1, 48, 8, 8]);
    assert_eq!(s.rows[1].shape, vec![1, 65, 48]);
    assert_eq!(s.rows.last().unwrap().shape, vec![1, 48]);
    assert_eq!(s.rows.iter().map(|r| r.params).sum::<usize>(), s.total_params);
}
