//! `siamlab._native`: the Rust half of the `siamlab` Python package (PyO3). It wraps
//! [`siamlab_pipeline::Pipeline`] as `siamlab.Pipeline`, an iterable of batches whose arrays
//! are NumPy views of the pipeline's own buffers, and `siamlab_datasets::ingest` as
//! `siamlab.ingest`. The pure-Python half (`siamlab/`) re-exports these and adds the optional
//! PyTorch wrapper. Nothing here holds logic of its own beyond argument mapping: batches are
//! exactly the Rust pipeline's.

mod arrays;
mod errors;
mod ingest;
mod pipeline;

use pyo3::prelude::*;

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("Error", m.py().get_type::<errors::Error>())?;
    m.add_class::<pipeline::Pipeline>()?;
    m.add_class::<pipeline::EpochIterator>()?;
    m.add_class::<pipeline::Batch>()?;
    m.add_class::<arrays::BatchBuffer>()?;
    m.add_function(wrap_pyfunction!(ingest::ingest, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
