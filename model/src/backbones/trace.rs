//! What a backbone's forward pass reports of its stages ([`StageTrace`]): each stage's output
//! shape and parameter count, for [`crate::summary`]'s table.

use dfdx::prelude::{HasShape, Shape, Storage, Tensor};

/// One row of a [`Summary`]: a stage of the backbone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SummaryRow {
    /// The stage, named as in the state dict where it is one module (`layer1`, `blocks`).
    pub name: String,
    /// Its output shape, batch first.
    pub shape: Vec<usize>,
    /// Trainable parameters of the stage.
    pub params: usize,
}

/// Where a forward pass reports its stages; [`StageTrace::off`] for ordinary forwards (records
/// nothing and never calls the parameter counters).
#[derive(Debug, Default)]
pub struct StageTrace {
    rows: Option<Vec<SummaryRow>>,
}

impl StageTrace {
    /// A trace that records nothing.
    pub fn off() -> Self {
        StageTrace { rows: None }
    }

    /// A trace that records every stage.
    pub fn on() -> Self {
        StageTrace { rows: Some(Vec::new()) }
    }

    /// Records a stage's output; `params` is only called when the trace is on.
    pub fn record<S: Shape, D: Storage<f32>, T>(
        &mut self,
        name: &str,
        y: &Tensor<S, f32, D, T>,
        params: impl FnOnce() -> usize,
    ) {
        if let Some(rows) = &mut self.rows {
            rows.push(SummaryRow {
                name: name.to_string(),
                shape: y.shape().concrete().into_iter().collect(),
                params: params(),
            });
        }
    }

    /// The recorded rows (empty when off).
    pub fn into_rows(self) -> Vec<SummaryRow> {
        self.rows.unwrap_or_default()
    }
}
