//! SimSiam training steps on CPU: batch 64 (two views), 32×32 inputs, projector 2048-2048-2048,
//! predictor 2048-512-2048, Adam (lr 1e-3, L2 weight decay 1e-5), as
//! `shared/bench/peer_train_bench.py` does in PyTorch.
//!
//! `cargo bench --bench simsiam [-- BACKBONE [STEPS [BATCH]]]`, BACKBONE one of `resnet18`,
//! `efficientnet_b0`, `vit_s`, `pit_ti` (default: all; STEPS 3, BATCH 64). Prints pairs per
//! second after one warm-up step, and the process's peak resident memory so far.
//!
//! Calls [`siamlab_model::memory::retain_freed_memory`] first, as the `siamlab` binary does
//! (`SIAMLAB_MALLOC=default` skips it, to measure what it brings). `SIAMLAB_PROFILE=1` adds the
//! time per op (forward and backward) over the timed steps.

use std::time::Instant;

use dfdx::optim::{Adam, AdamConfig, Optimizer, WeightDecay};
use dfdx::prelude::*;
use siamlab_model::backbones::{Backbone, EfficientNetB0S1, PitTi32, ResNet18Cifar, VitS32};
use siamlab_model::layers::Mode;
use siamlab_model::simsiam::SimSiam2048;

/// Peak resident set size of this process in MiB (`VmHWM`), if the kernel reports it.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn run<B: Backbone<F>, const F: usize>(name: &str, steps: usize, batch: usize)
where
    SimSiam2048<B, F>: BuildModule<Cpu, f32>,
{
    let dev = Cpu::seed_from_u64(0);
    let mut model = SimSiam2048::<B, F>::build(&dev);
    let params = model.num_trainable_params();
    let mut opt =
        Adam::new(&model, AdamConfig { lr: 1e-3, weight_decay: Some(WeightDecay::L2(1e-5)), ..Default::default() });
    let x1: Tensor<_, f32, _> = dev.sample_normal_like(&(batch, Const::<3>, 32, 32));
    let x2: Tensor<_, f32, _> = dev.sample_normal_like(&(batch, Const::<3>, 32, 32));
    let mut step = || {
        let grads = model.alloc_grads();
        let loss = model.forward_loss(x1.clone().traced(grads), x2.clone().leaky_traced(), Mode::Train).unwrap();
        let value = loss.array();
        let grads = loss.backward();
        opt.update(&mut model, &grads).unwrap();
        value
    };
    step();
    siamlab_model::profile::reset();
    let start = Instant::now();
    let mut loss = 0.0;
    for _ in 0..steps {
        loss = step();
    }
    let dt = start.elapsed().as_secs_f64();
    let rss = peak_rss_mib().map_or("?".to_string(), |m| format!("{m:.0}"));
    println!(
        "dfdx-cpu {name:<16} B={batch} size=32 params={params} threads={} pairs_per_s={:.1} s_per_step={:.3} loss={loss:.4} peak_rss_mib={rss}",
        rayon::current_num_threads(),
        (batch * steps) as f64 / dt,
        dt / steps as f64,
    );
    if siamlab_model::profile::enabled() {
        let ops = siamlab_model::profile::report();
        let per_step = |d: std::time::Duration| d.as_secs_f64() * 1e3 / steps as f64;
        let step_ms = dt * 1e3 / steps as f64;
        println!("  {:<40} {:>8} {:>10} {:>7}", "op", "calls", "ms/step", "share");
        for op in &ops {
            let ms = per_step(op.total);
            println!("  {:<40} {:>8} {:>10.1} {:>6.1}%", op.name, op.calls / steps as u64, ms, 100.0 * ms / step_ms);
        }
        let ours: f64 = ops.iter().map(|op| per_step(op.total)).sum();
        let rest = step_ms - ours;
        println!("  {:<40} {:>8} {:>10.1} {:>6.1}%", "rest (dfdx ops, Adam, loss)", "", rest, 100.0 * rest / step_ms);
    }
}

fn main() {
    if std::env::var("SIAMLAB_MALLOC").as_deref() != Ok("default") {
        siamlab_model::memory::retain_freed_memory();
    }
    siamlab_model::profile::enable(std::env::var("SIAMLAB_PROFILE").is_ok_and(|v| v == "1"));
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let which = args.first().cloned().unwrap_or_default();
    let steps = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(3);
    let batch = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(64);
    let wanted = |name: &str| which.is_empty() || which == "all" || which == name;
    if wanted("resnet18") {
        run::<ResNet18Cifar, 512>("resnet18", steps, batch);
    }
    if wanted("efficientnet_b0") {
        // The stride-1 stem: siamlab's preset at 32 px, and the peer's (`peer_train.py`).
        run::<EfficientNetB0S1, 1280>("efficientnet_b0", steps, batch);
    }
    if wanted("vit_s") {
        run::<VitS32, 384>("vit_s", steps, batch);
    }
    if wanted("pit_ti") {
        run::<PitTi32, 256>("pit_ti", steps, batch);
    }
}
