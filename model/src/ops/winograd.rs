//! 3×3 stride-1 "same" convolutions through Winograd's minimal filtering F(4×4, 3×3)
//! (Lavin & Gray, 2015): the algorithm cuDNN and oneDNN offer for these layers.
//!
//! Each output plane is cut into 4×4 tiles; tile `t` reads a 6×6 input window `d_t` (zeros
//! outside the image). With the fixed matrices `Bᵀ` (6×6), `G` (6×3) and `Aᵀ` (4×6) of the
//! interpolation points 0, ±1, ±2 (the paper's):
//!
//! - `U = G·w·Gᵀ` per `(o, c)` (6×6), `V_t = Bᵀ·d_t·B` per `(c, t)`;
//! - for each of the 36 positions `ξ` of those 6×6 matrices, one GEMM
//!   `M_ξ (O × T) = U_ξ (O × C) · V_ξ (C × T)`;
//! - the output tile `y_t = Aᵀ·M_t·A`.
//!
//! That is 36 multiply-adds per `(o, c)` and tile of 16 outputs where the direct sum needs 144:
//! 4× fewer (F(2×2, 3×3), used before, saves 2.25×), and the transformed blocks the GEMMs read
//! hold 36/16 values per input value, not 16/4. Backward is the exact adjoint of these steps (so the
//! gradients are those of the computation that ran): `Ĝ_t = A·dy_t·Aᵀ`, `dU_ξ += Ĝ_ξ · V_ξᵀ`,
//! `dV_ξ = U_ξᵀ · Ĝ_ξ`, `dx` window `+= B·dV_t·Bᵀ` (windows overlap by two rows and columns) and
//! `dw = Gᵀ·dU·G`. The coefficients (up to ±8 and 1/24) round more than F(2×2, 3×3)'s: in
//! fp32 up to about 5e-6 of the largest output in the tests below (F(2×2, 3×3): under 2e-6),
//! measured against the exact sums.
//!
//! Work is split like the other kernels: one run of images per rayon thread, a few images per
//! block so the transformed blocks stay in cache.

use rayon::prelude::*;

use super::window::ConvGeom;
use crate::element::{matmul_strided, Mat, Scratch};
use crate::simd::multiversion;
use crate::Element;

/// Outputs per tile side.
const R: usize = 4;
/// Input window side (`R + 2`).
const S: usize = 6;
/// Positions of a transformed tile (`S²`).
const P: usize = 36;
/// Cap on the elements of one transformed block (`P · channels · tiles`), per thread.
const BLOCK_ELEMS: usize = 2 << 20;
/// Tiles per block the GEMMs aim for.
const BLOCK_TILES: usize = 256;
/// Fewest GEMM rows (tiles) per task before the batch runs as one block (see [`plan`]).
const MIN_ROWS: usize = 128;

/// The switch set by [`set_winograd`]: 0 unset (the environment decides), 1 on, 2 off.
static MODE: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

/// Turns the Winograd kernels on or off for the whole process, overriding `SIAMLAB_CONV`
/// (off: 3×3 convolutions run im2col + GEMM, as before Winograd; e.g. for bit-for-bit
/// comparisons with runs made that way).
pub fn set_winograd(on: bool) {
    MODE.store(if on { 1 } else { 2 }, std::sync::atomic::Ordering::Relaxed);
}

/// Whether `SIAMLAB_CONV=im2col` (read once) or [`set_winograd`] turned the kernels off.
fn disabled() -> bool {
    static OFF: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    match MODE.load(std::sync::atomic::Ordering::Relaxed) {
        1 => false,
        2 => true,
        _ => *OFF.get_or_init(|| std::env::var("SIAMLAB_CONV").is_ok_and(|v| v.eq_ignore_ascii_case("im2col"))),
    }
}

/// Whether the convolution `g` runs through this module: one group, a 3×3 kernel, stride 1,
/// padding 1, enough channels for the GEMMs to pay (not a stem reading RGB), and a plane that
/// is even or large.
pub(crate) fn suits(g: &ConvGeom) -> bool {
    g.groups == 1
        && g.k == 3
        && g.ah.stride == 1
        && g.aw.stride == 1
        && g.ah.padding == 1
        && g.aw.padding == 1
        && g.c >= 16
        && g.o >= 16
        // Planes that are not whole tiles waste the tiles' missing rows and columns: at 3×3
        // (ResNet-18's last stage at 96 px) 36 products per 9 outputs where the per-tap kernels
        // skip the padding.
        && (g.pp() > 64 || (g.ho.is_multiple_of(R) && g.wo.is_multiple_of(R)))
        && !disabled()
}

/// The tiling of one image: `th × tw` tiles of `R × R` outputs, read from a zero-padded
/// channels-last copy of `ph × pw` positions.
#[derive(Clone, Copy)]
struct Tiles {
    th: usize,
    tw: usize,
    ph: usize,
    pw: usize,
}

impl Tiles {
    fn new(g: &ConvGeom) -> Self {
        let (th, tw) = (g.ho.div_ceil(R), g.wo.div_ceil(R));
        Tiles { th, tw, ph: R * th + 2, pw: R * tw + 2 }
    }
    fn per_img(&self) -> usize {
        self.th * self.tw
    }
}

