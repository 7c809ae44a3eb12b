//! Pooling over `[N, C, H, W]` images: max-pool 2d, average-pool 2d (PyTorch semantics, floor
//! mode) and global average pooling to `[N, C]` (adaptive average pool to 1×1, flattened).

use dfdx::prelude::{Const, Cpu, HasShape, PutTape, SplitTape, Tape, Tensor, TensorFromVec};
use rayon::prelude::*;

use super::grad::{grad_mut, put_grad, take_grad};
use super::window::{phase_of, phase_row, split_phases_2d, Axis};
use super::Image;
use crate::element::{view, Scratch};
use crate::simd::multiversion;
use crate::{Element, OpError};

/// Window of a pooling op: square kernel, stride, padding (both axes).
///
/// ```
/// use siamlab_model::Pool2dConfig;
/// // ResNet's stem pool: 3×3, stride 2, padding 1.
/// let cfg = Pool2dConfig::new(3).stride(2).padding(1);
/// assert_eq!(cfg.output_size(112, 112), Some((56, 56)));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pool2dConfig {
    /// Window size.
    pub kernel: usize,
    /// Step between windows.
    pub stride: usize,
    /// Padding on each side (implicit `-inf` for max, zeros for average).
    pub padding: usize,
    /// Average pooling only: divide by the whole window, padding included (PyTorch's default
    /// `count_include_pad=True`), rather than by the number of input elements in it.
    pub count_include_pad: bool,
}

impl Pool2dConfig {
    /// A `kernel × kernel` window with stride `kernel`, no padding, `count_include_pad` on
    /// (PyTorch's defaults).
    pub fn new(kernel: usize) -> Self {
        Pool2dConfig { kernel, stride: kernel, padding: 0, count_include_pad: true }
    }
    /// Sets the stride.
    pub fn stride(self, stride: usize) -> Self {
        Pool2dConfig { stride, ..self }
    }
    /// Sets the padding.
    pub fn padding(self, padding: usize) -> Self {
        Pool2dConfig { padding, ..self }
    }
    /// Sets `count_include_pad`.
    pub fn count_include_pad(self, count_include_pad: bool) -> Self {
        Pool2dConfig { count_include_pad, ..self }
    }
    /// Output `(height, width)` for an `h × w` input, or `None` when the window does not fit.
    pub fn output_size(&self, h: usize, w: usize) -> Option<(usize, usize)> {
        Some((self.axis(h).out_len()?, self.axis(w).out_len()?))
    }
    fn axis(&self, len: usize) -> Axis {
        Axis { len, kernel: self.kernel, stride: self.stride, padding: self.padding }
    }
    pub(crate) fn check(&self, op: &'static str, h: usize, w: usize) -> Result<(Axis, Axis, usize, usize), OpError> {
        if h == 0 || w == 0 {
            return Err(OpError::config(op, format!("empty {h}x{w} input")));
        }
        if self.padding * 2 > self.kernel {
            return Err(OpError::config(
                op,
                format!("padding {} exceeds half the kernel {}", self.padding, self.kernel),
            ));
        }
        let (ho, wo) = self.output_size(h, w).ok_or_else(|| {
            OpError::config(
                op,
                format!(
                    "kernel {} (stride {}, padding {}) does not fit a {h}x{w} input",
                    self.kernel, self.stride, self.padding
                ),
            )
        })?;
        Ok((self.axis(h), self.axis(w), ho, wo))
    }
}

