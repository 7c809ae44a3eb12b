//! `siamlab train pretrain | finetune`, `siamlab eval`, `siamlab ablate --dry-run`: the user's
//! path from shards to numbers, and the bad inputs of the trainer.

use std::path::{Path, PathBuf};

use siamlab_datasets::synth;

use crate::common::*;

/// CIFAR-10 layout, 100 train and 40 test images, ingested.
fn cifar(root: &Path) -> PathBuf {
    let src = synth::cifar_binary(&root.join("src"), 20, 40, false).unwrap();
    let out = root.join("c10");
    ok(&["ingest", "cifar10", "--src", src.to_str().unwrap(), "--out", out.to_str().unwrap(), "-q"]);
    out
}

const TINY: &[&str] = &["--backbone", "resnet18_tiny", "--batch", "16", "--accum", "2", "--proj-dim", "128", "-q"];

#[test]
fn pretrain_finetune_linear_and_eval_from_the_command_line() {
    let t = tempfile::tempdir().unwrap();
    let data = cifar(t.path());
    let d = data.to_str().unwrap();
    let pre = t.path().join("pre");
    let mut args =
        vec!["train", "pretrain", "--data", d, "--epochs", "2", "--knn-every", "1", "--out", pre.to_str().unwrap()];
    args.extend_from_slice(TINY);
    let out = ok(&args);
    assert_eq!(out.lines().filter(|l| l.starts_with("epoch")).count(), 2, "{out}");
    assert!(out.contains("kNN") && out.contains("held-out cos"), "{out}");
    for f in ["backbone.safetensors", "metrics.jsonl", "summary.json", "config.json", "curves.png"] {
        assert!(pre.join(f).is_file(), "{f}");
    }
    let first: serde_json::Value =
        serde_json::from_str(std::fs::read_to_string(pre.join("metrics.jsonl")).unwrap().lines().next().unwrap())
            .unwrap();
    for k in ["loss", "lr", "z_std", "holdout_similarity", "knn_top1", "pairs_per_sec", "queue_fill", "overhead"] {
        assert!(first.get(k).is_some(), "{k} missing in {first}");
    }

    let init = format!("ssl:{}", pre.display());
    let ft = t.path().join("ft");
    let out = ok(&[
        "train",
        "finetune",
        "--data",
        d,
        "--init",
        &init,
        "--epochs",
        "2",
        "--batch",
        "16",
        "--out",
        ft.to_str().unwrap(),
        "-q",
    ]);
    assert!(out.contains("hold-out 10%") && out.contains("test: top-1"), "{out}");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ft.join("summary.json")).unwrap()).unwrap();
    let test_top1 = summary["test"]["top1"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&test_top1));
    assert_eq!(summary["history"].as_array().unwrap().len(), 2);
    // eval reproduces the test figure of the best checkpoint
    let json = ok(&["eval", ft.to_str().unwrap(), "--split", "test", "--json"]);
    let m: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(m["top1"].as_f64().unwrap(), test_top1);
    assert_eq!(m["images"], 40);

    let lin = t.path().join("lin");
    let out = ok(&[
        "train",
        "finetune",
        "--data",
        d,
        "--init",
        &init,
        "--linear",
        "--epochs",
        "3",
        "--out",
        lin.to_str().unwrap(),
        "-q",
    ]);
    assert!(out.contains("linear evaluation"), "{out}");
    assert!(lin.join("best.safetensors").is_file());

    // bad inputs, one line each
    let e = fails(&[
        "train",
        "finetune",
        "--data",
        d,
        "--init",
        &init,
        "--backbone",
        "resnet18",
        "--out",
        t.path().join("x").to_str().unwrap(),
    ]);
    assert!(e.contains("pretrained with backbone resnet18_tiny, not resnet18"), "{e}");
    let e = fails(&["train", "finetune", "--data", d, "--init", &init, "--out", ft.to_str().unwrap()]);
    assert!(e.contains("--resume"), "{e}");
    let bb = pre.join("backbone.safetensors");
    let e = fails(&[
        "train",
        "finetune",
        "--data",
        d,
        "--backbone",
        "efficientnet_tiny",
        "--init",
        &format!("imagenet:{}", bb.display()),
        "--out",
        t.path().join("y").to_str().unwrap(),
    ]);
    assert!(e.contains("backbone.safetensors") && e.contains("does not match"), "{e}");
    let e = fails(&["eval", pre.to_str().unwrap()]);
    assert!(e.contains("not a finetuning run"), "{e}");
}