/// Images per rayon task and per block, and whether the GEMMs run on every thread. A task's
/// run of images gives its GEMMs `chunk · tiles` rows; when that is under [`MIN_ROWS`] (small
/// planes: one tile per 4×4 image) the transformed weights, `36 · C · O`, would be read from
/// memory by every task for a few rows each, so the whole batch is one block instead and each
/// GEMM is split over the threads.
fn plan(g: &ConvGeom) -> (usize, usize, bool) {
    let threads = rayon::current_num_threads().max(1);
    let tasks = threads.min(g.n).max(1);
    let chunk = g.n.div_ceil(tasks).max(1);
    let per_img = Tiles::new(g).per_img();
    if tasks > 1 && chunk * per_img < MIN_ROWS {
        return (g.n, g.n, true);
    }
    let by_tiles = BLOCK_TILES.div_ceil(per_img);
    let by_memory = BLOCK_ELEMS / (P * g.c.max(g.o) * per_img).max(1);
    (chunk, by_tiles.min(by_memory).clamp(1, chunk), false)
}

/// The rational coefficients of `G` (as `E`): ¼, ⅙, 1/12, 1/24.
#[derive(Clone, Copy)]
struct Coef<E> {
    q: E,
    s: E,
    t: E,
    f: E,
}

impl<E: Element> Coef<E> {
    fn new() -> Self {
        Coef { q: k(0.25), s: k(1.0 / 6.0), t: k(1.0 / 12.0), f: k(1.0 / 24.0) }
    }
}

/// A transform coefficient as `E`.
#[inline(always)]
fn k<E: Element>(v: f64) -> E {
    E::from_f64(v).expect("small constants are representable")
}

/// `G·v` for a 3-vector.
#[inline(always)]
fn g6<E: Element>(k: Coef<E>, a: E, b: E, d: E) -> [E; S] {
    let (ad, bt) = ((a + d) * k.s, b * k.s);
    let (e, m) = (a * k.f + d * k.s, b * k.t);
    [a * k.q, -ad - bt, bt - ad, e + m, e - m, d]
}

/// `Gᵀ·v` for a 6-vector.
#[inline(always)]
fn gt6<E: Element>(k: Coef<E>, v: [E; S]) -> [E; 3] {
    let (p12, m12, p34, m34) = (v[1] + v[2], v[2] - v[1], v[3] + v[4], v[3] - v[4]);
    [v[0] * k.q - p12 * k.s + p34 * k.f, m12 * k.s + m34 * k.t, (p34 - p12) * k.s + v[5]]
}

/// `Bᵀ·v` for a 6-vector.
#[inline(always)]
fn bt6<E: Element>(v: [E; S]) -> [E; S] {
    let (two, four, five) = (k::<E>(2.0), k::<E>(4.0), k::<E>(5.0));
    let (d0, d1, d2, d3, d4, d5) = (v[0], v[1], v[2], v[3], v[4], v[5]);
    let (a, b) = (d4 - four * d2, d3 - four * d1);
    let (c, e) = (d4 - d2, (d3 - d1) * two);
    [four * d0 - five * d2 + d4, a + b, a - b, c + e, c - e, four * d1 - five * d3 + d5]
}

/// `B·v` (the adjoint of [`bt6`]).
#[inline(always)]
fn b6<E: Element>(v: [E; S]) -> [E; S] {
    let (two, four, five) = (k::<E>(2.0), k::<E>(4.0), k::<E>(5.0));
    let (v0, v1, v2, v3, v4, v5) = (v[0], v[1], v[2], v[3], v[4], v[5]);
    let (p12, m12, p34, m34) = (v1 + v2, v2 - v1, v3 + v4, v3 - v4);
    [
        four * v0,
        four * m12 - two * m34 + four * v5,
        -five * v0 - four * p12 - p34,
        -m12 + two * m34 - five * v5,
        v0 + p12 + p34,
        v5,
    ]
}

/// `Aᵀ·v` for a 6-vector.
#[inline(always)]
fn at6<E: Element>(v: [E; S]) -> [E; R] {
    let (two, four, eight) = (k::<E>(2.0), k::<E>(4.0), k::<E>(8.0));
    let (p12, m12, p34, m34) = (v[1] + v[2], v[1] - v[2], v[3] + v[4], v[3] - v[4]);
    [v[0] + p12 + p34, m12 + two * m34, p12 + four * p34, m12 + eight * m34 + v[5]]
}

/// `A·v` (the adjoint of [`at6`]).
#[inline(always)]
fn a6<E: Element>(g: [E; R]) -> [E; S] {
    let (two, four, eight) = (k::<E>(2.0), k::<E>(4.0), k::<E>(8.0));
    let (e, o) = (g[0] + g[2], g[1] + g[3]);
    let (e2, o2) = (g[0] + four * g[2], two * g[1] + eight * g[3]);
    [g[0], e + o, e - o, e2 + o2, e2 - o2, g[3]]
}

/// `outs[·][i] = f(ins[·][i])` for every lane `i` (or `+=` when `ADD`): one 1-D transform of
/// every tile row or column, across the channels, so the vector units apply (the slices are
/// cut to one length first, which lets the compiler drop the bounds checks and vectorise).
#[inline(always)]
fn lanes<E: Element, const I: usize, const O: usize, const ADD: bool>(
    ins: [&[E]; I],
    outs: [&mut [E]; O],
    f: impl Fn([E; I]) -> [E; O],
) {
    let n = ins[0].len();
    let ins = ins.map(|v| &v[..n]);
    let mut outs = outs.map(|v| &mut v[..n]);
    for i in 0..n {
        let v = f(std::array::from_fn(|k| ins[k][i]));
        for (o, x) in outs.iter_mut().zip(v) {
            o[i] = if ADD { o[i] + x } else { x };
        }
    }
}

