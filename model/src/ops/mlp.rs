//! The transformer MLP `fc2(GELU(fc1(x)))` as one op, rows cut into blocks small enough that a
//! block's hidden activations stay in cache between the two products and the activation.
//!
//! As three ops (two [`linear`](super::linear)s and a [`gelu`](super::gelu)) each pass streams
//! the `rows × M` hidden activations through memory (PiT-Ti's first stage: 14,464 rows × 256
//! per view), dfdx allocates a zero-filled gradient for each of them, and each GEMM runs on
//! cold operands. Here a rayon task takes one block of rows through `fc1`, GELU and `fc2` with
//! single-threaded products on cache-resident blocks; only the pre-activation `h = fc1(x)` is
//! kept for the backward pass (GELU and its slope are recomputed there from one `erf`). The
//! backward pass cuts the rows into one run per thread, each run's weight gradients summed
//! over its blocks in scratch and the runs added in order (deterministic for a thread count).

use std::mem::MaybeUninit;

use dfdx::prelude::{Const, Cpu, HasShape, Merge, PutTape, Rank1, Rank2, SplitTape, Tape, Tensor, TensorFromVec};
use rayon::prelude::*;

use super::activation::{gelu_forward, gelu_with_slope};
use super::grad::{grad_mut, put_grad, take_grad};
use crate::element::{matmul, transpose_into, view, Mat, Scratch};
use crate::{Element, OpError};

/// Rows of features: `[R, I]`.
type Rows<const I: usize, E, T> = Tensor<(usize, Const<I>), E, Cpu, T>;

/// Rows per block for hidden width `m`: about 256 KiB of hidden activations, at least 128 rows
/// (each block's products re-read the weights, so fewer rows would make that dominate).
fn block_rows(m: usize) -> usize {
    (65_536 / m.max(1)).clamp(128, 256)
}

/// Writes `row` repeated over `dst` (a whole number of rows) and returns it initialised.
fn fill_rows<'a, E: Element>(dst: &'a mut [MaybeUninit<E>], row: &[E]) -> &'a mut [E] {
    for (d, &v) in dst.iter_mut().zip(row.iter().cycle()) {
        d.write(v);
    }
    // SAFETY: every element of `dst` was written just above, and `MaybeUninit<E>` has `E`'s
    // layout.
    unsafe { &mut *(dst as *mut [MaybeUninit<E>] as *mut [E]) }
}

