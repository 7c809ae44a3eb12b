//! The options that make the official SimSiam code's choices (README, "Where siamlab and the
//! official SimSiam code differ by choice"): each does what it says in a real pretraining run,
//! is part of the run's `config.json` (a resume with another value is refused), and a
//! `config.json` written before the options existed still resumes.

use std::path::{Path, PathBuf};

use siamlab_datasets::ingest::{ingest, IngestOptions};
use siamlab_datasets::sources::cifar::Cifar;
use siamlab_model::init::InitScheme;
use siamlab_trainer::choices::FROZEN_PROJECTOR_OUTPUT;
use siamlab_trainer::net::build_ssl_with;
use siamlab_trainer::optim::OptimizerKind;
use siamlab_trainer::params::{load_safetensors, StateDict};
use siamlab_trainer::run::state_of;
use siamlab_trainer::{pretrain, DeviceSpec, PretrainConfig};

fn dataset(root: &Path) -> PathBuf {
    let src = siamlab_datasets::synth::cifar_binary(root, 20, 16, false).unwrap();
    let out = root.join("shards");
    ingest(Box::new(Cifar::open(&src, false).unwrap()), &IngestOptions::new(&out)).unwrap();
    out
}

/// 100 images, batch 8, accumulation 1: 12 optimizer steps in the one epoch.
fn config(data: &Path) -> PretrainConfig {
    PretrainConfig {
        data: data.to_path_buf(),
        backbone: "resnet18_tiny".into(),
        epochs: 1,
        batch: 8,
        accum: 1,
        proj_dim: 128,
        knn_every: 0,
        monitor_images: 16,
        workers: Some(2),
        ..PretrainConfig::default()
    }
}

/// The tensors of the run's last checkpoint.
fn checkpoint(run: &Path) -> StateDict {
    load_safetensors(&run.join("checkpoint/model.safetensors")).unwrap()
}

/// The tensors a run of `cfg` starts from (the same build, the same seed).
fn initial(run: &Path, cfg: &PretrainConfig) -> StateDict {
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("config.json")).unwrap()).unwrap();
    let size = json["net"]["image_size"].as_u64().unwrap() as usize;
    let mut net =
        build_ssl_with(DeviceSpec::Cpu, cfg.seed, &cfg.backbone, size, cfg.proj_dim, cfg.init_scheme).unwrap();
    state_of(&mut |f| net.walk(f)).unwrap()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max)
}

fn norm_diff(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(a, b)| ((a - b) as f64).powi(2)).sum::<f64>().sqrt()
}

#[test]
fn frozen_projector_output_keeps_the_official_tensors_through_a_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let data = dataset(tmp.path());
    let mut quiet = |_: &str| {};

    // The default: Adam moves the two zero-gradient tensors by rounding noise.
    let plain = config(&data);
    let run = tmp.path().join("plain");
    pretrain(&plain, &run, false, true, &mut quiet).unwrap();
    let (start, end) = (initial(&run, &plain), checkpoint(&run));
    let lr = 1e-3 * 8.0 / 256.0;
    for name in FROZEN_PROJECTOR_OUTPUT {
        let d = max_diff(&start[name].1, &end[name].1);
        eprintln!("default, 12 Adam steps at lr ≤ {lr:.2e}: max |Δ {name}| = {d:.3e} ({:.2} × lr)", d as f64 / lr);
        if name != "projector.7.bias" {
            // (projector.6.bias moves even on a zero gradient: Adam scales its L2 decay term.)
            assert!(d > 0.0, "{name} did not move in the default run");
        }
    }

    // Frozen: unchanged bit for bit, through an interruption and a resume (the checkpoint
    // holds their zero moments); everything else trains.
    let frozen = PretrainConfig { frozen_projector_output: true, ..config(&data) };
    let run = tmp.path().join("frozen");
    let o = pretrain(&PretrainConfig { max_steps: Some(5), ..frozen.clone() }, &run, false, true, &mut quiet).unwrap();
    assert!(!o.finished);
    assert!(pretrain(&frozen, &run, true, true, &mut quiet).unwrap().finished);
    let (start, end) = (initial(&run, &frozen), checkpoint(&run));
    for name in FROZEN_PROJECTOR_OUTPUT {
        assert_eq!(start[name], end[name], "{name} changed");
    }
    assert_eq!(end["projector.7.weight"].1, vec![1.0; 128]);
    assert_eq!(end["projector.7.bias"].1, vec![0.0; 128]);
    for name in ["projector.6.weight", "projector.4.weight", "predictor.3.bias", "backbone.conv1.weight"] {
        assert!(max_diff(&start[name].1, &end[name].1) > 0.0, "{name} did not train");
    }

    // Part of the resolved configuration: a resume without the flag is refused.
    let e = pretrain(&config(&data), &run, true, true, &mut quiet).unwrap_err().to_string();
    assert!(e.contains("--frozen-projector-output"), "{e}");
}

