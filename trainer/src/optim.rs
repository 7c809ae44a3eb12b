//! Adam and SGD with momentum, PyTorch's update rules, with state that a checkpoint can hold
//! (dfdx's own optimizers keep their moments private, so a run could not resume exactly).
//!
//! - **Adam** (`torch.optim.Adam`, L2 weight decay): `g += wd·p; m = β₁m + (1-β₁)g;
//!   v = β₂v + (1-β₂)g²; p -= lr · (m / (1-β₁ᵗ)) / (√(v / (1-β₂ᵗ)) + ε)`.
//! - **SGD** (`torch.optim.SGD`, momentum, dampening 0): `g += wd·p; b = μb + g` (`b = g` at
//!   the first step); `p -= lr·b`.
//!
//! The step runs where the model is: on any dfdx device the update is a handful of dfdx tensor
//! ops (`axpy` in place on the parameter, so it keeps its identity for the gradients) with the
//! moments as tensors on that device — nothing crosses to the host. On `Cpu` a fused loop over
//! the host buffers does the same arithmetic in one pass (the gradient lent in place); both
//! evaluate every expression in the same order, so they give the same bits
//! ([`Optimizer::tensor_ops_on_cpu`] picks the tensor ops there too). Moments reach the host
//! only when a checkpoint is written ([`Optimizer::moments`]); read back
//! ([`Optimizer::set_moments`]) they move to the device at their first update.
//!
//! [`ParamGroups`] are PyTorch's parameter groups by tensor name: tensors never stepped
//! (`requires_grad = False`), a prefix stepped at a fixed learning rate (the official SimSiam
//! code's `--fix-pred-lr`), no weight decay on biases and normalisation parameters (timm's rule).
//! Without any, every trainable tensor is stepped alike, at the scheduled rate and with the
//! common weight decay.

use std::any::Any;

use dfdx::nn::tensor_collection::{
    RecursiveWalker, TensorCollection, TensorOptions, TensorVisitor, ViewTensorMut, ViewTensorName,
};
use dfdx::prelude::*;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use siamlab_model::OpError;

use crate::error::{Error, Result};

/// Which optimizer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// Adam.
    Adam,
    /// SGD with momentum.
    Sgd,
}

impl std::str::FromStr for OptimizerKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "adam" => Ok(OptimizerKind::Adam),
            "sgd" => Ok(OptimizerKind::Sgd),
            _ => Err(Error::UnknownChoice { what: "optimizer", name: s.into(), choices: "adam or sgd" }),
        }
    }
}

/// Hyperparameters besides the learning rate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct OptimConfig {
    /// Adam or SGD.
    pub kind: OptimizerKind,
    /// L2 weight decay.
    pub weight_decay: f64,
    /// SGD momentum.
    pub momentum: f64,
    /// Adam β₁, β₂.
    pub betas: [f64; 2],
    /// Adam ε.
    pub eps: f64,
}

impl OptimConfig {
    /// Adam with PyTorch's defaults and weight decay `wd`.
    pub fn adam(wd: f64) -> Self {
        OptimConfig { kind: OptimizerKind::Adam, weight_decay: wd, momentum: 0.0, betas: [0.9, 0.999], eps: 1e-8 }
    }
    /// SGD with momentum 0.9 and weight decay `wd`.
    pub fn sgd(wd: f64) -> Self {
        OptimConfig { kind: OptimizerKind::Sgd, weight_decay: wd, momentum: 0.9, betas: [0.9, 0.999], eps: 1e-8 }
    }
}

/// PyTorch's parameter groups, by tensor name (as [`crate::params::walk`] names them): the
/// exceptions to the common learning rate and weight decay. A tensor none of them names is
/// stepped at the scheduled rate with [`OptimConfig::weight_decay`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ParamGroups {
    /// Tensors never stepped (PyTorch's `requires_grad = False`): no update and no weight
    /// decay, so they keep their values; their moments stay zero (a checkpoint still lists them).
    pub frozen: Vec<String>,
    /// Tensors whose name starts with this prefix are stepped at this learning rate whatever
    /// the schedule says (the official SimSiam code's `fix_lr` group).
    pub fixed_lr: Option<(String, f64)>,
    /// No weight decay on tensors of at most one dimension (biases, BatchNorm and LayerNorm
    /// scales and shifts) nor on `pos_embed` and `cls_token` (timm's rule).
    pub no_decay_norm_bias: bool,
}

