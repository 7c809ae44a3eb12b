//! Attention's head layout changes as single gather / scatter ops over the rayon pool: one part
//! of the fused `qkv` projection `[N, T, parts·D]` to `[N·H, T, D/H]`, and the heads back to
//! `[N, T, D]`. With dfdx they are a slice, a reshape and a permute, each a single-threaded copy
//! (and the same again in backward).

use dfdx::prelude::{Const, Cpu, HasShape, PutTape, SplitTape, Tape, Tensor, TensorFromVec};
use rayon::prelude::*;

use super::grad::{grad_mut, put_grad, take_grad};
use crate::element::view;
use crate::{Element, OpError};

/// Tokens `[N, T, W]`.
type Tokens<const W: usize, E, T> = Tensor<(usize, usize, Const<W>), E, Cpu, T>;
/// Per-head matrices `[N·H, T, D/H]`.
type Heads<E, T> = Tensor<(usize, usize, usize), E, Cpu, T>;

/// Part `part` of `parts` equal slices of the last axis of `x` (`[N, T, W]`, `W = parts·D`),
/// split into `heads` heads: `[N·H, T, D/H]`, head `h` of token `t` of image `n` at row
/// `n·H + h`. `split_heads(qkv, 1, 3, H)` is timm's `k`.
///
/// ```
/// use dfdx::prelude::*;
/// use siamlab_model::split_heads;
/// let dev = Cpu::default();
/// // one image, one token, q = [0, 1, 2, 3], k = [4, 5, 6, 7]; two heads of 2
/// let qk = dev.tensor_from_vec((0..8).map(|v| v as f32).collect(), (1, 1, Const::<8>));
/// let k = split_heads(qk, 1, 2, 2).unwrap();
/// assert_eq!((k.shape().0, k.as_vec()), (2, vec![4.0, 5.0, 6.0, 7.0]));
/// ```
pub fn split_heads<const W: usize, E: Element, T: Tape<E, Cpu>>(
    x: Tokens<W, E, T>,
    part: usize,
    parts: usize,
    heads: usize,
) -> Result<Heads<E, T>, OpError> {
    let _prof = crate::profile::scope("split_heads.forward");
    if parts == 0 || heads == 0 || part >= parts || !W.is_multiple_of(parts) || !(W / parts).is_multiple_of(heads) {
        return Err(OpError::config(
            "split_heads",
            format!("part {part} of {parts} of width {W} into {heads} heads: widths do not divide"),
        ));
    }
    let (x, mut tape) = E::contiguous(x)?.split_tape();
    let (n, t, _) = *x.shape();
    let (d, dh) = (W / parts, W / parts / heads);
    let off = part * d;
    // Output block `b = n·H + h` is `[T, dh]`: row `t` comes from `x[n, t, off + h·dh ..][..dh]`.
    let src = move |b: usize, t_: usize| (b / heads * t + t_) * W + off + b % heads * dh;
    let mut y = vec![E::zero(); n * heads * t * dh];
    let xs = view(&x);
    y.par_chunks_mut((t * dh).max(1)).enumerate().for_each(|(b, yb)| {
        for (t_, row) in yb.chunks_exact_mut(dh.max(1)).enumerate() {
            let s = src(b, t_);
            row.copy_from_slice(&xs[s..s + dh]);
        }
    });
    let y = x.device().clone().try_tensor_from_vec(y, (n * heads, t, dh))?;
    if T::OWNS_TAPE {
        let (xg, yg) = (x.ghost(), y.ghost());
        tape.add_backward_op(move |grads| {
            let _prof = crate::profile::scope("split_heads.backward");
            let gy = take_grad!(grads, &yg);
            // Image `n`'s gradient rows only receive from blocks n·H .. n·H + H.
            grad_mut!(grads, &xg).par_chunks_mut((t * W).max(1)).enumerate().for_each(|(img, dx)| {
                for h in 0..heads {
                    let b = img * heads + h;
                    for t_ in 0..t {
                        let s = src(b, t_) - img * t * W;
                        let g = &gy[(b * t + t_) * dh..][..dh];
                        for (d, &v) in dx[s..s + dh].iter_mut().zip(g) {
                            *d += v;
                        }
                    }
                }
            });
            put_grad!(grads, &yg, gy);
            Ok(())
        });
    }
    Ok(y.put_tape(tape))
}

/// The heads back to tokens: `[N·H, T, D/H]` to `[N, T, D]` (the inverse of
/// [`split_heads`] for one part). Errors unless `D` is `heads` times the last axis.
///
/// ```
/// use dfdx::prelude::*;
/// use siamlab_model::merge_heads;
/// let dev = Cpu::default();
/// let y = dev.tensor_from_vec(vec![1.0f32, 2.0, 3.0, 4.0], (2, 1, 2));
/// assert_eq!(merge_heads::<4, _, _>(y, 2).unwrap().as_vec(), vec![1.0, 2.0, 3.0, 4.0]);
/// ```
pub fn merge_heads<const D: usize, E: Element, T: Tape<E, Cpu>>(
    x: Heads<E, T>,
    heads: usize,
) -> Result<Tokens<D, E, T>, OpError> {
    let _prof = crate::profile::scope("merge_heads.forward");
    let (x, mut tape) = E::contiguous(x)?.split_tape();
    let (nh, t, dh) = *x.shape();
    if heads == 0 || nh % heads != 0 || dh * heads != D {
        return Err(OpError::config("merge_heads", format!("[{nh}, {t}, {dh}] into {heads} heads of width {D}")));
    }
    let n = nh / heads;
    let mut y = vec![E::zero(); n * t * D];
    let xs = view(&x);
    y.par_chunks_mut((t * D).max(1)).enumerate().for_each(|(img, yi)| {
        for h in 0..heads {
            for t_ in 0..t {
                let s = ((img * heads + h) * t + t_) * dh;
                yi[t_ * D + h * dh..][..dh].copy_from_slice(&xs[s..s + dh]);
            }
        }
    });
    let y = x.device().clone().try_tensor_from_vec(y, (n, t, Const::<D>))?;
    if T::OWNS_TAPE {
        let (xg, yg) = (x.ghost(), y.ghost());
        tape.add_backward_op(move |grads| {
            let _prof = crate::profile::scope("merge_heads.backward");
            let gy = take_grad!(grads, &yg);
            grad_mut!(grads, &xg).par_chunks_mut((t * dh).max(1)).enumerate().for_each(|(b, dx)| {
                let (img, h) = (b / heads, b % heads);
                for (t_, row) in dx.chunks_exact_mut(dh.max(1)).enumerate() {
                    let g = &gy[(img * t + t_) * D + h * dh..][..dh];
                    for (d, &v) in row.iter_mut().zip(g) {
                        *d += v;
                    }
                }
            });
            put_grad!(grads, &yg, gy);
            Ok(())
        });
    }
    Ok(y.put_tape(tape))
}
