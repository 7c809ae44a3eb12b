//! Weight import and export against torchvision / timm (`tests/fixtures/weights/`, written by
//! `tools/weights_fixtures.py`). No weights are stored: every tensor of a PyTorch `state_dict`
//! is a formula of its key (`fill`, the script's), so a test builds the file PyTorch would have
//! written (classifier and `num_batches_tracked` included), imports it, and compares eval-mode
//! features with PyTorch's, resampled cases included. Exports are checked against the key
//! lists of the headless PyTorch models; `SIAMLAB_EXPORT_CHECK_DIR=DIR` also writes each export
//! as safetensors for `tools/weights_fixtures.py --check-export DIR` (strict load in PyTorch).

use std::collections::BTreeSet;

use dfdx::nn::tensor_collection::TensorCollection;
use dfdx::prelude::*;
use serde_json::Value;
use siamlab_model::backbones::*;
use siamlab_model::layers::Mode;
use siamlab_model::weights::*;
use siamlab_model::{named_tensors, Image};

fn doc(name: &str) -> Value {
    let text = match name {
        "keys" => include_str!("fixtures/weights/keys.json"),
        "features" => include_str!("fixtures/weights/features.json"),
        "resample" => include_str!("fixtures/weights/resample.json"),
        _ => unreachable!(),
    };
    serde_json::from_str(text).expect("fixture parses")
}

fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xCBF2_9CE4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01B3))
}

/// `fill` of tools/model_fixtures.py: the value of every tensor from its key.
fn fill(name: &str, shape: &[usize]) -> Vec<f32> {
    let n: usize = shape.iter().product();
    let phase = (fnv1a(name) % 10007) as f64 * 1e-3;
    let (scale, offset) = if name.ends_with("running_var") {
        (0.25, 0.75)
    } else if name.ends_with("running_mean") || name.ends_with("bias") {
        (0.1, 0.0)
    } else if name.ends_with("weight") && shape.len() == 1 {
        (0.1, 1.0)
    } else if name.ends_with("weight") {
        ((3.0 / (n / shape[0]) as f64).sqrt(), 0.0)
    } else {
        (0.1, 0.0)
    };
    (0..n).map(|i| (offset + scale * (phase + 0.61 * i as f64).sin()) as f32).collect()
}

fn shape_of(v: &Value) -> Vec<usize> {
    v.as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect()
}

/// `(name, shape)` pairs of a key list.
fn key_list(v: &Value) -> Vec<(String, Vec<usize>)> {
    v.as_array().unwrap().iter().map(|k| (k[0].as_str().unwrap().to_string(), shape_of(&k[1]))).collect()
}

/// What `safetensors.torch.save_file(model.state_dict(), ...)` of the PyTorch model `source`
/// with its classifier holds (counters as f32 here; the trainer's reader skips int64 ones).
fn pytorch_file(source: &str) -> StateDict {
    let keys = &doc("keys")["models"][source];
    key_list(&keys["keys"])
        .into_iter()
        .chain(key_list(&keys["extra"]))
        .map(|(name, shape)| {
            let v = fill(&name, &shape);
            (name, (shape, v))
        })
        .collect()
}

/// The input of every case.
fn image(batch: usize, size: usize) -> Tensor<Image<3>, f32, Cpu> {
    let n = batch * 3 * size * size;
    let x: Vec<f32> = (0..n).map(|i| (0.37 * i as f64 + 0.1).sin() as f32).collect();
    Cpu::default().tensor_from_vec(x, (batch, Const::<3>, size, size))
}

fn max_abs_diff(a: &[f32], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len(), "feature counts differ");
    a.iter().zip(b).map(|(x, y)| (*x as f64 - y).abs()).fold(0.0, f64::max)
}

