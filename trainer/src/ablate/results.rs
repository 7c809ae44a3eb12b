//! The results of an experiment: one [`ResultCell`] per row, column and metric (mean ± std over
//! the seeds, with the run folders), and the tables as Markdown ([`markdown`]).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::ablate::Experiment;
use crate::finetune::record::{EvalMetrics, Summary};

/// One number of the results, with where it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultCell {
    /// Row.
    pub row: String,
    /// Column.
    pub column: String,
    /// Metric name with split (`test top1`).
    pub metric: String,
    /// Values per seed.
    pub values: Vec<f64>,
    /// Mean.
    pub mean: f64,
    /// Sample std over seeds (0 for one seed).
    pub std: f64,
    /// Run folders.
    pub runs: Vec<String>,
}

fn metric_value(m: &EvalMetrics, name: &str) -> Option<f64> {
    let ml = m.multi_label.as_ref();
    match name {
        "top1" => m.top1,
        "mean_accuracy" => ml.map(|x| x.mean_accuracy),
        "macro_auc" => ml.map(|x| x.macro_auc),
        "micro_auc" => ml.map(|x| x.micro_auc),
        "macro_jaccard" => ml.map(|x| x.macro_jaccard),
        "micro_jaccard" => ml.map(|x| x.micro_jaccard),
        "loss" => Some(m.loss),
        _ => None,
    }
}

pub(crate) fn collect(e: &Experiment, summaries: &[(String, String, PathBuf, Summary)]) -> Vec<ResultCell> {
    let mut out = Vec::new();
    let mut keys: Vec<(String, String)> = Vec::new();
    for (r, c, _, _) in summaries {
        if !keys.contains(&(r.clone(), c.clone())) {
            keys.push((r.clone(), c.clone()));
        }
    }
    for (row, column) in keys {
        for split in ["val", "test"] {
            for metric in &e.metrics {
                let mut values = Vec::new();
                let mut runs = Vec::new();
                for (r, c, dir, s) in summaries {
                    if *r != row || *c != column {
                        continue;
                    }
                    let m = if split == "val" { Some(&s.val) } else { s.test.as_ref() };
                    if let Some(v) = m.and_then(|m| metric_value(m, metric)) {
                        values.push(v);
                        runs.push(dir.display().to_string());
                    }
                }
                if values.is_empty() {
                    continue;
                }
                let mean = values.iter().sum::<f64>() / values.len() as f64;
                let std = if values.len() > 1 {
                    (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (values.len() - 1) as f64).sqrt()
                } else {
                    0.0
                };
                out.push(ResultCell {
                    row: row.clone(),
                    column: column.clone(),
                    metric: format!("{split} {metric}"),
                    values,
                    mean,
                    std,
                    runs,
                });
            }
        }
    }
    out
}

/// The tables as Markdown: one table per metric, rows × columns, `mean ± std` (percent for
/// accuracies), and the run folders below.
pub fn markdown(e: &Experiment, cells: &[ResultCell], secs: f64) -> String {
    let mut rows: Vec<&str> = Vec::new();
    let mut cols: Vec<&str> = Vec::new();
    let mut metrics: Vec<&str> = Vec::new();
    for c in cells {
        if !rows.contains(&c.row.as_str()) {
            rows.push(&c.row);
        }
        if !cols.contains(&c.column.as_str()) {
            cols.push(&c.column);
        }
        if !metrics.contains(&c.metric.as_str()) {
            metrics.push(&c.metric);
        }
    }
    let mut s = format!("# {}\n\n", if e.title.is_empty() { &e.name } else { &e.title });
    s += &format!("Seeds: {:?}. Wall time of this invocation: {:.0} s.\n\n", e.seeds, secs);
    for m in &metrics {
        let pct = !m.ends_with("loss") && !m.contains("auc") && !m.contains("jaccard");
        s += &format!("## {m}{}\n\n| backbone |", if pct { " (%)" } else { "" });
        for c in &cols {
            s += &format!(" {c} |");
        }
        s += "\n|---|";
        s += &"---|".repeat(cols.len());
        s += "\n";
        for r in &rows {
            s += &format!("| {r} |");
            for c in &cols {
                match cells.iter().find(|x| x.row == *r && x.column == *c && x.metric == *m) {
                    Some(x) => {
                        let k = if pct { 100.0 } else { 1.0 };
                        if x.values.len() > 1 {
                            s += &format!(" {:.2} ± {:.2} |", k * x.mean, k * x.std);
                        } else {
                            s += &format!(" {:.2} |", k * x.mean);
                        }
                    }
                    None => s += " – |",
                }
            }
            s += "\n";
        }
        s += "\n";
    }
    s += "## Runs\n\n";
    for c in cells.iter().filter(|c| c.metric == metrics[0]) {
        s += &format!("- {} / {}: {}\n", c.row, c.column, c.runs.join(", "));
    }
    s
}
