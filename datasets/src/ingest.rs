//! The ingest engine: a [`Source`] read on its own thread, images prepared on a pool of
//! `jobs` threads (order kept), rows written into per-split shards, the manifest written last.
//!
//! Nothing half-written is left behind: shards carry temporary names until every split is
//! complete, a failure removes them, and `manifest.json` (written atomically, last) is the mark
//! of a complete folder. A folder without a manifest is an interrupted run and is cleaned first.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::sync_channel;

use rayon::prelude::*;

use crate::encode::{prepare, PixelSums};
use crate::error::{Error, IoContext, Result};
use crate::record::{ImageData, Record, Source};
use crate::shard::{self, ChannelStats, Columns, Layout, Manifest, Row, SplitInfo, SplitWriter, SCHEMA_VERSION};

/// Default shard size: about 256 MB.
pub const DEFAULT_SHARD_BYTES: u64 = 256 << 20;
const CHUNK_RECORDS: usize = 512;
const CHUNK_BYTES: usize = 16 << 20;

/// How to ingest.
pub struct IngestOptions<'a> {
    /// Output shard folder.
    pub out: PathBuf,
    /// Target shard size in bytes.
    pub shard_bytes: u64,
    /// Resize so that the shorter side has this many pixels.
    pub resize: Option<u32>,
    /// Worker threads for decoding / encoding (0 = all cores). Does not change the output.
    pub jobs: usize,
    /// Replace a complete output.
    pub overwrite: bool,
    /// Skip (and count) images that do not decode, instead of failing.
    pub skip_bad: bool,
    /// The arguments recorded in the manifest.
    pub arguments: serde_json::Value,
    /// Called after each chunk of rows with (rows written so far, rows expected if known).
    pub progress: Option<&'a (dyn Fn(u64, Option<u64>) + Sync)>,
}

impl IngestOptions<'_> {
    /// Options with the defaults for `out`.
    pub fn new(out: impl Into<PathBuf>) -> Self {
        IngestOptions {
            out: out.into(),
            shard_bytes: DEFAULT_SHARD_BYTES,
            resize: None,
            jobs: 0,
            overwrite: false,
            skip_bad: false,
            arguments: serde_json::Value::Null,
            progress: None,
        }
    }
}

/// What an ingest did.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Shards and manifest were written.
    Written(Manifest),
    /// `out` already held a complete ingest (and `overwrite` was off); nothing was done.
    AlreadyComplete(Manifest),
}

impl Outcome {
    /// The manifest of the output folder.
    pub fn manifest(&self) -> &Manifest {
        match self {
            Outcome::Written(m) | Outcome::AlreadyComplete(m) => m,
        }
    }
}

/// Checks `out` before any work: an existing file is an error; a complete shard folder is
/// returned (unless `overwrite`); otherwise leftovers of an interrupted run are removed.
pub fn prepare_out(out: &Path, overwrite: bool) -> Result<Option<Manifest>> {
    if out.exists() && !out.is_dir() {
        return Err(Error::Usage(format!("--out {}: is an existing file, not a folder", out.display())));
    }
    if out.join(shard::MANIFEST).exists() && !overwrite {
        return Manifest::load(out).map(Some);
    }
    shard::clean(out)?;
    Ok(None)
}

struct SplitState {
    writer: SplitWriter,
    sums: PixelSums,
    rows: u64,
    skipped: u64,
    size_range: Option<[u32; 4]>,
}

/// Reads `source` into shards under `opts.out`.
pub fn ingest(mut source: Box<dyn Source>, opts: &IngestOptions) -> Result<Outcome> {
    if let Some(m) = prepare_out(&opts.out, opts.overwrite)? {
        return Ok(Outcome::AlreadyComplete(m));
    }
    let created = !opts.out.exists();
    std::fs::create_dir_all(&opts.out).at(&opts.out)?;
    let result = run(source.as_mut(), opts);
    match result {
        Ok(m) => Ok(Outcome::Written(m)),
        Err(e) => {
            let _ = shard::clean(&opts.out);
            if created {
                let _ = std::fs::remove_dir(&opts.out);
            }
            Err(e)
        }
    }
}

