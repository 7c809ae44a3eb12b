//! Direct convolution kernels for one input channel per group: depthwise convolutions
//! (EfficientNet) and channel-multiplier convolutions (PiT's pooling). A GEMM with `K·K` inner
//! length would waste most of its time packing.
//!
//! Two layouts: planes (one channel at a time, every tap a contiguous run over the padded
//! plane) for planes of useful size, and channels-last for the small planes of a network's
//! last stages (EfficientNet's 5×5 depthwise convolutions on 4×4 and 2×2 maps at 32 px). There
//! most taps of a plane fall into the padding, so the plane kernels spend most of their work on
//! zeros; channels-last visits only the taps that read the input, each a run over all channels.

use super::window::ConvGeom;
use crate::element::{transpose_into, Mat, Scratch};
use crate::simd::multiversion;
use crate::Element;

/// Layout of the direct (one input channel per group) kernels: the zero-padded input plane is
/// split into `stride²` phase planes (`phase (a, b)` holds padded rows `a, a+s, …` and columns
/// `b, b+s, …`), each `hq × wq` plus `k` spare zeros. Output rows are computed "wide", `wq`
/// columns of which the last `wq − wo` are junk: then every tap `(kh, kw)` is one contiguous
/// multiply-add of `ho · wq` elements at a fixed offset in phase `(kh mod s, kw mod s)`, which
/// vectorizes even for 4×4 planes and stride 2.
struct Phases {
    s: usize,
    wq: usize,
    hq: usize,
    plane: usize,
}

impl Phases {
    fn new(g: &ConvGeom) -> Self {
        let s = g.ah.stride;
        let extra = (g.k - 1) / s;
        let (hq, wq) = (g.ho + extra, g.wo + extra);
        Phases { s, wq, hq, plane: hq * wq + g.k }
    }
    fn len(&self) -> usize {
        self.s * self.s * self.plane
    }
    /// Offset of tap `(kh, kw)` in the phase buffer.
    fn tap(&self, kh: usize, kw: usize) -> usize {
        let s = self.s;
        ((kh % s) * s + kw % s) * self.plane + (kh / s) * self.wq + kw / s
    }
    /// Calls `f(input start, phase-buffer start, count)` for every run of input elements that
    /// lands in one phase row: input indices `start, start + s, …`, buffer indices contiguous.
    #[inline(always)]
    fn runs(&self, g: &ConvGeom, mut f: impl FnMut(usize, usize, usize)) {
        let (s, w) = (self.s, g.aw.len);
        for a in 0..s {
            let (r_lo, r_hi) = g.ah.valid(a, self.hq);
            for b in 0..s {
                let (c_lo, c_hi) = g.aw.valid(b, self.wq);
                if c_lo == c_hi {
                    continue;
                }
                let base = (a * s + b) * self.plane;
                for r in r_lo..r_hi {
                    let ih = r * s + a - g.ah.padding;
                    f(ih * w + c_lo * s + b - g.aw.padding, base + r * self.wq + c_lo, c_hi - c_lo);
                }
            }
        }
    }
    /// Fills the phase buffer `dst` from the plane `x`, zeros elsewhere.
    #[inline(always)]
    fn fill<E: Element>(&self, g: &ConvGeom, x: &[E], dst: &mut [E]) {
        dst.fill(E::zero());
        if self.s == 1 {
            // One phase: the padded plane, copied row by row.
            let (w, p) = (g.aw.len, g.aw.padding);
            for (r, row) in x.chunks_exact(w).enumerate() {
                let at = (r + g.ah.padding) * self.wq + p;
                dst[at..at + w].copy_from_slice(row);
            }
        } else {
            let s = self.s;
            self.runs(g, |i, q, n| {
                let src = x[i..].iter().step_by(s);
                dst[q..q + n].iter_mut().zip(src).for_each(|(d, v)| *d = *v);
            });
        }
    }
    /// Adds the phase buffer `src` onto the plane gradient `dx`.
    #[inline(always)]
    fn add_back<E: Element>(&self, g: &ConvGeom, src: &[E], dx: &mut [E]) {
        if self.s == 1 {
            let (w, p) = (g.aw.len, g.aw.padding);
            for (r, row) in dx.chunks_exact_mut(w).enumerate() {
                let at = (r + g.ah.padding) * self.wq + p;
                row.iter_mut().zip(&src[at..at + w]).for_each(|(d, v)| *d += *v);
            }
        } else {
            let s = self.s;
            self.runs(g, |i, q, n| {
                let dst = dx[i..].iter_mut().step_by(s);
                dst.zip(&src[q..q + n]).for_each(|(d, v)| *d += *v);
            });
        }
    }
}

