//! Gaussian blur with torchvision's kernel, reflect padding and rounding, as a separable f32
//! convolution on planar RGB8 (CHW u8).

use rand_chacha::rand_core::Rng;

use super::error::{check_len, invalid, Error, Result};
use super::rng::{uniform, unit_f64};
use super::simd::{multiversion, sat_u8};

/// torchvision's `_get_gaussian_kernel1d`: `linspace(-(k-1)/2, (k-1)/2, k)`, `exp(-x²/2σ²)`,
/// normalized to sum 1. Writes `kernel_size` taps into `out`.
pub fn gaussian_kernel1d(kernel_size: u32, sigma: f64, out: &mut [f32]) -> Result<()> {
    check_kernel(kernel_size, sigma)?;
    if out.len() != kernel_size as usize {
        return Err(invalid("kernel", format!("buffer holds {} taps, kernel_size is {kernel_size}", out.len())));
    }
    let half = (f64::from(kernel_size) - 1.0) * 0.5;
    let mut sum = 0.0;
    for (k, v) in out.iter_mut().enumerate() {
        let x = k as f64 - half;
        let pdf = (-0.5 * (x / sigma) * (x / sigma)).exp();
        *v = pdf as f32;
        sum += pdf;
    }
    for v in out.iter_mut() {
        *v = (f64::from(*v) / sum) as f32;
    }
    Ok(())
}

fn check_kernel(kernel_size: u32, sigma: f64) -> Result<()> {
    if kernel_size == 0 || kernel_size % 2 == 0 {
        return Err(invalid("kernel_size", format!("must be odd and positive, got {kernel_size}")));
    }
    if !(sigma.is_finite() && sigma > 0.0) {
        return Err(invalid("sigma", format!("must be finite and > 0, got {sigma}")));
    }
    Ok(())
}

/// Reusable buffers of [`gaussian_blur`].
#[derive(Debug, Default, Clone)]
pub struct BlurScratch {
    kernel: Vec<f32>,
    row: Vec<f32>,
    acc: Vec<f32>,
    tmp: Vec<f32>,
    rows: Vec<usize>,
}

/// Index of padded position `i` (in `-pad..len + pad`) with reflect padding (edge excluded).
#[inline]
fn reflect(i: isize, len: usize) -> usize {
    let len = len as isize;
    let r = if i < 0 {
        -i
    } else if i >= len {
        2 * (len - 1) - i
    } else {
        i
    };
    r as usize
}

/// torchvision's `gaussian_blur(img, [k, k], [sigma, sigma])` on CHW u8 planes in place:
/// reflect padding of `k / 2`, the outer product of two 1-D kernels (applied separably here),
/// and `round()` back to u8. `k / 2` must be smaller than both dimensions (as torch's reflect
/// padding requires).
pub fn gaussian_blur(
    planes_chw: &mut [u8],
    width: u32,
    height: u32,
    kernel_size: u32,
    sigma: f64,
    scratch: &mut BlurScratch,
) -> Result<()> {
    check_len("RGB planes", planes_chw.len(), width, height, 3)?;
    check_kernel(kernel_size, sigma)?;
    let (w, h, k) = (width as usize, height as usize, kernel_size as usize);
    let pad = k / 2;
    if pad >= w || pad >= h {
        return Err(Error::ImageSize {
            width,
            height,
            reason: format!("reflect padding {pad} needs both sides > {pad}"),
        });
    }
    scratch.kernel.resize(k, 0.0);
    gaussian_kernel1d(kernel_size, sigma, &mut scratch.kernel)?;
    // Rows are processed in blocks of LANES columns; pad the row length to a multiple.
    let wp = w.div_ceil(LANES) * LANES;
    scratch.row.clear();
    scratch.row.resize(wp + 2 * pad, 0.0);
    scratch.tmp.resize(wp * h, 0.0);
    scratch.rows.resize(k, 0);
    scratch.acc.resize(w, 0.0);
    let BlurScratch { kernel, row, acc, tmp, rows } = scratch;
    let n = w * h;
    for plane in planes_chw.chunks_exact_mut(n) {
        // Horizontal pass: u8 → f32 rows in `tmp` (row stride `wp`).
        for y in 0..h {
            let src = &plane[y * w..(y + 1) * w];
            widen(src, &mut row[pad..pad + w]);
            for p in 0..pad {
                row[pad - 1 - p] = f32::from(src[reflect(-(p as isize) - 1, w)]);
                row[pad + w + p] = f32::from(src[reflect((w + p) as isize, w)]);
            }
            hconv(row, kernel, &mut tmp[y * wp..(y + 1) * wp]);
        }
        // Vertical pass: f32 → rounded u8.
        for y in 0..h {
            for (t, r) in rows.iter_mut().enumerate() {
                *r = reflect(y as isize + t as isize - pad as isize, h) * wp;
            }
            vconv(tmp, rows, kernel, acc, &mut plane[y * w..(y + 1) * w]);
        }
    }
    Ok(())
}

