//! Evaluation metrics for image classification: top-1 accuracy, multi-label metrics (per-attribute accuracy,
//! exact ROC-AUC with tie handling identical to `sklearn.metrics.roc_auc_score`, Jaccard-style "accuracy" as used
//! by the seed paper) and a weighted k-nearest-neighbour classifier on frozen features (as in InstDisc, solo-learn
//! and lightly). Every function accepts arbitrary input without panicking: lengths that do not match are truncated
//! to the common whole number of rows, and empty inputs give the documented defaults (never NaN).

use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// Top-1 accuracy of row-major `logits` of shape `[N, num_classes]` against `labels` of length `N`.
///
/// The prediction of a row is its argmax; ties go to the lowest index, and a NaN counts as the maximum (the first
/// NaN wins), as `torch.argmax` does. Rows whose label is negative are ignored (neither right nor wrong); a label
/// `>= num_classes` is always wrong. Only whole rows present in both inputs are used
/// (`min(logits.len() / num_classes, labels.len())`). Returns the fraction of correct rows in `[0, 1]`, or `0.0`
/// when no row is counted (including `num_classes == 0`).
pub fn top1_accuracy(logits: &[f32], num_classes: usize, labels: &[i64]) -> f64 {
    if num_classes == 0 {
        return 0.0;
    }
    let (mut correct, mut counted) = (0u64, 0u64);
    for (row, &label) in logits.chunks_exact(num_classes).zip(labels) {
        if label < 0 {
            continue;
        }
        counted += 1;
        if argmax(row) as i64 == label {
            correct += 1;
        }
    }
    if counted == 0 {
        0.0
    } else {
        correct as f64 / counted as f64
    }
}

/// Index of the largest value: ties go to the lowest index, the first NaN wins (`torch.argmax` semantics).
/// Returns 0 for an empty slice.
fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (j, &v) in row.iter().enumerate().skip(1) {
        let b = row[best];
        if b.is_nan() {
            break;
        }
        if v.is_nan() || v > b {
            best = j;
        }
    }
    best
}

/// Metrics of a multi-label (binary attribute) classifier, as computed by [`multi_label_metrics`].
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MultiLabelMetrics {
    /// Mean over attributes of [`per_attribute_accuracy`](Self::per_attribute_accuracy) (plain accuracy at
    /// probability threshold 0.5).
    pub mean_accuracy: f64,
    /// For each attribute, the fraction of samples whose prediction (logit > 0, i.e. probability > 0.5) equals the
    /// target.
    pub per_attribute_accuracy: Vec<f64>,
    /// Mean of the per-attribute ROC-AUCs over the attributes that have both classes present; attributes with a
    /// single class are skipped, and `0.0` is reported when no attribute has both classes.
    pub macro_auc: f64,
    /// ROC-AUC over all flattened `(score, target)` pairs; `0.0` when the flattened targets hold a single class.
    pub micro_auc: f64,
    /// Mean over attributes of the Jaccard index `TP / (TP + FP + FN)` at threshold 0.5 (an attribute with
    /// `TP + FP + FN = 0` counts as 1.0). The seed paper calls this "macro accuracy".
    pub macro_jaccard: f64,
    /// Jaccard index over all flattened labels, `ΣTP / (ΣTP + ΣFP + ΣFN)` at threshold 0.5 (1.0 when the sum is
    /// 0). The seed paper calls this "micro accuracy".
    pub micro_jaccard: f64,
}

