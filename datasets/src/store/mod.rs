//! Shards on object storage: a shard folder may be a URL — `s3://bucket/prefix`, `gs://…`,
//! `az://…`, `http(s)://…` (read-only) or `file://…` — wherever a folder is accepted.
//!
//! [`open`] is the one resolver: it turns what a user typed into a [`Location`]. A local path
//! (or a `file://` URL) stays a plain folder and costs nothing extra; a URL becomes a
//! [`Remote`]: the bucket (through the Arrow project's `object_store` crate, with credentials
//! and endpoints from the usual environment variables) and a bounded local [`Cache`] that
//! shards are downloaded into, checked against the manifest's sha256, before anything reads
//! them. Readers then open the cached files exactly as local ones, so batches are identical.
//!
//! Writing to a bucket is [`ingest_to`]: shards are written locally, uploaded as they are
//! finished, and the manifest goes last.

mod cache;
mod remote;
mod size;
mod upload;
mod url;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use cache::{Cache, CacheStats, Pin};
pub use remote::default_cache_dir;
pub use remote::Remote;
pub use size::{format_bytes, parse_bytes};
pub use upload::{ingest_to, prepare_location, STAGING};

use crate::error::Result;
use crate::shard::{Manifest, ShardInfo, ShardReader};

/// Default cache size limit: 20 GB.
pub const DEFAULT_CACHE_LIMIT: u64 = 20_000_000_000;
/// Default number of shards fetched ahead of the reader.
pub const DEFAULT_AHEAD: usize = 4;

/// How URLs are opened: the cache and its limit. Local paths ignore all of it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreOptions {
    /// Cache folder [default: `$XDG_CACHE_HOME/siamlab/<key of the URL>`, else
    /// `~/.cache/siamlab/<key>`].
    pub cache_dir: Option<PathBuf>,
    /// Bytes the cache may hold (at least three of the dataset's largest shards).
    pub cache_limit: u64,
    /// Shards a pipeline fetches ahead of its reader.
    pub ahead: usize,
    /// Latency added to every request (benchmarks: a far-away bucket, through
    /// `object_store`'s throttling wrapper).
    pub added_latency: Option<Duration>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions { cache_dir: None, cache_limit: DEFAULT_CACHE_LIMIT, ahead: DEFAULT_AHEAD, added_latency: None }
    }
}

/// Where a shard folder is: a local folder or a prefix in an object store.
#[derive(Debug, Clone)]
pub enum Location {
    /// A folder on this machine.
    Local(PathBuf),
    /// A prefix in an object store, read through a local cache.
    Remote(Arc<Remote>),
}

/// Resolves `spec` — a path, or a `s3://`, `gs://`, `az://`, `http(s)://` or `file://` URL.
pub fn open(spec: &str, opts: &StoreOptions) -> Result<Location> {
    match url::parse(spec)? {
        url::Parsed::Local(p) => Ok(Location::Local(p)),
        url::Parsed::Remote(r) => Ok(Location::Remote(Arc::new(Remote::open(r, opts)?))),
    }
}

/// [`open`] for a path argument (a URL typed on the command line arrives as a path).
pub fn open_path(spec: &Path, opts: &StoreOptions) -> Result<Location> {
    match spec.to_str() {
        Some(s) => open(s, opts),
        None => Ok(Location::Local(spec.to_path_buf())),
    }
}

/// A shard ready to be read from a local file: its path, whether it was in the cache already,
/// and a pin that keeps the cache from evicting it while held.
#[derive(Debug)]
pub struct ShardFile {
    /// Local file to open.
    pub path: PathBuf,
    /// True when no download was waited for (always for local folders).
    pub hit: bool,
    /// Held while the file is read.
    pub pin: Option<Pin>,
}

impl Location {
    /// The local folder, when this is one.
    pub fn local_dir(&self) -> Option<&Path> {
        match self {
            Location::Local(p) => Some(p),
            Location::Remote(_) => None,
        }
    }

    /// The store, when this is a URL.
    pub fn remote(&self) -> Option<&Arc<Remote>> {
        match self {
            Location::Local(_) => None,
            Location::Remote(r) => Some(r),
        }
    }

    /// Reads and checks the manifest.
    pub fn manifest(&self) -> Result<Manifest> {
        match self {
            Location::Local(dir) => Manifest::load(dir),
            Location::Remote(r) => r.manifest(),
        }
    }

    /// Whether the manifest exists (a complete shard folder).
    pub fn has_manifest(&self) -> Result<bool> {
        match self {
            Location::Local(dir) => Ok(dir.join(crate::shard::MANIFEST).is_file()),
            Location::Remote(r) => r.has_manifest(),
        }
    }

    /// A local file holding `shard` (downloaded into the cache and checked first, for a URL).
    pub fn shard_file(&self, shard: &ShardInfo) -> Result<ShardFile> {
        match self {
            Location::Local(dir) => Ok(ShardFile { path: dir.join(&shard.path), hit: true, pin: None }),
            Location::Remote(r) => r.shard_file(shard),
        }
    }

    /// The name of `shard` in messages: its path or its object's URL.
    pub fn shard_name(&self, shard: &ShardInfo) -> String {
        match self {
            Location::Local(dir) => dir.join(&shard.path).display().to_string(),
            Location::Remote(r) => r.object_url(&shard.path),
        }
    }

    /// Rows of each row group of `shard`, from its Parquet footer (for a URL: read with two
    /// small range requests, or from the cache when the shard is there).
    pub fn row_group_rows(&self, shard: &ShardInfo) -> Result<Vec<u64>> {
        match self {
            Location::Local(dir) => {
                let r = ShardReader::open(&dir.join(&shard.path))?;
                Ok((0..r.row_groups()).map(|g| r.row_group_rows(g)).collect())
            }
            Location::Remote(r) => r.row_group_rows(shard),
        }
    }

    /// [`row_group_rows`](Self::row_group_rows) of each of `shards` (for a URL, many footers
    /// at once).
    pub fn row_group_rows_each(&self, shards: &[ShardInfo]) -> Result<Vec<Vec<u64>>> {
        match self {
            Location::Local(_) => shards.iter().map(|s| self.row_group_rows(s)).collect(),
            Location::Remote(r) => r.row_group_rows_each(shards),
        }
    }

    /// Cache counters so far (None for a local folder).
    pub fn cache_stats(&self) -> Option<CacheStats> {
        self.remote().map(|r| r.cache().stats())
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Local(p) => write!(f, "{}", p.display()),
            Location::Remote(r) => write!(f, "{}", r.url()),
        }
    }
}

impl From<&Path> for Location {
    fn from(p: &Path) -> Self {
        Location::Local(p.to_path_buf())
    }
}

impl From<PathBuf> for Location {
    fn from(p: PathBuf) -> Self {
        Location::Local(p)
    }
}

impl From<&PathBuf> for Location {
    fn from(p: &PathBuf) -> Self {
        Location::Local(p.clone())
    }
}

impl From<&Location> for Location {
    fn from(l: &Location) -> Self {
        l.clone()
    }
}
