//! `siamlab export`: a run's backbone under torchvision / timm names, for PyTorch.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use siamlab_model::weights::{export_by_name, Format, ImportOptions};
use siamlab_trainer::params::{load_safetensors, save_safetensors};
use siamlab_trainer::run::model_of;

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Run folder: a pretraining run (its backbone.safetensors) or a finetuning run (the
    /// backbone of its best.safetensors).
    #[arg(long)]
    run: PathBuf,
    /// Whose names: torchvision (resnet18 only) or timm (every backbone; timm's resnet18 has
    /// torchvision's keys).
    #[arg(long, value_parser = ["torchvision", "timm"])]
    format: String,
    /// The safetensors file to write.
    #[arg(long)]
    out: PathBuf,
}

pub fn run(args: ExportArgs) -> anyhow::Result<()> {
    // A pretraining run keeps the backbone alone; a finetuning run the backbone beside its head
    // (the backbone's keys under a `backbone.` prefix, which the import finds).
    let net = model_of(&args.run)?;
    let Some(file) = net.weights().map(|f| f.to_path_buf()) else {
        anyhow::bail!(
            "{}: neither backbone.safetensors nor best.safetensors (has the run finished? resume it)",
            args.run.display()
        )
    };
    let format: Format = args.format.parse()?;
    let dict = load_safetensors(&file)?;
    let opts = ImportOptions { resample: false, ..ImportOptions::default() };
    let ex = export_by_name(&net.backbone, net.image_size, &dict, &opts, format)
        .with_context(|| format!("{} ({} at {} px)", file.display(), net.backbone, net.image_size))?;
    save_safetensors(&args.out, &ex.tensors)?;
    let values: usize = ex.tensors.values().map(|(_, v)| v.len()).sum();
    outln!(
        "wrote {} ({} tensors, {} values: {} at {} px from {}, {} names)",
        args.out.display(),
        ex.tensors.len(),
        values,
        net.backbone,
        net.image_size,
        file.display(),
        format
    );
    match ex.pytorch {
        Some(python) => {
            outln!("load it in PyTorch (strict):");
            for line in python.split("; ") {
                outln!("    {line}");
            }
            outln!("    model.load_state_dict(safetensors.torch.load_file({:?}), strict=True)", args.out.display());
        }
        None => outln!("{} has no stock PyTorch counterpart; the names follow {format}", net.backbone),
    }
    Ok(())
}
