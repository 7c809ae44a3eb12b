//! `manifest.json`: what a shard folder holds. Written last and atomically; its presence means
//! the folder is complete.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{write_atomic, Error, IoContext, Result};

/// Version of the shard layout and manifest fields.
pub const SCHEMA_VERSION: u32 = 1;
/// The manifest's file name inside a shard folder.
pub const MANIFEST: &str = "manifest.json";
/// The file that marks a folder as siamlab's, written before any shard: a folder with it and
/// without a manifest is an interrupted ingest, whose leftovers may be removed.
pub const MARKER: &str = ".siamlab-shards";
/// What [`MARKER`] says to a person who finds it.
pub const MARKER_TEXT: &str = "This folder is written by `siamlab ingest`; manifest.json marks it complete.\n";

/// One Parquet shard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardInfo {
    /// Path relative to the shard folder (`train/part-00000-of-00002.parquet`).
    pub path: String,
    /// Rows in the shard.
    pub rows: u64,
    /// Row groups in the shard.
    pub row_groups: u64,
    /// File size in bytes.
    pub bytes: u64,
    /// Lower-case hex sha256 of the file.
    pub sha256: String,
}

/// Per-channel pixel statistics, on the 0..1 scale (what `Normalize` takes).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ChannelStats {
    /// Mean of R, G, B.
    pub mean: [f64; 3],
    /// Standard deviation of R, G, B (population).
    pub std: [f64; 3],
}

/// One split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SplitInfo {
    /// Rows written.
    pub rows: u64,
    /// Source images skipped because they did not decode (`--skip-bad`).
    pub skipped: u64,
    /// Smallest and largest image width and height seen (`[min_w, min_h, max_w, max_h]`).
    pub size_range: Option<[u32; 4]>,
    /// Pixel statistics of this split.
    pub stats: Option<ChannelStats>,
    /// The shards, in order.
    pub shards: Vec<ShardInfo>,
}

/// The manifest of a shard folder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`SCHEMA_VERSION`] at writing time.
    pub schema_version: u32,
    /// Source kind (`cifar10`, `stl10`, `celeba`, `folder`, `random`, ...).
    pub source: String,
    /// The ingest arguments that shaped the output.
    pub arguments: serde_json::Value,
    /// Producer and version.
    pub created_by: String,
    /// Split names in order.
    pub split_order: Vec<String>,
    /// The splits.
    pub splits: BTreeMap<String, SplitInfo>,
    /// Class names (label ids index this list).
    pub classes: Option<Vec<String>>,
    /// Coarse class names (CIFAR-100).
    pub coarse_classes: Option<Vec<String>>,
    /// Attribute names (CelebA).
    pub attributes: Option<Vec<String>>,
    /// The split whose statistics are the dataset's normalization default (`train` if present).
    pub stats_split: Option<String>,
    /// Per-channel mean/std of `stats_split`: the pipeline's `Normalize` default.
    pub stats: Option<ChannelStats>,
    /// Source-specific facts (STL-10 folds, random-image parameters, CIFAR format).
    pub extra: serde_json::Value,
}

impl Manifest {
    /// Reads and checks `DIR/manifest.json`.
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join(MANIFEST);
        let text = std::fs::read_to_string(&path).at(&path)?;
        Self::from_json(&text, &path.display().to_string())
    }

    /// Parses and checks a manifest's text, read from `name` (a path or a URL, for messages).
    pub fn from_json(text: &str, name: &str) -> Result<Self> {
        let m: Manifest =
            serde_json::from_str(text).map_err(|e| Error::corrupt_file(name, format!("invalid manifest: {e}")))?;
        if m.schema_version != SCHEMA_VERSION {
            return Err(Error::corrupt_file(
                name,
                format!("schema version {} is not supported (this siamlab reads {SCHEMA_VERSION})", m.schema_version),
            ));
        }
        Ok(m)
    }

    /// Writes `DIR/manifest.json` atomically.
    pub fn store(&self, dir: &Path) -> Result<()> {
        write_atomic(&dir.join(MANIFEST), self.to_json().as_bytes())
    }

    /// The manifest as written: pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("manifest serializes")
    }

    /// The named split, or an error listing the splits there are.
    pub fn split(&self, name: &str) -> Result<&SplitInfo> {
        self.splits.get(name).ok_or_else(|| {
            Error::Usage(format!("no split {name:?} (this dataset has: {})", self.split_order.join(", ")))
        })
    }
}
