//! SimSiam (Chen & He 2021): a backbone, a projector and a predictor; the loss
//! `½·D(p1, sg(z2)) + ½·D(p2, sg(z1))` with `D` the negative cosine similarity.
//!
//! Heads as in the SimSiam reference code and `shared/bench/peer_train_bench.py`, with its
//! `state_dict` indices:
//!
//! | module    | layers                                                                     |
//! |-----------|----------------------------------------------------------------------------|
//! | projector | 0 Linear F→D (no bias), 1 BN, ReLU, 3 Linear D→D (no bias), 4 BN, ReLU, 6 Linear D→D, 7 BN |
//! | predictor | 0 Linear D→H (no bias), 1 BN, ReLU, 3 Linear H→D (H = D/4)                 |
//!
//! The stop-gradient is in the types: [`simsiam_loss`] takes its targets as tensors without a
//! tape, so nothing can flow back through them; [`SimSiam::forward_loss`] detaches `z1`, `z2`
//! by splitting their tape off.

use dfdx::nn::modules::{Linear, UnbiasedLinear};
use dfdx::nn::tensor_collection::{ModuleVisitor, TensorCollection};
use dfdx::prelude::*;
use num_traits::Float;
use rand_distr::uniform::SampleUniform;

use crate::backbones::Backbone;
use crate::layers::{AnyTape, BatchNorm1d, Block, Mode};
use crate::{ready, Image, Kernels, OpError};

/// Features of a batch: `[N, M]`.
pub type Features<const M: usize, T = NoneTape, Dev = Cpu> = Tensor<(usize, Const<M>), f32, Dev, T>;

/// The projector: three Linear layers each followed by BatchNorm, ReLU after the first two.
#[derive(Clone, Debug)]
pub struct Projector<const F: usize, const D: usize, E: Dtype = f32, Dev: Storage<E> = Cpu> {
    /// `0`: F → D.
    pub fc1: UnbiasedLinear<F, D, E, Dev>,
    /// `1`.
    pub bn1: BatchNorm1d<D, E, Dev>,
    /// `3`: D → D.
    pub fc2: UnbiasedLinear<D, D, E, Dev>,
    /// `4`.
    pub bn2: BatchNorm1d<D, E, Dev>,
    /// `6`: D → D.
    pub fc3: Linear<D, D, E, Dev>,
    /// `7`.
    pub bn3: BatchNorm1d<D, E, Dev>,
}

/// The predictor: a bottleneck MLP D → H → D with BN + ReLU on the hidden layer.
#[derive(Clone, Debug)]
pub struct Predictor<const D: usize, const H: usize, E: Dtype = f32, Dev: Storage<E> = Cpu> {
    /// `0`: D → H.
    pub fc1: UnbiasedLinear<D, H, E, Dev>,
    /// `1`.
    pub bn1: BatchNorm1d<H, E, Dev>,
    /// `3`: H → D.
    pub fc2: Linear<H, D, E, Dev>,
}

/// SimSiam around backbone `B` with `F` features, projection dim `D`, predictor hidden dim `H`.
/// `state_dict` keys: `backbone.*`, `projector.*`, `predictor.*`.
#[derive(Clone, Debug)]
pub struct SimSiam<B, const F: usize, const D: usize, const H: usize, E: Dtype = f32, Dev: Storage<E> = Cpu> {
    /// The encoder's feature extractor.
    pub backbone: B,
    /// Features → z.
    pub projector: Projector<F, D, E, Dev>,
    /// z → p.
    pub predictor: Predictor<D, H, E, Dev>,
}

/// The paper's heads: D = 2048, H = 512.
pub type SimSiam2048<B, const F: usize> = SimSiam<B, F, 2048, 512>;
/// Small heads (D = 128, H = 32) for tests and demos.
pub type SimSiamTiny<B, const F: usize> = SimSiam<B, F, 128, 32>;

impl<const F: usize, const D: usize, E: Dtype + Float + SampleUniform, Dev: Device<E>> TensorCollection<E, Dev>
    for Projector<F, D, E, Dev>
{
    type To<E2: Dtype, D2: Device<E2>> = Projector<F, D, E2, D2>;

    fn iter_tensors<V: ModuleVisitor<Self, E, Dev>>(visitor: &mut V) -> Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
        visitor.visit_fields(
            (
                Self::module("0", |s| &s.fc1, |s| &mut s.fc1),
                Self::module("1", |s| &s.bn1, |s| &mut s.bn1),
                Self::module("3", |s| &s.fc2, |s| &mut s.fc2),
                Self::module("4", |s| &s.bn2, |s| &mut s.bn2),
                Self::module("6", |s| &s.fc3, |s| &mut s.fc3),
                Self::module("7", |s| &s.bn3, |s| &mut s.bn3),
            ),
            |(fc1, bn1, fc2, bn2, fc3, bn3)| Projector { fc1, bn1, fc2, bn2, fc3, bn3 },
        )
    }
}