/// The slices at `idx` (distinct) of `t`.
#[inline(always)]
fn pick<'a, E, const M: usize, const N: usize>(t: &'a mut [&mut [E]; M], idx: [usize; N]) -> [&'a mut [E]; N] {
    t.get_disjoint_mut(idx).expect("distinct positions").map(|v| &mut **v)
}

/// The first `N` runs of `len` elements of `buf`.
#[inline(always)]
fn split_mut<E, const N: usize>(buf: &mut [E], len: usize) -> [&mut [E]; N] {
    let mut it = buf[..N * len].chunks_exact_mut(len);
    std::array::from_fn(|_| it.next().expect("N runs"))
}

/// See [`split_mut`].
#[inline(always)]
fn split<E, const N: usize>(buf: &[E], len: usize) -> [&[E]; N] {
    let mut it = buf[..N * len].chunks_exact(len);
    std::array::from_fn(|_| it.next().expect("N runs"))
}

/// `U = G·w·Gᵀ` for every `(o, c)`, laid out `[rows][P][cols]`: `[C][P][O]` when
/// `in_major` (the forward's right factors), otherwise `[O][P][C]` (the input gradient's).
fn weights_u<E: Element>(g: &ConvGeom, w: &[E], in_major: bool) -> Scratch<E> {
    let (c, o) = (g.c, g.o);
    let cols = if in_major { o } else { c };
    // The taps regrouped `[rows][9][cols]` so the transform runs along contiguous columns.
    let mut t = Scratch::with_len(9 * c * o);
    if in_major {
        // w is [O][C·9]; t is its transpose.
        transpose(w, o, 9 * c, &mut t, false);
    } else {
        // Per output channel, [C][9] to [9][C].
        t.par_chunks_exact_mut(9 * c).zip(w.par_chunks_exact(9 * c)).for_each(|(tr, wr)| {
            transpose(wr, c, 9, tr, false);
        });
    }
    let mut u = Scratch::with_len(P * c * o);
    u.par_chunks_exact_mut(P * cols).zip(t.par_chunks_exact(9 * cols)).for_each(|(ur, tr)| u_row(cols, tr, ur));
    u
}

multiversion! {
/// `G·w·Gᵀ` of one row of kernels: `tr` is `[9][cols]` (the taps), `ur` `[P][cols]`.
fn u_row<E: Element>(cols: usize, tr: &[E], ur: &mut [E]) {
    let h = Coef::<E>::new();
    let g = |v: [E; 3]| g6(h, v[0], v[1], v[2]);
    // G along each kernel column into `a` (`[S][3][cols]`), then along each row.
    let mut a = Scratch::with_len(3 * S * cols);
    {
        let mut at: [&mut [E]; 3 * S] = split_mut(&mut a, cols);
        for l in 0..3 {
            let col: [&[E]; 3] = std::array::from_fn(|k| &tr[(3 * k + l) * cols..][..cols]);
            let dst = pick(&mut at, std::array::from_fn::<_, S, _>(|i| 3 * i + l));
            lanes::<E, 3, S, false>(col, dst, g);
        }
    }
    for (i, out) in ur.chunks_exact_mut(S * cols).enumerate() {
        let row: [&[E]; 3] = std::array::from_fn(|l| &a[(3 * i + l) * cols..][..cols]);
        let dst: [&mut [E]; S] = split_mut(out, cols);
        lanes::<E, 3, S, false>(row, dst, g);
    }
}
}

/// Adds `Gᵀ·dU·G` onto the weight gradient `dw` (`[O, C, 3, 3]`); `du` is `[C][P][O]`.
fn add_weight_grad<E: Element>(g: &ConvGeom, du: &[E], dw: &mut [E]) {
    let (c, o) = (g.c, g.o);
    // Per input channel, the 9 taps along contiguous output channels `[C][9][O]`, then
    // transposed in.
    let mut t = Scratch::with_len(9 * c * o);
    t.par_chunks_exact_mut(9 * o).zip(du.par_chunks_exact(P * o)).for_each(|(tc, dc)| dw_row(o, dc, tc));
    // dw is [O][C·9], t its transpose.
    transpose(&t, 9 * c, o, dw, true);
}

multiversion! {
/// `Gᵀ·dU·G` of one input channel: `dc` is `[P][o]`, `tc` `[9][o]` (the taps).
fn dw_row<E: Element>(o: usize, dc: &[E], tc: &mut [E]) {
    let h = Coef::<E>::new();
    let g = |v: [E; S]| gt6(h, v);
    // Gᵀ along each column of dU into `a` (`[3][S][o]`), then along each row.
    let mut a = Scratch::with_len(3 * S * o);
    {
        let mut at: [&mut [E]; 3 * S] = split_mut(&mut a, o);
        for j in 0..S {
            let col: [&[E]; S] = std::array::from_fn(|i| &dc[(i * S + j) * o..][..o]);
            let dst = pick(&mut at, std::array::from_fn::<_, 3, _>(|r| r * S + j));
            lanes::<E, S, 3, false>(col, dst, g);
        }
    }
    for (r, out) in tc.chunks_exact_mut(3 * o).enumerate() {
        let row: [&[E]; S] = std::array::from_fn(|j| &a[(r * S + j) * o..][..o]);
        let dst: [&mut [E]; 3] = split_mut(out, o);
        lanes::<E, S, 3, false>(row, dst, g);
    }
}
}

