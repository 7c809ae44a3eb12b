//! Reading a PyTorch `state_dict` into a backbone: every key and shape checked first (all
//! differences in one [`Mismatch`]), classifier keys and BatchNorm counters skipped, a
//! `module.`-style prefix found, position embeddings and patch kernels of another input size
//! resampled as timm does.

use std::collections::BTreeMap;
use std::convert::Infallible;

use dfdx::nn::tensor_collection::TensorCollection;
use dfdx::prelude::Device;

use crate::weights::report::{ImportReport, MisShaped, Mismatch, Resampled};
use crate::weights::resample::{interpolate_bicubic, resample_patch_kernel, resample_pos_embed_tokens};
use crate::weights::{StateDict, WeightsError, CLASSIFIER_PREFIXES};
use crate::{named_tensors, walk_tensors};

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
            let y = resample_patch_kernel(&x, o0 * i0, (kh, kw), (nh, nw), antialias).map_err(|e| e.to_string())?;
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
    let written = walk_tensors::<D, M, Infallible>(model, "", &mut |s, v| match values.get(s.name) {
        Some(new) => {
            v.copy_from_slice(new);
            Ok(true)
        }
        None => Ok(false),
    });
    match written {
        Ok(()) => Ok(report),
        Err(never) => match never {},
    }
}
