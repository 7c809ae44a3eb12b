//! The model's tensors by name, in the PyTorch `state_dict` spelling the layers use
//! (`layer1.0.conv1.weight`, `blocks.3.attn.qkv.bias`): what weight import/export matches on.

use dfdx::nn::tensor_collection::{
    RecursiveWalker, TensorCollection, TensorOptions, TensorVisitor, ViewTensorName, ViewTensorRef,
};
use dfdx::prelude::{Device, HasShape, Shape, Tensor};

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

struct Names(Vec<NamedTensor>);

impl<D: Device<f32>> TensorVisitor<f32, D> for Names {
    type Viewer = (ViewTensorName, ViewTensorRef);
    type Err = std::convert::Infallible;
    type E2 = f32;
    type D2 = D;

    fn visit<S: Shape>(
        &mut self,
        opts: TensorOptions<S, f32, D>,
        (name, t): (String, &Tensor<S, f32, D>),
    ) -> Result<Option<Tensor<S, f32, D>>, Self::Err> {
        let shape = t.shape().concrete().into_iter().collect();
        self.0.push(NamedTensor { name, shape, trainable: opts.do_gradient_update });
        Ok(None)
    }
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
    let mut names = Names(Vec::new());
    let walked = M::iter_tensors(&mut RecursiveWalker { m: (String::new(), model), f: &mut names });
    match walked {
        Ok(_) => names.0,
        Err(never) => match never {},
    }
}
