//! The element types the CPU kernels run on (`f32`, `f64`), with their GEMM and a per-thread pool
//! of scratch buffers so the hot path does not allocate once warm.

use std::cell::RefCell;
use std::mem::MaybeUninit;
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

    /// The error function: for `f32` a branch-free approximation that vectorizes (absolute
    /// error below 1e-6, [`erf_f32`]), for `f64` libm's `erf` (gradient checks need it exact).
    #[doc(hidden)]
    fn erf(self) -> Self;

    /// `e^x`: for `f32` a branch-free version that vectorizes (relative error below 3e-7,
    /// [`exp_f32`]), for `f64` the standard library's.
    #[doc(hidden)]
    fn exp_fast(self) -> Self;
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
    ($t:ty, $pool:ident, $erf:path, $exp:path) => {
        impl Element for $t {
            fn pool() -> &'static LocalKey<RefCell<Vec<Vec<Self>>>> {
                &$pool
            }
            fn contiguous<S: Shape, T: Tape<Self, Cpu>>(
                t: Tensor<S, Self, Cpu, T>,
            ) -> Result<Tensor<S, Self, Cpu, T>, CpuError> {
                t.try_contiguous()
            }
            #[inline(always)]
            fn erf(self) -> Self {
                $erf(self)
            }
            #[inline(always)]
            fn exp_fast(self) -> Self {
                $exp(self)
            }
        }
    };
}
impl_element!(f32, POOL_F32, erf_f32, exp_f32);
impl_element!(f64, POOL_F64, libm::erf, f64::exp);

/// `e^x` in f32 without branches or library calls, so loops over it vectorize: `x = n·ln2 + r`
/// with `n` rounded by the 1.5·2²³ trick, `e^r` by its degree-6 Taylor polynomial on
/// `|r| ≤ ln2/2`, `2^n` built in the exponent bits. Relative error below 3e-7 (measured
/// against f64 over [-10, 10]); inputs are clamped to [-87, 88] (no overflow, no denormals).
#[inline(always)]
pub(crate) fn exp_f32(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5 · 2^23: adding it rounds to an integer
    let x = x.clamp(-87.0, 88.0);
    let t = x * std::f32::consts::LOG2_E + MAGIC;
    let n = t - MAGIC;
    // ln2 split in two so that n · ln2 is exact to f32 precision.
    let r = x - n * 0.693_145_75 - n * 1.428_606_8e-6;
    let p = 1.0
        + r * (1.0 + r * (0.5 + r * (0.166_666_67 + r * (0.041_666_668 + r * (0.008_333_334 + r * 0.001_388_889)))));
    let n = (t.to_bits() as i32).wrapping_sub(0x4B40_0000); // the integer n from t's mantissa
    f32::from_bits(((n + 127) << 23) as u32) * p
}

