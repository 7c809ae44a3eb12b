//! Per-image work of an ingest: decode, optional resize, lossless PNG encoding, and the pixel
//! sums behind the manifest's mean/std.

use fast_image_resize as fr;
use image::codecs::png::{CompressionType, FilterType, PngEncoder};
use image::{ExtendedColorType, ImageEncoder};

use crate::decode::{check_pixels, decode_rgb};
use crate::record::ImageData;

/// Exact integer pixel sums of one image (or a set of images), per channel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PixelSums {
    /// Sum of values per channel.
    pub sum: [u64; 3],
    /// Sum of squared values per channel.
    pub sum_sq: [u64; 3],
    /// Pixels counted.
    pub count: u64,
}

impl PixelSums {
    /// Sums of an interleaved RGB buffer.
    pub fn of(rgb: &[u8]) -> Self {
        let mut s = PixelSums { count: (rgb.len() / 3) as u64, ..Default::default() };
        for px in rgb.chunks_exact(3) {
            for (c, &v) in px.iter().enumerate() {
                let v = v as u64;
                s.sum[c] += v;
                s.sum_sq[c] += v * v;
            }
        }
        s
    }

    /// Adds `other` into `self`.
    pub fn add(&mut self, other: &PixelSums) {
        for c in 0..3 {
            self.sum[c] += other.sum[c];
            self.sum_sq[c] += other.sum_sq[c];
        }
        self.count += other.count;
    }

    /// Mean and population std per channel on the 0..1 scale; `None` when empty.
    pub fn mean_std(&self) -> Option<([f64; 3], [f64; 3])> {
        if self.count == 0 {
            return None;
        }
        let n = self.count as f64;
        let mut mean = [0.0; 3];
        let mut std = [0.0; 3];
        for c in 0..3 {
            let m = self.sum[c] as f64 / n;
            let var = (self.sum_sq[c] as f64 / n - m * m).max(0.0);
            mean[c] = m / 255.0;
            std[c] = var.sqrt() / 255.0;
        }
        Some((mean, std))
    }
}

/// An image ready for a shard.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// Encoded bytes (PNG, or the source's own file bytes).
    pub bytes: Vec<u8>,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Pixel sums of the stored image.
    pub sums: PixelSums,
}

/// Encodes interleaved RGB as PNG (lossless; fast deflate, adaptive filters).
pub fn encode_png(width: u32, height: u32, rgb: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(rgb.len() / 2 + 128);
    PngEncoder::new_with_quality(&mut out, CompressionType::Fast, FilterType::Adaptive)
        .write_image(rgb, width, height, ExtendedColorType::Rgb8)
        .expect("PNG encoding into memory of a well-formed RGB buffer cannot fail");
    out
}

/// Target size when the shorter side becomes `side` (torchvision `Resize(int)` rounding).
pub fn shorter_side_size(width: u32, height: u32, side: u32) -> (u32, u32) {
    if width <= height {
        (side, ((side as u64 * height as u64) / width.max(1) as u64).max(1) as u32)
    } else {
        (((side as u64 * width as u64) / height.max(1) as u64).max(1) as u32, side)
    }
}

/// Resizes interleaved RGB so that the shorter side is `side` (bilinear, antialiased). `Err`
/// when `side` is 0 or the result would exceed [`crate::decode::MAX_PIXELS`] (checked before
/// allocating).
pub fn resize_shorter(width: u32, height: u32, rgb: Vec<u8>, side: u32) -> Result<(u32, u32, Vec<u8>), String> {
    if side == 0 {
        return Err("cannot resize to 0 pixels".into());
    }
    let (w, h) = shorter_side_size(width, height, side);
    if (w, h) == (width, height) {
        return Ok((width, height, rgb));
    }
    check_pixels(w, h).map_err(|e| format!("resized to {e}"))?;
    let src = fr::images::Image::from_vec_u8(width, height, rgb, fr::PixelType::U8x3).expect("buffer matches its size");
    let mut dst = fr::images::Image::new(w, h, fr::PixelType::U8x3);
    let opts = fr::ResizeOptions::new().resize_alg(fr::ResizeAlg::Convolution(fr::FilterType::Bilinear));
    fr::Resizer::new().resize(&src, &mut dst, &opts).expect("same pixel type on both sides");
    Ok((w, h, dst.into_vec()))
}

/// Turns a source image into what a shard stores. Raw pixels become PNG; encoded files are
/// kept as they are unless `resize` asks for a new size. `Err` means the file does not decode
/// (or is truncated), or the image or its resized size has more than
/// [`crate::decode::MAX_PIXELS`] pixels.
pub fn prepare(image: ImageData, resize: Option<u32>) -> Result<Prepared, String> {
    let resized = |width: u32, height: u32, pixels: Vec<u8>, side: u32| {
        resize_shorter(width, height, pixels, side).map_err(|e| format!("image {width}x{height} {e}"))
    };
    match image {
        ImageData::Rgb { width, height, pixels } => {
            if pixels.len() != width as usize * height as usize * 3 {
                return Err(format!("image has {} bytes for a {width}x{height} RGB image", pixels.len()));
            }
            let (width, height, pixels) = match resize {
                Some(s) => resized(width, height, pixels, s)?,
                None => (width, height, pixels),
            };
            Ok(Prepared { bytes: encode_png(width, height, &pixels), width, height, sums: PixelSums::of(&pixels) })
        }
        ImageData::Encoded { bytes, .. } => {
            let (width, height, pixels) = decode_rgb(&bytes).map_err(|e| format!("image does not decode: {e}"))?;
            match resize {
                Some(s) => {
                    let (width, height, pixels) = resized(width, height, pixels, s)?;
                    Ok(Prepared {
                        bytes: encode_png(width, height, &pixels),
                        width,
                        height,
                        sums: PixelSums::of(&pixels),
                    })
                }
                None => Ok(Prepared { sums: PixelSums::of(&pixels), bytes, width, height }),
            }
        }
    }
}
