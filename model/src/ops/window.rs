//! Sliding-window geometry shared by the convolution and pooling kernels.

use crate::simd::multiversion;
use crate::Element;

/// One spatial axis of a sliding window: input length, kernel, stride, padding.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Axis {
    /// Input length.
    pub len: usize,
    /// Kernel length.
    pub kernel: usize,
    /// Stride.
    pub stride: usize,
    /// Zero padding on each side.
    pub padding: usize,
}

impl Axis {
    /// Output length (floor mode, as PyTorch's default), or `None` when the padded input is
    /// shorter than the kernel.
    pub(crate) fn out_len(&self) -> Option<usize> {
        let padded = self.len + 2 * self.padding;
        if self.stride == 0 || self.kernel == 0 || padded < self.kernel {
            return None;
        }
        Some((padded - self.kernel) / self.stride + 1)
    }

    /// The outputs `lo..hi` (of `out` outputs) whose tap `k` reads inside the input, i.e.
    /// `0 <= o * stride + k - padding < len`.
    #[inline]
    pub(crate) fn valid(&self, k: usize, out: usize) -> (usize, usize) {
        let (s, p) = (self.stride, self.padding);
        let lo = if p > k { (p - k).div_ceil(s) } else { 0 };
        let hi = if self.len + p > k { ((self.len + p - k - 1) / s + 1).min(out) } else { 0 };
        (lo.min(hi), hi)
    }
}

/// The shapes of one convolution, checked once and shared by its kernels.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ConvGeom {
    /// Batch size.
    pub n: usize,
    /// Input channels.
    pub c: usize,
    /// Output channels.
    pub o: usize,
    /// Groups.
    pub groups: usize,
    /// Kernel size (square).
    pub k: usize,
    /// Height axis.
    pub ah: Axis,
    /// Width axis.
    pub aw: Axis,
    /// Output height.
    pub ho: usize,
    /// Output width.
    pub wo: usize,
}

impl ConvGeom {
    /// Input channels per group.
    pub fn ig(&self) -> usize {
        self.c / self.groups
    }
    /// Output channels per group.
    pub fn og(&self) -> usize {
        self.o / self.groups
    }
    /// Rows of a group's column matrix: `ig · k · k`.
    pub fn kk(&self) -> usize {
        self.ig() * self.k * self.k
    }
    /// Input plane size `H · W`.
    pub fn hw(&self) -> usize {
        self.ah.len * self.aw.len
    }
    /// Output plane size `Ho · Wo`.
    pub fn pp(&self) -> usize {
        self.ho * self.wo
    }
    /// A 1×1, stride-1, unpadded convolution: the image itself is the column matrix.
    pub fn pointwise(&self) -> bool {
        self.k == 1 && self.ah.stride == 1 && self.ah.padding == 0
    }
    /// Stride 1 with "same" padding (output size = input size): each column-matrix row is the
    /// input plane shifted by a constant offset, with the wrapped-around columns zeroed.
    pub fn same_stride1(&self) -> bool {
        self.ah.stride == 1 && self.ho == self.ah.len && self.wo == self.aw.len
    }
    /// One input channel per group: the direct kernel beats a GEMM with `k = K·K`.
    pub fn direct(&self) -> bool {
        self.ig() == 1 && self.groups > 1
    }
}

/// Where tap offset `d` (a column `ow·s + d` of output column `ow`, `d = kw − padding`; rows
/// alike) lands in planes split by [`split_phases_2d`] with stride `s`: phase `d mod s`,
/// element `ow + ⌊d / s⌋`.
#[inline]
pub(crate) fn phase_of(d: isize, s: usize) -> (usize, isize) {
    (d.rem_euclid(s as isize) as usize, d.div_euclid(s as isize))
}

/// Where row `r`'s phase-`ph` columns start in a plane split by [`split_phases_2d`] with stride
/// `s` into phase planes of `hph × wph`; with `s = 1`, in the plane itself (`wph = w`).
#[inline]
pub(crate) fn phase_row(r: usize, ph: usize, s: usize, hph: usize, wph: usize) -> usize {
    ((r % s) * s + ph) * hph * wph + (r / s) * wph
}

