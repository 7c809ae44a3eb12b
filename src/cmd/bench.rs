//! `siamlab bench ...`: throughput benchmarks on generated data.

use std::path::PathBuf;
use std::time::Instant;

use clap::Subcommand;
use siamlab_datasets::sources::{Cifar, Random, RandomSpec};
use siamlab_datasets::{ingest, synth, IngestOptions};
use siamlab_pipeline::Pipeline;

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Ingest N generated images in the CIFAR-10 binary layout and report images/s and peak RSS.
    Ingest {
        /// Images in the train split (split over 5 files); the test split gets N/6.
        #[arg(long, default_value_t = 60_000)]
        count: u64,
        /// Worker threads (default: all cores).
        #[arg(long)]
        jobs: Option<usize>,
        /// Fill the images with Gaussian noise (hard to compress) instead of a smooth pattern.
        #[arg(long)]
        noise: bool,
    },
    /// Multi-view pipeline throughput from shards: pairs/s, per-stage times, the bottleneck.
    Pipeline {
        /// Shard folder (default: `--count` generated noise images of `--size` px in a temp folder).
        #[arg(long)]
        data: Option<PathBuf>,
        /// Split to read.
        #[arg(long, default_value = "train")]
        split: String,
        /// Augmentation recipe: simsiam, finetune or eval.
        #[arg(long, default_value = "simsiam")]
        recipe: String,
        /// Views per sample.
        #[arg(long, default_value_t = 2)]
        views: usize,
        /// Generated images (without --data).
        #[arg(long, default_value_t = 10_000)]
        count: u64,
        /// Generated image side, and the output size (without --data).
        #[arg(long, default_value_t = 32)]
        size: u32,
        /// Batch size.
        #[arg(long, default_value_t = 256)]
        batch: usize,
        /// Worker threads (default: all cores).
        #[arg(long)]
        workers: Option<usize>,
        /// Epochs to run (each reshuffles).
        #[arg(long, default_value_t = 2)]
        epochs: u64,
    },
}

/// Peak resident set size of this process in MB (Linux), from /proc/self/status.
pub fn peak_rss_mb() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

pub fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Pipeline { data, split, recipe, views, count, size, batch, workers, epochs } => {
            let tmp = tempfile::tempdir()?;
            let dir = match data {
                Some(d) => d,
                None => {
                    let out = tmp.path().join("shards");
                    let spec = RandomSpec { count, size, ..RandomSpec::default() };
                    ingest(Box::new(Random::new(spec)?), &IngestOptions::new(&out))?;
                    outln!("generated {count} noise images of {size}x{size} px (PNG shards)");
                    out
                }
            };
            let workers = workers.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
            let mut total = (0u64, 0f64);
            for epoch in 0..epochs {
                let mut b = Pipeline::builder(&dir).split(&split).epoch(epoch).views(&recipe, views).batch_size(batch);
                if size > 0 && tmp.path().join("shards").exists() {
                    b = b.image_size(size);
                }
                let mut p = b.workers(workers).build()?;
                let pb = super::progress::bar(Some(p.batches() as u64), false, &format!("epoch {epoch}"));
                let start = Instant::now();
                let mut n = 0u64;
                let mut fill = 0usize;
                let mut batches = 0usize;
                while let Some(batch) = p.next_blocking() {
                    n += batch?.len() as u64;
                    fill += p.queue_fill();
                    batches += 1;
                    pb.inc(1);
                }
                pb.finish_and_clear();
                let secs = start.elapsed().as_secs_f64();
                let st = p.stats();
                outln!(
                    "epoch {epoch}: {n} samples × {views} views in {secs:.2}s = {:.0} samples/s; mean prefetch fill {:.1}",
                    n as f64 / secs,
                    fill as f64 / batches.max(1) as f64
                );
                outln!(
                    "  read {:.2}s ({} row groups), decode {:.2}s, augment {:.2}s, workers idle {:.2}s / blocked {:.2}s ({} workers)",
                    st.read_s, st.read_groups, st.decode_s, st.augment_s, st.worker_idle_s, st.worker_blocked_s, st.workers
                );
                outln!("  bottleneck: {}", st.bottleneck());
                if epoch > 0 || epochs == 1 {
                    total.0 += n;
                    total.1 += secs;
                }
            }
            outln!(
                "{recipe}: {:.0} samples/s ({views} views each) over {} epoch(s){}; peak RSS {:.0} MB",
                total.0 as f64 / total.1.max(1e-9),
                if epochs > 1 { epochs - 1 } else { 1 },
                if epochs > 1 { " after the first" } else { "" },
                peak_rss_mb().unwrap_or(0.0)
            );
            Ok(())
        }
        BenchCommand::Ingest { count, jobs, noise } => {
            let tmp = tempfile::tempdir()?;
            let test = count / 6;
            let train_per_file = (count - test) / 5;
            let total = train_per_file * 5 + test;
            let src = synth::cifar_binary(tmp.path(), train_per_file, test, false)?;
            if noise {
                synth::fill_cifar_with_noise(&src)?;
            }
            let rss_before = peak_rss_mb().unwrap_or(0.0);
            let start = Instant::now();
            let mut opts = IngestOptions::new(tmp.path().join("shards"));
            opts.jobs = jobs.unwrap_or(0);
            ingest(Box::new(Cifar::open(&src, false)?), &opts)?;
            let secs = start.elapsed().as_secs_f64();
            outln!(
                "ingest cifar10 (binary layout, generated, {}): {total} images in {secs:.2}s = {:.0} images/s",
                if noise { "Gaussian noise" } else { "smooth pattern" },
                total as f64 / secs
            );
            outln!("peak RSS {:.0} MB (after generating the input: {rss_before:.0} MB)", peak_rss_mb().unwrap_or(0.0));
            Ok(())
        }
    }
}
