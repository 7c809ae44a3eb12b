//! The MPI backend of the data-parallel world (the `mpi` build): the `mpi` crate over the
//! system's Open MPI or MPICH, behind [`siamlab_world::Collectives`].

use std::rc::Rc;

use mpi::collective::{CommunicatorCollectives, Root, SystemOperation};
use mpi::environment::Universe;
use mpi::topology::{Communicator, SimpleCommunicator};
use siamlab_world::{launcher_tasks, Collectives, Error, Result, World};

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
