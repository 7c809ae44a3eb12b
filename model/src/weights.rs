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

mod resample;

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use dfdx::nn::tensor_collection::{
    RecursiveWalker, TensorCollection, TensorOptions, TensorVisitor, ViewTensorMut, ViewTensorName, ViewTensorRef,
};
use dfdx::prelude::{BuildModule, Cpu, Device, HasShape, Shape, Tensor};

pub use resample::{interpolate_bicubic, resample_patch_kernel, resample_pos_embed_tokens};

use crate::backbones::{vit_s_patch_size, with_backbone, Backbone, BackboneVisitor};
use crate::summary::{summary, thousands, Summary};
use crate::{named_tensors, OpError};

/// Tensors by name: shape and values (row-major f32), as read from or written to a
/// safetensors file.
pub type StateDict = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

/// Keys a pretrained file may hold that a headless backbone does not: classifiers (torchvision
/// `fc`, timm `classifier`, `head`, `head_dist`).
pub const CLASSIFIER_PREFIXES: &[&str] = &["fc.", "classifier.", "head.", "head_dist."];

/// How [`import_state_dict`] reads a state dict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportOptions {
    /// Read the keys under this prefix (`backbone.` in a finetuning checkpoint). Empty: the
    /// model's own names, or the one prefix under which the file holds them all (a
    /// `module.`-wrapped checkpoint), found and reported.
    pub prefix: String,
    /// Resample position embeddings and patch kernels of another input size (`true`); with
    /// `false` those are mis-shaped.
    pub resample: bool,
    /// Antialias when resampling: `true` as timm 1.0 does by default; `false` for the plain
    /// bicubic older timm releases used.
    pub antialias: bool,
}

impl Default for ImportOptions {
    fn default() -> Self {
        ImportOptions { prefix: String::new(), resample: true, antialias: true }
    }
}

/// A tensor that was resampled on import.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resampled {
    /// Its key.
    pub name: String,
    /// Shape in the file.
    pub from: Vec<usize>,
    /// Shape in the model.
    pub to: Vec<usize>,
    /// How, in words.
    pub how: String,
}

/// What [`import_state_dict`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImportReport {
    /// Tensors written into the model (all of its tensors).
    pub loaded: usize,
    /// Numbers written.
    pub values: usize,
    /// The prefix the keys were read under, when one was found rather than given.
    pub prefix_found: Option<String>,
    /// Tensors resampled to the model's input size.
    pub resampled: Vec<Resampled>,
    /// Keys of the file skipped: classifiers and BatchNorm counters.
    pub skipped: Vec<String>,
}

impl ImportReport {
    /// One line per event, for a log: what loaded, each resampling, what was skipped.
    pub fn lines(&self) -> Vec<String> {
        let mut out = vec![format!("loaded {} tensors ({} values)", self.loaded, thousands(self.values))];
        if let Some(p) = &self.prefix_found {
            out[0].push_str(&format!(" from the keys under {p:?}"));
        }
        for r in &self.resampled {
            out.push(format!("resampled {} {:?} -> {:?}: {}", r.name, r.from, r.to, r.how));
        }
        let counters = self.skipped.iter().filter(|k| k.ends_with("num_batches_tracked")).count();
        let classifier: Vec<&str> =
            self.skipped.iter().filter(|k| !k.ends_with("num_batches_tracked")).map(String::as_str).collect();
        if !classifier.is_empty() {
            out.push(format!("skipped the classifier: {}", classifier.join(", ")));
        }
        if counters > 0 {
            out.push(format!("skipped {counters} BatchNorm num_batches_tracked counters"));
        }
        out
    }
}

impl fmt::Display for ImportReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.lines().join("; "))
    }
}

/// A tensor whose shape in the file differs from the model's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MisShaped {
    /// Its key.
    pub name: String,
    /// Shape in the file.
    pub file: Vec<usize>,
    /// Shape in the model.
    pub model: Vec<usize>,
    /// Why it could not be resampled, when resampling was tried.
    pub note: Option<String>,
}