/// Max pooling: each output is the largest input in its window (NaN wins, the first maximum in
/// row-major window order receives the gradient, as in PyTorch).
///
/// ```
/// use dfdx::prelude::*;
/// use siamlab_model::{max_pool2d, Pool2dConfig};
/// let dev = Cpu::default();
/// let x: Tensor<_, f32, _> = dev.sample_normal_like(&(2, Const::<4>, 8, 8));
/// let y = max_pool2d(x, Pool2dConfig::new(2)).unwrap();
/// assert_eq!(y.shape(), &(2, Const::<4>, 4, 4));
/// ```
pub fn max_pool2d<const C: usize, E: Element, T: Tape<E, Cpu>>(
    x: Tensor<Image<C>, E, Cpu, T>,
    cfg: Pool2dConfig,
) -> Result<Tensor<Image<C>, E, Cpu, T>, OpError> {
    let _prof = crate::profile::scope("max_pool2d.forward");
    let (x, mut tape) = E::contiguous(x)?.split_tape();
    let &(n, _, h, w) = x.shape();
    let (ah, aw, ho, wo) = cfg.check("max_pool2d", h, w)?;
    let (hw, pp) = (h * w, ho * wo);
    let mut y = vec![E::zero(); n * C * pp];
    // Index (within its input plane) of the element each output took.
    let mut arg = vec![UNSET; if T::OWNS_TAPE { n * C * pp } else { 0 }];
    if hw >= UNSET as usize {
        return Err(OpError::config("max_pool2d", "input plane exceeds 2^32 elements"));
    }
    {
        let xs = view(&x);
        let plane =
            |(xc, yc, ac): (&[E], &mut [E], Option<&mut [u32]>)| max_plane(&ah, &aw, cfg.kernel, wo, xc, yc, ac);
        if T::OWNS_TAPE {
            xs.par_chunks(hw)
                .zip(y.par_chunks_mut(pp))
                .zip(arg.par_chunks_mut(pp))
                .for_each(|((xc, yc), ac)| plane((xc, yc, Some(ac))));
        } else {
            xs.par_chunks(hw).zip(y.par_chunks_mut(pp)).for_each(|(xc, yc)| plane((xc, yc, None)));
        }
    }
    let dev = x.device().clone();
    let y = dev.try_tensor_from_vec(y, (n, Const::<C>, ho, wo))?;
    if T::OWNS_TAPE {
        let (xg, yg) = (x.ghost(), y.ghost());
        drop(x);
        tape.add_backward_op(move |grads| {
            let _prof = crate::profile::scope("max_pool2d.backward");
            let gy = take_grad!(grads, &yg);
            grad_mut!(grads, &xg).par_chunks_mut(hw).zip(gy.par_chunks(pp)).zip(arg.par_chunks(pp)).for_each(
                |((dxc, gyc), ac)| {
                    for (g, &i) in gyc.iter().zip(ac) {
                        dxc[i as usize] += *g;
                    }
                },
            );
            put_grad!(grads, &yg, gy);
            Ok(())
        });
    }
    Ok(y.put_tape(tape))
}

/// Marks an output whose window has not been visited yet (so an all `-inf` window still picks
/// a real input).
const UNSET: u32 = u32::MAX;

/// One plane: each output scans its window's taps inside the plane in `(kh, kw)` order, keeping
/// the first maximum (strictly greater replaces; NaN propagates) and its index. Outputs whose
/// window lies inside the row run a whole output row at a time, tap by tap, so the comparisons
/// vectorise along the row: with a stride `s > 1` the input is first split by phase (columns
/// `i·s + ph` side by side, see `split_phases_2d`), where each tap reads consecutive elements. The edge outputs
/// scan their window one by one.
fn max_plane<E: Element>(ah: &Axis, aw: &Axis, k: usize, wo: usize, x: &[E], y: &mut [E], arg: Option<&mut [u32]>) {
    let (h, w, s) = (ah.len, aw.len, aw.stride);
    // Inner output columns: `ow·s − p ≥ 0` and `ow·s − p + k ≤ w`.
    let lo = aw.padding.div_ceil(s).min(wo);
    let hi = if w + aw.padding >= k { ((w + aw.padding - k) / s + 1).min(wo) } else { 0 }.max(lo);
    let (hph, wph) = (h.div_ceil(s), w.div_ceil(s));
    let mut split = (s > 1 && hi > lo).then(|| Scratch::<E>::with_len(s * s * hph * wph));
    if let Some(ph) = split.as_mut() {
        split_phases_2d(x, h, w, s, ph);
    }
    let mut own_arg = arg.is_none().then(|| vec![0u32; y.len()]);
    let arg = match arg {
        Some(a) => a,
        None => own_arg.as_deref_mut().unwrap_or_default(),
    };
    let phases: (&[E], usize, usize) = match split.as_ref() {
        Some(ph) => (ph, hph, wph),
        None => (x, h, w),
    };
    max_plane_rows(ah, aw, k, wo, (lo, hi), x, phases, y, arg);
}

