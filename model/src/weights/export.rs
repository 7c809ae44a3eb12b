//! Writing a backbone under PyTorch names: the tensors ([`export_state_dict`]), and the Python
//! that builds the headless torchvision / timm model loading them with `strict=True`
//! ([`pytorch_model`]).

use std::convert::Infallible;

use dfdx::nn::tensor_collection::TensorCollection;
use dfdx::prelude::{BuildModule, Cpu, Device};

use crate::backbones::{vit_s_patch_size, with_backbone, Backbone, BackboneVisitor};
use crate::visit_tensors;
use crate::weights::import::ImportOptions;
use crate::weights::report::ImportReport;
use crate::weights::{by_name, Format, Imported, StateDict, Then, WeightsError};

/// Every tensor of `model` under its PyTorch name: what `load_state_dict(strict=True)` takes on
/// the headless torchvision / timm model ([`pytorch_model`] spells it out).
pub fn export_state_dict<D: Device<f32>, M: TensorCollection<f32, D>>(model: &M) -> StateDict {
    let mut out = StateDict::new();
    let read = visit_tensors::<D, M, Infallible>(model, "", &mut |s, values| {
        out.insert(s.name.to_string(), (s.shape.to_vec(), values()));
        Ok(())
    });
    match read {
        Ok(()) => out,
        Err(never) => match never {},
    }
}

/// The Python that builds the headless PyTorch model a siamlab export of the preset `name`
/// means at `image_size` (see [`with_backbone`]) loads into with `strict=True`, as statements
/// binding `model`; `None` for the reduced presets without a PyTorch counterpart
/// (`resnet18_tiny`, `efficientnet_tiny`). Errors for torchvision names of a non-ResNet, an
/// unknown name or an unsupported size.
pub fn pytorch_model(name: &str, image_size: usize, format: Format) -> Result<Option<String>, WeightsError> {
    // The presets' own checks (name, size) first.
    with_backbone(name, image_size, &Cpu::default(), Nothing)?;
    let cifar_stem = "model.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False); model.maxpool = torch.nn.Identity()";
    let resnet = |cifar: bool| {
        let base = match format {
            Format::Torchvision => "model = torchvision.models.resnet18(); model.fc = torch.nn.Identity()".to_string(),
            Format::Timm => "model = timm.create_model(\"resnet18\", num_classes=0)".to_string(),
        };
        if cifar {
            format!("{base}; {cifar_stem}")
        } else {
            base
        }
    };
    let timm_only = |what: &str| {
        if format == Format::Torchvision {
            Err(WeightsError::Unsupported(format!(
                "torchvision has no {what} with timm's layer names; export {name} with --format timm"
            )))
        } else {
            Ok(())
        }
    };
    Ok(match name {
        "resnet18" => Some(resnet(image_size <= 96)),
        "resnet18_cifar" => Some(resnet(true)),
        "resnet18_imagenet" => Some(resnet(false)),
        "efficientnet_b0" => {
            timm_only("efficientnet_b0")?;
            let base = "model = timm.create_model(\"efficientnet_b0\", num_classes=0)";
            Some(if image_size <= 64 { format!("{base}; model.conv_stem.stride = (1, 1)") } else { base.into() })
        }
        "vit_s" => {
            timm_only("ViT-S")?;
            let p = vit_s_patch_size(image_size);
            Some(if (image_size, p) == (224, 16) {
                "model = timm.create_model(\"vit_small_patch16_224\", num_classes=0)".into()
            } else {
                format!(
                    "model = timm.create_model(\"vit_small_patch16_224\", img_size={image_size}, patch_size={p}, \
                     num_classes=0)"
                )
            })
        }
        "pit_ti" => {
            timm_only("PiT")?;
            let (p, s) = match image_size {
                32 => (4, 2),
                64 | 96 => (8, 4),
                _ => (16, 8),
            };
            Some(if image_size == 224 {
                "model = timm.create_model(\"pit_ti_224\", num_classes=0)".into()
            } else {
                format!(
                    "model = timm.create_model(\"pit_ti_224\", img_size={image_size}, patch_size={p}, stride={s}, \
                     num_classes=0)"
                )
            })
        }
        "vit_tiny" => {
            timm_only("ViT")?;
            let p = if image_size == 32 { 4 } else { 8 };
            Some(format!(
                "model = timm.models.vision_transformer.VisionTransformer(img_size={image_size}, patch_size={p}, \
                 embed_dim=48, depth=2, num_heads=6, num_classes=0)"
            ))
        }
        "pit_tiny" => {
            timm_only("PiT")?;
            Some(
                "model = timm.models.pit.PoolingVisionTransformer(img_size=32, patch_size=4, stride=2, \
                 base_dims=[8, 8, 8], depth=[1, 1, 1], heads=[2, 4, 8], mlp_ratio=4, num_classes=0)"
                    .into(),
            )
        }
        _ => None,
    })
}

/// Builds nothing of use: [`with_backbone`]'s checks alone.
struct Nothing;

impl BackboneVisitor for Nothing {
    type Output = ();
    fn visit<B: Backbone<F> + BuildModule<Cpu, f32> + 'static, const F: usize>(self, _: B) {}
}

/// An export: the tensors, how the weights were read, and the PyTorch model that loads them.
#[derive(Clone, Debug)]
pub struct Exported {
    /// The tensors under their PyTorch names.
    pub tensors: StateDict,
    /// The import of the siamlab weights (a check that they fit the preset).
    pub report: ImportReport,
    /// The Python building the model `load_state_dict(tensors, strict=True)` accepts
    /// ([`pytorch_model`]).
    pub pytorch: Option<String>,
}

/// Reads siamlab weights `dict` (a run's backbone) into the preset `name` means at
/// `image_size` and exports them under `format`'s names.
pub fn export_by_name(
    name: &str,
    image_size: usize,
    dict: &StateDict,
    opts: &ImportOptions,
    format: Format,
) -> Result<Exported, WeightsError> {
    let pytorch = pytorch_model(name, image_size, format)?;
    let (report, _, tensors) = by_name(name, image_size, Imported { dict, opts, then: Then::Export })?;
    Ok(Exported { tensors: tensors.expect("asked for an export"), report, pytorch })
}
