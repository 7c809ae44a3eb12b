//! `siamlab bench ...`: throughput benchmarks on generated data.

use std::time::Instant;

use clap::Subcommand;
use siamlab_datasets::sources::Cifar;
use siamlab_datasets::{ingest, synth, IngestOptions};

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
            println!(
                "ingest cifar10 (binary layout, generated, {}): {total} images in {secs:.2}s = {:.0} images/s",
                if noise { "Gaussian noise" } else { "smooth pattern" },
                total as f64 / secs
            );
            println!(
                "peak RSS {:.0} MB (after generating the input: {rss_before:.0} MB)",
                peak_rss_mb().unwrap_or(0.0)
            );
            Ok(())
        }
    }
}
