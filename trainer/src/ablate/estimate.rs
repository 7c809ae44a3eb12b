//! How long an experiment's steps will take, before running them: images per split and ingest
//! speed of each source, training seconds per image of each backbone (measured on a 2-core CPU).

use std::collections::BTreeMap;
use std::path::Path;

use siamlab_model::backbones::vit_s_patch_size;

use crate::ablate::{DatasetSpec, Plan, Step};

impl Plan {
    /// Estimated seconds of each step on a 2-core CPU, from measured throughputs (see
    /// `seconds_per_image` and `DataShape`).
    pub fn estimate_secs(&self) -> Vec<f64> {
        let mut data = BTreeMap::new();
        for s in &self.steps {
            if let Step::Ingest { id, spec } = s {
                data.insert(self.data_of(id), DataShape::of(spec));
            }
        }
        let unknown = DataShape::of(&DatasetSpec { source: "folder".into(), ..Default::default() });
        let shape = |p: &Path| data.get(p).unwrap_or(&unknown);
        self.steps
            .iter()
            .map(|s| match s {
                Step::Ingest { id, .. } => {
                    let d = shape(&self.data_of(id));
                    d.splits.iter().map(|(_, n)| n).sum::<f64>() * d.ingest_per_image
                }
                Step::Pretrain { config, .. } => {
                    let d = shape(&config.data);
                    let n = d.images(&config.split) * config.fraction;
                    let size = config.image_size.unwrap_or(d.side);
                    2.0 * n * config.epochs as f64 * seconds_per_image(&config.backbone, size)
                }
                Step::Finetune { config, .. } => {
                    let d = shape(&config.data);
                    let n = d.images("train") * config.fraction;
                    let size = config.image_size.unwrap_or(d.side);
                    let per = seconds_per_image(config.backbone.as_deref().unwrap_or("resnet18"), size);
                    // Linear evaluation: one pass to extract features, the head is negligible.
                    let epochs = if config.linear { 1.0 } else { config.epochs as f64 };
                    // Evaluation passes cost about a third of a training pass: the validation
                    // split (or a 10% hold-out of the training images) every epoch, then the test split.
                    let val = match d.images("valid") {
                        v if v > 0.0 => v,
                        _ => 0.1 * n,
                    };
                    let eval = epochs * val + d.images("test");
                    (n * epochs + eval / 3.0) * per
                }
            })
            .collect()
    }
}

/// `secs` as "42 s", "17 min", "2.5 h" or "9 days".
pub fn duration(secs: f64) -> String {
    if secs < 90.0 {
        format!("{secs:.0} s")
    } else if secs < 5400.0 {
        format!("{:.0} min", secs / 60.0)
    } else if secs < 172_800.0 {
        format!("{:.1} h", secs / 3600.0)
    } else {
        format!("{:.0} days", secs / 86_400.0)
    }
}

/// What an estimate needs of a dataset: images per split, their side, and the seconds
/// `siamlab ingest` spends per image (measured on a 2-core CPU: CIFAR-10 60,000 images in 3 s,
/// STL-10 113,000 at 96 px → 32 px in 47 s, CelebA 202,599 JPEGs → 32 px in 57 s).
struct DataShape {
    splits: Vec<(&'static str, f64)>,
    side: usize,
    ingest_per_image: f64,
}

impl DataShape {
    fn of(spec: &DatasetSpec) -> DataShape {
        let count = |d: u64| spec.count.unwrap_or(d) as f64;
        let (splits, side, per) = match spec.source.as_str() {
            "cifar10" | "cifar100" => (vec![("train", 50_000.0), ("test", 10_000.0)], 32, 5e-5),
            "stl10" => (vec![("train", 5_000.0), ("test", 8_000.0), ("unlabeled", 100_000.0)], 96, 4.2e-4),
            "celeba" => (vec![("train", 162_770.0), ("valid", 19_867.0), ("test", 19_962.0)], 178, 2.8e-4),
            "random" => (vec![("train", count(10_000))], 32, 5e-5),
            "shapes" => (vec![("train", count(5_000)), ("test", spec.test_count.unwrap_or(1_000) as f64)], 32, 5e-5),
            _ => (vec![("train", count(10_000))], 224, 2e-3),
        };
        let side = spec.resize.or(spec.size).map(|s| s as usize).unwrap_or(side);
        DataShape { splits, side, ingest_per_image: per }
    }

    fn images(&self, split: &str) -> f64 {
        self.splits.iter().find(|(k, _)| *k == split).map(|(_, n)| *n).unwrap_or(0.0)
    }
}

/// Seconds one image takes through a training pass of `backbone` at `size` px (forward,
/// backward, optimizer share, augmentation, monitors) on a 2-core CPU with batch 64: measured
/// at 32 px (SimSiam pairs/s ÷ 2, `siamlab ablate experiments/*-cpu.toml`, `siamlab bench
/// simsiam`) and scaled by the pixel count, or for ViT / PiT by the token count of the preset.
fn seconds_per_image(backbone: &str, size: usize) -> f64 {
    let per_32 = match backbone {
        "resnet18_tiny" => 1.0 / 660.0,
        "efficientnet_tiny" => 1.0 / 334.0,
        "vit_tiny" => 1.0 / 790.0,
        "pit_tiny" => 1.0 / 450.0,
        "efficientnet_b0" => 1.0 / 62.0,
        "vit_s" => 1.0 / 15.4,
        "pit_ti" => 1.0 / 57.6,
        _ => 1.0 / 32.4, // resnet18 (CIFAR stem)
    };
    let tokens = |s: usize, patch: usize, stride: usize| {
        let g = (s.saturating_sub(patch) / stride + 1) as f64;
        g * g
    };
    // The ViT and PiT presets share the patch sizes; PiT's stride is half its patch.
    let patch = vit_s_patch_size(size);
    let scale = match backbone {
        "vit_s" | "vit_tiny" => tokens(size, patch, patch) / tokens(32, 4, 4),
        "pit_ti" | "pit_tiny" => tokens(size, patch, patch / 2) / tokens(32, 4, 2),
        // A stride-4 ImageNet stem (ResNet-18 above 96 px) or EfficientNet's stride-2 stem (above
        // 64 px) costs what the CIFAR / stride-1 stem costs at a quarter / half the side.
        "resnet18_imagenet" => (size as f64 / 128.0).powi(2),
        "resnet18" | "resnet18_tiny" if size > 96 => (size as f64 / 128.0).powi(2),
        "efficientnet_b0" if size > 64 => (size as f64 / 64.0).powi(2),
        _ => (size as f64 / 32.0).powi(2),
    };
    per_32 * scale
}
