//! The process world of a data-parallel siamlab run and the collectives its trainer needs:
//! a [`World`] (this process's rank, the number of ranks, the rank on this machine) with
//! all-reduce sums, broadcast from rank 0, barrier and abort.
//!
//! The collectives come from a [`Collectives`] backend that the program hands in
//! ([`World::with_backend`]): the `siamlab` binary built with its `mpi` feature and launched by
//! `mpirun` / `srun` brings MPI's (Open MPI or MPICH from the system packages). This crate itself
//! links no MPI, so the trainer that depends on it is built once whichever backend the binary
//! has. [`World::init_single`] is the single process — and refuses, in one line, a launch by
//! `mpirun` or `srun` with more than one task, which would otherwise train N unrelated copies of
//! the run. The crate knows nothing of models or data: [`buckets`] cuts a flat gradient buffer
//! into the all-reduces of one optimizer step. With the `nccl` feature, GPU ranks average their
//! gradients in GPU memory ([`nccl`], [`World::join_gpus`]); the world's backend carries NCCL's
//! unique id.
//!
//! ```
//! let world = siamlab_world::World::single();
//! let mut grads = vec![1.0f32, 2.0];
//! world.all_reduce_sum(&mut grads).unwrap();
//! assert_eq!((world.rank(), world.size(), grads), (0, 1, vec![1.0, 2.0]));
//! ```
#![deny(missing_docs)]

pub mod buckets;
mod launch;
#[cfg(feature = "nccl")]
pub mod nccl;

use std::rc::Rc;

pub use buckets::{all_reduce_mean, Buckets, BUCKET_BYTES};
pub use launch::launcher_tasks;

/// What went wrong with the world.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Launched as several tasks by a build that cannot join them.
    #[error(
        "launched as {tasks} tasks by {launcher}, but this siamlab was built without MPI: rebuild with \
         `--features mpi` (each task would otherwise train its own copy of the run)"
    )]
    NoMpi {
        /// Tasks the launcher started.
        tasks: usize,
        /// The environment variable that told.
        launcher: &'static str,
    },
    /// MPI could not be initialised (already initialised in this process, or no launcher).
    #[error("MPI could not be initialised: {0}")]
    Init(String),
    /// Buffers of different lengths across ranks, or another misuse of a collective.
    #[error("collective {op}: {msg}")]
    Collective {
        /// The collective.
        op: &'static str,
        /// What was wrong.
        msg: String,
    },
}

/// A result of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The collectives of a communication backend (MPI's, in the `siamlab` binary's `mpi` build).
/// Every rank calls the same collectives in the same order with buffers of equal lengths.
pub trait Collectives {
    /// The backend's name, for messages (`"mpi"`).
    fn name(&self) -> &'static str;
    /// Every rank's `buf` summed element-wise, into every rank's `buf`.
    fn all_reduce_sum(&self, buf: &mut [f32]) -> Result<()>;
    /// [`all_reduce_sum`](Self::all_reduce_sum) in f64.
    fn all_reduce_sum_f64(&self, buf: &mut [f64]) -> Result<()>;
    /// Rank 0's `buf` into every rank's `buf`.
    fn broadcast(&self, buf: &mut [f32]) -> Result<()>;
    /// Starts summing every rank's `buf` (as [`all_reduce_sum`](Self::all_reduce_sum)) and
    /// returns at once where the backend can (MPI's non-blocking all-reduce); the sum comes
    /// from [`Pending::wait`]. Every rank starts the same reductions in the same order. The
    /// default reduces before returning.
    fn start_all_reduce_sum(&self, mut buf: Vec<f32>) -> Result<Box<dyn Pending>> {
        self.all_reduce_sum(&mut buf)?;
        Ok(Box::new(Done(buf)))
    }
    /// [`broadcast`](Self::broadcast) of bytes (an id, a message).
    fn broadcast_bytes(&self, buf: &mut [u8]) -> Result<()>;
    /// Waits until every rank has arrived.
    fn barrier(&self);
    /// Ends every rank of the run with exit status `code`.
    fn abort(&self, code: i32) -> !;
    /// The same ranks on a communicator of their own (collectives on it never interleave with
    /// this one's).
    fn duplicate(&self) -> Rc<dyn Collectives>;
}

/// An all-reduce under way ([`Collectives::start_all_reduce_sum`]).
pub trait Pending {
    /// Lets the backend move the reduction on (MPI progresses non-blocking collectives inside
    /// its calls); whether it has finished.
    fn poll(&mut self) -> Result<bool>;
    /// Waits for the reduction: the element-wise sum over the ranks.
    fn wait(self: Box<Self>) -> Result<Vec<f32>>;
}

/// A reduction that finished before it was handed out.
struct Done(Vec<f32>);

impl Pending for Done {
    fn poll(&mut self) -> Result<bool> {
        Ok(true)
    }
    fn wait(self: Box<Self>) -> Result<Vec<f32>> {
        Ok(self.0)
    }
}

