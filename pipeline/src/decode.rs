//! The decode stage's kernel: encoded bytes (PNG, JPEG, ...) to RGB8 in a reused buffer,
//! with the checks and the error type of `siamlab_datasets::decode` (a truncated JPEG is an
//! error; the pixel count is bounded before any buffer grows).

use std::io::Cursor;

use image::{ColorType, ImageDecoder, ImageReader};
use siamlab_datasets::decode::{check_complete, check_pixels, DecodeError};

/// Decodes `bytes` into `out` as interleaved RGB8, reusing `out`'s and `tmp`'s allocations.
/// Returns (width, height).
pub fn decode_into(bytes: &[u8], out: &mut Vec<u8>, tmp: &mut Vec<u8>) -> Result<(u32, u32), DecodeError> {
    check_complete(bytes)?;
    let reader =
        ImageReader::new(Cursor::new(bytes)).with_guessed_format().map_err(|e| DecodeError::Image(e.into()))?;
    let decoder = reader.into_decoder().map_err(DecodeError::Image)?;
    let (w, h) = decoder.dimensions();
    check_pixels(w, h)?;
    let color = decoder.color_type();
    let n = decoder.total_bytes() as usize;
    let pixels = (w as usize) * (h as usize);
    if color == ColorType::Rgb8 {
        out.resize(n, 0);
        decoder.read_image(out).map_err(DecodeError::Image)?;
        return Ok((w, h));
    }
    tmp.resize(n, 0);
    decoder.read_image(tmp).map_err(DecodeError::Image)?;
    out.resize(pixels * 3, 0);
    match color {
        ColorType::L8 => {
            for (o, &v) in out.chunks_exact_mut(3).zip(tmp.iter()) {
                o.fill(v);
            }
        }
        ColorType::La8 => {
            for (o, v) in out.chunks_exact_mut(3).zip(tmp.chunks_exact(2)) {
                o.fill(v[0]);
            }
        }
        ColorType::Rgba8 => {
            for (o, v) in out.chunks_exact_mut(3).zip(tmp.chunks_exact(4)) {
                o.copy_from_slice(&v[..3]);
            }
        }
        _ => {
            // 16-bit and float images: let `image` convert (rare in practice).
            let img = image::load_from_memory(bytes).map_err(DecodeError::Image)?.into_rgb8();
            out.clear();
            out.extend_from_slice(img.as_raw());
        }
    }
    Ok((w, h))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn png_rgb_gray_and_rgba() {
        use image::ImageEncoder;
        let enc = |c: image::ExtendedColorType, px: &[u8]| {
            let mut v = Vec::new();
            image::codecs::png::PngEncoder::new(&mut v).write_image(px, 2, 1, c).unwrap();
            v
        };
        let (mut out, mut tmp) = (Vec::new(), Vec::new());
        assert_eq!(
            decode_into(&enc(image::ExtendedColorType::Rgb8, &[1, 2, 3, 4, 5, 6]), &mut out, &mut tmp).unwrap(),
            (2, 1)
        );
        assert_eq!(out, [1, 2, 3, 4, 5, 6]);
        decode_into(&enc(image::ExtendedColorType::L8, &[9, 8]), &mut out, &mut tmp).unwrap();
        assert_eq!(out, [9, 9, 9, 8, 8, 8]);
        decode_into(&enc(image::ExtendedColorType::Rgba8, &[1, 2, 3, 255, 4, 5, 6, 0]), &mut out, &mut tmp).unwrap();
        assert_eq!(out, [1, 2, 3, 4, 5, 6]);
        let err = decode_into(b"nope", &mut out, &mut tmp).unwrap_err();
        assert!(matches!(err, DecodeError::Image(image::ImageError::Unsupported(_))), "{err}");
    }

    #[test]
    fn truncated_jpeg_and_huge_header_are_errors() {
        let rgb = siamlab_datasets::synth::pattern_rgb(0, 16, 16);
        let mut jpeg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new(&mut jpeg).encode(&rgb, 16, 16, image::ExtendedColorType::Rgb8).unwrap();
        let (mut out, mut tmp) = (Vec::new(), Vec::new());
        assert_eq!(decode_into(&jpeg, &mut out, &mut tmp).unwrap(), (16, 16));
        let cut = jpeg.len() - 40;
        let err = decode_into(&jpeg[..cut], &mut out, &mut tmp).unwrap_err();
        assert!(matches!(err, DecodeError::TruncatedJpeg { len } if len == cut), "{err}");
        // A JPEG header declaring 65,535 x 65,535 pixels: refused before allocating 12 GB.
        let sof = jpeg.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
        jpeg[sof + 5..sof + 9].copy_from_slice(&[0xFF, 0xFF, 0xFF, 0xFF]);
        let err = decode_into(&jpeg, &mut out, &mut tmp).unwrap_err();
        assert!(matches!(err, DecodeError::TooManyPixels { width: 65_535, height: 65_535 }), "{err}");
        assert!(out.capacity() < 1 << 20);
    }
}