multiversion! {
/// Direct forward of one image when every group has one input channel: `y` (`[o, ho, wo]`) is
/// overwritten.
pub(crate) fn direct_forward<E: Element>(g: &ConvGeom, x: &[E], w: &[E], y: &mut [E]) {
    let (hw, pp, k, og, wo) = (g.hw(), g.pp(), g.k, g.og(), g.wo);
    let ph = Phases::new(g);
    let wide_len = g.ho * ph.wq;
    let mut xq = Scratch::with_len(ph.len());
    let mut wide = Scratch::with_len(wide_len);
    for (o, yo) in y.chunks_exact_mut(pp).enumerate() {
        if o % og == 0 {
            ph.fill(g, &x[(o / og) * hw..][..hw], &mut xq);
        }
        wide.fill(E::zero());
        for kh in 0..k {
            for kw in 0..k {
                let wv = w[(o * k + kh) * k + kw];
                let src = &xq[ph.tap(kh, kw)..][..wide_len];
                for (a, &v) in wide.iter_mut().zip(src) {
                    *a += wv * v;
                }
            }
        }
        for (yr, wr) in yo.chunks_exact_mut(wo).zip(wide.chunks_exact(ph.wq)) {
            yr.copy_from_slice(&wr[..wo]);
        }
    }
}
}

multiversion! {
/// Direct backward of one image when every group has one input channel: adds into `dx`
/// (`[c, h, w]`) and `dw` (`[o, 1, k, k]`).
pub(crate) fn direct_backward<E: Element>(
    g: &ConvGeom,
    x: &[E],
    w: &[E],
    gy: &[E],
    dx: &mut [E],
    dw: &mut [E],
) {
    let (hw, pp, k, og, wo) = (g.hw(), g.pp(), g.k, g.og(), g.wo);
    let ph = Phases::new(g);
    let wide_len = g.ho * ph.wq;
    let mut xq = Scratch::with_len(ph.len());
    let mut dxq = Scratch::with_len(ph.len());
    // The output gradient on wide rows, junk columns zero so they contribute nothing.
    let mut gw = Scratch::zeroed(wide_len);
    for c in 0..g.c {
        ph.fill(g, &x[c * hw..][..hw], &mut xq);
        dxq.fill(E::zero());
        for o in c * og..(c + 1) * og {
            for (wr, gr) in gw.chunks_exact_mut(ph.wq).zip(gy[o * pp..][..pp].chunks_exact(wo)) {
                wr[..wo].copy_from_slice(gr);
            }
            for kh in 0..k {
                for kw in 0..k {
                    let (tap, at) = ((o * k + kh) * k + kw, ph.tap(kh, kw));
                    let wv = w[tap];
                    for (d, &gv) in dxq[at..at + wide_len].iter_mut().zip(gw.iter()) {
                        *d += wv * gv;
                    }
                    dw[tap] += dot(&xq[at..at + wide_len], &gw);
                }
            }
        }
        ph.add_back(g, &dxq, &mut dx[c * hw..][..hw]);
    }
}
}

/// Dot product in 16 independent lanes (so it vectorizes without reassociation).
#[inline(always)]
fn dot<E: Element>(a: &[E], b: &[E]) -> E {
    let mut lanes = [E::zero(); 16];
    let (ac, bc) = (a.chunks_exact(16), b.chunks_exact(16));
    let tail: E = ac.remainder().iter().zip(bc.remainder()).map(|(x, y)| *x * *y).sum();
    for (x, y) in ac.zip(bc) {
        for i in 0..16 {
            lanes[i] += x[i] * y[i];
        }
    }
    lanes.iter().copied().sum::<E>() + tail
}

