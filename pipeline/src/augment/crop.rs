//! Geometry: RandomResizedCrop, Resize (shorter side), CenterCrop, RandomCrop with padding and
//! horizontal flip, with torchvision's parameter logic.
//!
//! Resizing is bilinear with antialias (PIL's / torchvision's `antialias=True` convolution),
//! done by `fast_image_resize` on interleaved RGB8 (HWC). Cropping into the planar layout the
//! color ops use is fused with the horizontal flip and the HWC → CHW conversion
//! ([`crop_to_planes`]).

use fast_image_resize::images::{CroppedImage, Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use rand_chacha::rand_core::Rng;

use super::error::{check_len, invalid, Error, Result};
use super::rng::{below, bernoulli, uniform};
use super::simd::multiversion;

/// A crop rectangle in pixel coordinates of an image (torchvision's `i, j, h, w`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CropBox {
    /// First row (torchvision's `i`).
    pub top: u32,
    /// First column (torchvision's `j`).
    pub left: u32,
    /// Number of rows (torchvision's `h`).
    pub height: u32,
    /// Number of columns (torchvision's `w`).
    pub width: u32,
}

impl CropBox {
    /// The box covering a whole `width` × `height` image.
    pub fn full(width: u32, height: u32) -> Self {
        CropBox { top: 0, left: 0, height, width }
    }

    /// Checks that the box is non-empty and inside a `width` × `height` image.
    pub fn check_inside(&self, width: u32, height: u32) -> Result<()> {
        let fits = self.width > 0
            && self.height > 0
            && u64::from(self.left) + u64::from(self.width) <= u64::from(width)
            && u64::from(self.top) + u64::from(self.height) <= u64::from(height);
        if fits {
            Ok(())
        } else {
            Err(invalid("crop", format!("{self:?} is empty or not inside a {width}x{height} image")))
        }
    }
}

/// The parameters of torchvision's `RandomResizedCrop` (the output size lives in the recipe).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RandomResizedCrop {
    scale: (f64, f64),
    ratio: (f64, f64),
}

impl Default for RandomResizedCrop {
    /// torchvision's defaults: scale (0.08, 1), ratio (3/4, 4/3).
    fn default() -> Self {
        RandomResizedCrop { scale: (0.08, 1.0), ratio: (3.0 / 4.0, 4.0 / 3.0) }
    }
}

impl RandomResizedCrop {
    /// Area fraction range `scale` and aspect-ratio range `ratio`; both ranges must be
    /// finite, positive and ordered.
    pub fn new(scale: (f64, f64), ratio: (f64, f64)) -> Result<Self> {
        let ok = |r: (f64, f64)| r.0.is_finite() && r.1.is_finite() && r.0 > 0.0 && r.0 <= r.1;
        if !ok(scale) {
            return Err(invalid("scale", format!("need 0 < min <= max, got {scale:?}")));
        }
        if !ok(ratio) {
            return Err(invalid("ratio", format!("need 0 < min <= max, got {ratio:?}")));
        }
        Ok(RandomResizedCrop { scale, ratio })
    }

    /// The area fraction range.
    pub fn scale(&self) -> (f64, f64) {
        self.scale
    }

    /// The aspect-ratio range.
    pub fn ratio(&self) -> (f64, f64) {
        self.ratio
    }

    /// torchvision's `RandomResizedCrop.get_params`: up to 10 attempts with a uniform area
    /// fraction and a log-uniform aspect ratio; the first box that fits is placed uniformly;
    /// if none fits, the central crop clamped to the ratio range.
    pub fn get_params<R: Rng + ?Sized>(&self, width: u32, height: u32, rng: &mut R) -> Result<CropBox> {
        if width == 0 || height == 0 {
            return Err(Error::ImageSize { width, height, reason: "cannot crop an empty image".into() });
        }
        let area = f64::from(width) * f64::from(height);
        let log_ratio = (self.ratio.0.ln(), self.ratio.1.ln());
        for _ in 0..10 {
            let target_area = area * uniform(rng, self.scale.0, self.scale.1);
            let aspect = uniform(rng, log_ratio.0, log_ratio.1).exp();
            let w = (target_area * aspect).sqrt().round_ties_even();
            let h = (target_area / aspect).sqrt().round_ties_even();
            if 0.0 < w && w <= f64::from(width) && 0.0 < h && h <= f64::from(height) {
                let (w, h) = (w as u32, h as u32);
                let top = below(rng, u64::from(height - h) + 1) as u32;
                let left = below(rng, u64::from(width - w) + 1) as u32;
                return Ok(CropBox { top, left, height: h, width: w });
            }
        }
        Ok(self.fallback(width, height))
    }

