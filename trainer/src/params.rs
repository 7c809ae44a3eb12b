//! Walking a model's tensors by their PyTorch `state_dict` names, reading and writing their
//! values on the host (checkpoints, `backbone.safetensors`), through one dfdx tensor visitor.
//! (The optimizer walks the same tensors on their device: [`crate::optim::Optimizer::step_module`].)

use std::path::Path;

use dfdx::nn::tensor_collection::{
    RecursiveWalker, TensorCollection, TensorOptions, TensorVisitor, ViewTensorMut, ViewTensorName, ViewTensorRef,
};
use dfdx::prelude::*;

use crate::error::{write_atomic, Error, IoContext, Result};

/// A tensor met on the walk.
#[derive(Debug)]
pub struct Slot<'a> {
    /// Its `state_dict` key.
    pub name: &'a str,
    /// Its shape.
    pub shape: &'a [usize],
    /// A parameter (`true`) or a buffer such as BatchNorm's running mean (`false`).
    pub trainable: bool,
}

/// What to do with each tensor: gets a host copy of its values, written back when the
/// function returns `true`.
pub type TensorFn<'f> = dyn FnMut(Slot<'_>, &mut Vec<f32>) -> Result<bool> + 'f;

struct Walk<'f, 'h> {
    f: &'h mut TensorFn<'f>,
}

impl<D: Device<f32>> TensorVisitor<f32, D> for Walk<'_, '_> {
    type Viewer = (ViewTensorName, ViewTensorMut);
    type Err = Error;
    type E2 = f32;
    type D2 = D;

    fn visit<S: Shape>(
        &mut self,
        opts: TensorOptions<S, f32, D>,
        (name, t): (String, &mut Tensor<S, f32, D>),
    ) -> Result<Option<Tensor<S, f32, D>>> {
        let shape: Vec<usize> = t.shape().concrete().into_iter().collect();
        let mut values = t.as_vec();
        if (self.f)(Slot { name: &name, shape: &shape, trainable: opts.do_gradient_update }, &mut values)? {
            t.copy_from(&values);
        }
        Ok(None)
    }
}

/// Walks every tensor of `model` as a module named `prefix` (names `{prefix}.{field}…`, or
/// without the prefix when it is empty).
pub fn walk<D: Device<f32>, M: TensorCollection<f32, D>>(
    model: &mut M,
    prefix: &str,
    f: &mut TensorFn<'_>,
) -> Result<()> {
    let mut walk = Walk { f };
    M::iter_tensors(&mut RecursiveWalker { m: (prefix.to_string(), model), f: &mut walk })?;
    Ok(())
}

struct GradWalk<'g, D: Device<f32>> {
    grads: &'g mut Gradients<f32, D>,
    out: &'g mut StateDict,
}

impl<D: Device<f32>> TensorVisitor<f32, D> for GradWalk<'_, D> {
    type Viewer = (ViewTensorName, ViewTensorRef);
    type Err = Error;
    type E2 = f32;
    type D2 = D;

    fn visit<S: Shape>(
        &mut self,
        opts: TensorOptions<S, f32, D>,
        (name, t): (String, &Tensor<S, f32, D>),
    ) -> Result<Option<Tensor<S, f32, D>>> {
        if opts.do_gradient_update {
            self.grads.try_alloc_for(t).map_err(|e| Error::Model(siamlab_model::OpError::device(e)))?;
            let shape: Vec<usize> = t.shape().concrete().into_iter().collect();
            self.out.insert(name, (shape, self.grads.get(t).as_vec()));
        }
        Ok(None)
    }
}

/// The gradient held in `grads` for every trainable tensor of `model` (zeros where none has
/// accumulated), under the tensor's name prefixed with `prefix`, added to `out`.
pub fn collect_grads<D: Device<f32>, M: TensorCollection<f32, D>>(
    model: &M,
    grads: &mut Gradients<f32, D>,
    prefix: &str,
    out: &mut StateDict,
) -> Result<()> {
    let mut walk = GradWalk { grads, out };
    M::iter_tensors(&mut RecursiveWalker { m: (prefix.to_string(), model), f: &mut walk })?;
    Ok(())
}