/// Writes (or adds, when `add`) the transpose of the row-major `rows × cols` matrix `src` into
/// `dst` (`cols × rows`), in tiles so both sides stay in cache, bands of `dst` rows in
/// parallel.
fn transpose<E: Element>(src: &[E], rows: usize, cols: usize, dst: &mut [E], add: bool) {
    const TILE: usize = 32;
    let band = |(b, out): (usize, &mut [E])| {
        let j0 = b * TILE;
        transpose_strided(&src[j0..], cols, rows, out.len() / rows, out, rows, add);
    };
    let dst = &mut dst[..rows * cols];
    if rows * cols >= 1 << 16 {
        dst.par_chunks_mut(TILE * rows).enumerate().for_each(band);
    } else {
        dst.chunks_mut(TILE * rows).enumerate().for_each(band);
    }
}

/// Copies the planes `x` (`[ch, h, w]`) channels-last into `out` (`[ph, pw, ch]`) at offset
/// `(pad, pad)`, zeros elsewhere.
#[allow(clippy::too_many_arguments)]
fn to_channels_last<E: Element>(
    x: &[E],
    ch: usize,
    h: usize,
    w: usize,
    pad: usize,
    ph: usize,
    pw: usize,
    out: &mut [E],
) {
    let out = &mut out[..ph * pw * ch];
    out.fill(E::zero());
    for r in 0..h {
        // The row's `ch × w` values (rows `h·w` apart) become `w × ch`.
        let dst = &mut out[((r + pad) * pw + pad) * ch..];
        transpose_strided(&x[r * w..], h * w, ch, w, dst, ch, false);
    }
}

/// Adds (or writes, unless `accumulate`) the channels-last `src` (`[sh, sw, ch]`, read from
/// offset `(pad, pad)`) into the planes `y` (`[ch, h, w]`).
#[allow(clippy::too_many_arguments)]
fn from_channels_last<E: Element>(
    src: &[E],
    ch: usize,
    sw: usize,
    pad: usize,
    h: usize,
    w: usize,
    y: &mut [E],
    accumulate: bool,
) {
    for r in 0..h {
        let s = &src[((r + pad) * sw + pad) * ch..];
        transpose_strided(s, ch, w, ch, &mut y[r * w..], h * w, accumulate);
    }
}

/// `dst[j·dst_rs + i] (+)= src[i·src_rs + j]` for `i < rows`, `j < cols`, through 16×16 tiles
/// held in registers/L1 so both sides are read and written along their contiguous axis.
#[allow(clippy::too_many_arguments)]
fn transpose_strided<E: Element>(
    src: &[E],
    src_rs: usize,
    rows: usize,
    cols: usize,
    dst: &mut [E],
    dst_rs: usize,
    add: bool,
) {
    const T: usize = 16;
    let mut tile = [[E::zero(); T]; T];
    for i0 in (0..rows).step_by(T) {
        let ni = (rows - i0).min(T);
        for j0 in (0..cols).step_by(T) {
            let nj = (cols - j0).min(T);
            if ni == T && nj == T && simd::transpose16(src, (i0, j0, src_rs), dst, (j0, i0, dst_rs), add) {
                continue;
            }
            if ni == T && nj == T {
                // Whole tiles: fixed-length copies the compiler keeps in vector registers.
                for (a, row) in tile.iter_mut().enumerate() {
                    let s: &[E; T] = src[(i0 + a) * src_rs + j0..][..T].try_into().expect("T long");
                    *row = *s;
                }
                for b in 0..T {
                    let d: &mut [E; T] = (&mut dst[(j0 + b) * dst_rs + i0..][..T]).try_into().expect("T long");
                    for a in 0..T {
                        d[a] = if add { d[a] + tile[a][b] } else { tile[a][b] };
                    }
                }
                continue;
            }
            for (a, row) in tile.iter_mut().enumerate().take(ni) {
                for (v, s) in row[..nj].iter_mut().zip(&src[(i0 + a) * src_rs + j0..][..nj]) {
                    *v = *s;
                }
            }
            for b in 0..nj {
                let d = &mut dst[(j0 + b) * dst_rs + i0..][..ni];
                if add {
                    for (a, v) in d.iter_mut().enumerate() {
                        *v += tile[a][b];
                    }
                } else {
                    for (a, v) in d.iter_mut().enumerate() {
                        *v = tile[a][b];
                    }
                }
            }
        }
    }
}

/// A 16×16 f32 transpose in AVX-512 registers (unpack, then 128-bit lane shuffles).
mod simd {
    use crate::Element;

