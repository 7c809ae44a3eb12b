//! The MPI backend of [`World`]: the `mpi` crate over the system's Open MPI or MPICH.

use std::rc::Rc;

use mpi::collective::{CommunicatorCollectives, Root, SystemOperation};
use mpi::environment::Universe;
use mpi::topology::{Communicator, SimpleCommunicator};

use crate::{Comm, Error, Result, World};

/// A communicator and the MPI environment it needs (finalised when the last one is dropped;
/// fields drop in order, the communicator first).
pub(crate) struct MpiComm {
    comm: SimpleCommunicator,
    _universe: Rc<Universe>,
}

impl MpiComm {
    pub(crate) fn init() -> Result<World> {
        let universe =
            mpi::initialize().ok_or_else(|| Error::Init("MPI was initialised already in this process".into()))?;
        let comm = universe.world();
        let (rank, size) = (comm.rank() as usize, comm.size() as usize);
        let local_rank = comm.split_shared(comm.rank()).rank() as usize;
        let comm = MpiComm { comm, _universe: Rc::new(universe) };
        Ok(World { rank, size, local_rank, comm: Comm::Mpi(Rc::new(comm)) })
    }

    pub(crate) fn duplicate(&self) -> MpiComm {
        MpiComm { comm: self.comm.duplicate(), _universe: self._universe.clone() }
    }

    pub(crate) fn all_reduce_sum(&self, buf: &mut [f32]) -> Result<()> {
        let send = buf.to_vec();
        self.comm.all_reduce_into(&send[..], buf, SystemOperation::sum());
        Ok(())
    }

    pub(crate) fn all_reduce_sum_f64(&self, buf: &mut [f64]) -> Result<()> {
        let send = buf.to_vec();
        self.comm.all_reduce_into(&send[..], buf, SystemOperation::sum());
        Ok(())
    }

    pub(crate) fn broadcast(&self, buf: &mut [f32]) -> Result<()> {
        self.comm.process_at_rank(0).broadcast_into(buf);
        Ok(())
    }

    pub(crate) fn barrier(&self) {
        self.comm.barrier();
    }

    pub(crate) fn abort(&self, code: i32) -> ! {
        self.comm.abort(code)
    }
}