#[test]
fn bad_inputs_stop_with_one_line() {
    let t = tempfile::tempdir().unwrap();
    let data = cifar(t.path());
    let d = data.to_str().unwrap();
    let out = |n: &str| t.path().join(n).to_str().unwrap().to_string();
    let run = |extra: &[&str], o: &str| {
        let mut a = vec!["train", "pretrain", "--data", d, "--out", o, "--epochs", "1", "--knn-every", "0", "-q"];
        // the tiny settings, unless the case sets the flag itself
        for kv in TINY[..TINY.len() - 1].chunks(2) {
            if !extra.contains(&kv[0]) {
                a.extend_from_slice(kv);
            }
        }
        a.extend_from_slice(extra);
        fails(&a)
    };
    let e = run(&["--split", "nope"], &out("a"));
    assert!(e.contains("no split \"nope\"") && e.contains("train, test"), "{e}");
    let missing = t.path().join("missing");
    let e = fails(&["train", "pretrain", "--data", missing.to_str().unwrap(), "--out", &out("b")]);
    assert!(e.contains("no manifest.json"), "{e}");
    let e = run(&["--backbone", "vit_s", "--image-size", "48"], &out("c"));
    assert!(e.contains("no preset for 48 px"), "{e}");
    let e = run(&["--proj-dim", "100"], &out("d"));
    assert!(e.contains("projection dim 100"), "{e}");
    // A diverging run stops with the loss named and writes no backbone.
    let e = run(&["--lr", "1e30", "--batch", "8", "--accum", "1"], &out("nan"));
    assert!(e.contains("loss is NaN") || e.contains("loss is inf"), "{e}");
    assert!(!t.path().join("nan/backbone.safetensors").exists());
    // Multi-label data with a single-label loss.
    let celeba = synth::celeba(&t.path().join("celeba-src"), 24, 16, 16, false, false, false).unwrap();
    let cd = t.path().join("celeba");
    ok(&["ingest", "celeba", "--src", celeba.to_str().unwrap(), "--out", cd.to_str().unwrap(), "-q"]);
    let e = fails(&[
        "train",
        "finetune",
        "--data",
        cd.to_str().unwrap(),
        "--backbone",
        "resnet18_tiny",
        "--loss",
        "ce",
        "--out",
        &out("e"),
    ]);
    assert!(e.contains("multi-label") && e.contains("--loss bce"), "{e}");
    // Unlabeled data cannot be finetuned on.
    let rnd = t.path().join("rnd");
    ok(&["ingest", "random", "--count", "20", "--size", "16", "--out", rnd.to_str().unwrap(), "-q"]);
    let e = fails(&[
        "train",
        "finetune",
        "--data",
        rnd.to_str().unwrap(),
        "--backbone",
        "resnet18_tiny",
        "--out",
        &out("f"),
    ]);
    assert!(e.contains("no labels"), "{e}");
    // ... and has no labels for the kNN monitor either.
    let e = fails(&[
        "train",
        "pretrain",
        "--data",
        rnd.to_str().unwrap(),
        "--backbone",
        "resnet18_tiny",
        "--out",
        &out("g"),
    ]);
    assert!(e.contains("kNN monitor") && e.contains("--knn-every 0"), "{e}");
}