/// Imports the case's PyTorch file into `net`, checks the report, and returns the max abs
/// difference of the eval-mode features from PyTorch's.
fn import_case<B: Backbone<F>, const F: usize>(case: &str, mut net: B) -> f64 {
    let fx = &doc("features")["cases"][case];
    let file = pytorch_file(fx["source"].as_str().unwrap());
    let report = import_state_dict(&mut net, &file, &ImportOptions::default()).unwrap();
    assert_eq!(report.loaded, named_tensors(&net).len(), "{case}: every tensor loaded");
    let mut resampled: Vec<&str> = report.resampled.iter().map(|r| r.name.as_str()).collect();
    resampled.sort_unstable();
    let want: Vec<&str> = fx["resampled"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(resampled, want, "{case}: resampled tensors");
    assert!(report.skipped.iter().any(|k| !k.ends_with("num_batches_tracked")), "{case}: classifier skipped");
    let (size, batch) = (fx["size"].as_u64().unwrap() as usize, fx["batch"].as_u64().unwrap() as usize);
    let y = net.forward_features(image(batch, size), Mode::Eval).unwrap().as_vec();
    let want: Vec<f64> = fx["y"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    let diff = max_abs_diff(&y, &want);
    eprintln!("{case}: {} | max abs diff {diff:.2e} over {} features", report, y.len());
    assert!(diff <= 1e-4, "{case}: max abs diff {diff:e} > 1e-4");
    diff
}

#[test]
fn torchvision_resnet18_imports_and_matches() {
    import_case("resnet18_64", ResNet18::build(&Cpu::default()));
}

#[test]
fn torchvision_resnet18_at_32px_runs_layer4_on_a_1x1_map() {
    // Regression: stride-1 "same" convolutions on a 1x1 plane (every 3x3 tap but the centre in
    // the padding) indexed past the plane.
    import_case("resnet18_32", ResNet18::build(&Cpu::default()));
}

#[test]
fn timm_efficientnet_b0_imports_and_matches() {
    import_case("efficientnet_b0_64", EfficientNetB0::build(&Cpu::default()));
}

#[test]
fn timm_vit_small_imports_and_matches() {
    import_case("vit_s_224", VitS224::build(&Cpu::default()));
}

#[test]
fn timm_vit_small_224_weights_at_128px_resample_the_grid_as_dynamic_img_size() {
    import_case("vit_s_224_to_128", VitS128::build(&Cpu::default()));
}

#[test]
fn timm_vit_small_224_weights_at_32px_resample_grid_and_patch_as_checkpoint_filter_fn() {
    import_case("vit_s_224_to_32", VitS32::build(&Cpu::default()));
}

#[test]
fn timm_pit_ti_imports_and_matches() {
    import_case("pit_ti_224", PitTi224::build(&Cpu::default()));
}

#[test]
fn timm_pit_ti_224_weights_at_32px_resample_grid_and_patch() {
    import_case("pit_ti_224_to_32", PitTi32::build(&Cpu::default()));
}

fn values(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

/// The script's resampling input: sin(0.1 + 0.7 i) rounded to f32.
fn formula(n: usize) -> Vec<f64> {
    (0..n).map(|i| (0.1 + 0.7 * i as f64).sin() as f32 as f64).collect()
}

fn worst(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
}

#[test]
fn bicubic_resampling_matches_pytorch() {
    let fx = doc("resample");
    for c in fx["interpolate"].as_array().unwrap() {
        let (from, to) = (shape_of(&c["from"]), shape_of(&c["to"]));
        let ch = c["channels"].as_u64().unwrap() as usize;
        let aa = c["antialias"].as_bool().unwrap();
        let y = interpolate_bicubic(&formula(ch * from[0] * from[1]), ch, (from[0], from[1]), (to[0], to[1]), aa);
        let d = worst(&y, &values(&c["y"]));
        // PyTorch in float64 here: the same taps and weights give the same numbers.
        assert!(d < 1e-12, "interpolate {from:?} -> {to:?} antialias {aa}: {d:e}");
    }
    for c in fx["pos_embed"].as_array().unwrap() {
        let (shape, to) = (shape_of(&c["shape"]), shape_of(&c["to"]));
        let g = (((shape[1] - 1) as f64).sqrt()) as usize;
        let y = resample_pos_embed_tokens(&formula(shape[1] * shape[2]), 1, shape[2], (g, g), (to[0], to[1]), true);
        let d = worst(&y, &values(&c["y"]));
        // timm resamples in float32.
        assert!(d < 5e-6, "pos_embed {shape:?} -> {to:?}: {d:e}");
    }
    for c in fx["patch_embed"].as_array().unwrap() {
        let (shape, to) = (shape_of(&c["shape"]), shape_of(&c["to"]));
        let x = formula(shape.iter().product());
        let y = resample_patch_kernel(&x, shape[0] * shape[1], (shape[2], shape[3]), (to[0], to[1]), true).unwrap();
        let want = values(&c["y"]);
        let scale = want.iter().fold(0f64, |m, v| m.max(v.abs()));
        let d = worst(&y, &want);
        // timm computes the pseudo-inverse in float32.
        assert!(d < 1e-5 * scale.max(1.0), "patch_embed {shape:?} -> {to:?}: {d:e} (scale {scale})");
    }
}

/// Sorted `(name, shape)` of an export.
fn exported<M: TensorCollection<f32, Cpu>>(net: &M) -> Vec<(String, Vec<usize>)> {
    export_state_dict(net).into_iter().map(|(k, (s, _))| (k, s)).collect()
}

fn headless_keys(model: &str) -> Vec<(String, Vec<usize>)> {
    let mut keys = key_list(&doc("keys")["models"][model]["keys"]);
    keys.sort();
    keys
}

#[test]
fn exports_have_the_pytorch_headless_keys_and_shapes() {
    let dev = Cpu::default();
    assert_eq!(exported(&ResNet18::build(&dev)), headless_keys("resnet18"));
    assert_eq!(exported(&ResNet18::build(&dev)), headless_keys("resnet18_timm"));
    assert_eq!(exported(&EfficientNetB0::build(&dev)), headless_keys("efficientnet_b0"));
    assert_eq!(exported(&EfficientNetB0S1::build(&dev)), headless_keys("efficientnet_b0"));
    assert_eq!(exported(&VitS224::build(&dev)), headless_keys("vit_small_patch16_224"));
    assert_eq!(exported(&VitS32::build(&dev)), headless_keys("vit_small_patch4_32"));
    assert_eq!(exported(&PitTi224::build(&dev)), headless_keys("pit_ti_224"));
    assert_eq!(exported(&PitTi32::build(&dev)), headless_keys("pit_ti_patch4_32"));
}

#[test]
fn pytorch_model_lines_are_the_fixture_models() {
    let models = &doc("keys")["models"];
    let python = |m: &str| models[m]["python"].as_str().unwrap().to_string();
    assert_eq!(pytorch_model("resnet18_imagenet", 224, Format::Torchvision).unwrap(), Some(python("resnet18")));
    assert_eq!(pytorch_model("resnet18", 224, Format::Timm).unwrap(), Some(python("resnet18_timm")));
    assert_eq!(pytorch_model("efficientnet_b0", 224, Format::Timm).unwrap(), Some(python("efficientnet_b0")));
    assert_eq!(pytorch_model("vit_s", 224, Format::Timm).unwrap(), Some(python("vit_small_patch16_224")));
    assert_eq!(pytorch_model("vit_s", 32, Format::Timm).unwrap(), Some(python("vit_small_patch4_32")));
    assert_eq!(pytorch_model("pit_ti", 224, Format::Timm).unwrap(), Some(python("pit_ti_224")));
    assert_eq!(pytorch_model("pit_ti", 32, Format::Timm).unwrap(), Some(python("pit_ti_patch4_32")));
    let err = pytorch_model("vit_s", 32, Format::Torchvision).unwrap_err().to_string();
    assert!(err.contains("--format timm"), "{err}");
    assert!(pytorch_model("vit_s", 48, Format::Timm).is_err());
    assert_eq!(pytorch_model("resnet18_tiny", 32, Format::Timm).unwrap(), None);
}

fn mismatch(err: WeightsError) -> Mismatch {
    match err {
        WeightsError::Mismatch(m) => *m,
        other => panic!("expected a mismatch, got {other}"),
    }
}

#[test]
fn a_mismatch_names_missing_unexpected_and_mis_shaped_keys_at_once() {
    let mut file = pytorch_file("resnet18");
    file.remove("layer3.1.bn2.running_var");
    file.insert("layer5.0.conv1.weight".into(), (vec![2, 2], vec![0.0; 4]));
    file.insert("layer2.0.bn1.bias".into(), (vec![3], vec![0.0; 3]));
    let mut net = ResNet18::build(&Cpu::default());
    let before = export_state_dict(&net);
    let m = mismatch(import_state_dict(&mut net, &file, &ImportOptions::default()).unwrap_err());
    assert_eq!(m.missing, vec![("layer3.1.bn2.running_var".to_string(), vec![256])]);
    assert_eq!(m.unexpected, vec![("layer5.0.conv1.weight".to_string(), vec![2, 2])]);
    assert_eq!(m.mis_shaped.len(), 1);
    assert_eq!((m.mis_shaped[0].name.as_str(), &m.mis_shaped[0].file[..]), ("layer2.0.bn1.bias", &[3][..]));
    let text = m.to_string();
    for part in ["1 missing (layer3.1.bn2.running_var [256])", "1 unexpected (layer5.0.conv1.weight [2, 2])"] {
        assert!(text.contains(part), "{text}");
    }
    assert!(text.contains("1 mis-shaped (layer2.0.bn1.bias file [3] vs model [128])"), "{text}");
    // Nothing was written.
    assert_eq!(export_state_dict(&net), before);
}

#[test]
fn imagenet_resnet_weights_into_the_cifar_stem_say_which_backbone_fits() {
    let err = import_state_dict(
        &mut ResNet18Cifar::build(&Cpu::default()),
        &pytorch_file("resnet18"),
        &ImportOptions::default(),
    )
    .unwrap_err();
    let m = mismatch(err);
    assert_eq!(m.mis_shaped.len(), 1);
    assert_eq!(m.mis_shaped[0].model, vec![64, 3, 3, 3]);
    assert!(m.hint.as_deref().unwrap().contains("resnet18_imagenet"));
    assert!(m.to_string().contains("conv1.weight file [64, 3, 7, 7] vs model [64, 3, 3, 3]"));
}

#[test]
fn without_resampling_other_sizes_are_mis_shaped() {
    let opts = ImportOptions { resample: false, ..ImportOptions::default() };
    let err = import_state_dict(&mut VitS32::build(&Cpu::default()), &pytorch_file("vit_small_patch16_224"), &opts)
        .unwrap_err();
    let names: BTreeSet<String> = mismatch(err).mis_shaped.into_iter().map(|m| m.name).collect();
    assert_eq!(names, ["patch_embed.proj.weight", "pos_embed"].iter().map(|s| s.to_string()).collect());
}

#[test]
fn a_prefixed_checkpoint_is_found_under_its_prefix() {
    // A finetuning checkpoint: `backbone.*` beside the head `fc.*`.
    let dev = Cpu::seed_from_u64(3);
    let src = PitTiny32::build(&dev);
    let mut file: StateDict = export_state_dict(&src).into_iter().map(|(k, v)| (format!("backbone.{k}"), v)).collect();
    file.insert("fc.weight".into(), (vec![10, 64], vec![0.0; 640]));
    let mut net = PitTiny32::build(&dev);
    let report = import_state_dict(&mut net, &file, &ImportOptions::default()).unwrap();
    assert_eq!(report.prefix_found.as_deref(), Some("backbone."));
    assert_eq!(export_state_dict(&net), export_state_dict(&src));
    // Given explicitly, the same.
    let opts = ImportOptions { prefix: "backbone.".into(), ..ImportOptions::default() };
    let report = import_state_dict(&mut PitTiny32::build(&dev), &file, &opts).unwrap();
    assert_eq!(report.prefix_found, None);
}

#[test]
fn old_pit_pool_names_are_renamed_as_timm_does() {
    let dev = Cpu::seed_from_u64(4);
    let src = PitTiny32::build(&dev);
    let file: StateDict = export_state_dict(&src)
        .into_iter()
        .map(|(k, v)| (k.replace("transformers.1.pool.", "pools.0.").replace("transformers.2.pool.", "pools.1."), v))
        .collect();
    assert!(file.contains_key("pools.1.fc.weight"));
    let mut net = PitTiny32::build(&dev);
    import_state_dict(&mut net, &file, &ImportOptions::default()).unwrap();
    assert_eq!(export_state_dict(&net), export_state_dict(&src));
}

#[test]
fn by_name_import_summary_and_export() {
    let file = pytorch_file("vit_small_patch16_224");
    let report = import_by_name("vit_s", 32, &file, &ImportOptions::default()).unwrap();
    assert_eq!(report.resampled.len(), 2);
    let text = report.to_string();
    assert!(text.contains("resampled pos_embed [1, 197, 384] -> [1, 65, 384]"), "{text}");
    assert!(text.contains("skipped the classifier: head.bias, head.weight"), "{text}");
    let (s, _) = summary_with_weights("vit_s", 32, &file, &ImportOptions::default()).unwrap();
    assert_eq!(s.total_params, 21_338_496);
    let err = import_by_name("resnet18", 32, &pytorch_file("resnet18"), &ImportOptions::default()).unwrap_err();
    assert!(err.to_string().contains("resnet18_imagenet"), "{err}");
    let ex = export_by_name("vit_s", 32, &file, &ImportOptions::default(), Format::Timm).unwrap();
    assert_eq!(ex.tensors["pos_embed"].0, vec![1, 65, 384]);
    assert_eq!(ex.pytorch.as_deref(), Some(doc("keys")["models"]["vit_small_patch4_32"]["python"].as_str().unwrap()));
}

/// A backbone as training leaves it: random weights, BatchNorm statistics moved off their
/// initial values by a few training-mode passes.
fn trained<B: Backbone<F> + BuildModule<Cpu, f32>, const F: usize>(seed: u64, size: usize) -> B {
    let dev = Cpu::seed_from_u64(seed);
    let mut net = B::build(&dev);
    for _ in 0..3 {
        let x: Tensor<Image<3>, f32, Cpu> = dev.sample_normal_like(&(4, Const::<3>, size, size));
        net.forward_features(x, Mode::Train).unwrap();
    }
    net
}

/// Export → import into a fresh backbone gives the same features bit for bit; with
/// `SIAMLAB_EXPORT_CHECK_DIR` set, the export is also written for PyTorch.
fn roundtrip<B: Backbone<F> + BuildModule<Cpu, f32>, const F: usize>(
    name: &str,
    preset: &str,
    size: usize,
    format: Format,
) {
    let mut net: B = trained(7, size);
    let y = net.forward_features(image(2, size), Mode::Eval).unwrap().as_vec();
    let dict = export_state_dict(&net);
    let mut fresh = B::build(&Cpu::seed_from_u64(99));
    import_state_dict(&mut fresh, &dict, &ImportOptions::default()).unwrap();
    assert_eq!(fresh.forward_features(image(2, size), Mode::Eval).unwrap().as_vec(), y, "{name}");
    let python = pytorch_model(preset, size, format).unwrap().expect("a PyTorch model");
    if let Some(dir) = std::env::var_os("SIAMLAB_EXPORT_CHECK_DIR") {
        let dir = std::path::PathBuf::from(dir);
        std::fs::create_dir_all(&dir).unwrap();
        let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = dict
            .iter()
            .map(|(k, (s, v))| (k.clone(), s.clone(), v.iter().flat_map(|x| x.to_le_bytes()).collect()))
            .collect();
        let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = bytes
            .iter()
            .map(|(k, s, b)| {
                (k.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b).unwrap())
            })
            .collect();
        let file = format!("{name}.safetensors");
        safetensors::serialize_to_file(views, &None, &dir.join(&file)).unwrap();
        let meta = serde_json::json!({"python": python, "file": file, "size": size, "batch": 2, "y": y});
        std::fs::write(dir.join(format!("{name}.json")), meta.to_string()).unwrap();
    }
}

#[test]
fn exports_load_back_and_into_pytorch() {
    roundtrip::<ResNet18, 512>("resnet18_torchvision", "resnet18_imagenet", 64, Format::Torchvision);
    roundtrip::<ResNet18, 512>("resnet18_timm", "resnet18_imagenet", 64, Format::Timm);
    roundtrip::<ResNet18Cifar, 512>("resnet18_cifar_torchvision", "resnet18_cifar", 32, Format::Torchvision);
    roundtrip::<EfficientNetB0S1, 1280>("efficientnet_b0_s1", "efficientnet_b0", 32, Format::Timm);
    roundtrip::<EfficientNetB0, 1280>("efficientnet_b0", "efficientnet_b0", 96, Format::Timm);
    roundtrip::<VitS32, 384>("vit_s_32", "vit_s", 32, Format::Timm);
    roundtrip::<PitTi32, 256>("pit_ti_32", "pit_ti", 32, Format::Timm);
    roundtrip::<VitTiny32, 48>("vit_tiny_32", "vit_tiny", 32, Format::Timm);
    roundtrip::<PitTiny32, 64>("pit_tiny_32", "pit_tiny", 32, Format::Timm);
}
