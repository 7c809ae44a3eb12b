//! Color ops on planar RGB8 (CHW u8: the R plane, then G, then B): ColorJitter's four adjust
//! ops, grayscale and solarize, with the formulas of torchvision's tensor implementation
//! (`torchvision.transforms.functional` on uint8 tensors, v1).
//!
//! As there, each op computes in f32 and converts back to u8 by clamping and truncating, so a
//! chain of ops rounds after each step exactly as torchvision's does. Grayscale is
//! `0.2989 R + 0.587 G + 0.114 B` truncated to u8 (torchvision's weights).

use rand_chacha::rand_core::Rng;

use super::error::{check_non_negative, invalid, Error, Result};
use super::rng::{bernoulli, permutation, uniform, unit_f64};
use super::simd::{floor_small, multiversion, sat_u8};

const WR: f32 = 0.2989;
const WG: f32 = 0.587;
const WB: f32 = 0.114;

/// Splits a CHW u8 buffer into its three planes, checking the length.
fn planes(data: &mut [u8]) -> Result<(&mut [u8], &mut [u8], &mut [u8])> {
    if data.is_empty() || data.len() % 3 != 0 {
        return Err(Error::BufferSize {
            what: "RGB planes",
            width: (data.len() / 3) as u32,
            height: 1,
            expected: (data.len() / 3 + 1) * 3,
            actual: data.len(),
        });
    }
    let n = data.len() / 3;
    let (r, rest) = data.split_at_mut(n);
    let (g, b) = rest.split_at_mut(n);
    Ok((r, g, b))
}

#[inline(always)]
fn gray_f32(r: u8, g: u8, b: u8) -> f32 {
    WR * f32::from(r) + WG * f32::from(g) + WB * f32::from(b)
}

/// torchvision's `_blend(img1, img2, ratio)` coefficients: `ratio * img1 + (1 - ratio) * img2`
/// with both scalars rounded to f32 as torch does (`1 - ratio` is computed in double).
#[inline]
fn blend_coeffs(ratio: f64) -> (f32, f32) {
    (ratio as f32, (1.0 - ratio) as f32)
}

multiversion! {
    /// `trunc(clamp(a * x + c, 0, 255))` for every value: torch's `_blend` against a constant.
    fn blend_const(data: &mut [u8], a: f32, c: f32) {
        for v in data.iter_mut() {
            *v = sat_u8(a * f32::from(*v) + c);
        }
    }
}

/// `adjust_brightness(img, factor)`: `trunc(clamp(factor * x))` per channel.
pub fn adjust_brightness(planes_chw: &mut [u8], factor: f64) -> Result<()> {
    check_non_negative("brightness_factor", factor)?;
    planes(planes_chw)?;
    let (a, c) = blend_coeffs(factor);
    // _blend with a zero image: ratio * x + (1 - ratio) * 0.
    blend_const(planes_chw, a, c * 0.0);
    Ok(())
}

multiversion! {
    /// The sum of the truncated gray values of up to 2^16 pixels (fits in u32).
    fn gray_sum(r: &[u8], g: &[u8], b: &[u8]) -> u32 {
        let n = r.len().min(g.len()).min(b.len());
        let (r, g, b) = (&r[..n], &g[..n], &b[..n]);
        let mut sum = 0u32;
        for i in 0..n {
            sum += u32::from(sat_u8(gray_f32(r[i], g[i], b[i])));
        }
        sum
    }
}

/// The mean of the (truncated) grayscale image, as torchvision's `adjust_contrast` takes it.
pub fn grayscale_mean(planes_chw: &[u8]) -> Result<f32> {
    if planes_chw.is_empty() || planes_chw.len() % 3 != 0 {
        return Err(invalid("planes", "length must be a positive multiple of 3"));
    }
    let n = planes_chw.len() / 3;
    let (r, rest) = planes_chw.split_at(n);
    let (g, b) = rest.split_at(n);
    // Integers: the sum is exact, as torch's f32 sum is exact below 2^24.
    let sum: u64 = r
        .chunks(1 << 16)
        .zip(g.chunks(1 << 16))
        .zip(b.chunks(1 << 16))
        .map(|((r, g), b)| u64::from(gray_sum(r, g, b)))
        .sum();
    Ok((sum as f64 / n as f64) as f32)
}