#[test]
fn celeba_multi_label_finetune_reports_auc_and_jaccard() {
    let t = tempfile::tempdir().unwrap();
    let celeba = synth::celeba(&t.path().join("src"), 30, 16, 16, false, false, false).unwrap();
    let cd = t.path().join("celeba");
    ok(&["ingest", "celeba", "--src", celeba.to_str().unwrap(), "--out", cd.to_str().unwrap(), "-q"]);
    let ft = t.path().join("ft");
    let out = ok(&[
        "train",
        "finetune",
        "--data",
        cd.to_str().unwrap(),
        "--backbone",
        "resnet18_tiny",
        "--image-size",
        "16",
        "--epochs",
        "1",
        "--batch",
        "4",
        "--out",
        ft.to_str().unwrap(),
        "-q",
    ]);
    assert!(out.contains("valid: mean acc") && out.contains("macro AUC") && out.contains("Jaccard"), "{out}");
    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ft.join("summary.json")).unwrap()).unwrap();
    assert_eq!(s["val"]["multi_label"]["per_attribute_accuracy"].as_array().unwrap().len(), 40);
    assert!(s["test"]["multi_label"]["micro_auc"].as_f64().is_some());
}

#[test]
fn experiment_files_parse_and_plan() {
    for f in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/experiments")).unwrap() {
        let f = f.unwrap().path();
        if f.extension().is_some_and(|e| e == "toml") {
            let out = ok(&["ablate", f.to_str().unwrap(), "--dry-run"]);
            assert!(out.contains("finetune") && out.contains("estimated"), "{}: {out}", f.display());
        }
    }
}

#[test]
fn ablate_shares_steps_writes_tables_and_skips_what_is_finished() {
    let t = tempfile::tempdir().unwrap();
    // The publisher's archive, relative to the experiment file as in experiments/.
    let src = synth::cifar_binary(&t.path().join("src"), 20, 40, false).unwrap();
    std::fs::create_dir_all(t.path().join("data")).unwrap();
    synth::tar_gz(&src, &t.path().join("data/cifar-10-binary.tar.gz")).unwrap();
    std::fs::create_dir_all(t.path().join("exp")).unwrap();
    let file = t.path().join("exp/grid.toml");
    std::fs::write(
        &file,
        r#"
name = "grid"
title = "A small grid"
metrics = ["top1"]
seeds = [0, 1]

[datasets.cifar]
source = "cifar10"
src = "../data/cifar-10-binary.tar.gz"

[datasets.noise]
source = "random"
count = 48
size = 32

[pretrain_defaults]
backbone = "resnet18_tiny"
epochs = 1
batch = 16
accum = 1
proj_dim = 128
knn_every = 0

[pretrain.cifar]
data = "cifar"

[pretrain.noise]
data = "noise"

[finetune_defaults]
data = "cifar"
backbone = "resnet18_tiny"
epochs = 1
batch = 16

[[cells]]
row = "tiny"
column = "scratch"
init = "scratch"

[[cells]]
row = "tiny"
column = "noise SSL"
init = "ssl:noise"

[[cells]]
row = "tiny"
column = "CIFAR SSL"
init = "ssl:cifar"
"#,
    )
    .unwrap();
    let work = t.path().join("work");
    let (f, w) = (file.to_str().unwrap(), work.to_str().unwrap());
    let out = ok(&["ablate", f, "--work", w, "-q"]);
    // 2 ingests, 4 pretrainings (one per dataset and seed, shared by the cells), 6 finetunings.
    assert!(out.contains("[12/12] finetune"), "{out}");
    let mut pre: Vec<String> = std::fs::read_dir(work.join("pretrain"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    pre.sort();
    assert_eq!(pre, ["cifar--s0", "cifar--s1", "noise--s0", "noise--s1"]);
    let md = std::fs::read_to_string(work.join("results.md")).unwrap();
    assert!(md.contains("# A small grid") && md.contains("| tiny |") && md.contains(" ± "), "{md}");
    assert!(md.contains("| backbone | scratch | noise SSL | CIFAR SSL |"), "{md}");
    let cells: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(work.join("results.json")).unwrap()).unwrap();
    let cells = cells.as_array().unwrap();
    assert_eq!(cells.len(), 6, "3 cells × val and test top1");
    for c in cells {
        assert_eq!(c["values"].as_array().unwrap().len(), 2, "{c}");
        for run in c["runs"].as_array().unwrap() {
            assert!(Path::new(run.as_str().unwrap()).join("summary.json").is_file(), "{c}");
        }
    }

    // A rerun does nothing but rewrite the tables.
    let again = ok(&["ablate", f, "--work", w, "-q"]);
    assert_eq!(again.lines().filter(|l| l.ends_with(": done")).count(), 12, "{again}");
    let same: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(work.join("results.json")).unwrap()).unwrap();
    assert_eq!(same.as_array().unwrap(), cells);

    // A lost cell is run again, alone, and gives the same numbers (runs are deterministic).
    std::fs::remove_dir_all(work.join("cells/tiny--CIFAR_SSL--s1")).unwrap();
    let redo = ok(&["ablate", f, "--work", w, "-q"]);
    assert_eq!(redo.lines().filter(|l| l.contains("] finetune ")).count(), 1, "{redo}");
    assert!(redo.contains("] finetune tiny--CIFAR_SSL--s1"), "{redo}");
    let redone: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(work.join("results.json")).unwrap()).unwrap();
    assert_eq!(redone.as_array().unwrap(), cells);
}

