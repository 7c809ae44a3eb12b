//! The model's tensors by name, in the PyTorch `state_dict` spelling the layers use
//! (`layer1.0.conv1.weight`, `blocks.3.attn.qkv.bias`): what weight import/export matches on,
//! what the trainer's checkpoints and the tests' fixtures are keyed by.
//!
//! One visitor of dfdx's tensor collections serves them all: [`visit_tensors`] reads a model
//! (names, shapes, values on demand), [`walk_tensors`] may also write each tensor back,
//! [`visit_grads`] reads the gradients of the trainable ones, [`walk_grads`] lends them in place
//! (CPU), and `walk_cuda_grads` in GPU memory (the `cuda` build).

use std::any::Any;
use std::marker::PhantomData;

use dfdx::nn::tensor_collection::{
    RecursiveWalker, TensorCollection, TensorOptions, TensorVisitor, ViewTensorMut, ViewTensorName, ViewTensorRef,
};
use dfdx::prelude::{Cpu, Device, Gradients, HasShape, Shape, Tensor};

use crate::OpError;

/// A tensor of a model: its `state_dict` key, shape, and whether it is trained (parameters)
/// or not (BatchNorm's running statistics).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamedTensor {
    /// The key, dot-separated.
    pub name: String,
    /// The shape.
    pub shape: Vec<usize>,
    /// `true` for parameters, `false` for buffers.
    pub trainable: bool,
}

/// A tensor met on a walk.
#[derive(Debug)]
pub struct Slot<'a> {
    /// Its `state_dict` key.
    pub name: &'a str,
    /// Its shape.
    pub shape: &'a [usize],
    /// A parameter (`true`) or a buffer such as BatchNorm's running mean (`false`).
    pub trainable: bool,
}

/// What [`visit_tensors`] does with each tensor: gets its slot and a function that copies its
/// values to the host.
pub type ReadFn<'f, E> = dyn FnMut(Slot<'_>, &dyn Fn() -> Vec<f32>) -> Result<(), E> + 'f;

/// What [`walk_tensors`] does with each tensor: gets a host copy of its values, written back
/// when the function returns `true`.
pub type TensorFn<'f, E> = dyn FnMut(Slot<'_>, &mut Vec<f32>) -> Result<bool, E> + 'f;

/// What [`visit_grads`] does with each trainable tensor: gets its slot and a host copy of its
/// gradient.
pub type GradFn<'f, E> = dyn FnMut(Slot<'_>, Vec<f32>) -> Result<(), E> + 'f;

/// The visitor: `F` is what to do ([`ReadFn`] or [`TensorFn`]), `E` the caller's error.
struct Visit<'h, F: ?Sized, E> {
    f: &'h mut F,
    _err: PhantomData<E>,
}

fn shape_of<S: Shape>(s: &S) -> Vec<usize> {
    s.concrete().into_iter().collect()
}

impl<D: Device<f32>, E> TensorVisitor<f32, D> for Visit<'_, ReadFn<'_, E>, E> {
    type Viewer = (ViewTensorName, ViewTensorRef);
    type Err = E;
    type E2 = f32;
    type D2 = D;

    fn visit<S: Shape>(
        &mut self,
        opts: TensorOptions<S, f32, D>,
        (name, t): (String, &Tensor<S, f32, D>),
    ) -> Result<Option<Tensor<S, f32, D>>, E> {
        let shape = shape_of(t.shape());
        (self.f)(Slot { name: &name, shape: &shape, trainable: opts.do_gradient_update }, &|| t.as_vec())?;
        Ok(None)
    }
}

impl<D: Device<f32>, E> TensorVisitor<f32, D> for Visit<'_, TensorFn<'_, E>, E> {
    type Viewer = (ViewTensorName, ViewTensorMut);
    type Err = E;
    type E2 = f32;
    type D2 = D;

    fn visit<S: Shape>(
        &mut self,
        opts: TensorOptions<S, f32, D>,
        (name, t): (String, &mut Tensor<S, f32, D>),
    ) -> Result<Option<Tensor<S, f32, D>>, E> {
        let shape = shape_of(t.shape());
        let mut values = t.as_vec();
        if (self.f)(Slot { name: &name, shape: &shape, trainable: opts.do_gradient_update }, &mut values)? {
            t.copy_from(&values);
        }
        Ok(None)
    }
}

/// Visits every tensor of `model` as a module named `prefix` (names `{prefix}.{field}…`, or
/// without the prefix when it is empty), in visiting order, without changing it.
pub fn visit_tensors<D: Device<f32>, M: TensorCollection<f32, D>, E>(
    model: &M,
    prefix: &str,
    f: &mut ReadFn<'_, E>,
) -> Result<(), E> {
    let mut visit = Visit { f, _err: PhantomData };
    M::iter_tensors(&mut RecursiveWalker { m: (prefix.to_string(), model), f: &mut visit })?;
    Ok(())
}

