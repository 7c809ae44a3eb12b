//! This machine's fp32 FMA peak, measured: every thread of the rayon pool runs independent
//! fused multiply-adds on registers only (AVX-512, AVX2+FMA or scalar, as the CPU allows) for a
//! fixed time, and the rates are summed. A peak derived from the clock `lscpu` reports is off
//! by the boost clock (and a VM may report neither), so the benchmarks' "fraction of peak" uses
//! this figure (`siamlab bench peak`).

use std::time::{Duration, Instant};

/// Independent accumulators per thread: enough to cover the FMA latency on two pipes.
const ACC: usize = 24;

/// GFLOP/s of fp32 FMAs (2 FLOP each) summed over the rayon pool's threads, each running for
/// `per_thread` (after a short warm-up that lets the clock settle).
pub fn fma_peak_gflops(per_thread: Duration) -> f64 {
    use rayon::prelude::*;
    let threads = rayon::current_num_threads().max(1);
    (0..threads)
        .into_par_iter()
        .map(|_| {
            one_thread(per_thread / 5);
            one_thread(per_thread)
        })
        .sum()
}

/// One thread's GFLOP/s over about `time`.
fn one_thread(time: Duration) -> f64 {
    let start = Instant::now();
    let mut flop = 0f64;
    let mut sink = 0f32;
    while start.elapsed() < time {
        let (f, s) = burst(1 << 16);
        flop += f;
        sink += s;
    }
    std::hint::black_box(sink);
    flop / start.elapsed().as_secs_f64() / 1e9
}

/// `iters` rounds of FMAs on [`ACC`] vector accumulators; returns the FLOPs done and a value
/// that depends on every accumulator (so none is optimised away).
fn burst(iters: usize) -> (f64, f32) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F (checked just above).
            return unsafe { burst_avx512(iters) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU has AVX2 and FMA (checked just above).
            return unsafe { burst_avx2(iters) };
        }
    }
    let mut acc = [0f32; ACC];
    let (a, b) = (std::hint::black_box(1.000_001f32), std::hint::black_box(0.999_999f32));
    for _ in 0..iters {
        for r in acc.iter_mut() {
            *r = a.mul_add(b, *r);
        }
    }
    ((iters * ACC * 2) as f64, acc.iter().sum())
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn burst_avx512(iters: usize) -> (f64, f32) {
    use std::arch::x86_64::*;
    let mut acc = [_mm512_setzero_ps(); ACC];
    let a = _mm512_set1_ps(std::hint::black_box(1.000_001));
    let b = _mm512_set1_ps(std::hint::black_box(0.999_999));
    for _ in 0..iters {
        for r in acc.iter_mut() {
            *r = _mm512_fmadd_ps(a, b, *r);
        }
    }
    let sum = acc.iter().fold(_mm512_setzero_ps(), |s, &r| _mm512_add_ps(s, r));
    ((iters * ACC * 16 * 2) as f64, _mm512_reduce_add_ps(sum))
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn burst_avx2(iters: usize) -> (f64, f32) {
    use std::arch::x86_64::*;
    let mut acc = [_mm256_setzero_ps(); ACC];
    let a = _mm256_set1_ps(std::hint::black_box(1.000_001));
    let b = _mm256_set1_ps(std::hint::black_box(0.999_999));
    for _ in 0..iters {
        for r in acc.iter_mut() {
            *r = _mm256_fmadd_ps(a, b, *r);
        }
    }
    let mut lanes = [0f32; 8];
    _mm256_storeu_ps(lanes.as_mut_ptr(), acc.iter().fold(_mm256_setzero_ps(), |s, &r| _mm256_add_ps(s, r)));
    ((iters * ACC * 8 * 2) as f64, lanes.iter().sum())
}

#[cfg(test)]
mod tests {
    /// The burst counts what it runs: its sum is the closed form of `ACC` accumulators each
    /// adding `a·b` `iters` times (in every code path the CPU takes).
    #[test]
    fn a_burst_does_the_fmas_it_counts() {
        let (flop, sum) = super::burst(1000);
        let lanes = flop / (1000.0 * super::ACC as f64 * 2.0);
        let want = (1000.0 * 1.000_001f64 * 0.999_999) * super::ACC as f64 * lanes;
        assert!((sum as f64 - want).abs() < 1e-3 * want, "{sum} vs {want}");
        assert!([1.0, 8.0, 16.0].contains(&lanes), "{lanes} lanes");
        assert!(super::fma_peak_gflops(std::time::Duration::from_millis(20)) > 0.0);
    }
}
