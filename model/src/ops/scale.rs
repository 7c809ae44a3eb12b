//! Per-channel scaling of images by a per-sample vector: the "excite" step of
//! squeeze-and-excitation.

use dfdx::prelude::{Const, Cpu, HasShape, Merge, PutTape, SplitTape, Tape, Tensor, TensorFromVec};
use rayon::prelude::*;

use super::grad::{grad_mut, put_grad, take_grad};
use super::Image;
use crate::element::view;
use crate::{Element, OpError};

/// `y[n, c, h, w] = x[n, c, h, w] · s[n, c]`, with gradients into both `x` and `s`.
///
/// Errors when `x` and `s` disagree on the batch size.
///
/// ```
/// use dfdx::prelude::*;
/// use siamlab_model::scale_channels;
/// let dev = Cpu::default();
/// let x = dev.ones_like(&(1, Const::<2>, 2, 2));
/// let s = dev.tensor_from_vec(vec![2.0f32, 3.0], (1, Const::<2>));
/// let y = scale_channels(x, s).unwrap();
/// assert_eq!(y.as_vec(), vec![2.0, 2.0, 2.0, 2.0, 3.0, 3.0, 3.0, 3.0]);
/// ```
pub fn scale_channels<const C: usize, E, T, TS>(
    x: Tensor<Image<C>, E, Cpu, T>,
    s: Tensor<(usize, Const<C>), E, Cpu, TS>,
) -> Result<Tensor<Image<C>, E, Cpu, T>, OpError>
where
    E: Element,
    T: Tape<E, Cpu> + Merge<TS>,
    TS: Tape<E, Cpu>,
{
    let _prof = crate::profile::scope("scale_channels.forward");
    let (s, ts) = E::contiguous(s)?.split_tape();
    let (x, tx) = E::contiguous(x)?.split_tape();
    let mut tape = tx.merge(ts);
    let &(n, _, h, w) = x.shape();
    if s.shape().0 != n {
        return Err(OpError::config(
            "scale_channels",
            format!("images have batch {n}, scales have batch {}", s.shape().0),
        ));
    }
    let hw = h * w;
    let mut y = vec![E::zero(); n * C * hw];
    {
        let (xs, ss) = (view(&x), view(&s));
        y.par_chunks_mut(hw.max(1))
            .zip(xs.par_chunks(hw.max(1)))
            .zip(ss.par_iter())
            .with_min_len(16)
            .for_each(|((yc, xc), &m)| yc.iter_mut().zip(xc).for_each(|(y, &x)| *y = x * m));
    }
    let y = x.device().clone().try_tensor_from_vec(y, (n, Const::<C>, h, w))?;
    if T::OWNS_TAPE {
        let (xg, sg, yg) = (x.ghost(), s.ghost(), y.ghost());
        tape.add_backward_op(move |grads| {
            let _prof = crate::profile::scope("scale_channels.backward");
            let gy = take_grad!(grads, &yg);
            let (xs, ss) = (view(&x), view(&s));
            grad_mut!(grads, &xg)
                .par_chunks_mut(hw.max(1))
                .zip(gy.par_chunks(hw.max(1)))
                .zip(ss.par_iter())
                .with_min_len(16)
                .for_each(|((dc, gc), &m)| dc.iter_mut().zip(gc).for_each(|(d, &g)| *d += g * m));
            grad_mut!(grads, &sg)
                .par_iter_mut()
                .zip(gy.par_chunks(hw.max(1)))
                .zip(xs.par_chunks(hw.max(1)))
                .with_min_len(16)
                .for_each(|((d, gc), xc)| {
                    *d += gc.iter().zip(xc).map(|(&g, &x)| g * x).sum::<E>();
                });
            put_grad!(grads, &yg, gy);
            Ok(())
        });
    }
    Ok(y.put_tape(tape))
}