/// Multi-label metrics of row-major logits `scores` of shape `[N, num_attributes]` against 0/1 `targets` of the
/// same shape.
///
/// A sample is predicted positive for an attribute when its logit is `> 0` (probability `> 0.5`; a NaN logit
/// predicts negative). A target is positive when it is `> 0`, so both 0/1 and CelebA's raw -1/1 encodings work.
/// ROC-AUCs are exact rank statistics (see [`roc_auc`]); NaN scores are left out of them. Only whole rows present
/// in both inputs are used (`min(scores.len(), targets.len()) / num_attributes`).
///
/// With `num_attributes == 0` everything is `0.0` and `per_attribute_accuracy` is empty; with no rows every
/// field is `0.0` (and `per_attribute_accuracy` holds `num_attributes` zeros).
pub fn multi_label_metrics(scores: &[f32], targets: &[i8], num_attributes: usize) -> MultiLabelMetrics {
    let a = num_attributes;
    let n = scores.len().min(targets.len()).checked_div(a).unwrap_or(0);
    if n == 0 {
        return MultiLabelMetrics {
            mean_accuracy: 0.0,
            per_attribute_accuracy: vec![0.0; a],
            macro_auc: 0.0,
            micro_auc: 0.0,
            macro_jaccard: 0.0,
            micro_jaccard: 0.0,
        };
    }
    let scores = &scores[..n * a];
    let targets: Vec<bool> = targets[..n * a].iter().map(|&t| t > 0).collect();

    let mut per_attribute_accuracy = Vec::with_capacity(a);
    let (mut auc_sum, mut auc_count) = (0.0f64, 0usize);
    let mut jaccard_sum = 0.0f64;
    let (mut tp_all, mut fp_all, mut fn_all) = (0u64, 0u64, 0u64);
    let mut col_scores = Vec::with_capacity(n);
    let mut col_targets = Vec::with_capacity(n);
    for j in 0..a {
        col_scores.clear();
        col_targets.clear();
        let (mut tp, mut fp, mut fn_, mut correct) = (0u64, 0u64, 0u64, 0u64);
        for i in 0..n {
            let (s, t) = (scores[i * a + j], targets[i * a + j]);
            col_scores.push(s);
            col_targets.push(t);
            let p = s > 0.0;
            match (p, t) {
                (true, true) => tp += 1,
                (true, false) => fp += 1,
                (false, true) => fn_ += 1,
                (false, false) => {}
            }
            if p == t {
                correct += 1;
            }
        }
        per_attribute_accuracy.push(correct as f64 / n as f64);
        jaccard_sum += jaccard(tp, fp, fn_);
        (tp_all, fp_all, fn_all) = (tp_all + tp, fp_all + fp, fn_all + fn_);
        if let Some(auc) = roc_auc(&col_scores, &col_targets) {
            auc_sum += auc;
            auc_count += 1;
        }
    }
    MultiLabelMetrics {
        mean_accuracy: per_attribute_accuracy.iter().sum::<f64>() / a as f64,
        per_attribute_accuracy,
        macro_auc: if auc_count == 0 { 0.0 } else { auc_sum / auc_count as f64 },
        micro_auc: roc_auc(scores, &targets).unwrap_or(0.0),
        macro_jaccard: jaccard_sum / a as f64,
        micro_jaccard: jaccard(tp_all, fp_all, fn_all),
    }
}

/// `TP / (TP + FP + FN)`, with 1.0 when the denominator is 0.
fn jaccard(tp: u64, fp: u64, fn_: u64) -> f64 {
    let d = tp + fp + fn_;
    if d == 0 {
        1.0
    } else {
        tp as f64 / d as f64
    }
}