/// Whether the channels-last kernels ([`channels_last_forward`], [`channels_last_backward`])
/// suit a depthwise convolution (one output channel per group) better than the plane kernels:
/// for maps of at most 8×8 (their plane rows are too short to fill a vector), or when the taps
/// inside the input plus the transposes in and out are fewer than the plane kernels'
/// multiply-adds. Measured on EfficientNet-B0 at 32 px: its depthwise convolutions took 525 ms
/// of a 1.6 s SimSiam step with the plane kernels alone, 207 ms with this choice.
pub(crate) fn channels_last_suits(g: &ConvGeom) -> bool {
    if g.ig() != 1 || g.og() != 1 {
        return false;
    }
    let s = g.ah.stride;
    let plane_work = g.k * g.k * g.ho * (g.wo + (g.k - 1) / s);
    let valid = |a: &super::window::Axis, out: usize| {
        (0..a.kernel)
            .map(|k| {
                let (lo, hi) = a.valid(k, out);
                hi - lo
            })
            .sum::<usize>()
    };
    let cl_work = valid(&g.ah, g.ho) * valid(&g.aw, g.wo) + g.hw() + 2 * g.pp();
    g.hw() <= 64 || cl_work < plane_work
}

/// `(output position, input position, tap)` for every tap of every output that reads inside
/// the input, outputs in order and taps in `(kh, kw)` order within each.
fn valid_taps(g: &ConvGeom) -> Vec<(usize, usize, usize)> {
    let (k, w) = (g.k, g.aw.len);
    // The input index output `o` reads through tap `t` on axis `a`, if inside the input.
    let read = |a: &super::window::Axis, out: usize, o: usize, t: usize| {
        let (lo, hi) = a.valid(t, out);
        (lo..hi).contains(&o).then(|| o * a.stride + t - a.padding)
    };
    let mut taps = Vec::new();
    for oh in 0..g.ho {
        for ow in 0..g.wo {
            for kh in 0..k {
                let Some(ih) = read(&g.ah, g.ho, oh, kh) else { continue };
                for kw in 0..k {
                    if let Some(iw) = read(&g.aw, g.wo, ow, kw) {
                        taps.push((oh * g.wo + ow, ih * w + iw, kh * k + kw));
                    }
                }
            }
        }
    }
    taps
}

/// `dst[i] += a[i] · b[i]`.
#[inline(always)]
fn mul_add<E: Element>(dst: &mut [E], a: &[E], b: &[E]) {
    for ((d, &x), &y) in dst.iter_mut().zip(a).zip(b) {
        *d += x * y;
    }
}

multiversion! {
/// Forward of consecutive images of a depthwise convolution ([`channels_last_suits`]) in
/// channels-last order: `y` (`[n, c, ho, wo]`) is overwritten. Each output sums its taps in
/// the order the plane kernel does, so both give the same bits.
pub(crate) fn channels_last_forward<E: Element>(g: &ConvGeom, x: &[E], w: &[E], y: &mut [E]) {
    let (c, hw, pp, kk) = (g.c, g.hw(), g.pp(), g.kk());
    let taps = valid_taps(g);
    let mut wt = Scratch::with_len(kk * c);
    transpose_into(Mat::strided(w, 1, kk), kk, c, &mut wt);
    let mut xt = Scratch::with_len(hw * c);
    let mut yt = Scratch::with_len(pp * c);
    for (xn, yn) in x.chunks_exact(c * hw).zip(y.chunks_exact_mut(c * pp)) {
        transpose_into(Mat::strided(xn, 1, hw), hw, c, &mut xt);
        yt.fill(E::zero());
        for &(p, i, t) in &taps {
            mul_add(&mut yt[p * c..][..c], &wt[t * c..][..c], &xt[i * c..][..c]);
        }
        transpose_into(Mat::strided(&yt, 1, c), c, pp, yn);
    }
}
}

multiversion! {
/// Backward of consecutive images of a depthwise convolution ([`channels_last_suits`]) in
/// channels-last order: adds into `dx` (`[n, c, h, w]`) and `dw` (`[c, 1, k, k]`).
pub(crate) fn channels_last_backward<E: Element>(
    g: &ConvGeom,
    x: &[E],
    w: &[E],
    gy: &[E],
    dx: &mut [E],
    dw: &mut [E],
) {
    let (c, hw, pp, kk) = (g.c, g.hw(), g.pp(), g.kk());
    let taps = valid_taps(g);
    let mut wt = Scratch::with_len(kk * c);
    transpose_into(Mat::strided(w, 1, kk), kk, c, &mut wt);
    let mut dwt = Scratch::zeroed(kk * c);
    let (mut xt, mut dxt) = (Scratch::with_len(hw * c), Scratch::with_len(hw * c));
    let mut gyt = Scratch::with_len(pp * c);
    for ((xn, gyn), dxn) in x.chunks_exact(c * hw).zip(gy.chunks_exact(c * pp)).zip(dx.chunks_exact_mut(c * hw)) {
        transpose_into(Mat::strided(xn, 1, hw), hw, c, &mut xt);
        transpose_into(Mat::strided(gyn, 1, pp), pp, c, &mut gyt);
        dxt.fill(E::zero());
        for &(p, i, t) in &taps {
            let gp = &gyt[p * c..][..c];
            mul_add(&mut dxt[i * c..][..c], &wt[t * c..][..c], gp);
            mul_add(&mut dwt[t * c..][..c], &xt[i * c..][..c], gp);
        }
        for (ci, dxc) in dxn.chunks_exact_mut(hw).enumerate() {
            for (q, d) in dxc.iter_mut().enumerate() {
                *d += dxt[q * c + ci];
            }
        }
    }
    for (ci, dwc) in dw.chunks_exact_mut(kk).enumerate() {
        for (t, d) in dwc.iter_mut().enumerate() {
            *d += dwt[t * c + ci];
        }
    }
}
}

