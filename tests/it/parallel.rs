//! Several processes, one run (issue 18): a build without MPI refuses a multi-task launch in
//! one line; with `--features mpi`, two ranks of batch B under `mpirun` train as one process of
//! batch 2B (synchronized BatchNorm), step for step.

use crate::common::*;

/// A launcher's variables seen by a build that cannot join the tasks: one line, non-zero exit,
/// before anything is written.
#[cfg(not(feature = "mpi"))]
#[test]
fn a_build_without_mpi_refuses_a_launch_of_several_tasks() {
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("never");
    for var in ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "SLURM_NTASKS"] {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_siamlab"))
            .args(["ingest", "random", "--count", "4", "--size", "8", "--out", s(&out), "-q"])
            .env(var, "2")
            .output()
            .unwrap();
        assert!(!o.status.success());
        let err = String::from_utf8_lossy(&o.stderr).trim().to_string();
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(&format!("launched as 2 tasks by {var}")) && err.contains("--features mpi"), "{err}");
        assert!(!out.exists());
    }
    // One task is the single process, as today.
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_siamlab"))
        .args(["ingest", "random", "--count", "4", "--size", "8", "--out", s(&out), "-q"])
        .env("SLURM_NTASKS", "1")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[cfg(feature = "mpi")]
mod mpi {
    use std::path::Path;
    use std::process::{Command, Output};
    use std::time::{Duration, Instant};

    use siamlab_trainer::params::load_safetensors;
    use siamlab_trainer::run::files::{BACKBONE, BEST, CHECKPOINT, METRICS, WEIGHTS};

    use super::*;

    /// `siamlab train pretrain` arguments: `data` into `out`, `epochs` epochs of `batch` images
    /// per rank, the reduced-width EfficientNet at 16 px (SiLU: no float32 ReLU ties, which in a
    /// ResNet make any two summation orders part by ~1e-4 within a few steps, as PyTorch's float32
    /// does against float64; README "Fidelity"), no monitors.
    fn pretrain_args(data: &Path, out: &Path, epochs: usize, batch: usize, extra: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = [
            "train",
            "pretrain",
            "--data",
            s(data),
            "--out",
            s(out),
            "--backbone",
            "efficientnet_tiny",
            "--proj-dim",
            "128",
            "--epochs",
            &epochs.to_string(),
            "--batch",
            &batch.to_string(),
            "--accum",
            "1",
            "--knn-every",
            "0",
            "--workers",
            "1",
            "-q",
        ]
        .iter()
        .map(|a| a.to_string())
        .collect();
        args.extend(extra.iter().map(|a| a.to_string()));
        args
    }

    /// `program args` under `mpirun -n ranks` (as root where CI runs as root), or alone for
    /// one rank.
    fn launch(ranks: usize, program: &str, args: &[String]) -> Command {
        let mut c = if ranks > 1 {
            let mut c = Command::new("mpirun");
            c.args(["--oversubscribe", "--bind-to", "none", "-n", &ranks.to_string(), program]);
            c
        } else {
            Command::new(program)
        };
        c.args(args)
            .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
            .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
            .env("RAYON_NUM_THREADS", "1");
        c
    }

    fn pretrain(data: &Path, out: &Path, ranks: usize, epochs: usize, batch: usize, extra: &[&str]) {
        succeeds(ranks, &pretrain_args(data, out, epochs, batch, extra));
    }

    /// The loss of every epoch.
    fn losses(run: &Path) -> Vec<f64> {
        per_epoch(run, "loss").iter().map(|v| v.as_f64().unwrap()).collect()
    }

    /// The largest difference between the same tensors of two files whose names `keep` accepts.
    fn max_diff_of(a: &Path, b: &Path, keep: impl Fn(&str) -> bool) -> f32 {
        let (a, b) = (load_safetensors(a).unwrap(), load_safetensors(b).unwrap());
        assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
        a.iter()
            .filter(|(k, _)| keep(k))
            .flat_map(|(k, (_, x))| x.iter().zip(&b[k].1).map(|(x, y)| (x - y).abs()))
            .fold(0.0, f32::max)
    }

