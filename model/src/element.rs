//! The element types the CPU kernels run on (`f32`, `f64`), with their GEMM and a per-thread pool
//! of scratch buffers so the hot path does not allocate once warm.

use std::cell::RefCell;
use std::ops::{Deref, DerefMut};
use std::thread::LocalKey;

use dfdx::prelude::{Cpu, ReshapeTo, Shape, Tape, Tensor};
use dfdx::tensor::CpuError;

/// A floating-point element type the ops of this crate support on [`Cpu`]: `f32` and `f64`.
///
/// Sealed: implemented for `f32` (training) and `f64` (gradient checks) only.
pub trait Element:
    dfdx::dtypes::Dtype + num_traits::Float + num_traits::FromPrimitive + std::iter::Sum + Send + Sync + sealed::Sealed
{
    #[doc(hidden)]
    fn pool() -> &'static LocalKey<RefCell<Vec<Vec<Self>>>>;

    /// Makes `t` physically contiguous (a no-op when it already is), keeping its tape.
    #[doc(hidden)]
    fn contiguous<S: Shape, T: Tape<Self, Cpu>>(
        t: Tensor<S, Self, Cpu, T>,
    ) -> Result<Tensor<S, Self, Cpu, T>, CpuError>;
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
}

thread_local! {
    static POOL_F32: RefCell<Vec<Vec<f32>>> = const { RefCell::new(Vec::new()) };
    static POOL_F64: RefCell<Vec<Vec<f64>>> = const { RefCell::new(Vec::new()) };
}

macro_rules! impl_element {
    ($t:ty, $pool:ident) => {
        impl Element for $t {
            fn pool() -> &'static LocalKey<RefCell<Vec<Vec<Self>>>> {
                &$pool
            }
            fn contiguous<S: Shape, T: Tape<Self, Cpu>>(
                t: Tensor<S, Self, Cpu, T>,
            ) -> Result<Tensor<S, Self, Cpu, T>, CpuError> {
                t.try_contiguous()
            }
        }
    };
}
impl_element!(f32, POOL_F32);
impl_element!(f64, POOL_F64);

/// Buffers kept per thread; more than this and the smallest is dropped.
const POOL_KEEP: usize = 6;
/// Bytes kept per thread and element type; a buffer alone larger than this is freed.
const POOL_BYTES: usize = 256 << 20;

/// A scratch buffer borrowed from the calling thread's pool; it goes back there when dropped
/// (at most [`POOL_KEEP`] buffers and [`POOL_BYTES`] bytes stay per thread and type).
/// Its contents are unspecified when handed out (callers overwrite or [`Scratch::zeroed`]).
pub(crate) struct Scratch<E: Element> {
    buf: Vec<E>,
}

impl<E: Element> Scratch<E> {
    /// A buffer of `len` elements with unspecified contents.
    pub(crate) fn with_len(len: usize) -> Self {
        let mut buf = E::pool()
            .try_with(|p| {
                let mut p = p.borrow_mut();
                // Best fit: the smallest buffer that is large enough, else the largest.
                let pick = p
                    .iter()
                    .enumerate()
                    .filter(|(_, b)| b.capacity() >= len)
                    .min_by_key(|(_, b)| b.capacity())
                    .or_else(|| p.iter().enumerate().max_by_key(|(_, b)| b.capacity()))
                    .map(|(i, _)| i);
                pick.map(|i| p.swap_remove(i))
            })
            .ok()
            .flatten()
            .unwrap_or_default();
        if buf.len() > len {
            buf.truncate(len);
        } else {
            buf.resize(len, E::zero());
        }
        Scratch { buf }
    }

    /// A buffer of `len` zeros.
    pub(crate) fn zeroed(len: usize) -> Self {
        let mut s = Self::with_len(len);
        s.buf.fill(E::zero());
        s
    }

    /// A buffer holding a copy of the (contiguous) data of `t`.
    pub(crate) fn copy_of<S: Shape, T>(t: &Tensor<S, E, Cpu, T>) -> Self {
        use dfdx::prelude::HasShape;
        let mut s = Self::with_len(t.shape().num_elements());
        t.copy_into(&mut s.buf);
        s
    }
}

