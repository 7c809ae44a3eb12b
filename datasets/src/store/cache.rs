//! The local cache of a remote shard folder.
//!
//! Files are content-addressed, `DIR/shards/<sha256>.parquet`, so a cached shard can never be
//! stale whatever happens to the bucket. Each is downloaded under a temporary name, checked
//! against the manifest's sha256 and size, then renamed; readers only ever see checked files.
//! Its modification time is its last use: over the limit, the least recently used shards that
//! no reader of this process holds ([`Pin`]) are evicted.
//!
//! Several processes (the ranks of one machine) share a folder safely: a lock file per shard
//! makes one of them download it while the others wait and then find it there, and a lock on
//! the folder serialises eviction.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use super::ShardFile;
use crate::error::{sync_dir, Error, IoContext, Result};
use crate::shard::ShardInfo;

/// Shards the limit must hold at least.
pub const MIN_SHARDS: u64 = 3;

/// Temporary files older than this are a crashed process's and are removed.
const STALE_TMP: Duration = Duration::from_secs(3600);

/// Who asks for a shard: the reader (counted as a hit or a miss) or the prefetcher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Read,
    Prefetch,
}

/// What the cache did so far (this process).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Reads that found their shard in the cache.
    pub hits: u64,
    /// Reads that waited for a download (theirs or another process's).
    pub misses: u64,
    /// Shards downloaded by this process (by readers and the prefetcher).
    pub downloads: u64,
    /// Bytes downloaded by this process.
    pub downloaded_bytes: u64,
    /// Shards evicted by this process.
    pub evictions: u64,
    /// Largest size the folder reached after an insertion by this process.
    pub peak_bytes: u64,
    /// The limit.
    pub limit: u64,
}

impl CacheStats {
    /// Hits over reads (1 when nothing was read).
    pub fn hit_rate(&self) -> f64 {
        let n = self.hits + self.misses;
        if n == 0 {
            1.0
        } else {
            self.hits as f64 / n as f64
        }
    }

    /// The counters since `before`.
    pub fn since(&self, before: &CacheStats) -> CacheStats {
        CacheStats {
            hits: self.hits - before.hits,
            misses: self.misses - before.misses,
            downloads: self.downloads - before.downloads,
            downloaded_bytes: self.downloaded_bytes - before.downloaded_bytes,
            evictions: self.evictions - before.evictions,
            peak_bytes: self.peak_bytes,
            limit: self.limit,
        }
    }
}

#[derive(Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    downloads: AtomicU64,
    downloaded_bytes: AtomicU64,
    evictions: AtomicU64,
    peak_bytes: AtomicU64,
}

type Pins = Arc<Mutex<HashMap<String, usize>>>;

/// Keeps a shard from being evicted by this process while held.
#[derive(Debug)]
pub struct Pin {
    sha: String,
    pins: Pins,
}

impl Drop for Pin {
    fn drop(&mut self) {
        let mut p = self.pins.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = p.get_mut(&self.sha) {
            *n -= 1;
            if *n == 0 {
                p.remove(&self.sha);
            }
        }
    }
}

/// A cache folder with a size limit.
pub struct Cache {
    dir: PathBuf,
    limit: u64,
    pins: Pins,
    counters: Counters,
    tmp_seq: AtomicU64,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache").field("dir", &self.dir).field("limit", &self.limit).finish()
    }
}

fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn lock(file: &File, path: &Path) -> Result<()> {
    fs4::FileExt::lock(file).at(path)
}

fn open_lock(path: &Path) -> Result<File> {
    File::options().create(true).truncate(false).write(true).open(path).at(path)
}

