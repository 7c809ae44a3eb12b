//! 2-D convolution (PyTorch's `nn.functional.conv2d`): square kernel, stride, zero padding,
//! groups (depthwise included), optional bias; forward and backward on [`Cpu`].
//!
//! Kernels (see [`Plan`]): the batch is split into one run of images per rayon thread; within
//! a run, images are convolved through im2col + GEMM (`gemm` crate, AVX-512 where the CPU has
//! it), several small feature maps side by side in one GEMM; a 1×1 stride-1 convolution uses
//! the image itself as the column matrix. Backward recomputes the columns for the weight
//! gradient; the input gradient of a stride-1 convolution is a convolution with flipped kernels
//! ([`Transposed`]), otherwise a GEMM plus col2im scatter. Convolutions with one input channel
//! per group (depthwise) run the direct kernels of `depthwise.rs`; stride-1 "same"
//! convolutions of small feature maps (8×8 and below) run one GEMM per kernel tap over the
//! positions that tap reads inside the image (`taps.rs`), skipping im2col's padding zeros.
//! 3×3 stride-1 padding-1 convolutions of 16 or more channels take precedence over both: they
//! run through Winograd's F(4×4, 3×3) (`winograd.rs`; `SIAMLAB_CONV=im2col` turns it off).
//! Scratch buffers come from a per-thread pool.

use dfdx::prelude::{Const, Cpu, HasShape, Merge, PutTape, Rank1, Rank4, SplitTape, Tape, Tensor, TensorFromVec};
use rayon::prelude::*;

use super::depthwise::{
    channels_last_backward, channels_last_forward, channels_last_suits, direct_backward, direct_forward,
};
use super::grad::{grad_mut, put_grad, take_grad};
use super::im2col::{col2im_add, im2col};
use super::taps;
use super::window::{Axis, ConvGeom};
use super::winograd;
use super::Image;
use crate::element::{matmul, matmul_strided, view, Mat, Scratch};
use crate::{Element, OpError};

/// Stride, padding and groups of a convolution; the kernel size comes from the weight's type.
///
/// ```
/// use siamlab_model::Conv2dConfig;
/// let depthwise = Conv2dConfig::default().stride(2).padding(1).groups(32);
/// assert_eq!(depthwise.output_size(32, 32, 3), Some((16, 16)));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dConfig {
    /// Step between windows (both axes).
    pub stride: usize,
    /// Zeros added on each side (both axes).
    pub padding: usize,
    /// Channel groups: input and output channels are split into this many independent convs.
    pub groups: usize,
    /// Whether backward computes the input's gradient. `false` for a network's first
    /// convolution, whose input is the images: PyTorch skips that gradient too, as images do
    /// not require grad. The gradient of the input is then left untouched (the weight's and
    /// bias's are computed as always). Only the CPU kernels read it; composed ops ignore it.
    pub input_grad: bool,
}

impl Default for Conv2dConfig {
    /// Stride 1, no padding, one group, with the input's gradient.
    fn default() -> Self {
        Conv2dConfig { stride: 1, padding: 0, groups: 1, input_grad: true }
    }
}

impl Conv2dConfig {
    /// Sets the stride.
    pub fn stride(self, stride: usize) -> Self {
        Conv2dConfig { stride, ..self }
    }
    /// Sets the padding.
    pub fn padding(self, padding: usize) -> Self {
        Conv2dConfig { padding, ..self }
    }
    /// Sets the number of groups.
    pub fn groups(self, groups: usize) -> Self {
        Conv2dConfig { groups, ..self }
    }
    /// Sets whether backward computes the input's gradient (the field of that name).
    pub fn input_grad(self, input_grad: bool) -> Self {
        Conv2dConfig { input_grad, ..self }
    }
    /// Output `(height, width)` for an input of `h × w` and a `kernel × kernel` window, or `None`
    /// when the padded input is smaller than the kernel (or the stride is 0).
    pub fn output_size(&self, h: usize, w: usize, kernel: usize) -> Option<(usize, usize)> {
        let ax = |len| Axis { len, kernel, stride: self.stride, padding: self.padding };
        Some((ax(h).out_len()?, ax(w).out_len()?))
    }