/// Walks every tensor of `model` as a module named `prefix` (see [`visit_tensors`]); a tensor
/// is written back from its host copy when `f` returns `true`.
pub fn walk_tensors<D: Device<f32>, M: TensorCollection<f32, D>, E>(
    model: &mut M,
    prefix: &str,
    f: &mut TensorFn<'_, E>,
) -> Result<(), E> {
    let mut visit = Visit { f, _err: PhantomData };
    M::iter_tensors(&mut RecursiveWalker { m: (prefix.to_string(), model), f: &mut visit })?;
    Ok(())
}

struct GradVisit<'h, 'f, D: Device<f32>, E> {
    f: &'h mut GradFn<'f, E>,
    grads: &'h mut Gradients<f32, D>,
}

impl<D: Device<f32>, E: From<OpError>> TensorVisitor<f32, D> for GradVisit<'_, '_, D, E> {
    type Viewer = (ViewTensorName, ViewTensorRef);
    type Err = E;
    type E2 = f32;
    type D2 = D;

    fn visit<S: Shape>(
        &mut self,
        opts: TensorOptions<S, f32, D>,
        (name, t): (String, &Tensor<S, f32, D>),
    ) -> Result<Option<Tensor<S, f32, D>>, E> {
        if opts.do_gradient_update {
            self.grads.try_alloc_for(t).map_err(OpError::device)?;
            let shape = shape_of(t.shape());
            (self.f)(Slot { name: &name, shape: &shape, trainable: true }, self.grads.get(t).as_vec())?;
        }
        Ok(None)
    }
}

/// Visits the gradient held in `grads` of every trainable tensor of `model` (zeros for a
/// tensor none has reached yet), named as in [`visit_tensors`].
pub fn visit_grads<D: Device<f32>, M: TensorCollection<f32, D>, E: From<OpError>>(
    model: &M,
    grads: &mut Gradients<f32, D>,
    prefix: &str,
    f: &mut GradFn<'_, E>,
) -> Result<(), E> {
    let mut visit = GradVisit { f, grads };
    M::iter_tensors(&mut RecursiveWalker { m: (prefix.to_string(), model), f: &mut visit })?;
    Ok(())
}

struct LendVisit<'h> {
    out: &'h mut Vec<(usize, crate::ready::Lend)>,
}

impl<D: Device<f32>> TensorVisitor<f32, D> for LendVisit<'_> {
    type Viewer = ViewTensorRef;
    type Err = OpError;
    type E2 = f32;
    type D2 = D;

    fn visit<S: Shape>(
        &mut self,
        opts: TensorOptions<S, f32, D>,
        t: &Tensor<S, f32, D>,
    ) -> Result<Option<Tensor<S, f32, D>>, OpError> {
        if opts.do_gradient_update {
            if let Some(t) = (t as &dyn Any).downcast_ref::<Tensor<S, f32, Cpu>>() {
                self.out.push((t.shape().num_elements(), crate::ready::lend_of(t)));
            }
        }
        Ok(None)
    }
}

/// Lenders of the gradients of `model`'s trainable tensors (CPU tensors; none elsewhere), with
/// their lengths, in visiting order.
pub(crate) fn grad_lends<D: Device<f32>, M: TensorCollection<f32, D>>(model: &M) -> Vec<(usize, crate::ready::Lend)> {
    let mut out = Vec::new();
    // The visitor itself never fails.
    let _ = M::iter_tensors(&mut RecursiveWalker { m: model, f: &mut LendVisit { out: &mut out } });
    out
}

/// What [`walk_grads`] does with each trainable tensor: gets its slot and its gradient, in place.
pub type GradMutFn<'f, E> = dyn FnMut(Slot<'_>, &mut [f32]) -> Result<(), E> + 'f;

struct GradWalk<'h, 'f, D: Device<f32>, E> {
    f: &'h mut GradMutFn<'f, E>,
    grads: &'h mut Gradients<f32, D>,
}

impl<D: Device<f32>, E: From<OpError>> TensorVisitor<f32, D> for GradWalk<'_, '_, D, E> {
    type Viewer = (ViewTensorName, ViewTensorRef);
    type Err = E;
    type E2 = f32;
    type D2 = D;

    fn visit<S: Shape>(
        &mut self,
        opts: TensorOptions<S, f32, D>,
        (name, t): (String, &Tensor<S, f32, D>),
    ) -> Result<Option<Tensor<S, f32, D>>, E> {
        if opts.do_gradient_update {
            let grads = (&mut *self.grads as &mut dyn Any).downcast_mut::<Gradients<f32, Cpu>>();
            let (Some(grads), Some(t)) = (grads, (t as &dyn Any).downcast_ref::<Tensor<S, f32, Cpu>>()) else {
                return Err(OpError::config("walk_grads", "gradients are walked in place on the CPU only").into());
            };
            let shape = shape_of(t.shape());
            let g: &mut [f32] = grads.get_or_alloc_mut(t).map_err(OpError::device)?;
            (self.f)(Slot { name: &name, shape: &shape, trainable: true }, g)?;
        }
        Ok(None)
    }
}