/// How one tensor is stepped: its learning rate and weight decay, or not at all.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TensorStep {
    /// Not stepped.
    Frozen,
    /// Stepped at learning rate `lr` with weight decay `wd`.
    Step {
        /// Learning rate.
        lr: f64,
        /// L2 weight decay.
        wd: f64,
    },
}

impl ParamGroups {
    /// How the tensor `name` of `ndim` dimensions is stepped at scheduled rate `lr` and common
    /// weight decay `wd`.
    pub fn step_of(&self, name: &str, ndim: usize, lr: f64, wd: f64) -> TensorStep {
        if self.frozen.iter().any(|f| f == name) {
            return TensorStep::Frozen;
        }
        let lr = match &self.fixed_lr {
            Some((prefix, fixed)) if name.starts_with(prefix.as_str()) => *fixed,
            _ => lr,
        };
        let last = name.rsplit('.').next().unwrap_or(name);
        let no_decay = self.no_decay_norm_bias && (ndim <= 1 || last == "pos_embed" || last == "cls_token");
        TensorStep::Step { lr, wd: if no_decay { 0.0 } else { wd } }
    }
}

/// One trainable tensor's optimizer state.
enum Moments {
    /// Not stepped yet.
    Empty,
    /// Host buffers: the `Cpu` loop's, or read from a checkpoint and not yet on the device
    /// (Adam's `exp_avg`, `exp_avg_sq`; SGD's `momentum_buffer` and an empty second).
    Host(Vec<f32>, Vec<f32>),
    /// Tensors on the model's device, in the parameter's shape.
    Device(Box<dyn DeviceMoments>),
}

/// [`OnDevice`] with its shape and device erased.
trait DeviceMoments {
    /// Copies to the host (for a checkpoint).
    fn to_host(&self) -> (Vec<f32>, Vec<f32>);
    fn as_any(&self) -> &dyn Any;
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

/// The moments of a parameter of shape `S` on device `D`.
struct OnDevice<S: Shape, D: Device<f32>> {
    first: Option<Tensor<S, f32, D>>,
    second: Option<Tensor<S, f32, D>>,
}

impl<S: Shape, D: Device<f32>> DeviceMoments for OnDevice<S, D> {
    fn to_host(&self) -> (Vec<f32>, Vec<f32>) {
        let host = |t: &Option<Tensor<S, f32, D>>| t.as_ref().map_or_else(Vec::new, |t| t.as_vec());
        (host(&self.first), host(&self.second))
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

/// A device error as the trainer's error.
fn dev_err(e: impl std::fmt::Debug) -> Error {
    Error::Model(OpError::device(e))
}

/// An optimizer and its state: one slot per trainable tensor, in visiting order.
pub struct Optimizer {
    /// Hyperparameters.
    pub cfg: OptimConfig,
    /// Steps taken.
    pub t: u64,
    /// On `Cpu`, update with the tensor ops that other devices run instead of the fused host
    /// loop (the same bits, several passes instead of one; for tests).
    pub tensor_ops_on_cpu: bool,
    /// The exceptions to the common learning rate and weight decay, by tensor name (none:
    /// every tensor alike), applied by [`step_module`](Self::step_module).
    pub groups: ParamGroups,
    slots: Vec<Moments>,
}

impl std::fmt::Debug for Optimizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Optimizer")
            .field("cfg", &self.cfg)
            .field("t", &self.t)
            .field("tensor_ops_on_cpu", &self.tensor_ops_on_cpu)
            .field("groups", &self.groups)
            .field("slots", &self.slots.len())
            .finish()
    }
}

impl Optimizer {
    /// A fresh optimizer.
    pub fn new(cfg: OptimConfig) -> Self {
        Optimizer { cfg, t: 0, tensor_ops_on_cpu: false, groups: ParamGroups::default(), slots: Vec::new() }
    }

    /// A fresh optimizer with parameter groups.
    pub fn with_groups(cfg: OptimConfig, groups: ParamGroups) -> Self {
        Optimizer { groups, ..Self::new(cfg) }
    }

    /// Starts a step: call once, then [`update`](Self::update) (or the tensor forms) for every
    /// trainable tensor.
    pub fn begin_step(&mut self) {
        self.t += 1;
    }

    fn slot(&mut self, slot: usize) -> &mut Moments {
        if self.slots.len() <= slot {
            self.slots.resize_with(slot + 1, || Moments::Empty);
        }
        &mut self.slots[slot]
    }