    pub(crate) fn geometry(
        &self,
        (n, c, h, w): (usize, usize, usize, usize),
        o: usize,
        ig: usize,
        k: usize,
    ) -> Result<ConvGeom, OpError> {
        let bad = |reason: String| Err(OpError::config("conv2d", reason));
        if self.groups == 0 || !c.is_multiple_of(self.groups) || !o.is_multiple_of(self.groups) {
            return bad(format!("groups {} must divide in channels {c} and out channels {o}", self.groups));
        }
        if c / self.groups != ig {
            return bad(format!(
                "weight has {ig} input channels per group, input has {c} channels / {} groups",
                self.groups
            ));
        }
        if h == 0 || w == 0 {
            return bad(format!("empty {h}x{w} input"));
        }
        let Some((ho, wo)) = self.output_size(h, w, k) else {
            return bad(format!(
                "kernel {k} (stride {}, padding {}) does not fit a {h}x{w} input",
                self.stride, self.padding
            ));
        };
        let axis = |len| Axis { len, kernel: k, stride: self.stride, padding: self.padding };
        Ok(ConvGeom { n, c, o, groups: self.groups, k, ah: axis(h), aw: axis(w), ho, wo })
    }
}

/// 2-D convolution without bias: `x` is `[N, C, H, W]`, `weight` is `[O, C/groups, K, K]`
/// (PyTorch's layout); returns `[N, O, Ho, Wo]` carrying the merged tapes.
///
/// Errors when `cfg.groups` does not divide `C` and `O`, when `IG != C / groups`, or when the
/// kernel does not fit the padded input.
///
/// ```
/// use dfdx::prelude::*;
/// use siamlab_model::{conv2d, Conv2dConfig};
/// let dev = Cpu::default();
/// let x = dev.sample_normal_like(&(2, Const::<3>, 8, 8));
/// let w: Tensor<Rank4<16, 3, 3, 3>, f32, _> = dev.sample_normal();
/// let y = conv2d(x.leaky_trace(), w, Conv2dConfig::default().stride(2).padding(1)).unwrap();
/// assert_eq!(y.shape(), &(2, Const::<16>, 4, 4));
/// let grads = y.sum().backward();
/// ```
pub fn conv2d<const C: usize, const O: usize, const IG: usize, const K: usize, E, T, TW>(
    x: Tensor<Image<C>, E, Cpu, T>,
    weight: Tensor<Rank4<O, IG, K, K>, E, Cpu, TW>,
    cfg: Conv2dConfig,
) -> Result<Tensor<Image<O>, E, Cpu, T>, OpError>
where
    E: Element,
    T: Tape<E, Cpu> + Merge<TW>,
    TW: Tape<E, Cpu>,
{
    let (w, tw) = E::contiguous(weight)?.split_tape();
    let (x, tx) = E::contiguous(x)?.split_tape();
    conv_impl(x, w, None, tx.merge(tw), cfg)
}

/// 2-D convolution with a bias of `O` values added to each output channel; otherwise as
/// [`conv2d`].
pub fn conv2d_bias<const C: usize, const O: usize, const IG: usize, const K: usize, E, T, TW, TB>(
    x: Tensor<Image<C>, E, Cpu, T>,
    weight: Tensor<Rank4<O, IG, K, K>, E, Cpu, TW>,
    bias: Tensor<Rank1<O>, E, Cpu, TB>,
    cfg: Conv2dConfig,
) -> Result<Tensor<Image<O>, E, Cpu, T>, OpError>
where
    E: Element,
    T: Tape<E, Cpu> + Merge<TW> + Merge<TB>,
    TW: Tape<E, Cpu>,
    TB: Tape<E, Cpu>,
{
    let (w, tw) = E::contiguous(weight)?.split_tape();
    let (b, tb) = E::contiguous(bias)?.split_tape();
    let (x, tx) = E::contiguous(x)?.split_tape();
    conv_impl(x, w, Some(b), tx.merge(tw).merge(tb), cfg)
}

