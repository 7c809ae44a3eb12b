//! Writes one split's rows into Parquet shards under temporary names, then renames them to
//! `part-NNNNN-of-MMMMM.parquet` once the count is known. Row groups and shards are cut by
//! encoded-image bytes, so the layout is a pure function of the rows.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BinaryArray, FixedSizeListArray, Int32Array, Int64Array, Int8Array, RecordBatch, StringArray, StructArray,
};
use arrow::buffer::NullBuffer;
use arrow::datatypes::SchemaRef;
use parquet::arrow::ArrowWriter;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use sha2::{Digest, Sha256};

use super::manifest::ShardInfo;
use super::schema::{attribute_field, image_fields, Columns};
use crate::error::{sync_dir, Error, IoContext, Result};
use crate::record::NUM_ATTRIBUTES;

/// One encoded row, ready for a shard.
#[derive(Debug, Clone)]
pub struct Row {
    /// Position in the source split.
    pub index: i64,
    /// Class id.
    pub label: Option<i64>,
    /// Coarse class id.
    pub coarse_label: Option<i64>,
    /// 0/1 attributes.
    pub attributes: Option<[i8; NUM_ATTRIBUTES]>,
    /// Encoded image bytes (PNG, or the source file's own bytes).
    pub bytes: Vec<u8>,
    /// Source file name, when there is one.
    pub path: Option<String>,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
}

/// Size targets for shards and row groups.
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    /// Close a shard once it holds at least this many bytes.
    pub shard_bytes: u64,
    /// Close a row group once it holds at least this many bytes.
    pub row_group_bytes: u64,
}

impl Layout {
    /// Shards of about `shard_bytes`, row groups of `min(shard_bytes / 4, 8 MiB)` (at least 1 byte).
    pub fn with_shard_bytes(shard_bytes: u64) -> Self {
        let shard_bytes = shard_bytes.max(1);
        Layout { shard_bytes, row_group_bytes: (shard_bytes / 4).clamp(1, 8 << 20) }
    }
}

struct HashWriter {
    file: BufWriter<File>,
    hasher: Sha256,
    bytes: u64,
}

impl Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

struct Open {
    writer: ArrowWriter<HashWriter>,
    tmp: PathBuf,
    rows: u64,
    row_groups: u64,
    bytes: u64,
}

struct Done {
    tmp: PathBuf,
    rows: u64,
    row_groups: u64,
    bytes: u64,
    sha256: String,
}

/// Writes the shards of one split.
pub struct SplitWriter {
    out: PathBuf,
    split: String,
    schema: SchemaRef,
    cols: Columns,
    layout: Layout,
    open: Option<Open>,
    pending: Vec<Row>,
    pending_bytes: u64,
    done: Vec<Done>,
    closed: Vec<(usize, PathBuf)>,
}

/// Name of shard `i` of `n` of `split`, relative to the shard folder.
pub fn shard_name(split: &str, i: usize, n: usize) -> String {
    format!("{split}/part-{i:05}-of-{n:05}.parquet")
}

fn props() -> WriterProperties {
    WriterProperties::builder()
        .set_dictionary_enabled(false)
        .set_max_row_group_row_count(Some(usize::MAX))
        .set_column_statistics_enabled(ColumnPath::new(vec!["image".into(), "bytes".into()]), EnabledStatistics::None)
        .set_column_statistics_enabled(ColumnPath::new(vec!["image".into(), "path".into()]), EnabledStatistics::None)
        .build()
}

impl SplitWriter {
    /// A writer for `split` under the shard folder `out`.
    pub fn new(out: &Path, split: &str, schema: SchemaRef, cols: Columns, layout: Layout) -> Self {
        SplitWriter {
            out: out.to_path_buf(),
            split: split.into(),
            schema,
            cols,
            layout,
            open: None,
            pending: Vec::new(),
            pending_bytes: 0,
            done: Vec::new(),
            closed: Vec::new(),
        }
    }

    /// Adds a row; may complete a row group or a shard.
    pub fn push(&mut self, row: Row) -> Result<()> {
        self.pending_bytes += row.bytes.len() as u64 + 64;
        self.pending.push(row);
        if self.pending_bytes >= self.layout.row_group_bytes {
            self.flush_row_group()?;
        }
        Ok(())
    }

    fn flush_row_group(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        if self.open.is_none() {
            let dir = self.out.join(&self.split);
            std::fs::create_dir_all(&dir).at(&dir)?;
            let tmp = dir.join(format!(".part-{:05}.parquet.tmp", self.done.len()));
            let file = File::create(&tmp).at(&tmp)?;
            let sink = HashWriter { file: BufWriter::with_capacity(1 << 20, file), hasher: Sha256::new(), bytes: 0 };
            let writer =
                ArrowWriter::try_new(sink, self.schema.clone(), Some(props())).map_err(|e| Error::shard(&tmp, e))?;
            self.open = Some(Open { writer, tmp, rows: 0, row_groups: 0, bytes: 0 });
        }
        let batch = to_batch(&self.schema, self.cols, &self.pending)?;
        let open = self.open.as_mut().expect("opened above");
        open.writer.write(&batch).map_err(|e| Error::shard(&open.tmp, e))?;
        open.writer.flush().map_err(|e| Error::shard(&open.tmp, e))?;
        open.rows += self.pending.len() as u64;
        open.row_groups += 1;
        open.bytes += self.pending_bytes;
        self.pending.clear();
        self.pending_bytes = 0;
        if open.bytes >= self.layout.shard_bytes {
            self.close_shard()?;
        }
        Ok(())
    }