    /// Transposes the 16×16 tile of `src` at `(row, col, row stride)` into `dst` at its
    /// `(row, col, row stride)`, adding when `add`; `false` (nothing done) unless `E` is f32
    /// and the CPU has AVX-512.
    #[inline]
    pub(super) fn transpose16<E: Element>(
        src: &[E],
        (si, sj, srs): (usize, usize, usize),
        dst: &mut [E],
        (di, dj, drs): (usize, usize, usize),
        add: bool,
    ) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            use std::any::TypeId;
            use std::sync::OnceLock;
            static AVX512: OnceLock<bool> = OnceLock::new();
            if TypeId::of::<E>() != TypeId::of::<f32>() || !*AVX512.get_or_init(|| is_x86_feature_detected!("avx512f"))
            {
                return false;
            }
            // Bounds: the last row of each tile ends inside its slice.
            let src = &src[si * srs + sj..][..15 * srs + 16];
            let dst = &mut dst[di * drs + dj..][..15 * drs + 16];
            // SAFETY: E is f32 (checked above), the CPU has AVX-512F, and rows 0..16 of 16
            // elements at the given strides lie inside the slices just taken.
            unsafe { x86::transpose16(src.as_ptr() as *const f32, srs, dst.as_mut_ptr() as *mut f32, drs, add) };
            true
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (src, si, sj, srs, dst, di, dj, drs, add);
            false
        }
    }

    #[cfg(target_arch = "x86_64")]
    mod x86 {
        use std::arch::x86_64::*;

        #[target_feature(enable = "avx512f")]
        pub(super) unsafe fn transpose16(src: *const f32, srs: usize, dst: *mut f32, drs: usize, add: bool) {
            let mut r: [__m512; 16] = std::array::from_fn(|i| unsafe { _mm512_loadu_ps(src.add(i * srs)) });
            let mut t = [_mm512_setzero_ps(); 16];
            // 32-bit pairs of rows 2i, 2i+1.
            for i in 0..8 {
                t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
                t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
            }
            // 64-bit pairs: each 128-bit block of r[4q + k] is column 4b + k of rows 4q..4q+4.
            let (pd, ps) = (_mm512_castps_pd, _mm512_castpd_ps);
            for q in 0..4 {
                let a = 4 * q;
                r[a] = ps(_mm512_unpacklo_pd(pd(t[a]), pd(t[a + 2])));
                r[a + 1] = ps(_mm512_unpackhi_pd(pd(t[a]), pd(t[a + 2])));
                r[a + 2] = ps(_mm512_unpacklo_pd(pd(t[a + 1]), pd(t[a + 3])));
                r[a + 3] = ps(_mm512_unpackhi_pd(pd(t[a + 1]), pd(t[a + 3])));
            }
            // 128-bit blocks: even and odd blocks of rows 0..8 (and 8..16) side by side.
            for h in 0..2 {
                for k in 0..4 {
                    let (a, b) = (r[8 * h + k], r[8 * h + 4 + k]);
                    t[8 * h + k] = _mm512_shuffle_f32x4::<0x88>(a, b);
                    t[8 * h + 4 + k] = _mm512_shuffle_f32x4::<0xdd>(a, b);
                }
            }
            // Columns: j and j + 8 from t[j] and t[j + 8].
            for j in 0..8 {
                r[j] = _mm512_shuffle_f32x4::<0x88>(t[j], t[j + 8]);
                r[j + 8] = _mm512_shuffle_f32x4::<0xdd>(t[j], t[j + 8]);
            }
            for (j, v) in r.iter().enumerate() {
                let p = unsafe { dst.add(j * drs) };
                let v = if add { _mm512_add_ps(unsafe { _mm512_loadu_ps(p) }, *v) } else { *v };
                unsafe { _mm512_storeu_ps(p, v) };
            }
        }
    }
}

/// The `P` vectors of tile `t` (`len` long each) in a block laid out `[tiles][P][len]`.
#[inline(always)]
fn tile_mut<E>(buf: &mut [E], t: usize, len: usize) -> [&mut [E]; P] {
    split_mut(&mut buf[t * P * len..], len)
}

/// See [`tile_mut`].
#[inline(always)]
fn tile<E>(buf: &[E], t: usize, len: usize) -> [&[E]; P] {
    split(&buf[t * P * len..], len)
}

/// `V_t = Bᵀ·d_t·B` for every tile of the images `xs` (`[imgs][C, h, w]`), into the block `v`
/// (`[tiles][P][C]`), through the padded channels-last scratch `xl`.
#[allow(clippy::too_many_arguments)]
fn transform_inputs<E: Element>(tl: Tiles, c: usize, h: usize, w: usize, xs: &[E], xl: &mut [E], v: &mut [E]) {
    for (i, xn) in xs.chunks_exact(c * h * w).enumerate() {
        to_channels_last(xn, c, h, w, 1, tl.ph, tl.pw, xl);
        input_transform(tl, c, xl, v, i * tl.per_img());
    }
}

multiversion! {
/// `V_t = Bᵀ·d_t·B` for every tile of one image, from its padded channels-last copy `xl`
/// (`[ph, pw, C]`), into the block `v` (`[tiles][P][C]`) from tile `t0` on.
fn input_transform<E: Element>(tl: Tiles, c: usize, xl: &[E], v: &mut [E], t0: usize) {
    // Bᵀ along each row of the window into `a` (`[S][S][C]`), then along each column.
    let mut a = Scratch::with_len(P * c);
    for ty in 0..tl.th {
        for tx in 0..tl.tw {
            let mut at: [&mut [E]; P] = split_mut(&mut a, c);
            for k in 0..S {
                let d: [&[E]; S] = std::array::from_fn(|l| &xl[((R * ty + k) * tl.pw + R * tx + l) * c..][..c]);
                lanes::<E, S, S, false>(d, pick(&mut at, std::array::from_fn(|j| k * S + j)), bt6);
            }
            let mut out = tile_mut(v, t0 + ty * tl.tw + tx, c);
            for j in 0..S {
                let col: [&[E]; S] = std::array::from_fn(|k| &a[(k * S + j) * c..][..c]);
                lanes::<E, S, S, false>(col, pick(&mut out, std::array::from_fn(|i| i * S + j)), bt6);
            }
        }
    }
}
}