impl<const D: usize, const H: usize, E: Dtype + Float + SampleUniform, Dev: Device<E>> TensorCollection<E, Dev>
    for Predictor<D, H, E, Dev>
{
    type To<E2: Dtype, D2: Device<E2>> = Predictor<D, H, E2, D2>;

    fn iter_tensors<V: ModuleVisitor<Self, E, Dev>>(visitor: &mut V) -> Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
        visitor.visit_fields(
            (
                Self::module("0", |s| &s.fc1, |s| &mut s.fc1),
                Self::module("1", |s| &s.bn1, |s| &mut s.bn1),
                Self::module("3", |s| &s.fc2, |s| &mut s.fc2),
            ),
            |(fc1, bn1, fc2)| Predictor { fc1, bn1, fc2 },
        )
    }
}

impl<B, const F: usize, const D: usize, const H: usize, E, Dev> TensorCollection<E, Dev> for SimSiam<B, F, D, H, E, Dev>
where
    B: TensorCollection<E, Dev>,
    E: Dtype + Float + SampleUniform,
    Dev: Device<E>,
{
    type To<E2: Dtype, D2: Device<E2>> = SimSiam<B::To<E2, D2>, F, D, H, E2, D2>;

    fn iter_tensors<V: ModuleVisitor<Self, E, Dev>>(visitor: &mut V) -> Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
        visitor.visit_fields(
            (
                Self::module("backbone", |s| &s.backbone, |s| &mut s.backbone),
                Self::module("projector", |s| &s.projector, |s| &mut s.projector),
                Self::module("predictor", |s| &s.predictor, |s| &mut s.predictor),
            ),
            |(backbone, projector, predictor)| SimSiam { backbone, projector, predictor },
        )
    }
}

impl<const F: usize, const D: usize, Dev: Kernels<f32>, T: AnyTape<Dev>> Block<Features<F, T, Dev>>
    for Projector<F, D, f32, Dev>
{
    type Output = Features<D, T, Dev>;
    fn run(&mut self, x: Features<F, T, Dev>, mode: Mode) -> Result<Features<D, T, Dev>, OpError> {
        let y = self.fc1.run(x, mode)?;
        let y = self.bn1.run_relu(y, mode)?;
        let y = self.fc2.run(y, mode)?;
        let y = self.bn2.run_relu(y, mode)?;
        let y = self.fc3.run(y, mode)?;
        self.bn3.run(y, mode)
    }
}

impl<const D: usize, const H: usize, Dev: Kernels<f32>, T: AnyTape<Dev>> Block<Features<D, T, Dev>>
    for Predictor<D, H, f32, Dev>
{
    type Output = Features<D, T, Dev>;
    fn run(&mut self, x: Features<D, T, Dev>, mode: Mode) -> Result<Features<D, T, Dev>, OpError> {
        let y = self.fc1.run(x, mode)?;
        let y = self.bn1.run_relu(y, mode)?;
        self.fc2.run(y, mode)
    }
}

/// Rows scaled to unit length (PyTorch's `F.normalize`: the norm is clamped at 1e-12).
fn unit_rows<const M: usize, Dev: Kernels<f32>, T: AnyTape<Dev>>(
    x: Features<M, T, Dev>,
) -> Result<Features<M, T, Dev>, Dev::Err> {
    let shape = *x.shape();
    let norm = x.retaped::<T>().try_square()?.try_sum::<(usize,), Axis<1>>()?.try_sqrt()?.try_clamp(1e-12, f32::MAX)?;
    x.try_div(norm.try_broadcast_like(&shape)?)
}

/// `D(p, z)`: the negative cosine similarity of matching rows, averaged over the batch. `z` has
/// no tape: it is a target, no gradient flows into it.
pub fn negative_cosine<const M: usize, Dev: Kernels<f32>, T: AnyTape<Dev>>(
    p: Features<M, T, Dev>,
    z: Features<M, NoneTape, Dev>,
) -> Result<Tensor<Rank0, f32, Dev, T>, OpError> {
    if p.shape().0 != z.shape().0 {
        return Err(OpError::config("negative_cosine", format!("batch {} vs {}", p.shape().0, z.shape().0)));
    }
    let d = || -> Result<_, Dev::Err> {
        let p = unit_rows(p)?;
        let z = unit_rows(z)?;
        p.try_mul(z)?.try_sum::<(usize,), Axis<1>>()?.try_mean::<Rank0, _>()?.try_negate()
    };
    d().map_err(OpError::device)
}