/// With warmup the first step runs at `base / warmup_steps`; with `--fix-pred-lr` the predictor
/// runs at `base` from the start. One SGD step from the same start on the same batch: the
/// predictor moves 12× as far, everything else the same.
#[test]
fn fix_pred_lr_steps_the_predictor_at_the_base_rate() {
    let tmp = tempfile::tempdir().unwrap();
    let data = dataset(tmp.path());
    let mut quiet = |_: &str| {};
    let base = PretrainConfig {
        optimizer: OptimizerKind::Sgd,
        warmup_epochs: 1.0,
        max_steps: Some(1),
        epochs: 2,
        ..config(&data)
    };
    let mut moved = Vec::new();
    for (i, fix) in [false, true].into_iter().enumerate() {
        let cfg = PretrainConfig { fix_pred_lr: fix, ..base.clone() };
        let run = tmp.path().join(format!("run{i}"));
        pretrain(&cfg, &run, false, true, &mut quiet).unwrap();
        moved.push((initial(&run, &cfg), checkpoint(&run)));
    }
    let step = |k: usize, name: &str| norm_diff(&moved[k].0[name].1, &moved[k].1[name].1);
    for name in ["predictor.0.weight", "predictor.1.weight", "predictor.3.weight", "predictor.3.bias"] {
        let ratio = step(1, name) / step(0, name);
        assert!((ratio - 12.0).abs() < 0.01 * 12.0, "{name}: {ratio}");
    }
    for name in ["projector.0.weight", "backbone.layer1.0.conv1.weight"] {
        assert_eq!(moved[0].1[name], moved[1].1[name], "{name}");
    }
}

/// A run's `config.json` from before the options existed resumes as the defaults; each option
/// differing from the stored value is refused by name.
#[test]
fn old_configs_resume_and_changed_choices_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let data = dataset(tmp.path());
    let mut quiet = |_: &str| {};
    let cfg = config(&data);
    let run = tmp.path().join("run");
    pretrain(&PretrainConfig { max_steps: Some(2), ..cfg.clone() }, &run, false, true, &mut quiet).unwrap();
    let path = run.join("config.json");
    let mut json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let keys = ["init_scheme", "fix_pred_lr", "frozen_projector_output", "no_decay_norm_bias", "cosine_per_epoch"];
    for k in keys {
        assert!(json["config"].as_object_mut().unwrap().remove(k).is_some(), "config.json lacks {k}");
    }
    assert!(json["schedule"].as_object_mut().unwrap().remove("epoch_steps").is_some());
    std::fs::write(&path, serde_json::to_string_pretty(&json).unwrap()).unwrap();
    for (changed, flag) in [
        (PretrainConfig { init_scheme: InitScheme::Library, ..cfg.clone() }, "--init-scheme"),
        (PretrainConfig { fix_pred_lr: true, ..cfg.clone() }, "--fix-pred-lr"),
        (PretrainConfig { no_decay_norm_bias: true, ..cfg.clone() }, "--no-decay-norm-bias"),
        (PretrainConfig { cosine_per_epoch: true, ..cfg.clone() }, "--cosine-per-epoch"),
    ] {
        let e = pretrain(&changed, &run, true, true, &mut quiet).unwrap_err().to_string();
        assert!(e.contains(flag), "{flag}: {e}");
    }
    assert!(pretrain(&cfg, &run, true, true, &mut quiet).unwrap().finished);
}

/// `--init-scheme` redraws the backbone only: the heads start as in the default build.
#[test]
fn init_schemes_redraw_the_backbone_not_the_heads() {
    let build = |init| {
        let mut net = build_ssl_with(DeviceSpec::Cpu, 3, "resnet18_tiny", 32, 128, init).unwrap();
        state_of(&mut |f| net.walk(f)).unwrap()
    };
    let (uniform, simsiam) = (build(InitScheme::Uniform), build(InitScheme::Simsiam));
    for (name, (_, v)) in &uniform {
        let head = name.starts_with("projector.") || name.starts_with("predictor.");
        let bn_or_buffer = name.contains("bn") || name.contains("downsample.1") || name.contains("running");
        if head || (bn_or_buffer && !name.ends_with("bn2.weight")) {
            assert_eq!(v, &simsiam[name].1, "{name}");
        } else {
            assert_ne!(v, &simsiam[name].1, "{name}");
        }
    }
    assert!(simsiam["backbone.layer3.1.bn2.weight"].1.iter().all(|&v| v == 0.0));
}
