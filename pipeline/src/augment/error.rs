//! The augmentation module's error type.

/// An error from an augmentation op, a sampler or a recipe.
///
/// Every op validates its parameters and buffer sizes and returns one of these instead of
/// panicking.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A buffer does not have the length its image dimensions require.
    #[error("{what}: buffer holds {actual} elements, {width}x{height} needs {expected}")]
    BufferSize {
        /// Which buffer (e.g. "source RGB8 image", "output CHW f32").
        what: &'static str,
        /// Image width in pixels.
        width: u32,
        /// Image height in pixels.
        height: u32,
        /// Required number of elements.
        expected: usize,
        /// Number of elements given.
        actual: usize,
    },
    /// An image has a zero dimension, or is too small for the requested op.
    #[error("image of {width}x{height} pixels: {reason}")]
    ImageSize {
        /// Image width in pixels.
        width: u32,
        /// Image height in pixels.
        height: u32,
        /// What is wrong with it.
        reason: String,
    },
    /// A parameter is out of its valid range.
    #[error("invalid parameter `{name}`: {reason}")]
    InvalidParameter {
        /// The parameter's name, as torchvision spells it where it has one.
        name: &'static str,
        /// Why it is invalid.
        reason: String,
    },
    /// The resize backend (fast_image_resize) rejected its input (not a `#[from]` source:
    /// the message already has it).
    #[error("resize failed: {0}")]
    Resize(fast_image_resize::ResizeError),
}

impl From<fast_image_resize::ResizeError> for Error {
    fn from(e: fast_image_resize::ResizeError) -> Self {
        Error::Resize(e)
    }
}

/// Shorthand for results of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn invalid(name: &'static str, reason: impl Into<String>) -> Error {
    Error::InvalidParameter { name, reason: reason.into() }
}

/// Checks that `len == width * height * channels` and that neither dimension is zero.
pub(crate) fn check_len(what: &'static str, len: usize, width: u32, height: u32, channels: usize) -> Result<()> {
    if width == 0 || height == 0 {
        return Err(Error::ImageSize { width, height, reason: format!("{what} is empty") });
    }
    let expected = (width as usize)
        .checked_mul(height as usize)
        .and_then(|n| n.checked_mul(channels))
        .ok_or_else(|| Error::ImageSize { width, height, reason: format!("{what} is too large") })?;
    if len != expected {
        return Err(Error::BufferSize { what, width, height, expected, actual: len });
    }
    Ok(())
}

/// Checks that `x` is finite and `>= 0`.
pub(crate) fn check_non_negative(name: &'static str, x: f64) -> Result<()> {
    if x.is_finite() && x >= 0.0 {
        Ok(())
    } else {
        Err(invalid(name, format!("must be finite and >= 0, got {x}")))
    }
}