    /// The central crop torchvision falls back to after 10 failed attempts.
    pub fn fallback(&self, width: u32, height: u32) -> CropBox {
        let in_ratio = f64::from(width) / f64::from(height);
        let (w, h) = if in_ratio < self.ratio.0 {
            let h = (f64::from(width) / self.ratio.0).round_ties_even();
            (width, (h as u32).clamp(1, height))
        } else if in_ratio > self.ratio.1 {
            let w = (f64::from(height) * self.ratio.1).round_ties_even();
            ((w as u32).clamp(1, width), height)
        } else {
            (width, height)
        };
        CropBox { top: (height - h) / 2, left: (width - w) / 2, height: h, width: w }
    }
}

/// Crops `crop` out of the RGB8 (HWC) image `src` and resizes it to `dst_width` ×
/// `dst_height` into `dst` (HWC): torchvision's `resized_crop(..., BILINEAR, antialias=True)`.
#[allow(clippy::too_many_arguments)] // Two images with their sizes, the box and the resizer.
pub fn resized_crop(
    resizer: &mut Resizer,
    src: &[u8],
    width: u32,
    height: u32,
    crop: CropBox,
    dst: &mut [u8],
    dst_width: u32,
    dst_height: u32,
) -> Result<()> {
    check_len("source RGB8 image", src.len(), width, height, 3)?;
    check_len("destination RGB8 image", dst.len(), dst_width, dst_height, 3)?;
    crop.check_inside(width, height)?;
    let src_img = ImageRef::new(width, height, src, PixelType::U8x3).map_err(|e| invalid("src", e.to_string()))?;
    // A view of the box, not `ResizeOptions::crop`: torchvision crops first, so the filter's
    // support is clipped at the box's edges rather than reading pixels outside it.
    let cropped = CroppedImage::new(&src_img, crop.left, crop.top, crop.width, crop.height)
        .map_err(|e| invalid("crop", e.to_string()))?;
    let mut dst_img =
        Image::from_slice_u8(dst_width, dst_height, dst, PixelType::U8x3).map_err(|e| invalid("dst", e.to_string()))?;
    let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear));
    resizer.resize(&cropped, &mut dst_img, &options)?;
    Ok(())
}

/// Resizes the whole RGB8 image (bilinear, antialias): torchvision's `resize`.
pub fn resize(
    resizer: &mut Resizer,
    src: &[u8],
    width: u32,
    height: u32,
    dst: &mut [u8],
    dst_width: u32,
    dst_height: u32,
) -> Result<()> {
    let full = CropBox::full(width, height);
    resized_crop(resizer, src, width, height, full, dst, dst_width, dst_height)
}

/// The `(width, height)` torchvision's `Resize(size)` (an int) gives a `width` × `height`
/// image: the shorter side becomes `size`, the longer one `int(size * long / short)`.
pub fn shorter_side_size(width: u32, height: u32, size: u32) -> Result<(u32, u32)> {
    if width == 0 || height == 0 || size == 0 {
        return Err(Error::ImageSize { width, height, reason: format!("cannot resize to shorter side {size}") });
    }
    let (short, long) = if width <= height { (width, height) } else { (height, width) };
    let new_long = (f64::from(size) * f64::from(long) / f64::from(short)) as u64;
    let new_long = u32::try_from(new_long).map_err(|_| invalid("size", "resized side overflows"))?;
    Ok(if width <= height { (size, new_long) } else { (new_long, size) })
}

/// torchvision's `CenterCrop` box: offsets `round((size - crop) / 2)` (ties to even).
/// Unlike torchvision, a crop larger than the image is an error rather than zero padding.
pub fn center_crop_box(width: u32, height: u32, crop_width: u32, crop_height: u32) -> Result<CropBox> {
    if crop_width == 0 || crop_height == 0 || crop_width > width || crop_height > height {
        return Err(Error::ImageSize {
            width,
            height,
            reason: format!("cannot center-crop {crop_width}x{crop_height} out of it"),
        });
    }
    let off = |size: u32, crop: u32| (f64::from(size - crop) / 2.0).round_ties_even() as u32;
    Ok(CropBox { top: off(height, crop_height), left: off(width, crop_width), height: crop_height, width: crop_width })
}

