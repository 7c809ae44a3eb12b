//! A shard folder in an object store: its manifest, its shards through the [`Cache`], and
//! the writes an ingest makes. `object_store` is async; this crate is not, so every request
//! runs on one small process-wide runtime and callers block on it (from any thread that is
//! not itself running async tasks: the pipeline calls from its blocking pool).

use std::future::Future;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use object_store::path::Path as ObjPath;
use object_store::throttle::{ThrottleConfig, ThrottledStore};
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use parquet::errors::ParquetError;
use parquet::file::metadata::ParquetMetaDataReader;
use sha2::{Digest, Sha256};

use super::cache::{Cache, Role};
use super::url::RemoteSpec;
use super::{ShardFile, StoreOptions};
use crate::error::{Error, IoContext, Result};
use crate::shard::{Manifest, ShardInfo, ShardReader, MANIFEST};

/// Whole-download attempts (each request inside is also retried by the store's client).
const ATTEMPTS: u32 = 3;
/// Uploads larger than this go in parts.
const MULTIPART_ABOVE: u64 = 16 << 20;
/// Part size of a multipart upload (S3's minimum is 5 MiB).
const PART: usize = 8 << 20;
/// Parts in flight at once.
const PARTS_IN_FLIGHT: usize = 4;
/// Bytes asked for first when reading a footer from its end.
const FOOTER_GUESS: u64 = 64 << 10;
/// Footers read at once when an epoch is planned.
const FOOTERS_IN_FLIGHT: usize = 16;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("siamlab-store-io")
            .enable_all()
            .build()
            .expect("the object-store I/O runtime starts")
    })
}

fn block_on<F: Future>(f: F) -> F::Output {
    runtime().block_on(f)
}

/// A shard folder in an object store, with its local cache.
pub struct Remote {
    url: String,
    store: Arc<dyn ObjectStore>,
    prefix: ObjPath,
    read_only: bool,
    cache: Cache,
    ahead: usize,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote").field("url", &self.url).field("cache", &self.cache).finish()
    }
}

/// The default cache folder of `url`: under the user's cache folder, named for the URL.
pub fn default_cache_dir(url: &str) -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    let readable: String = url
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '.' { c } else { '-' })
        .collect::<String>()
        .split('-')
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("-");
    let readable: String = readable.chars().take(80).collect();
    let hash = crate::digest::hex(&Sha256::digest(url.as_bytes()));
    base.join("siamlab").join(format!("{readable}-{}", &hash[..12]))
}

fn is_not_found(e: &object_store::Error) -> bool {
    matches!(e, object_store::Error::NotFound { .. })
}

impl Remote {
    pub(crate) fn open(spec: RemoteSpec, opts: &StoreOptions) -> Result<Self> {
        Ok(Self::from_store(spec.url, spec.store, spec.prefix, spec.read_only, opts))
    }

    /// A remote folder at `prefix` in any `object_store` store (tests use the in-memory one),
    /// shown as `url` in messages.
    pub fn from_store(
        url: impl Into<String>,
        store: Arc<dyn ObjectStore>,
        prefix: ObjPath,
        read_only: bool,
        opts: &StoreOptions,
    ) -> Self {
        let url = url.into();
        let store: Arc<dyn ObjectStore> = match opts.added_latency {
            Some(d) => {
                let config = ThrottleConfig {
                    wait_get_per_call: d,
                    wait_put_per_call: d,
                    wait_list_per_call: d,
                    wait_list_with_delimiter_per_call: d,
                    wait_delete_per_call: d,
                    ..ThrottleConfig::default()
                };
                Arc::new(ThrottledStore::new(store, config))
            }
            None => store,
        };
        let dir = opts.cache_dir.clone().unwrap_or_else(|| default_cache_dir(&url));
        Remote { cache: Cache::new(dir, opts.cache_limit), url, store, prefix, read_only, ahead: opts.ahead.max(1) }
    }

