//! Image ↔ column transforms for GEMM convolution.
//!
//! Layouts are PyTorch's: an image is `[C, H, W]` row-major, a column matrix is
//! `[C·K·K, Ho·Wo]` with rows ordered `(c, kh, kw)`, weights are `[O, C/groups, K, K]`.

use super::window::{add_merged_phases_2d, phase_of, phase_row, split_phases_2d, ConvGeom};
use crate::element::Scratch;
use crate::Element;

/// Fills one image's columns of `col` from `x` (`[ig, h, w]`), zeros where the window is
/// padding. `col` has `ig·k·k` rows of `ld` elements; the image's `ho·wo` columns start at
/// column `off` (several images side by side make one wider GEMM).
pub(crate) fn im2col<E: Element>(g: &ConvGeom, x: &[E], col: &mut [E], ld: usize, off: usize) {
    if g.same_stride1() {
        return im2col_same(g, x, col, ld, off);
    }
    if let Some(plane) = strided_plane(g) {
        return im2col_strided(g, plane, x, col, ld, off);
    }
    let (k, s, p, w, wo, pp) = (g.k, g.aw.stride, g.aw.padding, g.aw.len, g.wo, g.pp());
    let (h, hph, wph) = (g.ah.len, g.ah.len.div_ceil(s), w.div_ceil(s));
    // Strided: each channel split by phase first, so every row copy below is one contiguous
    // run (see `split_phases_2d`).
    let mut split = (s > 1).then(|| Scratch::<E>::with_len(s * s * hph * wph));
    let mut rows = col.chunks_exact_mut(ld);
    for xc in x.chunks_exact(g.hw()).take(g.ig()) {
        let (plane, plane_h, row_len) = match split.as_mut() {
            Some(buf) => {
                split_phases_2d(xc, h, w, s, buf);
                (&buf[..], hph, wph)
            }
            None => (xc, h, w),
        };
        for kh in 0..k {
            let (oh_lo, oh_hi) = g.ah.valid(kh, g.ho);
            for kw in 0..k {
                let (ow_lo, ow_hi) = g.aw.valid(kw, wo);
                let row = &mut rows.next().expect("col has ig·k·k rows")[off..off + pp];
                row[..oh_lo * wo].fill(E::zero());
                row[oh_hi * wo..].fill(E::zero());
                zero_columns(&mut row[oh_lo * wo..oh_hi * wo], wo, ow_lo, ow_hi);
                let (ph, q) = phase_of(kw as isize - p as isize, s);
                let from = (ow_lo as isize + q) as usize;
                for oh in oh_lo..oh_hi {
                    let ih = oh * g.ah.stride + kh - p;
                    let src = &plane[phase_row(ih, ph, s, plane_h, row_len) + from..][..ow_hi - ow_lo];
                    row[oh * wo..][ow_lo..ow_hi].copy_from_slice(src);
                }
            }
        }
    }
}

/// Adds one image's columns of `col` (laid out as for [`im2col`]) back onto the image
/// gradient `dx` (`[ig, h, w]`).
/// `col` is scratch: entries that read padding may be zeroed on the way.
pub(crate) fn col2im_add<E: Element>(g: &ConvGeom, col: &mut [E], ld: usize, off: usize, dx: &mut [E]) {
    if g.same_stride1() {
        return col2im_same(g, col, ld, off, dx);
    }
    if let Some(plane) = strided_plane(g) {
        return col2im_strided(g, plane, col, ld, off, dx);
    }
    let (k, s, p, w, wo, pp) = (g.k, g.aw.stride, g.aw.padding, g.aw.len, g.wo, g.pp());
    let (h, hph, wph) = (g.ah.len, g.ah.len.div_ceil(s), w.div_ceil(s));
    // Strided: sums gathered per phase (contiguous runs), then added back in one pass.
    let mut split = (s > 1).then(|| Scratch::<E>::with_len(s * s * hph * wph));
    let mut rows = col.chunks_exact(ld).map(|r| &r[off..off + pp]);
    for dxc in dx.chunks_exact_mut(g.hw()).take(g.ig()) {
        let (plane, plane_h, row_len): (&mut [E], usize, usize) = match split.as_mut() {
            Some(buf) => {
                buf.fill(E::zero());
                (&mut buf[..], hph, wph)
            }
            None => (&mut *dxc, h, w),
        };
        for kh in 0..k {
            let (oh_lo, oh_hi) = g.ah.valid(kh, g.ho);
            for kw in 0..k {
                let (ow_lo, ow_hi) = g.aw.valid(kw, wo);
                let row = rows.next().expect("col has ig·k·k rows");
                let (ph, q) = phase_of(kw as isize - p as isize, s);
                let from = (ow_lo as isize + q) as usize;
                for oh in oh_lo..oh_hi {
                    let ih = oh * g.ah.stride + kh - p;
                    let dst = &mut plane[phase_row(ih, ph, s, plane_h, row_len) + from..][..ow_hi - ow_lo];
                    for (d, v) in dst.iter_mut().zip(&row[oh * wo..][ow_lo..ow_hi]) {
                        *d += *v;
                    }
                }
            }
        }
        if let Some(buf) = split.as_ref() {
            add_merged_phases_2d(buf, h, w, s, dxc);
        }
    }
}

