//! siamlab-draw: the pictures siamlab makes for people to look at — training curves
//! ([`chart`]), contact sheets of samples ([`sheet`]) — with anti-aliased text ([`text`]) in
//! DejaVu Sans, embedded in the binary (a subset; `fonts/LICENSE-DejaVu.txt` is its licence),
//! so no font needs to be installed. [`encode_png`] turns a picture into PNG bytes (the caller
//! writes them with its atomic write).
//!
//! It knows pixels and text only: what to plot and which samples to show is for the crates
//! above it (the trainer's run folders, the pipeline's previews).
//!
//! ```
//! use siamlab_draw::chart::{line_chart, Panel, Series};
//! let loss = Series::new("loss", (1..=10).map(|e| (e as f64, 1.0 / e as f64)).collect());
//! let img = line_chart("SimSiam", &[Panel::new("loss", "epoch", "loss (−cos)", vec![loss])]);
//! assert!(img.width() >= 640);
//! ```
#![deny(missing_docs)]

pub mod chart;
mod png;
pub mod sheet;
pub mod text;

pub use png::encode_png;
