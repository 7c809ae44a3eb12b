//! Writes every batch of one epoch as NumPy `.npy` files: the reference the Python package's
//! tests compare `siamlab.Pipeline` against, bit for bit (`python/tests/test_same_as_rust.py`).
//!
//! ```sh
//! cargo run -p siamlab-pipeline --example batches_npy -- SHARD_DIR OUT_DIR \
//!     [--split train] [--views simsiam] [--n-views 2] [--batch-size 256] [--workers 2] \
//!     [--seed 0] [--epoch 0] [--rank 0] [--world 1] [--drop-last] [--image-size N] [--start-batch K]
//!     [--shuffle-by row-groups|shards]
//! ```
//!
//! Batch `b` gives `OUT_DIR/b{b}_v{v}.npy` (`[B, 3, H, W]` f32 per view), `b{b}_labels.npy`,
//! `b{b}_indices.npy` (i64) and, when the dataset has attributes, `b{b}_attributes.npy` (i8);
//! `--start-batch K` resumes at batch K (a `PipelineState` with `next_sample = K × B`).

use std::io::Write;
use std::path::{Path, PathBuf};

use siamlab_pipeline::{Pipeline, PipelineState};

/// Writes a C-order `.npy` (format 1.0) of `shape` holding `data` (little-endian `descr`).
fn write_npy(path: &Path, descr: &str, shape: &[usize], data: &[u8]) -> std::io::Result<()> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape = if dims.len() == 1 { format!("({},)", dims[0]) } else { format!("({})", dims.join(", ")) };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    let total = 10 + header.len() + 1;
    header.push_str(&" ".repeat(total.div_ceil(64) * 64 - total));
    header.push('\n');
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    f.write_all(b"\x93NUMPY\x01\x00")?;
    f.write_all(&(header.len() as u16).to_le_bytes())?;
    f.write_all(header.as_bytes())?;
    f.write_all(data)?;
    f.flush()
}

fn le<T: Copy, const N: usize>(xs: &[T], bytes: impl Fn(T) -> [u8; N]) -> Vec<u8> {
    xs.iter().flat_map(|&x| bytes(x)).collect()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: batches_npy SHARD_DIR OUT_DIR [--option value ...] (see the file's doc)";
    let dir = PathBuf::from(args.next().ok_or(usage)?);
    let out = PathBuf::from(args.next().ok_or(usage)?);
    let (mut split, mut recipe, mut n_views, mut batch, mut workers) =
        ("train".to_string(), "simsiam".to_string(), 2, 256, 2);
    let (mut seed, mut epoch, mut rank, mut world, mut drop_last) = (0u64, 0u64, 0usize, 1usize, false);
    let (mut image_size, mut start_batch) = (None, 0u64);
    let mut shuffle_by = siamlab_pipeline::ShuffleBy::RowGroups;
    while let Some(flag) = args.next() {
        if flag == "--drop-last" {
            drop_last = true;
            continue;
        }
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--split" => split = value,
            "--views" => recipe = value,
            "--n-views" => n_views = value.parse()?,
            "--batch-size" => batch = value.parse()?,
            "--workers" => workers = value.parse()?,
            "--seed" => seed = value.parse()?,
            "--epoch" => epoch = value.parse()?,
            "--rank" => rank = value.parse()?,
            "--world" => world = value.parse()?,
            "--image-size" => image_size = Some(value.parse()?),
            "--start-batch" => start_batch = value.parse()?,
            "--shuffle-by" => shuffle_by = value.parse()?,
            _ => return Err(format!("unknown option {flag}; {usage}").into()),
        }
    }
    let mut builder = Pipeline::builder(&dir)
        .split(&split)
        .views(&recipe, n_views)
        .batch_size(batch)
        .workers(workers)
        .shard(rank, world)
        .drop_last(drop_last)
        .shuffle_by(shuffle_by)
        .resume(PipelineState { epoch, next_sample: start_batch * batch as u64, seed });
    if let Some(s) = image_size {
        builder = builder.image_size(s);
    }
    std::fs::create_dir_all(&out)?;
    for (k, b) in builder.build()?.enumerate() {
        let b = b?;
        let k = start_batch as usize + k;
        for v in 0..b.num_views() {
            write_npy(&out.join(format!("b{k}_v{v}.npy")), "<f4", &b.shape, &le(b.view(v), f32::to_le_bytes))?;
        }
        write_npy(&out.join(format!("b{k}_labels.npy")), "<i8", &[b.len()], &le(b.labels(), i64::to_le_bytes))?;
        write_npy(&out.join(format!("b{k}_indices.npy")), "<i8", &[b.len()], &le(b.indices(), i64::to_le_bytes))?;
        if b.num_attributes > 0 {
            let shape = [b.len(), b.num_attributes];
            write_npy(&out.join(format!("b{k}_attributes.npy")), "|i1", &shape, &le(b.attributes(), i8::to_le_bytes))?;
        }
    }
    Ok(())
}