#[cfg(test)]
mod tests {
    use super::super::window::Axis;
    use super::*;

    fn geom(n: usize, c: usize, h: usize, w: usize, k: usize, s: usize, p: usize) -> ConvGeom {
        let ah = Axis { len: h, kernel: k, stride: s, padding: p };
        let aw = Axis { len: w, kernel: k, stride: s, padding: p };
        let (ho, wo) = (ah.out_len().unwrap(), aw.out_len().unwrap());
        ConvGeom { n, c, o: c, groups: c, k, ah, aw, ho, wo }
    }

    fn values(len: usize, seed: usize) -> Vec<f32> {
        (0..len).map(|i| (((i * 37 + seed * 11) % 23) as f32 - 11.0) / 7.0).collect()
    }

    /// EfficientNet's last-stage shapes at 32 px (5×5 and 3×3 depthwise on 2×2 and 4×4 maps,
    /// stride 1 and 2) and two odd ones: the channels-last kernels are chosen for them, give
    /// the plane kernels' forward bit for bit and their gradients up to rounding.
    #[test]
    fn channels_last_agrees_with_the_plane_kernels_on_small_maps() {
        let shapes = [
            (3, 20, 2, 2, 5, 1, 2),
            (3, 9, 4, 4, 3, 1, 1),
            (2, 7, 8, 8, 3, 2, 1),
            (2, 17, 4, 4, 5, 1, 2),
            (2, 16, 4, 4, 5, 2, 2),
            (2, 5, 3, 5, 5, 2, 2),
        ];
        for &(n, c, h, w, k, s, p) in &shapes {
            let g = geom(n, c, h, w, k, s, p);
            assert!(channels_last_suits(&g), "{g:?}");
            let (x, wt, gy) = (values(n * c * h * w, 1), values(c * k * k, 2), values(n * c * g.pp(), 3));
            let mut y_plane = vec![0.0; n * c * g.pp()];
            for (yn, xn) in y_plane.chunks_exact_mut(c * g.pp()).zip(x.chunks_exact(c * h * w)) {
                direct_forward(&g, xn, &wt, yn);
            }
            let mut y_cl = vec![f32::NAN; n * c * g.pp()];
            channels_last_forward(&g, &x, &wt, &mut y_cl);
            assert_eq!(y_plane, y_cl, "{g:?}");

            let (mut dx_plane, mut dw_plane) = (vec![0.5; x.len()], vec![0.25; wt.len()]);
            for ((xn, gyn), dxn) in
                x.chunks_exact(c * h * w).zip(gy.chunks_exact(c * g.pp())).zip(dx_plane.chunks_exact_mut(c * h * w))
            {
                direct_backward(&g, xn, &wt, gyn, dxn, &mut dw_plane);
            }
            let (mut dx_cl, mut dw_cl) = (vec![0.5; x.len()], vec![0.25; wt.len()]);
            channels_last_backward(&g, &x, &wt, &gy, &mut dx_cl, &mut dw_cl);
            for (a, b) in dx_plane.iter().zip(&dx_cl).chain(dw_plane.iter().zip(&dw_cl)) {
                assert!((a - b).abs() <= 1e-5 * (1.0 + a.abs()), "{g:?}: {a} vs {b}");
            }
        }
        // Maps large enough that most taps read the input keep the plane kernels.
        assert!(!channels_last_suits(&geom(2, 8, 16, 16, 3, 1, 1)));
        assert!(!channels_last_suits(&geom(2, 8, 32, 32, 5, 2, 2)));
    }
}
