//! 3×3 stride-1 "same" convolutions through Winograd's minimal filtering F(2×2, 3×3)
//! (Lavin & Gray, 2015): the algorithm cuDNN and oneDNN offer for these layers.
//!
//! Each output plane is cut into 2×2 tiles; tile `t` reads a 4×4 input window `d_t` (zeros
//! outside the image). With the fixed matrices `Bᵀ` (4×4), `G` (4×3) and `Aᵀ` (2×4):
//!
//! - `U = G·w·Gᵀ` per `(o, c)` (4×4), `V_t = Bᵀ·d_t·B` per `(c, t)`;
//! - for each of the 16 positions `ξ` of those 4×4 matrices, one GEMM
//!   `M_ξ (O × T) = U_ξ (O × C) · V_ξ (C × T)`;
//! - the output tile `y_t = Aᵀ·M_t·A`.
//!
//! That is 16 multiply-adds per `(o, c)` and tile of 4 outputs where the direct sum needs 36:
//! 2.25× fewer. Backward is the exact adjoint of these steps (so the gradients are those of the
//! computation that ran): `Ĝ_t = A·dy_t·Aᵀ`, `dU_ξ += Ĝ_ξ · V_ξᵀ`, `dV_ξ = U_ξᵀ · Ĝ_ξ`,
//! `dx` window `+= B·dV_t·Bᵀ` (windows overlap by two rows and columns) and `dw = Gᵀ·dU·G`.
//! The transform coefficients are 0, ±1 and ±½, so the rounding differs from im2col's only by
//! the order of the sums (measured against it in the tests below).
//!
//! Work is split like the other kernels: one run of images per rayon thread, a few images per
//! block so the transformed blocks stay in cache.

use rayon::prelude::*;

use super::window::ConvGeom;
use crate::element::{matmul_strided, Mat, Scratch};
use crate::simd::multiversion;
use crate::Element;

/// Cap on the elements of one transformed block (`16 · channels · tiles`), per thread.
const BLOCK_ELEMS: usize = 2 << 20;
/// Tiles per block the GEMMs aim for.
const BLOCK_TILES: usize = 512;

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
        // Odd planes waste the tiles' missing row and column: at 3×3 (ResNet-18's last stage
        // at 96 px) 16 products per 9 outputs where the per-tap kernels skip the padding.
        && (g.pp() > 64 || (g.ho.is_multiple_of(2) && g.wo.is_multiple_of(2)))
        && !disabled()
}

/// The tiling of one image: `th × tw` tiles of 2×2 outputs, read from a zero-padded
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
        let (th, tw) = (g.ho.div_ceil(2), g.wo.div_ceil(2));
        Tiles { th, tw, ph: 2 * th + 2, pw: 2 * tw + 2 }
    }
    fn per_img(&self) -> usize {
        self.th * self.tw
    }
}

/// Images per rayon task and per block.
fn plan(g: &ConvGeom) -> (usize, usize) {
    let threads = rayon::current_num_threads().max(1);
    let tasks = threads.min(g.n).max(1);
    let chunk = g.n.div_ceil(tasks).max(1);
    let per_img = Tiles::new(g).per_img();
    let by_tiles = BLOCK_TILES.div_ceil(per_img);
    let by_memory = BLOCK_ELEMS / (16 * g.c.max(g.o) * per_img).max(1);
    (chunk, by_tiles.min(by_memory).clamp(1, chunk))
}

fn half<E: Element>() -> E {
    E::from_f64(0.5).expect("0.5 is representable")
}

/// `G·v` for a 3-vector: `(v0, (v0+v1+v2)/2, (v0−v1+v2)/2, v2)`.
#[inline(always)]
fn g3<E: Element>(h: E, a: E, b: E, d: E) -> [E; 4] {
    [a, (a + b + d) * h, (a - b + d) * h, d]
}

/// `Gᵀ·v` for a 4-vector: `(v0 + (v1+v2)/2, (v1−v2)/2, (v1+v2)/2 + v3)`.
#[inline(always)]
fn gt4<E: Element>(h: E, v: [E; 4]) -> [E; 3] {
    [v[0] + (v[1] + v[2]) * h, (v[1] - v[2]) * h, (v[1] + v[2]) * h + v[3]]
}

