//! Every augmentation op against torchvision (`transforms.functional` v1 on uint8 tensors),
//! with the reference outputs stored by `tools/augment_fixtures.py` in
//! `tests/fixtures/augment/`. Criterion: at least 99% of the values within 2/255 (on the
//! `[0, 1]` scale; normalized outputs are scaled back by their std). Run with `--nocapture` to
//! see the per-case and per-op maximum errors.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::Value;
use siamlab_pipeline::augment::{
    adjust_brightness, adjust_contrast, adjust_hue, adjust_saturation, center_crop_box, crop_to_planes, gaussian_blur,
    grayscale, hflip, resize, resized_crop, shorter_side_size, solarize, BlurScratch, ColorJitter, CropBox, EvalConfig,
    GaussianBlur, Geometry, JitterOp, JitterParams, Normalize, RandomResizedCrop, Recipe, RecipeConfig, Resizer,
    Scratch, SimSiamConfig, ViewParams,
};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/augment")
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(dir().join(name)).unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

fn f(v: &Value, key: &str) -> f64 {
    v[key].as_f64().unwrap_or_else(|| panic!("missing number {key} in {v}"))
}

fn u(v: &Value, key: &str) -> u32 {
    v[key].as_u64().unwrap_or_else(|| panic!("missing integer {key} in {v}")) as u32
}

fn triple(v: &Value, key: &str) -> [f32; 3] {
    let a = v[key].as_array().unwrap();
    [0, 1, 2].map(|i| a[i].as_f64().unwrap() as f32)
}

/// HWC u8 → CHW u8.
fn planes_of(src: &[u8], w: u32, h: u32) -> Vec<u8> {
    let mut p = vec![0u8; src.len()];
    crop_to_planes(src, w, h, 0, 0, false, &mut p, w, h).unwrap();
    p
}

/// What our implementation produced, on the `[0, 1]` scale, plus per-value std (error scale).
enum Output {
    U8(Vec<u8>),
    Normalized(Vec<f32>, [f32; 3]),
}

