//! Stride-1 "same" convolutions of small feature maps as one GEMM per kernel tap.
//!
//! im2col builds `C·K·K` rows per output position, and at a 4×4 map with padding 1 almost a
//! third of them are padding zeros that the GEMM multiplies anyway (8×8: a sixth). Here the
//! images of a task are first laid out channels-last with the batch inside the plane,
//! `[H, W, N, C]`: for a kernel tap `(kh, kw)` the output positions that read inside the image
//! form whole rows of that layout (`[rows · N, C]` with `C` contiguous), so each tap is a GEMM
//! over exactly the products that are not padding, with no column matrix at all:
//!
//! - forward: `y[pos, :] (+)= x[pos + shift, :] · W_tap` (`[C, O]` per tap);
//! - input gradient: `dx[pos + shift, :] (+)= dy[pos, :] · W_tapᵀ` (`[O, C]` per tap);
//! - weight gradient: `dW_tap += dy[pos, :]ᵀ · x[pos + shift, :]`.
//!
//! Every operand is row-major or a column-major left factor, the layouts gemm runs at full
//! speed (see `element::matmul_strided`). The centre tap reads every position, so it writes
//! its output instead of adding to zeros. Only the layout changes (two transposes each way);
//! the sums are the same products as im2col's without the zero terms.

use super::window::ConvGeom;
use crate::element::{matmul_strided, Mat, Scratch};
use crate::Element;

/// Largest output plane (`Ho · Wo`) that goes through the per-tap kernels: up to 8×8 (the
/// last two stages of a CIFAR ResNet-18), where the padding share of im2col's columns is
/// largest. Larger maps keep im2col, whose padding share is small.
const MAX_PLANE: usize = 64;

/// Whether the convolution `g` runs through this module: one group, a kernel wider than one,
/// stride 1 with "same" padding, and a small output plane.
pub(crate) fn suits(g: &ConvGeom) -> bool {
    g.groups == 1 && g.k > 1 && g.same_stride1() && g.aw.stride == 1 && g.pp() <= MAX_PLANE
}

/// The weights `[O, C, K, K]` regrouped per tap: `[K·K, C, O]` when `in_major` (the forward
/// GEMM's right factor), else `[K·K, O, C]` (the input gradient's).
pub(crate) fn pack_weights<E: Element>(g: &ConvGeom, w: &[E], in_major: bool) -> Scratch<E> {
    let (c, o, kk) = (g.c, g.o, g.k * g.k);
    let mut out = Scratch::with_len(w.len());
    // Loops ordered so that writes run along the output's rows (a 512→512 3×3 weight is 9 MB:
    // scattered writes would miss the cache and TLB on every element).
    if in_major {
        // out[t][ci][oi]: `OB` output channels at a time, their weights staying in cache.
        const OB: usize = 16;
        for o0 in (0..o).step_by(OB) {
            let ob = OB.min(o - o0);
            for t in 0..kk {
                for ci in 0..c {
                    let dst = &mut out[(t * c + ci) * o + o0..][..ob];
                    for (j, d) in dst.iter_mut().enumerate() {
                        *d = w[((o0 + j) * c + ci) * kk + t];
                    }
                }
            }
        }
    } else {
        // out[t][oi][ci]: one output channel's `C·K·K` weights at a time.
        for (oi, wo) in w.chunks_exact(c * kk).enumerate() {
            for t in 0..kk {
                let dst = &mut out[(t * o + oi) * c..][..c];
                for (d, v) in dst.iter_mut().zip(wo[t..].iter().step_by(kk)) {
                    *d = *v;
                }
            }
        }
    }
    out
}

/// `[N, C, P]` (a run of images, planes of `P` positions) to `[P, N, C]`.
fn to_planes_last<E: Element>(x: &[E], n: usize, c: usize, p: usize, out: &mut [E]) {
    const TILE: usize = 16;
    for (ni, xn) in x.chunks_exact(c * p).enumerate() {
        for c0 in (0..c).step_by(TILE) {
            for p0 in (0..p).step_by(TILE) {
                for ci in c0..(c0 + TILE).min(c) {
                    let src = &xn[ci * p..][p0..(p0 + TILE).min(p)];
                    for (j, &v) in src.iter().enumerate() {
                        out[((p0 + j) * n + ni) * c + ci] = v;
                    }
                }
            }
        }
    }
}

/// `[P, N, C]` back to `[N, C, P]`, written or (with `accumulate`) added.
fn from_planes_last<E: Element>(src: &[E], n: usize, c: usize, p: usize, out: &mut [E], accumulate: bool) {
    const TILE: usize = 16;
    for (ni, on) in out.chunks_exact_mut(c * p).enumerate() {
        for c0 in (0..c).step_by(TILE) {
            for p0 in (0..p).step_by(TILE) {
                for ci in c0..(c0 + TILE).min(c) {
                    let dst = &mut on[ci * p..][p0..(p0 + TILE).min(p)];
                    for (j, d) in dst.iter_mut().enumerate() {
                        let v = src[((p0 + j) * n + ni) * c + ci];
                        *d = if accumulate { *d + v } else { v };
                    }
                }
            }
        }
    }
}

/// One tap's region: output positions `(oh, ow)` for `oh` in `rows`, `ow` in `cols`, read the
/// input at `(oh + dh, ow + dw)`.
struct Region {
    rows: (usize, usize),
    cols: (usize, usize),
    /// The input row and column of output position `(rows.0, cols.0)`.
    first_in: (usize, usize),
}

