//! Classification on top of a backbone: a linear head (linear evaluation, on frozen features)
//! and backbone + head (finetuning). Both give logits; the loss lives with the trainer, which
//! knows whether the labels are one class per image ([`Task::MultiClass`], softmax
//! cross-entropy) or a set of attributes ([`Task::MultiLabel`], per-class sigmoid, as for
//! CelebA).

use dfdx::nn::modules::Linear;
use dfdx::nn::tensor_collection::{ModuleVisitor, TensorCollection};
use dfdx::prelude::*;
use num_traits::Float;
use rand_distr::uniform::SampleUniform;

use crate::backbones::Backbone;
use crate::composed::dev_err;
use crate::layers::{AnyTape, Block, Mode};
use crate::simsiam::Features;
use crate::{Image, Kernels, OpError};

/// How logits turn into predictions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Task {
    /// One class per image: softmax over the classes.
    MultiClass,
    /// Any number of classes per image: an independent sigmoid per class.
    MultiLabel,
}

impl Task {
    /// Class probabilities from logits `[N, K]`: softmax rows (multi-class) or element-wise
    /// sigmoid (multi-label).
    pub fn probabilities<const K: usize, Dev: Kernels<f32>, T: AnyTape<Dev>>(
        self,
        logits: Features<K, T, Dev>,
    ) -> Result<Features<K, T, Dev>, OpError> {
        match self {
            Task::MultiClass => logits.try_softmax::<Axis<1>>(),
            Task::MultiLabel => logits.try_sigmoid(),
        }
        .map_err(dev_err)
    }
}

/// The linear-evaluation head: `fc` `F → K`, on features.
pub type LinearHead<const F: usize, const K: usize, E = f32, D = Cpu> = Linear<F, K, E, D>;

/// A backbone with a linear classifier for finetuning; `state_dict` keys `backbone.*`,
/// `fc.*`.
#[derive(Clone, Debug)]
pub struct Classifier<B, const F: usize, const K: usize, E: Dtype = f32, D: Storage<E> = Cpu> {
    /// The (pretrained) backbone.
    pub backbone: B,
    /// `F → K` logits.
    pub fc: LinearHead<F, K, E, D>,
}

impl<B, const F: usize, const K: usize, E, D> TensorCollection<E, D> for Classifier<B, F, K, E, D>
where
    B: TensorCollection<E, D>,
    E: Dtype + Float + SampleUniform,
    D: Device<E>,
{
    type To<E2: Dtype, D2: Device<E2>> = Classifier<B::To<E2, D2>, F, K, E2, D2>;

    fn iter_tensors<V: ModuleVisitor<Self, E, D>>(visitor: &mut V) -> Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
        visitor.visit_fields(
            (
                Self::module("backbone", |s| &s.backbone, |s| &mut s.backbone),
                Self::module("fc", |s| &s.fc, |s| &mut s.fc),
            ),
            |(backbone, fc)| Classifier { backbone, fc },
        )
    }
}

impl<B: Backbone<F, Dev>, const F: usize, const K: usize, Dev: Kernels<f32>> Classifier<B, F, K, f32, Dev> {
    /// Wraps a (pretrained) backbone with a freshly initialised head.
    pub fn new(backbone: B, dev: &Dev) -> Self {
        Classifier { backbone, fc: LinearHead::<F, K, f32, Dev>::build(dev) }
    }

    /// Logits `[N, K]` of images `[N, 3, H, W]`.
    pub fn forward_logits<T: AnyTape<Dev>>(
        &mut self,
        x: Tensor<Image<3>, f32, Dev, T>,
        mode: Mode,
    ) -> Result<Features<K, T, Dev>, OpError> {
        let f = self.backbone.forward_features(x, mode)?;
        self.fc.run(f, mode)
    }
}