    /// The largest difference between the same tensors of two files.
    fn max_diff(a: &Path, b: &Path) -> f32 {
        max_diff_of(a, b, |_| true)
    }

    fn images(root: &Path, count: usize) -> std::path::PathBuf {
        let data = root.join("data");
        ok(&["ingest", "random", "--count", &count.to_string(), "--size", "16", "--out", s(&data), "-q"]);
        data
    }

    /// 20 steps of 2 ranks × batch 8 with synchronized BatchNorm = 20 steps of 1 process ×
    /// batch 16: losses within 1e-5, parameters within 1e-4.
    #[test]
    fn two_ranks_train_as_one_process_with_the_doubled_batch() {
        const STEPS: usize = 20;
        let t = tempfile::tempdir().unwrap();
        // 16 images: one batch of 16, or one batch of 8 on each of two ranks, per epoch.
        let data = images(t.path(), 16);
        let (one, two, unsynced) = (t.path().join("one"), t.path().join("two"), t.path().join("unsynced"));
        pretrain(&data, &one, 1, STEPS, 16, &[]);
        pretrain(&data, &two, 2, STEPS, 8, &[]);
        let (l1, l2) = (losses(&one), losses(&two));
        assert_eq!((l1.len(), l2.len()), (STEPS, STEPS));
        for (step, (a, b)) in l1.iter().zip(&l2).enumerate() {
            assert!((a - b).abs() < 1e-5, "step {step}: {a} on one process, {b} on two ranks");
        }
        // The weights (convolutions, linears, norm scales). Not the biases: several (a
        // BatchNorm's shift that the next convolution's BatchNorm cancels, the projector's
        // last bias) have a zero gradient in exact arithmetic, and Adam walks them by ±lr a step
        // on float32 rounding noise, which differs with the summation order (README
        // "Fidelity"); nor the running statistics that follow them.
        let weights = |k: &str| !k.ends_with("bias") && !k.contains("running_");
        for file in [one.join(BACKBONE), one.join(CHECKPOINT).join(WEIGHTS[0])] {
            let other = two.join(file.strip_prefix(&one).unwrap());
            let d = max_diff_of(&file, &other, weights);
            assert!(d < 1e-4, "{}: weights differ by {d}", other.display());
        }
        // Without synchronized BatchNorm each rank normalises its own half: another run.
        pretrain(&data, &unsynced, 2, STEPS, 8, &["--no-sync-bn"]);
        let l3 = losses(&unsynced);
        assert!(l1.iter().zip(&l3).skip(1).any(|(a, b)| (a - b).abs() > 1e-4), "{l1:?} vs {l3:?}");
    }

    /// `siamlab train finetune` arguments: `data` (shapes) into `out`, the reduced-width
    /// EfficientNet at 16 px from scratch, `batch` images per rank, validated and tested on
    /// the test split.
    fn finetune_args(data: &Path, out: &Path, epochs: usize, batch: usize, extra: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = [
            "train",
            "finetune",
            "--data",
            s(data),
            "--out",
            s(out),
            "--backbone",
            "efficientnet_tiny",
            "--image-size",
            "16",
            "--val-split",
            "test",
            "--test-split",
            "test",
            "--epochs",
            &epochs.to_string(),
            "--batch",
            &batch.to_string(),
            "--workers",
            "1",
            "-q",
        ]
        .iter()
        .map(|a| a.to_string())
        .collect();
        args.extend(extra.iter().map(|a| a.to_string()));
        args
    }

