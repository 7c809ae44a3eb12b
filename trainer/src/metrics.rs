//! Evaluation metrics for image classification: top-1 accuracy, multi-label metrics (per-attribute accuracy,
//! exact ROC-AUC with tie handling identical to `sklearn.metrics.roc_auc_score`, Jaccard-style "accuracy" as used
//! by the seed paper); the k-nearest-neighbour classifier on frozen features is [`crate::knn`]. Every function accepts arbitrary input without panicking: lengths that do not match are truncated
//! to the common whole number of rows, and empty inputs give the documented defaults (never NaN).

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

#[cfg(test)]
mod tests {
    use std::cmp::Ordering;

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

    /// `summary.json` and `results.json` store these metrics; `siamlab ablate` and old runs read
    /// them back by these field names, and a value must come back bit for bit (the tables are
    /// rebuilt from the files).
    #[test]
    fn multi_label_metrics_keep_their_names_and_values_in_json() {
        let m = multi_label_metrics(&[0.3, -1.7, 2.5, 0.1, -0.2, 1.3], &[1, 0, 1, 0, 0, 1], 3);
        let v = serde_json::to_value(&m).unwrap();
        let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(|k| k.as_str()).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            ["macro_auc", "macro_jaccard", "mean_accuracy", "micro_auc", "micro_jaccard", "per_attribute_accuracy"]
        );
        let back: MultiLabelMetrics = serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
        assert_eq!(back, m);
        assert_eq!(back.mean_accuracy.to_bits(), m.mean_accuracy.to_bits());
        assert_eq!(back.micro_auc.to_bits(), m.micro_auc.to_bits());
    }
}