/// The parameters of torchvision's `RandomCrop(size, padding)` with zero fill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RandomCrop {
    width: u32,
    height: u32,
    padding: u32,
}

/// A crop window whose origin may lie in the zero padding around the image (negative).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PaddedCrop {
    /// First row, in the unpadded image's coordinates (may be negative).
    pub top: i64,
    /// First column, in the unpadded image's coordinates (may be negative).
    pub left: i64,
}

impl RandomCrop {
    /// A `width` × `height` crop of the image padded by `padding` zero pixels on every side.
    pub fn new(width: u32, height: u32, padding: u32) -> Result<Self> {
        if width == 0 || height == 0 {
            return Err(invalid("size", "crop size must be positive"));
        }
        Ok(RandomCrop { width, height, padding })
    }

    /// The zero padding on each side.
    pub fn padding(&self) -> u32 {
        self.padding
    }

    /// torchvision's `RandomCrop.get_params` on the padded image: `i = randint(0, H - th + 1)`,
    /// `j = randint(0, W - tw + 1)`, returned relative to the unpadded image.
    pub fn get_params<R: Rng + ?Sized>(&self, width: u32, height: u32, rng: &mut R) -> Result<PaddedCrop> {
        let pw = u64::from(width) + 2 * u64::from(self.padding);
        let ph = u64::from(height) + 2 * u64::from(self.padding);
        if pw < u64::from(self.width) || ph < u64::from(self.height) {
            return Err(Error::ImageSize {
                width,
                height,
                reason: format!(
                    "padded by {} it is smaller than the crop {}x{}",
                    self.padding, self.width, self.height
                ),
            });
        }
        let (i, j) = if pw == u64::from(self.width) && ph == u64::from(self.height) {
            (0, 0)
        } else {
            let i = below(rng, ph - u64::from(self.height) + 1);
            let j = below(rng, pw - u64::from(self.width) + 1);
            (i, j)
        };
        Ok(PaddedCrop { top: i as i64 - i64::from(self.padding), left: j as i64 - i64::from(self.padding) })
    }
}

/// torchvision's `RandomHorizontalFlip` decision: flip when `rand(1) < p`.
pub fn sample_flip<R: Rng + ?Sized>(p: f64, rng: &mut R) -> bool {
    bernoulli(rng, p)
}

/// Mirrors an RGB8 (HWC) image left-right in place: torchvision's `hflip`.
pub fn hflip(img: &mut [u8], width: u32, height: u32) -> Result<()> {
    check_len("RGB8 image", img.len(), width, height, 3)?;
    let w = width as usize;
    for row in img.chunks_exact_mut(w * 3) {
        for x in 0..w / 2 {
            let (a, b) = (x * 3, (w - 1 - x) * 3);
            for c in 0..3 {
                row.swap(a + c, b + c);
            }
        }
    }
    Ok(())
}

multiversion! {
    /// One row of RGB8 pixels into three plane rows, optionally mirrored.
    fn deinterleave_row(win: &[u8], r: &mut [u8], g: &mut [u8], b: &mut [u8], flip: bool) {
        let n = (win.len() / 3).min(r.len()).min(g.len()).min(b.len());
        let (r, g, b) = (&mut r[..n], &mut g[..n], &mut b[..n]);
        let win = &win[..3 * n];
        if flip {
            for (x, p) in win.chunks_exact(3).rev().enumerate() {
                r[x] = p[0];
                g[x] = p[1];
                b[x] = p[2];
            }
        } else {
            for (x, p) in win.chunks_exact(3).enumerate() {
                r[x] = p[0];
                g[x] = p[1];
                b[x] = p[2];
            }
        }
    }
}