    /// The folder's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The cache.
    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// Shards a pipeline fetches ahead of its reader.
    pub fn ahead(&self) -> usize {
        self.ahead
    }

    /// The URL of the object at `rel` (a path inside the folder).
    pub fn object_url(&self, rel: &str) -> String {
        format!("{}/{rel}", self.url)
    }

    fn key(&self, rel: &str) -> ObjPath {
        let rel = rel.split('/').filter(|s| !s.is_empty()).map(object_store::path::PathPart::from);
        ObjPath::from_iter(self.prefix.parts().chain(rel))
    }

    fn error(&self, rel: &str, e: impl std::fmt::Display) -> Error {
        Error::Remote { object: self.object_url(rel), msg: e.to_string() }
    }

    pub(crate) fn writable(&self) -> Result<()> {
        if self.read_only {
            return Err(Error::Usage(format!(
                "{}: http(s) URLs are read-only; write to s3://, gs:// or az://",
                self.url
            )));
        }
        Ok(())
    }

    /// Runs `attempt` up to [`ATTEMPTS`] times with exponential backoff (0.25 s, 0.5 s, …);
    /// a missing object is not retried. The last error names the object.
    fn retrying<T>(
        &self,
        rel: &str,
        mut attempt: impl FnMut() -> std::result::Result<T, object_store::Error>,
    ) -> Result<T> {
        let mut wait = Duration::from_millis(250);
        for i in 1..=ATTEMPTS {
            match attempt() {
                Ok(v) => return Ok(v),
                Err(e) if is_not_found(&e) => {
                    return Err(Error::Missing(format!("{}: no such object", self.object_url(rel))))
                }
                Err(e) if i == ATTEMPTS => {
                    return Err(self.error(rel, format!("failed after {ATTEMPTS} tries: {e}")));
                }
                Err(_) => {
                    std::thread::sleep(wait);
                    wait *= 2;
                }
            }
        }
        unreachable!("the last attempt returns")
    }

    /// The object at `rel`, whole.
    pub fn get_bytes(&self, rel: &str) -> Result<Bytes> {
        let key = self.key(rel);
        self.retrying(rel, || block_on(async { self.store.get(&key).await?.bytes().await }))
    }