    /// `program args` on `ranks` rank(s); its stdout.
    fn succeeds(ranks: usize, args: &[String]) -> String {
        let o = launch(ranks, env!("CARGO_BIN_EXE_siamlab"), args)
            .output()
            .expect("run mpirun (apt-get install openmpi-bin)");
        assert!(o.status.success(), "{args:?} on {ranks} rank(s): {}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// A field of every line of a run's `metrics.jsonl`.
    fn per_epoch(run: &Path, field: &str) -> Vec<serde_json::Value> {
        std::fs::read_to_string(run.join(METRICS))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()[field].clone())
            .collect()
    }

    /// Finetuning on 2 ranks × batch 8 with synchronized BatchNorm = 1 process × batch 16,
    /// step for step (one step per epoch: 16 training images); validation, the final test and
    /// `siamlab eval` split their 21 images over the ranks (11 each, one seen twice) and give
    /// the one-process figures; the linear probe gives the same run bit for bit.
    #[test]
    fn two_ranks_finetune_and_evaluate_as_one_process() {
        const EPOCHS: usize = 20;
        let t = tempfile::tempdir().unwrap();
        let data = t.path().join("shapes");
        ok(&["ingest", "shapes", "--out", s(&data), "--count", "16", "--test-count", "21", "--size", "16", "-q"]);
        let (one, two) = (t.path().join("one"), t.path().join("two"));
        // Pretraining's learning rate at this batch: the losses of the two runs part only by
        // float32 rounding (≤ 1e-6 over 20 steps); at finetuning's default 1e-3, Adam's
        // normalised steps carry that rounding into ±lr moves and they part by ~2e-5.
        let lr = ["--lr", "1.25e-4"];
        succeeds(1, &finetune_args(&data, &one, EPOCHS, 16, &lr));
        succeeds(2, &finetune_args(&data, &two, EPOCHS, 8, &lr));
        let loss =
            |run: &Path| -> Vec<f64> { per_epoch(run, "train_loss").iter().map(|v| v.as_f64().unwrap()).collect() };
        let (l1, l2) = (loss(&one), loss(&two));
        assert_eq!((l1.len(), l2.len()), (EPOCHS, EPOCHS));
        for (step, (a, b)) in l1.iter().zip(&l2).enumerate() {
            assert!((a - b).abs() < 1e-5, "step {step}: {a} on one process, {b} on two ranks");
        }
        // Validation on all 21 test images each epoch, on either side.
        for (v1, v2) in per_epoch(&one, "val").iter().zip(per_epoch(&two, "val")) {
            assert_eq!((v1["images"].as_u64(), v2["images"].as_u64()), (Some(21), Some(21)));
            assert_eq!(v1["top1"], v2["top1"]);
            assert!((v1["loss"].as_f64().unwrap() - v2["loss"].as_f64().unwrap()).abs() < 1e-4, "{v1} vs {v2}");
        }
        let weights = |k: &str| !k.ends_with("bias") && !k.contains("running_");
        let d = max_diff_of(&one.join(BEST), &two.join(BEST), weights);
        assert!(d < 1e-4, "best weights differ by {d}");
        // Without synchronized BatchNorm each rank normalises its own half: another run, which
        // validates with rank 0's running statistics.
        let unsynced = t.path().join("unsynced");
        succeeds(2, &finetune_args(&data, &unsynced, 4, 8, &["--lr", "1.25e-4", "--no-sync-bn"]));
        let l3 = loss(&unsynced);
        assert!(l1.iter().zip(&l3).skip(1).any(|(a, b)| (a - b).abs() > 1e-4), "{l1:?} vs {l3:?}");
        // `siamlab eval` of one run on 1 and on 2 ranks: the same figures, bit for bit (the
        // same model; every image's logits counted once).
        let eval = |ranks| succeeds(ranks, &["eval", s(&one), "--split", "test", "--json"].map(String::from));
        let (e1, e2) = (eval(1), eval(2));
        assert_eq!(e1, e2);
        let e: serde_json::Value = serde_json::from_str(&e1).unwrap();
        assert_eq!(e["images"].as_u64(), Some(21), "{e1}");
        // Linear evaluation: features split over the ranks, the head trained on all of them
        // on each rank: the one-process run exactly.
        let (lin1, lin2) = (t.path().join("lin1"), t.path().join("lin2"));
        succeeds(1, &finetune_args(&data, &lin1, 2, 8, &["--linear"]));
        succeeds(2, &finetune_args(&data, &lin2, 2, 8, &["--linear"]));
        assert_eq!(per_epoch(&lin1, "train_loss"), per_epoch(&lin2, "train_loss"));
        assert_eq!(per_epoch(&lin1, "val"), per_epoch(&lin2, "val"));
        assert_eq!(max_diff(&lin1.join(BEST), &lin2.join(BEST)), 0.0);
    }

    /// A 2-rank run stopped mid-epoch (`--max-steps`) and resumed with `--resume` gives bit for
    /// bit the losses and weights of the uninterrupted 2-rank run; resuming with another number
    /// of ranks is refused.
    #[test]
    fn a_two_rank_run_resumes_bit_for_bit() {
        let t = tempfile::tempdir().unwrap();
        // 32 images: two steps of 2 × 8 per epoch, so step 3 stops in the middle of epoch 2.
        let data = images(t.path(), 32);
        let (full, cut) = (t.path().join("full"), t.path().join("cut"));
        pretrain(&data, &full, 2, 3, 8, &[]);
        pretrain(&data, &cut, 2, 3, 8, &["--max-steps", "3"]);
        assert_eq!(losses(&cut).len(), 1, "the interrupted run stopped after its first epoch");
        let args = pretrain_args(&data, &cut, 3, 8, &["--resume"]);
        let o = launch(1, env!("CARGO_BIN_EXE_siamlab"), &args).output().unwrap();
        assert!(!o.status.success(), "a 2-rank checkpoint resumed on one process");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("ranks (mpirun -n): 2 → 1"), "{err}");
        pretrain(&data, &cut, 2, 3, 8, &["--resume"]);
        let (a, b) = (losses(&full), losses(&cut));
        assert_eq!(a.len(), 3);
        assert_eq!(
            a.iter().map(|l| l.to_bits()).collect::<Vec<_>>(),
            b.iter().map(|l| l.to_bits()).collect::<Vec<_>>()
        );
        assert_eq!(max_diff(&full.join(BACKBONE), &cut.join(BACKBONE)), 0.0);
    }

