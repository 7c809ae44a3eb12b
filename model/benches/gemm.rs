//! GEMM throughput of the `gemm` crate on the shapes the backbones run (f32, row-major),
//! single- and multi-threaded, in GFLOP/s; `model/benches/gemm_peer.py` times `torch.mm` on the same
//! shapes. `cargo bench -p siamlab-model --bench gemm`.

use std::time::Instant;

fn time_gemm(m: usize, n: usize, k: usize, ta: bool, tb: bool, tc: bool, threads: usize) -> f64 {
    let a = vec![1.0f32; m * k];
    let b = vec![1.0f32; k * n];
    let mut c = vec![0.0f32; m * n];
    let par = if threads > 1 { gemm::Parallelism::Rayon(threads) } else { gemm::Parallelism::None };
    // a: m×k (row-major, or stored k×m when ta); b: k×n (or n×k when tb)
    let (a_cs, a_rs) = if ta { (m as isize, 1) } else { (1, k as isize) };
    let (b_cs, b_rs) = if tb { (k as isize, 1) } else { (1, n as isize) };
    // c: m×n row-major, or stored n×m when tc
    let (c_cs, c_rs) = if tc { (m as isize, 1) } else { (1, n as isize) };
    let mut run = || unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            c_cs,
            c_rs,
            false,
            a.as_ptr(),
            a_cs,
            a_rs,
            b.as_ptr(),
            b_cs,
            b_rs,
            1.0f32,
            1.0f32,
            false,
            false,
            false,
            par,
        )
    };
    run();
    let mut reps = 0;
    let start = Instant::now();
    while start.elapsed().as_secs_f64() < 0.5 || reps < 3 {
        run();
        reps += 1;
    }
    let dt = start.elapsed().as_secs_f64() / reps as f64;
    2.0 * (m * n * k) as f64 / dt / 1e9
}

fn main() {
    let shapes: &[(&str, usize, usize, usize, bool, bool, bool)] = &[
        ("r18 l1 fwd (o×kk · kk×cols)", 64, 1024, 576, false, false, false),
        ("r18 l2 fwd", 128, 1024, 1152, false, false, false),
        ("r18 l3 fwd", 256, 1024, 2304, false, false, false),
        ("r18 l4 fwd", 512, 1024, 4608, false, false, false),
        ("r18 l1 dW (og×cols · colsᵀ)", 64, 576, 1024, false, true, false),
        ("r18 l4 dW", 512, 4608, 1024, false, true, false),
        ("vit qkv (4160×384 · 384×1152)", 4160, 1152, 384, false, true, false),
        ("vit mlp1 (4160×384 · 384×1536)", 4160, 1536, 384, false, true, false),
        ("vit mlp2 (4160×1536 · 1536×384)", 4160, 384, 1536, false, true, false),
        ("proj 64×2048×2048", 64, 2048, 2048, false, true, false),
        ("proj swapped (W · xᵀ) nn", 2048, 64, 2048, false, false, false),
        ("proj swapped, dst col-major", 2048, 64, 2048, false, false, true),
        ("proj dW (gyᵀ · x) tn", 2048, 2048, 64, true, false, false),
        ("proj dx (gy · W) nn", 64, 2048, 2048, false, false, false),
        ("dW nn", 64, 576, 1024, false, false, false),
        ("dW tn", 64, 576, 1024, true, false, false),
        ("dW tt", 64, 576, 1024, true, true, false),
        ("dWt nn 576x64x1024", 576, 64, 1024, false, false, false),
        ("dWt nt", 576, 64, 1024, false, true, false),
        ("dW nt k=8192", 64, 576, 8192, false, true, false),
        ("dWt nt k=8192", 576, 64, 8192, false, true, false),
        ("dWt nn k=8192", 576, 64, 8192, false, false, false),
        ("pit s1 qkv fwd nn", 28928, 192, 64, false, false, false),
        ("pit s1 mlp1 fwd nn", 28928, 256, 64, false, false, false),
        ("pit s1 mlp2 fwd nn", 28928, 64, 256, false, false, false),
        ("pit s1 qkv dW tn", 192, 64, 28928, true, false, false),
        ("pit s1 mlp2 dx nn", 28928, 256, 64, false, false, false),
        ("pit s2 qkv fwd nn", 8320, 384, 128, false, false, false),
        ("pit s2 mlp2 fwd nn", 8320, 128, 512, false, false, false),
        ("pit s2 mlp1 dW tn", 512, 128, 8320, true, false, false),
        ("mlp block fc1 256×256×64 nn", 256, 256, 64, false, false, false),
        ("mlp block fc2 256×64×256 nn", 256, 64, 256, false, false, false),
        ("mlp block dW1 256×64×256 tn", 256, 64, 256, true, false, false),
        ("mlp block dW2 64×256×256 tn", 64, 256, 256, true, false, false),
        ("mlp run fc1 7232×256×64 nn", 7232, 256, 64, false, false, false),
        ("big square 1024", 1024, 1024, 1024, false, false, false),
    ];
    let threads = rayon::current_num_threads();
    println!("{:<36} {:>10} {:>10}", "shape m×n×k", "1 thread", format!("{threads} threads"));
    for &(name, m, n, k, ta, tb, tc) in shapes {
        let one = time_gemm(m, n, k, ta, tb, tc, 1);
        let all = time_gemm(m, n, k, ta, tb, tc, threads);
        println!("{name:<36} {one:>10.1} {all:>10.1}   ({m}×{n}×{k})");
    }
}
