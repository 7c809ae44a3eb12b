//! The ingest engine: a [`Source`] read on its own thread, images prepared on a pool of
//! `jobs` threads (order kept), rows written into per-split shards, the manifest written last.
//!
//! Nothing half-written is left behind: shards carry temporary names until every split is
//! complete, a failure removes them, and `manifest.json` (written atomically, last) is the mark
//! of a complete folder. A folder with siamlab's marker but no manifest is an interrupted run
//! and is cleaned first; a non-empty folder without either is refused. A complete folder is
//! replaced (`overwrite`) only once its replacement, written beside it, is complete.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::sync_channel;

use rayon::prelude::*;

use crate::decode::check_resize;
use crate::diff::differences;
use crate::encode::{prepare, PixelSums};
use crate::error::{sync_dir, write_atomic, Error, IoContext, Result};
use crate::record::{ImageData, Record, Source};
use crate::shard::{self, ChannelStats, Columns, Layout, Manifest, Row, SplitInfo, SplitWriter, SCHEMA_VERSION};

/// Default shard size: about 256 MB.
pub const DEFAULT_SHARD_BYTES: u64 = 256 << 20;
const CHUNK_RECORDS: usize = 512;
const CHUNK_BYTES: usize = 16 << 20;

/// Called with (split, shard number, file) as each shard but the last of a split is complete.
pub type ShardHook<'a> = &'a (dyn Fn(&str, usize, &Path) -> Result<()> + Sync);

/// How to ingest.
#[derive(Clone)]
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
    /// Called as each shard is complete, before the ingest goes on (an upload, say); its
    /// error fails the ingest. The file keeps a temporary name until the end.
    pub on_shard: Option<ShardHook<'a>>,
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
            on_shard: None,
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

/// The arguments an ingest records in its manifest (`arguments`), which decide whether an
/// existing output is "already complete" or "made with other arguments": the CLI and the
/// Python package both call this, so either recognises the other's output. `src` is recorded
/// canonicalised (the same source however it is named).
pub fn recorded_arguments(
    spec: &crate::sources::SourceSpec,
    shard_size_mb: f64,
    resize: Option<u32>,
    skip_bad: bool,
) -> serde_json::Value {
    let mut v = serde_json::json!({
        "source": spec.kind,
        "shard_size_mb": shard_size_mb,
        "resize": resize,
        "skip_bad": skip_bad,
    });
    if let Some(src) = spec.src {
        let src = std::fs::canonicalize(src).unwrap_or_else(|_| src.to_path_buf());
        v["src"] = serde_json::json!(src.display().to_string());
    }
    if spec.kind == "shapes" {
        v["shapes"] = serde_json::json!({"count": spec.count, "test_count": spec.test_count, "size": spec.size, "seed": spec.seed});
    }
    if spec.kind == "random" {
        v["random"] = serde_json::json!({"count": spec.count, "size": spec.size, "seed": spec.seed, "mean": spec.mean, "std": spec.std});
    }
    v
}

/// Checks `out` before any work, deleting nothing that is not siamlab's:
///
/// - an existing file is an error;
/// - a complete shard folder is returned when it was made with the same `arguments` (then there
///   is nothing to do), an error naming the arguments that differ otherwise; with `overwrite` it
///   is left as it is (the new dataset is written beside it and replaces it once complete);
/// - a folder siamlab was writing into (its [`shard::MARKER`]) is an interrupted run: its
///   leftovers are removed;
/// - any other non-empty folder is refused: it is not siamlab's to clean.
///
/// Leftovers of an interrupted replacement (`--overwrite`) are settled first: the complete
/// dataset of the two is kept.
pub fn prepare_out(out: &Path, overwrite: bool, arguments: &serde_json::Value) -> Result<Option<Manifest>> {
    if out.exists() && !out.is_dir() {
        return Err(Error::Usage(format!("--out {}: is an existing file, not a folder", out.display())));
    }
    recover_replacement(out)?;
    if out.join(shard::MANIFEST).exists() {
        let m = Manifest::load(out)?;
        if overwrite {
            return Ok(None);
        }
        let diff = differences(&m.arguments, arguments, &["src"]);
        if !diff.is_empty() {
            return Err(Error::Usage(format!(
                "--out {}: holds a complete dataset made with other arguments ({}); use --overwrite to replace it, or another --out",
                out.display(),
                diff.join(", ")
            )));
        }
        return Ok(Some(m));
    }
    if !out.exists() || is_empty(out)? {
        return Ok(None);
    }
    if !out.join(shard::MARKER).exists() {
        return Err(Error::Usage(format!(
            "--out {}: the folder is not empty and was not written by siamlab (no {} or {}); choose an empty or new folder",
            out.display(),
            shard::MANIFEST,
            shard::MARKER
        )));
    }
    shard::clean(out)?;
    Ok(None)
}

fn is_empty(dir: &Path) -> Result<bool> {
    Ok(std::fs::read_dir(dir).at(dir)?.next().is_none())
}

/// Where a replacement of `out` is written (`.NAME.siamlab-new` beside it), and where the
/// replaced dataset waits while the two are swapped (`.NAME.siamlab-old`).
fn replacement_paths(out: &Path) -> Result<(PathBuf, PathBuf)> {
    let name = out
        .file_name()
        .ok_or_else(|| Error::Usage(format!("--out {}: needs a folder name", out.display())))?
        .to_string_lossy();
    Ok((out.with_file_name(format!(".{name}.siamlab-new")), out.with_file_name(format!(".{name}.siamlab-old"))))
}

