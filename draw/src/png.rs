//! Encoding a picture as PNG bytes (written to disk by the caller's atomic write:
//! `siamlab_datasets::write_atomic`).

use image::{ImageEncoder, RgbImage};

/// `img` as the bytes of a PNG file.
pub fn encode_png(img: &RgbImage) -> std::io::Result<Vec<u8>> {
    let mut png = Vec::new();
    image::codecs::png::PngEncoder::new(&mut png)
        .write_image(img.as_raw(), img.width(), img.height(), image::ExtendedColorType::Rgb8)
        .map_err(std::io::Error::other)?;
    Ok(png)
}