/// Everything that keeps a state dict from loading into a model, found in one pass.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Mismatch {
    /// Tensors of the model not in the file, with the model's shapes.
    pub missing: Vec<(String, Vec<usize>)>,
    /// Keys of the file the model does not have (classifiers and counters aside), with their
    /// shapes.
    pub unexpected: Vec<(String, Vec<usize>)>,
    /// Tensors of another shape.
    pub mis_shaped: Vec<MisShaped>,
    /// A likely cause, when one is recognised.
    pub hint: Option<String>,
}

impl Mismatch {
    /// `true` when nothing is wrong.
    pub fn is_empty(&self) -> bool {
        self.missing.is_empty() && self.unexpected.is_empty() && self.mis_shaped.is_empty()
    }
}

/// At most this many keys of each kind in the message.
const LIST: usize = 8;

fn list<T>(items: &[T], show: impl Fn(&T) -> String) -> String {
    let mut parts: Vec<String> = items.iter().take(LIST).map(show).collect();
    if items.len() > LIST {
        parts.push(format!("and {} more", items.len() - LIST));
    }
    parts.join(", ")
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if !self.missing.is_empty() {
            parts.push(format!(
                "{} missing ({})",
                self.missing.len(),
                list(&self.missing, |(k, s)| format!("{k} {s:?}"))
            ));
        }
        if !self.unexpected.is_empty() {
            parts.push(format!(
                "{} unexpected ({})",
                self.unexpected.len(),
                list(&self.unexpected, |(k, s)| format!("{k} {s:?}"))
            ));
        }
        if !self.mis_shaped.is_empty() {
            parts.push(format!(
                "{} mis-shaped ({})",
                self.mis_shaped.len(),
                list(&self.mis_shaped, |m| {
                    let note = m.note.as_ref().map(|n| format!(": {n}")).unwrap_or_default();
                    format!("{} file {:?} vs model {:?}{note}", m.name, m.file, m.model)
                })
            ));
        }
        write!(f, "the state dict does not match the model: {}", parts.join("; "))?;
        if let Some(h) = &self.hint {
            write!(f, " (hint: {h})")?;
        }
        Ok(())
    }
}

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

struct Write<'a>(&'a BTreeMap<String, Vec<f32>>);

impl<D: Device<f32>> TensorVisitor<f32, D> for Write<'_> {
    type Viewer = (ViewTensorName, ViewTensorMut);
    type Err = std::convert::Infallible;
    type E2 = f32;
    type D2 = D;

    fn visit<S: Shape>(
        &mut self,
        _: TensorOptions<S, f32, D>,
        (name, t): (String, &mut Tensor<S, f32, D>),
    ) -> Result<Option<Tensor<S, f32, D>>, Self::Err> {
        if let Some(values) = self.0.get(&name) {
            t.copy_from(values);
        }
        Ok(None)
    }
}

struct Read(StateDict);

impl<D: Device<f32>> TensorVisitor<f32, D> for Read {
    type Viewer = (ViewTensorName, ViewTensorRef);
    type Err = std::convert::Infallible;
    type E2 = f32;
    type D2 = D;

    fn visit<S: Shape>(
        &mut self,
        _: TensorOptions<S, f32, D>,
        (name, t): (String, &Tensor<S, f32, D>),
    ) -> Result<Option<Tensor<S, f32, D>>, Self::Err> {
        let shape = t.shape().concrete().into_iter().collect();
        self.0.insert(name, (shape, t.as_vec()));
        Ok(None)
    }
}

/// Every tensor of `model` under its PyTorch name: what `load_state_dict(strict=True)` takes on
/// the headless torchvision / timm model ([`pytorch_model`] spells it out).
pub fn export_state_dict<D: Device<f32>, M: TensorCollection<f32, D>>(model: &M) -> StateDict {
    let mut read = Read(StateDict::new());
    match M::iter_tensors(&mut RecursiveWalker { m: (String::new(), model), f: &mut read }) {
        Ok(_) => read.0,
        Err(never) => match never {},
    }
}

