//! Rust errors as Python exceptions: invalid settings raise `ValueError`, everything else
//! `siamlab.Error`, each with the library's one-line message (it names the file and the row).

use pyo3::exceptions::{PyException, PyValueError};
use pyo3::PyErr;

pyo3::create_exception!(
    siamlab,
    Error,
    PyException,
    "A data error: a missing or corrupt shard, an image that does not decode, a bad source archive. The message names the file and, where there is one, the row or record."
);

/// A pipeline error met while running, as a Python exception.
pub fn pipeline(e: siamlab_pipeline::Error) -> PyErr {
    match e {
        siamlab_pipeline::Error::Config(msg) => PyValueError::new_err(msg),
        siamlab_pipeline::Error::Data(e) => data(e),
        e => Error::new_err(e.to_string()),
    }
}

/// A pipeline error met while configuring it (an unknown recipe is a bad argument).
pub fn config(e: siamlab_pipeline::Error) -> PyErr {
    match e {
        siamlab_pipeline::Error::Augment(e) => PyValueError::new_err(e.to_string()),
        e => pipeline(e),
    }
}

/// A datasets error as a Python exception.
pub fn data(e: siamlab_datasets::Error) -> PyErr {
    match e {
        siamlab_datasets::Error::Usage(msg) => PyValueError::new_err(msg),
        e => Error::new_err(e.to_string()),
    }
}