    /// Slots holding state (at most one past the last used).
    pub fn slots(&self) -> usize {
        self.slots.len()
    }

    /// The state of tensor number `slot` on the host: Adam's `exp_avg`, `exp_avg_sq` or SGD's
    /// `momentum_buffer` and an empty vector; empty vectors when it has none (copied from the
    /// device when it lives there).
    pub fn moments(&self, slot: usize) -> (Vec<f32>, Vec<f32>) {
        match self.slots.get(slot) {
            None | Some(Moments::Empty) => (Vec::new(), Vec::new()),
            Some(Moments::Host(a, b)) => (a.clone(), b.clone()),
            Some(Moments::Device(d)) => d.to_host(),
        }
    }

    /// Replaces the state of every slot (as [`moments`](Self::moments) gives it; empty vectors
    /// for none). Each slot moves to its tensor's device at its next update.
    pub fn set_moments(&mut self, slots: Vec<(Vec<f32>, Vec<f32>)>) {
        self.slots = slots
            .into_iter()
            .map(|(a, b)| if a.is_empty() && b.is_empty() { Moments::Empty } else { Moments::Host(a, b) })
            .collect();
    }

    /// Updates tensor number `slot` in place from its gradient, at learning rate `lr`, on the
    /// host: the fused loop.
    pub fn update(&mut self, slot: usize, lr: f64, p: &mut [f32], g: &[f32]) {
        self.update_host(slot, lr, self.cfg.weight_decay, p, g)
    }

