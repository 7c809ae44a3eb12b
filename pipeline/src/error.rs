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
    #[error("{shard}: row {row}: image does not decode: {err}")]
    Decode {
        /// The shard file.
        shard: String,
        /// Row within the shard.
        row: u64,
        /// Why (not a `source`: the message already has it).
        err: siamlab_datasets::decode::DecodeError,
    },
    /// Invalid builder settings.
    #[error("{0}")]
    Config(String),
    /// A row's label is not one of the manifest's classes.
    #[error("{shard}: row {row}: label {label} is not a class of this dataset (0..{classes})")]
    Label {
        /// The shard file.
        shard: String,
        /// Row within the shard.
        row: u64,
        /// The label read.
        label: i64,
        /// Number of classes in the manifest.
        classes: usize,
    },
    /// A row without a class label where one is required ([`crate::PipelineBuilder::require_labels`]).
    #[error("{shard}: row {row}: no label (unlabeled rows cannot train or evaluate a classifier)")]
    Unlabeled {
        /// The shard file.
        shard: String,
        /// Row within the shard.
        row: u64,
    },
    /// A stage panicked (a bug): every consumer receives it as this error, never as a panic of
    /// its own thread, and the pipeline then ends.
    #[error("pipeline {stage} stage panicked: {msg}")]
    Panic {
        /// The stage: `read` or `decode/augment`.
        stage: &'static str,
        /// The panic's message.
        msg: String,
    },
}

impl Error {
    /// The error for a panic payload caught in `stage`.
    pub(crate) fn panic(stage: &'static str, payload: &(dyn std::any::Any + Send)) -> Self {
        let msg = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        Error::Panic { stage, msg }
    }
}
