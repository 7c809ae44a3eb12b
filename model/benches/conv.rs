//! Convolution forward and forward+backward on the shapes of a CIFAR ResNet-18 (batch 64,
//! 32×32 input) and a few EfficientNet-B0 depthwise convolutions, f32 on `Cpu`.
//!
//! `cargo bench --bench conv [-- FILTER]`; the PyTorch peer for the same shapes is
//! `benches/conv_peer.py`. Prints the fastest of timed repetitions in milliseconds.

use std::time::{Duration, Instant};

use dfdx::prelude::*;
use siamlab_model::{conv2d, Conv2dConfig, Image};

const BATCH: usize = 64;

/// Seconds on the clock the benchmark uses: wall time, or this process's CPU time with
/// `SIAMLAB_BENCH_CLOCK=cpu` (with `RAYON_NUM_THREADS=1`, a per-core figure that other
/// processes on a shared machine barely disturb; the peer script takes the same variable).
fn now_s() -> f64 {
    static CPU: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if *CPU.get_or_init(|| std::env::var("SIAMLAB_BENCH_CLOCK").is_ok_and(|v| v == "cpu")) {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: clock_gettime writes one timespec into the valid `ts`.
        unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
        return ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9;
    }
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_secs_f64()
}

fn median_ms(mut f: impl FnMut()) -> f64 {
    f(); // warm-up: pools and caches
    let mut times = Vec::new();
    let start = Instant::now();
    while times.len() < 3 || (start.elapsed() < Duration::from_secs(2) && times.len() < 20) {
        let t = now_s();
        f();
        times.push((now_s() - t) * 1e3);
    }
    times.sort_by(f64::total_cmp);
    times[0] // the fastest: robust to other processes on a shared machine
}

/// Times one shape; returns (forward ms, forward+backward ms).
fn bench<const C: usize, const O: usize, const IG: usize, const K: usize>(
    dev: &Cpu,
    hw: usize,
    cfg: Conv2dConfig,
) -> (f64, f64) {
    let x: Tensor<Image<C>, f32, Cpu> = dev.sample_normal_like(&(BATCH, Const::<C>, hw, hw));
    let w: Tensor<Rank4<O, IG, K, K>, f32, Cpu> = dev.sample_normal();
    let fwd = median_ms(|| {
        let y = conv2d(x.clone(), w.clone(), cfg).unwrap();
        std::hint::black_box(y);
    });
    let both = median_ms(|| {
        let y = conv2d(x.leaky_trace(), w.clone(), cfg).unwrap();
        std::hint::black_box(y.sum().backward());
    });
    (fwd, both)
}

