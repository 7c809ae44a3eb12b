//! Strict, bounded image decoding: the one decoder behind ingest, `verify --decode`, contact
//! sheets, and the size check of the pipeline's decode stage.
//!
//! Strict: a JPEG must reach its end-of-image marker (a truncated file is an error, where the
//! JPEG decoder alone would fill the missing part with grey). Bounded: an image's pixel count
//! is checked against [`MAX_PIXELS`] from its header, before any pixel buffer is allocated, and
//! `--resize` is bounded by [`MAX_RESIZE`]. What goes wrong is a [`DecodeError`], to which the
//! caller adds the file and the record or row.

use std::io::Cursor;

use image::{DynamicImage, ImageDecoder, ImageReader};

use crate::error::{Error, Result};

/// Most pixels an image may have, decoded or resized (2^27, about 11,585²: 384 MiB of RGB).
pub const MAX_PIXELS: u64 = 1 << 27;

/// Largest `--resize` (the shorter side after resizing).
pub const MAX_RESIZE: u32 = 8192;

/// Checks a `--resize` value: 1..=[`MAX_RESIZE`].
pub fn check_resize(resize: Option<u32>) -> Result<()> {
    match resize {
        Some(s) if s == 0 || s > MAX_RESIZE => {
            Err(Error::Usage(format!("resize {s}: the shorter side must be 1..={MAX_RESIZE} pixels")))
        }
        _ => Ok(()),
    }
}

/// Why an encoded image does not decode.
///
/// The messages have no file name: callers add the file and the record or row (in ingest,
/// `verify --decode` and the pipeline's decode stage).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The image has more than [`MAX_PIXELS`] pixels (read from its header).
    #[error("{width}x{height} is {} pixels, more than the {MAX_PIXELS} allowed", *.width as u64 * *.height as u64)]
    TooManyPixels {
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
    },
    /// A JPEG ends before its end-of-image marker.
    #[error("truncated JPEG (no end-of-image marker in its {len} bytes)")]
    TruncatedJpeg {
        /// The JPEG's length in bytes.
        len: usize,
    },
    /// A JPEG segment declares a length below 2 (the length field's own size).
    #[error("corrupt JPEG: segment length {length} at byte {at}")]
    JpegSegment {
        /// The declared length.
        length: usize,
        /// Byte offset of the length field.
        at: usize,
    },
    /// The `image` crate's decoder refused the bytes (unknown format, corrupt data). Not a
    /// `source`: the message already has it.
    #[error("{0}")]
    Image(image::ImageError),
}

/// Checks an image size against [`MAX_PIXELS`].
pub fn check_pixels(width: u32, height: u32) -> Result<(), DecodeError> {
    if width as u64 * height as u64 > MAX_PIXELS {
        return Err(DecodeError::TooManyPixels { width, height });
    }
    Ok(())
}

/// Checks that an encoded image is whole: a JPEG must reach its end-of-image marker.
/// Other formats are checked by their decoders (PNG's zlib stream and chunk CRCs).
pub fn check_complete(bytes: &[u8]) -> Result<(), DecodeError> {
    if bytes.starts_with(&[0xFF, 0xD8]) {
        jpeg_complete(bytes)
    } else {
        Ok(())
    }
}

/// Walks a JPEG's segments (skipping each by its length, and each scan's entropy-coded data up
/// to the next marker) and succeeds once the end-of-image marker is reached.
fn jpeg_complete(b: &[u8]) -> Result<(), DecodeError> {
    let truncated = || DecodeError::TruncatedJpeg { len: b.len() };
    let mut i = 2;
    loop {
        // Next marker: 0xFF (fill bytes allowed) and a code. Stray bytes are skipped, as libjpeg does.
        let ff = b[i.min(b.len())..].iter().position(|&x| x == 0xFF).ok_or_else(truncated)?;
        i += ff;
        while i < b.len() && b[i] == 0xFF {
            i += 1;
        }
        let marker = *b.get(i).ok_or_else(truncated)?;
        i += 1;
        match marker {
            0xD9 => return Ok(()),
            // Standalone markers: restart, TEM, SOI.
            0xD0..=0xD8 | 0x01 => continue,
            _ => {}
        }
        let len = b.get(i..i + 2).ok_or_else(truncated)?;
        let len = u16::from_be_bytes([len[0], len[1]]) as usize;
        if len < 2 {
            return Err(DecodeError::JpegSegment { length: len, at: i });
        }
        i += len;
        if i > b.len() {
            return Err(truncated());
        }
        if marker == 0xDA {
            // Entropy-coded data: 0xFF is followed by 0x00 (a stuffed byte) or a restart marker
            // inside it; any other marker ends it.
            loop {
                let ff = b[i..].iter().position(|&x| x == 0xFF).ok_or_else(truncated)?;
                let next = *b.get(i + ff + 1).ok_or_else(truncated)?;
                if next == 0x00 || (0xD0..=0xD7).contains(&next) {
                    i += ff + 2;
                } else {
                    i += ff;
                    break;
                }
            }
        }
    }
}