/// Exact area under the ROC curve of `scores` for binary `targets` (`true` = positive).
///
/// Computed in O(n log n) as the Mann–Whitney U statistic with average ranks for tied scores, i.e. the fraction of
/// (positive, negative) pairs where the positive scores higher, a tied pair counting 1/2 — the same value as
/// `sklearn.metrics.roc_auc_score`. Pairs with a NaN score are left out; `-0.0` and `0.0` are tied. Only the first
/// `min(scores.len(), targets.len())` pairs are used. Returns `None` when positives or negatives are absent.
pub fn roc_auc(scores: &[f32], targets: &[bool]) -> Option<f64> {
    // `s + 0.0` maps -0.0 to +0.0 so that `total_cmp` (which orders -0.0 before 0.0) sees them as equal.
    let mut pairs: Vec<(f32, bool)> =
        scores.iter().zip(targets).filter(|(s, _)| !s.is_nan()).map(|(&s, &t)| (s + 0.0, t)).collect();
    let n_pos = pairs.iter().filter(|p| p.1).count() as u64;
    let n_neg = pairs.len() as u64 - n_pos;
    if n_pos == 0 || n_neg == 0 {
        return None;
    }
    pairs.sort_unstable_by(|x, y| x.0.total_cmp(&y.0));
    // 2U = Σ over tie groups of pos_g · (2 · negatives strictly below + neg_g); exact in integers.
    let (mut twice_u, mut neg_below) = (0u128, 0u64);
    let mut i = 0;
    while i < pairs.len() {
        let s = pairs[i].0;
        let (mut pos_g, mut neg_g) = (0u64, 0u64);
        while i < pairs.len() && pairs[i].0 == s {
            if pairs[i].1 {
                pos_g += 1;
            } else {
                neg_g += 1;
            }
            i += 1;
        }
        twice_u += pos_g as u128 * (2 * neg_below as u128 + neg_g as u128);
        neg_below += neg_g;
    }
    Some(twice_u as f64 / (2.0 * n_pos as f64 * n_neg as f64))
}

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
    fn top1_ties_and_ignored_labels() {
        let logits = [
            1.0, 3.0, 3.0, // tie between 1 and 2 -> 1
            5.0, 5.0, 5.0, // all tied -> 0
            0.0, 0.0, 9.0, // -> 2, label ignored
            2.0, 1.0, 0.0, // -> 0, label 1 wrong
        ];
        let labels = [1, 0, -1, 1];
        assert!(close(top1_accuracy(&logits, 3, &labels), 2.0 / 3.0));
        assert!(close(top1_accuracy(&logits, 3, &[2, 0, -1, 0]), 2.0 / 3.0));
        // NaN counts as the maximum (first NaN wins), like torch.argmax.
        assert!(close(top1_accuracy(&[1.0, f32::NAN, f32::NAN], 3, &[1]), 1.0));
        assert_eq!(top1_accuracy(&[], 3, &[]), 0.0);
        assert_eq!(top1_accuracy(&logits, 0, &labels), 0.0);
        assert_eq!(top1_accuracy(&logits, 3, &[-1, -1]), 0.0);
        // Label out of range is wrong; a partial trailing row is ignored.
        assert!(close(top1_accuracy(&[0.0, 1.0, 7.0], 2, &[5, 0]), 0.0));
    }

    #[test]
    fn auc_with_ties_by_hand() {
        // Negatives {0.1, 0.4}, positives {0.35, 0.8, 0.4}. Pairs (pos, neg):
        // 0.35>0.1: 1, 0.35<0.4: 0, 0.8>0.1: 1, 0.8>0.4: 1, 0.4>0.1: 1, 0.4=0.4: 1/2 -> 4.5 / 6 = 0.75
        // (sklearn.metrics.roc_auc_score([0,0,1,1,1], [0.1,0.4,0.35,0.8,0.4]) == 0.75).
        let auc = roc_auc(&[0.1, 0.4, 0.35, 0.8, 0.4], &[false, false, true, true, true]).unwrap();
        assert!(close(auc, 0.75));
        // All scores tied -> every pair counts 1/2.
        assert!(close(roc_auc(&[0.3; 6], &[true, false, true, false, false, true]).unwrap(), 0.5));
        // -0.0 and 0.0 are the same score.
        assert!(close(roc_auc(&[-0.0, 0.0], &[true, false]).unwrap(), 0.5));
        // Perfect and inverted rankings.
        assert!(close(roc_auc(&[0.1, 0.2, 0.8, 0.9], &[false, false, true, true]).unwrap(), 1.0));
        assert!(close(roc_auc(&[0.9, 0.8, 0.2, 0.1], &[false, false, true, true]).unwrap(), 0.0));
        // One class absent, empty input.
        assert_eq!(roc_auc(&[0.1, 0.2], &[true, true]), None);
        assert_eq!(roc_auc(&[0.1, 0.2], &[false, false]), None);
        assert_eq!(roc_auc(&[], &[]), None);
        // NaN scores are dropped; lengths truncated to the shorter input.
        assert!(close(roc_auc(&[f32::NAN, 0.1, 0.9, 0.5], &[false, false, true]).unwrap(), 1.0));
    }

    #[test]
    fn auc_matches_pairwise_definition() {
        // Deterministic pseudo-random scores on a coarse grid (many ties), checked against the O(n^2) definition.
        let mut state = 12345u64;
        let mut next = || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (state >> 33) as u32
        };
        let n = 300;
        let scores: Vec<f32> = (0..n).map(|_| (next() % 17) as f32 / 4.0 - 2.0).collect();
        let targets: Vec<bool> = (0..n).map(|_| next() % 3 == 0).collect();
        let (mut num, mut den) = (0.0f64, 0.0f64);
        for i in 0..n {
            for j in 0..n {
                if targets[i] && !targets[j] {
                    den += 1.0;
                    num += match scores[i].partial_cmp(&scores[j]).unwrap() {
                        Ordering::Greater => 1.0,
                        Ordering::Equal => 0.5,
                        Ordering::Less => 0.0,
                    };
                }
            }
        }
        assert!((roc_auc(&scores, &targets).unwrap() - num / den).abs() < 1e-12);
    }

    #[test]
    fn multi_label_macro_vs_micro_by_hand() {
        // N = 4 rows, A = 2 attributes; (logit, target):
        //   row 0: (2.0, 1)  (2.2, 1)
        //   row 1: (1.0, 1)  (1.5, 0)
        //   row 2: (-1.0, 0) (2.5, 0)
        //   row 3: (-2.0, 0) (-1.5, 0)
        // Attribute 0: predictions 1,1,0,0 all correct -> acc 1, TP 2 FP 0 FN 0 -> Jaccard 1, AUC 1.
        // Attribute 1: predictions 1,1,1,0 vs 1,0,0,0 -> acc 2/4, TP 1 FP 2 FN 0 -> Jaccard 1/3;
        //   AUC: positive 2.2 beats 1.5 and -1.5, loses to 2.5 -> 2/3.
        // mean acc = (1 + 0.5)/2 = 0.75; macro AUC = (1 + 2/3)/2 = 5/6; macro Jaccard = (1 + 1/3)/2 = 2/3;
        // micro Jaccard = 3 / (3 + 2 + 0) = 3/5.
        // micro AUC: positives {2.0, 1.0, 2.2}, negatives {1.5, -1.0, 2.5, -2.0, -1.5}:
        //   2.0 beats 4, 1.0 beats 3, 2.2 beats 4 -> 11/15 (differs from the macro 5/6).
        let scores = [2.0, 2.2, 1.0, 1.5, -1.0, 2.5, -2.0, -1.5];
        let targets = [1, 1, 1, 0, 0, 0, 0, 0];
        let m = multi_label_metrics(&scores, &targets, 2);
        assert_eq!(m.per_attribute_accuracy, vec![1.0, 0.5]);
        assert!(close(m.mean_accuracy, 0.75));
        assert!(close(m.macro_auc, 5.0 / 6.0));
        assert!(close(m.micro_auc, 11.0 / 15.0));
        assert!(close(m.macro_jaccard, 2.0 / 3.0));
        assert!(close(m.micro_jaccard, 3.0 / 5.0));
        // CelebA's raw -1/1 targets give the same result.
        let raw: Vec<i8> = targets.iter().map(|&t| if t > 0 { 1 } else { -1 }).collect();
        assert_eq!(multi_label_metrics(&scores, &raw, 2), m);
    }

    #[test]
    fn jaccard_empty_and_single_class_attributes() {
        // Attribute 0: all negative targets and predictions -> TP+FP+FN = 0 -> Jaccard 1, AUC skipped.
        // Attribute 1: both classes, perfect -> Jaccard 1, AUC 1.
        let scores = [-1.0, 3.0, -2.0, -3.0];
        let targets = [0, 1, 0, 0];
        let m = multi_label_metrics(&scores, &targets, 2);
        assert_eq!(m.per_attribute_accuracy, vec![1.0, 1.0]);
        assert!(close(m.macro_jaccard, 1.0));
        assert!(close(m.micro_jaccard, 1.0));
        assert!(close(m.macro_auc, 1.0)); // only attribute 1 counts
        assert!(close(m.micro_auc, 1.0));
        // No attribute has both classes -> macro AUC 0.0 (documented), never NaN.
        let m = multi_label_metrics(&[-1.0, -2.0], &[0, 0], 1);
        assert_eq!((m.macro_auc, m.micro_auc, m.macro_jaccard, m.micro_jaccard), (0.0, 0.0, 1.0, 1.0));
        assert_eq!(m.mean_accuracy, 1.0);
    }

    #[test]
    fn multi_label_degenerate_inputs() {
        let m = multi_label_metrics(&[], &[], 3);
        assert_eq!(m.per_attribute_accuracy, vec![0.0; 3]);
        assert_eq!(m.mean_accuracy, 0.0);
        let m = multi_label_metrics(&[1.0, 2.0], &[1, 0], 0);
        assert!(m.per_attribute_accuracy.is_empty());
        assert_eq!(m.macro_jaccard, 0.0);
        // Mismatched lengths use the whole rows present in both; NaN logits predict negative.
        let m = multi_label_metrics(&[f32::NAN, 1.0, 5.0], &[0, 1, 1, 1, 0], 2);
        assert_eq!(m.per_attribute_accuracy, vec![1.0, 1.0]);
        for v in [m.mean_accuracy, m.macro_auc, m.micro_auc, m.macro_jaccard, m.micro_jaccard] {
            assert!(v.is_finite());
        }
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
        }
        assert!(knn_accuracy(&bank, &labels, &queries, dim, classes, k, t, &got) == 1.0);
    }

    #[test]
    fn metrics_struct_derives() {
        fn serde_both<T: serde::Serialize + serde::de::DeserializeOwned>() {}
        serde_both::<MultiLabelMetrics>();
        let m = multi_label_metrics(&[1.0, -1.0], &[1, 0], 1);
        let c = m.clone();
        assert_eq!(m, c);
        assert!(format!("{m:?}").contains("micro_jaccard"));
    }
}