multiversion! {
/// Splits the plane `x` (`h × w`) by row and column phase for stride `s` into `out`, laid out
/// `[s, s, hph, wph]` (`hph = ⌈h / s⌉`, `wph = ⌈w / s⌉`): `x[r·w + c]` goes to phase plane
/// `(r mod s, c mod s)` at `(r / s, c / s)`; slots past a short plane's edge are left as they
/// were. A strided window's tap then reads, over all outputs, one phase plane at a constant
/// offset: when `wph` equals the output width, one contiguous run (see `im2col`).
pub(crate) fn split_phases_2d<E: Element>(x: &[E], h: usize, w: usize, s: usize, out: &mut [E]) {
    let (hph, wph) = (h.div_ceil(s), w.div_ceil(s));
    let plane = hph * wph;
    for (r, row) in x.chunks_exact(w).take(h).enumerate() {
        let (phh, i) = (r % s, r / s);
        let at = |phw: usize| ((phh * s + phw) * plane) + i * wph;
        if s == 2 {
            let (even, odd) = out[at(0)..].split_at_mut(plane);
            let (even, odd) = (&mut even[..wph], &mut odd[..wph]);
            for ((e, o), pair) in even.iter_mut().zip(odd.iter_mut()).zip(row.chunks_exact(2)) {
                (*e, *o) = (pair[0], pair[1]);
            }
            if w % 2 == 1 {
                even[wph - 1] = row[w - 1];
            }
            continue;
        }
        for phw in 0..s.min(w) {
            let dst = &mut out[at(phw)..][..wph];
            for (d, v) in dst.iter_mut().zip(row[phw..].iter().step_by(s)) {
                *d = *v;
            }
        }
    }
}
}

multiversion! {
/// The inverse of [`split_phases_2d`], adding each element back onto `x`.
pub(crate) fn add_merged_phases_2d<E: Element>(split: &[E], h: usize, w: usize, s: usize, x: &mut [E]) {
    let (hph, wph) = (h.div_ceil(s), w.div_ceil(s));
    let plane = hph * wph;
    for (r, row) in x.chunks_exact_mut(w).take(h).enumerate() {
        let (phh, i) = (r % s, r / s);
        let at = |phw: usize| ((phh * s + phw) * plane) + i * wph;
        if s == 2 {
            let (even, odd) = split[at(0)..].split_at(plane);
            let (even, odd) = (&even[..wph], &odd[..wph]);
            for ((e, o), pair) in even.iter().zip(odd).zip(row.chunks_exact_mut(2)) {
                pair[0] += *e;
                pair[1] += *o;
            }
            if w % 2 == 1 {
                row[w - 1] += even[wph - 1];
            }
            continue;
        }
        for phw in 0..s.min(w) {
            let src = &split[at(phw)..][..wph];
            for (d, v) in row[phw..].iter_mut().step_by(s).zip(src) {
                *d += *v;
            }
        }
    }
}
}

#[cfg(test)]
mod tests {
    use super::Axis;

    #[test]
    fn valid_ranges_match_brute_force() {
        for len in 1..7 {
            for kernel in 1..5 {
                for stride in 1..4 {
                    for padding in 0..3 {
                        let a = Axis { len, kernel, stride, padding };
                        let Some(out) = a.out_len() else { continue };
                        for k in 0..kernel {
                            let want: Vec<usize> = (0..out)
                                .filter(|&o| {
                                    let i = (o * stride + k) as isize - padding as isize;
                                    i >= 0 && (i as usize) < len
                                })
                                .collect();
                            let (lo, hi) = a.valid(k, out);
                            assert_eq!((lo..hi).collect::<Vec<_>>(), want, "{a:?} k={k}");
                        }
                    }
                }
            }
        }
    }
}
