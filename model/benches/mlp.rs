//! The transformer MLP (`fc1`, GELU, `fc2`) forward and forward+backward, fused
//! ([`siamlab_model::mlp`]) against the three separate ops, on the shapes of PiT-Ti's three
//! stages and ViT-S at 32 px (one view of a batch of 64), f32 on `Cpu`.
//!
//! `cargo bench --bench mlp [-- FILTER]`; calls
//! [`siamlab_model::memory::retain_freed_memory`] first, as the `siamlab` binary does. Prints the fastest of timed repetitions in
//! milliseconds.

use std::time::{Duration, Instant};

use dfdx::prelude::*;
use siamlab_model::{gelu, linear, mlp};

fn fastest_ms(mut f: impl FnMut()) -> f64 {
    f(); // warm-up: pools and caches
    let mut times = Vec::new();
    let start = Instant::now();
    while times.len() < 3 || (start.elapsed() < Duration::from_secs(2) && times.len() < 20) {
        let t = Instant::now();
        f();
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    times[0]
}

fn case<const D: usize, const M: usize>(name: &str, rows: usize) {
    let dev = Cpu::default();
    let x: Tensor<(usize, Const<D>), f32, _> = dev.sample_normal_like(&(rows, Const::<D>));
    // Weights of PyTorch's scale (1/√fan-in), so GELU sees unit-scale inputs as in training.
    let w1: Tensor<Rank2<M, D>, f32, _> = dev.sample_normal::<Rank2<M, D>>() * (1.0 / (D as f32).sqrt());
    let w2: Tensor<Rank2<D, M>, f32, _> = dev.sample_normal::<Rank2<D, M>>() * (1.0 / (M as f32).sqrt());
    let (b1, b2): (Tensor<Rank1<M>, f32, _>, Tensor<Rank1<D>, f32, _>) = (dev.sample_normal(), dev.sample_normal());
    type Tp = OwnedTape<f32, Cpu>;
    let separate = |x: Tensor<(usize, Const<D>), f32, Cpu, Tp>| {
        let h = linear(x, w1.retaped::<Tp>(), b1.retaped::<Tp>()).unwrap();
        linear(gelu(h).unwrap(), w2.retaped::<Tp>(), b2.retaped::<Tp>()).unwrap()
    };
    let fused = |x: Tensor<(usize, Const<D>), f32, Cpu, Tp>| {
        mlp(x, w1.retaped::<Tp>(), b1.retaped::<Tp>(), w2.retaped::<Tp>(), b2.retaped::<Tp>()).unwrap()
    };
    let sep_f = fastest_ms(|| drop(separate(x.leaky_trace())));
    let fus_f = fastest_ms(|| drop(fused(x.leaky_trace())));
    let sep_fb = fastest_ms(|| drop(separate(x.leaky_trace()).sum().backward()));
    let fus_fb = fastest_ms(|| drop(fused(x.leaky_trace()).sum().backward()));
    let hidden: Tensor<(usize, Const<M>), f32, _> = dev.sample_normal_like(&(rows, Const::<M>));
    let gelu_f = fastest_ms(|| drop(gelu(hidden.clone()).unwrap()));
    println!("{name:<16} GELU forward alone on {rows} × {M}: {gelu_f:.2} ms");
    let gflop = 2.0 * 2.0 * (rows * D * M) as f64 * 1e-9;
    println!(
        "{name:<16} rows {rows:>6} D {D:>4} M {M:>5}  forward separate {sep_f:7.2} ms fused {fus_f:7.2} ms ({:5.0} GFLOP/s)  \
         +backward separate {sep_fb:7.2} ms fused {fus_fb:7.2} ms ({:5.0} GFLOP/s)",
        gflop / fus_f * 1e3,
        3.0 * gflop / fus_fb * 1e3
    );
}

fn main() {
    // As the `siamlab` binary does: freed memory stays with the process.
    siamlab_model::memory::retain_freed_memory();
    let filter = std::env::args().skip(1).find(|a| !a.starts_with("--"));
    let run = |name: &str| filter.as_deref().is_none_or(|f| name.contains(f));
    if run("pit_ti stage 1") {
        case::<64, 256>("pit_ti stage 1", 64 * 226);
    }
    if run("pit_ti stage 2") {
        case::<128, 512>("pit_ti stage 2", 64 * 65);
    }
    if run("pit_ti stage 3") {
        case::<256, 1024>("pit_ti stage 3", 64 * 17);
    }
    if run("vit_s") {
        case::<384, 1536>("vit_s", 64 * 65);
    }
}
