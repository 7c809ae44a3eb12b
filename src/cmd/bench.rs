//! `siamlab bench ...`: throughput benchmarks on generated data.

use std::path::PathBuf;
use std::time::Instant;

use clap::Subcommand;
use siamlab_datasets::sources::{Cifar, Random, RandomSpec};
use siamlab_datasets::{ingest, synth, IngestOptions};
use siamlab_pipeline::bench::PipelineBench;
use siamlab_pipeline::ShuffleBy;
use siamlab_trainer::device::check_ops;
use siamlab_trainer::speed::{FinetuneBench, SimSiamBench};
use siamlab_trainer::DeviceSpec;

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
    /// This machine's fp32 FMA peak in GFLOP/s, measured on all threads (what benches/run.sh
    /// divides by for its "fraction of peak"); prints one number.
    Peak {
        /// Seconds each thread runs.
        #[arg(long, default_value_t = 1.0)]
        seconds: f64,
    },
    /// Multi-view pipeline throughput from shards: pairs/s, per-stage times, the bottleneck.
    Pipeline {
        /// Shard folder or URL (default: `--count` generated noise images of `--size` px in a
        /// temp folder).
        #[arg(long)]
        data: Option<PathBuf>,
        #[command(flatten)]
        cache: super::store::CacheArgs,
        /// With a URL: add this latency (ms) to every request, through object_store's
        /// throttling wrapper (a far-away bucket).
        #[arg(long)]
        added_latency_ms: Option<u64>,
        /// Split to read.
        #[arg(long, default_value = "train")]
        split: String,
        /// Augmentation recipe: simsiam, finetune or eval.
        #[arg(long, default_value = "simsiam", value_parser = super::names::RECIPE)]
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
        /// What each epoch permutes before shuffling rows inside a window: row-groups (across
        /// the split) or shards (then row groups inside each; for a cache smaller than the data).
        #[arg(long, default_value = "row-groups")]
        shuffle_by: ShuffleBy,
    },
    /// Every model op on a device against the CPU kernels, forward and backward; exits
    /// non-zero when a relative error exceeds --tolerance.
    Ops {
        /// cpu (the compositions `cuda` runs, on dfdx's CPU kernels), cuda or cuda:N.
        #[arg(long, default_value = "cpu")]
        device: DeviceSpec,
        /// Largest relative error accepted.
        #[arg(long, default_value_t = 1e-4)]
        tolerance: f64,
    },
    /// SimSiam training steps on random data (two views of one fixed batch, Adam 1e-3): loss
    /// per step and pairs/s, as `benches/peer_train.py` measures PyTorch. Exits
    /// non-zero on a NaN or a loss that does not decrease.
    Simsiam {
        /// Backbone (see `siamlab model summary`).
        #[arg(long, default_value = "resnet18", value_parser = super::names::BACKBONE)]
        backbone: String,
        /// cpu, cuda or cuda:N.
        #[arg(long, default_value = "cpu")]
        device: DeviceSpec,
        /// Pairs per step.
        #[arg(long, default_value_t = 64)]
        batch: usize,
        /// Input size.
        #[arg(long, default_value_t = 32)]
        image_size: usize,
        /// Timed steps.
        #[arg(long, default_value_t = 20)]
        steps: usize,
        /// Untimed steps first.
        #[arg(long, default_value_t = 2)]
        warmup: usize,
        /// Projection dimension.
        #[arg(long, default_value_t = 2048)]
        proj_dim: usize,
    },
    /// Finetuning steps on random data (the backbone and a linear head, one view of one fixed
    /// batch with fixed random labels, cross-entropy, Adam 1e-3): loss per step and images/s,
    /// as `benches/peer_train.py BACKBONE B STEPS SIZE finetune` measures PyTorch. Exits
    /// non-zero on a NaN or a loss that does not decrease.
    Finetune {
        /// Backbone (see `siamlab model summary`).
        #[arg(long, default_value = "resnet18", value_parser = super::names::BACKBONE)]
        backbone: String,
        /// cpu, cuda or cuda:N.
        #[arg(long, default_value = "cpu")]
        device: DeviceSpec,
        /// Images per step.
        #[arg(long, default_value_t = 64)]
        batch: usize,
        /// Input size.
        #[arg(long, default_value_t = 32)]
        image_size: usize,
        /// Classes of the head.
        #[arg(long, default_value_t = 10)]
        classes: usize,
        /// Timed steps.
        #[arg(long, default_value_t = 20)]
        steps: usize,
        /// Untimed steps first.
        #[arg(long, default_value_t = 2)]
        warmup: usize,
    },
}