/// Settles what an interrupted replacement left: if the swap stopped between its two renames,
/// the complete dataset (the new one if it was finished, else the old) becomes `out` again;
/// an unfinished new one is removed, as is a replaced one whose swap completed.
fn recover_replacement(out: &Path) -> Result<()> {
    let (new, old) = replacement_paths(out)?;
    let ours = |p: &Path| p.join(shard::MARKER).exists() || p.join(shard::MANIFEST).exists();
    if old.is_dir() && ours(&old) {
        if !out.exists() {
            let from = if new.join(shard::MANIFEST).exists() { &new } else { &old };
            std::fs::rename(from, out).at(out)?;
        }
        if old.exists() {
            remove_replaced(&old, out)?;
        }
    }
    if new.is_dir() && ours(&new) {
        std::fs::remove_dir_all(&new).at(&new)?;
    }
    Ok(())
}

/// Removes a replaced dataset: its shards, manifest and marker. Files that are not siamlab's
/// (a user's notes) move into the new folder when nothing there has their name, and otherwise
/// stay where they are.
fn remove_replaced(old: &Path, out: &Path) -> Result<()> {
    shard::clean(old)?;
    let marker = old.join(shard::MARKER);
    if marker.exists() {
        std::fs::remove_file(&marker).at(&marker)?;
    }
    for e in std::fs::read_dir(old).at(old)?.flatten() {
        let dest = out.join(e.file_name());
        if !dest.exists() {
            std::fs::rename(e.path(), &dest).at(&dest)?;
        }
    }
    let _ = std::fs::remove_dir(old);
    Ok(())
}

struct SplitState {
    writer: SplitWriter,
    sums: PixelSums,
    rows: u64,
    skipped: u64,
    size_range: Option<[u32; 4]>,
}

/// Reads `source` into shards under `opts.out`.
///
/// Into a new, empty or interrupted folder the shards are written in place (under temporary
/// names until complete). A complete folder being replaced (`overwrite`) stays whole until the
/// new dataset is: that is written beside it and the two are swapped at the end, so a source
/// that fails halfway loses nothing.
pub fn ingest(mut source: Box<dyn Source>, opts: &IngestOptions) -> Result<Outcome> {
    check_resize(opts.resize)?;
    if let Some(m) = prepare_out(&opts.out, opts.overwrite, &opts.arguments)? {
        if m.source != source.info().name {
            return Err(Error::Usage(format!(
                "--out {}: holds a complete {} dataset, not {}; use --overwrite to replace it, or another --out",
                opts.out.display(),
                m.source,
                source.info().name
            )));
        }
        return Ok(Outcome::AlreadyComplete(m));
    }
    let replacing = opts.out.join(shard::MANIFEST).exists();
    let dir = if replacing { replacement_paths(&opts.out)?.0 } else { opts.out.clone() };
    let created = !dir.exists();
    std::fs::create_dir_all(&dir).at(&dir)?;
    let result = write_atomic(&dir.join(shard::MARKER), shard::MARKER_TEXT.as_bytes())
        .and_then(|()| run(source.as_mut(), opts, &dir))
        .and_then(|m| {
            if replacing {
                swap_in(&dir, &opts.out)?;
            }
            Ok(m)
        });
    match result {
        Ok(m) => Ok(Outcome::Written(m)),
        Err(e) => {
            if replacing {
                let _ = std::fs::remove_dir_all(&dir);
            } else {
                let _ = shard::clean(&dir);
                // Leave the folder as it was found: gone if this run made it, else as empty as it was.
                let marker = dir.join(shard::MARKER);
                if std::fs::read_dir(&dir).map(|d| d.count() == 1).unwrap_or(false) && marker.exists() {
                    let _ = std::fs::remove_file(&marker);
                }
                if created {
                    let _ = std::fs::remove_dir(&dir);
                }
            }
            Err(e)
        }
    }
}

/// Replaces the complete dataset `out` by the complete dataset `new`: two renames (a crash
/// between them is settled by the next run, see `recover_replacement`), then the old one goes.
fn swap_in(new: &Path, out: &Path) -> Result<()> {
    let (_, old) = replacement_paths(out)?;
    std::fs::rename(out, &old).at(out)?;
    if let Err(e) = std::fs::rename(new, out) {
        let _ = std::fs::rename(&old, out);
        return Err(Error::io(out, e));
    }
    if let Some(parent) = out.parent() {
        sync_dir(if parent.as_os_str().is_empty() { Path::new(".") } else { parent });
    }
    // The new dataset is in place; should this fail, the next run finishes it.
    let _ = remove_replaced(&old, out);
    Ok(())
}

fn run(source: &mut dyn Source, opts: &IngestOptions, dir: &Path) -> Result<Manifest> {
    let info = source.info().clone();
    let cols = Columns::of(&info);
    let schema = shard::schema(&info, cols);
    let layout = Layout::with_shard_bytes(opts.shard_bytes);
    let mut splits: Vec<SplitState> = info
        .splits
        .iter()
        .map(|s| SplitState {
            writer: SplitWriter::new(dir, s, schema.clone(), cols, layout),
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
                type Prepared =
                    (Record, Option<String>, std::result::Result<crate::encode::Prepared, crate::encode::PrepareError>);
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
                        Err(err) => {
                            return Err(Error::corrupt(&rec.origin.file, rec.origin.record.clone(), err.to_string()))
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
                    if let Some(hook) = opts.on_shard {
                        for (i, tmp) in s.writer.take_closed() {
                            hook(&info.splits[rec.split], i, &tmp)?;
                        }
                    }
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
    if splits.iter().all(|s| s.rows == 0) {
        let skipped: u64 = splits.iter().map(|s| s.skipped).sum();
        let why = if skipped > 0 { format!(" ({skipped} skipped: they did not decode)") } else { String::new() };
        return Err(Error::Missing(format!("{} source: no images to write{why}", info.name)));
    }

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
    manifest.store(dir)?;
    Ok(manifest)
}
