//! `siamlab model ...`.

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use siamlab_model::backbones::summary_by_name;
use siamlab_model::weights::{summary_with_weights, ImportOptions};
use siamlab_trainer::params::load_safetensors;

#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// Each block's output shape and parameter count, and the total (as torchinfo prints them).
    Summary {
        /// Backbone: resnet18, resnet18_cifar, resnet18_imagenet, efficientnet_b0, vit_s, pit_ti,
        /// or a reduced-width preset (resnet18_tiny, efficientnet_tiny, vit_tiny, pit_tiny).
        #[arg(long, value_parser = super::names::BACKBONE)]
        backbone: String,
        /// Input image side in pixels.
        #[arg(long, default_value_t = 32)]
        image_size: usize,
        /// Load this safetensors file (torchvision / timm names, e.g. ImageNet weights, or a
        /// siamlab backbone.safetensors) and report what loaded, what was resampled to the input
        /// size and what was skipped.
        #[arg(long)]
        weights: Option<PathBuf>,
    },
}

pub fn run(cmd: ModelCommand) -> anyhow::Result<()> {
    match cmd {
        ModelCommand::Summary { backbone, image_size, weights } => {
            let s = match weights {
                None => summary_by_name(&backbone, image_size)?,
                Some(file) => {
                    let dict = load_safetensors(&file)?;
                    let (s, report) = summary_with_weights(&backbone, image_size, &dict, &ImportOptions::default())
                        .with_context(|| file.display().to_string())?;
                    outln!("weights {}:", file.display());
                    for line in report.lines() {
                        outln!("  {line}");
                    }
                    s
                }
            };
            outln!("{s}");
            Ok(())
        }
    }
}