/// For a strided convolution whose output is as wide as a column phase (`Wo = ⌈W / s⌉`: 3×3/2
/// padding 1, a 7×7/2 stem, a 1×1/2 shortcut, a patch embedding), the size of a phase plane of
/// [`split_phases_2d`]: output position `i` of tap `(kh, kw)` then reads element `i + d` of one
/// phase plane, `d` constant over the tap, so the tap's columns are one contiguous run.
fn strided_plane(g: &ConvGeom) -> Option<usize> {
    let s = g.aw.stride;
    (s > 1 && g.ah.stride == s && g.wo == g.aw.len.div_ceil(s)).then(|| g.ah.len.div_ceil(s) * g.wo)
}

/// The taps of a strided convolution read through phase planes (see [`strided_plane`]), in
/// `(kh, kw)` order: the phase plane, the offset `d` from output position to plane element,
/// the range `[lo, hi)` of output positions from the first to the last inside the image, and
/// the rows and columns `(oh_lo, oh_hi, ow_lo, ow_hi)` inside it.
struct StridedTap {
    phase: usize,
    d: isize,
    lo: usize,
    hi: usize,
    rows: (usize, usize),
    cols: (usize, usize),
}

fn strided_taps(g: &ConvGeom) -> Vec<StridedTap> {
    let (k, s) = (g.k, g.aw.stride);
    let mut taps = Vec::with_capacity(k * k);
    for kh in 0..k {
        let (phh, qh) = phase_of(kh as isize - g.ah.padding as isize, s);
        let rows = g.ah.valid(kh, g.ho);
        for kw in 0..k {
            let (phw, qw) = phase_of(kw as isize - g.aw.padding as isize, s);
            let cols = g.aw.valid(kw, g.wo);
            let (lo, hi) = if rows.0 < rows.1 && cols.0 < cols.1 {
                (rows.0 * g.wo + cols.0, (rows.1 - 1) * g.wo + cols.1)
            } else {
                (0, 0)
            };
            taps.push(StridedTap { phase: phh * s + phw, d: qh * g.wo as isize + qw, lo, hi, rows, cols });
        }
    }
    taps
}

/// [`im2col`] through phase planes: per channel one split, then per tap one contiguous copy
/// and the fix-ups (rows and columns that read padding zeroed).
fn im2col_strided<E: Element>(g: &ConvGeom, plane: usize, x: &[E], col: &mut [E], ld: usize, off: usize) {
    let (s, wo, pp) = (g.aw.stride, g.wo, g.pp());
    let taps = strided_taps(g);
    let mut split = Scratch::<E>::with_len(s * s * plane);
    let mut rows = col.chunks_exact_mut(ld);
    for xc in x.chunks_exact(g.hw()).take(g.ig()) {
        split_phases_2d(xc, g.ah.len, g.aw.len, s, &mut split);
        for t in &taps {
            let row = &mut rows.next().expect("col has ig·k·k rows")[off..off + pp];
            row[..t.lo].fill(E::zero());
            row[t.hi..].fill(E::zero());
            if t.hi > t.lo {
                let from = (t.lo as isize + t.d) as usize;
                row[t.lo..t.hi].copy_from_slice(&split[t.phase * plane + from..][..t.hi - t.lo]);
                zero_columns(&mut row[t.rows.0 * wo..t.rows.1 * wo], wo, t.cols.0, t.cols.1);
            }
        }
    }
}