/// Prints about ten of the `total` steps' losses (and the last).
fn loss_printer(total: usize) -> impl FnMut(usize, f32) {
    let every = (total / 10).max(1);
    move |step, loss| {
        if step % every == 0 || step + 1 == total {
            outln!("step {step:>5}  loss {loss:+.4}");
        }
    }
}

/// Fails when `losses` did not fall over the run.
fn check_decreasing(decreasing: bool, losses: &[f32]) -> anyhow::Result<()> {
    if !decreasing {
        anyhow::bail!(
            "the loss did not decrease over {} steps (first {:+.4}, last {:+.4})",
            losses.len(),
            losses.first().copied().unwrap_or(f32::NAN),
            losses.last().copied().unwrap_or(f32::NAN)
        );
    }
    Ok(())
}

/// The training benches' per-step callback: prints the loss (as [`loss_printer`]) and restarts
/// the per-op profile once the warm-up steps are done.
fn step_callback(steps: usize, warmup: usize) -> impl FnMut(usize, f32) {
    let mut print = loss_printer(steps + warmup);
    move |step, loss| {
        print(step, loss);
        if step + 1 == warmup {
            siamlab_model::profile::reset();
        }
    }
}

/// `SIAMLAB_PROFILE=1`: turns on the per-op timer of `siamlab_model::profile` (the bench loops
/// reset it after the warm-up steps; on a GPU each op then waits for it). Returns whether it is on.
fn start_profile() -> bool {
    let profiling = std::env::var("SIAMLAB_PROFILE").is_ok_and(|v| v == "1");
    siamlab_model::profile::enable(profiling);
    siamlab_model::profile::reset();
    profiling
}