multiversion! {
/// `y_t = Aᵀ·M_t·A` for every tile of one image into its channels-last output `yl`
/// (`[R·th, R·tw, O]`), from the block `m` (`[tiles][P][O]`) from tile `t0` on.
fn output_transform<E: Element>(tl: Tiles, o: usize, m: &[E], t0: usize, yl: &mut [E]) {
    let wr = R * tl.tw;
    // Aᵀ along each column of M into `b` (`[R][S][O]`), then along each row into the outputs.
    let mut b = Scratch::with_len(R * S * o);
    for ty in 0..tl.th {
        let mut rows: [&mut [E]; R] = split_mut(&mut yl[R * ty * wr * o..][..R * wr * o], wr * o);
        for tx in 0..tl.tw {
            let mt = tile(m, t0 + ty * tl.tw + tx, o);
            {
                let mut bt: [&mut [E]; R * S] = split_mut(&mut b, o);
                for j in 0..S {
                    let dst = pick(&mut bt, std::array::from_fn::<_, R, _>(|i| i * S + j));
                    lanes::<E, S, R, false>(std::array::from_fn(|i| mt[i * S + j]), dst, at6);
                }
            }
            for (i, r) in rows.iter_mut().enumerate() {
                let y: [&mut [E]; R] = split_mut(&mut r[R * tx * o..][..R * o], o);
                lanes::<E, S, R, false>(std::array::from_fn(|j| &b[(i * S + j) * o..][..o]), y, at6);
            }
        }
    }
}
}

multiversion! {
/// `Ĝ_t = A·dy_t·Aᵀ` for every tile of one image, from its channels-last output gradient
/// `gl` (`[R·th, R·tw, O]`, zeros beyond the plane), into the block `out` (`[tiles][P][O]`)
/// from tile `t0` on.
fn grad_transform<E: Element>(tl: Tiles, o: usize, gl: &[E], out: &mut [E], t0: usize) {
    let wr = R * tl.tw;
    // A along each row of dy into `q` (`[R][S][O]`), then along each column.
    let mut q = Scratch::with_len(R * S * o);
    for ty in 0..tl.th {
        for tx in 0..tl.tw {
            for k in 0..R {
                let d: [&[E]; R] = std::array::from_fn(|l| &gl[((R * ty + k) * wr + R * tx + l) * o..][..o]);
                let qk: [&mut [E]; S] = split_mut(&mut q[k * S * o..][..S * o], o);
                lanes::<E, R, S, false>(d, qk, a6);
            }
            let mut dst = tile_mut(out, t0 + ty * tl.tw + tx, o);
            for j in 0..S {
                let col: [&[E]; R] = std::array::from_fn(|k| &q[(k * S + j) * o..][..o]);
                lanes::<E, R, S, false>(col, pick(&mut dst, std::array::from_fn(|i| i * S + j)), a6);
            }
        }
    }
}
}

multiversion! {
/// Adds `B·dV_t·Bᵀ` of every tile of one image onto its padded channels-last input gradient
/// `dxl` (`[ph, pw, C]`, the 6×6 windows overlapping), from the block `dv` (`[tiles][P][C]`)
/// from tile `t0` on.
fn input_grad_transform<E: Element>(tl: Tiles, c: usize, dv: &[E], t0: usize, dxl: &mut [E]) {
    let row = tl.pw * c;
    // B along each column of dV into `s` (`[S][S][C]`), then along each row, added on.
    let mut sb = Scratch::with_len(P * c);
    for ty in 0..tl.th {
        // The six rows the tiles of this row touch.
        let mut rows: [&mut [E]; S] = split_mut(&mut dxl[R * ty * row..][..S * row], row);
        for tx in 0..tl.tw {
            let d = tile(dv, t0 + ty * tl.tw + tx, c);
            {
                let mut st: [&mut [E]; P] = split_mut(&mut sb, c);
                for j in 0..S {
                    let col: [&[E]; S] = std::array::from_fn(|i| d[i * S + j]);
                    lanes::<E, S, S, false>(col, pick(&mut st, std::array::from_fn(|k| k * S + j)), b6);
                }
            }
            for (k, r) in rows.iter_mut().enumerate() {
                let p: [&mut [E]; S] = split_mut(&mut r[R * tx * c..][..S * c], c);
                lanes::<E, S, S, true>(std::array::from_fn(|j| &sb[(k * S + j) * c..][..c]), p, b6);
            }
        }
    }
}
}

/// Row `ξ` of a block laid out `[tiles][P][len]`: a `tiles × len` matrix with row stride
/// `P · len`.
fn plane<E>(buf: &[E], xi: usize, len: usize) -> Mat<'_, E> {
    Mat::strided(&buf[xi * len..], P * len, 1)
}

/// Forward: `y` (`[N, O, Ho, Wo]`) written, or added to when `accumulate`.
pub(crate) fn forward<E: Element>(g: &ConvGeom, x: &[E], w: &[E], y: &mut [E], accumulate: bool) {
    let u = weights_u(g, w, true);
    let (chunk, block, par) = plan(g);
    let (c, o, h, wd) = (g.c, g.o, g.ah.len, g.aw.len);
    let (chw, opp) = (c * g.hw(), o * g.pp());
    let tl = Tiles::new(g);
    let per_img = tl.per_img();
    let run = |(ys, xs): (&mut [E], &[E])| {
        let mut xl = Scratch::with_len(tl.ph * tl.pw * c);
        let mut yl = Scratch::with_len(R * R * per_img * o);
        for (yb, xb) in ys.chunks_mut(block * opp).zip(xs.chunks(block * chw)) {
            let imgs = xb.len() / chw;
            let ld = imgs * per_img;
            // v is [tiles][P][C], m is [tiles][P][O].
            let mut v = Scratch::with_len(P * ld * c);
            transform_inputs(tl, c, h, wd, xb, &mut xl, &mut v);
            let mut m = Scratch::with_len(P * ld * o);
            for xi in 0..P {
                let uk = Mat::strided(&u[xi * o..], P * o, 1);
                let dst = Mat::strided(&mut m[xi * o..], P * o, 1);
                matmul_strided(ld, o, c, dst, false, plane(&v, xi, c), uk, par);
            }
            for (i, yn) in yb.chunks_exact_mut(opp).enumerate() {
                output_transform(tl, o, &m, i * per_img, &mut yl);
                from_channels_last(&yl, o, R * tl.tw, 0, g.ho, g.wo, yn, accumulate);
            }
        }
    };
    if chunk >= g.n {
        run((y, x));
    } else {
        y.par_chunks_mut(chunk * opp).zip(x.par_chunks(chunk * chw)).for_each(run);
    }
}

