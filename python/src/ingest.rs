//! `siamlab.ingest`: `siamlab ingest` for Python, with the same options, defaults, recorded
//! arguments (so either recognises the other's complete output) and one-line errors.

use std::path::PathBuf;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use siamlab_datasets::sources::{RandomSpec, ShapesSpec, SourceSpec};
use siamlab_datasets::{ingest as run_ingest, IngestOptions};

use crate::errors;

/// Converts a source dataset into a shard folder, as `siamlab ingest SOURCE --src SRC --out
/// OUT ...` does; returns the manifest as JSON text (the Python wrapper parses it).
#[pyfunction]
#[pyo3(signature = (source, src=None, *, out, shard_size_mb=256.0, resize=None, jobs=None, overwrite=false,
    skip_bad=false, test_count=None, count=None, size=None, seed=None, mean=None, std=None))]
#[allow(clippy::too_many_arguments)]
pub fn ingest(
    py: Python<'_>,
    source: &str,
    src: Option<PathBuf>,
    out: PathBuf,
    shard_size_mb: f64,
    resize: Option<u32>,
    jobs: Option<usize>,
    overwrite: bool,
    skip_bad: bool,
    test_count: Option<u64>,
    count: Option<u64>,
    size: Option<u32>,
    seed: Option<u64>,
    mean: Option<f64>,
    std: Option<f64>,
) -> PyResult<String> {
    if !(shard_size_mb > 0.0 && shard_size_mb.is_finite()) {
        return Err(PyValueError::new_err("shard_size_mb must be a positive number"));
    }
    siamlab_datasets::decode::check_resize(resize).map_err(errors::data)?;
    // The CLI's defaults, so that the recorded arguments are the CLI's.
    let (r, s) = (RandomSpec::default(), ShapesSpec::default());
    let spec = SourceSpec {
        kind: source,
        src: src.as_deref(),
        count: Some(count.unwrap_or(r.count)),
        test_count: Some(test_count.unwrap_or(s.test)),
        size: Some(size.unwrap_or(r.size)),
        seed: Some(seed.unwrap_or(r.seed)),
        mean: Some(mean.unwrap_or(r.mean)),
        std: Some(std.unwrap_or(r.std)),
    };
    spec.check().map_err(errors::data)?;
    let arguments = siamlab_datasets::ingest::recorded_arguments(&spec, shard_size_mb, resize, skip_bad);
    let manifest = py
        .detach(|| {
            if let Some(m) = siamlab_datasets::ingest::prepare_out(&out, overwrite, &arguments)? {
                return Ok(m);
            }
            let opts = IngestOptions {
                out: out.clone(),
                shard_bytes: (shard_size_mb * 1024.0 * 1024.0) as u64,
                resize,
                jobs: jobs.unwrap_or(0),
                overwrite,
                skip_bad,
                arguments: arguments.clone(),
                progress: None,
                on_shard: None,
            };
            Ok(run_ingest(spec.open()?, &opts)?.manifest().clone())
        })
        .map_err(errors::data)?;
    serde_json::to_string(&manifest).map_err(|e| errors::Error::new_err(format!("manifest: {e}")))
}
