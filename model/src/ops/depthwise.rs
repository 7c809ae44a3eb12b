//! Direct convolution kernels for one input channel per group: depthwise convolutions
//! (EfficientNet) and channel-multiplier convolutions (PiT's pooling). A GEMM with `K·K` inner
//! length would waste most of its time packing.

use super::window::ConvGeom;
use crate::element::Scratch;
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