    /// Whether the object at `rel` exists.
    pub fn exists(&self, rel: &str) -> Result<bool> {
        let key = self.key(rel);
        match self.retrying(rel, || block_on(self.store.head(&key))) {
            Ok(_) => Ok(true),
            Err(Error::Missing(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Reads and checks the manifest, and that the cache limit holds a few of its shards.
    pub fn manifest(&self) -> Result<Manifest> {
        let m = self.read_manifest()?;
        let largest = m.splits.values().flat_map(|s| s.shards.iter().map(|s| s.bytes)).max().unwrap_or(0);
        self.cache.check_limit(largest, &self.url)?;
        // A cache folder filled under a larger limit (an earlier run) comes down to this one.
        self.cache.make_room(0)?;
        Ok(m)
    }

    /// Reads and checks the manifest (without looking at the cache).
    pub fn read_manifest(&self) -> Result<Manifest> {
        let text = match self.get_bytes(MANIFEST) {
            Ok(b) => b,
            Err(Error::Missing(_)) => {
                return Err(Error::Missing(format!(
                    "{}: no such object (not a shard folder written by `siamlab ingest`, or an unfinished one)",
                    self.object_url(MANIFEST)
                )))
            }
            Err(e) => return Err(e),
        };
        Manifest::from_json(&String::from_utf8_lossy(&text), &self.object_url(MANIFEST))
    }

    /// Whether the folder holds a manifest (is complete).
    pub fn has_manifest(&self) -> Result<bool> {
        self.exists(MANIFEST)
    }

    /// Streams the object at `rel` into `tmp`, returning its sha256 and size.
    fn download(&self, rel: &str, tmp: &Path) -> Result<(String, u64)> {
        let key = self.key(rel);
        let mut io_error = None;
        let r = self.retrying(rel, || {
            io_error = None;
            block_on(async {
                let mut file = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(tmp).map_err(gen)?);
                let mut hasher = Sha256::new();
                let mut size = 0u64;
                let mut stream = self.store.get(&key).await?.into_stream();
                while let Some(chunk) = stream.next().await {
                    let chunk = chunk?;
                    hasher.update(&chunk);
                    size += chunk.len() as u64;
                    if let Err(e) = file.write_all(&chunk) {
                        io_error = Some(e);
                        return Err(gen(std::io::Error::other("write failed")));
                    }
                }
                let f = file.into_inner().map_err(|e| gen(e.into_error()))?;
                f.sync_all().map_err(gen)?;
                Ok((crate::digest::hex(&hasher.finalize()), size))
            })
        });
        if let Some(e) = io_error {
            return Err(Error::io(tmp, e));
        }
        r
    }

    /// A checked local copy of `shard`, from the cache or downloaded into it.
    pub fn shard_file(&self, shard: &ShardInfo) -> Result<ShardFile> {
        let object = self.object_url(&shard.path);
        self.cache.fetch(shard, &object, Role::Read, &|tmp| self.download(&shard.path, tmp))
    }

    /// Downloads `shard` into the cache ahead of its reader (not counted as a read).
    pub fn prefetch(&self, shard: &ShardInfo) -> Result<()> {
        let object = self.object_url(&shard.path);
        self.cache.fetch(shard, &object, Role::Prefetch, &|tmp| self.download(&shard.path, tmp)).map(drop)
    }

    /// Rows of each row group of `shard`: from the cached copy if there is one, else from the
    /// object's footer (a range request for its last 64 KiB, and one more if the footer is
    /// larger).
    pub fn row_group_rows(&self, shard: &ShardInfo) -> Result<Vec<u64>> {
        let cached = self.cache.path_of(&shard.sha256);
        if std::fs::metadata(&cached).map(|m| m.len() == shard.bytes).unwrap_or(false) {
            if let Ok(r) = ShardReader::open(&cached) {
                return Ok((0..r.row_groups()).map(|g| r.row_group_rows(g)).collect());
            }
        }
        let key = self.key(&shard.path);
        let object = self.object_url(&shard.path);
        let suffix = |n: u64| {
            self.retrying(&shard.path, || {
                block_on(async {
                    let opts = GetOptions { range: Some(GetRange::Suffix(n)), ..GetOptions::default() };
                    let r = self.store.get_opts(&key, opts).await?;
                    let size = r.meta.size;
                    Ok((r.bytes().await?, size))
                })
            })
        };
        let (mut bytes, size) = suffix(FOOTER_GUESS.min(shard.bytes.max(8)))?;
        let footer_error =
            |e: ParquetError| Error::shard(&object, format!("cannot read the Parquet footer (damaged shard?): {e}"));
        let mut reader = ParquetMetaDataReader::new();
        loop {
            match reader.try_parse_sized(&bytes, size) {
                Ok(()) => break,
                Err(ParquetError::NeedMoreData(n)) if (n as u64) <= size && (n as u64) > bytes.len() as u64 => {
                    bytes = suffix(n as u64)?.0;
                }
                Err(e) => return Err(footer_error(e)),
            }
        }
        let meta = reader.finish().map_err(footer_error)?;
        Ok(meta.row_groups().iter().map(|g| g.num_rows() as u64).collect())
    }

    /// [`row_group_rows`](Self::row_group_rows) of every shard, [`FOOTERS_IN_FLIGHT`] at a
    /// time: planning an epoch over a far-away bucket waits for about one round trip, not one
    /// per shard. The first error in shard order is returned.
    pub fn row_group_rows_each(&self, shards: &[ShardInfo]) -> Result<Vec<Vec<u64>>> {
        let next = AtomicUsize::new(0);
        let out: Vec<Mutex<Option<Result<Vec<u64>>>>> = shards.iter().map(|_| Mutex::new(None)).collect();
        std::thread::scope(|s| {
            for _ in 0..FOOTERS_IN_FLIGHT.min(shards.len()) {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, Relaxed);
                    if i >= shards.len() {
                        break;
                    }
                    let r = self.row_group_rows(&shards[i]);
                    if r.is_err() {
                        // no later shard is started: an error is reported for the first shard
                        next.store(shards.len(), Relaxed);
                    }
                    *out[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
                });
            }
        });
        let mut rows = Vec::with_capacity(shards.len());
        for slot in out {
            match slot.into_inner().unwrap_or_else(|e| e.into_inner()) {
                Some(r) => rows.push(r?),
                // Shards are started in order, so one never started follows a failed one.
                None => unreachable!("a shard is skipped only after an earlier one failed"),
            }
        }
        Ok(rows)
    }

    /// Writes `bytes` to `rel`.
    pub fn put_bytes(&self, rel: &str, bytes: Bytes) -> Result<()> {
        self.writable()?;
        let key = self.key(rel);
        self.retrying(rel, || block_on(self.store.put(&key, PutPayload::from(bytes.clone()))).map(drop))
    }

    /// Uploads the local file `file` to `rel`: in one request, or in parts above 16 MiB.
    pub fn put_file(&self, rel: &str, file: &Path) -> Result<()> {
        self.writable()?;
        let size = std::fs::metadata(file).at(file)?.len();
        if size <= MULTIPART_ABOVE {
            let bytes = std::fs::read(file).at(file)?;
            return self.put_bytes(rel, Bytes::from(bytes));
        }
        let key = self.key(rel);
        let mut read_error = None;
        let r = self.retrying(rel, || {
            block_on(async {
                let mut f = std::fs::File::open(file).map_err(gen)?;
                let upload = self.store.put_multipart(&key).await?;
                let mut w = WriteMultipart::new_with_chunk_size(upload, PART);
                let mut buf = vec![0u8; PART];
                loop {
                    let n = match read_full(&mut f, &mut buf) {
                        Ok(n) => n,
                        Err(e) => {
                            read_error = Some(e);
                            w.abort().await?;
                            return Err(gen(std::io::Error::other("read failed")));
                        }
                    };
                    if n == 0 {
                        break;
                    }
                    w.wait_for_capacity(PARTS_IN_FLIGHT).await?;
                    w.put(Bytes::copy_from_slice(&buf[..n]));
                }
                w.finish().await.map(drop)
            })
        });
        if let Some(e) = read_error {
            return Err(Error::io(file, e));
        }
        r
    }

    /// Copies the object at `from` to `to`, inside the store.
    pub fn copy(&self, from: &str, to: &str) -> Result<()> {
        self.writable()?;
        let (a, b) = (self.key(from), self.key(to));
        self.retrying(from, || block_on(self.store.copy(&a, &b)))
    }

    /// Deletes the object at `rel` (gone already is fine).
    pub fn delete(&self, rel: &str) -> Result<()> {
        self.writable()?;
        let key = self.key(rel);
        match self.retrying(rel, || block_on(self.store.delete(&key))) {
            Ok(()) | Err(Error::Missing(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Paths (inside the folder) of the objects under `rel`.
    pub fn list(&self, rel: &str) -> Result<Vec<String>> {
        let key = self.key(rel);
        let base = self.prefix.parts().count();
        let keys: Vec<ObjPath> = self.retrying(rel, || {
            block_on(async {
                let mut out = Vec::new();
                let mut s = self.store.list(Some(&key));
                while let Some(m) = s.next().await {
                    out.push(m?.location);
                }
                Ok(out)
            })
        })?;
        Ok(keys
            .iter()
            .map(|k| k.parts().skip(base).map(|p| p.as_ref().to_string()).collect::<Vec<_>>().join("/"))
            .collect())
    }
}

fn gen(e: std::io::Error) -> object_store::Error {
    object_store::Error::Generic { store: "siamlab", source: Box::new(e) }
}

fn read_full(f: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}
