//! Every full-size backbone builds by name and runs forward and backward at the input sizes of
//! the paper's datasets: 32 px (CIFAR), 64 and 128 px (CelebA-size), 96 px (STL-10).

use dfdx::prelude::*;
use siamlab_model::backbones::{with_backbone, Backbone, BackboneVisitor};
use siamlab_model::layers::Mode;
use siamlab_model::{visit_grads, OpError};

use crate::{grad_norm, images};

struct ForwardBackward {
    size: usize,
    /// The first layer's weight, which backward reaches last (the images get no gradient).
    stem: &'static str,
}

impl BackboneVisitor for ForwardBackward {
    type Output = (usize, f32, f32);
    fn visit<B: Backbone<F> + BuildModule<Cpu, f32> + 'static, const F: usize>(self, mut b: B) -> Self::Output {
        let dev = Cpu::seed_from_u64(3);
        let x = images(&dev, 2, self.size);
        let f = b.forward_features(x.traced(b.alloc_grads()), Mode::Train).unwrap();
        assert_eq!(f.shape().0, 2);
        let loss = f.square().mean();
        let value = loss.array();
        let mut grads = loss.backward();
        let mut stem = None;
        visit_grads::<_, _, OpError>(&b, &mut grads, "", &mut |slot, g| {
            if slot.name == self.stem {
                stem = Some(grad_norm(g));
            }
            Ok(())
        })
        .unwrap();
        (F, value, stem.unwrap_or_else(|| panic!("no tensor named {}", self.stem)))
    }
}

fn check(name: &str, features: usize, stem: &'static str) {
    for size in [32, 64, 96, 128] {
        let (f, loss, gnorm) = with_backbone(name, size, &Cpu::seed_from_u64(0), ForwardBackward { size, stem })
            .unwrap_or_else(|e| panic!("{name} at {size} px: {e}"));
        assert_eq!(f, features, "{name} at {size} px");
        assert!(loss.is_finite(), "{name} at {size} px: loss {loss}");
        assert!(gnorm > 0.0 && gnorm.is_finite(), "{name} at {size} px: {stem} gradient {gnorm}");
    }
}

#[test]
fn resnet18_at_32_64_96_128() {
    check("resnet18", 512, "conv1.weight");
}

#[test]
fn efficientnet_b0_at_32_64_96_128() {
    check("efficientnet_b0", 1280, "conv_stem.weight");
}

#[test]
fn vit_s_at_32_64_96_128() {
    check("vit_s", 384, "patch_embed.proj.weight");
}

#[test]
fn pit_ti_at_32_64_96_128() {
    check("pit_ti", 256, "patch_embed.conv.weight");
}