fn conv_impl<const C: usize, const O: usize, const IG: usize, const K: usize, E, T>(
    x: Tensor<Image<C>, E, Cpu>,
    w: Tensor<Rank4<O, IG, K, K>, E, Cpu>,
    b: Option<Tensor<Rank1<O>, E, Cpu>>,
    mut tape: T,
    cfg: Conv2dConfig,
) -> Result<Tensor<Image<O>, E, Cpu, T>, OpError>
where
    E: Element,
    T: Tape<E, Cpu>,
{
    let grouped = cfg.groups > 1;
    let &(n, _, h, wd) = x.shape();
    let g = cfg.geometry((n, C, h, wd), O, IG, K)?;
    // Profile names carry the shape, so the table shows which convolutions take the time.
    let shape = move || format!("{C}->{O} k{K} s{} @{h}x{wd}", cfg.stride);
    let _prof = crate::profile::scope_named(|| {
        format!("{}.forward {}", if grouped { "conv2d_grouped" } else { "conv2d" }, shape())
    });
    let dev = x.device().clone();

    let mut y = vec![E::zero(); n * O * g.pp()];
    {
        let xs = view(&x);
        let ws = view(&w);
        let bs = b.as_ref().map(|b| view(b));
        forward(&g, xs, ws, bs, &mut y);
    }
    let y = dev.try_tensor_from_vec(y, (n, Const::<O>, g.ho, g.wo))?;

    if T::OWNS_TAPE {
        let (xg, wg, yg) = (x.ghost(), w.ghost(), y.ghost());
        let bg = b.as_ref().map(|b| b.ghost());
        tape.add_backward_op(move |grads| {
            let _prof = crate::profile::scope_named(|| {
                format!("{}.backward {}", if grouped { "conv2d_grouped" } else { "conv2d" }, shape())
            });
            let gy = take_grad!(grads, &yg);
            let xs = view(&x);
            let ws = view(&w);
            if winograd::suits(&g) {
                let mut dw = Scratch::zeroed(O * g.kk());
                let mut spare = None;
                let dx = if cfg.input_grad { Some(grad_mut!(grads, &xg)) } else { None };
                winograd::backward(&g, xs, ws, &gy, or_spare(dx, &mut spare, xs.len()), &mut dw);
                add_assign(grad_mut!(grads, &wg), &dw);
                if let Some(bg) = &bg {
                    add_bias_grad(&g, &gy, grad_mut!(grads, bg));
                }
                put_grad!(grads, &yg, gy);
                return Ok(());
            }
            let dx = if cfg.input_grad { Some(grad_mut!(grads, &xg)) } else { None };
            let acc = backward(&g, xs, ws, &gy, dx, bg.is_some());
            let (dw_acc, db_acc) = acc.split_at(O * g.kk());
            add_weight_grad(&g, grad_mut!(grads, &wg), dw_acc);
            if let Some(bg) = &bg {
                add_assign(grad_mut!(grads, bg), db_acc);
            }
            put_grad!(grads, &yg, gy);
            Ok(())
        });
    }
    Ok(y.put_tape(tape))
}

/// Adds the weight gradient accumulated by [`backward`] onto `dw` (`[O, ig, K, K]`). The GEMM
/// path accumulates each group's `og × kk` block column-major; the direct kernels row-major;
/// the per-tap kernels tap by tap.
fn add_weight_grad<E: Element>(g: &ConvGeom, dw: &mut [E], acc: &[E]) {
    if taps::suits(g) {
        return taps::add_weight_grad(g, dw, acc);
    }
    if g.direct() {
        return add_assign(dw, acc);
    }
    let (og, kk) = (g.og(), g.kk());
    // A transpose-add, in tiles so both sides stay in cache.
    const TILE: usize = 32;
    for (dg, ag) in dw.chunks_exact_mut(og * kk).zip(acc.chunks_exact(og * kk)) {
        for o0 in (0..og).step_by(TILE) {
            for i0 in (0..kk).step_by(TILE) {
                for o in o0..(o0 + TILE).min(og) {
                    let row = &mut dg[o * kk..(o + 1) * kk];
                    for i in i0..(i0 + TILE).min(kk) {
                        row[i] += ag[i * og + o];
                    }
                }
            }
        }
    }
}