multiversion! {
/// The rows of [`max_plane`]: `inner` is the range of inner output columns, `phases` the input
/// split by phase (`(planes, phase plane height, row length)`; the input itself when the
/// stride is 1).
#[allow(clippy::too_many_arguments)]
fn max_plane_rows<E: Element>(
    ah: &Axis,
    aw: &Axis,
    k: usize,
    wo: usize,
    inner: (usize, usize),
    x: &[E],
    phases: (&[E], usize, usize),
    y: &mut [E],
    arg: &mut [u32],
) {
    let (h, w, s) = (ah.len, aw.len, aw.stride);
    let (lo, hi) = inner;
    let (ph_plane, hph, wph) = phases;
    // The taps of output `o` along an axis that land inside it.
    let taps = |a: &Axis, len: usize, o: usize| {
        let start = o * a.stride;
        (a.padding.saturating_sub(start), k.min((len + a.padding).saturating_sub(start)))
    };
    for (oh, (yr, ar)) in y.chunks_exact_mut(wo).zip(arg.chunks_exact_mut(wo)).enumerate() {
        let (kh_lo, kh_hi) = taps(ah, h, oh);
        // Edge outputs, one window at a time.
        for ow in (0..lo).chain(hi..wo) {
            let (kw_lo, kw_hi) = taps(aw, w, ow);
            let (mut best, mut at) = (E::neg_infinity(), UNSET);
            if kh_lo < kh_hi && kw_lo < kw_hi {
                // Start from the first tap; then a tap replaces the best when it is greater or
                // NaN, unless the best is NaN already.
                let first = (oh * ah.stride + kh_lo - ah.padding) * w + ow * s + kw_lo - aw.padding;
                (best, at) = (x[first], first as u32);
                for kh in kh_lo..kh_hi {
                    let start = (oh * ah.stride + kh - ah.padding) * w + ow * s + kw_lo - aw.padding;
                    for (j, &v) in x[start..start + (kw_hi - kw_lo)].iter().enumerate() {
                        let take = (v > best || v.is_nan()) && !best.is_nan();
                        best = if take { v } else { best };
                        at = if take { (start + j) as u32 } else { at };
                    }
                }
            }
            yr[ow] = best;
            ar[ow] = at;
        }
        if lo >= hi {
            continue;
        }
        let (best, at) = (&mut yr[lo..hi], &mut ar[lo..hi]);
        if kh_lo >= kh_hi {
            best.fill(E::neg_infinity());
            at.fill(UNSET);
            continue;
        }
        // Inner outputs, the whole range per tap. Tap (kh, kw) of output `ow` reads column
        // `ow·s + kw − p` = phase `(kw − p) mod s`, element `ow + ⌊(kw − p) / s⌋` of that phase.
        for kh in kh_lo..kh_hi {
            let r = oh * ah.stride + kh - ah.padding;
            for kw in 0..k {
                let d = kw as isize - aw.padding as isize;
                let (ph, q) = phase_of(d, s);
                let from = (lo as isize + q) as usize;
                let src = &ph_plane[phase_row(r, ph, s, hph, wph) + from..][..hi - lo];
                let base = (r * w + lo * s) as isize + d;
                if kh == kh_lo && kw == 0 {
                    best.copy_from_slice(src);
                    for (j, a) in at.iter_mut().enumerate() {
                        *a = (base + (j * s) as isize) as u32;
                    }
                    continue;
                }
                for (j, ((b, a), &v)) in best.iter_mut().zip(at.iter_mut()).zip(src).enumerate() {
                    let take = (v > *b || v.is_nan()) && !b.is_nan();
                    *b = if take { v } else { *b };
                    *a = if take { (base + (j * s) as isize) as u32 } else { *a };
                }
            }
        }
    }
}
}

/// Average pooling over each window (zeros for padding; see
/// [`Pool2dConfig::count_include_pad`] for the divisor).
///
/// ```
/// use dfdx::prelude::*;
/// use siamlab_model::{avg_pool2d, Pool2dConfig};
/// let dev = Cpu::default();
/// let x: Tensor<_, f32, _> = dev.ones_like(&(1, Const::<2>, 4, 4));
/// let y = avg_pool2d(x, Pool2dConfig::new(2)).unwrap();
/// assert_eq!(y.as_vec(), vec![1.0f32; 8]);
/// ```
pub fn avg_pool2d<const C: usize, E: Element, T: Tape<E, Cpu>>(
    x: Tensor<Image<C>, E, Cpu, T>,
    cfg: Pool2dConfig,
) -> Result<Tensor<Image<C>, E, Cpu, T>, OpError> {
    let _prof = crate::profile::scope("avg_pool2d.forward");
    let (x, mut tape) = E::contiguous(x)?.split_tape();
    let &(n, _, h, w) = x.shape();
    let (ah, aw, ho, wo) = cfg.check("avg_pool2d", h, w)?;
    let (hw, pp) = (h * w, ho * wo);
    // The divisor of each output position (the same for every plane).
    let inv: Vec<E> = (0..pp)
        .map(|o| {
            let count = if cfg.count_include_pad {
                cfg.kernel * cfg.kernel
            } else {
                let rows = (0..cfg.kernel).filter(|&kh| in_range(&ah, kh, o / wo)).count();
                let cols = (0..cfg.kernel).filter(|&kw| in_range(&aw, kw, o % wo)).count();
                rows * cols
            };
            E::one() / E::from_usize(count.max(1)).expect("count fits the float type")
        })
        .collect();
    let mut y = vec![E::zero(); n * C * pp];
    {
        let xs = view(&x);
        xs.par_chunks(hw).zip(y.par_chunks_mut(pp)).for_each(|(xc, yc)| {
            avg_taps(&ah, &aw, cfg.kernel, wo, |i, o| yc[o] += xc[i]);
            yc.iter_mut().zip(&inv).for_each(|(v, s)| *v *= *s);
        });
    }
    let dev = x.device().clone();
    let y = dev.try_tensor_from_vec(y, (n, Const::<C>, ho, wo))?;
    if T::OWNS_TAPE {
        let (xg, yg) = (x.ghost(), y.ghost());
        drop(x);
        let k = cfg.kernel;
        tape.add_backward_op(move |grads| {
            let _prof = crate::profile::scope("avg_pool2d.backward");
            let gy = take_grad!(grads, &yg);
            grad_mut!(grads, &xg).par_chunks_mut(hw).zip(gy.par_chunks(pp)).for_each(|(dxc, gyc)| {
                avg_taps(&ah, &aw, k, wo, |i, o| dxc[i] += gyc[o] * inv[o]);
            });
            put_grad!(grads, &yg, gy);
            Ok(())
        });
    }
    Ok(y.put_tape(tape))
}