/// `adjust_contrast(img, factor)`: blends each channel with the mean of the grayscale image,
/// `trunc(clamp(factor * x + (1 - factor) * mean))`.
pub fn adjust_contrast(planes_chw: &mut [u8], factor: f64) -> Result<()> {
    check_non_negative("contrast_factor", factor)?;
    let mean = grayscale_mean(planes_chw)?;
    let (a, c) = blend_coeffs(factor);
    blend_const(planes_chw, a, c * mean);
    Ok(())
}

/// `adjust_saturation(img, factor)`: blends each pixel with its own (truncated) gray value,
/// `trunc(clamp(factor * x + (1 - factor) * gray))`.
pub fn adjust_saturation(planes_chw: &mut [u8], factor: f64) -> Result<()> {
    check_non_negative("saturation_factor", factor)?;
    let (r, g, b) = planes(planes_chw)?;
    let (a, c) = blend_coeffs(factor);
    saturation_kernel(r, g, b, a, c);
    Ok(())
}

multiversion! {
    fn saturation_kernel(r: &mut [u8], g: &mut [u8], b: &mut [u8], a: f32, c: f32) {
        let n = r.len().min(g.len()).min(b.len());
        let (r, g, b) = (&mut r[..n], &mut g[..n], &mut b[..n]);
        for i in 0..n {
            let gray = f32::from(sat_u8(gray_f32(r[i], g[i], b[i]))) * c;
            r[i] = sat_u8(a * f32::from(r[i]) + gray);
            g[i] = sat_u8(a * f32::from(g[i]) + gray);
            b[i] = sat_u8(a * f32::from(b[i]) + gray);
        }
    }
}

multiversion! {
    fn grayscale_kernel(r: &mut [u8], g: &mut [u8], b: &mut [u8]) {
        let n = r.len().min(g.len()).min(b.len());
        let (r, g, b) = (&mut r[..n], &mut g[..n], &mut b[..n]);
        for i in 0..n {
            let l = sat_u8(gray_f32(r[i], g[i], b[i]));
            r[i] = l;
            g[i] = l;
            b[i] = l;
        }
    }
}

multiversion! {
    fn hue_kernel(r: &mut [u8], g: &mut [u8], b: &mut [u8], hf: f32) {
        let n = r.len().min(g.len()).min(b.len());
        let (r, g, b) = (&mut r[..n], &mut g[..n], &mut b[..n]);
        for i in 0..n {
            let (ro, go, bo) = hue_pixel(r[i], g[i], b[i], hf);
            r[i] = ro;
            g[i] = go;
            b[i] = bo;
        }
    }
}

/// `rgb_to_grayscale(img, num_output_channels=3)`: every channel becomes the truncated gray.
pub fn grayscale(planes_chw: &mut [u8]) -> Result<()> {
    let (r, g, b) = planes(planes_chw)?;
    grayscale_kernel(r, g, b);
    Ok(())
}

/// `solarize(img, threshold)`: `255 - x` where `x >= threshold`, else `x`.
pub fn solarize(planes_chw: &mut [u8], threshold: f64) -> Result<()> {
    if !(0.0..=255.0).contains(&threshold) {
        return Err(invalid("threshold", format!("must be in [0, 255] for uint8 images, got {threshold}")));
    }
    planes(planes_chw)?;
    for v in planes_chw.iter_mut() {
        if f64::from(*v) >= threshold {
            *v = 255 - *v;
        }
    }
    Ok(())
}

/// `adjust_hue(img, hue_factor)`: RGB → HSV, `h = (h + hue_factor) mod 1`, HSV → RGB, with the
/// arithmetic of torchvision's `_rgb2hsv` / `_hsv2rgb` in f32 and its final
/// `trunc(x * 255.999)` conversion back to u8. `hue_factor` must lie in `[-0.5, 0.5]`.
pub fn adjust_hue(planes_chw: &mut [u8], hue_factor: f64) -> Result<()> {
    if !(-0.5..=0.5).contains(&hue_factor) {
        return Err(invalid("hue_factor", format!("must be in [-0.5, 0.5], got {hue_factor}")));
    }
    let (r, g, b) = planes(planes_chw)?;
    hue_kernel(r, g, b, hue_factor as f32);
    Ok(())
}