    /// Rank 1 killed (SIGKILL) while training: the whole job ends with an error, it does not
    /// wait forever for the dead rank's gradients.
    #[test]
    fn a_killed_rank_ends_the_job_with_an_error() {
        let t = tempfile::tempdir().unwrap();
        let data = images(t.path(), 16);
        let run = t.path().join("run");
        // Each rank runs through `sh`, which execs siamlab under its own pid; on rank 1 a
        // watcher kills that pid once rank 0 has written the first epoch's metrics.
        let metrics = run.join(METRICS);
        let script = format!(
            "if [ \"$OMPI_COMM_WORLD_RANK\" = 1 ]; then (while [ ! -s '{}' ]; do sleep 0.1; done; kill -9 $$) & fi; exec \"$0\" \"$@\"",
            metrics.display()
        );
        let mut args = vec!["-c".to_string(), script, env!("CARGO_BIN_EXE_siamlab").to_string()];
        args.extend(pretrain_args(&data, &run, 100_000, 8, &[]));
        let mut child = launch(2, "sh", &args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run mpirun (apt-get install openmpi-bin)");
        // A hang guard, not a speed check: a healthy job ends within seconds of the kill.
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if started.elapsed() > Duration::from_secs(300) {
                child.kill().ok();
                panic!("mpirun still running 300 s after the start: the surviving rank hangs");
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let Output { stderr, .. } = child.wait_with_output().unwrap();
        assert!(metrics.exists(), "the job ended before training: {}", String::from_utf8_lossy(&stderr));
        assert!(!status.success(), "the job with a killed rank ended successfully");
    }
}
