//! Gradients handed out as soon as they are final, before the backward pass ends — what
//! PyTorch's DDP hooks give its reducer, so that a data-parallel step averages the last layers'
//! gradients while the first layers' backward pass still runs.
//!
//! While a [`GradsReady`] sink is set on this thread ([`watch_grads`]), a training forward pass
//! records a marker on the tape before the first use of each group of parameters (a backbone
//! stage, the projector, the predictor): dfdx runs backward ops in reverse recording order, so
//! the marker runs right after the last backward op that adds to that group's gradients, and
//! hands the group ([`GradGroup`]) with the step's gradients to the sink. Only the first view
//! of a SimSiam pair marks (its ops are recorded first, so its backward runs last). CPU only:
//! on other devices nothing is marked and the gradients are averaged after the backward pass.
//!
//! The sink is per thread ([`crate::Scoped`]), like [`crate::sync_batch_norm`]'s reducer.

use std::any::{Any, TypeId};
use std::cell::RefCell;
use std::rc::Rc;

use dfdx::nn::tensor_collection::TensorCollection;
use dfdx::prelude::{Cpu, Gradients, PutTape, Shape, SplitTape, Tape, Tensor};

use crate::scoped::{self, Scoped};
use crate::{Kernels, OpError};

/// Where [`GradGroup`]s go when their gradients are final.
pub trait GradsReady {
    /// `group`'s gradients in `grads` are final for this backward pass (called from inside
    /// it, once per group). A failure must be kept and reported after the backward pass.
    fn ready(&self, group: GradGroup, grads: &mut Gradients<f32, Cpu>);
}

/// Lends one gradient of a step's [`Gradients`].
pub(crate) type Lend = Box<dyn Fn(&mut Gradients<f32, Cpu>, &mut dyn FnMut(&mut [f32])) -> Result<(), OpError>>;

/// The trainable tensors of one module, by reference into a step's gradients (in the module's
/// visiting order).
pub struct GradGroup {
    lends: Vec<Lend>,
    elements: usize,
}

impl std::fmt::Debug for GradGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GradGroup {{ tensors: {}, elements: {} }}", self.lends.len(), self.elements)
    }
}

impl GradGroup {
    /// The trainable tensors of `module` (on the CPU).
    pub(crate) fn of<D: Kernels<f32>, M: TensorCollection<f32, D>>(module: &M) -> GradGroup {
        let lends = crate::names::grad_lends(module);
        GradGroup {
            elements: lends.iter().map(|(len, _)| len).sum(),
            lends: lends.into_iter().map(|(_, l)| l).collect(),
        }
    }

    /// Tensors in the group.
    pub fn tensors(&self) -> usize {
        self.lends.len()
    }

    /// Gradient values in the group.
    pub fn elements(&self) -> usize {
        self.elements
    }

    /// Hands each gradient of the group in `grads` to `f`, in place (zeros for one no op has
    /// reached).
    pub fn visit(&self, grads: &mut Gradients<f32, Cpu>, f: &mut dyn FnMut(&mut [f32])) -> Result<(), OpError> {
        self.lends.iter().try_for_each(|lend| lend(grads, f))
    }
}

/// The lender of tensor `t`'s gradient (a ghost: the tensor's id and length, not its data).
pub(crate) fn lend_of<S: Shape>(t: &Tensor<S, f32, Cpu>) -> Lend {
    let ghost = t.ghost();
    Box::new(move |grads, f| {
        f(grads.get_or_alloc_mut(&ghost).map_err(OpError::device)?);
        Ok(())
    })
}

thread_local! {
    static SINK: RefCell<Option<Rc<dyn GradsReady>>> = const { RefCell::new(None) };
    static ARMED: RefCell<Option<()>> = const { RefCell::new(None) };
}

/// Ends [`watch_grads`] when dropped (restoring any sink set before it).
pub type WatchGuard = Scoped<Rc<dyn GradsReady>>;

/// Marks on this thread hand their groups to `sink` until the guard drops.
pub fn watch_grads(sink: Rc<dyn GradsReady>) -> WatchGuard {
    Scoped::set(&SINK, sink)
}

/// Runs `f` with marking on: the forward pass whose backward runs last (a SimSiam pair's first
/// view, a finetuning batch through the backbone).
pub fn armed<R>(f: impl FnOnce() -> R) -> R {
    let _armed = Scoped::set(&ARMED, ());
    f()
}

