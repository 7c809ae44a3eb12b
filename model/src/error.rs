//! Typed errors of the model layer.

use dfdx::tensor::CpuError;

/// What went wrong in an op of this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpError {
    /// The configuration of an op does not fit the shapes it is given.
    #[error("{op}: {reason}")]
    InvalidConfig {
        /// The op that refused its arguments, e.g. `conv2d`.
        op: &'static str,
        /// What does not fit, with the values involved.
        reason: String,
    },
    /// The device failed (allocation, a CUDA driver or cuBLAS error), in the device's words.
    #[error("device error: {0}")]
    Device(String),
}

impl From<CpuError> for OpError {
    fn from(err: CpuError) -> Self {
        OpError::Device(format!("{err:?}"))
    }
}

#[cfg(feature = "cuda")]
impl From<dfdx::tensor::CudaError> for OpError {
    fn from(err: dfdx::tensor::CudaError) -> Self {
        OpError::Device(format!("{err:?}"))
    }
}

impl OpError {
    /// A device error (any device's error type) in its `Debug` words.
    pub fn device(err: impl std::fmt::Debug) -> Self {
        OpError::Device(format!("{err:?}"))
    }

    pub(crate) fn config(op: &'static str, reason: impl Into<String>) -> Self {
        OpError::InvalidConfig { op, reason: reason.into() }
    }
}
