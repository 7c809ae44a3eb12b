//! Exact resume: a pretraining run interrupted mid-epoch (and at an epoch boundary) and
//! resumed gives bitwise the same losses and weights as an uninterrupted one; so does a
//! finetuning or linear-evaluation run resumed after an epoch.

use std::path::{Path, PathBuf};

use siamlab_datasets::ingest::{ingest, IngestOptions};
use siamlab_datasets::sources::cifar::Cifar;
use siamlab_trainer::{finetune, pretrain, FinetuneConfig, PretrainConfig};

fn dataset(root: &Path) -> PathBuf {
    let src = siamlab_datasets::synth::cifar_binary(root, 20, 16, false).unwrap();
    let out = root.join("shards");
    ingest(Box::new(Cifar::open(&src, false).unwrap()), &IngestOptions::new(&out)).unwrap();
    out
}

fn config(data: &Path) -> PretrainConfig {
    PretrainConfig {
        data: data.to_path_buf(),
        backbone: "resnet18_tiny".into(),
        epochs: 2,
        batch: 8,
        accum: 2,
        proj_dim: 128,
        knn_every: 1,
        knn_k: 5,
        monitor_images: 16,
        workers: Some(2),
        ..PretrainConfig::default()
    }
}

#[test]
fn resumed_runs_are_bitwise_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let data = dataset(tmp.path());
    let cfg = config(&data);
    let mut quiet = |_: &str| {};

    let full = pretrain(&cfg, &tmp.path().join("full"), false, true, &mut quiet).unwrap();
    assert!(full.finished);
    // 100 images, batch 8: 12 batches, 6 optimizer steps per epoch.
    assert_eq!(full.losses.len(), 24);
    assert!(full.losses.iter().all(|l| l.is_finite()));

    // Interrupted after 2 steps (mid-epoch 0), then after 5 more (mid-epoch 1), each time
    // with a different number of pipeline workers; then run to the end.
    let run = tmp.path().join("resumed");
    let mut losses = Vec::new();
    for (i, (max, workers)) in [(Some(2), 1), (Some(5), 3), (None, 2)].into_iter().enumerate() {
        let c = PretrainConfig { max_steps: max, workers: Some(workers), ..cfg.clone() };
        let o = pretrain(&c, &run, i > 0, true, &mut quiet).unwrap();
        assert_eq!(o.finished, max.is_none());
        losses.extend(o.losses);
    }
    assert_eq!(losses.len(), full.losses.len());
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&losses), bits(&full.losses), "losses after resuming differ");
    let a = std::fs::read(tmp.path().join("full/backbone.safetensors")).unwrap();
    let b = std::fs::read(run.join("backbone.safetensors")).unwrap();
    assert!(a == b, "final weights differ");
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 2, "one line per epoch: {metrics}");
    assert_eq!(std::fs::read_to_string(tmp.path().join("full/metrics.jsonl")).unwrap().lines().count(), 2);
    for f in ["curves.png", "summary.json", "config.json"] {
        assert!(run.join(f).is_file(), "{f}");
    }
}

#[test]
fn a_new_run_does_not_overwrite_and_a_changed_config_does_not_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let data = dataset(tmp.path());
    let cfg = PretrainConfig { epochs: 1, knn_every: 0, ..config(&data) };
    let run = tmp.path().join("run");
    let mut quiet = |_: &str| {};
    pretrain(&PretrainConfig { max_steps: Some(1), ..cfg.clone() }, &run, false, true, &mut quiet).unwrap();
    let e = pretrain(&cfg, &run, false, true, &mut quiet).unwrap_err().to_string();
    assert!(e.contains("--resume"), "{e}");
    let e =
        pretrain(&PretrainConfig { batch: 4, ..cfg.clone() }, &run, true, true, &mut quiet).unwrap_err().to_string();
    assert!(e.contains("other settings (--batch: 8 → 4"), "{e}");
    pretrain(&cfg, &run, true, true, &mut quiet).unwrap();
}

