//! The process world of a data-parallel siamlab run and the collectives its trainer needs:
//! a [`World`] (this process's rank, the number of ranks, the rank on this machine) with
//! all-reduce sums, broadcast from rank 0, barrier and abort.
//!
//! Built with the `mpi` cargo feature and launched by `mpirun` / `srun`, the world is MPI's
//! (Open MPI or MPICH from the system packages). Without it, [`World::init`] is the single
//! process — and refuses, in one line, a launch by `mpirun` or `srun` with more than one task,
//! which would otherwise train N unrelated copies of the run. NCCL for GPUs is planned behind the
//! same face. The crate knows nothing of models or data: [`buckets`] cuts a flat gradient
//! buffer into the all-reduces of one optimizer step.
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
#[cfg(feature = "mpi")]
mod mpi_comm;

#[cfg(feature = "mpi")]
use std::rc::Rc;

pub use buckets::{all_reduce_mean, BUCKET_BYTES};
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

/// The processes of one run: this one's rank among `size`, and its rank on this machine (the
/// GPU it would use).
#[derive(Clone)]
pub struct World {
    rank: usize,
    size: usize,
    local_rank: usize,
    comm: Comm,
}

#[derive(Clone)]
enum Comm {
    Single,
    #[cfg(feature = "mpi")]
    Mpi(Rc<mpi_comm::MpiComm>),
}

impl std::fmt::Debug for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let backend = match self.comm {
            Comm::Single => "single",
            #[cfg(feature = "mpi")]
            Comm::Mpi(_) => "mpi",
        };
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
        World { rank: 0, size: 1, local_rank: 0, comm: Comm::Single }
    }

    /// The world this process was launched into: MPI's when built with the `mpi` feature and
    /// started by a launcher ([`launcher_tasks`]), else the single process — and, without the
    /// feature, an error when a launcher started several tasks. Call once per process.
    pub fn init() -> Result<World> {
        #[cfg(feature = "mpi")]
        {
            // Started by hand, an MPI build is the single process too (no MPI singleton).
            match launcher_tasks() {
                Some(_) => mpi_comm::MpiComm::init(),
                None => Ok(World::single()),
            }
        }
        #[cfg(not(feature = "mpi"))]
        {
            match launcher_tasks() {
                Some((launcher, tasks)) if tasks > 1 => Err(Error::NoMpi { tasks, launcher }),
                _ => Ok(World::single()),
            }
        }
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
    #[cfg_attr(not(feature = "mpi"), allow(unused_variables))]
    pub fn all_reduce_sum(&self, buf: &mut [f32]) -> Result<()> {
        match &self.comm {
            Comm::Single => Ok(()),
            #[cfg(feature = "mpi")]
            Comm::Mpi(c) => c.all_reduce_sum(buf),
        }
    }

    /// [`all_reduce_sum`](Self::all_reduce_sum) in f64 (statistics that must not lose digits).
    #[cfg_attr(not(feature = "mpi"), allow(unused_variables))]
    pub fn all_reduce_sum_f64(&self, buf: &mut [f64]) -> Result<()> {
        match &self.comm {
            Comm::Single => Ok(()),
            #[cfg(feature = "mpi")]
            Comm::Mpi(c) => c.all_reduce_sum_f64(buf),
        }
    }

    /// Rank 0's `buf` into every rank's `buf` (equal lengths).
    #[cfg_attr(not(feature = "mpi"), allow(unused_variables))]
    pub fn broadcast(&self, buf: &mut [f32]) -> Result<()> {
        match &self.comm {
            Comm::Single => Ok(()),
            #[cfg(feature = "mpi")]
            Comm::Mpi(c) => c.broadcast(buf),
        }
    }

    /// Waits until every rank has arrived.
    pub fn barrier(&self) {
        match &self.comm {
            Comm::Single => {}
            #[cfg(feature = "mpi")]
            Comm::Mpi(c) => c.barrier(),
        }
    }

    /// Ends every rank of the run with exit status `code` (a failed rank must not leave the
    /// others waiting in a collective); the single process just exits.
    pub fn abort(&self, code: i32) -> ! {
        match &self.comm {
            Comm::Single => std::process::exit(code),
            #[cfg(feature = "mpi")]
            Comm::Mpi(c) => c.abort(code),
        }
    }

    /// The same ranks on a communicator of their own (collectives on it never interleave with
    /// this one's): synchronized BatchNorm's.
    pub fn split_off(&self) -> World {
        match &self.comm {
            Comm::Single => self.clone(),
            #[cfg(feature = "mpi")]
            Comm::Mpi(c) => World { comm: Comm::Mpi(Rc::new(c.duplicate())), ..self.clone() },
        }
    }
}
