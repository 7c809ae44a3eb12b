//! Per-sample random number generators and the few distributions the samplers draw from.
//!
//! Every random choice of an augmentation is drawn from an RNG that depends only on
//! `(seed, epoch, sample index, view)`: [`sample_rng`] hashes the four numbers with splitmix64
//! into a ChaCha8 key. No RNG is shared between samples, so the augmented output is a pure
//! function of the data and the configuration, whatever the worker count or scheduling.
//!
//! The helpers mirror the torch calls torchvision's samplers make (`uniform_`, `randint`,
//! `randperm`, `rand(1) < p`); the stream of numbers differs from torch's, the logic does not.

use rand_chacha::rand_core::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The RNG type the recipes use: ChaCha8, keyed per sample by [`sample_rng`].
pub type SampleRng = ChaCha8Rng;

/// splitmix64's finalizer: a bijective 64-bit mix with good avalanche behaviour.
#[inline]
pub fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The 32-byte ChaCha key for `(seed, epoch, index, view)`.
///
/// The four numbers are absorbed one after the other into a splitmix64 chain (each step mixes
/// the running state with the next number), and four further splitmix64 outputs of the final
/// state form the key. Changing any one input changes the whole key.
pub fn sample_key(seed: u64, epoch: u64, index: u64, view: u32) -> [u8; 32] {
    let mut state = splitmix64(seed);
    for (k, x) in [epoch, index, u64::from(view)].into_iter().enumerate() {
        // Domain-separate the positions so that (a, b) and (b, a) differ.
        let tagged = x ^ (0xA076_1D64_78BD_642F_u64.wrapping_mul(k as u64 + 1));
        state = splitmix64(state ^ splitmix64(tagged));
    }
    let mut key = [0u8; 32];
    for (k, chunk) in key.chunks_exact_mut(8).enumerate() {
        state = splitmix64(state.wrapping_add(k as u64));
        chunk.copy_from_slice(&state.to_le_bytes());
    }
    key
}

/// The RNG for one view of one sample: ChaCha8 keyed by [`sample_key`].
///
/// ```
/// use rand_chacha::rand_core::Rng;
/// use siamlab_pipeline::augment::sample_rng;
/// let a = sample_rng(7, 0, 42, 1).next_u64();
/// assert_eq!(a, sample_rng(7, 0, 42, 1).next_u64());
/// assert_ne!(a, sample_rng(7, 0, 42, 0).next_u64());
/// ```
pub fn sample_rng(seed: u64, epoch: u64, index: u64, view: u32) -> SampleRng {
    ChaCha8Rng::from_seed(sample_key(seed, epoch, index, view))
}

/// A uniform draw in `[0, 1)` with 53 random bits (torch's `rand(1)`).
#[inline]
pub fn unit_f64<R: Rng + ?Sized>(rng: &mut R) -> f64 {
    (rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// A uniform draw in `[lo, hi)` (torch's `empty(1).uniform_(lo, hi)`): `lo + (hi - lo) * u`.
#[inline]
pub fn uniform<R: Rng + ?Sized>(rng: &mut R, lo: f64, hi: f64) -> f64 {
    lo + (hi - lo) * unit_f64(rng)
}

/// `true` with probability `p` (torch's `rand(1) < p`).
#[inline]
pub fn bernoulli<R: Rng + ?Sized>(rng: &mut R, p: f64) -> bool {
    unit_f64(rng) < p
}

/// An unbiased integer in `[0, n)` (torch's `randint(0, n)`); returns 0 when `n` is 0 or 1.
#[inline]
pub fn below<R: Rng + ?Sized>(rng: &mut R, n: u64) -> u64 {
    if n <= 1 {
        return 0;
    }
    // Lemire's multiply-and-reject method.
    let threshold = n.wrapping_neg() % n;
    loop {
        let m = u128::from(rng.next_u64()) * u128::from(n);
        if (m as u64) >= threshold {
            return (m >> 64) as u64;
        }
    }
}

/// A uniformly random permutation of `0..N` (torch's `randperm(N)`), by Fisher-Yates.
pub fn permutation<R: Rng + ?Sized, const N: usize>(rng: &mut R) -> [u8; N] {
    let mut out = [0u8; N];
    for (k, v) in out.iter_mut().enumerate() {
        *v = k as u8;
    }
    for k in (1..N).rev() {
        let j = below(rng, k as u64 + 1) as usize;
        out.swap(k, j);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_rng_is_a_pure_function_of_its_inputs() {
        let draw = |s, e, i, v| {
            let mut r = sample_rng(s, e, i, v);
            [r.next_u64(), r.next_u64(), r.next_u64()]
        };
        assert_eq!(draw(1, 2, 3, 0), draw(1, 2, 3, 0));
        let base = draw(1, 2, 3, 0);
        for other in
            [draw(0, 2, 3, 0), draw(1, 3, 3, 0), draw(1, 2, 4, 0), draw(1, 2, 3, 1), draw(1, 3, 2, 0), draw(2, 1, 3, 0)]
        {
            assert_ne!(base, other);
        }
    }

    #[test]
    fn keys_do_not_collide_on_a_grid() {
        let mut seen = std::collections::HashSet::new();
        for e in 0..4 {
            for i in 0..256 {
                for v in 0..2 {
                    assert!(seen.insert(sample_key(0, e, i, v)));
                }
            }
        }
    }

    #[test]
    fn uniform_and_below_stay_in_bounds_and_cover_the_range() {
        let mut r = sample_rng(0, 0, 0, 0);
        let mut hits = [0u32; 7];
        let (mut lo_seen, mut hi_seen) = (f64::MAX, f64::MIN);
        for _ in 0..20_000 {
            let u = uniform(&mut r, 0.2, 1.0);
            assert!((0.2..1.0).contains(&u));
            lo_seen = lo_seen.min(u);
            hi_seen = hi_seen.max(u);
            hits[below(&mut r, 7) as usize] += 1;
        }
        assert!(lo_seen < 0.21 && hi_seen > 0.99);
        for h in hits {
            // Expected 2857 each; 5 sigma is about 250.
            assert!((2600..3120).contains(&h), "{hits:?}");
        }
        assert_eq!(below(&mut r, 0), 0);
        assert_eq!(below(&mut r, 1), 0);
    }

    #[test]
    fn permutation_is_a_permutation_and_uniform() {
        let mut r = sample_rng(5, 0, 0, 0);
        let mut first = [0u32; 4];
        for _ in 0..8000 {
            let p: [u8; 4] = permutation(&mut r);
            let mut s = p;
            s.sort_unstable();
            assert_eq!(s, [0, 1, 2, 3]);
            first[p[0] as usize] += 1;
        }
        for f in first {
            assert!((1800..2200).contains(&f), "{first:?}");
        }
    }
}