fn run(source: &mut dyn Source, opts: &IngestOptions) -> Result<Manifest> {
    let info = source.info().clone();
    let cols = Columns::of(&info);
    let schema = shard::schema(&info, cols);
    let layout = Layout::with_shard_bytes(opts.shard_bytes);
    let mut splits: Vec<SplitState> = info
        .splits
        .iter()
        .map(|s| SplitState {
            writer: SplitWriter::new(&opts.out, s, schema.clone(), cols, layout),
            sums: PixelSums::default(),
            rows: 0,
            skipped: 0,
            size_range: None,
        })
        .collect();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(opts.jobs)
        .build()
        .map_err(|e| Error::Usage(format!("cannot start {} worker threads: {e}", opts.jobs)))?;

    let (tx, rx) = sync_channel::<Vec<Record>>(2);
    let mut done = 0u64;
    let total = info.total;
    let consumed: Result<()> = std::thread::scope(|scope| {
        let reader = scope.spawn(move || {
            let mut chunk = Vec::with_capacity(CHUNK_RECORDS);
            let mut bytes = 0;
            let r = source.run(&mut |rec| {
                bytes += match &rec.image {
                    ImageData::Rgb { pixels, .. } => pixels.len(),
                    ImageData::Encoded { bytes, .. } => bytes.len(),
                };
                chunk.push(rec);
                if chunk.len() >= CHUNK_RECORDS || bytes >= CHUNK_BYTES {
                    bytes = 0;
                    tx.send(std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK_RECORDS)))
                        .map_err(|_| Error::Cancelled)?;
                }
                Ok(())
            });
            r.and_then(|()| if chunk.is_empty() { Ok(()) } else { tx.send(chunk).map_err(|_| Error::Cancelled) })
        });
        let consume = || -> Result<()> {
            for chunk in rx {
                type Prepared = (Record, Option<String>, std::result::Result<crate::encode::Prepared, String>);
                let prepared: Vec<Prepared> = pool.install(|| {
                    chunk
                        .into_par_iter()
                        .map(|mut rec| {
                            let image = std::mem::replace(
                                &mut rec.image,
                                ImageData::Rgb { width: 0, height: 0, pixels: Vec::new() },
                            );
                            let path = match &image {
                                ImageData::Encoded { path, .. } => Some(path.clone()),
                                ImageData::Rgb { .. } => None,
                            };
                            let p = prepare(image, opts.resize);
                            (rec, path, p)
                        })
                        .collect()
                });
                for (rec, path, p) in prepared {
                    let s = &mut splits[rec.split];
                    let p = match p {
                        Ok(p) => p,
                        Err(_) if opts.skip_bad && info.file_source => {
                            s.skipped += 1;
                            continue;
                        }
                        Err(msg) => {
                            return Err(Error::corrupt(
                                &rec.origin.file,
                                rec.origin.record.clone(),
                                format!("image does not decode: {msg}"),
                            ))
                        }
                    };
                    s.sums.add(&p.sums);
                    s.rows += 1;
                    s.size_range = Some(match s.size_range {
                        None => [p.width, p.height, p.width, p.height],
                        Some([a, b, c, d]) => [a.min(p.width), b.min(p.height), c.max(p.width), d.max(p.height)],
                    });
                    s.writer.push(Row {
                        index: rec.index,
                        label: rec.label,
                        coarse_label: rec.coarse_label,
                        attributes: rec.attributes,
                        bytes: p.bytes,
                        path,
                        width: p.width,
                        height: p.height,
                    })?;
                    done += 1;
                }
                if let Some(f) = opts.progress {
                    f(done, total);
                }
            }
            Ok(())
        };
        let consumed = consume();
        // On a consumer error the receiver is gone: the reader's next send fails and it stops.
        let read = reader.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
        match (consumed, read) {
            (Err(e), _) => Err(e),
            (Ok(()), Err(e)) => Err(e),
            (Ok(()), Ok(())) => Ok(()),
        }
    });
    consumed?;

    let mut split_infos = BTreeMap::new();
    for (name, s) in info.splits.iter().zip(splits) {
        let shards = s.writer.finish()?;
        let stats = s.sums.mean_std().map(|(mean, std)| ChannelStats { mean, std });
        split_infos.insert(
            name.clone(),
            SplitInfo { rows: s.rows, skipped: s.skipped, size_range: s.size_range, stats, shards },
        );
    }
    let stats_split =
        if split_infos.contains_key("train") { Some("train".to_string()) } else { info.splits.first().cloned() };
    let stats = stats_split.as_ref().and_then(|s| split_infos.get(s)).and_then(|s| s.stats);
    let manifest = Manifest {
        schema_version: SCHEMA_VERSION,
        source: info.name.clone(),
        arguments: opts.arguments.clone(),
        created_by: format!("siamlab {}", env!("CARGO_PKG_VERSION")),
        split_order: info.splits.clone(),
        splits: split_infos,
        classes: info.classes.clone(),
        coarse_classes: info.coarse_classes.clone(),
        attributes: info.attributes.clone(),
        stats_split,
        stats,
        extra: info.extra.clone(),
    };
    manifest.store(&opts.out)?;
    Ok(manifest)
}