/// SimSiam's symmetric loss `½·D(p1, z2) + ½·D(p2, z1)`; the targets `z1`, `z2` are detached
/// (tapeless) tensors — the stop-gradient.
pub fn simsiam_loss<const M: usize, Dev: Kernels<f32>, T: AnyTape<Dev>>(
    p1: Features<M, T, Dev>,
    p2: Features<M, T, Dev>,
    z1: Features<M, NoneTape, Dev>,
    z2: Features<M, NoneTape, Dev>,
) -> Result<Tensor<Rank0, f32, Dev, T>, OpError> {
    let a = negative_cosine(p1, z2)?;
    let b = negative_cosine(p2, z1)?;
    a.try_add(b).and_then(|l| l.try_mul(0.5)).map_err(OpError::device)
}

/// What [`SimSiam::forward_pair`] returns: the projections (detached, the targets) and the
/// predictions (taped) of both views.
#[derive(Debug)]
pub struct PairOutput<const D: usize, T, Dev: Storage<f32> = Cpu> {
    /// Projection of view 1, detached.
    pub z1: Features<D, NoneTape, Dev>,
    /// Projection of view 2, detached.
    pub z2: Features<D, NoneTape, Dev>,
    /// Prediction from view 1.
    pub p1: Features<D, T, Dev>,
    /// Prediction from view 2.
    pub p2: Features<D, T, Dev>,
}

impl<B: Backbone<F, Dev>, const F: usize, const D: usize, const H: usize, Dev: Kernels<f32>>
    SimSiam<B, F, D, H, f32, Dev>
{
    /// Projection `z` of a batch of images.
    pub fn project<T: AnyTape<Dev>>(
        &mut self,
        x: Tensor<Image<3>, f32, Dev, T>,
        mode: Mode,
    ) -> Result<Features<D, T, Dev>, OpError> {
        let f = self.backbone.forward_features(x, mode)?;
        self.projector.run(f, mode)
    }

    /// Both views through encoder and predictor. Each view is its own batch (BatchNorm
    /// statistics per view, as in the reference code).
    pub fn forward_pair<T: AnyTape<Dev>>(
        &mut self,
        x1: Tensor<Image<3>, f32, Dev, T>,
        x2: Tensor<Image<3>, f32, Dev, T>,
        mode: Mode,
    ) -> Result<PairOutput<D, T, Dev>, OpError> {
        // Both backbone passes before the heads: the backward pass then finishes the heads'
        // gradients first, and a data-parallel step can average them while the backbone's
        // backward still runs (`ready`; only the first view marks). Each module still sees
        // view 1, then view 2, as through `project`, so the numbers are the same.
        let f1 = ready::armed(|| self.backbone.forward_features(x1, mode))?;
        let f2 = self.backbone.forward_features(x2, mode)?;
        let f1 = ready::armed(|| ready::mark(f1, &self.projector));
        let (z1, tape1) = self.projector.run(f1, mode)?.split_tape();
        let (z2, tape2) = self.projector.run(f2, mode)?.split_tape();
        let z1_taped = ready::armed(|| ready::mark(z1.clone().put_tape(tape1), &self.predictor));
        let p1 = self.predictor.run(z1_taped, mode)?;
        let p2 = self.predictor.run(z2.clone().put_tape(tape2), mode)?;
        Ok(PairOutput { z1, z2, p1, p2 })
    }

    /// The SimSiam loss of a pair of views. For a training step, give `x1` a tape
    /// (`x1.traced(grads)`) and `x2` an empty one (`x2.leaky_traced()`); the tapes merge.
    ///
    /// ```
    /// use dfdx::prelude::*;
    /// use siamlab_model::backbones::ResNet18CifarTiny;
    /// use siamlab_model::layers::Mode;
    /// use siamlab_model::simsiam::SimSiamTiny;
    /// let dev = Cpu::seed_from_u64(0);
    /// let mut model = SimSiamTiny::<ResNet18CifarTiny, 64>::build(&dev);
    /// let grads = model.alloc_grads();
    /// let x1: Tensor<_, f32, _> = dev.sample_normal_like(&(4, Const::<3>, 16, 16));
    /// let x2: Tensor<_, f32, _> = dev.sample_normal_like(&(4, Const::<3>, 16, 16));
    /// let loss = model.forward_loss(x1.traced(grads), x2.leaky_traced(), Mode::Train).unwrap();
    /// let value = loss.array();
    /// assert!((-1.0..=1.0).contains(&value));
    /// let grads = loss.backward();
    /// ```
    pub fn forward_loss<T: AnyTape<Dev>>(
        &mut self,
        x1: Tensor<Image<3>, f32, Dev, T>,
        x2: Tensor<Image<3>, f32, Dev, T>,
        mode: Mode,
    ) -> Result<Tensor<Rank0, f32, Dev, T>, OpError> {
        let out = self.forward_pair(x1, x2, mode)?;
        simsiam_loss(out.p1, out.p2, out.z1, out.z2)
    }
}