/// Tensors by name, as read from or written to a safetensors file (the model crate's type).
pub use siamlab_model::weights::StateDict;

/// Writes `tensors` as an f32 safetensors file, atomically.
pub fn save_safetensors(path: &Path, tensors: &StateDict) -> Result<()> {
    let bytes: Vec<Vec<u8>> =
        tensors.values().map(|(_, data)| data.iter().flat_map(|x| x.to_le_bytes()).collect()).collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .zip(&bytes)
        .map(|((name, (shape, _)), bytes)| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes)
                .map(|v| (name.clone(), v))
                .map_err(|e| Error::bad_file(path, format!("tensor {name}: {e}")))
        })
        .collect::<Result<_>>()?;
    let bytes = safetensors::serialize(views, &None).map_err(|e| Error::bad_file(path, e.to_string()))?;
    write_atomic(path, &bytes)
}

/// Reads a safetensors file: F32 tensors as they are, F64 / F16 / BF16 converted to f32 (PyTorch
/// users save half-precision weights too); integer and boolean tensors (torchvision's int64
/// `num_batches_tracked` counters) are skipped.
pub fn load_safetensors(path: &Path) -> Result<StateDict> {
    use safetensors::Dtype;
    let bytes = std::fs::read(path).at(path)?;
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| Error::bad_file(path, e.to_string()))?;
    let mut out = StateDict::new();
    for (name, view) in st.tensors() {
        let raw = view.data();
        let data: Vec<f32> = match view.dtype() {
            Dtype::F32 => raw.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
            Dtype::F64 => raw
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32)
                .collect(),
            Dtype::BF16 => {
                raw.chunks_exact(2).map(|c| f32::from_bits(u32::from(u16::from_le_bytes([c[0], c[1]])) << 16)).collect()
            }
            Dtype::F16 => raw.chunks_exact(2).map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]]))).collect(),
            _ => continue,
        };
        out.insert(name, (view.shape().to_vec(), data));
    }
    Ok(out)
}

/// IEEE half precision to f32 (exact).
fn f16_to_f32(h: u16) -> f32 {
    let sign = if h & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exp = i32::from((h >> 10) & 0x1F);
    let frac = f32::from(h & 0x3FF);
    sign * match exp {
        0 => frac * 2f32.powi(-24),
        31 if frac == 0.0 => f32::INFINITY,
        31 => f32::NAN,
        _ => (1.0 + frac / 1024.0) * 2f32.powi(exp - 15),
    }
}

/// The state of `model` (names prefixed with `prefix`) added to `out`.
pub fn collect<D: Device<f32>, M: TensorCollection<f32, D>>(
    model: &mut M,
    prefix: &str,
    out: &mut StateDict,
) -> Result<()> {
    walk(model, prefix, &mut |slot, values| {
        out.insert(slot.name.to_string(), (slot.shape.to_vec(), std::mem::take(values)));
        Ok(false)
    })
}

/// Loads `model` (names prefixed with `prefix`) from `dict`, which must hold every tensor with
/// the same shape; `file` names the source in errors.
pub fn restore<D: Device<f32>, M: TensorCollection<f32, D>>(
    model: &mut M,
    prefix: &str,
    dict: &StateDict,
    file: &Path,
) -> Result<()> {
    walk(model, prefix, &mut |slot, values| restore_one(slot, values, dict, file))
}

pub(crate) fn restore_one(slot: Slot<'_>, values: &mut [f32], dict: &StateDict, file: &Path) -> Result<bool> {
    let (shape, data) = dict
        .get(slot.name)
        .ok_or_else(|| Error::bad_file(file, format!("has no tensor {} (the model does not match)", slot.name)))?;
    if shape.as_slice() != slot.shape {
        return Err(Error::bad_file(
            file,
            format!(
                "tensor {} has shape {:?}, the model expects {:?} (the model does not match)",
                slot.name, shape, slot.shape
            ),
        ));
    }
    values.copy_from_slice(data);
    Ok(true)
}