/// The error function in f32 by Abramowitz & Stegun 7.1.26 with [`exp_f32`]: branch-free,
/// absolute error below 1e-6 (7e-7 measured against f64 over [-10, 10]), as PyTorch's
/// vectorized CPU `erf` is an approximation of this kind too.
#[inline(always)]
pub(crate) fn erf_f32(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = t * (0.254_829_6 + t * (-0.284_496_74 + t * (1.421_413_7 + t * (-1.453_152_1 + t * 1.061_405_4))));
    // e^(-a²) floored at e^-80: beyond, erf is 1 in f32 anyway, and the product with `poly`
    // would be a denormal, which costs a hundred cycles or more per element on x86.
    (1.0 - poly * exp_f32((-a * a).max(-80.0))).copysign(x)
}

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
        if buf.capacity() < len {
            // Too small: a new buffer (growing this one would copy its stale contents over).
            buf = vec![E::zero(); len];
        } else if buf.len() > len {
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

/// Zero-fills an uninitialised piece of a buffer and returns it initialised.
fn zero_init<T: Copy + Default>(piece: &mut [MaybeUninit<T>]) -> &mut [T] {
    for e in piece.iter_mut() {
        e.write(T::default());
    }
    // SAFETY: every element was written just above; `MaybeUninit<T>` has `T`'s layout.
    unsafe { &mut *(piece as *mut [MaybeUninit<T>] as *mut [T]) }
}

/// A new buffer of `len` elements whose `chunk`-long pieces are written in parallel by
/// `write(piece index, piece)`. Each piece is zeroed inside its own task just before `write`
/// runs, so the zeros go to cache lines the writer overwrites next, where `vec![0; len]` is a
/// single-threaded pass over the whole buffer first (for the element-wise ops as much memory
/// traffic as the op itself).
pub(crate) fn par_new<T: Copy + Default + Send + Sync>(
    len: usize,
    chunk: usize,
    write: impl Fn(usize, &mut [T]) + Sync + Send,
) -> Vec<T> {
    use rayon::prelude::*;
    let mut v = Vec::with_capacity(len);
    v.spare_capacity_mut()[..len].par_chunks_mut(chunk.max(1)).enumerate().for_each(|(i, piece)| {
        write(i, zero_init(piece));
    });
    // SAFETY: the pieces cover all `len` elements and `zero_init` wrote each of them.
    unsafe { v.set_len(len) };
    v
}

/// [`par_new`] for two buffers written together, cut into the same number of pieces
/// (`len_a / chunk_a` and `len_b / chunk_b` rounded up must agree).
pub(crate) fn par_new2<A: Copy + Default + Send + Sync, B: Copy + Default + Send + Sync>(
    (len_a, chunk_a): (usize, usize),
    (len_b, chunk_b): (usize, usize),
    write: impl Fn(usize, &mut [A], &mut [B]) + Sync + Send,
) -> (Vec<A>, Vec<B>) {
    use rayon::prelude::*;
    let (chunk_a, chunk_b) = (chunk_a.max(1), chunk_b.max(1));
    assert_eq!(len_a.div_ceil(chunk_a), len_b.div_ceil(chunk_b), "par_new2: the buffers' pieces do not pair up");
    let (mut a, mut b) = (Vec::with_capacity(len_a), Vec::with_capacity(len_b));
    a.spare_capacity_mut()[..len_a]
        .par_chunks_mut(chunk_a)
        .zip(b.spare_capacity_mut()[..len_b].par_chunks_mut(chunk_b))
        .enumerate()
        .for_each(|(i, (pa, pb))| write(i, zero_init(pa), zero_init(pb)));
    // SAFETY: as in `par_new`: the paired pieces cover both buffers, each element written once.
    unsafe {
        a.set_len(len_a);
        b.set_len(len_b);
    }
    (a, b)
}

/// The data of a physically contiguous CPU tensor, borrowed without copying.
///
/// Through `Tensor::as_contiguous_slice`, the one accessor siamlab adds to its vendored dfdx 0.13
/// (`vendor/README.md`): a borrow of the tensor's storage itself. Callers make the tensor
/// contiguous first ([`Element::contiguous`]); a tensor that is not is a bug in the caller and
/// panics. The borrow of `t` keeps the storage alive and unmodified (dfdx mutates only through
/// `&mut Tensor`, copying shared storage first).
pub(crate) fn view<S: Shape, E: Element, T>(t: &Tensor<S, E, Cpu, T>) -> &[E] {
    t.as_contiguous_slice().expect("view of a non-contiguous tensor")
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
    // gemm 0.19 runs at a quarter of its speed when `b` is not row-major (its columns not
    // adjacent; measured in `benches/gemm.rs`: 64×576×1024 at 27 vs 106 GFLOP/s). So `b` is
    // made row-major first: `aᵀ` row-major (a column-major `a`) swaps the roles
    // (`dstᵀ = bᵀ · aᵀ`); otherwise the smaller operand is copied transposed.
    if k > 1 && n > 1 && b.cs != 1 {
        let b_t = Mat::strided(b.data, b.cs, b.rs);
        if a.rs == 1 || m == 1 {
            let (dst_t, a_t) = (Mat::strided(dst, dst_cs, dst_rs), Mat::strided(a.data, a.cs, a.rs));
            return matmul_strided(n, m, k, dst_t, accumulate, b_t, a_t, parallel);
        }
        if n <= m {
            let mut packed = Scratch::with_len(k * n);
            transpose_into(b, k, n, &mut packed);
            let dst = Mat::strided(dst, dst_rs, dst_cs);
            return matmul_strided(m, n, k, dst, accumulate, a, Mat::rows(&packed, n), parallel);
        }
        // `aᵀ` copied row-major (k × m), then the swap above.
        let mut packed = Scratch::with_len(m * k);
        transpose_into(Mat::strided(a.data, a.cs, a.rs), k, m, &mut packed);
        let dst_t = Mat::strided(dst, dst_cs, dst_rs);
        return matmul_strided(n, m, k, dst_t, accumulate, b_t, Mat::rows(&packed, m), parallel);
    }
    // gemm 0.19 also runs a column-major destination at a third of its speed (2048×64×2048:
    // 28 vs 81 GFLOP/s in `benches/gemm.rs`; the swap above produces one for a linear layer's
    // forward): the product goes row-major into scratch, then (added) into `dst`.
    if k > 0 && m > 1 && n > 1 && dst_cs != 1 {
        let mut tmp = Scratch::with_len(m * n);
        matmul_strided(m, n, k, Mat::strided(&mut tmp[..], n, 1), false, a, b, parallel);
        const TILE: usize = 32;
        for j0 in (0..n).step_by(TILE) {
            for i0 in (0..m).step_by(TILE) {
                for j in j0..(j0 + TILE).min(n) {
                    for i in i0..(i0 + TILE).min(m) {
                        let (d, v) = (&mut dst[i * dst_rs + j * dst_cs], tmp[i * n + j]);
                        *d = if accumulate { *d + v } else { v };
                    }
                }
            }
        }
        return;
    }
    let threads = rayon::current_num_threads();
    // gemm 0.19 spreads a short product (few rows, e.g. a projector's batch of 64) badly over
    // threads: 64×2048×2048 ran at 67 GFLOP/s on two threads, below its 115 on one (benches/
    // gemm.rs shapes, Intel Xeon with AVX-512). Such products are cut into one block of
    // columns per thread instead, each a single-threaded gemm (136 GFLOP/s on two threads).
    if parallel && threads > 1 && m <= SHORT_ROWS && k > 0 && n >= SPLIT_COLS * threads {
        use rayon::prelude::*;
        let cols = n.div_ceil(threads).next_multiple_of(16);
        let dst_at = dst.as_mut_ptr() as usize;
        (0..n.div_ceil(cols)).into_par_iter().for_each(|t| {
            let (j0, j1) = (t * cols, ((t + 1) * cols).min(n));
            // SAFETY: as below; each task writes only the columns j0..j1 of `dst`, and the
            // tasks' column ranges are disjoint, so no two write one element.
            unsafe {
                gemm_raw(
                    m,
                    j1 - j0,
                    k,
                    (dst_at as *mut E).add(j0 * dst_cs),
                    dst_rs,
                    dst_cs,
                    accumulate,
                    a,
                    Mat::strided(&b.data[j0 * b.cs..], b.rs, b.cs),
                    false,
                )
            }
        });
        return;
    }
    // SAFETY: the asserts above keep every index gemm touches inside the slices; `dst` is
    // borrowed mutably so it does not alias `a` or `b`.
    unsafe { gemm_raw(m, n, k, dst.as_mut_ptr(), dst_rs, dst_cs, accumulate, a, b, parallel) }
}

/// Products with at most this many rows are split by columns over the threads ([`matmul_strided`]).
const SHORT_ROWS: usize = 256;
/// ... when each thread gets at least this many columns.
const SPLIT_COLS: usize = 256;

/// gemm on `dst` (`m × n` at `dst`, strides `dst_rs`, `dst_cs`) `(+)= a · b`.
///
/// # Safety
/// Every element the product touches must lie inside `dst`'s allocation, `a.data` and
/// `b.data`, and nothing else may access those elements of `dst` meanwhile.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_raw<E: Element>(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut E,
    dst_rs: usize,
    dst_cs: usize,
    accumulate: bool,
    a: Mat<'_, E>,
    b: Mat<'_, E>,
    parallel: bool,
) {
    let par = if parallel { gemm::Parallelism::Rayon(rayon::current_num_threads()) } else { gemm::Parallelism::None };
    // SAFETY: the caller's contract; E is f32 or f64, both gemm types.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
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

/// `dst (m × n, row-major) += a (m × k) · b (k × n)` for a long inner dimension and a small
/// product (a weight gradient `dyᵀ · x` over many rows): gemm spreads its work over blocks of
/// `m` and `n` only, so a 64 × 64 product over 30,000 rows runs on one thread. Here the inner
/// dimension is cut into one run per rayon thread, each run's product goes into its own
/// scratch, and the partial products are added in run order (deterministic for a given
/// thread count). Falls back to [`matmul`] when the product is large enough for gemm to split.
pub(crate) fn matmul_acc_split_k<E: Element>(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [E],
    a: Mat<'_, E>,
    b: Mat<'_, E>,
) {
    use rayon::prelude::*;
    let threads = rayon::current_num_threads();
    // Below this many product elements per thread gemm's split leaves threads idle, and
    // cutting the inner dimension wins (given enough of it).
    const SMALL_PRODUCT: usize = 128 * 256;
    if threads < 2 || m * n > SMALL_PRODUCT * threads || k < 256 * threads {
        return matmul(m, n, k, dst, true, a, b, true);
    }
    let run = k.div_ceil(threads);
    let parts: Vec<Scratch<E>> = (0..threads)
        .into_par_iter()
        .map(|t| {
            let (k0, k1) = (t * run, ((t + 1) * run).min(k));
            let mut part = Scratch::with_len(m * n);
            if k1 > k0 {
                let a_t = Mat::strided(&a.data[k0 * a.cs..], a.rs, a.cs);
                let b_t = Mat::strided(&b.data[k0 * b.rs..], b.rs, b.cs);
                matmul(m, n, k1 - k0, &mut part, false, a_t, b_t, false);
            } else {
                part.fill(E::zero());
            }
            part
        })
        .collect();
    for part in &parts {
        for (d, &v) in dst.iter_mut().zip(part.iter()) {
            *d += v;
        }
    }
}

/// Writes the `rows × cols` matrix `src` row-major into `dst`, in tiles so that both sides stay
/// in cache.
pub(crate) fn transpose_into<E: Element>(src: Mat<'_, E>, rows: usize, cols: usize, dst: &mut [E]) {
    const TILE: usize = 32;
    for r0 in (0..rows).step_by(TILE) {
        for c0 in (0..cols).step_by(TILE) {
            for r in r0..(r0 + TILE).min(rows) {
                let out = &mut dst[r * cols..][c0..(c0 + TILE).min(cols)];
                for (j, o) in out.iter_mut().enumerate() {
                    *o = src.data[r * src.rs + (c0 + j) * src.cs];
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{erf_f32, exp_f32, matmul_strided, Cpu, Mat};

    /// Every operand layout (row-major or transposed `a`, `b`, `dst`), with and without
    /// accumulation, against a naive product: the layout normalisation in `matmul_strided`
    /// must not change what is computed.
    #[test]
    fn matmul_agrees_with_the_naive_product_in_every_layout() {
        for &(m, n, k) in &[(3, 5, 7), (1, 4, 3), (6, 1, 2), (5, 3, 1), (9, 2, 4), (2, 9, 4)] {
            let a: Vec<f64> = (0..m * k).map(|i| ((i * 7 + 3) % 11) as f64 - 5.0).collect();
            let b: Vec<f64> = (0..k * n).map(|i| ((i * 5 + 1) % 13) as f64 - 6.0).collect();
            let want = |i: usize, j: usize| (0..k).map(|l| a[i * k + l] * b[l * n + j]).sum::<f64>();
            let at: Vec<f64> = (0..k * m).map(|x| a[(x % m) * k + x / m]).collect();
            let bt: Vec<f64> = (0..n * k).map(|x| b[(x % k) * n + x / k]).collect();
            for (ta, tb, td, acc) in (0..16).map(|f| (f & 1 != 0, f & 2 != 0, f & 4 != 0, f & 8 != 0)) {
                let am = if ta { Mat::transposed(&at, m) } else { Mat::rows(&a, k) };
                let bm = if tb { Mat::transposed(&bt, k) } else { Mat::rows(&b, n) };
                let mut dst = vec![1.0f64; m * n];
                let (rs, cs) = if td { (1, m) } else { (n, 1) };
                matmul_strided(m, n, k, Mat::strided(&mut dst[..], rs, cs), acc, am, bm, false);
                for i in 0..m {
                    for j in 0..n {
                        let expect = want(i, j) + if acc { 1.0 } else { 0.0 };
                        assert_eq!(dst[i * rs + j * cs], expect, "{m}x{n}x{k} ta {ta} tb {tb} td {td} acc {acc}");
                    }
                }
            }
        }
    }

    /// The inner dimension cut over threads (a weight gradient over many rows) gives the naive
    /// product, for runs of uneven length, and adds onto what `dst` held.
    #[test]
    fn split_inner_dimension_agrees_with_the_naive_product() {
        let (m, n, k) = (3, 5, 2_001);
        let a: Vec<f64> = (0..k * m).map(|i| ((i * 7 + 3) % 11) as f64 - 5.0).collect(); // aᵀ row-major
        let b: Vec<f64> = (0..k * n).map(|i| ((i * 5 + 1) % 13) as f64 - 6.0).collect();
        for threads in [1, 2, 3] {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            let mut dst = vec![1.0f64; m * n];
            pool.install(|| super::matmul_acc_split_k(m, n, k, &mut dst, Mat::transposed(&a, m), Mat::rows(&b, n)));
            for i in 0..m {
                for j in 0..n {
                    let want = 1.0 + (0..k).map(|l| a[l * m + i] * b[l * n + j]).sum::<f64>();
                    assert_eq!(dst[i * n + j], want, "{threads} threads, ({i}, {j})");
                }
            }
        }
    }

    /// A short product split by columns over the threads gives the naive product in every
    /// operand layout, for column blocks of uneven width, and adds onto what `dst` held.
    #[test]
    fn short_products_split_by_columns_agree_with_the_naive_product() {
        let (m, n, k) = (5, 1_100, 9);
        let a: Vec<f64> = (0..m * k).map(|i| ((i * 7 + 3) % 11) as f64 - 5.0).collect();
        let b: Vec<f64> = (0..k * n).map(|i| ((i * 5 + 1) % 13) as f64 - 6.0).collect();
        let at: Vec<f64> = (0..k * m).map(|x| a[(x % m) * k + x / m]).collect();
        let bt: Vec<f64> = (0..n * k).map(|x| b[(x % k) * n + x / k]).collect();
        for threads in [2, 3] {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            for (ta, tb, td, acc) in (0..16).map(|f| (f & 1 != 0, f & 2 != 0, f & 4 != 0, f & 8 != 0)) {
                let am = if ta { Mat::transposed(&at, m) } else { Mat::rows(&a, k) };
                let bm = if tb { Mat::transposed(&bt, k) } else { Mat::rows(&b, n) };
                let mut dst = vec![1.0f64; m * n];
                let (rs, cs) = if td { (1, m) } else { (n, 1) };
                pool.install(|| matmul_strided(m, n, k, Mat::strided(&mut dst[..], rs, cs), acc, am, bm, true));
                for i in 0..m {
                    for j in 0..n {
                        let want =
                            (0..k).map(|l| a[i * k + l] * b[l * n + j]).sum::<f64>() + if acc { 1.0 } else { 0.0 };
                        assert_eq!(
                            dst[i * rs + j * cs],
                            want,
                            "{threads} threads, ta {ta} tb {tb} td {td} acc {acc} ({i}, {j})"
                        );
                    }
                }
            }
        }
    }

    /// `view` borrows exactly a contiguous tensor's elements (several axes, one element, none)
    /// and refuses a permuted one. Under Miri (`tools/miri.sh`; README, "Unsafe code under Miri")
    /// this also checks the borrow itself under Stacked and Tree Borrows.
    #[test]
    fn view_borrows_exactly_the_data_of_a_contiguous_tensor() {
        use dfdx::prelude::{Const, PermuteTo, TensorFrom, TensorFromVec};
        let dev = Cpu::default();
        let data: Vec<f32> = (0..24).map(|i| i as f32 * 0.5 - 3.0).collect();
        let t = dev.tensor_from_vec(data.clone(), (Const::<2>, Const::<3>, Const::<4>));
        assert_eq!(super::view(&t), &data[..]);
        let one = dev.tensor_from_vec(vec![7.0f32], (1usize,));
        assert_eq!(super::view(&one), &[7.0]);
        let none = dev.tensor_from_vec(Vec::<f32>::new(), (3usize, 0usize));
        assert!(super::view(&none).is_empty());
        let permuted = t.clone().permute::<(Const<2>, Const<4>, Const<3>), _>();
        let refused = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| super::view(&permuted).len()));
        assert!(refused.is_err(), "a permuted tensor is not contiguous");
        let copy = dev.tensor([[1.0f64, 2.0], [3.0, 4.0]]);
        assert_eq!(super::view(&copy), &[1.0, 2.0, 3.0, 4.0]);
    }

    #[test]
    fn fast_exp_and_erf_are_accurate_over_the_range_that_matters() {
        let (mut erf_err, mut exp_err) = (0f64, 0f64);
        for i in -100_000..=100_000 {
            let x = i as f32 * 1e-4; // [-10, 10]
            erf_err = erf_err.max((erf_f32(x) as f64 - libm::erf(x as f64)).abs());
            let e = (x as f64).exp();
            exp_err = exp_err.max((exp_f32(x) as f64 - e).abs() / e);
        }
        assert!(erf_err < 1e-6, "erf: {erf_err:e}");
        assert!(exp_err < 3e-7, "exp: {exp_err:e}");
        assert!(erf_f32(0.0).abs() < 1e-6 && erf_f32(1e-3) > 0.0 && erf_f32(-1e-3) < 0.0);
        assert_eq!((erf_f32(20.0), erf_f32(-20.0)), (1.0, -1.0));
        assert!(exp_f32(-200.0) >= 0.0 && exp_f32(-200.0) < 1e-37 && exp_f32(200.0).is_finite());
    }
}
