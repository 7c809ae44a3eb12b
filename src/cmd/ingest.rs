//! `siamlab ingest`.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::bail;
use clap::Args;
use siamlab_datasets::sources::{RandomSpec, ShapesSpec, SourceSpec};
use siamlab_datasets::{IngestOptions, IngestRequest, Outcome};

#[derive(Debug, Args)]
pub struct IngestArgs {
    /// Source dataset kind (`-`/`_` and case do not matter: CIFAR-10 is cifar10).
    #[arg(value_parser = super::names::SOURCE)]
    source: String,
    /// Archive file or folder holding the source (not used by `random`).
    #[arg(long)]
    src: Option<PathBuf>,
    /// Output shard folder, or a URL (s3://bucket/prefix, gs://…, az://…): shards are written
    /// locally, uploaded as each is finished, and the manifest last.
    #[arg(long)]
    out: PathBuf,
    /// Target shard size in MB.
    #[arg(long, default_value_t = 256.0)]
    shard_size_mb: f64,
    /// Resize images so that the shorter side has this many pixels, 1..=8192 (default: keep).
    #[arg(long)]
    resize: Option<u32>,
    /// Worker threads (default: all cores). The output does not depend on it.
    #[arg(long)]
    jobs: Option<usize>,
    /// Replace an existing complete output (the old one stays whole until the new one is complete).
    #[arg(long)]
    overwrite: bool,
    /// File sources: skip images that do not decode (counted in the manifest) instead of failing.
    #[arg(long)]
    skip_bad: bool,
    /// shapes: number of test images.
    #[arg(long, default_value_t = ShapesSpec::default().test)]
    test_count: u64,
    /// random / shapes: number of (training) images.
    #[arg(long, default_value_t = RandomSpec::default().count)]
    count: u64,
    /// random / shapes: image side in pixels.
    #[arg(long, default_value_t = RandomSpec::default().size)]
    size: u32,
    /// random / shapes: seed.
    #[arg(long, default_value_t = RandomSpec::default().seed)]
    seed: u64,
    /// random: Gaussian mean (0..255 scale).
    #[arg(long, default_value_t = RandomSpec::default().mean)]
    mean: f64,
    /// random: Gaussian standard deviation (0..255 scale).
    #[arg(long, default_value_t = RandomSpec::default().std)]
    std: f64,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
}

fn spec(a: &IngestArgs) -> SourceSpec<'_> {
    SourceSpec {
        kind: &a.source,
        src: a.src.as_deref(),
        count: Some(a.count),
        test_count: Some(a.test_count),
        size: Some(a.size),
        seed: Some(a.seed),
        mean: Some(a.mean),
        std: Some(a.std),
    }
}

fn arguments(a: &IngestArgs) -> serde_json::Value {
    siamlab_datasets::ingest::recorded_arguments(&spec(a), a.shard_size_mb, a.resize, a.skip_bad)
}

pub fn run(a: IngestArgs) -> anyhow::Result<()> {
    if !(a.shard_size_mb > 0.0 && a.shard_size_mb.is_finite()) {
        bail!("--shard-size-mb must be a positive number");
    }
    let start = Instant::now();
    let pb = super::progress::bar(None, a.quiet, "ingest");
    let progress = |done: u64, _total: Option<u64>| pb.set_position(done);
    let request = IngestRequest {
        spec: spec(&a),
        options: IngestOptions {
            out: a.out.clone(),
            shard_bytes: (a.shard_size_mb * 1024.0 * 1024.0) as u64,
            resize: a.resize,
            jobs: a.jobs.unwrap_or(0),
            overwrite: a.overwrite,
            skip_bad: a.skip_bad,
            arguments: arguments(&a),
            progress: Some(&progress),
            on_shard: None,
        },
    };
    request.check()?;
    let out = request.location()?;
    if let Some(m) = request.already_complete()? {
        pb.finish_and_clear();
        outln!(
            "{out} is already complete ({} source, {} rows); use --overwrite to redo it",
            m.source,
            m.splits.values().map(|s| s.rows).sum::<u64>()
        );
        return Ok(());
    }
    let source = request.open()?;
    if let Some(total) = source.info().total {
        pb.set_length(total);
    }
    let outcome = request.ingest(source)?;
    pb.finish_and_clear();
    let m = outcome.manifest();
    if let Outcome::AlreadyComplete(_) = outcome {
        outln!("{out} is already complete; use --overwrite to redo it");
        return Ok(());
    }
    outln!("wrote {out} ({}) in {:.2}s", m.source, start.elapsed().as_secs_f64());
    for name in &m.split_order {
        let s = &m.splits[name];
        let skipped = if s.skipped > 0 { format!(", {} skipped (did not decode)", s.skipped) } else { String::new() };
        outln!("  {name}: {} rows in {} shard(s){skipped}", s.rows, s.shards.len());
    }
    if let (Some(split), Some(st)) = (&m.stats_split, &m.stats) {
        outln!("  {split} mean {:.4?} std {:.4?}", st.mean, st.std);
    }
    Ok(())
}
