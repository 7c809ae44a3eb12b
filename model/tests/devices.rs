//! The compositions of dfdx ops that `Cuda` runs (`siamlab_model::composed`), checked on `Cpu`
//! against the crate's kernels, forward and backward; `siamlab bench ops --device cuda` runs
//! the same comparison on a GPU.

use dfdx::prelude::*;
use siamlab_model::check::{compare_ops, Path};
use siamlab_model::{composed, drop_path};

#[test]
fn composed_ops_match_the_cpu_kernels_forward_and_backward() {
    let rows = compare_ops(&Cpu::default(), Path::Composed).unwrap();
    assert!(rows.len() >= 25);
    for r in &rows {
        println!("{:<45} forward {:.1e} backward {:.1e}", r.op, r.forward, r.backward);
    }
    let bad: Vec<_> = rows.iter().filter(|r| r.worst() > 1e-5).collect();
    assert!(bad.is_empty(), "{bad:#?}");
}

/// The comparison runs the composed implementations, not the kernels twice: where their
/// arithmetic differs (another summation order), a difference shows, small.
#[test]
fn the_composed_path_is_what_is_compared() {
    let composed = compare_ops(&Cpu::default(), Path::Composed).unwrap();
    let kernels = compare_ops(&Cpu::default(), Path::Kernels).unwrap();
    assert_eq!(composed.len(), kernels.len());
    assert!(kernels.iter().all(|r| r.worst() == 0.0), "the CPU kernels are deterministic: {kernels:#?}");
    let differing: Vec<&str> = composed.iter().filter(|r| r.worst() > 0.0).map(|r| r.op.as_str()).collect();
    assert!(differing.len() >= 3, "composed results identical to the kernels' bit for bit: {differing:?}");
}

#[test]
fn composed_drop_path_draws_the_same_mask_as_the_kernel() {
    let x: Tensor<_, f32, _> = Cpu::seed_from_u64(3).sample_normal_like(&(16, Const::<4>, 3, 3));
    let a = drop_path(x.clone().put_tape(NoneTape).retaped::<NoneTape>(), 0.5, true);
    let dev_a = Cpu::seed_from_u64(7);
    let dev_b = Cpu::seed_from_u64(7);
    let xa = dev_a.tensor_from_vec(x.as_vec(), *x.shape());
    let xb = dev_b.tensor_from_vec(x.as_vec(), *x.shape());
    let ya = drop_path(xa, 0.5, true).unwrap().as_vec();
    let yb = composed::drop_path(xb, 0.5, true).unwrap().as_vec();
    drop(a);
    assert_eq!(ya.len(), yb.len());
    for (p, q) in ya.iter().zip(&yb) {
        assert!((p - q).abs() < 1e-6);
    }
    // Some samples dropped, some kept (scaled by 2).
    let per = 36;
    let kept = ya.chunks(per).filter(|c| c.iter().any(|&v| v != 0.0)).count();
    assert!(kept > 0 && kept < 16, "{kept}");
}

#[test]
fn composed_ops_refuse_bad_shapes_as_the_kernels_do() {
    let dev = Cpu::default();
    let x: Tensor<_, f32, _> = dev.zeros_like(&(1, Const::<4>, 2, 2));
    let w: Tensor<Rank4<4, 4, 5, 5>, f32, _> = dev.zeros();
    let err = composed::conv2d(x.clone(), w, siamlab_model::Conv2dConfig::default()).unwrap_err();
    assert!(err.to_string().contains("does not fit"), "{err}");
    let a: Tensor<_, f32, _> = dev.zeros_like(&(2, 3, 4));
    let b: Tensor<_, f32, _> = dev.zeros_like(&(2, 5, 6));
    assert!(composed::batched_matmul(a, b, false).is_err());
}
