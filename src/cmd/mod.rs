//! Command definitions and dispatch.

mod ablate;
mod bench;
mod export;
mod ingest;
mod model;
mod names;
mod progress;
mod shards;
mod store;
mod train;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Self-supervised learning on images (SimSiam) with a fast streaming data pipeline.
#[derive(Debug, Parser)]
#[command(name = "siamlab", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process; boxing the large variants would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Convert a source dataset (archive or folder) into Parquet shards with a manifest.
    Ingest(ingest::IngestArgs),
    /// Check every shard against the manifest (sha256, rows); optionally decode every image.
    Verify {
        /// Shard folder (holds manifest.json), or its URL (s3://bucket/prefix, gs://, az://,
        /// http(s)://): shards are downloaded into the cache and checked.
        dir: PathBuf,
        /// Also decode every image.
        #[arg(long)]
        decode: bool,
        #[command(flatten)]
        cache: store::CacheArgs,
    },
    /// Counts per split and class, image sizes, and an optional contact sheet PNG.
    Inspect {
        /// Shard folder (holds manifest.json), or its URL (s3://bucket/prefix, …).
        dir: PathBuf,
        /// Only this split.
        #[arg(long)]
        split: Option<String>,
        /// Write a contact sheet (PNG) here: samples spread evenly over the split, each with its
        /// class name (or CelebA attributes) under it; small images enlarged to at least 96 px.
        #[arg(long)]
        grid: Option<PathBuf>,
        #[command(flatten)]
        sheet: shards::SheetArgs,
        #[command(flatten)]
        cache: store::CacheArgs,
    },
    /// Backbones: configuration at a glance.
    #[command(subcommand)]
    Model(model::ModelCommand),
    /// Write a run's backbone under torchvision / timm names, loadable in PyTorch with
    /// `load_state_dict(..., strict=True)`.
    Export(export::ExportArgs),
    /// Pretrain (SimSiam) or finetune a backbone.
    #[command(subcommand)]
    Train(train::TrainCommand),
    /// Evaluate the best model of a finetuning run on a split.
    Eval {
        /// Run folder of `siamlab train finetune`.
        run: PathBuf,
        /// Split to evaluate.
        #[arg(long, default_value = "test")]
        split: String,
        /// Another shard folder (or URL) with the same classes [default: the run's].
        #[arg(long)]
        data: Option<PathBuf>,
        /// Pipeline worker threads.
        #[arg(long)]
        workers: Option<usize>,
        /// cpu, cuda or cuda:N.
        #[arg(long, default_value = "cpu")]
        device: siamlab_trainer::DeviceSpec,
        /// Print all metrics as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        cache: store::CacheArgs,
    },
    /// Run an experiment grid (ingest → pretrain → finetune) and write its tables.
    Ablate {
        /// Experiment file (see experiments/).
        file: PathBuf,
        /// Work folder [default: runs/<experiment name>].
        #[arg(long)]
        work: Option<PathBuf>,
        /// List the steps with their epochs and estimated time on a 2-core CPU; run nothing.
        #[arg(long)]
        dry_run: bool,
        /// No progress bars.
        #[arg(long, short)]
        quiet: bool,
        /// Where every training step computes: cpu, cuda or cuda:N.
        #[arg(long, default_value = "cpu")]
        device: siamlab_trainer::DeviceSpec,
        /// Keep the datasets under this folder or URL (s3://bucket/prefix, …) instead of
        /// WORK/data: ingested there, read from there.
        #[arg(long)]
        data: Option<String>,
        #[command(flatten)]
        cache: store::CacheArgs,
    },
    /// A few minutes on any machine: generate data, pretrain, finetune, print Table 1 in small.
    Demo {
        /// Work folder.
        #[arg(long, default_value = "runs/demo")]
        work: PathBuf,
        /// Seeds (comma-separated) [default: 0].
        #[arg(long, value_delimiter = ',')]
        seeds: Option<Vec<u64>>,
        /// No progress bars.
        #[arg(long, short)]
        quiet: bool,
        /// Where to train: cpu, cuda or cuda:N.
        #[arg(long, default_value = "cpu")]
        device: siamlab_trainer::DeviceSpec,
    },
    /// Benchmarks.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// A run at a glance: its configuration, best and last metrics, wall time, throughput and
    /// where its plots are (from what the run folder holds; works on unfinished runs too).
    Show {
        /// Run folder of `siamlab train pretrain` or `siamlab train finetune`.
        run: PathBuf,
    },
    /// Overlay the curves of several runs (seeds, ablation cells) in one PNG: SimSiam loss and
    /// kNN accuracy of pretraining runs, validation accuracy and losses of finetuning runs.
    Plot {
        /// Run folders.
        #[arg(required = true)]
        runs: Vec<PathBuf>,
        /// The PNG to write.
        #[arg(long)]
        out: PathBuf,
        /// Title [default: the number of runs].
        #[arg(long)]
        title: Option<String>,
    },
}

/// Runs the parsed command.
pub fn run(cli: Cli, world: &siamlab_world::World) -> anyhow::Result<()> {
    if world.size() > 1 && !matches!(cli.command, Command::Train(_) | Command::Eval { .. }) {
        anyhow::bail!(
            "launched as {} ranks: only `siamlab train` and `siamlab eval` run on several processes; run this command once",
            world.size()
        );
    }
    if matches!(
        cli.command,
        Command::Train(_)
            | Command::Ablate { .. }
            | Command::Demo { .. }
            | Command::Eval { .. }
            | Command::Bench(bench::BenchCommand::Simsiam { .. } | bench::BenchCommand::Finetune { .. })
    ) {
        // The model allocates and frees tens of MB per op and step: keep that memory in the
        // process (before any thread starts). Ingest and the pipeline keep glibc's defaults.
        siamlab_model::memory::retain_freed_memory();
    }
    match cli.command {
        Command::Ingest(args) => ingest::run(args),
        Command::Train(cmd) => train::run(cmd, world),
        Command::Ablate { file, work, dry_run, quiet, device, data, cache } => {
            ablate::ablate(&file, work, dry_run, quiet, device, data.map(|d| (d, cache.options())))
        }
        Command::Demo { work, seeds, quiet, device } => ablate::demo(work, seeds, quiet, device),
        Command::Eval { run, split, data, workers, device, json, cache } => {
            train::eval(world, run, split, data, workers, device, json, &cache.options())
        }
        Command::Verify { dir, decode, cache } => shards::verify(&dir, decode, &cache.options()),
        Command::Inspect { dir, split, grid, sheet, cache } => {
            shards::inspect(&dir, split.as_deref(), grid.as_deref(), sheet, &cache.options())
        }
        Command::Model(m) => model::run(m),
        Command::Export(args) => export::run(args),
        Command::Bench(b) => bench::run(b),
        Command::Show { run } => show(&run),
        Command::Plot { runs, out, title } => {
            let title = title.unwrap_or_else(|| format!("{} runs", runs.len()));
            siamlab_trainer::plots::write_overlay(&runs, &title, &out)?;
            outln!("wrote {}", out.display());
            Ok(())
        }
    }
}

/// `siamlab show RUN`.
fn show(run: &std::path::Path) -> anyhow::Result<()> {
    for line in siamlab_trainer::overview::Overview::read(run)?.lines() {
        outln!("{line}");
    }
    Ok(())
}