/// One pixel of [`adjust_hue`], written with selects so the loop vectorizes.
///
/// torchvision's `_rgb2hsv` divides each of `max - r`, `max - g`, `max - b` by `max - min`
/// and combines two of them; here the hue is `offset + (x - y) / (max - min)` on the integer
/// values, one division instead of three (the same value up to an ulp, which can move a
/// truncated output by 1 on rare pixels).
#[inline(always)]
fn hue_pixel(r8: u8, g8: u8, b8: u8, hf: f32) -> (u8, u8, u8) {
    let (r, g, b) = (f32::from(r8), f32::from(g8), f32::from(b8));
    let maxc = r.max(g).max(b);
    let minc = r.min(g).min(b);
    let eqc = maxc == minc;
    let cr = maxc - minc;
    let s = cr / if eqc { 1.0 } else { maxc };
    let crd = if eqc { 1.0 } else { cr };
    let is_r = maxc == r;
    let is_g = maxc == g;
    let (num, offset) = if is_r {
        (g - b, 0.0)
    } else if is_g {
        (b - r, 2.0)
    } else {
        (r - g, 4.0)
    };
    let h = offset + num / crd;
    // fmod(h / 6 + 1, 1) with h / 6 + 1 in [5/6, 2).
    let h = h / 6.0 + 1.0;
    let h = if h >= 1.0 { h - 1.0 } else { h };
    // (h + hue_factor) % 1 (Python's sign-of-divisor remainder), h + hf in [-0.5, 1.5).
    let h = h + hf;
    let h = if h < 0.0 {
        h + 1.0
    } else if h >= 1.0 {
        h - 1.0
    } else {
        h
    };
    let v = maxc / 255.0;
    // _hsv2rgb.
    let h6 = h * 6.0;
    // h6 is in [0, 6] (h was wrapped into [0, 1), but h + 1 may round up to 1.0), so
    // truncation is floor, and `i % 6` below maps the rare 6 to 0.
    let i = floor_small(h6);
    let f = h6 - i;
    // torchvision clamps p, q, t to [0, 1]; with v, s in [0, 1] and f in [0, 1) they already
    // are (IEEE products of values <= 1 stay <= 1), so the clamps are omitted.
    let p = v * (1.0 - s);
    let q = v * (1.0 - s * f);
    let t = v * (1.0 - s * (1.0 - f));
    let i = if i >= 6.0 { i - 6.0 } else { i };
    // torchvision's table: r = (v, q, p, p, t, v), g = (t, v, v, q, p, p),
    // b = (p, p, t, v, v, q) for i = 0..5, as selects.
    let ro = if i == 0.0 || i == 5.0 {
        v
    } else if i == 1.0 {
        q
    } else if i == 4.0 {
        t
    } else {
        p
    };
    let go = if i == 1.0 || i == 2.0 {
        v
    } else if i == 0.0 {
        t
    } else if i == 3.0 {
        q
    } else {
        p
    };
    let bo = if i == 3.0 || i == 4.0 {
        v
    } else if i == 2.0 {
        t
    } else if i == 5.0 {
        q
    } else {
        p
    };
    const SCALE: f32 = 255.0 + 1.0 - 1e-3;
    (sat_u8(ro * SCALE), sat_u8(go * SCALE), sat_u8(bo * SCALE))
}

/// One of ColorJitter's four adjustments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JitterOp {
    /// [`adjust_brightness`].
    Brightness,
    /// [`adjust_contrast`].
    Contrast,
    /// [`adjust_saturation`].
    Saturation,
    /// [`adjust_hue`].
    Hue,
}

/// torchvision's `ColorJitter(brightness, contrast, saturation, hue)` wrapped in
/// `RandomApply(p)`: factor ranges and the application probability.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ColorJitter {
    brightness: Option<(f64, f64)>,
    contrast: Option<(f64, f64)>,
    saturation: Option<(f64, f64)>,
    hue: Option<(f64, f64)>,
    p: f64,
}