/// Copies the `out_width` × `out_height` window at (`top`, `left`) of the RGB8 (HWC) image
/// `src` into `dst` as three planes (CHW u8), mirrored left-right when `flip`; pixels outside
/// the image are zero (torchvision's constant padding). This is the crop of `RandomCrop` /
/// `CenterCrop`, the flip and the layout change, fused.
#[allow(clippy::too_many_arguments)]
pub fn crop_to_planes(
    src: &[u8],
    width: u32,
    height: u32,
    top: i64,
    left: i64,
    flip: bool,
    dst: &mut [u8],
    out_width: u32,
    out_height: u32,
) -> Result<()> {
    check_len("source RGB8 image", src.len(), width, height, 3)?;
    check_len("destination planes", dst.len(), out_width, out_height, 3)?;
    const FAR: i64 = 1 << 40;
    if !(-FAR..FAR).contains(&top) || !(-FAR..FAR).contains(&left) {
        return Err(invalid("crop", format!("window origin ({top}, {left}) is absurdly far outside the image")));
    }
    let (w, ow, oh) = (width as usize, out_width as usize, out_height as usize);
    let n = ow * oh;
    let (r_plane, rest) = dst.split_at_mut(n);
    let (g_plane, b_plane) = rest.split_at_mut(n);
    let inside_x = left >= 0 && left + ow as i64 <= i64::from(width);
    for y in 0..oh {
        let sy = top + y as i64;
        let (r, g, b) = (
            &mut r_plane[y * ow..(y + 1) * ow],
            &mut g_plane[y * ow..(y + 1) * ow],
            &mut b_plane[y * ow..(y + 1) * ow],
        );
        if sy < 0 || sy >= i64::from(height) {
            r.fill(0);
            g.fill(0);
            b.fill(0);
            continue;
        }
        let row = &src[sy as usize * w * 3..(sy as usize + 1) * w * 3];
        if inside_x {
            let win = &row[left as usize * 3..(left as usize + ow) * 3];
            deinterleave_row(win, r, g, b, flip);
        } else {
            for x in 0..ow {
                let xo = if flip { ow - 1 - x } else { x };
                let sx = left + xo as i64;
                if sx < 0 || sx >= i64::from(width) {
                    (r[x], g[x], b[x]) = (0, 0, 0);
                } else {
                    let p = &row[sx as usize * 3..sx as usize * 3 + 3];
                    (r[x], g[x], b[x]) = (p[0], p[1], p[2]);
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::augment::rng::sample_rng;

    #[test]
    fn random_resized_crop_boxes_respect_scale_ratio_and_bounds() {
        let rrc = RandomResizedCrop::new((0.2, 1.0), (3.0 / 4.0, 4.0 / 3.0)).unwrap();
        for (w, h) in [(32, 32), (96, 96), (37, 29), (500, 20)] {
            for i in 0..2000 {
                let mut rng = sample_rng(1, 0, i, 0);
                let b = rrc.get_params(w, h, &mut rng).unwrap();
                b.check_inside(w, h).unwrap();
                if b != rrc.fallback(w, h) {
                    let area = f64::from(b.width) * f64::from(b.height) / f64::from(w * h);
                    // Rounding w and h to integers moves the area a little.
                    let slack = (f64::from(b.width) + f64::from(b.height) + 1.0) / f64::from(w * h);
                    assert!(area >= 0.2 - slack && area <= 1.0 + slack, "{b:?} area {area}");
                    let r = f64::from(b.width) / f64::from(b.height);
                    let rs = 1.0 / f64::from(b.width.min(b.height));
                    assert!(r >= 0.75 * (1.0 - rs) - 1e-9 && r <= 4.0 / 3.0 * (1.0 + rs) + 1e-9);
                }
            }
        }
    }

    #[test]
    fn random_resized_crop_falls_back_to_the_central_crop() {
        // A 500x20 strip: no box with ratio <= 4/3 and >= 20% of the area fits, every attempt
        // fails and torchvision's fallback (height kept, width = round(20 * 4/3)) is used.
        let rrc = RandomResizedCrop::new((0.2, 1.0), (3.0 / 4.0, 4.0 / 3.0)).unwrap();
        let mut rng = sample_rng(0, 0, 0, 0);
        let b = rrc.get_params(500, 20, &mut rng).unwrap();
        assert_eq!(b, CropBox { top: 0, left: (500 - 27) / 2, height: 20, width: 27 });
        // Tall image: width kept, height = round(w / (3/4)).
        assert_eq!(rrc.fallback(10, 300), CropBox { top: (300 - 13) / 2, left: 0, height: 13, width: 10 });
        // Ratio inside the range: the whole image.
        assert_eq!(rrc.fallback(40, 35), CropBox::full(40, 35));
    }

    #[test]
    fn invalid_parameters_are_errors_not_panics() {
        assert!(RandomResizedCrop::new((0.5, 0.2), (0.75, 1.33)).is_err());
        assert!(RandomResizedCrop::new((0.2, 1.0), (0.0, 1.33)).is_err());
        assert!(RandomResizedCrop::new((f64::NAN, 1.0), (0.75, 1.33)).is_err());
        let mut rng = sample_rng(0, 0, 0, 0);
        assert!(RandomResizedCrop::default().get_params(0, 5, &mut rng).is_err());
        assert!(RandomCrop::new(32, 32, 4).unwrap().get_params(20, 20, &mut rng).is_err());
        assert!(center_crop_box(10, 10, 11, 5).is_err());
        let mut resizer = Resizer::new();
        let src = vec![0u8; 10 * 10 * 3];
        let mut dst = vec![0u8; 4 * 4 * 3];
        let outside = CropBox { top: 5, left: 5, height: 6, width: 2 };
        assert!(resized_crop(&mut resizer, &src, 10, 10, outside, &mut dst, 4, 4).is_err());
        assert!(resized_crop(&mut resizer, &src[1..], 10, 10, CropBox::full(10, 10), &mut dst, 4, 4).is_err());
    }

    #[test]
    fn random_crop_offsets_cover_the_padded_range() {
        let rc = RandomCrop::new(32, 32, 4).unwrap();
        let (mut lo, mut hi) = (i64::MAX, i64::MIN);
        for i in 0..3000 {
            let p = rc.get_params(32, 32, &mut sample_rng(3, 0, i, 0)).unwrap();
            assert!((-4..=4).contains(&p.top) && (-4..=4).contains(&p.left));
            lo = lo.min(p.left);
            hi = hi.max(p.left);
        }
        assert_eq!((lo, hi), (-4, 4));
        let exact = RandomCrop::new(40, 40, 4).unwrap();
        let p = exact.get_params(32, 32, &mut sample_rng(0, 0, 0, 0)).unwrap();
        assert_eq!(p, PaddedCrop { top: -4, left: -4 });
    }

    #[test]
    fn crop_to_planes_pads_flips_and_deinterleaves() {
        // 3x2 image, pixel (x, y) = (10y + x, 100 + 10y + x, 200 + x).
        let (w, h) = (3u32, 2u32);
        let mut src = Vec::new();
        for y in 0..h {
            for x in 0..w {
                src.extend([(10 * y + x) as u8, (100 + 10 * y + x) as u8, (200 + x) as u8]);
            }
        }
        let mut dst = vec![0u8; 3 * 2 * 3];
        crop_to_planes(&src, w, h, 0, 1, false, &mut dst, 2, 3).unwrap();
        assert_eq!(&dst[..6], &[1, 2, 11, 12, 0, 0]);
        crop_to_planes(&src, w, h, -1, -1, true, &mut dst, 2, 3).unwrap();
        // Window columns -1, 0 mirrored: (0, -1); rows -1, 0, 1.
        assert_eq!(&dst[..6], &[0, 0, 0, 0, 10, 0]);
        assert_eq!(&dst[12..], &[0, 0, 200, 0, 200, 0]);
        assert!(crop_to_planes(&src, w, h, i64::MAX, 0, false, &mut dst, 2, 3).is_err());
        assert!(crop_to_planes(&src, w, h, 0, i64::MIN, true, &mut dst, 2, 3).is_err());
        let mut img = src.clone();
        hflip(&mut img, w, h).unwrap();
        assert_eq!(&img[..9], &[2, 102, 202, 1, 101, 201, 0, 100, 200]);
    }

    #[test]
    fn shorter_side_and_center_crop_follow_torchvision() {
        assert_eq!(shorter_side_size(37, 29, 32).unwrap(), (40, 32));
        assert_eq!(shorter_side_size(29, 37, 32).unwrap(), (32, 40));
        assert_eq!(shorter_side_size(96, 96, 36).unwrap(), (36, 36));
        // round(5 / 2) = 2 (ties to even), round(3 / 2) = 2.
        let b = center_crop_box(37, 35, 32, 32).unwrap();
        assert_eq!((b.top, b.left), (2, 2));
        let b = center_crop_box(40, 32, 32, 32).unwrap();
        assert_eq!((b.top, b.left), (0, 4));
    }
}
