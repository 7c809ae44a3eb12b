//! What a finetuning run records: [`EvalMetrics`] of a model on a split, one [`EpochRecord`] per
//! line of `metrics.jsonl`, the checkpointed progress ([`State`]) and the result
//! (`summary.json`, [`Summary`]).

use serde::{Deserialize, Serialize};

use crate::metrics::MultiLabelMetrics;

/// Metrics of a model on a split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalMetrics {
    /// Split (and hold-out) evaluated.
    pub split: String,
    /// Images.
    pub images: usize,
    /// Mean loss.
    pub loss: f64,
    /// Top-1 accuracy (single-label).
    pub top1: Option<f64>,
    /// Multi-label metrics.
    pub multi_label: Option<MultiLabelMetrics>,
}

impl EvalMetrics {
    /// The number model selection maximises: top-1, or mean attribute accuracy.
    pub fn score(&self) -> f64 {
        self.top1.or(self.multi_label.as_ref().map(|m| m.mean_accuracy)).unwrap_or(0.0)
    }

    /// One line for the log.
    pub fn line(&self) -> String {
        match (&self.top1, &self.multi_label) {
            (Some(t), _) => format!("{}: top-1 {:.2}%  loss {:.4}", self.split, 100.0 * t, self.loss),
            (_, Some(m)) => format!(
                "{}: mean acc {:.2}%  macro AUC {:.4}  micro AUC {:.4}  macro/micro Jaccard {:.4}/{:.4}  loss {:.4}",
                self.split,
                100.0 * m.mean_accuracy,
                m.macro_auc,
                m.micro_auc,
                m.macro_jaccard,
                m.micro_jaccard,
                self.loss
            ),
            _ => format!("{}: loss {:.4}", self.split, self.loss),
        }
    }
}

/// Per-epoch record (`metrics.jsonl`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// Epoch.
    pub epoch: u64,
    /// Mean training loss.
    pub train_loss: f64,
    /// Validation metrics.
    pub val: EvalMetrics,
    /// Images per second.
    pub images_per_sec: f64,
    /// Seconds the epoch took, validation included (0 in runs written before it was recorded).
    #[serde(default)]
    pub seconds: f64,
}

/// Checkpointed progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct State {
    pub epoch: u64,
    pub step: u64,
    pub optimizer_t: u64,
    pub best: Option<(u64, f64)>,
    pub history: Vec<EpochRecord>,
}

/// The result (`summary.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Initialisation.
    pub init: String,
    /// Linear evaluation or full finetuning.
    pub linear: bool,
    /// Best epoch by validation.
    pub best_epoch: u64,
    /// Validation metrics of the best epoch.
    pub val: EvalMetrics,
    /// Test metrics of the best epoch.
    pub test: Option<EvalMetrics>,
    /// Every epoch.
    pub history: Vec<EpochRecord>,
}
