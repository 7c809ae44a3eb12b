//! Fully connected layer `y = x · Wᵀ (+ b)` on the crate's GEMM (the `gemm` version with
//! AVX-512 kernels on stable Rust; dfdx's own matmul runs gemm 0.15's AVX2 kernels), with
//! PyTorch's `[O, I]` weight layout.

use dfdx::prelude::{Const, Cpu, HasShape, Merge, PutTape, Rank1, Rank2, SplitTape, Tape, Tensor, TensorFromVec};

use super::grad::{grad_mut, put_grad, take_grad};
use crate::element::{matmul, matmul_acc_split_k, par_new, view, Mat};
use crate::{Element, OpError};

/// Output rows per task when the bias is written into them.
const FILL_ROWS: usize = 256;

/// Rows of features: `[M, I]`.
type Rows<const I: usize, E, T> = Tensor<(usize, Const<I>), E, Cpu, T>;

/// `x · Wᵀ + b` for `x` `[M, I]`, `weight` `[O, I]`, `bias` `[O]`; gradients into all three.
///
/// ```
/// use dfdx::prelude::*;
/// use siamlab_model::linear;
/// let dev = Cpu::default();
/// let x = dev.tensor_from_vec(vec![1.0f32, 2.0], (1, Const::<2>));
/// let w = dev.tensor([[1.0f32, 0.0], [1.0, 1.0], [0.0, -1.0]]);
/// let b = dev.tensor([0.5f32, 0.0, 0.0]);
/// assert_eq!(linear(x, w, b).unwrap().as_vec(), vec![1.5, 3.0, -2.0]);
/// ```
pub fn linear<const I: usize, const O: usize, E, T, TW, TB>(
    x: Rows<I, E, T>,
    weight: Tensor<Rank2<O, I>, E, Cpu, TW>,
    bias: Tensor<Rank1<O>, E, Cpu, TB>,
) -> Result<Rows<O, E, T>, OpError>
where
    E: Element,
    T: Tape<E, Cpu> + Merge<TW> + Merge<TB>,
    TW: Tape<E, Cpu>,
    TB: Tape<E, Cpu>,
{
    let (w, tw) = E::contiguous(weight)?.split_tape();
    let (b, tb) = E::contiguous(bias)?.split_tape();
    let (x, tx) = E::contiguous(x)?.split_tape();
    linear_impl(x, w, Some(b), tx.merge(tw).merge(tb))
}

/// `x · Wᵀ` without bias; otherwise as [`linear`].
pub fn linear_no_bias<const I: usize, const O: usize, E, T, TW>(
    x: Rows<I, E, T>,
    weight: Tensor<Rank2<O, I>, E, Cpu, TW>,
) -> Result<Rows<O, E, T>, OpError>
where
    E: Element,
    T: Tape<E, Cpu> + Merge<TW>,
    TW: Tape<E, Cpu>,
{
    let (w, tw) = E::contiguous(weight)?.split_tape();
    let (x, tx) = E::contiguous(x)?.split_tape();
    linear_impl(x, w, None, tx.merge(tw))
}

fn linear_impl<const I: usize, const O: usize, E: Element, T: Tape<E, Cpu>>(
    x: Rows<I, E, dfdx::prelude::NoneTape>,
    w: Tensor<Rank2<O, I>, E, Cpu>,
    b: Option<Tensor<Rank1<O>, E, Cpu>>,
    mut tape: T,
) -> Result<Rows<O, E, T>, OpError> {
    let _prof = crate::profile::scope("linear.forward");
    let m = x.shape().0;
    // The rows start as the bias, or as zeros, written in parallel.
    let bs = b.as_ref().map(|b| b.as_vec());
    let mut y = par_new(m * O, FILL_ROWS * O, |_, rows: &mut [E]| {
        if let Some(bs) = &bs {
            for row in rows.chunks_exact_mut(O) {
                row.copy_from_slice(bs);
            }
        }
    });
    {
        let (xs, ws) = (view(&x), view(&w));
        matmul(m, O, I, &mut y, b.is_some(), Mat::rows(xs, I), Mat::transposed(ws, I), true);
    }
    let y = x.device().clone().try_tensor_from_vec(y, (m, Const::<O>))?;
    if T::OWNS_TAPE {
        let (xg, wg, yg) = (x.ghost(), w.ghost(), y.ghost());
        let bg = b.as_ref().map(|b| b.ghost());
        tape.add_backward_op(move |grads| {
            let _prof = crate::profile::scope("linear.backward");
            let gy = take_grad!(grads, &yg);
            let (xs, ws) = (view(&x), view(&w));
            // dx += dy · W; dW += dyᵀ · x; db += Σ_rows dy.
            matmul(m, I, O, grad_mut!(grads, &xg), true, Mat::rows(&gy, O), Mat::rows(ws, I), true);
            matmul_acc_split_k(O, I, m, grad_mut!(grads, &wg), Mat::transposed(&gy, O), Mat::rows(xs, I));
            if let Some(bg) = &bg {
                // One pass in row order: the order the PyTorch step fixtures were matched with
                // (a bias before BatchNorm gets a gradient of pure rounding, which Adam scales up).
                let db = grad_mut!(grads, bg);
                for row in gy.chunks_exact(O) {
                    for (d, &g) in db.iter_mut().zip(row) {
                        *d += g;
                    }
                }
            }
            put_grad!(grads, &yg, gy);
            Ok(())
        });
    }
    Ok(y.put_tape(tape))
}