impl<E: Element> Drop for Scratch<E> {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.buf);
        if buf.capacity() == 0 {
            return;
        }
        let bytes = |b: &Vec<E>| b.capacity() * std::mem::size_of::<E>();
        if bytes(&buf) > POOL_BYTES {
            return;
        }
        let _ = E::pool().try_with(|p| {
            if let Ok(mut p) = p.try_borrow_mut() {
                p.push(buf);
                while p.len() > POOL_KEEP || p.iter().map(bytes).sum::<usize>() > POOL_BYTES {
                    let smallest = p.iter().enumerate().min_by_key(|(_, b)| b.capacity()).map(|(i, _)| i).unwrap_or(0);
                    p.swap_remove(smallest);
                }
            }
        });
    }
}

impl<E: Element> Deref for Scratch<E> {
    type Target = [E];
    fn deref(&self) -> &[E] {
        &self.buf
    }
}

impl<E: Element> DerefMut for Scratch<E> {
    fn deref_mut(&mut self) -> &mut [E] {
        &mut self.buf
    }
}

/// A row-major or transposed view of a matrix for [`matmul`]: element `(i, j)` lives at
/// `data[i * rs + j * cs]`.
pub(crate) struct Mat<'a, E, D = &'a [E]> {
    pub data: D,
    pub rs: usize,
    pub cs: usize,
    _elem: std::marker::PhantomData<&'a E>,
}

impl<E, D: Copy> Clone for Mat<'_, E, D> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<E, D: Copy> Copy for Mat<'_, E, D> {}

impl<'a, E, D> Mat<'a, E, D> {
    /// Element `(i, j)` at `data[i * rs + j * cs]`.
    pub(crate) fn strided(data: D, rs: usize, cs: usize) -> Self {
        Mat { data, rs, cs, _elem: std::marker::PhantomData }
    }
}

impl<'a, E> Mat<'a, E> {
    /// Row-major `rows × cols` matrix.
    pub(crate) fn rows(data: &'a [E], cols: usize) -> Self {
        Mat::strided(data, cols, 1)
    }
    /// The transpose of a row-major matrix with `cols` columns.
    pub(crate) fn transposed(data: &'a [E], cols: usize) -> Self {
        Mat::strided(data, 1, cols)
    }
}

/// `dst (m × n, row-major) (+)= a (m × k) · b (k × n)`; accumulates when `accumulate`.
/// `parallel` lets gemm split the work over the rayon pool (for calls not already inside one).
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul<E: Element>(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [E],
    accumulate: bool,
    a: Mat<'_, E>,
    b: Mat<'_, E>,
    parallel: bool,
) {
    matmul_strided(m, n, k, Mat::strided(dst, n, 1), accumulate, a, b, parallel)
}

/// [`matmul`] into a strided destination: element `(i, j)` of the product goes to
/// `dst.data[i * dst.rs + j * dst.cs]` (e.g. a transposed row-major matrix).
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul_strided<E: Element>(
    m: usize,
    n: usize,
    k: usize,
    dst: Mat<'_, E, &mut [E]>,
    accumulate: bool,
    a: Mat<'_, E>,
    b: Mat<'_, E>,
    parallel: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    let Mat { data: dst, rs: dst_rs, cs: dst_cs, .. } = dst;
    assert!(dst.len() > (m - 1) * dst_rs + (n - 1) * dst_cs, "matmul: dst too small");
    if k > 0 {
        assert!(a.data.len() > (m - 1) * a.rs + (k - 1) * a.cs, "matmul: lhs too small");
        assert!(b.data.len() > (k - 1) * b.rs + (n - 1) * b.cs, "matmul: rhs too small");
    }
    let par = if parallel { gemm::Parallelism::Rayon(rayon::current_num_threads()) } else { gemm::Parallelism::None };
    // SAFETY: the asserts above keep every index gemm touches inside the slices; `dst` is
    // borrowed mutably so it does not alias `a` or `b`; E is f32 or f64, both gemm types.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            dst_cs as isize,
            dst_rs as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            E::one(),
            E::one(),
            false,
            false,
            false,
            par,
        )
    }
}
