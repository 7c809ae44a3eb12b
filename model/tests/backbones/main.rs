//! Backbone and SimSiam tests, one binary: parameter counts against the PyTorch references,
//! parameter names, forward/backward at the input sizes, train/eval modes, SimSiam's loss and
//! stop-gradient.

mod efficientnet;
mod fixtures;
mod init;
mod pit;
mod resnet;
mod simsiam;
mod sizes;
mod vit;

use dfdx::prelude::*;
use siamlab_model::Image;

/// A batch of `n` random `size × size` RGB images.
pub fn images(dev: &Cpu, n: usize, size: usize) -> Tensor<Image<3>, f32, Cpu> {
    dev.sample_normal_like(&(n, Const::<3>, size, size))
}

/// Euclidean norm of a gradient.
pub fn grad_norm(g: Vec<f32>) -> f32 {
    g.iter().map(|v| v * v).sum::<f32>().sqrt()
}
