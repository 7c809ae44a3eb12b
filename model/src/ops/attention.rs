//! Attention's core as one op, `softmax(scale · q·kᵀ) · v` for every image and head: `q`, `k`
//! and `v` are read straight from the rows of the fused `qkv` projection and the heads are
//! written side by side, where [`split_heads`](super::split_heads) ×3,
//! [`batched_matmul`](super::batched_matmul) ×2, [`scaled_softmax`](super::scaled_softmax) and
//! [`merge_heads`](super::merge_heads) take seven passes over memory (PyTorch's
//! `scaled_dot_product_attention` plays this part). One image per rayon task, so its `T × T`
//! weights stay in cache between the products; the weights are kept for the backward pass.
//! The products and the softmax rows are the same kernels the separate ops run.

use dfdx::prelude::{Const, Cpu, HasShape, PutTape, SplitTape, Tape, Tensor, TensorFromVec};
use rayon::prelude::*;

use super::grad::{grad_mut, put_grad, take_grad};
use super::softmax::{softmax_row, softmax_row_grad};
use crate::element::{matmul, matmul_strided, par_new2, view, Mat, Scratch};
use crate::{Element, OpError};

/// Tokens `[N, T, W]`.
type Tokens<const W: usize, E, T> = Tensor<(usize, usize, Const<W>), E, Cpu, T>;

/// `softmax(scale · q·kᵀ) · v` per image and head, where `q`, `k` and `v` are the three parts
/// of the last axis of `qkv` (`[N, T, 3·D]`, each part `heads` heads of `D / heads`, timm's
/// layout); the result is `[N, T, D]` with head `h` in columns `h·D/heads ..`. The same as
/// `merge_heads(bmm(scaled_softmax(bmm(q, k, true), scale), v), heads)` with
/// `q = split_heads(qkv, 0, 3, heads)` and so on; gradients into `qkv`.
///
/// Errors when `Q ≠ 3·D` or `heads` does not divide `D`.
///
/// ```
/// use dfdx::prelude::*;
/// use siamlab_model::attention;
/// let dev = Cpu::default();
/// // One image, two tokens, one head of width 1: q = k = 0, so the weights are uniform.
/// let qkv = dev.tensor_from_vec(vec![0.0f32, 0.0, 1.0, 0.0, 0.0, 3.0], (1, 2, Const::<3>));
/// let y = attention::<3, 1, _, _>(qkv, 1, 1.0).unwrap();
/// assert_eq!(y.as_vec(), vec![2.0, 2.0]);
/// ```
pub fn attention<const Q: usize, const D: usize, E: Element, T: Tape<E, Cpu>>(
    qkv: Tokens<Q, E, T>,
    heads: usize,
    scale: f64,
) -> Result<Tokens<D, E, T>, OpError> {
    let _prof = crate::profile::scope("attention.forward");
    if Q != 3 * D || heads == 0 || !D.is_multiple_of(heads) {
        return Err(OpError::config(
            "attention",
            format!("qkv width {Q} must be 3 × {D} and {heads} heads divide {D}"),
        ));
    }
    let (qkv, mut tape) = E::contiguous(qkv)?.split_tape();
    let (n, t, _) = *qkv.shape();
    let dh = D / heads;
    let scale = E::from_f64(scale).expect("scale fits the float type");
    // The output and the attention weights, `[N, heads, T, T]`, one image per task.
    let (y, p) = if n * t == 0 {
        (Vec::new(), Vec::new())
    } else {
        let xs = view(&qkv);
        par_new2((n * t * D, t * D), (n * heads * t * t, heads * t * t), |i, yi, pi| {
            let xi = &xs[i * t * Q..][..t * Q];
            {
                let mut s = Scratch::with_len(t * t);
                for (h, ph) in pi.chunks_exact_mut(t * t).enumerate() {
                    let q = Mat::strided(&xi[h * dh..], Q, 1);
                    let kt = Mat::strided(&xi[D + h * dh..], 1, Q);
                    let v = Mat::strided(&xi[2 * D + h * dh..], Q, 1);
                    matmul(t, t, dh, &mut s, false, q, kt, false);
                    for (pr, sr) in ph.chunks_exact_mut(t).zip(s.chunks_exact(t)) {
                        softmax_row(pr, sr, scale);
                    }
                    let out = Mat::strided(&mut yi[h * dh..], D, 1);
                    matmul_strided(t, dh, t, out, false, Mat::rows(ph, t), v, false);
                }
            }
        })
    };
    let y = qkv.device().clone().try_tensor_from_vec(y, (n, t, Const::<D>))?;
    if T::OWNS_TAPE {
        let (xg, yg) = (qkv.ghost(), y.ghost());
        tape.add_backward_op(move |grads| {
            let _prof = crate::profile::scope("attention.backward");
            let gy = take_grad!(grads, &yg);
            let xs = view(&qkv);
            let dx = grad_mut!(grads, &xg);
            if n * t > 0 {
                dx.par_chunks_mut(t * Q)
                    .zip(gy.par_chunks(t * D))
                    .zip(p.par_chunks(heads * t * t))
                    .zip(xs.par_chunks(t * Q))
                    .for_each(|(((dxi, gi), pi), xi)| {
                        let mut ds = Scratch::with_len(t * t);
                        for (h, ph) in pi.chunks_exact(t * t).enumerate() {
                            let (cq, ck, cv) = (h * dh, D + h * dh, 2 * D + h * dh);
                            let go = Mat::strided(&gi[h * dh..], D, 1);
                            // dV += Pᵀ · dO.
                            let dv = Mat::strided(&mut dxi[cv..], Q, 1);
                            matmul_strided(t, dh, t, dv, true, Mat::transposed(ph, t), go, false);
                            // dP = dO · Vᵀ, then dS = scale · P ⊙ (dP − ⟨P, dP⟩) row by row.
                            matmul(t, t, dh, &mut ds, false, go, Mat::strided(&xi[cv..], 1, Q), false);
                            for (dr, pr) in ds.chunks_exact_mut(t).zip(ph.chunks_exact(t)) {
                                softmax_row_grad(dr, pr, scale);
                            }
                            // dQ += dS · K; dK += dSᵀ · Q.
                            let dq = Mat::strided(&mut dxi[cq..], Q, 1);
                            matmul_strided(t, dh, t, dq, true, Mat::rows(&ds, t), Mat::strided(&xi[ck..], Q, 1), false);
                            let dk = Mat::strided(&mut dxi[ck..], Q, 1);
                            let qm = Mat::strided(&xi[cq..], Q, 1);
                            matmul_strided(t, dh, t, dk, true, Mat::transposed(&ds, t), qm, false);
                        }
                    });
            }
            put_grad!(grads, &yg, gy);
            Ok(())
        });
    }
    Ok(y.put_tape(tape))
}