fn add_assign<E: Element>(dst: &mut [E], src: &[E]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d += *s;
    }
}

/// How a convolution's batch is cut up: `chunk` consecutive images per rayon task (one task per
/// thread), processed `block` images at a time (their columns side by side in one GEMM, so
/// small feature maps still give GEMMs of a useful width); `parallel_gemm` when there is a
/// single task and GEMM should spread its own work.
struct Plan {
    chunk: usize,
    block: usize,
    parallel_gemm: bool,
}

/// Target GEMM width (columns) when batching images of small feature maps.
const BLOCK_COLS: usize = 1024;
/// Cap on the elements of one block's column matrix (per thread).
const BLOCK_ELEMS: usize = 8 << 20;

impl Plan {
    fn new(g: &ConvGeom) -> Self {
        let threads = rayon::current_num_threads().max(1);
        let tasks = if g.n >= 2 { threads.min(g.n) } else { 1 };
        let chunk = g.n.div_ceil(tasks).max(1);
        let block = if g.direct() {
            // The plane kernels take one image at a time; the channels-last ones a task's
            // whole chunk (they transpose the weights once for it).
            if channels_last_suits(g) {
                chunk
            } else {
                1
            }
        } else {
            let by_width = BLOCK_COLS / g.pp().max(1);
            let by_memory = BLOCK_ELEMS / (g.kk() * g.pp()).max(1);
            by_width.min(by_memory).clamp(1, chunk)
        };
        Plan { chunk, block, parallel_gemm: tasks == 1 && threads > 1 }
    }
}

fn forward<E: Element>(g: &ConvGeom, x: &[E], w: &[E], b: Option<&[E]>, y: &mut [E]) {
    if winograd::suits(g) {
        winograd::forward(g, x, w, y, false);
        if let Some(b) = b {
            add_bias(g, b, y);
        }
        return;
    }
    let (chw, opp) = (g.c * g.hw(), g.o * g.pp());
    let plan = Plan::new(g);
    let per_tap = taps::suits(g).then(|| taps::pack_weights(g, w, true));
    let run = |(ys, xs): (&mut [E], &[E])| {
        if let Some(wp) = &per_tap {
            taps::forward(g, xs, wp, ys, plan.parallel_gemm);
            if let Some(b) = b {
                add_bias(g, b, ys);
            }
            return;
        }
        for (yb, xb) in ys.chunks_mut(plan.block * opp).zip(xs.chunks(plan.block * chw)) {
            forward_block(g, xb, w, b, yb, plan.parallel_gemm, false);
        }
    };
    if plan.chunk >= g.n {
        run((y, x));
    } else {
        y.par_chunks_mut(plan.chunk * opp).zip(x.par_chunks(plan.chunk * chw)).for_each(run);
    }
}

