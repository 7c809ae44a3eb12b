//! A weighted k-nearest-neighbour classifier on frozen features (as in InstDisc, solo-learn and
//! lightly): pretraining's kNN monitor. Every function accepts arbitrary input without
//! panicking: lengths that do not match are truncated to the common whole number of rows, and
//! empty inputs give the documented defaults (never NaN).

use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// A neighbour candidate; its `Ord` makes the *worse* candidate greater, so a `BinaryHeap` keeps the worst of the
/// current top-k at its root. Better = higher similarity, then lower bank index.
#[derive(Clone, Copy)]
struct Cand {
    sim: f32,
    idx: usize,
}

impl PartialEq for Cand {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Cand {}
impl PartialOrd for Cand {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Cand {
    fn cmp(&self, other: &Self) -> Ordering {
        other.sim.total_cmp(&self.sim).then(self.idx.cmp(&other.idx))
    }
}

/// Copies `rows` rows of `dim` values and L2-normalizes each one; zero rows and rows with a non-finite value or
/// norm become all-zero.
fn normalized_rows(data: &[f32], dim: usize, rows: impl Iterator<Item = usize>) -> Vec<f32> {
    let mut out = Vec::new();
    for r in rows {
        let row = &data[r * dim..(r + 1) * dim];
        let norm = row.iter().map(|&v| v as f64 * v as f64).sum::<f64>().sqrt();
        if norm > 0.0 && norm.is_finite() {
            out.extend(row.iter().map(|&v| (v as f64 / norm) as f32));
        } else {
            out.extend(std::iter::repeat_n(0.0f32, dim));
        }
    }
    out
}

/// Bank rows per panel: a panel stores [`PANEL`] normalized bank rows feature-major (`[dim][PANEL]`), so that the
/// similarity kernel is an element-wise multiply-add over contiguous memory that the compiler vectorizes reliably
/// (no horizontal reductions).
const PANEL: usize = 16;
/// Queries handled together per pass over a bank tile.
const QUERY_BLOCK: usize = 32;
/// Target size in bytes of a bank tile (kept in the L2 cache while a query block runs over it).
const TILE_BYTES: usize = 128 * 1024;

/// The normalized rows of `data` listed in `rows`, laid out in panels of [`PANEL`] rows, feature-major inside a
/// panel; the last panel is padded with zero rows.
fn normalized_panels(data: &[f32], dim: usize, rows: &[usize]) -> Vec<f32> {
    let normalized = normalized_rows(data, dim, rows.iter().copied());
    let mut panels = vec![0.0f32; rows.len().div_ceil(PANEL) * PANEL * dim];
    for (i, row) in normalized.chunks_exact(dim).enumerate() {
        let base = (i / PANEL) * PANEL * dim + i % PANEL;
        for (d, &v) in row.iter().enumerate() {
            panels[base + d * PANEL] = v;
        }
    }
    panels
}

/// Dot products of two query rows with the [`PANEL`] bank rows of one panel.
#[inline(never)]
fn panel_dot2(q0: &[f32], q1: &[f32], panel: &[f32]) -> [[f32; PANEL]; 2] {
    let (mut a0, mut a1) = ([0.0f32; PANEL], [0.0f32; PANEL]);
    for ((b, &x0), &x1) in panel.chunks_exact(PANEL).zip(q0).zip(q1) {
        let b = <&[f32; PANEL]>::try_from(b).unwrap_or(&[0.0; PANEL]);
        for j in 0..PANEL {
            a0[j] += x0 * b[j];
            a1[j] += x1 * b[j];
        }
    }
    [a0, a1]
}

/// Top-k neighbours (unordered) of each row of the normalized row-major `queries` among the first `bank_rows`
/// rows of the normalized `panels` (see [`normalized_panels`]).
fn top_k_block(panels: &[f32], bank_rows: usize, queries: &[f32], dim: usize, k: usize) -> Vec<Vec<Cand>> {
    let nq = queries.len() / dim;
    let panel_len = PANEL * dim;
    let n_panels = (panels.len() / panel_len).min(bank_rows.div_ceil(PANEL));
    let tile_panels = (TILE_BYTES / panel_len.saturating_mul(4)).max(1);
    let mut result = Vec::with_capacity(nq);
    for q0 in (0..nq).step_by(QUERY_BLOCK) {
        let qn = QUERY_BLOCK.min(nq - q0);
        let mut heaps: Vec<BinaryHeap<Cand>> = (0..qn).map(|_| BinaryHeap::with_capacity(k + 1)).collect();
        for t0 in (0..n_panels).step_by(tile_panels) {
            let t1 = (t0 + tile_panels).min(n_panels);
            for g in (0..qn).step_by(2) {
                // An odd last query is paired with itself; the duplicate result is dropped.
                let r0 = q0 + g;
                let r1 = q0 + (g + 1).min(qn - 1);
                let (qa, qb) = (&queries[r0 * dim..(r0 + 1) * dim], &queries[r1 * dim..(r1 + 1) * dim]);
                let used = 2.min(qn - g);
                for p in t0..t1 {
                    let sims = panel_dot2(qa, qb, &panels[p * panel_len..(p + 1) * panel_len]);
                    let rows = PANEL.min(bank_rows - p * PANEL); // padding rows of the last panel never vote
                    for (h, sims) in heaps[g..g + used].iter_mut().zip(&sims) {
                        for (j, &sim) in sims[..rows].iter().enumerate() {
                            push_top_k(h, k, Cand { sim, idx: p * PANEL + j });
                        }
                    }
                }
            }
        }
        result.extend(heaps.into_iter().map(BinaryHeap::into_vec));
    }
    result
}

/// Offers `c` to the top-k heap `h` (root = worst kept candidate). Bank rows arrive in increasing index order, so
/// a candidate tied with the worst one loses (lower index wins ties).
#[inline]
fn push_top_k(h: &mut BinaryHeap<Cand>, k: usize, c: Cand) {
    if c.sim.is_nan() {
        return;
    }
    if h.len() < k {
        h.push(c);
    } else if let Some(mut worst) = h.peek_mut() {
        if c.sim > worst.sim {
            *worst = c;
        }
    }
}

/// Weighted k-nearest-neighbour classification of `queries` against a labelled feature `bank` (InstDisc /
/// solo-learn / lightly style).
///
/// `bank` is row-major `[M, dim]` with `M = min(bank.len() / dim, bank_labels.len())`; `queries` is row-major
/// `[Q, dim]` with `Q = queries.len() / dim` (a trailing partial row is ignored). Rows are L2-normalized inside
/// (on a copy; zero rows, and rows holding a non-finite value, are treated as zero vectors), similarity is the
/// cosine, the `k` most similar bank entries are kept (k clamped to the number of usable bank entries; among equal
/// similarities the lower bank index wins) and each votes for its label with weight `exp(sim / temperature)`. The
/// prediction is the class with the largest summed weight, ties going to the lowest class.
///
/// Bank entries with a label `< 0` or `>= num_classes` are ignored. A `temperature` that is not `> 0` (zero,
/// negative, NaN) is taken as the limit `temperature → 0+`: only the neighbours tied for the highest similarity
/// vote, with equal weight; `+inf` gives an unweighted majority vote. When no bank entry can vote (empty bank,
/// `k == 0`, `dim == 0` or `num_classes == 0`), every prediction is `-1`. Returns `Q` predictions (empty when
/// `dim == 0`).
///
/// The similarity computation is blocked (the bank is copied into feature-major panels of 16 rows; blocks of
/// queries run over cache-sized tiles of panels, two queries at a time in the vectorized inner loop) and split
/// over the available cores with scoped threads. Memory: one normalized copy of the bank and of the queries.
pub fn knn_predict(
    bank: &[f32],
    bank_labels: &[i64],
    queries: &[f32],
    dim: usize,
    num_classes: usize,
    k: usize,
    temperature: f32,
) -> Vec<i64> {
    if dim == 0 {
        return Vec::new();
    }
    let nq = queries.len() / dim;
    let m = (bank.len() / dim).min(bank_labels.len());
    let valid: Vec<usize> =
        (0..m).filter(|&i| bank_labels[i] >= 0 && (bank_labels[i] as u64) < num_classes as u64).collect();
    let k = k.min(valid.len());
    if k == 0 || num_classes == 0 {
        return vec![-1; nq];
    }
    let labels: Vec<usize> = valid.iter().map(|&i| bank_labels[i] as usize).collect();
    let panels = normalized_panels(bank, dim, &valid);
    let queries_n = normalized_rows(queries, dim, 0..nq);

    let work = nq as f64 * valid.len() as f64 * dim as f64;
    let threads = if work < 4e6 {
        1
    } else {
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).min(nq.div_ceil(QUERY_BLOCK)).max(1)
    };
    let per_thread = nq.div_ceil(threads).max(1);
    let run = |qs: &[f32]| -> Vec<i64> {
        top_k_block(&panels, valid.len(), qs, dim, k)
            .iter()
            .map(|c| vote(c, &labels, num_classes, temperature))
            .collect()
    };
    if threads == 1 {
        return run(&queries_n);
    }
    std::thread::scope(|s| {
        let run = &run;
        let handles: Vec<_> = queries_n
            .chunks(per_thread * dim)
            .map(|qs| (qs, std::thread::Builder::new().spawn_scoped(s, move || run(qs))))
            .collect();
        let mut preds = Vec::with_capacity(nq);
        for (qs, handle) in handles {
            // A chunk whose thread could not be started (or failed) is computed on this thread instead.
            match handle.map(|h| h.join()) {
                Ok(Ok(p)) => preds.extend(p),
                _ => preds.extend(run(qs)),
            }
        }
        preds
    })
}

/// Weighted vote of the neighbours `cands`; returns the winning class (lowest on ties), or -1 without candidates.
fn vote(cands: &[Cand], labels: &[usize], num_classes: usize, temperature: f32) -> i64 {
    let Some(max_sim) = cands.iter().map(|c| c.sim).reduce(f32::max) else {
        return -1;
    };
    let mut votes = vec![0.0f64; num_classes];
    let t = temperature as f64;
    for c in cands {
        // Shifting by the largest similarity scales every weight by the same factor (argmax unchanged) and keeps
        // exp() from overflowing at small temperatures.
        let w = if t > 0.0 {
            ((c.sim as f64 - max_sim as f64) / t).exp()
        } else if c.sim == max_sim {
            1.0
        } else {
            0.0
        };
        votes[labels[c.idx]] += w;
    }
    let mut best = 0;
    for (j, &v) in votes.iter().enumerate() {
        if v > votes[best] {
            best = j;
        }
    }
    best as i64
}

/// Accuracy of [`knn_predict`] (same arguments) against `query_labels`: the fraction of queries whose prediction
/// equals their label, ignoring queries with a negative label. Returns `0.0` when no query is counted.
#[allow(clippy::too_many_arguments)]
pub fn knn_accuracy(
    bank: &[f32],
    bank_labels: &[i64],
    queries: &[f32],
    dim: usize,
    num_classes: usize,
    k: usize,
    temperature: f32,
    query_labels: &[i64],
) -> f64 {
    let preds = knn_predict(bank, bank_labels, queries, dim, num_classes, k, temperature);
    let (mut correct, mut counted) = (0u64, 0u64);
    for (&p, &l) in preds.iter().zip(query_labels) {
        if l < 0 {
            continue;
        }
        counted += 1;
        if p == l {
            correct += 1;
        }
    }
    if counted == 0 {
        0.0
    } else {
        correct as f64 / counted as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn knn_weights_beat_majority() {
        // Query (1, 0). Class 0: one neighbour at angle 0 (cos = 1). Class 1: two at ±30° (cos ≈ 0.866), one far.
        // k = 3 keeps the three closest. With T = 0.07: weights e^(1/0.07) vs 2·e^(0.866/0.07), ratio
        // e^(0.134/0.07) ≈ 6.8 > 2 -> class 0. With T = 1: e^1 ≈ 2.72 < 2·e^0.866 ≈ 4.76 -> class 1 (majority).
        let s = 0.5f32;
        let c = 0.75f32.sqrt();
        let bank = [
            2.0, 0.0, // class 0, scaled: normalization makes it (1, 0)
            c, s, // class 1
            c, -s, // class 1
            -1.0, 0.0, // class 1, far
            1.0, 0.01, // ignored: negative label
            0.0, 0.0, // zero vector: similarity 0
        ];
        let labels = [0, 1, 1, 1, -1, 0];
        let q = [3.0, 0.0];
        assert_eq!(knn_predict(&bank, &labels, &q, 2, 2, 3, 0.07), vec![0]);
        assert_eq!(knn_predict(&bank, &labels, &q, 2, 2, 3, 1.0), vec![1]);
        // k = 1 is nearest-neighbour; k larger than the bank is clamped (all 5 usable entries vote).
        assert_eq!(knn_predict(&bank, &labels, &q, 2, 2, 1, 1.0), vec![0]);
        assert_eq!(knn_predict(&bank, &labels, &q, 2, 2, 100, f32::INFINITY), vec![1]);
        // Temperature <= 0 -> only the most similar entries vote.
        assert_eq!(knn_predict(&bank, &labels, &q, 2, 2, 3, 0.0), vec![0]);
        let acc = knn_accuracy(&bank, &labels, &[1.0, 0.0, c, s + 0.01, 0.0, 0.0], 2, 2, 3, 0.07, &[0, 1, -1]);
        assert!(close(acc, 1.0));
    }

    #[test]
    fn knn_ties_and_degenerate_inputs() {
        // Equal votes for classes 1 and 0 -> lowest class.
        let bank = [1.0, 0.0, 1.0, 0.0];
        assert_eq!(knn_predict(&bank, &[1, 0], &[1.0, 0.0], 2, 2, 2, 0.1), vec![0]);
        // Tied similarities at the k-th place: the lower bank index is kept.
        assert_eq!(knn_predict(&bank, &[1, 0], &[1.0, 0.0], 2, 2, 1, 0.1), vec![1]);
        // Zero query: all similarities 0, all tied -> votes by count.
        assert_eq!(knn_predict(&[1.0, 0.0, 0.0, 1.0, -1.0, 0.0], &[2, 1, 1], &[0.0, 0.0], 2, 3, 3, 0.1), vec![1]);
        assert_eq!(knn_predict(&bank, &[0, 0], &[1.0, 0.0, 1.0], 0, 2, 1, 0.1), Vec::<i64>::new());
        assert_eq!(knn_predict(&[], &[], &[1.0, 0.0], 2, 2, 1, 0.1), vec![-1]);
        assert_eq!(knn_predict(&bank, &[0, 0], &[1.0, 0.0], 2, 2, 0, 0.1), vec![-1]);
        assert_eq!(knn_predict(&bank, &[0, 0], &[1.0, 0.0], 2, 0, 1, 0.1), vec![-1]);
        assert_eq!(knn_predict(&bank, &[5, -3], &[1.0, 0.0], 2, 2, 1, 0.1), vec![-1]);
        assert_eq!(knn_predict(&[f32::NAN, 1.0, 0.0, 1.0], &[0, 1], &[0.0, 1.0], 2, 2, 1, f32::NAN), vec![1]);
        assert_eq!(knn_accuracy(&bank, &[0, 0], &[], 2, 2, 1, 0.1, &[]), 0.0);
        assert_eq!(knn_accuracy(&[], &[], &[1.0, 0.0], 2, 2, 1, 0.1, &[0]), 0.0);
    }

    #[test]
    fn knn_blocked_matches_brute_force() {
        // Sizes that are not multiples of the lane count, the query group or the query block, and enough work to
        // take the multi-threaded path.
        let (dim, nb, nq, classes, k, t) = (37usize, 2000usize, 103usize, 7usize, 11usize, 0.1f32);
        let mut state = 99u64;
        let mut next = || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        };
        let bank: Vec<f32> = (0..nb * dim).map(|_| next()).collect();
        let queries: Vec<f32> = (0..nq * dim).map(|_| next()).collect();
        let labels: Vec<i64> = (0..nb).map(|i| (i * 7 % 11) as i64 - 3).collect(); // some < 0 and >= classes
        let got = knn_predict(&bank, &labels, &queries, dim, classes, k, t);
        let norm = |v: &[f32]| -> Vec<f64> {
            let n = v.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
            v.iter().map(|&x| x as f64 / n).collect()
        };
        let mut wants = Vec::new();
        for (qi, &pred) in got.iter().enumerate() {
            let q = norm(&queries[qi * dim..(qi + 1) * dim]);
            let mut sims: Vec<(f64, i64)> = (0..nb)
                .filter(|&i| labels[i] >= 0 && labels[i] < classes as i64)
                .map(|i| {
                    let b = norm(&bank[i * dim..(i + 1) * dim]);
                    (q.iter().zip(&b).map(|(x, y)| x * y).sum(), labels[i])
                })
                .collect();
            sims.sort_by(|a, b| b.0.partial_cmp(&a.0).unwrap());
            let mut votes = vec![0.0f64; classes];
            for &(s, l) in &sims[..k] {
                votes[l as usize] += (s / t as f64).exp();
            }
            let want = (0..classes).fold(0, |b, j| if votes[j] > votes[b] { j } else { b });
            assert_eq!(pred, want as i64, "query {qi}");
            wants.push(want as i64);
        }
        // Accuracy against labels the brute force says are right (two queries in three), wrong
        // (one in three, shifted class) or unlabeled (every seventh, ignored).
        let query_labels: Vec<i64> = wants
            .iter()
            .enumerate()
            .map(|(i, &w)| match i {
                _ if i % 7 == 0 => -1,
                _ if i % 3 == 0 => (w + 1) % classes as i64,
                _ => w,
            })
            .collect();
        let counted = query_labels.iter().filter(|&&l| l >= 0).count();
        let right = query_labels.iter().zip(&wants).filter(|(l, w)| l == w).count();
        assert!(right < counted && right > 0);
        let acc = knn_accuracy(&bank, &labels, &queries, dim, classes, k, t, &query_labels);
        assert!(close(acc, right as f64 / counted as f64), "{acc} vs {right}/{counted}");
    }
}