/// Block width of the convolution kernels: four AVX2 registers of f32, enough independent
/// accumulators to hide the add latency.
const LANES: usize = 32;

multiversion! {
    fn widen(src: &[u8], dst: &mut [f32]) {
        for (d, &s) in dst.iter_mut().zip(src) {
            *d = f32::from(s);
        }
    }
}

multiversion! {
    /// `out[x] = sum_t kernel[t] * row[x + t]` for a symmetric, odd `kernel`, pairing the taps
    /// `t` and `k - 1 - t` (one multiply per pair); `out.len()` is a multiple of LANES and
    /// `row.len() >= out.len() + kernel.len() - 1`.
    fn hconv(row: &[f32], kernel: &[f32], out: &mut [f32]) {
        let k = kernel.len();
        let half = k / 2;
        for (blk, o) in out.chunks_exact_mut(LANES).enumerate() {
            let base = blk * LANES;
            let Some(center) = row.get(base + half..base + half + LANES) else {
                break;
            };
            let mut acc = [0f32; LANES];
            for l in 0..LANES {
                acc[l] = kernel[half] * center[l];
            }
            for (t, &kv) in kernel[..half].iter().enumerate() {
                let (Some(a), Some(b)) = (
                    row.get(base + t..base + t + LANES),
                    row.get(base + k - 1 - t..base + k - 1 - t + LANES),
                ) else {
                    break;
                };
                for l in 0..LANES {
                    acc[l] += kv * (a[l] + b[l]);
                }
            }
            o.copy_from_slice(&acc);
        }
    }
}

multiversion! {
    /// `out[x] = round(sum_t kernel[t] * tmp[rows[t] + x])`, saturated to u8, pairing the
    /// symmetric taps as [`hconv`] does. Streams whole rows through `acc` (one f32 per output
    /// column), which vectorizes cleanly.
    fn vconv(tmp: &[f32], rows: &[usize], kernel: &[f32], acc: &mut [f32], out: &mut [u8]) {
        let k = kernel.len().min(rows.len());
        let half = k / 2;
        let w = out.len().min(acc.len());
        let (acc, out) = (&mut acc[..w], &mut out[..w]);
        let row = |r: usize| tmp.get(r..r + w);
        let Some(center) = row(rows[half]) else {
            return;
        };
        let kc = kernel[half];
        for (a, &c) in acc.iter_mut().zip(center) {
            *a = kc * c;
        }
        for (t, &kv) in kernel[..half].iter().enumerate() {
            let (Some(ra), Some(rb)) = (row(rows[t]), row(rows[k - 1 - t])) else {
                return;
            };
            for ((a, &x), &y) in acc.iter_mut().zip(ra).zip(rb) {
                *a += kv * (x + y);
            }
        }
        for (d, &a) in out.iter_mut().zip(acc.iter()) {
            // Round half to even (torch.round) with the 1.5 * 2^23 trick, valid for
            // 0 <= a < 2^22; then saturate to u8.
            const MAGIC: f32 = 12_582_912.0;
            *d = sat_u8((a + MAGIC) - MAGIC);
        }
    }
}