/// Forward of a block of consecutive images: `y` is overwritten, or added to when
/// `accumulate` (the input-gradient pass of [`backward_block`], which has no bias and never
/// takes the direct kernel).
fn forward_block<E: Element>(
    g: &ConvGeom,
    x: &[E],
    w: &[E],
    b: Option<&[E]>,
    y: &mut [E],
    parallel: bool,
    accumulate: bool,
) {
    let (ig, og, kk, hw, pp) = (g.ig(), g.og(), g.kk(), g.hw(), g.pp());
    let (chw, opp) = (g.c * hw, g.o * pp);
    let imgs = x.len() / chw;
    if g.direct() {
        debug_assert!(!accumulate);
        if channels_last_suits(g) {
            channels_last_forward(g, x, w, y);
        } else {
            for (yn, xn) in y.chunks_exact_mut(opp).zip(x.chunks_exact(chw)) {
                direct_forward(g, xn, w, yn);
            }
        }
    } else if imgs == 1 && g.pointwise() {
        // The image is its own column matrix; the GEMM writes straight into y.
        for grp in 0..g.groups {
            let (wg, xg) = (&w[grp * og * kk..][..og * kk], &x[grp * ig * hw..][..ig * hw]);
            let yg = &mut y[grp * og * pp..][..og * pp];
            matmul(og, pp, kk, yg, accumulate, Mat::rows(wg, kk), Mat::rows(xg, pp), parallel);
        }
    } else {
        let cols = imgs * pp;
        let mut col = Scratch::with_len(kk * cols);
        let mut out = (imgs > 1).then(|| Scratch::with_len(og * cols));
        for grp in 0..g.groups {
            for (i, xn) in x.chunks_exact(chw).enumerate() {
                im2col(g, &xn[grp * ig * hw..][..ig * hw], &mut col, cols, i * pp);
            }
            let wg = Mat::rows(&w[grp * og * kk..][..og * kk], kk);
            match out.as_mut() {
                None => {
                    let yg = &mut y[grp * og * pp..][..og * pp];
                    matmul(og, pp, kk, yg, accumulate, wg, Mat::rows(&col, pp), parallel);
                }
                Some(out) => {
                    matmul(og, cols, kk, out, false, wg, Mat::rows(&col, cols), parallel);
                    // out is [og, imgs·pp]; y is [imgs, O, pp].
                    for (i, yn) in y.chunks_exact_mut(opp).enumerate() {
                        for (o, yo) in yn[grp * og * pp..][..og * pp].chunks_exact_mut(pp).enumerate() {
                            let src = &out[o * cols + i * pp..][..pp];
                            if accumulate {
                                yo.iter_mut().zip(src).for_each(|(y, v)| *y += *v);
                            } else {
                                yo.copy_from_slice(src);
                            }
                        }
                    }
                }
            }
        }
    }
    if let Some(b) = b {
        add_bias(g, b, y);
    }
}

/// Adds the bias `b` (`[O]`) to every output plane of the images in `y`.
fn add_bias<E: Element>(g: &ConvGeom, b: &[E], y: &mut [E]) {
    for yn in y.chunks_exact_mut(g.o * g.pp()) {
        for (yo, &bo) in yn.chunks_exact_mut(g.pp()).zip(b) {
            yo.iter_mut().for_each(|v| *v += bo);
        }
    }
}

/// Adds the bias gradient (the output gradient summed over each plane) into `db` (`[O]`).
fn add_bias_grad<E: Element>(g: &ConvGeom, gy: &[E], db: &mut [E]) {
    for gyn in gy.chunks_exact(g.o * g.pp()) {
        for (d, gyo) in db.iter_mut().zip(gyn.chunks_exact(g.pp())) {
            *d += gyo.iter().copied().sum::<E>();
        }
    }
}

/// Adds the input gradient into `dx` (none computed without it) and returns the weight and
/// bias gradients, concatenated (`[O·kk]` in the layout [`add_weight_grad`] reads, then `[O]`,
/// left zero without `bias`).
fn backward<E: Element>(g: &ConvGeom, x: &[E], w: &[E], gy: &[E], dx: Option<&mut [E]>, bias: bool) -> Scratch<E> {
    let (chw, opp) = (g.c * g.hw(), g.o * g.pp());
    let acc_len = g.o * g.kk() + g.o;
    let plan = Plan::new(g);
    let per_tap = taps::suits(g).then(|| taps::pack_weights(g, w, false));
    let flipped = match (&per_tap, &dx) {
        (None, Some(_)) => Transposed::new(g, w),
        _ => None,
    };
    // One accumulator for the weight and bias gradients per task.
    let run = |dxs: Option<&mut [E]>, xs: &[E], gys: &[E]| {
        let mut acc = Scratch::zeroed(acc_len);
        if let Some(wp) = &per_tap {
            let (dw, db) = acc.split_at_mut(g.o * g.kk());
            if bias {
                add_bias_grad(g, gys, db);
            }
            let mut spare = None;
            taps::backward(g, xs, wp, gys, or_spare(dxs, &mut spare, xs.len()), dw, plan.parallel_gemm);
            return acc;
        }
        let (bc, bo) = (plan.block * chw, plan.block * opp);
        let mut dx_blocks = dxs.map(|d| d.chunks_mut(bc));
        for (xb, gyb) in xs.chunks(bc).zip(gys.chunks(bo)) {
            let dxb = dx_blocks.as_mut().and_then(Iterator::next);
            let p = plan.parallel_gemm;
            backward_block(g, xb, w, flipped.as_ref().map(Transposed::parts), gyb, dxb, &mut acc, p, bias);
        }
        acc
    };
    if plan.chunk >= g.n {
        return run(dx, x, gy);
    }
    let tasks = x.par_chunks(plan.chunk * chw).zip(gy.par_chunks(plan.chunk * opp));
    let mut parts: Vec<Scratch<E>> = match dx {
        Some(dx) => dx.par_chunks_mut(plan.chunk * chw).zip(tasks).map(|(d, (x, gy))| run(Some(d), x, gy)).collect(),
        None => tasks.map(|(x, gy)| run(None, x, gy)).collect(),
    };
    let mut total = parts.pop().expect("a batch of two or more has tasks");
    for part in &parts {
        add_assign(&mut total, part);
    }
    total
}