    /// [`update`](Self::update) with weight decay `wd`.
    fn update_host(&mut self, slot: usize, lr: f64, wd: f64, p: &mut [f32], g: &[f32]) {
        let cfg = self.cfg;
        let t = self.t;
        let state = self.slot(slot);
        if let Moments::Device(d) = state {
            let (a, b) = d.to_host();
            *state = Moments::Host(a, b);
        }
        if matches!(state, Moments::Empty) {
            *state = Moments::Host(Vec::new(), Vec::new());
        }
        let Moments::Host(first, second) = state else { unreachable!("made host above") };
        let wd = wd as f32;
        let lr32 = lr as f32;
        match cfg.kind {
            OptimizerKind::Adam => {
                let (m, v) = (first, second);
                if m.len() != p.len() || v.len() != p.len() {
                    *m = vec![0.0; p.len()];
                    *v = vec![0.0; p.len()];
                }
                let (step, c2_sqrt, b1, b2, eps) = adam_factors(&cfg, t, lr);
                let g = &g[..p.len()];
                // Element-wise, so the split over threads and the vector lanes leave the bits
                // as one scalar loop would (IEEE sqrt and division are exact-rounded).
                let run = |(((p, g), m), v): AdamRun<'_>| {
                    for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
                        let gi = g + wd * *p;
                        *m = b1 * *m + (1.0 - b1) * gi;
                        *v = b2 * *v + (1.0 - b2) * gi * gi;
                        *p -= step * *m / (v.sqrt() / c2_sqrt + eps);
                    }
                };
                let (m, v) = (m.as_mut_slice(), v.as_mut_slice());
                if p.len() < PAR_RUN {
                    run((((p, g), m), v));
                } else {
                    p.par_chunks_mut(PAR_RUN)
                        .zip(g.par_chunks(PAR_RUN))
                        .zip(m.par_chunks_mut(PAR_RUN))
                        .zip(v.par_chunks_mut(PAR_RUN))
                        .for_each(run);
                }
            }
            OptimizerKind::Sgd => {
                let b = first;
                let mu = cfg.momentum as f32;
                if b.len() != p.len() {
                    *b = g.iter().zip(p.iter()).map(|(&g, &p)| g + wd * p).collect();
                } else {
                    for ((b, &g), &p) in b.iter_mut().zip(g).zip(p.iter()) {
                        *b = mu * *b + g + wd * p;
                    }
                }
                for (p, &b) in p.iter_mut().zip(b.iter()) {
                    *p -= lr32 * b;
                }
            }
        }
    }

    /// Updates tensor number `slot` in place from its gradient `g`, at learning rate `lr`, with
    /// dfdx tensor ops on the tensor's device; the moments stay there. Each expression is
    /// evaluated in the order of [`update`](Self::update)'s, so on `Cpu` the bits are the same.
    pub fn update_tensor<S: Shape, D: Device<f32>>(
        &mut self,
        slot: usize,
        lr: f64,
        p: &mut Tensor<S, f32, D>,
        g: Tensor<S, f32, D>,
    ) -> Result<()> {
        self.update_tensor_wd(slot, lr, self.cfg.weight_decay, p, g)
    }

    /// [`update_tensor`](Self::update_tensor) with weight decay `wd`.
    fn update_tensor_wd<S: Shape, D: Device<f32>>(
        &mut self,
        slot: usize,
        lr: f64,
        wd: f64,
        p: &mut Tensor<S, f32, D>,
        mut g: Tensor<S, f32, D>,
    ) -> Result<()> {
        let cfg = self.cfg;
        let t = self.t;
        let shape = *p.shape();
        let numel = shape.num_elements();
        let dev = p.device().clone();
        let state = self.slot(slot);
        let mut moved: Box<dyn DeviceMoments> = match std::mem::replace(state, Moments::Empty) {
            Moments::Device(d) if d.as_any().is::<OnDevice<S, D>>() => d,
            other => {
                let (a, b) = match other {
                    Moments::Device(d) => d.to_host(),
                    Moments::Host(a, b) => (a, b),
                    Moments::Empty => (Vec::new(), Vec::new()),
                };
                let upload = |v: Vec<f32>| -> Result<Option<Tensor<S, f32, D>>> {
                    if v.len() != numel {
                        return Ok(None);
                    }
                    Ok(Some(dev.try_tensor_from_vec(v, shape).map_err(dev_err)?))
                };
                Box::new(OnDevice::<S, D> { first: upload(a)?, second: upload(b)? })
            }
        };
        let Some(m) = moved.as_any_mut().downcast_mut::<OnDevice<S, D>>() else {
            unreachable!("the slot holds this shape and device")
        };
        let wd = wd as f32;
        let result = (|| -> std::result::Result<(), D::Err> {
            match cfg.kind {
                OptimizerKind::Adam => {
                    let (step, c2_sqrt, b1, b2, eps) = adam_factors(&cfg, t, lr);
                    if m.first.is_none() || m.second.is_none() {
                        m.first = Some(dev.try_zeros_like(&shape)?);
                        m.second = Some(dev.try_zeros_like(&shape)?);
                    }
                    let (Some(mt), Some(vt)) = (m.first.as_mut(), m.second.as_mut()) else { unreachable!() };
                    // g = g + wd·p
                    g.try_axpy(1.0f32, p, wd)?;
                    // m = β₁·m + (1-β₁)·g
                    mt.try_axpy(b1, &g, 1.0 - b1)?;
                    // v = β₂·v + ((1-β₂)·g)·g
                    let sq = g.clone().try_mul(1.0 - b2)?.try_mul(g)?;
                    vt.try_axpy(b2, &sq, 1.0f32)?;
                    // p = p - (step·m) / (√v / √c₂ + ε)
                    let denom = vt.clone().try_sqrt()?.try_div(c2_sqrt)?.try_add(eps)?;
                    let u = mt.clone().try_mul(step)?.try_div(denom)?;
                    p.try_axpy(1.0f32, &u, -1.0f32)
                }
                OptimizerKind::Sgd => {
                    let mu = cfg.momentum as f32;
                    match m.first.as_mut() {
                        // b = (μ·b + g) + wd·p
                        Some(b) => {
                            b.try_axpy(mu, &g, 1.0f32)?;
                            b.try_axpy(1.0f32, p, wd)?;
                        }
                        // b = g + wd·p
                        None => {
                            g.try_axpy(1.0f32, p, wd)?;
                            m.first = Some(g);
                        }
                    }
                    let Some(b) = m.first.as_ref() else { unreachable!("set above") };
                    // p = p - lr·b
                    p.try_axpy(1.0f32, b, -(lr as f32))
                }
            }
        })();
        *self.slot(slot) = Moments::Device(moved);
        result.map_err(dev_err)
    }

    /// Updates parameter `p` (tensor number `slot`) from its gradient in `grads` (zero when it
    /// has none): on `Cpu` the fused host loop with the gradient lent in place (unless
    /// [`tensor_ops_on_cpu`](Self::tensor_ops_on_cpu)), elsewhere [`update_tensor`](Self::update_tensor).
    pub fn update_param<S: Shape, D: Device<f32>>(
        &mut self,
        slot: usize,
        lr: f64,
        p: &mut Tensor<S, f32, D>,
        grads: &mut Gradients<f32, D>,
    ) -> Result<()> {
        self.update_param_wd(slot, lr, self.cfg.weight_decay, p, grads)
    }

    /// [`update_param`](Self::update_param) with weight decay `wd`.
    fn update_param_wd<S: Shape, D: Device<f32>>(
        &mut self,
        slot: usize,
        lr: f64,
        wd: f64,
        p: &mut Tensor<S, f32, D>,
        grads: &mut Gradients<f32, D>,
    ) -> Result<()> {
        if !self.tensor_ops_on_cpu {
            let on_cpu = (&mut *grads as &mut dyn Any).downcast_mut::<Gradients<f32, Cpu>>();
            if let (Some(g), Some(pc)) = (on_cpu, (&mut *p as &mut dyn Any).downcast_mut::<Tensor<S, f32, Cpu>>()) {
                let mut values = pc.as_vec();
                let g: &[f32] = g.get_or_alloc_mut(&*pc)?;
                self.update_host(slot, lr, wd, &mut values, g);
                pc.copy_from(&values);
                return Ok(());
            }
        }
        grads.try_alloc_for(&*p).map_err(dev_err)?;
        let g = grads.get(&*p);
        self.update_tensor_wd(slot, lr, wd, p, g)
    }

    /// Gives the frozen tensor number `slot` (of `numel` values) zero moments if it has none, so
    /// that a checkpoint holds state for every trainable tensor; the tensor is not touched.
    fn keep_frozen(&mut self, slot: usize, numel: usize) {
        let kind = self.cfg.kind;
        let state = self.slot(slot);
        if matches!(state, Moments::Empty) {
            let second = if kind == OptimizerKind::Adam { vec![0.0; numel] } else { Vec::new() };
            *state = Moments::Host(vec![0.0; numel], second);
        }
    }

    /// Updates parameter `p` (tensor number `slot`) from its gradient `g`: on `Cpu` the fused
    /// host loop (unless [`tensor_ops_on_cpu`](Self::tensor_ops_on_cpu)), elsewhere
    /// [`update_tensor`](Self::update_tensor).
    pub fn update_with<S: Shape, D: Device<f32>>(
        &mut self,
        slot: usize,
        lr: f64,
        p: &mut Tensor<S, f32, D>,
        g: Tensor<S, f32, D>,
    ) -> Result<()> {
        if !self.tensor_ops_on_cpu {
            if let Some(pc) = (&mut *p as &mut dyn Any).downcast_mut::<Tensor<S, f32, Cpu>>() {
                let mut values = pc.as_vec();
                self.update(slot, lr, &mut values, &g.as_vec());
                pc.copy_from(&values);
                return Ok(());
            }
        }
        self.update_tensor(slot, lr, p, g)
    }

    /// Updates every trainable tensor of `module` from `grads`, numbering them from `first_slot`
    /// in visiting order (the order of [`crate::params::walk`]); returns the next free slot. Each
    /// tensor is stepped as [`groups`](Self::groups) says of its name (a frozen one keeps its
    /// slot number, so the numbering does not depend on the groups).
    pub fn step_module<D: Device<f32>, M: TensorCollection<f32, D>>(
        &mut self,
        module: &mut M,
        grads: &mut Gradients<f32, D>,
        lr: f64,
        first_slot: usize,
    ) -> Result<usize> {
        let mut walk = StepWalk { opt: self, grads, lr, slot: first_slot };
        M::iter_tensors(&mut RecursiveWalker { m: (String::new(), module), f: &mut walk })?;
        Ok(walk.slot)
    }
}