/// The processes of one run: this one's rank among `size`, and its rank on this machine (the
/// GPU it would use).
#[derive(Clone)]
pub struct World {
    rank: usize,
    size: usize,
    local_rank: usize,
    /// `None`: the single process.
    comm: Option<Rc<dyn Collectives>>,
    /// NCCL on this rank's GPU, once joined ([`World::join_gpus`]).
    #[cfg(feature = "nccl")]
    gpu: Option<Rc<nccl::Nccl>>,
}

impl std::fmt::Debug for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let backend = self.comm.as_ref().map_or("single", |c| c.name());
        write!(
            f,
            "World {{ rank: {}, size: {}, local_rank: {}, backend: {backend} }}",
            self.rank, self.size, self.local_rank
        )
    }
}

impl World {
    /// The single process: rank 0 of 1, collectives that leave buffers as they are.
    pub fn single() -> World {
        World {
            rank: 0,
            size: 1,
            local_rank: 0,
            comm: None,
            #[cfg(feature = "nccl")]
            gpu: None,
        }
    }

    /// The single process of a build without a backend — or, when a launcher
    /// ([`launcher_tasks`]) started several tasks, an error saying that this build cannot join
    /// them.
    pub fn init_single() -> Result<World> {
        match launcher_tasks() {
            Some((launcher, tasks)) if tasks > 1 => Err(Error::NoMpi { tasks, launcher }),
            _ => Ok(World::single()),
        }
    }

    /// Rank `rank` of `size` (`local_rank` on its machine) over `comm`.
    pub fn with_backend(rank: usize, size: usize, local_rank: usize, comm: Rc<dyn Collectives>) -> Result<World> {
        if rank >= size {
            return Err(Error::Collective { op: "init", msg: format!("rank {rank} of a world of {size}") });
        }
        Ok(World {
            rank,
            size,
            local_rank,
            comm: Some(comm),
            #[cfg(feature = "nccl")]
            gpu: None,
        })
    }

    /// This process's rank, `0..size`.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// The number of ranks.
    pub fn size(&self) -> usize {
        self.size
    }

    /// The rank among the processes on this machine (a GPU run uses `cuda:<local rank>`).
    pub fn local_rank(&self) -> usize {
        self.local_rank
    }

    /// Whether this is rank 0, the one that writes the run's files.
    pub fn is_root(&self) -> bool {
        self.rank == 0
    }

    /// Every rank's `buf` summed element-wise, into every rank's `buf` (equal lengths).
    pub fn all_reduce_sum(&self, buf: &mut [f32]) -> Result<()> {
        self.comm.as_ref().map_or(Ok(()), |c| c.all_reduce_sum(buf))
    }

    /// [`all_reduce_sum`](Self::all_reduce_sum) in f64 (statistics that must not lose digits).
    pub fn all_reduce_sum_f64(&self, buf: &mut [f64]) -> Result<()> {
        self.comm.as_ref().map_or(Ok(()), |c| c.all_reduce_sum_f64(buf))
    }

    /// Starts summing every rank's `buf` ([`Collectives::start_all_reduce_sum`]); the single
    /// process's sum is `buf`.
    pub fn start_all_reduce_sum(&self, buf: Vec<f32>) -> Result<Box<dyn Pending>> {
        match &self.comm {
            Some(c) => c.start_all_reduce_sum(buf),
            None => Ok(Box::new(Done(buf))),
        }
    }

    /// Rank 0's `buf` into every rank's `buf` (equal lengths).
    pub fn broadcast(&self, buf: &mut [f32]) -> Result<()> {
        self.comm.as_ref().map_or(Ok(()), |c| c.broadcast(buf))
    }

    /// Rank 0's bytes into every rank's `buf` (equal lengths).
    pub fn broadcast_bytes(&self, buf: &mut [u8]) -> Result<()> {
        self.comm.as_ref().map_or(Ok(()), |c| c.broadcast_bytes(buf))
    }

    /// This world with NCCL joined on GPU `ordinal` (each rank its local rank's): every rank
    /// calls it at the same point. The single process needs no NCCL and stays as it is.
    #[cfg(feature = "nccl")]
    pub fn join_gpus(&self, ordinal: usize) -> Result<World> {
        if self.size == 1 {
            return Ok(self.clone());
        }
        Ok(World { gpu: Some(Rc::new(nccl::Nccl::join(self, ordinal)?)), ..self.clone() })
    }

    /// NCCL on this rank's GPU, when joined.
    #[cfg(feature = "nccl")]
    pub fn gpu(&self) -> Option<&nccl::Nccl> {
        self.gpu.as_deref()
    }

    /// Waits until every rank has arrived.
    pub fn barrier(&self) {
        if let Some(c) = &self.comm {
            c.barrier()
        }
    }

    /// Ends every rank of the run with exit status `code` (a failed rank must not leave the
    /// others waiting in a collective); the single process just exits.
    pub fn abort(&self, code: i32) -> ! {
        match &self.comm {
            Some(c) => c.abort(code),
            None => std::process::exit(code),
        }
    }

    /// The same ranks on a communicator of their own (collectives on it never interleave with
    /// this one's): synchronized BatchNorm's.
    pub fn split_off(&self) -> World {
        World { comm: self.comm.as_ref().map(|c| c.duplicate()), ..self.clone() }
    }
}