/// `dx`, or else a zeroed buffer of `len` held in `spare`: for the kernels that always write an
/// input gradient (Winograd, per-tap, depthwise), none of which reads a network's images.
fn or_spare<'a, E: Element>(dx: Option<&'a mut [E]>, spare: &'a mut Option<Scratch<E>>, len: usize) -> &'a mut [E] {
    match dx {
        Some(dx) => dx,
        None => &mut spare.insert(Scratch::zeroed(len))[..],
    }
}

/// The input gradient of a stride-1 convolution is itself a convolution: of the output
/// gradient, with the kernels flipped and in/out channels swapped, padding `k − 1 − p`. Run
/// through the forward kernel this replaces a thin GEMM plus col2im scatter with the shape of
/// the forward GEMM.
struct Transposed<E: Element> {
    geom: ConvGeom,
    /// Weights `[C, O/groups, K, K]`: `wt[g·ig + c][o][kh][kw] = w[g·og + o][c][K−1−kh][K−1−kw]`.
    weight: Scratch<E>,
}

impl<E: Element> Transposed<E> {
    fn new(g: &ConvGeom, w: &[E]) -> Option<Self> {
        let (k, p) = (g.k, g.ah.padding);
        // Few input channels (a stem reading RGB): the flipped convolution would im2col all
        // `O·K·K` rows of the output gradient to produce a handful of channels, where the
        // scatter path only builds `C·K·K`.
        if g.ah.stride != 1 || p + 1 > k || g.direct() || g.pointwise() || g.ig() * 4 < g.og() {
            return None;
        }
        let axis = |len| Axis { len, kernel: k, stride: 1, padding: k - 1 - p };
        let geom = ConvGeom {
            n: g.n,
            c: g.o,
            o: g.c,
            groups: g.groups,
            k,
            ah: axis(g.ho),
            aw: axis(g.wo),
            ho: g.ah.len,
            wo: g.aw.len,
        };
        if geom.direct() || axis(g.ho).out_len() != Some(g.ah.len) {
            return None;
        }
        let (ig, og, kk) = (g.ig(), g.og(), k * k);
        let mut weight = Scratch::with_len(w.len());
        for grp in 0..g.groups {
            for o in 0..og {
                for c in 0..ig {
                    let src = &w[((grp * og + o) * ig + c) * kk..][..kk];
                    let dst = &mut weight[((grp * ig + c) * og + o) * kk..][..kk];
                    for (d, s) in dst.iter_mut().zip(src.iter().rev()) {
                        *d = *s;
                    }
                }
            }
        }
        Some(Transposed { geom, weight })
    }

    fn parts(&self) -> (&ConvGeom, &[E]) {
        (&self.geom, &self.weight)
    }
}

