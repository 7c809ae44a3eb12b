//! SimSiam: the loss, the stop-gradient, the heads' names and sizes, a training step with Adam.

use dfdx::optim::{Adam, AdamConfig, Optimizer};
use dfdx::prelude::*;
use siamlab_model::backbones::ResNet18CifarTiny;
use siamlab_model::layers::{Block, Mode};
use siamlab_model::named_tensors;
use siamlab_model::simsiam::{negative_cosine, simsiam_loss, Features, SimSiam2048, SimSiamTiny};

use crate::images;

type Tiny = SimSiamTiny<ResNet18CifarTiny, 64>;

fn feats(dev: &Cpu, rows: &[[f32; 3]]) -> Features<3> {
    dev.tensor_from_vec(rows.concat(), (rows.len(), Const::<3>))
}

#[test]
fn negative_cosine_values() {
    let dev = Cpu::default();
    let z = feats(&dev, &[[1.0, 2.0, 2.0], [0.0, 3.0, 0.0]]);
    let same = feats(&dev, &[[2.0, 4.0, 4.0], [0.0, 0.5, 0.0]]);
    let opposite = feats(&dev, &[[-1.0, -2.0, -2.0], [0.0, -1.0, 0.0]]);
    let orthogonal = feats(&dev, &[[2.0, -1.0, 0.0], [1.0, 0.0, 0.0]]);
    assert!((negative_cosine(same, z.clone()).unwrap().array() + 1.0).abs() < 1e-6);
    assert!((negative_cosine(opposite, z.clone()).unwrap().array() - 1.0).abs() < 1e-6);
    assert!(negative_cosine(orthogonal, z.clone()).unwrap().array().abs() < 1e-6);
    // Symmetric loss: ½(D(p1, z2) + D(p2, z1)) = ½(−1 + 1) = 0.
    let p1 = feats(&dev, &[[1.0, 2.0, 2.0], [0.0, 3.0, 0.0]]);
    let p2 = feats(&dev, &[[-1.0, -2.0, -2.0], [0.0, -3.0, 0.0]]);
    assert!(simsiam_loss(p1, p2, z.clone(), z).unwrap().array().abs() < 1e-6);
}

#[test]
fn paper_heads_have_the_reference_sizes() {
    let model = SimSiam2048::<ResNet18CifarTiny, 64>::build(&Cpu::default());
    // Projector: 64·2048 + 2·2048 + 2048·2048 + 2·2048 + 2048·2048 + 2048 + 2·2048.
    let projector = 64 * 2048 + 2 * 2048 + 2048 * 2048 + 2 * 2048 + 2048 * 2048 + 2048 + 2 * 2048;
    // Predictor: 2048·512 + 2·512 + 512·2048 + 2048.
    let predictor = 2048 * 512 + 2 * 512 + 512 * 2048 + 2048;
    assert_eq!(model.projector.num_trainable_params(), projector);
    assert_eq!(model.predictor.num_trainable_params(), predictor);
    let names = named_tensors(&model);
    for key in ["backbone.conv1.weight", "projector.0.weight", "projector.7.running_var", "predictor.3.bias"] {
        assert!(names.iter().any(|t| t.name == key), "no {key}");
    }
}

/// The loss with the targets kept on the tape (no stop-gradient), for comparison.
fn loss_without_stop_gradient(
    model: &mut Tiny,
    x1: Tensor<Image3, f32, Cpu, OwnedTape<f32, Cpu>>,
    x2: Tensor<Image3, f32, Cpu, OwnedTape<f32, Cpu>>,
) -> Tensor<Rank0, f32, Cpu, OwnedTape<f32, Cpu>> {
    let z1 = model.project(x1, Mode::Train).unwrap();
    let z2 = model.project(x2, Mode::Train).unwrap();
    let p1 = model.predictor.run(z1.with_empty_tape(), Mode::Train).unwrap();
    let p2 = model.predictor.run(z2.with_empty_tape(), Mode::Train).unwrap();
    let cos = |p: Features<128, OwnedTape<f32, Cpu>>, z: Features<128, OwnedTape<f32, Cpu>>| {
        let pn = p.retaped::<OwnedTape<f32, Cpu>>().square().sum::<(usize,), Axis<1>>().sqrt();
        let zn = z.retaped::<OwnedTape<f32, Cpu>>().square().sum::<(usize,), Axis<1>>().sqrt();
        ((p * z).sum::<(usize,), Axis<1>>() / (pn * zn)).mean()
    };
    (cos(p1, z2) + cos(p2, z1)) * -0.5
}