/// Backward: adds the input gradient into `dx` and the weight gradient into `dw`
/// (`[O, C, 3, 3]`).
pub(crate) fn backward<E: Element>(g: &ConvGeom, x: &[E], w: &[E], gy: &[E], dx: &mut [E], dw: &mut [E]) {
    let u = weights_u(g, w, false);
    let (chunk, block, par) = plan(g);
    let (c, o, h, wd) = (g.c, g.o, g.ah.len, g.aw.len);
    let (chw, opp) = (c * g.hw(), o * g.pp());
    let tl = Tiles::new(g);
    let per_img = tl.per_img();
    let run = |((dxs, xs), gys): ((&mut [E], &[E]), &[E])| {
        let mut xl = Scratch::with_len(tl.ph * tl.pw * c.max(o));
        // dU accumulated as [C][P][O].
        let mut du = Scratch::zeroed(P * c * o);
        for ((dxb, xb), gyb) in dxs.chunks_mut(block * chw).zip(xs.chunks(block * chw)).zip(gys.chunks(block * opp)) {
            let imgs = xb.len() / chw;
            let ld = imgs * per_img;
            let mut v = Scratch::with_len(P * ld * c);
            transform_inputs(tl, c, h, wd, xb, &mut xl, &mut v);
            let mut gt = Scratch::with_len(P * ld * o);
            for (i, gyn) in gyb.chunks_exact(opp).enumerate() {
                to_channels_last(gyn, o, g.ho, g.wo, 0, R * tl.th, R * tl.tw, &mut xl);
                grad_transform(tl, o, &xl, &mut gt, i * per_img);
            }
            let mut dv = Scratch::with_len(P * ld * c);
            for xi in 0..P {
                let gk = plane(&gt, xi, o);
                // dU_ξ (C × O) += V_ξᵀ (C × T) · Ĝ_ξ (T × O).
                let vt = Mat::strided(&v[xi * c..], 1, P * c);
                let dst = Mat::strided(&mut du[xi * o..], P * o, 1);
                matmul_strided(c, o, ld, dst, true, vt, gk, par);
                // dV_ξ (T × C) = Ĝ_ξ (T × O) · U_ξ (O × C).
                let uk = Mat::strided(&u[xi * c..], P * c, 1);
                let dst = Mat::strided(&mut dv[xi * c..], P * c, 1);
                matmul_strided(ld, c, o, dst, false, gk, uk, par);
            }
            for (i, dxn) in dxb.chunks_exact_mut(chw).enumerate() {
                let dxl = &mut xl[..tl.ph * tl.pw * c];
                dxl.fill(E::zero());
                input_grad_transform(tl, c, &dv, i * per_img, dxl);
                from_channels_last(dxl, c, tl.pw, 1, h, wd, dxn, true);
            }
        }
        du
    };
    let du = if chunk >= g.n {
        run(((dx, x), gy))
    } else {
        let mut parts: Vec<Scratch<E>> = dx
            .par_chunks_mut(chunk * chw)
            .zip(x.par_chunks(chunk * chw))
            .zip(gy.par_chunks(chunk * opp))
            .map(run)
            .collect();
        let mut total = parts.pop().expect("a batch of two or more has tasks");
        for part in &parts {
            total.iter_mut().zip(part.iter()).for_each(|(t, p)| *t += *p);
        }
        total
    };
    add_weight_grad(g, &du, dw);
}

#[cfg(test)]
mod tests {
    use super::super::window::{Axis, ConvGeom};
    use super::{backward, forward};

    fn geom(n: usize, c: usize, o: usize, h: usize, w: usize) -> ConvGeom {
        let axis = |len| Axis { len, kernel: 3, stride: 1, padding: 1 };
        ConvGeom { n, c, o, groups: 1, k: 3, ah: axis(h), aw: axis(w), ho: h, wo: w }
    }

