//! The device prefetch stage: the same batches as the pipeline, in order, each with the
//! pipeline position after it (and, for finetuning, its labels), and in steady state already
//! on the device when asked for.

use std::path::{Path, PathBuf};

use siamlab_datasets::ingest::{ingest, IngestOptions};
use siamlab_datasets::sources::cifar::Cifar;
use siamlab_pipeline::Pipeline;
use siamlab_trainer::head::Loss;
use siamlab_trainer::net::{build_cls, build_ssl};
use siamlab_trainer::prefetch::DevicePrefetch;
use siamlab_trainer::DeviceSpec;

fn dataset(root: &Path) -> PathBuf {
    let src = siamlab_datasets::synth::cifar_binary(root, 20, 16, false).unwrap();
    let out = root.join("shards");
    ingest(Box::new(Cifar::open(&src, false).unwrap()), &IngestOptions::new(&out)).unwrap();
    out
}

fn pipeline(data: &Path) -> Pipeline {
    Pipeline::builder(data).split("train").epoch(0).views("simsiam", 2).batch_size(8).workers(2).build().unwrap()
}

#[test]
fn prefetched_batches_follow_the_pipeline_and_carry_its_position() {
    let tmp = tempfile::tempdir().unwrap();
    let data = dataset(tmp.path());
    let mut plain = pipeline(&data);
    let mut expected = Vec::new();
    while let Some(b) = plain.next_blocking() {
        expected.push((b.unwrap().len(), plain.state()));
    }
    assert_eq!(expected.len(), 13); // 100 images, batch 8, the last one partial

    let mut net = build_ssl(DeviceSpec::Cpu, 0, "resnet18_tiny", 32, 128).unwrap();
    let mut stage = DevicePrefetch::new(pipeline(&data), net.uploader(), 2, (32, 32));
    let mut got = Vec::new();
    while let Some(b) = stage.next_batch() {
        let b = b.unwrap();
        got.push((b.len, b.state));
        // The step: the next batch is uploaded while it runs.
        let s = net.train_uploaded(b.views, 1.0, &mut || stage.fill()).unwrap();
        assert!(s.loss.is_finite());
    }
    assert_eq!(got, expected);
    // Only the first batch was not waiting on the device.
    assert_eq!(stage.waits(), (13, 1));
}

#[test]
fn a_batch_uploaded_with_other_views_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let data = dataset(tmp.path());
    let net = build_ssl(DeviceSpec::Cpu, 0, "resnet18_tiny", 32, 128).unwrap();
    let mut stage = DevicePrefetch::new(pipeline(&data), net.uploader(), 1, (32, 32));
    let err = stage.next_batch().unwrap().err().unwrap().to_string();
    assert!(err.contains("2 views"), "{err}");
}

#[test]
fn finetuning_batches_are_prefetched_with_their_labels() {
    let tmp = tempfile::tempdir().unwrap();
    let data = dataset(tmp.path());
    let finetune = || {
        Pipeline::builder(&data).split("train").epoch(1).views("finetune", 1).batch_size(8).workers(2).build().unwrap()
    };
    let mut plain = finetune();
    let mut expected = Vec::new();
    while let Some(b) = plain.next_blocking() {
        let b = b.unwrap();
        expected.push((b.len(), b.labels().to_vec(), plain.state()));
    }
    assert_eq!(expected.len(), 13);

    let mut net = build_cls(DeviceSpec::Cpu, 0, "resnet18_tiny", 32, 10).unwrap();
    let mut names = Vec::new();
    net.walk(&mut |s, _| {
        names.push(s.name.to_string());
        Ok(false)
    })
    .unwrap();
    assert!(names.contains(&"backbone.conv1.weight".to_string()), "{:?}", &names[..3]);
    assert_eq!(names[names.len() - 2..], ["fc.weight", "fc.bias"]);
    let mut stage = DevicePrefetch::new(finetune(), net.uploader(), 1, (32, 32));
    let mut got = Vec::new();
    while let Some(b) = stage.next_batch() {
        let b = b.unwrap();
        got.push((b.len, b.labels.clone(), b.state));
        let mut targets = vec![0f32; b.len * 10];
        for (i, &l) in b.labels.iter().enumerate() {
            targets[i * 10 + l as usize] = 1.0;
        }
        let loss = net.train_uploaded(b.views, Loss::Ce, targets, 1.0, &mut || stage.fill()).unwrap();
        assert!(loss.is_finite());
    }
    assert_eq!(got, expected);
    assert_eq!(stage.waits(), (13, 1));
    // A SimSiam pair is not a finetuning batch.
    let mut stage = DevicePrefetch::new(pipeline(&data), net.uploader(), 2, (32, 32));
    let err = stage.next_batch().unwrap().err().unwrap().to_string();
    assert!(err.contains("finetuning takes 1 view"), "{err}");
}