/// The parameters ColorJitter drew for one view: the order of the ops and their factors
/// (`None` for an op whose strength is 0, which is skipped).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct JitterParams {
    /// The order in which the four ops run (torchvision's `randperm(4)`).
    pub order: [JitterOp; 4],
    /// Brightness factor.
    pub brightness: Option<f64>,
    /// Contrast factor.
    pub contrast: Option<f64>,
    /// Saturation factor.
    pub saturation: Option<f64>,
    /// Hue shift.
    pub hue: Option<f64>,
}

impl ColorJitter {
    /// torchvision's scalar form: brightness `b` → factor in `[max(0, 1 - b), 1 + b]` (same for
    /// contrast and saturation), hue `h` → shift in `[-h, h]` with `h <= 0.5`; a strength of 0
    /// disables the op. The jitter as a whole is applied with probability `p`.
    pub fn new(brightness: f64, contrast: f64, saturation: f64, hue: f64, p: f64) -> Result<Self> {
        let factor = |name, x: f64| -> Result<Option<(f64, f64)>> {
            check_non_negative(name, x)?;
            Ok((x != 0.0).then(|| ((1.0 - x).max(0.0), 1.0 + x)))
        };
        check_non_negative("hue", hue)?;
        if hue > 0.5 {
            return Err(invalid("hue", format!("must be in [0, 0.5], got {hue}")));
        }
        if !(0.0..=1.0).contains(&p) {
            return Err(invalid("p", format!("must be in [0, 1], got {p}")));
        }
        Ok(ColorJitter {
            brightness: factor("brightness", brightness)?,
            contrast: factor("contrast", contrast)?,
            saturation: factor("saturation", saturation)?,
            hue: (hue != 0.0).then_some((-hue, hue)),
            p,
        })
    }

    /// SimSiam's jitter: `ColorJitter(0.4, 0.4, 0.4, 0.1)` applied with p = 0.8.
    pub fn simsiam() -> Self {
        ColorJitter {
            brightness: Some((0.6, 1.4)),
            contrast: Some((0.6, 1.4)),
            saturation: Some((0.6, 1.4)),
            hue: Some((-0.1, 0.1)),
            p: 0.8,
        }
    }

    /// Draws whether to apply the jitter (`RandomApply`: skip when `p < rand(1)`) and, if so,
    /// the op order and the four factors (`ColorJitter.get_params`).
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> Option<JitterParams> {
        if self.p < unit_f64(rng) {
            return None;
        }
        const OPS: [JitterOp; 4] = [JitterOp::Brightness, JitterOp::Contrast, JitterOp::Saturation, JitterOp::Hue];
        let perm: [u8; 4] = permutation(rng);
        let mut draw = |r: Option<(f64, f64)>| r.map(|(lo, hi)| uniform(rng, lo, hi));
        let brightness = draw(self.brightness);
        let contrast = draw(self.contrast);
        let saturation = draw(self.saturation);
        let hue = draw(self.hue);
        Some(JitterParams { order: perm.map(|k| OPS[usize::from(k)]), brightness, contrast, saturation, hue })
    }
}