    fn close_shard(&mut self) -> Result<()> {
        let Some(open) = self.open.take() else {
            return Ok(());
        };
        let mut sink = open.writer.into_inner().map_err(|e| Error::shard(&open.tmp, e))?;
        sink.file.flush().at(&open.tmp)?;
        let file = sink.file.into_inner().map_err(|e| Error::io(&open.tmp, e.into_error()))?;
        file.sync_all().at(&open.tmp)?;
        let sha256 = crate::digest::hex(&sink.hasher.finalize());
        self.closed.push((self.done.len(), open.tmp.clone()));
        self.done.push(Done { tmp: open.tmp, rows: open.rows, row_groups: open.row_groups, bytes: sink.bytes, sha256 });
        Ok(())
    }

    /// Shards completed since the last call: their number in the split and their file (under
    /// its temporary name until [`SplitWriter::finish`] renames it; the shard that `finish`
    /// closes is not reported here).
    pub fn take_closed(&mut self) -> Vec<(usize, PathBuf)> {
        std::mem::take(&mut self.closed)
    }

    /// Writes what is pending, closes the last shard and renames every shard to its final name.
    pub fn finish(mut self) -> Result<Vec<ShardInfo>> {
        self.flush_row_group()?;
        self.close_shard()?;
        let n = self.done.len();
        let mut out = Vec::with_capacity(n);
        for (i, d) in self.done.into_iter().enumerate() {
            let name = shard_name(&self.split, i, n);
            let dest = self.out.join(&name);
            std::fs::rename(&d.tmp, &dest).at(&dest)?;
            out.push(ShardInfo {
                path: name,
                rows: d.rows,
                row_groups: d.row_groups,
                bytes: d.bytes,
                sha256: d.sha256,
            });
        }
        sync_dir(&self.out.join(&self.split));
        Ok(out)
    }
}

fn to_batch(schema: &SchemaRef, cols: Columns, rows: &[Row]) -> Result<RecordBatch> {
    let image = StructArray::new(
        image_fields(),
        vec![
            Arc::new(BinaryArray::from_iter_values(rows.iter().map(|r| &r.bytes))) as ArrayRef,
            Arc::new(rows.iter().map(|r| r.path.as_deref()).collect::<StringArray>()),
        ],
        None,
    );
    let mut arrays: Vec<ArrayRef> = vec![Arc::new(image)];
    if cols.label {
        arrays.push(Arc::new(rows.iter().map(|r| r.label).collect::<Int64Array>()));
    }
    if cols.coarse_label {
        arrays.push(Arc::new(rows.iter().map(|r| r.coarse_label).collect::<Int64Array>()));
    }
    if cols.attributes {
        let values: Int8Array =
            rows.iter().flat_map(|r| r.attributes.unwrap_or([0; NUM_ATTRIBUTES])).map(Some).collect();
        let nulls = NullBuffer::from(rows.iter().map(|r| r.attributes.is_some()).collect::<Vec<_>>());
        let nulls = (nulls.null_count() > 0).then_some(nulls);
        arrays.push(Arc::new(FixedSizeListArray::new(
            attribute_field(),
            NUM_ATTRIBUTES as i32,
            Arc::new(values),
            nulls,
        )));
    }
    arrays.push(Arc::new(rows.iter().map(|r| r.index).collect::<Int64Array>()));
    arrays.push(Arc::new(rows.iter().map(|r| r.width as i32).collect::<Int32Array>()));
    arrays.push(Arc::new(rows.iter().map(|r| r.height as i32).collect::<Int32Array>()));
    RecordBatch::try_new(schema.clone(), arrays)
        .map_err(|e| Error::Shard { file: "record batch".into(), msg: e.to_string() })
}

/// Removes what an interrupted or failed ingest may have left in `out`: the manifest, shards
/// and temporary shard files in each split folder, and split folders left empty. Other files
/// are not touched.
pub fn clean(out: &Path) -> Result<()> {
    let manifest = out.join(super::manifest::MANIFEST);
    if manifest.exists() {
        std::fs::remove_file(&manifest).at(&manifest)?;
    }
    let Ok(entries) = std::fs::read_dir(out) else {
        return Ok(());
    };
    for e in entries.flatten() {
        let dir = e.path();
        if !dir.is_dir() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') && name.ends_with(".tmp") {
                std::fs::remove_file(&dir).at(&dir)?;
            }
            continue;
        }
        for f in std::fs::read_dir(&dir).at(&dir)?.flatten() {
            let name = f.file_name().to_string_lossy().into_owned();
            let ours = (name.starts_with("part-") && name.ends_with(".parquet"))
                || (name.starts_with(".part-") && name.ends_with(".tmp"));
            if ours {
                std::fs::remove_file(f.path()).at(f.path())?;
            }
        }
        if std::fs::read_dir(&dir).map(|mut d| d.next().is_none()).unwrap_or(false) {
            let _ = std::fs::remove_dir(&dir);
        }
    }
    Ok(())
}
