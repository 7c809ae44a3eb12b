//! `siamlab model ...`.

use clap::Subcommand;
use siamlab_model::backbones::{summary_by_name, BACKBONE_NAMES};

#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// Each block's output shape and parameter count, and the total (as torchinfo prints them).
    Summary {
        /// Backbone: resnet18, resnet18_cifar, resnet18_imagenet, efficientnet_b0, vit_s, pit_ti,
        /// or a reduced-width preset (resnet18_tiny, efficientnet_tiny, vit_tiny, pit_tiny).
        #[arg(long)]
        backbone: String,
        /// Input image side in pixels.
        #[arg(long, default_value_t = 32)]
        image_size: usize,
    },
}

pub fn run(cmd: ModelCommand) -> anyhow::Result<()> {
    match cmd {
        ModelCommand::Summary { backbone, image_size } => {
            if !BACKBONE_NAMES.contains(&backbone.as_str()) {
                anyhow::bail!("unknown backbone {backbone:?} (one of: {})", BACKBONE_NAMES.join(", "));
            }
            let s = summary_by_name(&backbone, image_size)?;
            outln!("{s}");
            Ok(())
        }
    }
}