fn run_case(case: &Value) -> Output {
    let src = read(case["input"].as_str().unwrap());
    let (w, h) = (u(case, "width"), u(case, "height"));
    let p = &case["params"];
    let op = case["op"].as_str().unwrap();
    let mut planes = planes_of(&src, w, h);
    match op {
        "resized_crop" => {
            let (ow, oh) = (u(p, "out_width"), u(p, "out_height"));
            let crop = CropBox { top: u(p, "top"), left: u(p, "left"), height: u(p, "height"), width: u(p, "width") };
            let mut out = vec![0u8; (ow * oh * 3) as usize];
            resized_crop(&mut Resizer::new(), &src, w, h, crop, &mut out, ow, oh).unwrap();
            Output::U8(planes_of(&out, ow, oh))
        }
        "hflip" => {
            let mut img = src.clone();
            hflip(&mut img, w, h).unwrap();
            Output::U8(planes_of(&img, w, h))
        }
        "brightness" => {
            adjust_brightness(&mut planes, f(p, "factor")).unwrap();
            Output::U8(planes)
        }
        "contrast" => {
            adjust_contrast(&mut planes, f(p, "factor")).unwrap();
            Output::U8(planes)
        }
        "saturation" => {
            adjust_saturation(&mut planes, f(p, "factor")).unwrap();
            Output::U8(planes)
        }
        "hue" => {
            adjust_hue(&mut planes, f(p, "factor")).unwrap();
            Output::U8(planes)
        }
        "grayscale" => {
            grayscale(&mut planes).unwrap();
            Output::U8(planes)
        }
        "blur" => {
            let mut s = BlurScratch::default();
            gaussian_blur(&mut planes, w, h, u(p, "kernel_size"), f(p, "sigma"), &mut s).unwrap();
            Output::U8(planes)
        }
        "solarize" => {
            solarize(&mut planes, f(p, "threshold")).unwrap();
            Output::U8(planes)
        }
        "normalize" => {
            let std = triple(p, "std");
            let n = Normalize::new(triple(p, "mean"), std).unwrap();
            let mut out = vec![0f32; planes.len()];
            n.apply(&planes, w, h, &mut out).unwrap();
            Output::Normalized(out, std)
        }
        "resize_center_crop" => {
            let (rs, cs) = (u(p, "resize"), u(p, "crop"));
            let (rw, rh) = shorter_side_size(w, h, rs).unwrap();
            let mut resized = vec![0u8; (rw * rh * 3) as usize];
            resize(&mut Resizer::new(), &src, w, h, &mut resized, rw, rh).unwrap();
            let b = center_crop_box(rw, rh, cs, cs).unwrap();
            let mut out = vec![0u8; (cs * cs * 3) as usize];
            let (top, left) = (i64::from(b.top), i64::from(b.left));
            crop_to_planes(&resized, rw, rh, top, left, false, &mut out, cs, cs).unwrap();
            // The eval recipe must produce the same thing.
            let recipe = Recipe::new(
                RecipeConfig::Eval(EvalConfig { resize: rs, crop: cs }),
                Normalize::new([0.0; 3], [1.0; 3]).unwrap(),
            )
            .unwrap();
            let mut rng = siamlab_pipeline::augment::sample_rng(0, 0, 0, 0);
            let mut norm = vec![0f32; recipe.output_len()];
            recipe.apply(&src, w, h, &mut rng, &mut norm, &mut Scratch::new()).unwrap();
            for (a, b) in norm.iter().zip(&out) {
                assert!((a * 255.0 - f32::from(*b)).abs() < 1e-3, "eval recipe != ops");
            }
            Output::U8(out)
        }
        "padded_crop" => {
            let (pad, size) = (i64::from(u(p, "padding")), u(p, "size"));
            let (top, left) = (i64::from(u(p, "i")) - pad, i64::from(u(p, "j")) - pad);
            let flip = p["flip"].as_bool().unwrap();
            let mut out = vec![0u8; (size * size * 3) as usize];
            crop_to_planes(&src, w, h, top, left, flip, &mut out, size, size).unwrap();
            Output::U8(out)
        }
        "simsiam_view" => {
            let size = u(p, "size");
            let std = triple(p, "std");
            let mut config = SimSiamConfig::paper(size);
            config.blur = p["blur_kernel"].as_u64().map(|k| GaussianBlur::new(k as u32, (0.1, 2.0), 0.5).unwrap());
            let recipe =
                Recipe::new(RecipeConfig::SimSiam(config), Normalize::new(triple(p, "mean"), std).unwrap()).unwrap();
            let order: Vec<JitterOp> = p["order"]
                .as_array()
                .unwrap()
                .iter()
                .map(|o| match o.as_str().unwrap() {
                    "brightness" => JitterOp::Brightness,
                    "contrast" => JitterOp::Contrast,
                    "saturation" => JitterOp::Saturation,
                    _ => JitterOp::Hue,
                })
                .collect();
            let params = ViewParams {
                geometry: Geometry::ResizedCrop(CropBox {
                    top: u(p, "top"),
                    left: u(p, "left"),
                    height: u(p, "height"),
                    width: u(p, "width"),
                }),
                flip: p["flip"].as_bool().unwrap(),
                jitter: Some(JitterParams {
                    order: [order[0], order[1], order[2], order[3]],
                    brightness: Some(f(p, "brightness")),
                    contrast: Some(f(p, "contrast")),
                    saturation: Some(f(p, "saturation")),
                    hue: Some(f(p, "hue")),
                }),
                grayscale: p["grayscale"].as_bool().unwrap(),
                blur_sigma: p["blur_sigma"].as_f64(),
                solarize: false,
            };
            let mut out = vec![0f32; recipe.output_len()];
            recipe.apply_params(&src, w, h, &params, &mut out, &mut Scratch::new()).unwrap();
            Output::Normalized(out, std)
        }
        other => panic!("unknown op {other}"),
    }
}

