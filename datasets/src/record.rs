//! What a source yields: one [`Record`] per image, and a [`SourceInfo`] describing the whole.

use crate::error::Result;

/// Number of CelebA attributes; the only attribute layout the shard schema knows.
pub const NUM_ATTRIBUTES: usize = 40;

/// The pixels of one image, as the source holds them.
#[derive(Debug, Clone)]
pub enum ImageData {
    /// Raw RGB pixels, row-major, interleaved (`[height][width][3]`).
    Rgb {
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
        /// `width * height * 3` bytes.
        pixels: Vec<u8>,
    },
    /// An encoded image file (JPEG, PNG, ...) kept as it was.
    Encoded {
        /// The file's bytes.
        bytes: Vec<u8>,
        /// The file's name relative to the source (stored in the `image.path` column).
        path: String,
    },
}

/// One image with its targets.
#[derive(Debug, Clone)]
pub struct Record {
    /// Index into [`SourceInfo::splits`].
    pub split: usize,
    /// Position of the image in the source's own split (stable across runs).
    pub index: i64,
    /// Class id (0-based), `None` for unlabeled images.
    pub label: Option<i64>,
    /// Coarse class id (CIFAR-100 only).
    pub coarse_label: Option<i64>,
    /// Binary attributes as 0/1 (CelebA only).
    pub attributes: Option<[i8; NUM_ATTRIBUTES]>,
    /// The pixels.
    pub image: ImageData,
    /// Where the record came from, for error messages (`file: record N`).
    pub origin: Origin,
}

/// A record's place in the source, used to name it in errors.
#[derive(Debug, Clone)]
pub struct Origin {
    /// File or archive member.
    pub file: String,
    /// Record / line description within the file.
    pub record: String,
}

/// Describes a source before any record is read.
#[derive(Debug, Clone, Default)]
pub struct SourceInfo {
    /// Source kind (`cifar10`, `stl10`, ...).
    pub name: String,
    /// Split names, in output order.
    pub splits: Vec<String>,
    /// Class names when the source has single-label targets.
    pub classes: Option<Vec<String>>,
    /// Coarse class names (CIFAR-100).
    pub coarse_classes: Option<Vec<String>>,
    /// Attribute names (CelebA).
    pub attributes: Option<Vec<String>>,
    /// True when records carry encoded files (folder, CelebA) rather than raw arrays.
    pub file_source: bool,
    /// Source-specific facts for the manifest (e.g. STL-10's folds).
    pub extra: serde_json::Value,
    /// Number of records `run` will yield, when known in advance (for progress bars).
    pub total: Option<u64>,
}

/// A dataset in its publisher's layout, read as a stream of records.
pub trait Source: Send {
    /// The source's description, available before [`Source::run`].
    fn info(&self) -> &SourceInfo;
    /// Reads every record in a deterministic order and hands each to `sink`. A sink error
    /// (e.g. [`crate::Error::Cancelled`]) stops the run and is returned.
    fn run(&mut self, sink: &mut dyn FnMut(Record) -> Result<()>) -> Result<()>;
}