impl JitterParams {
    /// Applies the drawn ops in their order to CHW u8 planes (`ColorJitter.forward`).
    pub fn apply(&self, planes_chw: &mut [u8]) -> Result<()> {
        for op in self.order {
            match op {
                JitterOp::Brightness => {
                    if let Some(f) = self.brightness {
                        adjust_brightness(planes_chw, f)?;
                    }
                }
                JitterOp::Contrast => {
                    if let Some(f) = self.contrast {
                        adjust_contrast(planes_chw, f)?;
                    }
                }
                JitterOp::Saturation => {
                    if let Some(f) = self.saturation {
                        adjust_saturation(planes_chw, f)?;
                    }
                }
                JitterOp::Hue => {
                    if let Some(f) = self.hue {
                        adjust_hue(planes_chw, f)?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// torchvision's `RandomGrayscale(p)` decision: grayscale when `rand(1) < p`.
pub fn sample_grayscale<R: Rng + ?Sized>(p: f64, rng: &mut R) -> bool {
    bernoulli(rng, p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::augment::rng::sample_rng;

    #[test]
    fn exact_values_on_a_few_pixels() {
        // Planes for pixels (255, 0, 0), (10, 20, 30), (128, 128, 128).
        let base = [255u8, 10, 128, 0, 20, 128, 0, 30, 128];
        let mut p = base;
        adjust_brightness(&mut p, 1.5).unwrap();
        assert_eq!(p, [255, 15, 192, 0, 30, 192, 0, 45, 192]);
        let mut p = base;
        grayscale(&mut p).unwrap();
        // 0.2989 * 255 = 76.2; 0.2989*10 + 0.587*20 + 0.114*30 = 18.149.
        assert_eq!(p, [76, 18, 127, 76, 18, 127, 76, 18, 127]);
        let mut p = base;
        // Hue of pure red shifted by a third becomes pure green; grays are unchanged.
        adjust_hue(&mut p, 1.0 / 3.0).unwrap();
        assert_eq!((p[0], p[3], p[6]), (0, 255, 0));
        assert_eq!((p[2], p[5], p[8]), (128, 128, 128));
        let mut p = base;
        solarize(&mut p, 128.0).unwrap();
        assert_eq!(p, [0, 10, 127, 0, 20, 127, 0, 30, 127]);
        let mut p = base;
        adjust_saturation(&mut p, 0.0).unwrap();
        assert_eq!(p, [76, 18, 127, 76, 18, 127, 76, 18, 127]);
    }

    #[test]
    fn identity_factors_leave_the_image_unchanged() {
        let mut img: Vec<u8> = (0..300).map(|i| (i * 37 % 256) as u8).collect();
        let orig = img.clone();
        adjust_brightness(&mut img, 1.0).unwrap();
        adjust_contrast(&mut img, 1.0).unwrap();
        adjust_saturation(&mut img, 1.0).unwrap();
        adjust_hue(&mut img, 0.0).unwrap();
        assert_eq!(img, orig);
    }

    #[test]
    fn bad_factors_and_buffers_are_errors() {
        let mut p = [0u8; 6];
        assert!(adjust_brightness(&mut p, -0.1).is_err());
        assert!(adjust_contrast(&mut p, f64::NAN).is_err());
        assert!(adjust_hue(&mut p, 0.6).is_err());
        assert!(solarize(&mut p, 300.0).is_err());
        assert!(adjust_saturation(&mut p[..4], 1.0).is_err());
        assert!(grayscale(&mut []).is_err());
        assert!(ColorJitter::new(0.4, 0.4, 0.4, 0.6, 0.8).is_err());
        assert!(ColorJitter::new(0.4, -1.0, 0.4, 0.1, 0.8).is_err());
        assert!(ColorJitter::new(0.4, 0.4, 0.4, 0.1, 1.5).is_err());
    }

    #[test]
    fn jitter_sampler_draws_factors_in_range_with_probability_p() {
        let cj = ColorJitter::simsiam();
        assert_eq!(cj, ColorJitter::new(0.4, 0.4, 0.4, 0.1, 0.8).unwrap());
        let mut applied = 0;
        for i in 0..5000 {
            if let Some(j) = cj.sample(&mut sample_rng(9, 1, i, 0)) {
                applied += 1;
                for f in [j.brightness, j.contrast, j.saturation] {
                    assert!((0.6..1.4).contains(&f.unwrap()));
                }
                assert!((-0.1..0.1).contains(&j.hue.unwrap()));
                let mut o = j.order;
                o.sort_by_key(|op| *op as u8);
                assert_eq!(o, [JitterOp::Brightness, JitterOp::Contrast, JitterOp::Saturation, JitterOp::Hue]);
            }
        }
        assert!((3850..4150).contains(&applied), "{applied}");
        let none = ColorJitter::new(0.0, 0.5, 0.0, 0.0, 1.0).unwrap();
        let j = none.sample(&mut sample_rng(0, 0, 0, 0)).unwrap();
        assert!(j.brightness.is_none() && j.hue.is_none() && j.contrast.is_some());
    }
}