/// `U = G·w·Gᵀ` for every `(o, c)`, laid out `[rows][16][cols]`: `[C][16][O]` when
/// `in_major` (the forward's right factors), otherwise `[O][16][C]` (the input gradient's).
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
    let mut u = Scratch::with_len(16 * c * o);
    let h = half::<E>();
    u.par_chunks_exact_mut(16 * cols).zip(t.par_chunks_exact(9 * cols)).for_each(|(ur, tr)| {
        let mut taps = tr.chunks_exact(cols);
        let k: [&[E]; 9] = std::array::from_fn(|_| taps.next().expect("9 taps"));
        let mut outs = ur.chunks_exact_mut(cols);
        let out: [&mut [E]; 16] = std::array::from_fn(|_| outs.next().expect("16 positions"));
        for q in 0..cols {
            let col =
                [g3(h, k[0][q], k[3][q], k[6][q]), g3(h, k[1][q], k[4][q], k[7][q]), g3(h, k[2][q], k[5][q], k[8][q])];
            for i in 0..4 {
                let row = g3(h, col[0][i], col[1][i], col[2][i]);
                for (j, v) in row.into_iter().enumerate() {
                    out[i * 4 + j][q] = v;
                }
            }
        }
    });
    u
}

/// Adds `Gᵀ·dU·G` onto the weight gradient `dw` (`[O, C, 3, 3]`); `du` is `[C][16][O]`.
fn add_weight_grad<E: Element>(g: &ConvGeom, du: &[E], dw: &mut [E]) {
    let (c, o) = (g.c, g.o);
    let h = half::<E>();
    // Per input channel, the 9 taps along contiguous output channels `[C][9][O]`, then
    // transposed in.
    let mut t = Scratch::with_len(9 * c * o);
    t.par_chunks_exact_mut(9 * o).zip(du.par_chunks_exact(16 * o)).for_each(|(tc, dc)| {
        let mut ins = dc.chunks_exact(o);
        let d: [&[E]; 16] = std::array::from_fn(|_| ins.next().expect("16 positions"));
        let mut outs = tc.chunks_exact_mut(o);
        let out: [&mut [E]; 9] = std::array::from_fn(|_| outs.next().expect("9 taps"));
        for oi in 0..o {
            let mut rows = [[E::zero(); 4]; 3];
            for j in 0..4 {
                let r = gt4(h, [d[j][oi], d[4 + j][oi], d[8 + j][oi], d[12 + j][oi]]);
                for a in 0..3 {
                    rows[a][j] = r[a];
                }
            }
            for (a, row) in rows.iter().enumerate() {
                let r = gt4(h, *row);
                for b in 0..3 {
                    out[a * 3 + b][oi] = r[b];
                }
            }
        }
    });
    // dw is [O][C·9], t its transpose.
    transpose(&t, 9 * c, o, dw, true);
}