impl Cache {
    /// A cache in `dir` holding at most `limit` bytes (the folder is made on first use).
    pub fn new(dir: PathBuf, limit: u64) -> Self {
        Cache { dir, limit, pins: Pins::default(), counters: Counters::default(), tmp_seq: AtomicU64::new(0) }
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The limit in bytes.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    fn shards_dir(&self) -> PathBuf {
        self.dir.join("shards")
    }

    /// Where the checked copy of a shard with this sha256 lives.
    pub fn path_of(&self, sha256: &str) -> PathBuf {
        self.shards_dir().join(format!("{sha256}.parquet"))
    }

    /// Refuses a limit that cannot hold [`MIN_SHARDS`] shards of `largest` bytes.
    pub fn check_limit(&self, largest: u64, what: &str) -> Result<()> {
        if self.limit < MIN_SHARDS * largest {
            return Err(Error::Usage(format!(
                "--cache-limit {} is too small for {what}: it must hold at least {MIN_SHARDS} of its shards (the largest is {}), so at least {}",
                super::format_bytes(self.limit),
                super::format_bytes(largest),
                super::format_bytes(MIN_SHARDS * largest)
            )));
        }
        Ok(())
    }

    /// Counters so far.
    pub fn stats(&self) -> CacheStats {
        let c = &self.counters;
        CacheStats {
            hits: c.hits.load(Relaxed),
            misses: c.misses.load(Relaxed),
            downloads: c.downloads.load(Relaxed),
            downloaded_bytes: c.downloaded_bytes.load(Relaxed),
            evictions: c.evictions.load(Relaxed),
            peak_bytes: c.peak_bytes.load(Relaxed),
            limit: self.limit,
        }
    }

    fn pin(&self, sha: &str) -> Pin {
        *self.pins.lock().unwrap_or_else(|e| e.into_inner()).entry(sha.to_string()).or_insert(0) += 1;
        Pin { sha: sha.to_string(), pins: self.pins.clone() }
    }

    fn pinned(&self, sha: &str) -> bool {
        self.pins.lock().unwrap_or_else(|e| e.into_inner()).contains_key(sha)
    }

    /// Marks the cached copy of `sha256` as the first to evict: its reader is done with it
    /// for now (this epoch reads it no more). Least-recently-used order alone would keep it
    /// over a shard read a moment earlier that is still needed. Nothing happens when the
    /// copy is gone.
    pub fn retire(&self, sha256: &str) {
        if let Ok(f) = File::options().write(true).open(self.path_of(sha256)) {
            let _ = f.set_modified(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1));
        }
    }

    /// The cached copy if it is there (and marks it used now).
    fn present(path: &Path, bytes: u64) -> bool {
        match std::fs::metadata(path) {
            Ok(m) if m.len() == bytes => {
                if let Ok(f) = File::options().write(true).open(path) {
                    let _ = f.set_modified(SystemTime::now());
                }
                true
            }
            _ => false,
        }
    }

