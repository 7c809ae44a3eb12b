//! Reads shards back: by row group, with typed access to each column.

use std::fs::File;
use std::path::{Path, PathBuf};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Int32Type, Int64Type, Int8Type};
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ParquetRecordBatchReaderBuilder};
use parquet::arrow::ProjectionMask;

use crate::error::{Error, IoContext, Result};

/// An open shard file.
pub struct ShardReader {
    path: PathBuf,
    meta: ArrowReaderMetadata,
}

impl ShardReader {
    /// Opens `path` and reads its footer.
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).at(path)?;
        let meta = ArrowReaderMetadata::load(&file, Default::default())
            .map_err(|e| Error::shard(path, format!("cannot read the Parquet footer (damaged shard?): {e}")))?;
        Ok(ShardReader { path: path.to_path_buf(), meta })
    }

    /// Number of rows (from the footer).
    pub fn rows(&self) -> u64 {
        self.meta.metadata().file_metadata().num_rows() as u64
    }

    /// Number of row groups.
    pub fn row_groups(&self) -> usize {
        self.meta.metadata().num_row_groups()
    }

    /// Rows in row group `i`.
    pub fn row_group_rows(&self, i: usize) -> u64 {
        self.meta.metadata().row_group(i).num_rows() as u64
    }

    /// Reads row group `i`, all columns, or only those named in `columns`.
    pub fn read_row_group(&self, i: usize, columns: Option<&[&str]>) -> Result<ShardBatch> {
        let file = File::open(&self.path).at(&self.path)?;
        let mut b = ParquetRecordBatchReaderBuilder::new_with_metadata(file, self.meta.clone());
        if let Some(cols) = columns {
            let schema = b.parquet_schema().clone();
            let roots: Vec<usize> = b
                .schema()
                .fields()
                .iter()
                .enumerate()
                .filter(|(_, f)| cols.contains(&f.name().as_str()))
                .map(|(i, _)| i)
                .collect();
            b = b.with_projection(ProjectionMask::roots(&schema, roots));
        }
        let rows = self.row_group_rows(i) as usize;
        let reader =
            b.with_row_groups(vec![i]).with_batch_size(rows.max(1)).build().map_err(|e| Error::shard(&self.path, e))?;
        let batches: Vec<RecordBatch> =
            reader.collect::<std::result::Result<_, _>>().map_err(|e| Error::shard(&self.path, e))?;
        let batch = match batches.len() {
            0 => RecordBatch::new_empty(self.meta.schema().clone()),
            1 => batches.into_iter().next().expect("one"),
            _ => arrow::compute::concat_batches(&batches[0].schema(), &batches)
                .map_err(|e| Error::shard(&self.path, e))?,
        };
        ShardBatch::new(batch, &self.path)
    }
}

/// A decoded row group with typed column access.
pub struct ShardBatch {
    batch: RecordBatch,
}

impl ShardBatch {
    fn new(batch: RecordBatch, path: &Path) -> Result<Self> {
        if let Some(c) = batch.column_by_name("image") {
            if c.as_struct_opt().is_none() {
                return Err(Error::shard(path, "column 'image' is not a struct<bytes, path>"));
            }
        }
        Ok(ShardBatch { batch })
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.batch.num_rows()
    }

    /// True when there are no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The underlying Arrow batch.
    pub fn batch(&self) -> &RecordBatch {
        &self.batch
    }

    /// Encoded image bytes of row `i` (empty when null or the column was not read).
    pub fn image_bytes(&self, i: usize) -> &[u8] {
        let Some(s) = self.batch.column_by_name("image").and_then(|c| c.as_struct_opt()) else {
            return &[];
        };
        let b = s.column(0).as_binary::<i32>();
        if b.is_null(i) {
            &[]
        } else {
            b.value(i)
        }
    }

    /// Source path of row `i`, if stored.
    pub fn image_path(&self, i: usize) -> Option<&str> {
        let s = self.batch.column_by_name("image")?.as_struct_opt()?;
        let p = s.column(1).as_string::<i32>();
        (!p.is_null(i)).then(|| p.value(i))
    }

    fn i64_col(&self, name: &str, i: usize) -> Option<i64> {
        let c = self.batch.column_by_name(name)?.as_primitive_opt::<Int64Type>()?;
        (!c.is_null(i)).then(|| c.value(i))
    }

    fn i32_col(&self, name: &str, i: usize) -> Option<i32> {
        let c = self.batch.column_by_name(name)?.as_primitive_opt::<Int32Type>()?;
        (!c.is_null(i)).then(|| c.value(i))
    }

    /// Class id of row `i`.
    pub fn label(&self, i: usize) -> Option<i64> {
        self.i64_col("label", i)
    }

    /// Coarse class id of row `i`.
    pub fn coarse_label(&self, i: usize) -> Option<i64> {
        self.i64_col("coarse_label", i)
    }

    /// Source index of row `i`.
    pub fn index(&self, i: usize) -> Option<i64> {
        self.i64_col("index", i)
    }

    /// Stored width and height of row `i`.
    pub fn size(&self, i: usize) -> Option<(u32, u32)> {
        Some((self.i32_col("width", i)? as u32, self.i32_col("height", i)? as u32))
    }

    /// 0/1 attributes of row `i`.
    pub fn attributes(&self, i: usize) -> Option<Vec<i8>> {
        let l = self.batch.column_by_name("attributes")?.as_fixed_size_list_opt()?;
        if l.is_null(i) {
            return None;
        }
        let v = l.value(i);
        Some(v.as_primitive::<Int8Type>().values().to_vec())
    }
}