/// Issue 17: a checkpoint whose optimizer file lacked a parameter's moments (its digest made to
/// match) resumed with that parameter's optimizer restarted from zero: another run than the
/// one checkpointed, silently. It is an error naming the file and the tensor.
#[test]
fn a_checkpoint_missing_optimizer_moments_does_not_resume() {
    use siamlab_trainer::params::{load_safetensors, save_safetensors};
    let tmp = tempfile::tempdir().unwrap();
    let data = dataset(tmp.path());
    let cfg = PretrainConfig { epochs: 1, knn_every: 0, ..config(&data) };
    let run = tmp.path().join("run");
    let mut quiet = |_: &str| {};
    pretrain(&PretrainConfig { max_steps: Some(2), ..cfg.clone() }, &run, false, true, &mut quiet).unwrap();
    let dir = run.join("checkpoint");
    let file = dir.join("optimizer.safetensors");
    let mut dict = load_safetensors(&file).unwrap();
    let (moment, param) = {
        let key = dict.keys().next().unwrap();
        let (m, p) = key.split_once('.').unwrap();
        (m.to_string(), p.to_string())
    };
    dict.retain(|k, _| k.split_once('.').unwrap().1 != param);
    save_safetensors(&file, &dict).unwrap();
    let digest_file = dir.join("digest.json");
    let mut digest: serde_json::Value = serde_json::from_slice(&std::fs::read(&digest_file).unwrap()).unwrap();
    digest["optimizer.safetensors"] = siamlab_datasets::digest::sha256_file(&file).unwrap().0.into();
    std::fs::write(&digest_file, serde_json::to_vec(&digest).unwrap()).unwrap();
    let e = pretrain(&cfg, &run, true, true, &mut quiet).unwrap_err().to_string();
    assert!(
        e.contains(&format!("optimizer.safetensors: holds no {moment}.{param} though the run took 2 optimizer steps")),
        "{e}"
    );
}

/// Issue 17: deleting a checkpoint's `digest.json` resumed from weights nothing checked. A
/// checkpoint written now records its format, and resuming it without its digest is a one-line
/// error naming the folder; the digest put back, it resumes.
#[test]
fn a_checkpoint_without_its_digest_does_not_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let data = dataset(tmp.path());
    let cfg = PretrainConfig { epochs: 1, knn_every: 0, ..config(&data) };
    let run = tmp.path().join("run");
    let mut quiet = |_: &str| {};
    pretrain(&PretrainConfig { max_steps: Some(1), ..cfg.clone() }, &run, false, true, &mut quiet).unwrap();
    let dir = run.join("checkpoint");
    let digest = std::fs::read(dir.join("digest.json")).unwrap();
    std::fs::remove_file(dir.join("digest.json")).unwrap();
    let e = pretrain(&cfg, &run, true, true, &mut quiet).unwrap_err().to_string();
    assert!(e.contains("digest.json: missing, so the checkpoint's weights cannot be verified"), "{e}");
    assert!(e.contains(&format!("delete {} to restart the run from scratch", dir.display())), "{e}");
    assert!(!e.contains('\n'), "{e}");
    std::fs::write(dir.join("digest.json"), digest).unwrap();
    assert!(pretrain(&cfg, &run, true, true, &mut quiet).unwrap().finished);
}

/// Finetuning (prefetched batches) and linear evaluation (head and features on the device)
/// stopped after their first epoch and resumed for the second end with the same checkpoint,
/// bit for bit, and the same per-epoch losses as uninterrupted runs.
#[test]
fn resumed_finetuning_and_linear_runs_are_bitwise_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let data = dataset(tmp.path());
    let mut quiet = |_: &str| {};
    for linear in [false, true] {
        let cfg = FinetuneConfig {
            data: data.clone(),
            backbone: Some("resnet18_tiny".into()),
            epochs: 2,
            batch: 8,
            linear,
            workers: Some(2),
            ..FinetuneConfig::default()
        };
        let tag = if linear { "linear" } else { "full" };
        let full = tmp.path().join(format!("{tag}-full"));
        let a = finetune(&cfg, &full, false, true, &mut quiet).unwrap();
        let run = tmp.path().join(format!("{tag}-resumed"));
        finetune(&FinetuneConfig { epochs: 1, workers: Some(1), ..cfg.clone() }, &run, false, true, &mut quiet)
            .unwrap();
        // Continue it as the 2-epoch run (its configuration then matches).
        let path = run.join("config.json");
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.matches("\"epochs\": 1,").count(), 1, "{text}");
        std::fs::write(&path, text.replace("\"epochs\": 1,", "\"epochs\": 2,")).unwrap();
        let b = finetune(&cfg, &run, true, true, &mut quiet).unwrap();
        let losses = |s: &siamlab_trainer::Summary| {
            s.history.iter().map(|r| (r.epoch, r.train_loss.to_bits(), r.val.loss.to_bits())).collect::<Vec<_>>()
        };
        assert_eq!(losses(&a).len(), 2);
        assert_eq!(losses(&a), losses(&b), "{tag}: per-epoch losses differ after resuming");
        for f in ["model.safetensors", "optimizer.safetensors"] {
            let x = std::fs::read(full.join("checkpoint").join(f)).unwrap();
            let y = std::fs::read(run.join("checkpoint").join(f)).unwrap();
            assert!(x == y, "{tag}: checkpoint/{f} differs after resuming");
        }
    }
}