/// `x` with a marker for `module`'s parameters on its tape, when a sink watches this thread, the
/// pass is armed, `x` carries a tape, and the device is the CPU; else `x` as it is. Call it
/// right before `module`'s first use in the forward pass.
pub(crate) fn mark<S: Shape, D: Kernels<f32>, T: Tape<f32, D>, M: TensorCollection<f32, D>>(
    x: Tensor<S, f32, D, T>,
    module: &M,
) -> Tensor<S, f32, D, T> {
    if !T::OWNS_TAPE || scoped::current(&ARMED).is_none() || TypeId::of::<D>() != TypeId::of::<Cpu>() {
        return x;
    }
    let Some(sink) = scoped::current(&SINK) else { return x };
    let group = GradGroup::of(module);
    let (x, mut tape) = x.split_tape();
    tape.add_backward_op(move |grads| {
        if let Some(grads) = (grads as &mut dyn Any).downcast_mut::<Gradients<f32, Cpu>>() {
            sink.ready(group, grads);
        }
        Ok(())
    });
    x.put_tape(tape)
}

#[cfg(test)]
mod tests {
    use dfdx::prelude::*;

    use super::*;
    use crate::backbones::{with_backbone, Backbone, BackboneVisitor};
    use crate::layers::Mode;
    use crate::simsiam::{Predictor, Projector, SimSiamTiny};

    /// Copies each group's gradients as they arrive.
    #[derive(Default)]
    struct Record {
        groups: RefCell<Vec<GradGroup>>,
        values: RefCell<Vec<Vec<f32>>>,
    }

    impl GradsReady for Record {
        fn ready(&self, group: GradGroup, grads: &mut Gradients<f32, Cpu>) {
            group.visit(grads, &mut |g| self.values.borrow_mut().push(g.to_vec())).unwrap();
            self.groups.borrow_mut().push(group);
        }
    }

    /// A SimSiam step of the backbone with a sink watching: every trainable tensor comes in
    /// exactly one group, and its gradient when it comes is already the final one.
    struct EachOnceAndFinal;

    impl BackboneVisitor for EachOnceAndFinal {
        type Output = ();
        fn visit<B: Backbone<F> + BuildModule<Cpu, f32> + 'static, const F: usize>(self, backbone: B) {
            let dev = Cpu::seed_from_u64(3);
            let mut model =
                SimSiamTiny::<B, F> { backbone, projector: Projector::build(&dev), predictor: Predictor::build(&dev) };
            let x1: Tensor<_, f32, _> = dev.sample_normal_like(&(4, Const::<3>, 32, 32));
            let x2: Tensor<_, f32, _> = dev.sample_normal_like(&(4, Const::<3>, 32, 32));
            let sink = Rc::new(Record::default());
            let mut grads = {
                let _watch = watch_grads(sink.clone());
                let loss = model.forward_loss(x1.traced(model.alloc_grads()), x2.leaky_traced(), Mode::Train).unwrap();
                loss.backward()
            };
            let (mut handed, mut last) = (Vec::new(), Vec::new());
            for group in sink.groups.borrow().iter() {
                group
                    .visit(&mut grads, &mut |g| {
                        handed.push(g.as_ptr() as usize);
                        last.push(g.to_vec());
                    })
                    .unwrap();
            }
            let name = model.backbone.name();
            assert!(*sink.values.borrow() == last, "{name}: a group came before its gradients were final");
            let mut every = Vec::new();
            crate::walk_grads(&model, &mut grads, "", &mut |_, g| {
                every.push(g.as_ptr() as usize);
                Ok::<_, OpError>(())
            })
            .unwrap();
            let count = handed.len();
            handed.sort_unstable();
            handed.dedup();
            assert_eq!(handed.len(), count, "{name}: a tensor came in two groups");
            every.sort_unstable();
            assert_eq!(handed, every, "{name}: the groups are not the model's trainable tensors");
            assert!(sink.groups.borrow().len() >= 4, "{name}: too few groups to overlap anything");
        }
    }

    #[test]
    fn every_trainable_tensor_comes_once_with_its_final_gradient() {
        let dev = Cpu::seed_from_u64(0);
        for name in ["resnet18_tiny", "efficientnet_tiny", "vit_tiny", "pit_tiny"] {
            with_backbone(name, 32, &dev, EachOnceAndFinal).unwrap();
        }
    }

    #[test]
    fn nothing_is_marked_without_a_sink_or_outside_the_first_view() {
        let dev = Cpu::seed_from_u64(0);
        let x: Tensor<_, f32, _> = dev.sample_normal_like(&(2, Const::<3>));
        let m: Tensor<Rank1<3>, f32, _> = dev.zeros();
        let sink = Rc::new(Record::default());
        let _watch = watch_grads(sink.clone());
        // Not armed: no marker.
        let y = mark(x.leaky_trace(), &m);
        let _ = y.sum().backward();
        assert!(sink.groups.borrow().is_empty());
        // Armed: one group, with the tensor's gradient (zeros: no op used it).
        let y = armed(|| mark(x.leaky_trace(), &m));
        let _ = y.sum().backward();
        assert_eq!(sink.groups.borrow().len(), 1);
        assert_eq!(*sink.values.borrow(), [vec![0.0; 3]]);
    }
}