type Image3 = siamlab_model::Image<3>;

#[test]
fn no_gradient_flows_through_the_targets() {
    let dev = Cpu::seed_from_u64(7);
    let model = Tiny::build(&dev);
    let (x1, x2) = (images(&dev, 4, 16), images(&dev, 4, 16));

    // The model's loss.
    let mut a = model.clone();
    let grads = a.alloc_grads();
    let loss_a = a.forward_loss(x1.clone().traced(grads), x2.clone().leaky_traced(), Mode::Train).unwrap();
    let value_a = loss_a.array();
    let grads_a = loss_a.backward();

    // The same loss with the targets rebuilt as constants from their values.
    let mut b = model.clone();
    let target = |x: &Tensor<Image3, f32, Cpu>| {
        let z = b.clone().project(x.clone(), Mode::Train).unwrap();
        dev.tensor_from_vec(z.as_vec(), *z.shape())
    };
    let (c1, c2) = (target(&x1), target(&x2));
    let grads = b.alloc_grads();
    let z1 = b.project(x1.clone().traced(grads), Mode::Train).unwrap();
    let z2 = b.project(x2.clone().leaky_traced(), Mode::Train).unwrap();
    let p1 = b.predictor.run(z1, Mode::Train).unwrap();
    let p2 = b.predictor.run(z2, Mode::Train).unwrap();
    let loss_b = simsiam_loss(p1, p2, c1, c2).unwrap();
    assert!((value_a - loss_b.array()).abs() < 1e-6);
    let grads_b = loss_b.backward();

    // Without the stop-gradient the backbone's gradient changes: the comparison can fail.
    let mut c = model.clone();
    let grads = c.alloc_grads();
    let loss_c = loss_without_stop_gradient(&mut c, x1.traced(grads), x2.leaky_traced());
    assert!((value_a - loss_c.array()).abs() < 1e-5);
    let grads_c = loss_c.backward();

    let w = |g: &Gradients<f32, Cpu>, m: &Tiny| g.get(&m.backbone.conv1.weight).as_vec();
    let (ga, gb, gc) = (w(&grads_a, &a), w(&grads_b, &b), w(&grads_c, &c));
    let diff = |x: &[f32], y: &[f32]| x.iter().zip(y).map(|(p, q)| (p - q).abs()).fold(0.0f32, f32::max);
    let scale = ga.iter().map(|v| v.abs()).fold(0.0f32, f32::max);
    assert!(scale > 0.0);
    assert!(diff(&ga, &gb) <= 1e-4 * scale, "stop-gradient leaks: {} vs scale {scale}", diff(&ga, &gb));
    assert!(diff(&ga, &gc) > 1e-2 * scale, "targets without stop-gradient give the same gradient");
}

#[test]
fn adam_step_lowers_the_loss_on_a_fixed_pair() {
    let dev = Cpu::seed_from_u64(11);
    let mut model = Tiny::build(&dev);
    let mut opt = Adam::new(&model, AdamConfig { lr: 1e-3, ..Default::default() });
    let (x1, x2) = (images(&dev, 8, 16), images(&dev, 8, 16));
    let mut losses = Vec::new();
    for _ in 0..5 {
        let grads = model.alloc_grads();
        let loss = model.forward_loss(x1.clone().traced(grads), x2.clone().leaky_traced(), Mode::Train).unwrap();
        losses.push(loss.array());
        let grads = loss.backward();
        opt.update(&mut model, &grads).unwrap();
    }
    assert!(losses[4] < losses[0], "{losses:?}");
}
