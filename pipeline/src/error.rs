//! The pipeline's error type.

/// Result alias for the pipeline.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong while building or running a pipeline.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading the manifest or a shard failed.
    #[error(transparent)]
    Data(#[from] siamlab_datasets::Error),
    /// An augmentation was misconfigured.
    #[error(transparent)]
    Augment(#[from] crate::augment::Error),
    /// A row's image does not decode.
    #[error("{shard}: row {row}: image does not decode: {msg}")]
    Decode {
        /// The shard file.
        shard: String,
        /// Row within the shard.
        row: u64,
        /// Decoder message.
        msg: String,
    },
    /// Invalid builder settings.
    #[error("{0}")]
    Config(String),
    /// A worker panicked; the message is re-raised as a panic by the blocking iterator.
    #[error("pipeline worker panicked: {0}")]
    Panic(String),
}