/// Backward of a block of consecutive images: adds into `dx` (when given) and the accumulator `acc`
/// (`[O·kk]` weight gradient as [`add_weight_grad`] reads it, then `[O]` bias gradient, summed
/// only with `bias`). With `flipped`, the input gradient is computed as a convolution (see
/// [`Transposed`]).
#[allow(clippy::too_many_arguments)]
fn backward_block<E: Element>(
    g: &ConvGeom,
    x: &[E],
    w: &[E],
    flipped: Option<(&ConvGeom, &[E])>,
    gy: &[E],
    dx: Option<&mut [E]>,
    acc: &mut [E],
    parallel: bool,
    bias: bool,
) {
    let (ig, og, kk, hw, pp) = (g.ig(), g.og(), g.kk(), g.hw(), g.pp());
    let (chw, opp) = (g.c * hw, g.o * pp);
    let imgs = x.len() / chw;
    let (dw, db) = acc.split_at_mut(g.o * kk);
    if bias {
        add_bias_grad(g, gy, db);
    }
    if g.direct() {
        let mut spare = None;
        let dx = or_spare(dx, &mut spare, x.len());
        if channels_last_suits(g) {
            channels_last_backward(g, x, w, gy, dx, dw);
            return;
        }
        for ((xn, gyn), dxn) in x.chunks_exact(chw).zip(gy.chunks_exact(opp)).zip(dx.chunks_exact_mut(chw)) {
            direct_backward(g, xn, w, gyn, dxn, dw);
        }
        return;
    }
    let mut dx = dx;
    if let (Some((gt, wt)), Some(dx)) = (flipped, dx.as_deref_mut()) {
        forward_block(gt, gy, wt, None, dx, parallel, true);
    }
    let cols = imgs * pp;
    let pointwise = imgs == 1 && g.pointwise();
    let mut col = (!pointwise).then(|| Scratch::with_len(kk * cols));
    let scatter = dx.is_some() && flipped.is_none();
    let mut dcol = (!pointwise && scatter).then(|| Scratch::with_len(kk * cols));
    // The output gradient as [og, imgs·pp] when several images share a GEMM.
    let mut gyt = (imgs > 1).then(|| Scratch::with_len(og * cols));
    for grp in 0..g.groups {
        let wg = &w[grp * og * kk..][..og * kk];
        let gyg: &[E] = match gyt.as_mut() {
            None => &gy[grp * og * pp..][..og * pp],
            Some(gyt) => {
                for (i, gyn) in gy.chunks_exact(opp).enumerate() {
                    for (o, gyo) in gyn[grp * og * pp..][..og * pp].chunks_exact(pp).enumerate() {
                        gyt[o * cols + i * pp..][..pp].copy_from_slice(gyo);
                    }
                }
                gyt
            }
        };
        let rhs: &[E] = match col.as_mut() {
            None => &x[grp * ig * hw..][..ig * hw],
            Some(col) => {
                for (i, xn) in x.chunks_exact(chw).enumerate() {
                    im2col(g, &xn[grp * ig * hw..][..ig * hw], col, cols, i * pp);
                }
                col
            }
        };
        let dwg = &mut dw[grp * og * kk..][..og * kk];
        // dW_g (og × kk) += gy_g (og × cols) · colᵀ (cols × kk), kept column-major (`i·og + o`): GEMM
        // then packs the small gy instead of transposing the large col (see `add_weight_grad`).
        let dst = Mat::strided(dwg, 1, og);
        matmul_strided(og, kk, cols, dst, true, Mat::rows(gyg, cols), Mat::transposed(rhs, cols), parallel);
        // dcol (kk × cols) = W_gᵀ (kk × og) · gy_g (og × cols), scattered back onto dx.
        let Some(dx) = dx.as_deref_mut().filter(|_| scatter) else { continue };
        let (wt, gm) = (Mat::transposed(wg, kk), Mat::rows(gyg, cols));
        match dcol.as_mut() {
            None => {
                let dxg = &mut dx[grp * ig * hw..][..ig * hw];
                matmul(kk, cols, og, dxg, true, wt, gm, parallel);
            }
            Some(dcol) => {
                matmul(kk, cols, og, &mut *dcol, false, wt, gm, parallel);
                for (i, dxn) in dx.chunks_exact_mut(chw).enumerate() {
                    col2im_add(g, dcol, cols, i * pp, &mut dxn[grp * ig * hw..][..ig * hw]);
                }
            }
        }
    }
}
