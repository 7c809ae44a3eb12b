//! Zero-copy NumPy arrays over a batch's buffers. Every array of a batch is a NumPy view of a
//! [`BatchBuffer`], which exports one of the batch's buffers through the buffer protocol and
//! shares ownership of the [`siamlab_pipeline::Batch`]: when Python releases the last array
//! (and the last `torch.from_numpy` tensor made from one), the batch drops and its buffers go
//! back to the pipeline's pool.

use std::ffi::{c_int, c_void, CStr};
use std::sync::Arc;

use pyo3::exceptions::PyBufferError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use siamlab_pipeline::Batch;

/// One array of a batch: where it lies and how to read it.
#[pyclass(module = "siamlab", frozen)]
pub struct BatchBuffer {
    /// Keeps the batch, hence the memory `ptr` points into, alive.
    _owner: Arc<Batch>,
    ptr: *mut c_void,
    itemsize: isize,
    format: &'static CStr,
    shape: Vec<isize>,
    strides: Vec<isize>,
}

// SAFETY: `ptr` points into a heap buffer owned by `_owner` (an `Arc<Batch>`, itself Send +
// Sync); nothing in Rust reads or writes that memory while a `BatchBuffer` exists (the batch
// was handed over whole), so sharing the pointer between threads is as safe as sharing the
// batch. Python code that writes into the arrays from several threads races like with any
// NumPy array.
unsafe impl Send for BatchBuffer {}
unsafe impl Sync for BatchBuffer {}

#[pymethods]
impl BatchBuffer {
    unsafe fn __getbuffer__(slf: Bound<'_, Self>, view: *mut ffi::Py_buffer, flags: c_int) -> PyResult<()> {
        if view.is_null() {
            return Err(PyBufferError::new_err("View is null"));
        }
        let me = slf.get();
        let len = me.shape.iter().product::<isize>() * me.itemsize;
        // SAFETY: `view` is a valid Py_buffer (checked non-null; CPython passes one); the
        // pointers stored in it (data, shape, strides, format) live as long as `slf`, which
        // the view holds a reference to (`obj`).
        unsafe {
            (*view).buf = me.ptr;
            (*view).len = len;
            (*view).readonly = 0;
            (*view).itemsize = me.itemsize;
            (*view).format = if flags & ffi::PyBUF_FORMAT == ffi::PyBUF_FORMAT {
                me.format.as_ptr() as *mut _
            } else {
                std::ptr::null_mut()
            };
            (*view).ndim = me.shape.len() as c_int;
            (*view).shape =
                if flags & ffi::PyBUF_ND == ffi::PyBUF_ND { me.shape.as_ptr() as *mut _ } else { std::ptr::null_mut() };
            (*view).strides = if flags & ffi::PyBUF_STRIDES == ffi::PyBUF_STRIDES {
                me.strides.as_ptr() as *mut _
            } else {
                std::ptr::null_mut()
            };
            (*view).suboffsets = std::ptr::null_mut();
            (*view).internal = std::ptr::null_mut();
            (*view).obj = slf.into_any().into_ptr();
        }
        Ok(())
    }

    unsafe fn __releasebuffer__(&self, _view: *mut ffi::Py_buffer) {}
}

fn c_strides(shape: &[usize], itemsize: usize) -> Vec<isize> {
    let mut strides = vec![itemsize as isize; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1] * shape[i + 1] as isize;
    }
    strides
}

/// The NumPy arrays of a batch, sharing its memory.
pub struct Arrays {
    /// `[B, 3, H, W]` float32 per view.
    pub views: Vec<Py<PyAny>>,
    /// `[B]` int64.
    pub labels: Py<PyAny>,
    /// `[B, A]` int8, or `None` when the dataset has no attributes.
    pub attributes: Option<Py<PyAny>>,
    /// `[B]` int64.
    pub indices: Py<PyAny>,
}

/// Wraps `batch`'s buffers in NumPy arrays without copying.
pub fn wrap(py: Python<'_>, mut batch: Batch) -> PyResult<Arrays> {
    static ASARRAY: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let asarray = ASARRAY.import(py, "numpy", "asarray")?;
    let (n, shape, n_attr) = (batch.len(), batch.shape, batch.num_attributes);
    // Pointers into the heap buffers; they stay put when the batch moves into the Arc.
    let parts = batch.parts_mut();
    let views: Vec<*mut c_void> = parts.views.into_iter().map(|v| v.as_mut_ptr().cast()).collect();
    let labels = parts.labels.as_mut_ptr().cast::<c_void>();
    let attributes = parts.attributes.as_mut_ptr().cast::<c_void>();
    let indices = parts.indices.as_mut_ptr().cast::<c_void>();
    let owner = Arc::new(batch);
    let array = |ptr: *mut c_void, format: &'static CStr, itemsize: usize, shape: &[usize]| -> PyResult<Py<PyAny>> {
        let buf = BatchBuffer {
            _owner: owner.clone(),
            ptr,
            itemsize: itemsize as isize,
            format,
            shape: shape.iter().map(|&d| d as isize).collect(),
            strides: c_strides(shape, itemsize),
        };
        Ok(asarray.call1((Bound::new(py, buf)?,))?.unbind())
    };
    Ok(Arrays {
        views: views.into_iter().map(|p| array(p, c"f", 4, &shape)).collect::<PyResult<_>>()?,
        labels: array(labels, c"q", 8, &[n])?,
        attributes: if n_attr > 0 { Some(array(attributes, c"b", 1, &[n, n_attr])?) } else { None },
        indices: array(indices, c"q", 8, &[n])?,
    })
}