/// The taps of a `K × K` kernel, the centre first, with their regions (taps that read only
/// padding are left out).
fn taps(g: &ConvGeom) -> impl Iterator<Item = (usize, Region)> + '_ {
    let (k, p) = (g.k, g.ah.padding);
    let centre = p * k + p;
    std::iter::once(centre).chain((0..k * k).filter(move |&t| t != centre)).filter_map(move |t| {
        let (kh, kw) = (t / k, t % k);
        let rows = g.ah.valid(kh, g.ho);
        let cols = g.aw.valid(kw, g.wo);
        if rows.0 >= rows.1 || cols.0 >= cols.1 {
            return None;
        }
        let first_in = (rows.0 + kh - p, cols.0 + kw - p);
        Some((t, Region { rows, cols, first_in }))
    })
}

/// Calls `f(out_row, in_row, len)` for the runs of `[P, N, ·]` rows a tap's region covers
/// (`len` rows of the layout each): one run when the region spans whole image rows, else one
/// per image row.
fn runs(g: &ConvGeom, r: &Region, n: usize, mut f: impl FnMut(usize, usize, usize)) {
    let (w, wo) = (g.aw.len, g.wo);
    let (r0, r1) = r.rows;
    let (c0, c1) = r.cols;
    let (ih0, iw0) = r.first_in;
    if c0 == 0 && c1 == wo && wo == w {
        return f(r0 * wo * n, ih0 * w * n, (r1 - r0) * wo * n);
    }
    for (i, oh) in (r0..r1).enumerate() {
        f((oh * wo + c0) * n, ((ih0 + i) * w + iw0) * n, (c1 - c0) * n);
    }
}

/// Forward of a run of `n` images `x` (`[n, C, H, W]`) into `y` (`[n, O, Ho, Wo]`,
/// overwritten), with the weights packed by [`pack_weights`]`(…, true)`.
pub(crate) fn forward<E: Element>(g: &ConvGeom, x: &[E], w_in_major: &[E], y: &mut [E], parallel: bool) {
    let (c, o, hw, pp) = (g.c, g.o, g.hw(), g.pp());
    let n = x.len() / (c * hw);
    let mut xt = Scratch::with_len(x.len());
    to_planes_last(x, n, c, hw, &mut xt);
    let mut yt = Scratch::with_len(y.len());
    for (i, (t, region)) in taps(g).enumerate() {
        let wt = Mat::rows(&w_in_major[t * c * o..][..c * o], o);
        runs(g, &region, n, |out, inp, len| {
            let dst = Mat::strided(&mut yt[out * o..], o, 1);
            matmul_strided(len, o, c, dst, i > 0, Mat::rows(&xt[inp * c..], c), wt, parallel);
        });
    }
    from_planes_last(&yt, n, o, pp, y, false);
}

/// Backward of a run of `n` images: adds the input gradient into `dx` (`[n, C, H, W]`) and
/// the weight gradient into `dw_taps` (per tap, `[K·K, O, C]`; [`add_weight_grad`] adds it to
/// a weight gradient), from the output gradient `gy` (`[n, O, Ho, Wo]`) and the weights packed
/// by [`pack_weights`]`(…, false)`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward<E: Element>(
    g: &ConvGeom,
    x: &[E],
    w_out_major: &[E],
    gy: &[E],
    dx: &mut [E],
    dw_taps: &mut [E],
    parallel: bool,
) {
    let (c, o, hw, pp) = (g.c, g.o, g.hw(), g.pp());
    let n = x.len() / (c * hw);
    let mut xt = Scratch::with_len(x.len());
    to_planes_last(x, n, c, hw, &mut xt);
    let mut gyt = Scratch::with_len(gy.len());
    to_planes_last(gy, n, o, pp, &mut gyt);
    let mut dxt = Scratch::with_len(x.len());
    for (i, (t, region)) in taps(g).enumerate() {
        let wt = Mat::rows(&w_out_major[t * o * c..][..o * c], c);
        let dw_tap = &mut dw_taps[t * o * c..][..o * c];
        runs(g, &region, n, |out, inp, len| {
            let gy_run = &gyt[out * o..];
            let dst = Mat::strided(&mut dxt[inp * c..], c, 1);
            matmul_strided(len, c, o, dst, i > 0, Mat::rows(gy_run, o), wt, parallel);
            let (gm, xm) = (Mat::transposed(gy_run, o), Mat::rows(&xt[inp * c..], c));
            matmul_strided(o, c, len, Mat::strided(&mut dw_tap[..], c, 1), true, gm, xm, parallel);
        });
    }
    from_planes_last(&dxt, n, c, hw, dx, true);
}

/// Adds a weight gradient accumulated per tap by [`backward`] (`[K·K, O, C]`) onto `dw`
/// (`[O, C, K, K]`).
pub(crate) fn add_weight_grad<E: Element>(g: &ConvGeom, dw: &mut [E], dw_taps: &[E]) {
    let (c, o, kk) = (g.c, g.o, g.k * g.k);
    for (oi, dwo) in dw.chunks_exact_mut(c * kk).enumerate() {
        for t in 0..kk {
            let src = &dw_taps[(t * o + oi) * c..][..c];
            for (d, &v) in dwo[t..].iter_mut().step_by(kk).zip(src) {
                *d += v;
            }
        }
    }
}
