//! PiT-Ti: timm's parameter count and names, forward and backward at 32 px, the grid check.

use dfdx::prelude::*;
use siamlab_model::backbones::*;
use siamlab_model::layers::Mode;
use siamlab_model::{named_tensors, summary, OpError};

use crate::{grad_norm, images};

#[test]
fn parameter_count_matches_timm() {
    let dev = Cpu::default();
    assert_eq!(PitTi224::build(&dev).num_trainable_params(), 4_590_272);
    // Only the patch embedding and the position grid depend on the input size.
    let at32 = 4_590_272 - (64 * 3 * 16 * 16 + 64 * 27 * 27) + (64 * 3 * 4 * 4 + 64 * 15 * 15);
    assert_eq!(PitTi32::build(&dev).num_trainable_params(), at32);
}

#[test]
fn names_are_timm_state_dict_keys() {
    let names = named_tensors(&PitTi224::build(&Cpu::default()));
    let find = |key: &str| names.iter().find(|t| t.name == key).unwrap_or_else(|| panic!("no {key}")).shape.clone();
    assert_eq!(find("patch_embed.conv.weight"), vec![64, 3, 16, 16]);
    assert_eq!(find("pos_embed"), vec![1, 64, 27, 27]);
    assert_eq!(find("cls_token"), vec![1, 1, 64]);
    assert_eq!(find("transformers.0.blocks.1.attn.qkv.weight"), vec![192, 64]);
    assert_eq!(find("transformers.1.pool.conv.weight"), vec![128, 1, 3, 3]);
    assert_eq!(find("transformers.1.pool.conv.bias"), vec![128]);
    assert_eq!(find("transformers.1.pool.fc.weight"), vec![128, 64]);
    assert_eq!(find("transformers.2.blocks.3.mlp.fc2.weight"), vec![256, 1024]);
    assert_eq!(find("norm.weight"), vec![256]);
}

#[test]
fn tiny_trains_at_32px() {
    let dev = Cpu::seed_from_u64(1);
    let mut net = PitTiny32::build(&dev);
    let grads = net.alloc_grads();
    let f = net.forward_features(images(&dev, 2, 32).traced(grads), Mode::Train).unwrap();
    assert_eq!(f.shape(), &(2, Const::<64>));
    let grads = f.square().mean().backward();
    assert!(grad_norm(grads.get(&net.pos_embed).as_vec()) > 0.0);
    assert!(grad_norm(grads.get(&net.cls_token).as_vec()) > 0.0);
    assert!(grad_norm(grads.get(&net.transformers.1.pool.conv.weight).as_vec()) > 0.0);
    assert!(grad_norm(grads.get(&net.transformers.2.pool.fc.weight).as_vec()) > 0.0);
}

#[test]
fn grid_shrinks_by_pooling_and_must_match_the_position_embedding() {
    let dev = Cpu::default();
    let mut net = PitTiny32::build(&dev);
    let s = summary(&mut net, 32).unwrap();
    let shapes: Vec<_> = s.rows.iter().map(|r| r.shape.clone()).collect();
    assert_eq!(
        shapes,
        vec![vec![1, 16, 15, 15], vec![1, 16, 15, 15], vec![1, 32, 8, 8], vec![1, 64, 4, 4], vec![1, 64]]
    );
    assert_eq!(s.rows.iter().map(|r| r.params).sum::<usize>(), s.total_params);
    match net.forward_features(images(&dev, 1, 64), Mode::Eval) {
        Err(e @ OpError::InvalidConfig { .. }) => assert!(e.to_string().contains("31x31"), "{e}"),
        other => panic!("expected a config error, got {other:?}"),
    }
}