/// Decodes an encoded image (PNG, JPEG, BMP, WebP) to interleaved RGB8, strictly
/// ([`check_complete`]) and within [`MAX_PIXELS`] (checked from the header, before decoding).
pub fn decode_rgb(bytes: &[u8]) -> Result<(u32, u32, Vec<u8>), DecodeError> {
    check_complete(bytes)?;
    let decoder = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| DecodeError::Image(e.into()))?
        .into_decoder()
        .map_err(DecodeError::Image)?;
    let (w, h) = decoder.dimensions();
    check_pixels(w, h)?;
    let rgb = DynamicImage::from_decoder(decoder).map_err(DecodeError::Image)?.into_rgb8();
    Ok((rgb.width(), rgb.height(), rgb.into_raw()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jpeg(w: u32, h: u32) -> Vec<u8> {
        let rgb = crate::synth::pattern_rgb(3, w, h);
        let mut out = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
            .encode(&rgb, w, h, image::ExtendedColorType::Rgb8)
            .unwrap();
        out
    }

    #[test]
    fn a_truncated_jpeg_is_an_error_a_whole_one_decodes() {
        let j = jpeg(40, 24);
        assert_eq!(decode_rgb(&j).unwrap().0, 40);
        // Trailing bytes after the end-of-image marker are tolerated.
        let mut padded = j.clone();
        padded.extend_from_slice(&[0, 0, 0]);
        assert!(decode_rgb(&padded).is_ok());
        for cut in [j.len() - 2, j.len() - 1, j.len() * 2 / 3, j.len() / 2, 30, 3] {
            let err = decode_rgb(&j[..cut]).unwrap_err();
            assert!(matches!(err, DecodeError::TruncatedJpeg { len } if len == cut), "cut at {cut}: {err}");
            assert_eq!(err.to_string(), format!("truncated JPEG (no end-of-image marker in its {cut} bytes)"));
        }
        // What the `image` crate alone does with the same bytes: a grey-filled image, no error.
        assert!(image::load_from_memory(&j[..j.len() * 2 / 3]).is_ok());
    }

    #[test]
    fn a_truncated_png_is_an_error() {
        let p = crate::synth::pattern_png(1, 30, 30);
        for cut in [p.len() / 2, p.len() - 20] {
            let err = decode_rgb(&p[..cut]).unwrap_err();
            assert!(matches!(err, DecodeError::Image(_)), "cut at {cut}: {err}");
        }
    }

    #[test]
    fn a_jpeg_segment_shorter_than_its_length_field_is_corrupt() {
        // SOI, then an APP0 marker whose length (1) cannot even hold the length field.
        let b = [0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x01, 0xFF, 0xD9];
        let err = decode_rgb(&b).unwrap_err();
        assert!(matches!(err, DecodeError::JpegSegment { length: 1, at: 4 }), "{err}");
        assert_eq!(err.to_string(), "corrupt JPEG: segment length 1 at byte 4");
    }

    #[test]
    fn bytes_of_no_known_format_are_an_image_error() {
        let err = decode_rgb(b"not an image").unwrap_err();
        assert!(matches!(err, DecodeError::Image(image::ImageError::Unsupported(_))), "{err}");
        assert!(check_complete(b"not an image").is_ok(), "only JPEGs are walked");
    }

    #[test]
    fn the_pixel_count_is_checked_before_decoding() {
        // A PNG header declaring 65,535 x 65,535 pixels (12 GB of RGB), without the pixels.
        let mut p = crate::synth::pattern_png(1, 2, 2);
        p[16..20].copy_from_slice(&65_535u32.to_be_bytes());
        p[20..24].copy_from_slice(&65_535u32.to_be_bytes());
        let crc = crc32(&p[12..29]);
        p[29..33].copy_from_slice(&crc.to_be_bytes());
        let err = decode_rgb(&p).unwrap_err();
        assert!(matches!(err, DecodeError::TooManyPixels { width: 65_535, height: 65_535 }), "{err}");
        assert_eq!(err.to_string(), "65535x65535 is 4294836225 pixels, more than the 134217728 allowed");
        assert!(check_pixels(11_585, 11_585).is_ok());
        assert!(matches!(check_pixels(11_586, 11_586), Err(DecodeError::TooManyPixels { width: 11_586, .. })));
    }

    #[test]
    fn resize_bounds() {
        assert!(check_resize(None).is_ok() && check_resize(Some(1)).is_ok() && check_resize(Some(8192)).is_ok());
        assert!(check_resize(Some(0)).unwrap_err().to_string().contains("resize 0: the shorter side must be 1..=8192"));
        assert!(check_resize(Some(100_000)).unwrap_err().to_string().contains("resize 100000:"));
    }

    fn crc32(data: &[u8]) -> u32 {
        let mut c = 0xFFFF_FFFFu32;
        for &b in data {
            c ^= b as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
            }
        }
        !c
    }
}
