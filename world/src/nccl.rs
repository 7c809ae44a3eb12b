//! NCCL on GPU ranks: the gradients of a data-parallel step averaged in GPU memory, as PyTorch
//! DDP's NCCL backend does, instead of through the host.
//!
//! NCCL's communicator needs a unique id that one rank draws and the others receive by some
//! other channel: rank 0 draws it and sends it over the world's backend (MPI), then every rank
//! joins on its GPU (`cuda:<local rank>`). The all-reduces run on the device's default stream,
//! after the work already queued there (dfdx's kernels run on that stream too), and one NCCL
//! group holds all of a step's tensors so NCCL fuses them.

use std::ffi::c_int;
use std::mem::MaybeUninit;
use std::sync::Arc;

use cudarc::driver::{CudaDevice, CudaSlice, DevicePtrMut, DeviceSlice};
use cudarc::nccl::{result, sys};

use crate::{Error, Result, World};

/// A gradient buffer in GPU memory, handed to [`Nccl::average`]'s visitor.
pub type DeviceGradFn<'a, E> = dyn FnMut(&mut CudaSlice<f32>) -> std::result::Result<(), E> + 'a;

/// This rank's NCCL communicator over the ranks of a [`World`], on one GPU.
pub struct Nccl {
    comm: sys::ncclComm_t,
    ranks: usize,
    /// The GPU's primary context stays retained while the communicator lives.
    _device: Arc<CudaDevice>,
}

impl std::fmt::Debug for Nccl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Nccl {{ ranks: {} }}", self.ranks)
    }
}

fn nccl_err(call: &'static str) -> impl Fn(result::NcclError) -> Error {
    move |e| Error::Collective { op: "nccl", msg: format!("{call} failed: {:?}", e.0) }
}

impl Nccl {
    /// Joins the ranks of `world` on GPU `ordinal` (this rank's local rank): rank 0 draws the
    /// unique id and broadcasts it over `world`; every rank calls this at the same point.
    pub fn join(world: &World, ordinal: usize) -> Result<Nccl> {
        let device = CudaDevice::new(ordinal)
            .map_err(|e| Error::Collective { op: "nccl", msg: format!("cuda:{ordinal}: {e:?}") })?;
        let mut id = [0u8; 128];
        if world.is_root() {
            let uid = result::get_uniqueid().map_err(nccl_err("ncclGetUniqueId"))?;
            id.iter_mut().zip(uid.internal).for_each(|(d, s)| *d = s as u8);
        }
        world.broadcast_bytes(&mut id)?;
        let uid = sys::ncclUniqueId { internal: id.map(|b| b as std::ffi::c_char) };
        let mut comm = MaybeUninit::uninit();
        // SAFETY: `comm` is written by NCCL on success and read only then.
        let comm = unsafe {
            result::comm_init_rank(comm.as_mut_ptr(), world.size() as c_int, uid, world.rank() as c_int)
                .map_err(nccl_err("ncclCommInitRank"))?;
            comm.assume_init()
        };
        Ok(Nccl { comm, ranks: world.size(), _device: device })
    }

    /// Every buffer `visit` hands out replaced by its element-wise mean over the ranks, in
    /// place (each rank must hand out buffers of the same lengths in the same order); returns
    /// the bytes all-reduced. The all-reduces are queued as one group on the default stream;
    /// what reads the buffers afterwards on that stream sees the means.
    pub fn average<E: From<Error>>(
        &self,
        visit: &mut dyn FnMut(&mut DeviceGradFn<'_, E>) -> std::result::Result<(), E>,
    ) -> std::result::Result<usize, E> {
        let mut bytes = 0usize;
        result::group_start().map_err(nccl_err("ncclGroupStart"))?;
        let queued = visit(&mut |buf: &mut CudaSlice<f32>| -> std::result::Result<(), E> {
            let n = buf.len();
            let ptr = *buf.device_ptr_mut() as *mut std::ffi::c_void;
            // SAFETY: in place (send = receive buffer, which NCCL allows) on a live device
            // allocation of `n` floats that the caller keeps alive until the stream has run
            // the group (the gradients outlive the step); the null stream is the device's
            // default stream, where dfdx queued the work that wrote them.
            unsafe {
                result::all_reduce(
                    ptr,
                    ptr,
                    n,
                    sys::ncclDataType_t::ncclFloat32,
                    sys::ncclRedOp_t::ncclAvg,
                    self.comm,
                    std::ptr::null_mut(),
                )
            }
            .map_err(nccl_err("ncclAllReduce"))?;
            bytes += n * size_of::<f32>();
            Ok(())
        });
        // The group is closed whatever happened inside it.
        let ended = result::group_end().map_err(nccl_err("ncclGroupEnd"));
        queued?;
        ended?;
        Ok(bytes)
    }
}

impl Drop for Nccl {
    fn drop(&mut self) {
        // SAFETY: the communicator was initialised in `join` and is destroyed once.
        let _ = unsafe { result::comm_destroy(self.comm) };
    }
}