/// Writes (or adds, when `add`) the transpose of the row-major `rows × cols` matrix `src` into
/// `dst` (`cols × rows`), in tiles so both sides stay in cache, bands of `dst` rows in
/// parallel.
fn transpose<E: Element>(src: &[E], rows: usize, cols: usize, dst: &mut [E], add: bool) {
    const TILE: usize = 32;
    let band = |(b, out): (usize, &mut [E])| {
        let j0 = b * TILE;
        let jn = out.len() / rows;
        for i0 in (0..rows).step_by(TILE) {
            for j in 0..jn {
                let d = &mut out[j * rows + i0..][..(rows - i0).min(TILE)];
                for (k, v) in d.iter_mut().enumerate() {
                    let s = src[(i0 + k) * cols + j0 + j];
                    *v = if add { *v + s } else { s };
                }
            }
        }
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

/// The 16 vectors of tile `t` (`len` long each) in a block laid out `[tiles][16][len]`.
#[inline(always)]
fn tile_mut<E>(buf: &mut [E], t: usize, len: usize) -> [&mut [E]; 16] {
    let mut it = buf[t * 16 * len..][..16 * len].chunks_exact_mut(len);
    std::array::from_fn(|_| it.next().expect("16 positions"))
}

/// See [`tile_mut`].
#[inline(always)]
fn tile<E>(buf: &[E], t: usize, len: usize) -> [&[E]; 16] {
    let mut it = buf[t * 16 * len..][..16 * len].chunks_exact(len);
    std::array::from_fn(|_| it.next().expect("16 positions"))
}

/// `V_t = Bᵀ·d_t·B` for every tile of the images `xs` (`[imgs][C, h, w]`), into the block `v`
/// (`[tiles][16][C]`), through the padded channels-last scratch `xl`.
#[allow(clippy::too_many_arguments)]
fn transform_inputs<E: Element>(tl: Tiles, c: usize, h: usize, w: usize, xs: &[E], xl: &mut [E], v: &mut [E]) {
    for (i, xn) in xs.chunks_exact(c * h * w).enumerate() {
        to_channels_last(xn, c, h, w, 1, tl.ph, tl.pw, xl);
        input_transform(tl, c, xl, v, i * tl.per_img());
    }
}

multiversion! {
/// `V_t = Bᵀ·d_t·B` for every tile of one image, from its padded channels-last copy `xl`
/// (`[ph, pw, C]`), into the block `v` (`[tiles][16][C]`) from tile `t0` on.
fn input_transform<E: Element>(tl: Tiles, c: usize, xl: &[E], v: &mut [E], t0: usize) {
    for ty in 0..tl.th {
        for tx in 0..tl.tw {
            let out = tile_mut(v, t0 + ty * tl.tw + tx, c);
            let d: [[&[E]; 4]; 4] =
                std::array::from_fn(|k| std::array::from_fn(|l| &xl[((2 * ty + k) * tl.pw + 2 * tx + l) * c..][..c]));
            for ci in 0..c {
                // Rows times B (columns combined), then Bᵀ on the left (rows combined).
                let mut a = [[E::zero(); 4]; 4];
                for k in 0..4 {
                    let (e0, o0, e1, o1) = (d[k][0][ci], d[k][1][ci], d[k][2][ci], d[k][3][ci]);
                    a[k] = [e0 - e1, o0 + e1, e1 - o0, o0 - o1];
                }
                for j in 0..4 {
                    out[j][ci] = a[0][j] - a[2][j];
                    out[4 + j][ci] = a[1][j] + a[2][j];
                    out[8 + j][ci] = a[2][j] - a[1][j];
                    out[12 + j][ci] = a[1][j] - a[3][j];
                }
            }
        }
    }
}
}

multiversion! {
/// `y_t = Aᵀ·M_t·A` for every tile of one image into its channels-last output `yl`
/// (`[2·th, 2·tw, O]`), from the block `m` (`[tiles][16][O]`) from tile `t0` on.
fn output_transform<E: Element>(tl: Tiles, o: usize, m: &[E], t0: usize, yl: &mut [E]) {
    let w2 = 2 * tl.tw;
    for ty in 0..tl.th {
        let (r0, r1) = yl[2 * ty * w2 * o..][..2 * w2 * o].split_at_mut(w2 * o);
        for tx in 0..tl.tw {
            let mt = tile(m, t0 + ty * tl.tw + tx, o);
            let (y00, y01) = r0[2 * tx * o..][..2 * o].split_at_mut(o);
            let (y10, y11) = r1[2 * tx * o..][..2 * o].split_at_mut(o);
            for oi in 0..o {
                // The two rows of Aᵀ·M (m0+m1+m2 and m1−m2−m3), then each times A.
                let mut b = [[E::zero(); 4]; 2];
                for j in 0..4 {
                    let (m0, m1, m2, m3) = (mt[j][oi], mt[4 + j][oi], mt[8 + j][oi], mt[12 + j][oi]);
                    b[0][j] = m0 + m1 + m2;
                    b[1][j] = m1 - m2 - m3;
                }
                y00[oi] = b[0][0] + b[0][1] + b[0][2];
                y01[oi] = b[0][1] - b[0][2] - b[0][3];
                y10[oi] = b[1][0] + b[1][1] + b[1][2];
                y11[oi] = b[1][1] - b[1][2] - b[1][3];
            }
        }
    }
}
}

multiversion! {
/// `Ĝ_t = A·dy_t·Aᵀ` for every tile of one image, from its channels-last output gradient
/// `gl` (`[2·th, 2·tw, O]`, zeros beyond the plane), into the block `out` (`[tiles][16][O]`)
/// from tile `t0` on.
fn grad_transform<E: Element>(tl: Tiles, o: usize, gl: &[E], out: &mut [E], t0: usize) {
    let w2 = 2 * tl.tw;
    for ty in 0..tl.th {
        for tx in 0..tl.tw {
            let dst = tile_mut(out, t0 + ty * tl.tw + tx, o);
            let d: [[&[E]; 2]; 2] =
                std::array::from_fn(|k| std::array::from_fn(|l| &gl[((2 * ty + k) * w2 + 2 * tx + l) * o..][..o]));
            for oi in 0..o {
                let mut q = [[E::zero(); 4]; 2];
                for (k, row) in d.iter().enumerate() {
                    let (c0, c1) = (row[0][oi], row[1][oi]);
                    q[k] = [c0, c0 + c1, c0 - c1, -c1];
                }
                for j in 0..4 {
                    let (r0, r1) = (q[0][j], q[1][j]);
                    dst[j][oi] = r0;
                    dst[4 + j][oi] = r0 + r1;
                    dst[8 + j][oi] = r0 - r1;
                    dst[12 + j][oi] = -r1;
                }
            }
        }
    }
}
}

multiversion! {
/// Adds `B·dV_t·Bᵀ` of every tile of one image onto its padded channels-last input gradient
/// `dxl` (`[ph, pw, C]`, the 4×4 windows overlapping), from the block `dv` (`[tiles][16][C]`)
/// from tile `t0` on.
fn input_grad_transform<E: Element>(tl: Tiles, c: usize, dv: &[E], t0: usize, dxl: &mut [E]) {
    let row = tl.pw * c;
    for ty in 0..tl.th {
        // The four rows the tiles of this row touch.
        let mut rows = dxl[2 * ty * row..][..4 * row].chunks_exact_mut(row);
        let mut rows: [&mut [E]; 4] = std::array::from_fn(|_| rows.next().expect("4 rows"));
        for tx in 0..tl.tw {
            let d = tile(dv, t0 + ty * tl.tw + tx, c);
            // p[k][l]: the window's row k, column l.
            let mut p: [[&mut [E]; 4]; 4] = rows.each_mut().map(|r| {
                let mut cols = r[2 * tx * c..][..4 * c].chunks_exact_mut(c);
                std::array::from_fn(|_| cols.next().expect("4 columns"))
            });
            for ci in 0..c {
                // B·dV (B on the left) for every row k, then times Bᵀ along the columns.
                let mut s = [[E::zero(); 4]; 4];
                for j in 0..4 {
                    let (d0, d1, d2, d3) = (d[j][ci], d[4 + j][ci], d[8 + j][ci], d[12 + j][ci]);
                    s[0][j] = d0;
                    s[1][j] = d1 - d2 + d3;
                    s[2][j] = d1 + d2 - d0;
                    s[3][j] = -d3;
                }
                for (pk, [s0, s1, s2, s3]) in p.iter_mut().zip(s) {
                    pk[0][ci] += s0;
                    pk[1][ci] += s1 - s2 + s3;
                    pk[2][ci] += s1 + s2 - s0;
                    pk[3][ci] -= s3;
                }
            }
        }
    }
}
}

/// Row `ξ` of a block laid out `[tiles][16][len]`: a `tiles × len` matrix with row stride
/// `16 · len`.
fn plane<E>(buf: &[E], xi: usize, len: usize) -> Mat<'_, E> {
    Mat::strided(&buf[xi * len..], 16 * len, 1)
}

/// Forward: `y` (`[N, O, Ho, Wo]`) written, or added to when `accumulate`.
pub(crate) fn forward<E: Element>(g: &ConvGeom, x: &[E], w: &[E], y: &mut [E], accumulate: bool) {
    let u = weights_u(g, w, true);
    let (chunk, block) = plan(g);
    let (c, o, h, wd) = (g.c, g.o, g.ah.len, g.aw.len);
    let (chw, opp) = (c * g.hw(), o * g.pp());
    let tl = Tiles::new(g);
    let per_img = tl.per_img();
    let run = |(ys, xs): (&mut [E], &[E])| {
        let mut xl = Scratch::with_len(tl.ph * tl.pw * c);
        let mut yl = Scratch::with_len(4 * per_img * o);
        for (yb, xb) in ys.chunks_mut(block * opp).zip(xs.chunks(block * chw)) {
            let imgs = xb.len() / chw;
            let ld = imgs * per_img;
            // v is [tiles][16][C], m is [tiles][16][O].
            let mut v = Scratch::with_len(16 * ld * c);
            transform_inputs(tl, c, h, wd, xb, &mut xl, &mut v);
            let mut m = Scratch::with_len(16 * ld * o);
            for xi in 0..16 {
                let uk = Mat::strided(&u[xi * o..], 16 * o, 1);
                let dst = Mat::strided(&mut m[xi * o..], 16 * o, 1);
                matmul_strided(ld, o, c, dst, false, plane(&v, xi, c), uk, false);
            }
            for (i, yn) in yb.chunks_exact_mut(opp).enumerate() {
                output_transform(tl, o, &m, i * per_img, &mut yl);
                from_channels_last(&yl, o, 2 * tl.tw, 0, g.ho, g.wo, yn, accumulate);
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
    let (chunk, block) = plan(g);
    let (c, o, h, wd) = (g.c, g.o, g.ah.len, g.aw.len);
    let (chw, opp) = (c * g.hw(), o * g.pp());
    let tl = Tiles::new(g);
    let per_img = tl.per_img();
    let run = |((dxs, xs), gys): ((&mut [E], &[E]), &[E])| {
        let mut xl = Scratch::with_len(tl.ph * tl.pw * c.max(o));
        // dU accumulated as [C][16][O].
        let mut du = Scratch::zeroed(16 * c * o);
        for ((dxb, xb), gyb) in dxs.chunks_mut(block * chw).zip(xs.chunks(block * chw)).zip(gys.chunks(block * opp)) {
            let imgs = xb.len() / chw;
            let ld = imgs * per_img;
            let mut v = Scratch::with_len(16 * ld * c);
            transform_inputs(tl, c, h, wd, xb, &mut xl, &mut v);
            let mut gt = Scratch::with_len(16 * ld * o);
            for (i, gyn) in gyb.chunks_exact(opp).enumerate() {
                to_channels_last(gyn, o, g.ho, g.wo, 0, 2 * tl.th, 2 * tl.tw, &mut xl);
                grad_transform(tl, o, &xl, &mut gt, i * per_img);
            }
            let mut dv = Scratch::with_len(16 * ld * c);
            for xi in 0..16 {
                let gk = plane(&gt, xi, o);
                // dU_ξ (C × O) += V_ξᵀ (C × T) · Ĝ_ξ (T × O).
                let vt = Mat::strided(&v[xi * c..], 1, 16 * c);
                let dst = Mat::strided(&mut du[xi * o..], 16 * o, 1);
                matmul_strided(c, o, ld, dst, true, vt, gk, false);
                // dV_ξ (T × C) = Ĝ_ξ (T × O) · U_ξ (O × C).
                let uk = Mat::strided(&u[xi * c..], 16 * c, 1);
                let dst = Mat::strided(&mut dv[xi * c..], 16 * c, 1);
                matmul_strided(ld, c, o, dst, false, gk, uk, false);
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
        // fp32 over sums of 576 (y, dx) and 256 (dw) products of values in [-1, 1)
        assert!(max_rel(&d(&y), &y_ref) < 2e-6, "{}", max_rel(&d(&y), &y_ref));
        assert!(max_rel(&d(&dx), &dx_ref) < 2e-6, "{}", max_rel(&d(&dx), &dx_ref));
        assert!(max_rel(&d(&dw), &dw_ref) < 2e-6, "{}", max_rel(&d(&dw), &dw_ref));
    }
}