fn in_range(a: &Axis, k: usize, o: usize) -> bool {
    let i = o * a.stride + k;
    i >= a.padding && i - a.padding < a.len
}

/// Calls `f(input_index, output_index)` for every (input, output) pair of a plane's windows.
#[inline]
fn avg_taps(ah: &Axis, aw: &Axis, k: usize, wo: usize, mut f: impl FnMut(usize, usize)) {
    let ho = ah.out_len().unwrap_or(0);
    for kh in 0..k {
        let (oh_lo, oh_hi) = ah.valid(kh, ho);
        for kw in 0..k {
            let (ow_lo, ow_hi) = aw.valid(kw, wo);
            for oh in oh_lo..oh_hi {
                let ih = oh * ah.stride + kh - ah.padding;
                let base = ih * aw.len + kw;
                for ow in ow_lo..ow_hi {
                    f(base + ow * aw.stride - aw.padding, oh * wo + ow);
                }
            }
        }
    }
}

/// Global average pooling: `[N, C, H, W]` → `[N, C]`, the mean of each plane (PyTorch's
/// `adaptive_avg_pool2d(x, 1).flatten(1)`).
///
/// ```
/// use dfdx::prelude::*;
/// use siamlab_model::global_avg_pool2d;
/// let dev = Cpu::default();
/// let x: Tensor<_, f32, _> = dev.ones_like(&(3, Const::<8>, 5, 5));
/// let y = global_avg_pool2d(x).unwrap();
/// assert_eq!(y.shape(), &(3, Const::<8>));
/// ```
pub fn global_avg_pool2d<const C: usize, E: Element, T: Tape<E, Cpu>>(
    x: Tensor<Image<C>, E, Cpu, T>,
) -> Result<Tensor<(usize, Const<C>), E, Cpu, T>, OpError> {
    let _prof = crate::profile::scope("global_avg_pool2d.forward");
    let (x, mut tape) = E::contiguous(x)?.split_tape();
    let &(n, _, h, w) = x.shape();
    let hw = h * w;
    if hw == 0 {
        return Err(OpError::config("global_avg_pool2d", "empty input plane"));
    }
    let inv = E::one() / E::from_usize(hw).expect("plane size fits the float type");
    let mut y = vec![E::zero(); n * C];
    {
        let xs = view(&x);
        y.par_iter_mut()
            .zip(xs.par_chunks(hw))
            .with_min_len(64)
            .for_each(|(yv, xc)| *yv = xc.iter().copied().sum::<E>() * inv);
    }
    let dev = x.device().clone();
    let y = dev.try_tensor_from_vec(y, (n, Const::<C>))?;
    if T::OWNS_TAPE {
        let (xg, yg) = (x.ghost(), y.ghost());
        drop(x);
        tape.add_backward_op(move |grads| {
            let _prof = crate::profile::scope("global_avg_pool2d.backward");
            let gy = take_grad!(grads, &yg);
            grad_mut!(grads, &xg).par_chunks_mut(hw).zip(gy.par_iter()).with_min_len(64).for_each(|(dxc, g)| {
                let v = *g * inv;
                dxc.iter_mut().for_each(|d| *d += v);
            });
            put_grad!(grads, &yg, gy);
            Ok(())
        });
    }
    Ok(y.put_tape(tape))
}
