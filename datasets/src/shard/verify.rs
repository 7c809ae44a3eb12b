//! `verify`: checks every shard against the manifest (sha256, size, row count) and optionally
//! decodes every image, strictly (a truncated JPEG is an error naming its shard and row).

use super::reader::ShardReader;
use crate::decode::decode_rgb;
use crate::digest::sha256_file;
use crate::error::{Error, Result};
use crate::store::Location;

/// What a successful verification covered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Shards checked.
    pub shards: u64,
    /// Rows checked.
    pub rows: u64,
    /// Images decoded (0 without `decode`).
    pub decoded: u64,
}

/// Checks the shard folder `at` (a path, or a [`Location`] such as `s3://…`, whose shards are
/// downloaded through the cache, checked there and again here); the first problem is returned
/// as an error naming the shard (and row).
pub fn verify(at: impl Into<Location>, decode: bool) -> Result<VerifyReport> {
    let at: Location = at.into();
    let manifest = at.manifest()?;
    let mut report = VerifyReport::default();
    for split in &manifest.split_order {
        let info = manifest.split(split)?;
        let mut rows = 0;
        for shard in &info.shards {
            let file = at.shard_file(shard)?;
            let path = &file.path;
            let name = at.shard_name(shard);
            let (sha, size) = sha256_file(path)?;
            if size != shard.bytes || sha != shard.sha256 {
                return Err(Error::corrupt_file(
                    &name,
                    format!(
                        "content differs from the manifest (sha256 {sha}, {size} bytes; expected {}, {} bytes)",
                        shard.sha256, shard.bytes
                    ),
                ));
            }
            let reader = ShardReader::open(path)?;
            if reader.rows() != shard.rows {
                return Err(Error::corrupt_file(
                    &name,
                    format!("{} rows, manifest says {}", reader.rows(), shard.rows),
                ));
            }
            if decode {
                let mut row = 0u64;
                for g in 0..reader.row_groups() {
                    let batch = reader.read_row_group(g, Some(&["image", "width", "height"]))?;
                    for i in 0..batch.len() {
                        let (iw, ih, _) = decode_rgb(batch.image_bytes(i)).map_err(|e| {
                            Error::corrupt(&name, format!("row {row}"), format!("image does not decode: {e}"))
                        })?;
                        if let Some((w, h)) = batch.size(i) {
                            if (iw, ih) != (w, h) {
                                return Err(Error::corrupt(
                                    &name,
                                    format!("row {row}"),
                                    format!("image is {iw}x{ih} but the row says {w}x{h}"),
                                ));
                            }
                        }
                        row += 1;
                        report.decoded += 1;
                    }
                }
            }
            rows += shard.rows;
            report.shards += 1;
        }
        if rows != info.rows {
            return Err(Error::corrupt_file(
                format!("{at}/{}", super::manifest::MANIFEST),
                format!("split {split}: shards hold {rows} rows, manifest says {}", info.rows),
            ));
        }
        report.rows += rows;
    }
    Ok(report)
}