/// [`col2im_add`] through phase planes: each tap's run added onto a phase plane (after zeroing
/// the entries of `col` that read padding), then the planes merged back onto `dx`.
fn col2im_strided<E: Element>(g: &ConvGeom, plane: usize, col: &mut [E], ld: usize, off: usize, dx: &mut [E]) {
    let (s, wo, pp) = (g.aw.stride, g.wo, g.pp());
    let taps = strided_taps(g);
    let mut split = Scratch::<E>::with_len(s * s * plane);
    let mut rows = col.chunks_exact_mut(ld);
    for dxc in dx.chunks_exact_mut(g.hw()).take(g.ig()) {
        split.fill(E::zero());
        for t in &taps {
            let row = &mut rows.next().expect("col has ig·k·k rows")[off..off + pp];
            if t.hi == t.lo {
                continue;
            }
            zero_columns(&mut row[t.rows.0 * wo..t.rows.1 * wo], wo, t.cols.0, t.cols.1);
            let from = (t.lo as isize + t.d) as usize;
            for (a, v) in split[t.phase * plane + from..][..t.hi - t.lo].iter_mut().zip(&row[t.lo..t.hi]) {
                *a += *v;
            }
        }
        add_merged_phases_2d(&split, g.ah.len, g.aw.len, s, dxc);
    }
}

/// Zeros columns `[0, lo)` and `[hi, width)` of the rows (`width` long) of `rows`. Column by
/// column: these are one or two elements per row, where a `fill` per row would be a `memset`
/// call per element.
#[inline]
fn zero_columns<E: Element>(rows: &mut [E], width: usize, lo: usize, hi: usize) {
    for c in (0..lo).chain(hi..width) {
        for v in rows.iter_mut().skip(c).step_by(width) {
            *v = E::zero();
        }
    }
}

/// For a stride-1 same-padding tap `(kh, kw)`: the plane offset `d` (input index = output
/// index + d), the output range `[lo, hi)` to copy (valid rows, clamped to the input), and the
/// valid column range `[ow_lo, ow_hi)` within each row.
#[inline(always)]
fn same_tap(g: &ConvGeom, kh: usize, kw: usize) -> (isize, usize, usize, usize, usize) {
    let (w, hw, p) = (g.aw.len, g.hw(), g.aw.padding);
    let d = (kh as isize - p as isize) * w as isize + kw as isize - p as isize;
    let (oh_lo, oh_hi) = g.ah.valid(kh, g.ho);
    let (ow_lo, ow_hi) = g.aw.valid(kw, g.wo);
    // A tap entirely in the padding (a 1×1 plane, say) gives the empty range `[hw, hw)`.
    let lo = ((oh_lo * w) as isize).max(-d).min(hw as isize) as usize;
    let hi = ((oh_hi * w) as isize).min(hw as isize - d).max(lo as isize) as usize;
    (d, lo, hi, ow_lo, ow_hi)
}

/// [`im2col`] for stride-1 same-padding convolutions: one block copy per row plus fix-ups.
fn im2col_same<E: Element>(g: &ConvGeom, x: &[E], col: &mut [E], ld: usize, off: usize) {
    let (k, w, pp) = (g.k, g.aw.len, g.pp());
    let mut rows = col.chunks_exact_mut(ld);
    for xc in x.chunks_exact(g.hw()).take(g.ig()) {
        for kh in 0..k {
            for kw in 0..k {
                let row = &mut rows.next().expect("col has ig·k·k rows")[off..off + pp];
                let (d, lo, hi, ow_lo, ow_hi) = same_tap(g, kh, kw);
                row[..lo].fill(E::zero());
                row[hi..].fill(E::zero());
                if hi > lo {
                    let src = (lo as isize + d) as usize;
                    row[lo..hi].copy_from_slice(&xc[src..src + (hi - lo)]);
                    zero_columns(row, w, ow_lo, ow_hi);
                }
            }
        }
    }
}

/// [`col2im_add`] for stride-1 same-padding convolutions.
fn col2im_same<E: Element>(g: &ConvGeom, col: &mut [E], ld: usize, off: usize, dx: &mut [E]) {
    let (k, w, pp) = (g.k, g.aw.len, g.pp());
    let mut rows = col.chunks_exact_mut(ld);
    for dxc in dx.chunks_exact_mut(g.hw()).take(g.ig()) {
        for kh in 0..k {
            for kw in 0..k {
                let row = &mut rows.next().expect("col has ig·k·k rows")[off..off + pp];
                let (d, lo, hi, ow_lo, ow_hi) = same_tap(g, kh, kw);
                if hi == lo {
                    continue;
                }
                zero_columns(&mut row[lo - lo % w..], w, ow_lo, ow_hi);
                let dst = (lo as isize + d) as usize;
                for (a, v) in dxc[dst..dst + (hi - lo)].iter_mut().zip(&row[lo..hi]) {
                    *a += *v;
                }
            }
        }
    }
}
