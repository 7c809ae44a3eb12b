//! Every full-size backbone builds by name and runs forward and backward at the input sizes of
//! the paper's datasets: 32 px (CIFAR), 64 and 128 px (CelebA-size), 96 px (STL-10).

use dfdx::prelude::*;
use siamlab_model::backbones::{with_backbone, Backbone, BackboneVisitor};
use siamlab_model::layers::Mode;

use crate::{grad_norm, images};

struct ForwardBackward {
    size: usize,
}

impl BackboneVisitor for ForwardBackward {
    type Output = (usize, f32, f32);
    fn visit<B: Backbone<F> + BuildModule<Cpu, f32> + 'static, const F: usize>(self, mut b: B) -> Self::Output {
        let dev = Cpu::seed_from_u64(3);
        let x = images(&dev, 2, self.size);
        let f = b.forward_features(x.leaky_trace(), Mode::Train).unwrap();
        assert_eq!(f.shape().0, 2);
        let loss = f.square().mean();
        let value = loss.array();
        let grads = loss.backward();
        (F, value, grad_norm(grads.get(&x).as_vec()))
    }
}

fn check(name: &str, features: usize) {
    for size in [32, 64, 96, 128] {
        let (f, loss, gnorm) = with_backbone(name, size, &Cpu::seed_from_u64(0), ForwardBackward { size })
            .unwrap_or_else(|e| panic!("{name} at {size} px: {e}"));
        assert_eq!(f, features, "{name} at {size} px");
        assert!(loss.is_finite(), "{name} at {size} px: loss {loss}");
        assert!(gnorm > 0.0 && gnorm.is_finite(), "{name} at {size} px: input gradient {gnorm}");
    }
}

#[test]
fn resnet18_at_32_64_96_128() {
    check("resnet18", 512);
}

#[test]
fn efficientnet_b0_at_32_64_96_128() {
    check("efficientnet_b0", 1280);
}

#[test]
fn vit_s_at_32_64_96_128() {
    check("vit_s", 384);
}

#[test]
fn pit_ti_at_32_64_96_128() {
    check("pit_ti", 256);
}
