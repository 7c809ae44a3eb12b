//! The element-wise sum of a small tensor over every process of a data-parallel run, as a
//! differentiable op on any device: synchronized BatchNorm composed of dfdx ops (what runs on
//! GPUs) takes its statistics through it. Forward, the values go through the host to the run's
//! [`StatsReducer`]; backward, the output's gradient is summed the same way and added to the
//! input's — every process's loss depends on the common sum, so each input's gradient is the
//! sum of every process's gradient of it (PyTorch's `SyncBatchNorm` all-reduces the same two
//! per-channel sums in its backward pass).
//!
//! The values are a few per channel, so the host round trip is small; it does wait for the
//! device's queued work, once per BatchNorm and direction.

use std::any::Any;
use std::rc::Rc;

use dfdx::prelude::*;

use crate::{OpError, StatsReducer};

/// The backward pass on one concrete device: the output's gradient summed over the processes
/// and added to the input's. Both gradients are allocated before it runs.
type Back<D> = Box<dyn FnOnce(&mut Gradients<f32, D>)>;

/// `t` summed over every process by `r`, with `extra` host values summed in the same call
/// (laid before `t`'s: `[extra…, t…]`, replaced by their sums). Backward, the output's gradient
/// summed over every process is added to `t`'s. Needs `f32` on the CPU, or on CUDA in the
/// `cuda` build.
pub(crate) fn ranks_sum<const C: usize, E: Dtype, D: Device<E>, T: Tape<E, D>>(
    t: Tensor<Rank1<C>, E, D, T>,
    r: &Rc<dyn StatsReducer>,
    extra: &mut [f64],
) -> Result<Tensor<Rank1<C>, E, D, T>, OpError> {
    let (t, mut tape) = t.split_tape();
    let k = extra.len();
    let mut host: Vec<f64> = extra
        .iter()
        .copied()
        .chain(t.as_vec().into_iter().map(|v| v.to_f64().expect("a float converts to f64")))
        .collect();
    r.sum(&mut host);
    extra.copy_from_slice(&host[..k]);
    let sums: Vec<E> = host[k..].iter().map(|&v| E::from_f64(v).expect("f64 converts to a float type")).collect();
    let out = t.device().try_tensor_from_vec(sums, (Const::<C>,)).map_err(OpError::device)?;
    let back_cpu = cpu_back(&t, &out, r);
    #[cfg(feature = "cuda")]
    let back_cuda = cuda_back(&t, &out, r);
    #[cfg(not(feature = "cuda"))]
    let back_cuda: Option<()> = None;
    if back_cpu.is_none() && back_cuda.is_none() {
        return Err(OpError::config("batch_norm", "synchronized BatchNorm needs f32 on the CPU or on CUDA"));
    }
    if T::OWNS_TAPE {
        let (tg, og) = (t.ghost(), out.ghost());
        tape.add_backward_op(move |grads| {
            grads.try_alloc_for(&tg)?;
            grads.try_alloc_for(&og)?;
            let any = grads as &mut dyn Any;
            if let (Some(g), Some(back)) = (any.downcast_mut::<Gradients<f32, Cpu>>(), back_cpu) {
                back(g);
                return Ok(());
            }
            #[cfg(feature = "cuda")]
            if let (Some(g), Some(back)) = (any.downcast_mut::<Gradients<f32, Cuda>>(), back_cuda) {
                back(g);
            }
            Ok(())
        });
    }
    Ok(out.put_tape(tape))
}

/// [`ranks_sum`]'s backward when `t` and `out` are `f32` tensors on the CPU.
fn cpu_back<const C: usize, E: Dtype, D: Device<E>>(
    t: &Tensor<Rank1<C>, E, D>,
    out: &Tensor<Rank1<C>, E, D>,
    r: &Rc<dyn StatsReducer>,
) -> Option<Back<Cpu>> {
    let t = (t as &dyn Any).downcast_ref::<Tensor<Rank1<C>, f32, Cpu>>()?;
    let out = (out as &dyn Any).downcast_ref::<Tensor<Rank1<C>, f32, Cpu>>()?;
    let (tg, og, r) = (t.ghost(), out.ghost(), r.clone());
    Some(Box::new(move |grads: &mut Gradients<f32, Cpu>| {
        let mut g: Vec<f64> = match grads.get_or_alloc_mut(&og) {
            Ok(g) => g.iter().map(|&v| v as f64).collect(),
            Err(e) => r.fail(&format!("synchronized BatchNorm: {e}")),
        };
        r.sum(&mut g);
        match grads.get_or_alloc_mut(&tg) {
            Ok(d) => d.iter_mut().zip(&g).for_each(|(d, &s)| *d += s as f32),
            Err(e) => r.fail(&format!("synchronized BatchNorm: {e}")),
        }
    }))
}

/// [`ranks_sum`]'s backward when `t` and `out` are `f32` tensors on CUDA: the output's
/// gradient to the host, summed, added to the input's in GPU memory (synchronous copies on the
/// device's stream, after the backward ops queued before). A failed copy ends the run on
/// every process ([`StatsReducer::fail`]).
#[cfg(feature = "cuda")]
fn cuda_back<const C: usize, E: Dtype, D: Device<E>>(
    t: &Tensor<Rank1<C>, E, D>,
    out: &Tensor<Rank1<C>, E, D>,
    r: &Rc<dyn StatsReducer>,
) -> Option<Back<Cuda>> {
    let t = (t as &dyn Any).downcast_ref::<Tensor<Rank1<C>, f32, Cuda>>()?;
    let out = (out as &dyn Any).downcast_ref::<Tensor<Rank1<C>, f32, Cuda>>()?;
    let (tg, og, r) = (t.ghost(), out.ghost(), r.clone());
    Some(Box::new(move |grads: &mut Gradients<f32, Cuda>| {
        let fail = |e: &dyn std::fmt::Debug| -> ! { r.fail(&format!("synchronized BatchNorm on CUDA: {e:?}")) };
        // dfdx's CUDA storage dereferences to cudarc's slice.
        let g = match grads.get_or_alloc_mut(&og) {
            Ok(g) => {
                let g: &mut cudarc::driver::CudaSlice<f32> = g;
                g.device().dtoh_sync_copy(&*g).unwrap_or_else(|e| fail(&e))
            }
            Err(e) => fail(&e),
        };
        let mut sum: Vec<f64> = g.iter().map(|&v| v as f64).collect();
        r.sum(&mut sum);
        let d: &mut cudarc::driver::CudaSlice<f32> = match grads.get_or_alloc_mut(&tg) {
            Ok(d) => d,
            Err(e) => fail(&e),
        };
        let dev = d.device();
        let mut here = dev.dtoh_sync_copy(&*d).unwrap_or_else(|e| fail(&e));
        here.iter_mut().zip(&sum).for_each(|(h, &s)| *h += s as f32);
        dev.htod_sync_copy_into(&here, d).unwrap_or_else(|e| fail(&e));
    }))
}