struct Stats {
    max_err: f64,
    within: f64,
}

fn compare(case: &Value, ours: &Output) -> Stats {
    let want = read(case["output"].as_str().unwrap());
    let errs: Vec<f64> = match ours {
        Output::U8(v) => {
            assert_eq!(v.len(), want.len(), "{}: length", case["name"]);
            v.iter().zip(&want).map(|(&a, &b)| f64::from(a.abs_diff(b)) / 255.0).collect()
        }
        Output::Normalized(v, std) => {
            assert_eq!(v.len() * 4, want.len(), "{}: length", case["name"]);
            let plane = v.len() / 3;
            v.iter()
                .zip(want.chunks_exact(4))
                .enumerate()
                .map(|(k, (&a, b))| {
                    let b = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                    f64::from((a - b).abs() * std[k / plane])
                })
                .collect()
        }
    };
    let tol = 2.0 / 255.0 + 1e-6;
    Stats {
        max_err: errs.iter().copied().fold(0.0, f64::max),
        within: errs.iter().filter(|&&e| e <= tol).count() as f64 / errs.len() as f64,
    }
}

#[test]
fn every_op_matches_torchvision_within_2_of_255_on_99_percent_of_values() {
    let index: Value = serde_json::from_slice(&read("index.json")).unwrap();
    let cases = index["cases"].as_array().unwrap();
    assert!(cases.len() >= 40, "index lists {} cases", cases.len());
    let mut per_op: BTreeMap<String, (f64, f64, usize)> = BTreeMap::new();
    let mut failures = Vec::new();
    for case in cases {
        let stats = compare(case, &run_case(case));
        let name = case["name"].as_str().unwrap();
        println!(
            "{name:<28} max error {:>6.2}/255, within 2/255: {:>7.3}%",
            stats.max_err * 255.0,
            stats.within * 100.0
        );
        let e = per_op.entry(case["op"].as_str().unwrap().to_string()).or_insert((0.0, 1.0, 0));
        e.0 = e.0.max(stats.max_err);
        e.1 = e.1.min(stats.within);
        e.2 += 1;
        if stats.within < 0.99 {
            failures.push(format!("{name}: only {:.3}% within 2/255", stats.within * 100.0));
        }
    }
    println!("\nper op (cases, max error, worst fraction within 2/255):");
    for (op, (max_err, within, n)) in &per_op {
        println!("  {op:<20} {n:>2} cases, max {:>5.2}/255, {:>7.3}%", max_err * 255.0, within * 100.0);
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn sampled_simsiam_parameters_replay_through_the_fixture_path() {
    // The parameters a sampler draws are exactly what `apply_params` consumes: sampling then
    // applying equals `apply` on the same RNG.
    let src = read("input_b.bin");
    let recipe = Recipe::simsiam(96, Normalize::imagenet()).unwrap();
    let mut scratch = Scratch::new();
    for i in 0..20 {
        let mut rng = siamlab_pipeline::augment::sample_rng(3, 1, i, 0);
        let params = recipe.sample(96, 96, &mut rng).unwrap();
        let mut a = vec![0f32; recipe.output_len()];
        recipe.apply_params(&src, 96, 96, &params, &mut a, &mut scratch).unwrap();
        let mut b = vec![0f32; recipe.output_len()];
        let mut rng = siamlab_pipeline::augment::sample_rng(3, 1, i, 0);
        let drawn = recipe.apply(&src, 96, 96, &mut rng, &mut b, &mut scratch).unwrap();
        assert_eq!(drawn, params);
        assert_eq!(a, b);
    }
    // Sanity of the samplers used by the recipe.
    let rrc = RandomResizedCrop::new((0.2, 1.0), (0.75, 4.0 / 3.0)).unwrap();
    assert_eq!(SimSiamConfig::paper(96).crop, rrc);
    assert_eq!(SimSiamConfig::paper(96).jitter, ColorJitter::simsiam());
}
