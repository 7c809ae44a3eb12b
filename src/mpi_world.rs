//! The MPI backend of the data-parallel world (the `mpi` build): the `mpi` crate over the
//! system's Open MPI or MPICH, behind [`siamlab_world::Collectives`].

use std::rc::Rc;

use mpi::collective::{CommunicatorCollectives, Root, SystemOperation};
use mpi::environment::Universe;
use mpi::raw::AsRaw;
use mpi::topology::{Communicator, SimpleCommunicator};
use siamlab_world::{launcher_tasks, Collectives, Error, Pending, Result, World};

/// A communicator and the MPI environment it needs (finalised when the last one is dropped;
/// fields drop in order, the communicator first).
struct MpiComm {
    comm: SimpleCommunicator,
    _universe: Rc<Universe>,
}

/// The world this process was launched into: MPI's when a launcher ([`launcher_tasks`])
/// started it, else the single process (an MPI build started by hand needs no MPI singleton).
pub fn init() -> Result<World> {
    if launcher_tasks().is_none() {
        return Ok(World::single());
    }
    let universe =
        mpi::initialize().ok_or_else(|| Error::Init("MPI was initialised already in this process".into()))?;
    let comm = universe.world();
    let (rank, size) = (comm.rank() as usize, comm.size() as usize);
    let local_rank = comm.split_shared(comm.rank()).rank() as usize;
    World::with_backend(rank, size, local_rank, Rc::new(MpiComm { comm, _universe: Rc::new(universe) }))
}

impl Collectives for MpiComm {
    fn name(&self) -> &'static str {
        "mpi"
    }

    fn all_reduce_sum(&self, buf: &mut [f32]) -> Result<()> {
        let send = buf.to_vec();
        self.comm.all_reduce_into(&send[..], buf, SystemOperation::sum());
        Ok(())
    }

    fn all_reduce_sum_f64(&self, buf: &mut [f64]) -> Result<()> {
        let send = buf.to_vec();
        self.comm.all_reduce_into(&send[..], buf, SystemOperation::sum());
        Ok(())
    }

    fn start_all_reduce_sum(&self, buf: Vec<f32>) -> Result<Box<dyn Pending>> {
        let count = i32::try_from(buf.len())
            .map_err(|_| Error::Collective { op: "all-reduce", msg: format!("{} values in one bucket", buf.len()) })?;
        let mut p = MpiPending {
            send: buf,
            recv: vec![0.0; count as usize],
            request: unsafe { mpi::ffi::RSMPI_REQUEST_NULL },
            _comm: self.clone_handle(),
        };
        // SAFETY: both buffers are heap memory owned by `p` and untouched until the request
        // completes (`wait`, `poll` or `drop`, which waits); moving `p` does not move them.
        let rc = unsafe {
            mpi::ffi::MPI_Iallreduce(
                p.send.as_ptr().cast(),
                p.recv.as_mut_ptr().cast(),
                count,
                mpi::ffi::RSMPI_FLOAT,
                mpi::ffi::RSMPI_SUM,
                self.comm.as_raw(),
                &mut p.request,
            )
        };
        check("all-reduce", rc)?;
        Ok(Box::new(p))
    }

    fn broadcast(&self, buf: &mut [f32]) -> Result<()> {
        self.comm.process_at_rank(0).broadcast_into(buf);
        Ok(())
    }

    fn broadcast_bytes(&self, buf: &mut [u8]) -> Result<()> {
        self.comm.process_at_rank(0).broadcast_into(buf);
        Ok(())
    }

    fn barrier(&self) {
        self.comm.barrier();
    }

    fn abort(&self, code: i32) -> ! {
        self.comm.abort(code)
    }

    fn duplicate(&self) -> Rc<dyn Collectives> {
        Rc::new(MpiComm { comm: self.comm.duplicate(), _universe: self._universe.clone() })
    }
}

impl MpiComm {
    /// The environment, kept alive while a reduction is under way.
    fn clone_handle(&self) -> Rc<Universe> {
        self._universe.clone()
    }
}

/// An MPI error code as this crate's error.
fn check(op: &'static str, rc: i32) -> Result<()> {
    if rc == mpi::ffi::MPI_SUCCESS as i32 {
        Ok(())
    } else {
        Err(Error::Collective { op, msg: format!("MPI error code {rc}") })
    }
}

/// A non-blocking all-reduce (`MPI_Iallreduce`) and the buffers it reads and writes.
struct MpiPending {
    send: Vec<f32>,
    recv: Vec<f32>,
    request: mpi::ffi::MPI_Request,
    /// MPI stays initialised until the request is done.
    _comm: Rc<Universe>,
}

impl MpiPending {
    fn done(&self) -> bool {
        self.request == unsafe { mpi::ffi::RSMPI_REQUEST_NULL }
    }
}

impl Pending for MpiPending {
    fn poll(&mut self) -> Result<bool> {
        if self.done() {
            return Ok(true);
        }
        let mut flag = 0;
        // SAFETY: a live request of this struct; MPI sets it to MPI_REQUEST_NULL once complete.
        let rc = unsafe { mpi::ffi::MPI_Test(&mut self.request, &mut flag, mpi::ffi::RSMPI_STATUS_IGNORE) };
        check("all-reduce", rc)?;
        Ok(flag != 0)
    }

    fn wait(mut self: Box<Self>) -> Result<Vec<f32>> {
        if !self.done() {
            // SAFETY: as in `poll`.
            let rc = unsafe { mpi::ffi::MPI_Wait(&mut self.request, mpi::ffi::RSMPI_STATUS_IGNORE) };
            check("all-reduce", rc)?;
        }
        Ok(std::mem::take(&mut self.recv))
    }
}

impl Drop for MpiPending {
    fn drop(&mut self) {
        if !self.done() {
            // The buffers must outlive the reduction that writes them.
            // SAFETY: as in `poll`.
            unsafe { mpi::ffi::MPI_Wait(&mut self.request, mpi::ffi::RSMPI_STATUS_IGNORE) };
        }
    }
}