/// A key of the file that a headless backbone does not expect to find a home for.
fn skippable(name: &str) -> bool {
    name.ends_with("num_batches_tracked") || CLASSIFIER_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// timm's PiT checkpoints before 0.5 named the pooling layers `pools.N` (`transformers.N+1.pool`
/// now); timm's `pit.checkpoint_filter_fn` renames them, so does this.
fn modern_name(name: &str) -> String {
    if let Some(rest) = name.strip_prefix("pools.") {
        if let Some((n, tail)) = rest.split_once('.') {
            if let Ok(n) = n.parse::<usize>() {
                return format!("transformers.{}.pool.{tail}", n + 1);
            }
        }
    }
    name.to_string()
}

/// The prefix under which `dict` holds the model's keys: `given` if not empty; none if the
/// first key is there as it is; else the one prefix `p` with `p + key` present for the first
/// and last keys of the model.
fn find_prefix(names: &[String], dict: &StateDict, given: &str) -> (String, bool) {
    if !given.is_empty() || names.is_empty() || dict.contains_key(&names[0]) {
        return (given.to_string(), false);
    }
    let first = format!(".{}", names[0]);
    let last = names.last().expect("not empty");
    for key in dict.keys() {
        if let Some(stem) = key.strip_suffix(&first) {
            let p = format!("{stem}.");
            if dict.contains_key(&format!("{p}{last}")) {
                return (p, true);
            }
        }
    }
    (String::new(), false)
}

fn isqrt(n: usize) -> Option<usize> {
    let r = (n as f64).sqrt().round() as usize;
    (r * r == n).then_some(r)
}

/// Resamples a tensor of another input size if it is one timm resamples: `Ok(None)` when it
/// is not such a tensor, `Err` when it is but cannot be.
fn resample_one(
    name: &str,
    from: &[usize],
    data: &[f32],
    to: &[usize],
    antialias: bool,
) -> Result<Option<(Vec<f32>, String)>, String> {
    let aa = if antialias { "with antialias" } else { "without antialias" };
    let x: Vec<f64> = data.iter().map(|&v| v as f64).collect();
    let back = |v: Vec<f64>| v.into_iter().map(|v| v as f32).collect::<Vec<f32>>();
    match (name, from, to) {
        // ViT: [1, 1 + h·w, D], the class token first.
        ("pos_embed", &[1, t0, d0], &[1, t1, d1]) if d0 == d1 => {
            let (Some(g0), Some(g1)) = (isqrt(t0.saturating_sub(1)), isqrt(t1.saturating_sub(1))) else {
                return Err("the tokens after the class token do not form a square grid".into());
            };
            let y = resample_pos_embed_tokens(&x, 1, d0, (g0, g0), (g1, g1), antialias);
            Ok(Some((back(y), format!("{g0}x{g0} -> {g1}x{g1} position grid, bicubic {aa}, class token kept"))))
        }
        // PiT: [1, C, H, W].
        ("pos_embed", &[1, c0, h0, w0], &[1, c1, h1, w1]) if c0 == c1 => {
            let y = interpolate_bicubic(&x, c0, (h0, w0), (h1, w1), antialias);
            Ok(Some((back(y), format!("{h0}x{w0} -> {h1}x{w1} position grid, bicubic {aa}"))))
        }
        (_, &[o0, i0, kh, kw], &[o1, i1, nh, nw])
            if (name.ends_with("patch_embed.proj.weight") || name.ends_with("patch_embed.conv.weight"))
                && (o0, i0) == (o1, i1) =>
        {
            let y = resample_patch_kernel(&x, o0 * i0, (kh, kw), (nh, nw), antialias)?;
            Ok(Some((
                back(y),
                format!("{kh}x{kw} -> {nh}x{nw} patch kernel, pseudo-inverse of the bicubic resize {aa} (timm's resample_patch_embed)"),
            )))
        }
        _ => Ok(None),
    }
}

fn hint(m: &Mismatch, names: &[String], dict: &StateDict) -> Option<String> {
    if m.mis_shaped.iter().any(|s| s.name == "conv1.weight" && s.file.ends_with(&[7, 7]) && s.model.ends_with(&[3, 3]))
    {
        return Some(
            "the file has ResNet's 7x7 ImageNet stem, the model the 3x3 CIFAR stem (`resnet18` picks it up to \
             96 px); use the backbone resnet18_imagenet for these weights"
                .into(),
        );
    }
    if m.missing.len() == names.len() && !names.is_empty() {
        let theirs = dict.keys().next().map(String::as_str).unwrap_or("(none)");
        return Some(format!(
            "none of the model's keys are in the file: its keys look like {theirs:?}, the model's like {:?}",
            names[0]
        ));
    }
    None
}

/// Loads `dict` (PyTorch `state_dict` names, see the [module docs](self)) into `model`: checks
/// every key and shape first and, on any difference, changes nothing and returns one
/// [`Mismatch`] listing them all; resamples position embeddings and patch kernels of another
/// input size when `opts.resample`. Returns what was done.
pub fn import_state_dict<D: Device<f32>, M: TensorCollection<f32, D>>(
    model: &mut M,
    dict: &StateDict,
    opts: &ImportOptions,
) -> Result<ImportReport, WeightsError> {
    let wanted = named_tensors(&*model);
    let names: Vec<String> = wanted.iter().map(|t| t.name.clone()).collect();
    let (prefix, found) = find_prefix(&names, dict, &opts.prefix);
    let mut file: BTreeMap<String, (&Vec<usize>, &Vec<f32>)> = BTreeMap::new();
    for (key, (shape, data)) in dict {
        if let Some(rest) = key.strip_prefix(prefix.as_str()) {
            file.insert(modern_name(rest), (shape, data));
        }
    }
    let mut report = ImportReport { prefix_found: found.then(|| prefix.clone()), ..ImportReport::default() };
    let mut values: BTreeMap<String, Vec<f32>> = BTreeMap::new();
    let mut m = Mismatch::default();
    for t in &wanted {
        let Some((shape, data)) = file.remove(&t.name) else {
            m.missing.push((t.name.clone(), t.shape.clone()));
            continue;
        };
        let numel: usize = shape.iter().product();
        if data.len() != numel {
            m.mis_shaped.push(MisShaped {
                name: t.name.clone(),
                file: shape.clone(),
                model: t.shape.clone(),
                note: Some(format!("the file holds {} values for that shape", data.len())),
            });
        } else if *shape == t.shape {
            values.insert(t.name.clone(), data.clone());
        } else {
            let attempt =
                if opts.resample { resample_one(&t.name, shape, data, &t.shape, opts.antialias) } else { Ok(None) };
            match attempt {
                Ok(Some((v, how))) => {
                    report.resampled.push(Resampled {
                        name: t.name.clone(),
                        from: shape.clone(),
                        to: t.shape.clone(),
                        how,
                    });
                    values.insert(t.name.clone(), v);
                }
                Ok(None) => m.mis_shaped.push(MisShaped {
                    name: t.name.clone(),
                    file: shape.clone(),
                    model: t.shape.clone(),
                    note: None,
                }),
                Err(why) => m.mis_shaped.push(MisShaped {
                    name: t.name.clone(),
                    file: shape.clone(),
                    model: t.shape.clone(),
                    note: Some(why),
                }),
            }
        }
    }
    for (key, (shape, _)) in file {
        if skippable(&key) {
            report.skipped.push(key);
        } else {
            m.unexpected.push((key, shape.clone()));
        }
    }
    if !m.is_empty() {
        m.hint = hint(&m, &names, dict);
        return Err(WeightsError::Mismatch(Box::new(m)));
    }
    report.loaded = values.len();
    report.values = values.values().map(Vec::len).sum();
    let mut write = Write(&values);
    match M::iter_tensors(&mut RecursiveWalker { m: (String::new(), model), f: &mut write }) {
        Ok(_) => Ok(report),
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

/// A backbone chosen by name with weights imported, then one of these.
enum Then {
    Report,
    Summary(usize),
    Export,
}

struct Imported<'a> {
    dict: &'a StateDict,
    opts: &'a ImportOptions,
    then: Then,
}

type Outcome = (ImportReport, Option<Summary>, Option<StateDict>);

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

fn by_name(name: &str, image_size: usize, imported: Imported<'_>) -> Result<Outcome, WeightsError> {
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