/// Adam's per-step factors, in f32 as the update uses them: `lr / (1-β₁ᵗ)`, `√(1-β₂ᵗ)`, β₁, β₂, ε.
/// One run of the Adam update: parameters, gradients, first and second moments.
type AdamRun<'a> = (((&'a mut [f32], &'a [f32]), &'a mut [f32]), &'a mut [f32]);

/// Elements per rayon task of the host updates: tensors below it update on the calling thread.
const PAR_RUN: usize = 1 << 16;

fn adam_factors(cfg: &OptimConfig, t: u64, lr: f64) -> (f32, f32, f32, f32, f32) {
    let [b1, b2] = cfg.betas;
    let t = t.min(i32::MAX as u64) as i32;
    let c1 = 1.0 - b1.powi(t);
    let c2 = 1.0 - b2.powi(t);
    ((lr / c1) as f32, c2.sqrt() as f32, b1 as f32, b2 as f32, cfg.eps as f32)
}

/// The walk of [`Optimizer::step_module`].
struct StepWalk<'a, D: Device<f32>> {
    opt: &'a mut Optimizer,
    grads: &'a mut Gradients<f32, D>,
    lr: f64,
    slot: usize,
}

impl<D: Device<f32>> TensorVisitor<f32, D> for StepWalk<'_, D> {
    type Viewer = (ViewTensorName, ViewTensorMut);
    type Err = Error;
    type E2 = f32;
    type D2 = D;

    fn visit<S: Shape>(
        &mut self,
        opts: TensorOptions<S, f32, D>,
        (name, p): (String, &mut Tensor<S, f32, D>),
    ) -> Result<Option<Tensor<S, f32, D>>> {
        if opts.do_gradient_update {
            let ndim = p.shape().concrete().into_iter().count();
            match self.opt.groups.step_of(&name, ndim, self.lr, self.opt.cfg.weight_decay) {
                TensorStep::Frozen => self.opt.keep_frozen(self.slot, p.shape().num_elements()),
                TensorStep::Step { lr, wd } => self.opt.update_param_wd(self.slot, lr, wd, p, self.grads)?,
            }
            self.slot += 1;
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn optimizer_names_parse_and_an_unknown_one_is_named() {
        assert_eq!("adam".parse::<OptimizerKind>().unwrap(), OptimizerKind::Adam);
        assert_eq!("sgd".parse::<OptimizerKind>().unwrap(), OptimizerKind::Sgd);
        let err = "lamb".parse::<OptimizerKind>().unwrap_err();
        assert!(
            matches!(&err, Error::UnknownChoice { what: "optimizer", name, choices: "adam or sgd" } if name == "lamb"),
            "{err}"
        );
        assert_eq!(err.to_string(), "unknown optimizer \"lamb\": use adam or sgd");
    }

    /// Values from `torch.optim.Adam([p], lr=0.1, weight_decay=0.01)` with p = [1, -2],
    /// gradient [0.5, 0.25] at both steps.
    #[test]
    fn adam_matches_pytorch_rule() {
        let mut o = Optimizer::new(OptimConfig::adam(0.01));
        let mut p = [1.0f32, -2.0];
        for _ in 0..2 {
            o.begin_step();
            o.update(0, 0.1, &mut p, &[0.5, 0.25]);
        }
        // torch 2.x prints [0.8000051975250244, -2.19998836517334] for this loop.
        assert!((p[0] - 0.800_005_2).abs() < 2e-6, "{p:?}");
        assert!((p[1] + 2.199_988_4).abs() < 2e-6, "{p:?}");
    }

    #[test]
    fn sgd_momentum_matches_pytorch_rule() {
        let mut o = Optimizer::new(OptimConfig::sgd(0.0));
        let mut p = [1.0f32];
        for _ in 0..3 {
            o.begin_step();
            o.update(0, 0.1, &mut p, &[1.0]);
        }
        // buffers 1, 1.9, 2.71 → p = 1 - 0.1·(1 + 1.9 + 2.71); torch.optim.SGD gives 0.4389999806880951
        assert!((p[0] - (1.0 - 0.561)).abs() < 1e-6, "{p:?}");
    }

    /// A small net stepped by the host loop and by the tensor ops (as every non-`Cpu` device
    /// runs them) from the same start: `(max |Δ| of the parameters, of the moments)` over
    /// `steps` steps at the cosine schedule's rates.
    fn host_vs_tensor_ops(cfg: OptimConfig, steps: u64) -> (f32, f32) {
        use crate::schedule::Schedule;
        use dfdx::nn::ZeroGrads;
        type Net = (Linear<5, 8>, ReLU, Linear<8, 3>);
        let dev = Cpu::seed_from_u64(3);
        let x = dev.sample_normal::<Rank2<16, 5>>();
        let y = dev.sample_normal::<Rank2<16, 3>>();
        let mut nets =
            [Cpu::seed_from_u64(7).build_module::<Net, f32>(), Cpu::seed_from_u64(7).build_module::<Net, f32>()];
        let mut opts = [Optimizer::new(cfg), Optimizer::new(cfg)];
        opts[1].tensor_ops_on_cpu = true;
        let schedule = Schedule { base_lr: 0.05, warmup: 5, total: steps, cosine: true, epoch_steps: 0 };
        let (mut dp, mut dm) = (0f32, 0f32);
        let max_diff = |a: &[f32], b: &[f32]| {
            assert_eq!(a.len(), b.len());
            a.iter().zip(b).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max)
        };
        for step in 0..steps {
            for (net, opt) in nets.iter_mut().zip(&mut opts) {
                let out = net.forward(x.clone().traced(net.alloc_grads()));
                let mut grads = mse_loss(out, y.clone()).backward();
                opt.begin_step();
                assert_eq!(opt.step_module(net, &mut grads, schedule.lr(step), 0).unwrap(), 4);
            }
            let [a, b] = &mut nets;
            let (mut pa, mut pb) = (crate::params::StateDict::new(), crate::params::StateDict::new());
            crate::params::collect(a, "", &mut pa).unwrap();
            crate::params::collect(b, "", &mut pb).unwrap();
            for (k, (_, va)) in &pa {
                dp = dp.max(max_diff(va, &pb[k].1));
            }
            for slot in 0..4 {
                let (ma, mb) = (opts[0].moments(slot), opts[1].moments(slot));
                assert!(!ma.0.is_empty());
                dm = dm.max(max_diff(&ma.0, &mb.0)).max(max_diff(&ma.1, &mb.1));
            }
        }
        (dp, dm)
    }

    /// The tensor-op update (what a GPU runs) equals the host loop on `Cpu` over 100 steps of
    /// Adam and SGD with weight decay at cosine-scheduled rates: within 1e-6, and in fact bit
    /// for bit (every expression is evaluated in the same order), so a checkpoint written by
    /// either resumes in the other.
    #[test]
    fn tensor_ops_equal_the_host_loop_over_100_steps() {
        for cfg in [OptimConfig::adam(1e-2), OptimConfig::sgd(1e-2)] {
            let (dp, dm) = host_vs_tensor_ops(cfg, 100);
            eprintln!("{:?}: max |Δ| parameters {dp:e}, moments {dm:e}", cfg.kind);
            assert!(dp <= 1e-6 && dm <= 1e-6, "{:?}: {dp:e} {dm:e}", cfg.kind);
            assert_eq!((dp, dm), (0.0, 0.0), "{:?}: the two paths no longer round alike", cfg.kind);
        }
    }

    /// `Linear<3, 4>` (`0.weight`, `0.bias`), ReLU, `Linear<4, 2>` (`2.weight`, `2.bias`) from
    /// seed 11, stepped `steps` times by `opt` at learning rate `lr` on a fixed batch (with
    /// `zero_grads`, on a zero gradient): the tensors before and after.
    fn stepped(
        opt: &mut Optimizer,
        steps: usize,
        lr: f64,
        zero_grads: bool,
    ) -> (crate::params::StateDict, crate::params::StateDict) {
        use dfdx::nn::ZeroGrads;
        type Net = (Linear<3, 4>, ReLU, Linear<4, 2>);
        let mut net = Cpu::seed_from_u64(11).build_module::<Net, f32>();
        let x = Cpu::seed_from_u64(12).sample_normal::<Rank2<6, 3>>();
        let mut before = crate::params::StateDict::new();
        crate::params::collect(&mut net, "", &mut before).unwrap();
        for _ in 0..steps {
            let mut grads = if zero_grads {
                net.alloc_grads()
            } else {
                net.forward(x.clone().traced(net.alloc_grads())).square().mean().backward()
            };
            opt.begin_step();
            assert_eq!(opt.step_module(&mut net, &mut grads, lr, 0).unwrap(), 4);
        }
        let mut after = crate::params::StateDict::new();
        crate::params::collect(&mut net, "", &mut after).unwrap();
        (before, after)
    }

    /// A frozen tensor (PyTorch's `requires_grad = False`) keeps its values through Adam steps
    /// with weight decay, and still has (zero) moments for a checkpoint; the others move.
    #[test]
    fn a_frozen_tensor_is_unchanged_after_steps() {
        let groups = ParamGroups { frozen: vec!["0.bias".into()], ..ParamGroups::default() };
        let mut opt = Optimizer::with_groups(OptimConfig::adam(0.1), groups);
        let (before, after) = stepped(&mut opt, 5, 0.01, false);
        assert_eq!(before["0.bias"], after["0.bias"]);
        for name in ["0.weight", "2.weight", "2.bias"] {
            assert_ne!(before[name], after[name], "{name} did not move");
        }
        let (m, v) = opt.moments(1);
        assert_eq!((m.len(), v.len()), (4, 4));
        assert!(m.iter().chain(&v).all(|&x| x == 0.0));
        // Without the group the same tensor moves.
        let (before, after) = stepped(&mut Optimizer::new(OptimConfig::adam(0.1)), 5, 0.01, false);
        assert_ne!(before["0.bias"], after["0.bias"]);
    }

    /// A fixed-lr group (the official `--fix-pred-lr`) moves by its own rate, the rest by the
    /// scheduled one: plain SGD (no momentum, no decay) steps by exactly `lr · g`.
    #[test]
    fn a_fixed_lr_group_moves_by_the_base_lr() {
        let sgd = OptimConfig { momentum: 0.0, ..OptimConfig::sgd(0.0) };
        let (base, scheduled) = (0.5, 0.01);
        let groups = ParamGroups { fixed_lr: Some(("2.".into(), base)), ..ParamGroups::default() };
        let (before, fixed) = stepped(&mut Optimizer::with_groups(sgd, groups), 1, scheduled, false);
        let (_, plain) = stepped(&mut Optimizer::new(sgd), 1, scheduled, false);
        for (name, (_, b)) in &before {
            let (f, p) = (&fixed[name].1, &plain[name].1);
            let ratio = if name.starts_with("2.") { base / scheduled } else { 1.0 };
            for (i, ((f, p), b)) in f.iter().zip(p).zip(b).enumerate() {
                let (df, dp) = ((f - b) as f64, (p - b) as f64);
                assert!((df - ratio * dp).abs() <= 1e-5 * (1.0 + df.abs()), "{name}[{i}]: {df} vs {ratio} × {dp}");
            }
            assert!(p.iter().zip(b).any(|(p, b)| p != b), "{name} did not move");
        }
    }

    /// Without gradient, SGD with weight decay shrinks every tensor by `lr · wd · p`; with
    /// `no_decay_norm_bias` the biases (1-D) stay.
    #[test]
    fn no_decay_spares_the_biases() {
        let sgd = OptimConfig::sgd(0.1);
        let groups = ParamGroups { no_decay_norm_bias: true, ..ParamGroups::default() };
        let (before, after) = stepped(&mut Optimizer::with_groups(sgd, groups), 1, 0.5, true);
        let (_, decayed) = stepped(&mut Optimizer::new(sgd), 1, 0.5, true);
        for name in ["0.bias", "2.bias"] {
            assert_eq!(before[name], after[name], "{name}");
            assert_ne!(before[name], decayed[name], "{name}");
        }
        for name in ["0.weight", "2.weight"] {
            let want: Vec<f32> = before[name].1.iter().map(|p| p - 0.5 * (0.1 * p)).collect();
            assert_eq!(after[name].1, want, "{name}");
        }
    }

    /// Moments held on the device go out through `moments` and back through `set_moments`
    /// (a checkpoint) without changing the run: 50 + 50 steps equal 100.
    #[test]
    fn device_moments_survive_a_checkpoint_round_trip() {
        use dfdx::nn::ZeroGrads;
        type Net = (Linear<4, 6>, Tanh, Linear<6, 2>);
        for cfg in [OptimConfig::adam(1e-3), OptimConfig::sgd(1e-3)] {
            let x = Cpu::seed_from_u64(1).sample_normal::<Rank2<8, 4>>();
            let run = |split: Option<u64>| {
                let mut net = Cpu::seed_from_u64(2).build_module::<Net, f32>();
                let mut opt = Optimizer::new(cfg);
                opt.tensor_ops_on_cpu = true;
                for step in 0..100u64 {
                    if Some(step) == split {
                        let saved: Vec<_> = (0..opt.slots()).map(|i| opt.moments(i)).collect();
                        let t = opt.t;
                        opt = Optimizer::new(cfg);
                        opt.tensor_ops_on_cpu = true;
                        opt.set_moments(saved);
                        opt.t = t;
                    }
                    let mut grads = net.forward(x.clone().traced(net.alloc_grads())).square().mean().backward();
                    opt.begin_step();
                    opt.step_module(&mut net, &mut grads, 0.01, 0).unwrap();
                }
                let mut out = crate::params::StateDict::new();
                crate::params::collect(&mut net, "", &mut out).unwrap();
                out
            };
            assert_eq!(run(None), run(Some(50)), "{:?}", cfg.kind);
        }
    }
}
