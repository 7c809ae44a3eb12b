//! The figures of runs, drawn from what their folders hold ([`Overview`]): a run's curves in one
//! figure (`curves.png`: SimSiam loss above kNN accuracy; a finetuning run's validation accuracy
//! above its losses), and several runs overlaid in one PNG (`siamlab plot`, `ablate`'s
//! `runs.png`), one colour per run.

use std::path::{Path, PathBuf};

use image::RgbImage;
use siamlab_draw::chart::{line_chart, Panel, Series};

use crate::error::{Error, IoContext, Result};
use crate::overview::Overview;
use crate::run::files::{write_atomic, CURVES};

/// A panel: its title, y-axis label (with unit), and the metrics it shows ([`Overview`]
/// names), the first one the main one (the only one when several runs are overlaid).
type PanelSpec = (&'static str, &'static str, &'static [(&'static str, &'static str)]);

/// The panels of a run's figure (see [`PanelSpec`]).
const PANELS: [PanelSpec; 4] = [
    (
        "SimSiam loss",
        "loss (−cos similarity)",
        &[("loss (−cos, −1 best)", "training"), ("held-out cos similarity", "held-out (−cos)")],
    ),
    ("kNN monitor", "kNN top-1 accuracy (%)", &[("kNN top-1 (%)", "kNN top-1")]),
    (
        "validation",
        "accuracy (%)",
        &[("validation top-1 (%)", "top-1"), ("validation mean attribute accuracy (%)", "mean attribute accuracy")],
    ),
    ("loss", "loss", &[("training loss", "training"), ("validation loss", "validation")]),
];

/// Points of metric `name` of a run, negated for the held-out similarity (drawn as a loss).
fn points(o: &Overview, name: &str) -> Option<Vec<(f64, f64)>> {
    let m = o.metrics.iter().find(|m| m.name == name)?;
    let sign = if name == "held-out cos similarity" { -1.0 } else { 1.0 };
    Some(m.values.iter().map(|&(e, v)| (e as f64, sign * v)).collect())
}

/// Short names of runs for the legend: their folder names, with the parent folder when two
/// would read the same.
fn labels(runs: &[Overview]) -> Vec<String> {
    let name = |p: &Path, parts: usize| {
        let c: Vec<String> = p.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
        c[c.len().saturating_sub(parts)..].join("/")
    };
    let short: Vec<String> = runs.iter().map(|o| name(&o.dir, 1)).collect();
    short
        .iter()
        .zip(runs)
        .map(|(s, o)| if short.iter().filter(|t| *t == s).count() > 1 { name(&o.dir, 2) } else { s.clone() })
        .collect()
}

/// The figure of one run, or of several overlaid, under `title`.
pub fn figure(title: &str, runs: &[Overview]) -> RgbImage {
    let single = runs.len() == 1;
    let names = labels(runs);
    let mut panels = Vec::new();
    for (panel_title, y_label, metrics) in PANELS {
        let mut series = Vec::new();
        for (run, run_name) in runs.iter().zip(&names) {
            for (k, (metric, short)) in metrics.iter().enumerate() {
                // Overlaid runs: the main metric (or the first of the alternatives a run has).
                if !single && k > 0 && series.iter().any(|s: &Series| s.label == *run_name) {
                    continue;
                }
                if let Some(p) = points(run, metric) {
                    let label = if single { short.to_string() } else { run_name.clone() };
                    series.push(Series::new(label, p));
                }
            }
        }
        if !series.is_empty() {
            panels.push(Panel::new(panel_title, "epoch", y_label, series));
        }
    }
    line_chart(title, &panels)
}

fn save(out: &Path, img: &RgbImage) -> Result<()> {
    write_atomic(out, &siamlab_draw::encode_png(img).at(out)?)
}

/// Draws a run's `curves.png` from its folder.
pub fn write_run_plot(run: &Path) -> Result<PathBuf> {
    let o = Overview::read(run)?;
    let backbone = o.config.first().map(|c| c.1.split(' ').next().unwrap_or("").to_string()).unwrap_or_default();
    let title = format!("{} of {backbone} — {}", o.kind, labels(std::slice::from_ref(&o))[0]);
    let out = run.join(CURVES);
    save(&out, &figure(&title, &[o]))?;
    Ok(out)
}

/// Overlays the runs in `runs` (pretraining and finetuning alike) in one PNG at `out`.
pub fn write_overlay(runs: &[PathBuf], title: &str, out: &Path) -> Result<()> {
    if runs.is_empty() {
        return Err(Error::config("no runs to plot"));
    }
    let overviews = runs.iter().map(|r| Overview::read(r)).collect::<Result<Vec<_>>>()?;
    save(out, &figure(title, &overviews))
}