/// `train finetune --dump-batches N DIR` writes what `tools/step_parity.py` replays: each batch
/// with its targets, the initial tensors, per step the gradients (the head's among them) and the
/// tensors after it, and `dump.json` with the schedule and optimizer; then it stops without
/// finishing the run.
#[test]
fn finetune_dump_holds_batches_targets_gradients_and_the_schedule() {
    let t = tempfile::tempdir().unwrap();
    let data = cifar(t.path());
    let (run, dump) = (t.path().join("ft"), t.path().join("dump"));
    let out = ok(&[
        "train",
        "finetune",
        "--data",
        data.to_str().unwrap(),
        "--backbone",
        "resnet18_tiny",
        "--batch",
        "16",
        "--out",
        run.to_str().unwrap(),
        "--dump-batches",
        "2",
        dump.to_str().unwrap(),
        "-q",
    ]);
    assert!(out.contains("dumped 2 finetuning steps"), "{out}");
    assert!(!run.join("summary.json").exists(), "a dump stops the run");
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dump.join("dump.json")).unwrap()).unwrap();
    assert_eq!(doc["config"]["outputs"], 10);
    assert_eq!(doc["config"]["loss"], "ce");
    assert_eq!(doc["config"]["schedule"]["base_lr"], 1e-3);
    assert_eq!(doc["config"]["optim"]["kind"], "adam");
    assert_eq!(doc["steps"].as_array().unwrap().len(), 2);
    for i in 0..2 {
        let targets = std::fs::read(dump.join(format!("targets-{i:05}.npy"))).unwrap();
        let header = String::from_utf8_lossy(&targets[..128]).to_string();
        assert!(header.contains("'shape': (16, 10)"), "{header}");
        // One-hot rows: 16 ones among 160 values.
        let ones =
            targets[128..].chunks_exact(4).filter(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) == 1.0).count();
        assert_eq!(ones, 16);
        assert!(dump.join(format!("batch-{i:05}.npy")).is_file());
    }
    assert!(!dump.join("batch-00002.npy").exists(), "only the batches asked for");
    let step = std::fs::read(dump.join("step-00002.safetensors")).unwrap();
    let names = String::from_utf8_lossy(&step[..step.len().min(1 << 16)]).to_string();
    for name in
        ["grad.fc.weight", "grad.fc.bias", "grad.backbone.conv1.weight", "\"fc.weight\"", "backbone.bn1.running_mean"]
    {
        assert!(names.contains(name), "{name} missing from step-00002.safetensors");
    }
}
