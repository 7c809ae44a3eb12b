//! `--cache DIR` and `--cache-limit SIZE`: how a shard folder given as a URL is read.

use std::path::PathBuf;

use clap::Args;
use siamlab_datasets::store::{format_bytes, parse_bytes, CacheStats, StoreOptions, DEFAULT_AHEAD};

/// The cache of a shard folder given as a URL (`s3://bucket/prefix`, `gs://…`, `az://…`,
/// `http(s)://…`); local folders ignore these.
#[derive(Debug, Clone, Args)]
pub struct CacheArgs {
    /// Cache folder for shards read from a URL [default: under the user's cache folder
    /// ($XDG_CACHE_HOME or ~/.cache)/siamlab, named for the URL].
    #[arg(long)]
    cache: Option<PathBuf>,
    /// Most bytes the cache holds (least recently used shards go first); at least three of the
    /// dataset's shards. E.g. 20GB, 512MiB.
    #[arg(long, default_value = "20GB", value_parser = size)]
    cache_limit: u64,
}

fn size(s: &str) -> Result<u64, String> {
    parse_bytes(s).map_err(|e| e.to_string())
}

impl CacheArgs {
    /// The options the resolver takes.
    pub fn options(&self) -> StoreOptions {
        StoreOptions {
            cache_dir: self.cache.clone(),
            cache_limit: self.cache_limit,
            ahead: DEFAULT_AHEAD,
            added_latency: None,
        }
    }
}

/// `cache: 3 shards downloaded (12.0 MB), 40 of 52 reads hit (76.9%), 1 evicted; peak 20.0 MB of 25.0 MB`.
pub fn cache_line(c: &CacheStats) -> String {
    format!(
        "cache: {} shard(s) downloaded ({}), {} of {} reads hit ({:.1}%), {} evicted; peak {} of {}",
        c.downloads,
        format_bytes(c.downloaded_bytes),
        c.hits,
        c.hits + c.misses,
        100.0 * c.hit_rate(),
        c.evictions,
        format_bytes(c.peak_bytes),
        format_bytes(c.limit)
    )
}
