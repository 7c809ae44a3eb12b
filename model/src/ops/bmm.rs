//! Batched matrix product `C[g] = A[g] · B[g]` or `A[g] · B[g]ᵀ` (attention's `q·kᵀ` and
//! `weights·v`): the batch spread over the rayon pool, one single-threaded GEMM per item on the
//! crate's GEMM (dfdx runs one multithreaded GEMM per item, which for attention-sized matrices
//! costs more in synchronisation than in arithmetic).

use dfdx::prelude::{Cpu, HasShape, Merge, PutTape, SplitTape, Tape, Tensor, TensorFromVec};
use rayon::prelude::*;

use super::grad::{grad_mut, put_grad, take_grad};
use crate::element::{matmul, view, Mat};
use crate::{Element, OpError};

/// A batch of matrices: `[G, rows, cols]`.
pub type Batch<E, T> = Tensor<(usize, usize, usize), E, Cpu, T>;

/// `C[g] = A[g] · B[g]` (`[G, M, K] × [G, K, N]`) or, with `transpose_b`, `A[g] · B[g]ᵀ`
/// (`[G, M, K] × [G, N, K]`); gradients into both.
///
/// Errors when the batch sizes or the inner dimensions differ.
///
/// ```
/// use dfdx::prelude::*;
/// use siamlab_model::batched_matmul;
/// let dev = Cpu::default();
/// let a = dev.tensor_from_vec(vec![1.0f32, 2.0, 3.0, 4.0], (1, 2, 2));
/// let b = dev.tensor_from_vec(vec![1.0f32, 0.0, 1.0, 1.0], (1, 2, 2));
/// assert_eq!(batched_matmul(a.clone(), b.clone(), false).unwrap().as_vec(), vec![3.0, 2.0, 7.0, 4.0]);
/// assert_eq!(batched_matmul(a, b, true).unwrap().as_vec(), vec![1.0, 3.0, 3.0, 7.0]);
/// ```
pub fn batched_matmul<E, T, TB>(a: Batch<E, T>, b: Batch<E, TB>, transpose_b: bool) -> Result<Batch<E, T>, OpError>
where
    E: Element,
    T: Tape<E, Cpu> + Merge<TB>,
    TB: Tape<E, Cpu>,
{
    let _prof = crate::profile::scope("batched_matmul.forward");
    let (b, tb) = E::contiguous(b)?.split_tape();
    let (a, ta) = E::contiguous(a)?.split_tape();
    let mut tape = ta.merge(tb);
    let (g, m, k) = *a.shape();
    let (gb, b1, b2) = *b.shape();
    let (kb, n) = if transpose_b { (b2, b1) } else { (b1, b2) };
    if g != gb || k != kb {
        return Err(OpError::config(
            "batched_matmul",
            format!("[{g}, {m}, {k}] times [{gb}, {b1}, {b2}]{}", if transpose_b { "ᵀ" } else { "" }),
        ));
    }
    // B[g] as a k × n matrix.
    let b_mat = move |data| if transpose_b { Mat::transposed(data, k) } else { Mat::rows(data, n) };
    let mut c = vec![E::zero(); g * m * n];
    {
        let (xa, xb) = (view(&a), view(&b));
        c.par_chunks_mut((m * n).max(1))
            .zip(xa.par_chunks((m * k).max(1)))
            .zip(xb.par_chunks((k * n).max(1)))
            .for_each(|((ci, ai), bi)| matmul(m, n, k, ci, false, Mat::rows(ai, k), b_mat(bi), false));
    }
    let c = a.device().clone().try_tensor_from_vec(c, (g, m, n))?;
    if T::OWNS_TAPE {
        let (ag, bg, cg) = (a.ghost(), b.ghost(), c.ghost());
        tape.add_backward_op(move |grads| {
            let _prof = crate::profile::scope("batched_matmul.backward");
            let gc = take_grad!(grads, &cg);
            let (xa, xb) = (view(&a), view(&b));
            // dA = dC · Bᵀ.
            let bt = move |data| if transpose_b { Mat::rows(data, k) } else { Mat::transposed(data, n) };
            grad_mut!(grads, &ag)
                .par_chunks_mut((m * k).max(1))
                .zip(gc.par_chunks((m * n).max(1)))
                .zip(xb.par_chunks((k * n).max(1)))
                .for_each(|((da, gi), bi)| matmul(m, k, n, da, true, Mat::rows(gi, n), bt(bi), false));
            // dB = Aᵀ · dC (k × n), or its transpose dCᵀ · A (n × k).
            grad_mut!(grads, &bg)
                .par_chunks_mut((k * n).max(1))
                .zip(gc.par_chunks((m * n).max(1)))
                .zip(xa.par_chunks((m * k).max(1)))
                .for_each(|((db, gi), ai)| {
                    if transpose_b {
                        matmul(n, k, m, db, true, Mat::transposed(gi, n), Mat::rows(ai, k), false)
                    } else {
                        matmul(k, n, m, db, true, Mat::transposed(ai, k), Mat::rows(gi, n), false)
                    }
                });
            put_grad!(grads, &cg, gc);
            Ok(())
        });
    }
    Ok(c.put_tape(tape))
}