/// `fc2(GELU(fc1(x)))` for `x` `[R, D]`, `w1` `[M, D]`, `b1` `[M]`, `w2` `[D, M]`, `b2` `[D]`
/// (PyTorch's layouts), GELU exact (erf); gradients into all five. The same as
/// `linear(gelu(linear(x, w1, b1)), w2, b2)` up to rounding.
///
/// ```
/// use dfdx::prelude::*;
/// use siamlab_model::mlp;
/// let dev = Cpu::default();
/// let x = dev.tensor_from_vec(vec![1.0f32, -1.0], (1, Const::<2>));
/// let (w1, b1) = (dev.tensor([[1.0f32, 0.0], [0.0, 1.0], [1.0, 1.0]]), dev.zeros::<Rank1<3>>());
/// let (w2, b2) = (dev.tensor([[1.0f32, 1.0, 1.0], [0.0, 0.0, 0.0]]), dev.tensor([0.5f32, 0.0]));
/// // h = [1, -1, 0]; GELU(1) + GELU(-1) + GELU(0) = Φ(1) − Φ(−1) = 0.6826895.
/// let y = mlp(x, w1, b1, w2, b2).unwrap().as_vec();
/// assert!((y[0] - 1.1826895).abs() < 1e-6 && y[1] == 0.0);
/// ```
pub fn mlp<const D: usize, const M: usize, E: Element, T: Tape<E, Cpu> + Merge<T>>(
    x: Rows<D, E, T>,
    w1: Tensor<Rank2<M, D>, E, Cpu, T>,
    b1: Tensor<Rank1<M>, E, Cpu, T>,
    w2: Tensor<Rank2<D, M>, E, Cpu, T>,
    b2: Tensor<Rank1<D>, E, Cpu, T>,
) -> Result<Rows<D, E, T>, OpError> {
    let _prof = crate::profile::scope("mlp.forward");
    let (w1, t1) = E::contiguous(w1)?.split_tape();
    let (b1, t2) = E::contiguous(b1)?.split_tape();
    let (w2, t3) = E::contiguous(w2)?.split_tape();
    let (b2, t4) = E::contiguous(b2)?.split_tape();
    let (x, tx) = E::contiguous(x)?.split_tape();
    let mut tape = tx.merge(t1).merge(t2).merge(t3).merge(t4);
    let rows = x.shape().0;
    let threads = rayon::current_num_threads().max(1);
    // Blocks as long as in the backward pass where the weights are large (ViT-S: 2.4 MB each,
    // which a short block would re-read from beyond L2 for little work), else cache-sized.
    let rb = (M * D / 64).clamp(block_rows(M), rows.div_ceil(threads).max(block_rows(M)));
    let (b1v, b2v) = (b1.as_vec(), b2.as_vec());
    // The weights as the right-hand sides `x · W1ᵀ` and `g · W2ᵀ` want them: row-major.
    let mut w1t = Scratch::with_len(D * M);
    transpose_into(Mat::transposed(view(&w1), D), D, M, &mut w1t);
    let mut w2t = Scratch::with_len(M * D);
    transpose_into(Mat::transposed(view(&w2), M), M, D, &mut w2t);
    let keep = T::OWNS_TAPE;
    let mut y: Vec<E> = Vec::with_capacity(rows * D);
    let mut h: Vec<E> = Vec::with_capacity(if keep { rows * M } else { 0 });
    {
        let xs = view(&x);
        let block = |(xb, yb): (&[E], &mut [MaybeUninit<E>]), hb: &mut [MaybeUninit<E>]| {
            let n = xb.len() / D;
            // h = x · W1ᵀ + b1, then g = GELU(h), then y = g · W2ᵀ + b2, all on this block.
            let hb = fill_rows(hb, &b1v);
            matmul(n, M, D, hb, true, Mat::rows(xb, D), Mat::rows(&w1t, M), false);
            let mut g = Scratch::with_len(n * M);
            gelu_forward(&mut g, hb);
            let yb = fill_rows(yb, &b2v);
            matmul(n, D, M, yb, true, Mat::rows(&g, M), Mat::rows(&w2t, D), false);
        };
        let blocks = xs.par_chunks(rb * D).zip(y.spare_capacity_mut()[..rows * D].par_chunks_mut(rb * D));
        if keep {
            blocks.zip(h.spare_capacity_mut()[..rows * M].par_chunks_mut(rb * M)).for_each(|(b, hb)| block(b, hb));
        } else {
            blocks.for_each(|b| {
                let mut hb = Scratch::with_len(b.0.len() / D * M);
                // SAFETY: initialised `E`s viewed as `MaybeUninit<E>` (same layout), only written.
                block(b, unsafe { &mut *(&mut hb[..] as *mut [E] as *mut [MaybeUninit<E>]) })
            });
        }
    }
    // SAFETY: the blocks cover all `rows · D` (and, when kept, `rows · M`) elements and
    // `fill_rows` wrote each of them.
    unsafe {
        y.set_len(rows * D);
        if keep {
            h.set_len(rows * M);
        }
    }
    let y = x.device().clone().try_tensor_from_vec(y, (rows, Const::<D>))?;
    if keep {
        let (xg, yg) = (x.ghost(), y.ghost());
        let (w1g, b1g, w2g, b2g) = (w1.ghost(), b1.ghost(), w2.ghost(), b2.ghost());
        tape.add_backward_op(move |grads| {
            let _prof = crate::profile::scope("mlp.backward");
            let gy = take_grad!(grads, &yg);
            let (xs, w1s, w2s) = (view(&x), view(&w1), view(&w2));
            let run = rows.div_ceil(threads).max(1);
            // Each backward block adds its products into the run's weight gradients (2·M·D
            // elements read and written), hence the longer blocks for large weights above.
            // Per run: dW1 [M, D], db1 [M], dW2 [D, M], db2 [D], summed over its blocks.
            let parts: Vec<Scratch<E>> = grad_mut!(grads, &xg)
                .par_chunks_mut(run * D)
                .zip(gy.par_chunks(run * D))
                .zip(xs.par_chunks(run * D))
                .zip(h.par_chunks(run * M))
                .map(|(((dx, gy), xs), hs)| {
                    let mut acc = Scratch::zeroed(2 * M * D + M + D);
                    let (dw1, rest) = acc.split_at_mut(M * D);
                    let (db1, rest) = rest.split_at_mut(M);
                    let (dw2, db2) = rest.split_at_mut(D * M);
                    for (((dx, gy), xb), hb) in
                        dx.chunks_mut(rb * D).zip(gy.chunks(rb * D)).zip(xs.chunks(rb * D)).zip(hs.chunks(rb * M))
                    {
                        let n = xb.len() / D;
                        let (mut g, mut slope) = (Scratch::with_len(n * M), Scratch::with_len(n * M));
                        gelu_with_slope(&mut g, &mut slope, hb);
                        // dW2 += gyᵀ · g; db2 += Σ gy.
                        matmul(D, M, n, dw2, true, Mat::transposed(gy, D), Mat::rows(&g, M), false);
                        add_rows(db2, gy);
                        // dh = (gy · W2) ⊙ GELU'(h), in g's place.
                        matmul(n, M, D, &mut g, false, Mat::rows(gy, D), Mat::rows(w2s, M), false);
                        for (d, &s) in g.iter_mut().zip(slope.iter()) {
                            *d *= s;
                        }
                        // dW1 += dhᵀ · x; db1 += Σ dh; dx += dh · W1.
                        matmul(M, D, n, dw1, true, Mat::transposed(&g, M), Mat::rows(xb, D), false);
                        add_rows(db1, &g);
                        matmul(n, D, M, dx, true, Mat::rows(&g, M), Mat::rows(w1s, D), false);
                    }
                    acc
                })
                .collect();
            let sum_into = |dst: &mut [E], at: usize| {
                let len = dst.len();
                for part in &parts {
                    for (d, &v) in dst.iter_mut().zip(&part[at..at + len]) {
                        *d += v;
                    }
                }
            };
            sum_into(grad_mut!(grads, &w1g), 0);
            sum_into(grad_mut!(grads, &b1g), M * D);
            sum_into(grad_mut!(grads, &w2g), M * D + M);
            sum_into(grad_mut!(grads, &b2g), 2 * M * D + M);
            put_grad!(grads, &yg, gy);
            Ok(())
        });
    }
    Ok(y.put_tape(tape))
}

/// `acc += Σ` of the rows of `rows` (each `acc.len()` long).
fn add_rows<E: Element>(acc: &mut [E], rows: &[E]) {
    for row in rows.chunks_exact(acc.len()) {
        for (a, &v) in acc.iter_mut().zip(row) {
            *a += v;
        }
    }
}