/// The per-op table of `siamlab_model::profile` over `steps` steps of `s_per_step` seconds.
fn print_profile(steps: usize, s_per_step: f64) {
    let ops = siamlab_model::profile::report();
    let steps = steps.max(1);
    let per_step = |d: std::time::Duration| d.as_secs_f64() * 1e3 / steps as f64;
    let step_ms = s_per_step * 1e3;
    outln!("  {:<40} {:>8} {:>10} {:>7}", "op", "calls", "ms/step", "share");
    for op in &ops {
        let ms = per_step(op.total);
        outln!("  {:<40} {:>8} {:>10.2} {:>6.1}%", op.name, op.calls / steps as u64, ms, 100.0 * ms / step_ms);
    }
    let rest = step_ms - ops.iter().map(|op| per_step(op.total)).sum::<f64>();
    outln!("  {:<40} {:>8} {:>10.2} {:>6.1}%", "rest (dfdx ops, optimizer, loss)", "", rest, 100.0 * rest / step_ms);
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
        BenchCommand::Pipeline {
            data,
            cache,
            added_latency_ms,
            split,
            recipe,
            views,
            count,
            size,
            batch,
            workers,
            epochs,
            shuffle_by,
        } => {
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
            let mut opts = cache.options();
            opts.added_latency = added_latency_ms.map(std::time::Duration::from_millis);
            let at = siamlab_datasets::store::open_path(&dir, &opts)?;
            let workers = workers.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
            let generated = tmp.path().join("shards").exists();
            let bench = PipelineBench {
                at,
                split,
                recipe: recipe.clone(),
                views,
                batch,
                workers,
                epochs,
                shuffle_by,
                image_size: (size > 0 && generated).then_some(size),
            };
            // The bar of the epoch in progress (both callbacks reach it).
            let pb = std::cell::RefCell::new(None);
            let r = bench.run(
                &mut |epoch, done, total| {
                    let mut pb = pb.borrow_mut();
                    let bar = pb.get_or_insert_with(|| {
                        super::progress::bar(Some(total as u64), false, &format!("epoch {epoch}"))
                    });
                    bar.set_position(done as u64);
                },
                &mut |e| {
                    if let Some(bar) = pb.borrow_mut().take() {
                        bar.finish_and_clear();
                    }
                    let (epoch, n, secs, st) = (e.epoch, e.samples, e.secs, &e.stats);
                    outln!(
                        "epoch {epoch}: {n} samples × {views} views in {secs:.2}s = {:.0} samples/s; mean prefetch fill {:.1}",
                        n as f64 / secs,
                        e.mean_fill
                    );
                    outln!(
                        "  read {:.2}s ({} row groups), decode {:.2}s, augment {:.2}s, workers idle {:.2}s / blocked {:.2}s ({} workers)",
                        st.read_s, st.read_groups, st.decode_s, st.augment_s, st.worker_idle_s, st.worker_blocked_s, st.workers
                    );
                    outln!("  bottleneck: {}; planned in {:.2}s (manifest and footers)", st.bottleneck(), e.planning_secs);
                    if let Some(c) = &e.cache {
                        outln!("  {}", super::store::cache_line(c));
                    }
                },
            )?;
            outln!(
                "{recipe}: {:.0} samples/s ({views} views each) over {} epoch(s){}; peak RSS {:.0} MB",
                r.samples_per_s,
                r.timed_epochs,
                if epochs > 1 { " after the first" } else { "" },
                peak_rss_mb().unwrap_or(0.0)
            );
            Ok(())
        }
        BenchCommand::Ops { device, tolerance } => {
            let rows = check_ops(device)?;
            outln!("{:<45} {:>12} {:>12}", format!("op on {device} vs cpu kernels"), "forward", "backward");
            let mut bad = 0;
            for r in &rows {
                let flag = if r.worst() > tolerance { "  FAIL" } else { "" };
                bad += usize::from(!flag.is_empty());
                outln!("{:<45} {:>12.2e} {:>12.2e}{flag}", r.op, r.forward, r.backward);
            }
            if bad > 0 {
                anyhow::bail!("{bad} of {} ops differ from the cpu kernels by more than {tolerance:e}", rows.len());
            }
            outln!("all {} ops within {tolerance:e} (relative to the largest reference value)", rows.len());
            Ok(())
        }
        BenchCommand::Simsiam { backbone, device, batch, image_size, steps, warmup, proj_dim } => {
            let bench = SimSiamBench { backbone: backbone.clone(), device, batch, image_size, proj_dim, steps, warmup };
            let profiling = start_profile();
            let r = bench.run(&mut step_callback(steps, warmup))?;
            if profiling {
                print_profile(steps, r.s_per_step);
            }
            let kind = if device == DeviceSpec::Cpu { "cpu" } else { "cuda" };
            outln!(
                "siamlab-{kind} {backbone} B={batch} size={image_size} pairs_per_s={:.1} s_per_step={:.4}",
                r.pairs_per_s,
                r.s_per_step
            );
            check_decreasing(r.decreasing(), &r.losses)
        }
        BenchCommand::Finetune { backbone, device, batch, image_size, classes, steps, warmup } => {
            let bench = FinetuneBench { backbone: backbone.clone(), device, batch, image_size, classes, steps, warmup };
            let profiling = start_profile();
            let r = bench.run(&mut step_callback(steps, warmup))?;
            if profiling {
                print_profile(steps, r.s_per_step);
            }
            let kind = if device == DeviceSpec::Cpu { "cpu" } else { "cuda" };
            outln!(
                "siamlab-{kind} finetune {backbone} B={batch} size={image_size} classes={classes} images_per_s={:.1} s_per_step={:.4}",
                r.images_per_s,
                r.s_per_step
            );
            check_decreasing(r.decreasing(), &r.losses)
        }
        BenchCommand::Peak { seconds } => {
            if !(seconds > 0.0 && seconds <= 60.0) {
                anyhow::bail!("--seconds {seconds}: expected more than 0 and at most 60");
            }
            let gflops = siamlab_model::peak::fma_peak_gflops(std::time::Duration::from_secs_f64(seconds));
            outln!("{gflops:.1}");
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