type Case = (&'static str, usize, Box<dyn Fn(&Cpu) -> (f64, f64)>);

/// The shapes: name, how many times a CIFAR ResNet-18 runs it (0: not part of ResNet-18), the
/// timed run.
fn cases() -> Vec<Case> {
    let p1 = Conv2dConfig::default().padding(1);
    let s2p1 = Conv2dConfig::default().stride(2).padding(1);
    let s2 = Conv2dConfig::default().stride(2);
    let s2p3 = Conv2dConfig::default().stride(2).padding(3);
    let dw5 = Conv2dConfig::default().padding(2).groups(240);
    vec![
        ("resnet stem 3->64 k3 @32", 1, Box::new(move |d| bench::<3, 64, 3, 3>(d, 32, p1))),
        ("resnet l1 64->64 k3 @32", 4, Box::new(move |d| bench::<64, 64, 64, 3>(d, 32, p1))),
        ("resnet l2a 64->128 k3 s2 @32", 1, Box::new(move |d| bench::<64, 128, 64, 3>(d, 32, s2p1))),
        ("resnet l2ds 64->128 k1 s2 @32", 1, Box::new(move |d| bench::<64, 128, 64, 1>(d, 32, s2))),
        ("resnet l2 128->128 k3 @16", 3, Box::new(move |d| bench::<128, 128, 128, 3>(d, 16, p1))),
        ("resnet l3a 128->256 k3 s2 @16", 1, Box::new(move |d| bench::<128, 256, 128, 3>(d, 16, s2p1))),
        ("resnet l3ds 128->256 k1 s2 @16", 1, Box::new(move |d| bench::<128, 256, 128, 1>(d, 16, s2))),
        ("resnet l3 256->256 k3 @8", 3, Box::new(move |d| bench::<256, 256, 256, 3>(d, 8, p1))),
        ("resnet l4a 256->512 k3 s2 @8", 1, Box::new(move |d| bench::<256, 512, 256, 3>(d, 8, s2p1))),
        ("resnet l4ds 256->512 k1 s2 @8", 1, Box::new(move |d| bench::<256, 512, 256, 1>(d, 8, s2))),
        ("resnet l4 512->512 k3 @4", 3, Box::new(move |d| bench::<512, 512, 512, 3>(d, 4, p1))),
        // ResNet-18 with the ImageNet stem at 96 px (7×7/2 stem, max-pool, stages at 24..3).
        ("r96 stem 3->64 k7 s2 @96", 0, Box::new(move |d| bench::<3, 64, 3, 7>(d, 96, s2p3))),
        ("r96 l1 64->64 k3 @24", 0, Box::new(move |d| bench::<64, 64, 64, 3>(d, 24, p1))),
        ("r96 l2a 64->128 k3 s2 @24", 0, Box::new(move |d| bench::<64, 128, 64, 3>(d, 24, s2p1))),
        ("r96 l2 128->128 k3 @12", 0, Box::new(move |d| bench::<128, 128, 128, 3>(d, 12, p1))),
        ("r96 l3a 128->256 k3 s2 @12", 0, Box::new(move |d| bench::<128, 256, 128, 3>(d, 12, s2p1))),
        ("r96 l3 256->256 k3 @6", 0, Box::new(move |d| bench::<256, 256, 256, 3>(d, 6, p1))),
        ("r96 l4a 256->512 k3 s2 @6", 0, Box::new(move |d| bench::<256, 512, 256, 3>(d, 6, s2p1))),
        ("r96 l4 512->512 k3 @3", 0, Box::new(move |d| bench::<512, 512, 512, 3>(d, 3, p1))),
        ("effnet dw 96 k3 s2 @32", 0, Box::new(move |d| bench::<96, 96, 1, 3>(d, 32, s2p1.groups(96)))),
        ("effnet dw 240 k5 @8", 0, Box::new(move |d| bench::<240, 240, 1, 5>(d, 8, dw5))),
        ("effnet pw 240->40 k1 @8", 0, Box::new(move |d| bench::<240, 40, 240, 1>(d, 8, Conv2dConfig::default()))),
    ]
}

fn main() {
    // As the `siamlab` binary and the SimSiam bench: freed blocks stay in the process, so a
    // backward pass's fresh gradients do not pay page faults and TLB shootdowns.
    siamlab_model::memory::retain_freed_memory();
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-')).unwrap_or_default();
    let dev = Cpu::default();
    println!("siamlab-model conv f32 batch {BATCH}, {} threads", rayon::current_num_threads());
    let line = |name: &str, count: usize, f: f64, b: f64| {
        println!("{name:<34} {count:>5} {f:>10.2} {b:>12.2} {:>10.2}", b - f)
    };
    println!("{:<34} {:>5} {:>10} {:>12} {:>10}", "shape", "count", "fwd ms", "fwd+bwd ms", "bwd ms");
    let (mut fwd, mut both, mut resnet_rows) = (0.0, 0.0, 0);
    for (name, count, run) in cases() {
        if !name.contains(filter.as_str()) {
            continue;
        }
        let (f, b) = run(&dev);
        line(name, count, f, b);
        fwd += f * count as f64;
        both += b * count as f64;
        resnet_rows += usize::from(count > 0);
    }
    if resnet_rows == 11 {
        line("resnet-18 all 20 convs (weighted)", 20, fwd, both);
    }
}