/// torchvision's `GaussianBlur(kernel_size, sigma=(lo, hi))` wrapped in `RandomApply(p)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GaussianBlur {
    kernel_size: u32,
    sigma: (f64, f64),
    p: f64,
}

impl GaussianBlur {
    /// An odd `kernel_size`, a sigma range `0 < lo <= hi`, applied with probability `p`.
    pub fn new(kernel_size: u32, sigma: (f64, f64), p: f64) -> Result<Self> {
        check_kernel(kernel_size, sigma.0)?;
        if !(sigma.1.is_finite() && sigma.0 <= sigma.1) {
            return Err(invalid("sigma", format!("need 0 < min <= max, got {sigma:?}")));
        }
        if !(0.0..=1.0).contains(&p) {
            return Err(invalid("p", format!("must be in [0, 1], got {p}")));
        }
        Ok(GaussianBlur { kernel_size, sigma, p })
    }

    /// The kernel size.
    pub fn kernel_size(&self) -> u32 {
        self.kernel_size
    }

    /// Draws whether to blur (`RandomApply`: skip when `p < rand(1)`) and, if so, sigma
    /// (`GaussianBlur.get_params`: uniform in the range).
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> Option<f64> {
        if self.p < unit_f64(rng) {
            return None;
        }
        Some(uniform(rng, self.sigma.0, self.sigma.1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::augment::rng::sample_rng;

    #[test]
    fn kernel_is_normalized_and_symmetric() {
        let mut k = [0f32; 5];
        gaussian_kernel1d(5, 1.0, &mut k).unwrap();
        let s: f32 = k.iter().sum();
        assert!((s - 1.0).abs() < 1e-6);
        assert_eq!(k[0], k[4]);
        assert!((k[2] - 0.402_619_9).abs() < 1e-6, "{k:?}");
    }

    #[test]
    fn blur_keeps_constants_and_uses_reflect_padding() {
        let (w, h) = (5u32, 4u32);
        let mut img = vec![77u8; 3 * 20];
        let mut s = BlurScratch::default();
        gaussian_blur(&mut img, w, h, 3, 1.5, &mut s).unwrap();
        assert!(img.iter().all(|&v| v == 77));
        // A single bright column at x = 0: reflect padding mirrors x = 1 (dark), not x = 0.
        let mut img = vec![0u8; 3 * 20];
        for y in 0..4 {
            img[y * 5] = 200;
        }
        gaussian_blur(&mut img, w, h, 3, 1.0, &mut s).unwrap();
        let mut k = [0f32; 3];
        gaussian_kernel1d(3, 1.0, &mut k).unwrap();
        assert_eq!(img[0], (200.0 * k[1]).round() as u8);
        assert_eq!(img[1], (200.0 * k[0]).round() as u8);
    }

    #[test]
    fn invalid_blur_parameters_are_errors() {
        let mut img = vec![0u8; 3 * 16];
        let mut s = BlurScratch::default();
        assert!(gaussian_blur(&mut img, 4, 4, 4, 1.0, &mut s).is_err());
        assert!(gaussian_blur(&mut img, 4, 4, 9, 1.0, &mut s).is_err());
        assert!(gaussian_blur(&mut img, 4, 4, 3, 0.0, &mut s).is_err());
        assert!(gaussian_blur(&mut img, 4, 3, 3, 1.0, &mut s).is_err());
        assert!(GaussianBlur::new(9, (2.0, 0.1), 0.5).is_err());
    }

    #[test]
    fn sigma_sampler_stays_in_range() {
        let gb = GaussianBlur::new(9, (0.1, 2.0), 0.5).unwrap();
        let mut applied = 0;
        for i in 0..4000 {
            if let Some(s) = gb.sample(&mut sample_rng(2, 0, i, 1)) {
                assert!((0.1..2.0).contains(&s));
                applied += 1;
            }
        }
        assert!((1850..2150).contains(&applied), "{applied}");
    }
}
