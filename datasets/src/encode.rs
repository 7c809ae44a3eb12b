//! Per-image work of an ingest: decode, optional resize, lossless PNG encoding, and the pixel
//! sums behind the manifest's mean/std.

use fast_image_resize as fr;
use image::codecs::png::{CompressionType, FilterType, PngEncoder};
use image::{ExtendedColorType, ImageEncoder};

use crate::decode::{decode_rgb, DecodeError, MAX_PIXELS};
use crate::record::ImageData;

/// Why an image cannot be prepared for a shard ([`prepare`], [`resize_shorter`]).
///
/// The messages have no file name: ingest adds the file and the record.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PrepareError {
    /// The file does not decode (or is truncated, or too large). Not a `source`: the message
    /// already has it.
    #[error("image does not decode: {0}")]
    Decode(DecodeError),
    /// A raw RGB image whose buffer does not hold `width × height × 3` bytes.
    #[error("image has {len} bytes for a {width}x{height} RGB image")]
    RgbLength {
        /// Bytes in the buffer.
        len: usize,
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
    },
    /// A resize to a shorter side of 0 pixels.
    #[error("image {width}x{height} cannot be resized to 0 pixels")]
    ResizeToZero {
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
    },
    /// The resized image would have more than [`MAX_PIXELS`] pixels.
    #[error(
        "image {width}x{height} resized to {to_width}x{to_height} is {} pixels, more than the {MAX_PIXELS} allowed",
        *.to_width as u64 * *.to_height as u64
    )]
    ResizedTooLarge {
        /// Width before resizing.
        width: u32,
        /// Height before resizing.
        height: u32,
        /// Width after resizing.
        to_width: u32,
        /// Height after resizing.
        to_height: u32,
    },
}

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
pub fn resize_shorter(width: u32, height: u32, rgb: Vec<u8>, side: u32) -> Result<(u32, u32, Vec<u8>), PrepareError> {
    if side == 0 {
        return Err(PrepareError::ResizeToZero { width, height });
    }
    let (w, h) = shorter_side_size(width, height, side);
    if (w, h) == (width, height) {
        return Ok((width, height, rgb));
    }
    if w as u64 * h as u64 > MAX_PIXELS {
        return Err(PrepareError::ResizedTooLarge { width, height, to_width: w, to_height: h });
    }
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
pub fn prepare(image: ImageData, resize: Option<u32>) -> Result<Prepared, PrepareError> {
    match image {
        ImageData::Rgb { width, height, pixels } => {
            if pixels.len() != width as usize * height as usize * 3 {
                return Err(PrepareError::RgbLength { len: pixels.len(), width, height });
            }
            let (width, height, pixels) = match resize {
                Some(s) => resize_shorter(width, height, pixels, s)?,
                None => (width, height, pixels),
            };
            Ok(Prepared { bytes: encode_png(width, height, &pixels), width, height, sums: PixelSums::of(&pixels) })
        }
        ImageData::Encoded { bytes, .. } => {
            let (width, height, pixels) = decode_rgb(&bytes).map_err(PrepareError::Decode)?;
            match resize {
                Some(s) => {
                    let (width, height, pixels) = resize_shorter(width, height, pixels, s)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn rgb(width: u32, height: u32) -> ImageData {
        ImageData::Rgb { width, height, pixels: crate::synth::pattern_rgb(0, width, height) }
    }

    #[test]
    fn raw_pixels_become_png_and_resize_to_the_shorter_side() {
        let p = prepare(rgb(6, 4), None).unwrap();
        assert_eq!((p.width, p.height, p.sums.count), (6, 4, 24));
        assert_eq!(decode_rgb(&p.bytes).unwrap().2, crate::synth::pattern_rgb(0, 6, 4));
        let p = prepare(rgb(6, 4), Some(2)).unwrap();
        assert_eq!((p.width, p.height), (3, 2));
    }

    #[test]
    fn a_short_rgb_buffer_is_an_error() {
        let err = prepare(ImageData::Rgb { width: 2, height: 2, pixels: vec![0; 11] }, None).unwrap_err();
        assert!(matches!(err, PrepareError::RgbLength { len: 11, width: 2, height: 2 }), "{err}");
        assert_eq!(err.to_string(), "image has 11 bytes for a 2x2 RGB image");
    }

    #[test]
    fn resizing_to_zero_is_an_error() {
        let err = resize_shorter(2, 3, vec![0; 18], 0).unwrap_err();
        assert!(matches!(err, PrepareError::ResizeToZero { width: 2, height: 3 }), "{err}");
        assert_eq!(err.to_string(), "image 2x3 cannot be resized to 0 pixels");
    }

    #[test]
    fn a_resize_past_the_pixel_limit_is_refused_before_allocating() {
        // A 1 x 100 strip with its shorter side to 8192: 8192 x 819200 pixels (20 GB of RGB).
        let err = prepare(rgb(1, 100), Some(8192)).unwrap_err();
        assert!(
            matches!(err, PrepareError::ResizedTooLarge { width: 1, height: 100, to_width: 8192, to_height: 819_200 }),
            "{err}"
        );
        assert_eq!(
            err.to_string(),
            "image 1x100 resized to 8192x819200 is 6710886400 pixels, more than the 134217728 allowed"
        );
    }

    #[test]
    fn an_encoded_file_that_does_not_decode_is_an_error() {
        let mut png = crate::synth::pattern_png(1, 8, 8);
        png.truncate(png.len() / 2);
        let err = prepare(ImageData::Encoded { bytes: png, path: "a.png".into() }, None).unwrap_err();
        assert!(matches!(err, PrepareError::Decode(DecodeError::Image(_))), "{err}");
        assert!(err.to_string().starts_with("image does not decode: "), "{err}");
    }
}
