//! Weights by their PyTorch names: import a torchvision / timm `state_dict` (ImageNet weights)
//! into a siamlab backbone, export a siamlab backbone so that PyTorch loads it strictly.
//!
//! The backbones' tensor names *are* the `state_dict` keys of torchvision `resnet18` and timm
//! `efficientnet_b0`, `vit_small_patch16_224` and `pit_ti_224` without their classifiers
//! (BatchNorm's running statistics included, `num_batches_tracked` counters excepted), so
//! [`import_state_dict`] matches by name and checks shapes:
//!
//! - every tensor of the model must be in the file with its shape; what is missing, what the
//!   file has beyond the model (classifier keys `fc.*`, `classifier.*`, `head.*`,
//!   `head_dist.*` and `num_batches_tracked` counters aside) and what has another shape are
//!   reported together in one [`Mismatch`];
//! - weights trained at another input size are resampled as timm does it
//!   (`timm.models.vision_transformer.checkpoint_filter_fn`, the function `create_model(...,
//!   pretrained=True, img_size=...)` applies): the position embedding's grid by bicubic
//!   interpolation (`align_corners=False`, antialiased — the default of timm 1.0's
//!   `resample_abs_pos_embed` and `checkpoint_filter_fn` — the class token kept),
//!   the patch-embedding kernel by `resample_patch_embed` (the pseudo-inverse of the bicubic
//!   resize). timm does not resample PiT (its loader leaves a FIXME); the same two rules apply
//!   to PiT's `[1, C, H, W]` position grid and its patch kernel here. The [`ImportReport`]
//!   says what was resampled, for the caller's log.
//!
//! [`export_state_dict`] gives the tensors under the same names. In PyTorch,
//! `model.load_state_dict(safetensors.torch.load_file(FILE), strict=True)` succeeds on the
//! headless model that [`pytorch_model`] spells out: torchvision `resnet18()` with
//! `fc = nn.Identity()` (or timm `resnet18`, same keys), timm models with `num_classes=0`, and
//! at other input sizes the `img_size` / `patch_size` (/ `stride`) siamlab's preset uses.
//! BatchNorm fills in its missing `num_batches_tracked` counters itself (a plain dict carries
//! no version metadata), so strict loading accepts the file.
//!
//! ```
//! use dfdx::prelude::*;
//! use siamlab_model::backbones::VitTiny32;
//! use siamlab_model::weights::{export_state_dict, import_state_dict, ImportOptions};
//!
//! let dev = Cpu::seed_from_u64(0);
//! let trained = VitTiny32::build(&dev);
//! let dict = export_state_dict(&trained);
//! assert_eq!(dict["pos_embed"].0, vec![1, 65, 48]);
//! let mut fresh = VitTiny32::build(&dev);
//! let report = import_state_dict(&mut fresh, &dict, &ImportOptions::default()).unwrap();
//! assert_eq!(report.loaded, dict.len());
//! assert!(report.resampled.is_empty());
//! ```

mod export;
mod import;
mod report;
mod resample;

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use dfdx::prelude::{BuildModule, Cpu};

pub use export::{export_by_name, export_state_dict, pytorch_model, Exported};
pub use import::{import_state_dict, ImportOptions};
pub use report::{ImportReport, MisShaped, Mismatch, Resampled};
pub use resample::{interpolate_bicubic, resample_patch_kernel, resample_pos_embed_tokens};

use crate::backbones::{with_backbone, Backbone, BackboneVisitor};
use crate::summary::{summary, Summary};
use crate::OpError;

/// Tensors by name: shape and values (row-major f32), as read from or written to a
/// safetensors file.
pub type StateDict = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

/// Keys a pretrained file may hold that a headless backbone does not: classifiers (torchvision
/// `fc`, timm `classifier`, `head`, `head_dist`).
pub const CLASSIFIER_PREFIXES: &[&str] = &["fc.", "classifier.", "head.", "head_dist."];

/// What went wrong importing or exporting weights.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WeightsError {
    /// Names or shapes do not match; every difference is listed.
    #[error("{0}")]
    Mismatch(Box<Mismatch>),
    /// The backbone could not be built or run (unknown name, unsupported size).
    #[error(transparent)]
    Backbone(#[from] OpError),
    /// The request cannot be met (a format without names for this backbone).
    #[error("{0}")]
    Unsupported(String),
    /// A patch kernel cannot be resampled between these sizes ([`resample_patch_kernel`]): the
    /// bicubic resize matrix is rank-deficient, so its pseudo-inverse is not unique (one side
    /// growing from 1 while the other shrinks, say).
    #[error(
        "the bicubic resize from {}x{} to {}x{} is rank-deficient; its pseudo-inverse is not unique",
        .from.0, .from.1, .to.0, .to.1
    )]
    RankDeficient {
        /// Kernel size before, (height, width).
        from: (usize, usize),
        /// Kernel size asked for, (height, width).
        to: (usize, usize),
    },
}

/// The PyTorch library whose names an export uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// torchvision (`resnet18` only: torchvision's other models name their layers differently).
    Torchvision,
    /// timm (all four architectures; timm's `resnet18` has torchvision's keys).
    Timm,
}

impl FromStr for Format {
    type Err = WeightsError;
    fn from_str(s: &str) -> Result<Self, WeightsError> {
        match s {
            "torchvision" => Ok(Format::Torchvision),
            "timm" => Ok(Format::Timm),
            _ => Err(WeightsError::Unsupported(format!("unknown format {s:?} (torchvision or timm)"))),
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Torchvision => "torchvision",
            Format::Timm => "timm",
        })
    }
}

/// A backbone chosen by name with weights imported, then one of these.
pub(crate) enum Then {
    Report,
    Summary(usize),
    Export,
}

pub(crate) struct Imported<'a> {
    pub dict: &'a StateDict,
    pub opts: &'a ImportOptions,
    pub then: Then,
}

pub(crate) type Outcome = (ImportReport, Option<Summary>, Option<StateDict>);

impl BackboneVisitor for Imported<'_> {
    type Output = Result<Outcome, WeightsError>;
    fn visit<B: Backbone<F> + BuildModule<Cpu, f32> + 'static, const F: usize>(self, mut b: B) -> Self::Output {
        let report = import_state_dict(&mut b, self.dict, self.opts)?;
        Ok(match self.then {
            Then::Report => (report, None, None),
            Then::Summary(size) => (report, Some(summary(&mut b, size)?), None),
            Then::Export => (report, None, Some(export_state_dict(&b))),
        })
    }
}

pub(crate) fn by_name(name: &str, image_size: usize, imported: Imported<'_>) -> Result<Outcome, WeightsError> {
    with_backbone(name, image_size, &Cpu::default(), imported)?
}

/// Imports `dict` into the preset `name` means at `image_size` ([`with_backbone`]) and reports
/// what loaded: a check that the weights fit.
pub fn import_by_name(
    name: &str,
    image_size: usize,
    dict: &StateDict,
    opts: &ImportOptions,
) -> Result<ImportReport, WeightsError> {
    Ok(by_name(name, image_size, Imported { dict, opts, then: Then::Report })?.0)
}

/// [`import_by_name`], then the backbone's [`summary`].
pub fn summary_with_weights(
    name: &str,
    image_size: usize,
    dict: &StateDict,
    opts: &ImportOptions,
) -> Result<(Summary, ImportReport), WeightsError> {
    let (report, s, _) = by_name(name, image_size, Imported { dict, opts, then: Then::Summary(image_size) })?;
    Ok((s.expect("asked for a summary"), report))
}
