//! The trainer's error type: one line that names the file, the split or the step.

use std::path::{Path, PathBuf};

/// What went wrong in a run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading or writing a file of the run.
    #[error("{}: {err}", file.display())]
    Io {
        /// The file.
        file: PathBuf,
        /// The cause (kept out of the error chain: the message already has it, and a chain
        /// printed cause by cause would say it twice).
        err: std::io::Error,
    },
    /// A run file (config, state, weights) that does not parse or does not fit.
    #[error("{}: {msg}", file.display())]
    BadFile {
        /// The file.
        file: PathBuf,
        /// What is wrong.
        msg: String,
    },
    /// A configuration that cannot run.
    #[error("{0}")]
    Config(String),
    /// A name that is none of the choices (`--optimizer`, `--device`; their `FromStr`).
    #[error("unknown {what} {name:?}: use {choices}")]
    UnknownChoice {
        /// What was named: `optimizer`, `device`.
        what: &'static str,
        /// The name given.
        name: String,
        /// The choices, in words: `adam or sgd`.
        choices: &'static str,
    },
    /// The data: missing shards or split, a corrupt row.
    #[error(transparent)]
    Pipeline(#[from] siamlab_pipeline::Error),
    /// The dataset's manifest.
    #[error(transparent)]
    Dataset(#[from] siamlab_datasets::Error),
    /// An op of the model (not a `#[from]` source: the message already has it).
    #[error("model: {0}")]
    Model(siamlab_model::OpError),
    /// The processes of a data-parallel run.
    #[error(transparent)]
    World(#[from] siamlab_world::Error),
    /// The loss became NaN or infinite.
    #[error("loss is {value} at epoch {epoch}, step {step}; stopped (the last good checkpoint is kept)")]
    NonFinite {
        /// The loss.
        value: f32,
        /// Epoch.
        epoch: u64,
        /// Optimizer step.
        step: u64,
    },
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A bad file with a message.
    pub fn bad_file(file: impl AsRef<Path>, msg: impl Into<String>) -> Self {
        Error::BadFile { file: file.as_ref().to_path_buf(), msg: msg.into() }
    }
    /// A configuration error.
    pub fn config(msg: impl Into<String>) -> Self {
        Error::Config(msg.into())
    }
}

/// Adds the file to an I/O error.
pub(crate) trait IoContext<T> {
    fn at(self, file: impl AsRef<Path>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, file: impl AsRef<Path>) -> Result<T> {
        self.map_err(|err| Error::Io { file: file.as_ref().to_path_buf(), err })
    }
}

impl From<siamlab_model::OpError> for Error {
    fn from(e: siamlab_model::OpError) -> Self {
        Error::Model(e)
    }
}

impl From<dfdx::tensor::CpuError> for Error {
    fn from(e: dfdx::tensor::CpuError) -> Self {
        Error::Model(e.into())
    }
}

#[cfg(feature = "cuda")]
impl From<dfdx::tensor::CudaError> for Error {
    fn from(e: dfdx::tensor::CudaError) -> Self {
        Error::Model(e.into())
    }
}
