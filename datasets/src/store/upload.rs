//! Ingest into an object store: shards are written in a local temporary folder by the usual
//! [`ingest`], each uploaded (in parts when large) to a staging name as soon as it is complete,
//! then put in place under its final name (a copy inside the store: the final names are only
//! known at the end), and the manifest is written last. A reader never sees a half-written
//! dataset; an interrupted ingest leaves staged objects and no manifest, and a rerun removes
//! them and completes.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use bytes::Bytes;

use super::{Location, Remote};
use crate::decode::check_resize;
use crate::diff::differences;
use crate::error::{Error, IoContext, Result};
use crate::ingest::{ingest, prepare_out, IngestOptions, Outcome};
use crate::record::Source;
use crate::shard::{Manifest, MANIFEST};

/// Where shards wait inside the folder until the ingest completes.
pub const STAGING: &str = ".siamlab-upload";

fn staging_name(split: &str, i: usize) -> String {
    format!("{STAGING}/{split}/part-{i:05}.parquet")
}

/// `SPLIT/part-NNNNN-of-MMMMM.parquet`: a shard an ingest wrote.
fn is_shard(rel: &str) -> bool {
    match rel.split_once('/') {
        Some((split, name)) => {
            !split.is_empty() && !name.contains('/') && name.starts_with("part-") && name.ends_with(".parquet")
        }
        None => false,
    }
}

/// [`prepare_out`] for any location: for a URL, a complete dataset made with the same
/// `arguments` is returned (nothing to do), one made with others is an error unless
/// `overwrite`; without a manifest there is nothing to keep.
pub fn prepare_location(out: &Location, overwrite: bool, arguments: &serde_json::Value) -> Result<Option<Manifest>> {
    match out {
        Location::Local(dir) => prepare_out(dir, overwrite, arguments),
        Location::Remote(r) => prepare_remote(r, overwrite, arguments),
    }
}

fn prepare_remote(remote: &Remote, overwrite: bool, arguments: &serde_json::Value) -> Result<Option<Manifest>> {
    remote.writable()?;
    if !remote.has_manifest()? || overwrite {
        return Ok(None);
    }
    let m = remote.read_manifest()?;
    let diff = differences(&m.arguments, arguments, &["src"]);
    if !diff.is_empty() {
        return Err(Error::Usage(format!(
            "--out {}: holds a complete dataset made with other arguments ({}); use --overwrite to replace it, or another --out",
            remote.url(),
            diff.join(", ")
        )));
    }
    Ok(Some(m))
}

/// A local folder removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Result<Self> {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let dir = std::env::temp_dir().join(format!("siamlab-upload-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).at(&dir)?;
        Ok(Scratch(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Reads `source` into shards at `out` (`opts.out` is not used): a local folder exactly as
/// [`ingest`] does, or a URL as described in this module.
pub fn ingest_to(source: Box<dyn Source>, opts: &IngestOptions, out: &Location) -> Result<Outcome> {
    match out {
        Location::Local(dir) => ingest(source, &IngestOptions { out: dir.clone(), ..opts.clone() }),
        Location::Remote(r) => ingest_remote(source, opts, r),
    }
}

fn ingest_remote(source: Box<dyn Source>, opts: &IngestOptions, remote: &Remote) -> Result<Outcome> {
    check_resize(opts.resize)?;
    if let Some(m) = prepare_remote(remote, opts.overwrite, &opts.arguments)? {
        if m.source != source.info().name {
            return Err(Error::Usage(format!(
                "--out {}: holds a complete {} dataset, not {}; use --overwrite to replace it, or another --out",
                remote.url(),
                m.source,
                source.info().name
            )));
        }
        return Ok(Outcome::AlreadyComplete(m));
    }
    // What an interrupted run staged.
    for rel in remote.list(STAGING)? {
        remote.delete(&rel)?;
    }
    let scratch = Scratch::new()?;
    let local = scratch.0.join("shards");
    let staged = Mutex::new(HashSet::new());
    let upload = |split: &str, i: usize, file: &Path| -> Result<()> {
        remote.put_file(&staging_name(split, i), file)?;
        staged.lock().unwrap_or_else(|e| e.into_inner()).insert((split.to_string(), i));
        Ok(())
    };
    let local_opts = IngestOptions { out: local.clone(), overwrite: false, on_shard: Some(&upload), ..opts.clone() };
    let m = ingest(source, &local_opts)?.manifest().clone();
    let staged = staged.into_inner().unwrap_or_else(|e| e.into_inner());
    // Replacing: the old dataset stops being complete before any of its shards is replaced.
    if remote.has_manifest()? {
        remote.delete(MANIFEST)?;
    }
    let mut keep = HashSet::new();
    for split in &m.split_order {
        for (i, sh) in m.split(split)?.shards.iter().enumerate() {
            if staged.contains(&(split.clone(), i)) {
                remote.copy(&staging_name(split, i), &sh.path)?;
            } else {
                remote.put_file(&sh.path, &local.join(&sh.path))?;
            }
            keep.insert(sh.path.clone());
        }
    }
    for rel in remote.list("")? {
        if rel.starts_with(&format!("{STAGING}/")) || (is_shard(&rel) && !keep.contains(&rel)) {
            remote.delete(&rel)?;
        }
    }
    remote.put_bytes(MANIFEST, Bytes::from(m.to_json()))?;
    Ok(Outcome::Written(m))
}

#[cfg(test)]
mod tests {
    #[test]
    fn shard_names_are_recognised() {
        assert!(super::is_shard("train/part-00000-of-00002.parquet"));
        assert!(!super::is_shard("manifest.json"));
        assert!(!super::is_shard("notes/readme.txt"));
        assert!(!super::is_shard(".siamlab-upload/train/x/part-0.parquet"));
    }
}
