//! Walking a model's tensors by their PyTorch `state_dict` names, reading and writing their
//! values on the host (checkpoints, `backbone.safetensors`), through one dfdx tensor visitor.
//! (The optimizer walks the same tensors on their device: [`crate::optim::Optimizer::step_module`].)

use std::path::Path;

use dfdx::nn::tensor_collection::TensorCollection;
use dfdx::prelude::*;

use crate::error::{Error, IoContext, Result};
use crate::run::files::write_atomic;

/// A tensor met on the walk (the model crate's: [`siamlab_model::Slot`]).
pub use siamlab_model::Slot;

/// What to do with each tensor: gets a host copy of its values, written back when the
/// function returns `true` ([`siamlab_model::TensorFn`] with the trainer's error).
pub type TensorFn<'f> = siamlab_model::TensorFn<'f, Error>;

/// Walks every tensor of `model` as a module named `prefix` (names `{prefix}.{field}…`, or
/// without the prefix when it is empty): [`siamlab_model::walk_tensors`].
pub fn walk<D: Device<f32>, M: TensorCollection<f32, D>>(
    model: &mut M,
    prefix: &str,
    f: &mut TensorFn<'_>,
) -> Result<()> {
    siamlab_model::walk_tensors(model, prefix, f)
}

/// The gradient held in `grads` for every trainable tensor of `model` (zeros where none has
/// accumulated), under the tensor's name prefixed with `prefix`, added to `out`
/// ([`siamlab_model::visit_grads`]).
pub fn collect_grads<D: Device<f32>, M: TensorCollection<f32, D>>(
    model: &M,
    grads: &mut Gradients<f32, D>,
    prefix: &str,
    out: &mut StateDict,
) -> Result<()> {
    siamlab_model::visit_grads::<D, M, Error>(model, grads, prefix, &mut |s, g| {
        out.insert(s.name.to_string(), (s.shape.to_vec(), g));
        Ok(())
    })
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

/// Puts the tensor `slot` of `dict` (read from `file`, named in errors) into `values`: it must
/// be there with the same shape.
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
