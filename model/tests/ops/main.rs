//! Op tests, one binary: PyTorch fixtures, finite-difference gradient checks, behaviour.

mod behaviour;
mod fixtures;
mod gradcheck;

use siamlab_model::Element;

/// Deterministic pseudo-normal values (splitmix64 + Box–Muller).
pub fn randn(seed: u64, n: usize) -> Vec<f64> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    let mut uniform = move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        ((z >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    (0..n)
        .map(|_| {
            let (u, v) = (uniform(), uniform());
            (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
        })
        .collect()
}

/// Runs `f` on a rayon pool of `threads` threads: the ops cut the batch into one task per
/// thread and batch small images into wider GEMMs, so the thread count changes the code path.
pub fn with_threads<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
    rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("thread pool").install(f)
}

/// Converts f64 test data to the element type under test.
pub fn cast<E: Element>(v: &[f64]) -> Vec<E> {
    v.iter().map(|&x| E::from_f64(x).unwrap()).collect()
}

/// Converts results back to f64.
pub fn widen<E: Element>(v: &[E]) -> Vec<f64> {
    v.iter().map(|x| x.to_f64().unwrap()).collect()
}

/// Asserts `|got - want| <= tol · (1 + |want|)` element-wise, naming the first offender.
#[track_caller]
pub fn assert_close(got: &[f64], want: &[f64], tol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= tol * (1.0 + w.abs()), "{what}[{i}]: got {g}, want {w} (tol {tol})");
    }
}