    /// A checked local copy of `shard` (named `object` in messages), downloaded with
    /// `download(tmp) -> (sha256, bytes)` when the cache does not hold it.
    pub(crate) fn fetch(
        &self,
        shard: &ShardInfo,
        object: &str,
        role: Role,
        download: &dyn Fn(&Path) -> Result<(String, u64)>,
    ) -> Result<ShardFile> {
        if !is_sha256(&shard.sha256) {
            return Err(Error::corrupt_file(object, format!("the manifest's sha256 {:?} is not one", shard.sha256)));
        }
        let pin = self.pin(&shard.sha256);
        let path = self.path_of(&shard.sha256);
        let count = |hit: bool| {
            if role == Role::Read {
                let c = if hit { &self.counters.hits } else { &self.counters.misses };
                c.fetch_add(1, Relaxed);
            }
        };
        if Self::present(&path, shard.bytes) {
            count(true);
            return Ok(ShardFile { path, hit: true, pin: Some(pin) });
        }
        count(false);
        let dir = self.shards_dir();
        std::fs::create_dir_all(&dir).at(&dir)?;
        // One process (or thread) downloads; the others wait here and then find the file.
        let lock_path = dir.join(format!("{}.lock", shard.sha256));
        let lock_file = open_lock(&lock_path)?;
        lock(&lock_file, &lock_path)?;
        if Self::present(&path, shard.bytes) {
            return Ok(ShardFile { path, hit: false, pin: Some(pin) });
        }
        let tmp =
            dir.join(format!(".{}.{}-{}.tmp", shard.sha256, std::process::id(), self.tmp_seq.fetch_add(1, Relaxed)));
        let got = download(&tmp);
        let (sha, size) = match got {
            Ok(v) => v,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
        };
        if sha != shard.sha256 || size != shard.bytes {
            let _ = std::fs::remove_file(&tmp);
            return Err(Error::corrupt_file(
                object,
                format!(
                    "content differs from the manifest (sha256 {sha}, {size} bytes; expected {}, {} bytes): the object is damaged or was replaced; nothing was cached",
                    shard.sha256, shard.bytes
                ),
            ));
        }
        self.counters.downloads.fetch_add(1, Relaxed);
        self.counters.downloaded_bytes.fetch_add(size, Relaxed);
        if let Err(e) = self.make_room(size) {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        std::fs::rename(&tmp, &path).at(&path)?;
        sync_dir(&dir);
        Self::present(&path, size); // its last use, to the nanosecond (file times may be coarser)
        drop(lock_file);
        Ok(ShardFile { path, hit: false, pin: Some(pin) })
    }

    /// Evicts least recently used, unpinned shards until `incoming` more bytes fit.
    pub(crate) fn make_room(&self, incoming: u64) -> Result<()> {
        let dir = self.shards_dir();
        if incoming == 0 && !dir.exists() {
            return Ok(());
        }
        let lock_path = self.dir.join(".lock");
        let lock_file = open_lock(&lock_path)?;
        lock(&lock_file, &lock_path)?;
        let mut entries = Vec::new();
        let now = SystemTime::now();
        for e in std::fs::read_dir(&dir).at(&dir)?.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Ok(meta) = e.metadata() else { continue };
            let modified = meta.modified().unwrap_or(now);
            if let Some(sha) = name.strip_suffix(".parquet") {
                entries.push((modified, sha.to_string(), meta.len()));
            } else if name.starts_with('.')
                && name.ends_with(".tmp")
                && now.duration_since(modified).unwrap_or_default() > STALE_TMP
            {
                let _ = std::fs::remove_file(e.path());
            }
        }
        entries.sort();
        let mut total: u64 = entries.iter().map(|e| e.2).sum::<u64>() + incoming;
        for (_, sha, size) in &entries {
            if total <= self.limit {
                break;
            }
            if self.pinned(sha) {
                continue;
            }
            match std::fs::remove_file(self.path_of(sha)) {
                Ok(()) => {
                    total -= size;
                    self.counters.evictions.fetch_add(1, Relaxed);
                    // Its lock file stays: removing it could let two processes lock two files.
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => total -= size,
                Err(e) => return Err(Error::io(self.path_of(sha), e)),
            }
        }
        self.counters.peak_bytes.fetch_max(total, Relaxed);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::hex;
    use sha2::{Digest, Sha256};

    fn shard(content: &[u8]) -> ShardInfo {
        ShardInfo {
            path: "train/part-00000-of-00001.parquet".into(),
            rows: 1,
            row_groups: 1,
            bytes: content.len() as u64,
            sha256: hex(&Sha256::digest(content)),
        }
    }

    fn writer(content: Vec<u8>) -> impl Fn(&Path) -> Result<(String, u64)> {
        move |tmp: &Path| {
            std::fs::write(tmp, &content).unwrap();
            Ok((hex(&Sha256::digest(&content)), content.len() as u64))
        }
    }

    #[test]
    fn a_limit_below_three_shards_is_refused() {
        let c = Cache::new("unused".into(), 299);
        let e = c.check_limit(100, "s3://b/x").unwrap_err().to_string();
        assert!(e.contains("at least 3 of its shards"), "{e}");
        c.check_limit(99, "s3://b/x").unwrap();
    }

    #[test]
    fn least_recently_used_unpinned_shards_are_evicted() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path().to_path_buf(), 300);
        let shards: Vec<(ShardInfo, Vec<u8>)> = (0..4u8).map(|i| vec![i; 100]).map(|c| (shard(&c), c)).collect();
        let a = cache.fetch(&shards[0].0, "a", Role::Read, &writer(shards[0].1.clone())).unwrap();
        drop(a);
        std::thread::sleep(Duration::from_millis(20));
        let b = cache.fetch(&shards[1].0, "b", Role::Read, &writer(shards[1].1.clone())).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        drop(cache.fetch(&shards[2].0, "c", Role::Read, &writer(shards[2].1.clone())).unwrap());
        std::thread::sleep(Duration::from_millis(20));
        // a used again: b (pinned) and c are then the older ones; c goes, b is held.
        drop(cache.fetch(&shards[0].0, "a", Role::Read, &writer(vec![])).unwrap());
        std::thread::sleep(Duration::from_millis(20));
        drop(cache.fetch(&shards[3].0, "d", Role::Read, &writer(shards[3].1.clone())).unwrap());
        let there = |i: usize| cache.path_of(&shards[i].0.sha256).exists();
        assert!(there(0) && there(1) && !there(2) && there(3));
        let st = cache.stats();
        assert_eq!((st.hits, st.misses, st.downloads, st.evictions), (1, 4, 4, 1));
        assert!(st.peak_bytes <= 300);
        drop(b);
    }
}