    /// Deterministic values in [-1, 1).
    fn values(len: usize, seed: u64) -> Vec<f64> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 11) as f64 / (1u64 << 52) as f64 - 1.0
            })
            .collect()
    }

    /// The direct sums: `y`, and for an output gradient `gy`, `dx` and `dw`.
    fn reference(g: &ConvGeom, x: &[f64], w: &[f64], gy: &[f64]) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let (n, c, o, h, wd) = (g.n, g.c, g.o, g.ah.len, g.aw.len);
        let mut y = vec![0.0; n * o * h * wd];
        let mut dx = vec![0.0; x.len()];
        let mut dw = vec![0.0; w.len()];
        for b in 0..n {
            for oi in 0..o {
                for r in 0..h {
                    for q in 0..wd {
                        let yi = ((b * o + oi) * h + r) * wd + q;
                        for ci in 0..c {
                            for kh in 0..3 {
                                for kw in 0..3 {
                                    let (ir, iq) = (r as isize + kh as isize - 1, q as isize + kw as isize - 1);
                                    if ir < 0 || iq < 0 || ir >= h as isize || iq >= wd as isize {
                                        continue;
                                    }
                                    let xi = ((b * c + ci) * h + ir as usize) * wd + iq as usize;
                                    let wi = ((oi * c + ci) * 3 + kh) * 3 + kw;
                                    y[yi] += x[xi] * w[wi];
                                    dx[xi] += gy[yi] * w[wi];
                                    dw[wi] += gy[yi] * x[xi];
                                }
                            }
                        }
                    }
                }
            }
        }
        (y, dx, dw)
    }

    fn max_rel(a: &[f64], b: &[f64]) -> f64 {
        let scale = b.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-12);
        a.iter().zip(b).fold(0.0f64, |m, (p, q)| m.max((p - q).abs())) / scale
    }

    #[test]
    fn forward_and_backward_equal_the_direct_sums() {
        // Even and odd planes, a 1×1 plane (every tap but the centre in the padding), several
        // images per block and per task.
        for &(n, c, o, h, w) in
            &[(3, 16, 24, 8, 8), (2, 17, 16, 5, 7), (4, 16, 16, 1, 1), (5, 32, 16, 4, 4), (2, 16, 32, 3, 6)]
        {
            let g = geom(n, c, o, h, w);
            let x = values(n * c * h * w, 1);
            let wt = values(o * c * 9, 2);
            let gy = values(n * o * h * w, 3);
            let (y_ref, dx_ref, dw_ref) = reference(&g, &x, &wt, &gy);
            let mut y = vec![0.0; y_ref.len()];
            forward(&g, &x, &wt, &mut y, false);
            assert!(max_rel(&y, &y_ref) < 1e-12, "forward {:?}: {}", (n, c, o, h, w), max_rel(&y, &y_ref));
            // accumulate adds onto what is there
            forward(&g, &x, &wt, &mut y, true);
            let twice: Vec<f64> = y_ref.iter().map(|v| 2.0 * v).collect();
            assert!(max_rel(&y, &twice) < 1e-12);
            let mut dx = vec![1.0; x.len()];
            let mut dw = vec![1.0; wt.len()];
            backward(&g, &x, &wt, &gy, &mut dx, &mut dw);
            let dx_ref: Vec<f64> = dx_ref.iter().map(|v| v + 1.0).collect();
            let dw_ref: Vec<f64> = dw_ref.iter().map(|v| v + 1.0).collect();
            assert!(max_rel(&dx, &dx_ref) < 1e-12, "dx {:?}: {}", (n, c, o, h, w), max_rel(&dx, &dx_ref));
            assert!(max_rel(&dw, &dw_ref) < 1e-12, "dw {:?}: {}", (n, c, o, h, w), max_rel(&dw, &dw_ref));
        }
    }

    #[test]
    fn tiled_transpose_equals_the_plain_one() {
        // Whole 16×16 tiles (the AVX-512 path where the CPU has it) and ragged edges, written
        // and added.
        for &(rows, cols) in &[(32usize, 48usize), (20, 17), (16, 16), (3, 40)] {
            let (src_rs, dst_rs) = (cols + 5, rows + 3);
            let src: Vec<f32> = (0..rows * src_rs).map(|i| i as f32).collect();
            for add in [false, true] {
                let mut dst = vec![1.0f32; cols * dst_rs];
                super::transpose_strided(&src, src_rs, rows, cols, &mut dst, dst_rs, add);
                for j in 0..cols {
                    for i in 0..rows {
                        let want = src[i * src_rs + j] + if add { 1.0 } else { 0.0 };
                        assert_eq!(dst[j * dst_rs + i], want, "{rows}x{cols} at ({i}, {j}) add {add}");
                    }
                    assert!(dst[j * dst_rs + rows..][..3].iter().all(|&v| v == 1.0), "padding untouched");
                }
            }
        }
    }

    #[test]
    fn float32_rounding_stays_near_the_direct_sums() {
        let g = geom(4, 64, 64, 8, 8);
        let x = values(4 * 64 * 64, 4);
        let wt = values(64 * 64 * 9, 5);
        let gy = values(4 * 64 * 64, 6);
        let (y_ref, dx_ref, dw_ref) = reference(&g, &x, &wt, &gy);
        let f = |v: &[f64]| v.iter().map(|&a| a as f32).collect::<Vec<f32>>();
        let d = |v: &[f32]| v.iter().map(|&a| a as f64).collect::<Vec<f64>>();
        let mut y = vec![0.0f32; y_ref.len()];
        forward(&g, &f(&x), &f(&wt), &mut y, false);
        let (mut dx, mut dw) = (vec![0.0f32; x.len()], vec![0.0f32; wt.len()]);
        backward(&g, &f(&x), &f(&wt), &f(&gy), &mut dx, &mut dw);
        // fp32 over sums of 576 (y, dx) and 256 (dw) products of values in [-1, 1): F(4×4, 3×3)
        // gave 5.1e-6, 3.0e-6 and 2.0e-6 of the largest value here (F(2×2, 3×3) stayed under 2e-6)
        let errs = [max_rel(&d(&y), &y_ref), max_rel(&d(&dx), &dx_ref), max_rel(&d(&dw), &dw_ref)];
        assert!(errs.iter().all(|&e| e < 1e-5), "y, dx, dw: {errs:?}");
    }
}