/// Walks the gradient held in `grads` of every trainable tensor of `model` in place (allocated
/// as zeros for a tensor none has reached yet), named as in [`visit_tensors`]: on the CPU, where
/// the gradient is host memory (elsewhere an error).
pub fn walk_grads<D: Device<f32>, M: TensorCollection<f32, D>, E: From<OpError>>(
    model: &M,
    grads: &mut Gradients<f32, D>,
    prefix: &str,
    f: &mut GradMutFn<'_, E>,
) -> Result<(), E> {
    let mut visit = GradWalk { f, grads };
    M::iter_tensors(&mut RecursiveWalker { m: (prefix.to_string(), model), f: &mut visit })?;
    Ok(())
}

/// A gradient in GPU memory, lent by [`walk_cuda_grads`].
#[cfg(feature = "cuda")]
pub type CudaGradMutFn<'f, E> = dyn FnMut(Slot<'_>, &mut cudarc::driver::CudaSlice<f32>) -> Result<(), E> + 'f;

#[cfg(feature = "cuda")]
struct CudaGradWalk<'h, 'f, D: Device<f32>, E> {
    f: &'h mut CudaGradMutFn<'f, E>,
    grads: &'h mut Gradients<f32, D>,
}

#[cfg(feature = "cuda")]
impl<D: Device<f32>, E: From<OpError>> TensorVisitor<f32, D> for CudaGradWalk<'_, '_, D, E> {
    type Viewer = (ViewTensorName, ViewTensorRef);
    type Err = E;
    type E2 = f32;
    type D2 = D;

    fn visit<S: Shape>(
        &mut self,
        opts: TensorOptions<S, f32, D>,
        (name, t): (String, &Tensor<S, f32, D>),
    ) -> Result<Option<Tensor<S, f32, D>>, E> {
        use dfdx::prelude::Cuda;
        if opts.do_gradient_update {
            let grads = (&mut *self.grads as &mut dyn Any).downcast_mut::<Gradients<f32, Cuda>>();
            let (Some(grads), Some(t)) = (grads, (t as &dyn Any).downcast_ref::<Tensor<S, f32, Cuda>>()) else {
                return Err(OpError::config("walk_cuda_grads", "gradients of a model on another device").into());
            };
            let shape = shape_of(t.shape());
            // dfdx's CUDA storage dereferences to cudarc's slice.
            let g: &mut cudarc::driver::CudaSlice<f32> = grads.get_or_alloc_mut(t).map_err(OpError::device)?;
            (self.f)(Slot { name: &name, shape: &shape, trainable: true }, g)?;
        }
        Ok(None)
    }
}

/// [`walk_grads`] in GPU memory: the gradient of every trainable tensor of `model` (on dfdx's
/// `Cuda`), allocated as zeros where none has arrived yet, lent in place as cudarc's slice — for
/// NCCL, which all-reduces device memory (`siamlab_world::nccl`).
#[cfg(feature = "cuda")]
pub fn walk_cuda_grads<D: Device<f32>, M: TensorCollection<f32, D>, E: From<OpError>>(
    model: &M,
    grads: &mut Gradients<f32, D>,
    prefix: &str,
    f: &mut CudaGradMutFn<'_, E>,
) -> Result<(), E> {
    let mut visit = CudaGradWalk { f, grads };
    M::iter_tensors(&mut RecursiveWalker { m: (prefix.to_string(), model), f: &mut visit })?;
    Ok(())
}

/// Every tensor of `model`, in visiting order (the order of the PyTorch `state_dict`, less
/// BatchNorm's `num_batches_tracked` counters).
///
/// ```
/// use dfdx::prelude::*;
/// use siamlab_model::backbones::ResNet18CifarTiny;
/// use siamlab_model::named_tensors;
/// let net = ResNet18CifarTiny::build(&Cpu::default());
/// let names = named_tensors(&net);
/// assert_eq!(names[0].name, "conv1.weight");
/// assert!(names.iter().any(|t| t.name == "layer2.0.downsample.1.running_var" && !t.trainable));
/// ```
pub fn named_tensors<D: Device<f32>, M: TensorCollection<f32, D>>(model: &M) -> Vec<NamedTensor> {
    let mut names = Vec::new();
    let walked = visit_tensors::<D, M, std::convert::Infallible>(model, "", &mut |s, _| {
        names.push(NamedTensor { name: s.name.to_string(), shape: s.shape.to_vec(), trainable: s.trainable });
        Ok(())
    });
    match walked {
        Ok(()) => names,
        Err(never) => match never {},
    }
}
