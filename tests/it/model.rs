use crate::common::*;

#[test]
fn model_summary_prints_shapes_and_the_reference_parameter_count() {
    let text = ok(&["model", "summary", "--backbone", "resnet18_cifar", "--image-size", "32"]);
    assert!(text.contains("[1, 512, 4, 4]"), "{text}");
    assert!(text.contains("Total params: 11,168,832"), "{text}");
    let err = fails(&["model", "summary", "--backbone", "resnet50"]);
    assert!(err.contains("unknown backbone \"resnet50\""), "{err}");
}

/// A safetensors file written by hand, as PyTorch writes them: bf16 weights, an int64 counter.
fn bf16_file(path: &std::path::Path, tensors: &[(String, Vec<usize>, Vec<f32>)]) {
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    for (name, shape, values) in tensors {
        let start = data.len();
        for v in values {
            data.extend_from_slice(&((v.to_bits() >> 16) as u16).to_le_bytes());
        }
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": "BF16", "shape": shape, "data_offsets": [start, data.len()]}),
        );
    }
    let start = data.len();
    data.extend_from_slice(&7i64.to_le_bytes());
    header.insert(
        "norm.num_batches_tracked".into(),
        serde_json::json!({"dtype": "I64", "shape": [], "data_offsets": [start, data.len()]}),
    );
    let header = serde_json::Value::Object(header).to_string();
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(&data);
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn model_summary_with_weights_reports_what_loaded_was_resampled_and_skipped() {
    // timm weights of the ViT-tiny preset trained at 96 px (patch 8, 12x12 grid) with a
    // 10-class head, loaded at 32 px (patch 4, 8x8 grid).
    let t = tempfile::tempdir().unwrap();
    let file = t.path().join("vit_tiny_96.safetensors");
    let mut keys: Vec<(String, Vec<usize>)> = vec![
        ("cls_token".into(), vec![1, 1, 48]),
        ("pos_embed".into(), vec![1, 145, 48]),
        ("patch_embed.proj.weight".into(), vec![48, 3, 8, 8]),
        ("patch_embed.proj.bias".into(), vec![48]),
        ("norm.weight".into(), vec![48]),
        ("norm.bias".into(), vec![48]),
        ("head.weight".into(), vec![10, 48]),
        ("head.bias".into(), vec![10]),
    ];
    for b in 0..2 {
        for (k, shape) in [
            ("norm1.weight", vec![48]),
            ("norm1.bias", vec![48]),
            ("attn.qkv.weight", vec![144, 48]),
            ("attn.qkv.bias", vec![144]),
            ("attn.proj.weight", vec![48, 48]),
            ("attn.proj.bias", vec![48]),
            ("norm2.weight", vec![48]),
            ("norm2.bias", vec![48]),
            ("mlp.fc1.weight", vec![192, 48]),
            ("mlp.fc1.bias", vec![192]),
            ("mlp.fc2.weight", vec![48, 192]),
            ("mlp.fc2.bias", vec![48]),
        ] {
            keys.push((format!("blocks.{b}.{k}"), shape));
        }
    }
    let tensors: Vec<(String, Vec<usize>, Vec<f32>)> = keys
        .into_iter()
        .map(|(k, s)| {
            let n = s.iter().product::<usize>();
            (k, s, (0..n).map(|i| (i as f32 * 0.1).sin() * 0.05).collect())
        })
        .collect();
    bf16_file(&file, &tensors);
    let f = file.to_str().unwrap();
    let text = ok(&["model", "summary", "--backbone", "vit_tiny", "--image-size", "32", "--weights", f]);
    for line in [
        "loaded 30 tensors",
        "resampled pos_embed [1, 145, 48] -> [1, 65, 48]: 12x12 -> 8x8 position grid",
        "resampled patch_embed.proj.weight [48, 3, 8, 8] -> [48, 3, 4, 4]",
        "skipped the classifier: head.bias, head.weight",
        "[1, 48]",
    ] {
        assert!(text.contains(line), "{line:?} not in {text}");
    }
    let err = fails(&["model", "summary", "--backbone", "pit_tiny", "--weights", f]);
    assert!(
        err.contains("vit_tiny_96.safetensors") && err.contains("does not match") && err.contains("missing"),
        "{err}"
    );
}

#[test]
fn export_writes_a_pretraining_or_finetuning_run_under_timm_names() {
    let t = tempfile::tempdir().unwrap();
    let p = |name: &str| t.path().join(name).to_str().unwrap().to_string();
    ok(&["ingest", "shapes", "--out", &p("shapes"), "--count", "32", "--test-count", "16", "--size", "32", "-q"]);
    let (shapes, pre, ft) = (p("shapes"), p("pre"), p("ft"));
    let tiny = ["--backbone", "pit_tiny", "--epochs", "1", "--batch", "16", "-q"];
    let mut args = vec!["train", "pretrain", "--data", &shapes, "--out", &pre, "--accum", "1"];
    args.extend_from_slice(&["--proj-dim", "128", "--knn-every", "0"]);
    args.extend_from_slice(&tiny);
    ok(&args);
    let text = ok(&["export", "--run", &p("pre"), "--format", "timm", "--out", &p("pre.safetensors")]);
    assert!(text.contains("wrote") && text.contains("50 tensors"), "{text}");
    assert!(text.contains("timm.models.pit.PoolingVisionTransformer(img_size=32, patch_size=4, stride=2"), "{text}");
    assert!(text.contains("strict=True"), "{text}");
    let err = fails(&["export", "--run", &p("pre"), "--format", "torchvision", "--out", &p("x.safetensors")]);
    assert!(err.contains("--format timm"), "{err}");

    // A finetuning run keeps the backbone beside its head: the export is the backbone alone.
    let init = format!("ssl:{pre}");
    let mut args = vec!["train", "finetune", "--data", &shapes, "--out", &ft, "--init", &init];
    args.extend_from_slice(&tiny);
    ok(&args);
    ok(&["export", "--run", &p("ft"), "--format", "timm", "--out", &p("ft.safetensors")]);
    let read = |f: &str| siamlab_trainer::params::load_safetensors(std::path::Path::new(&p(f))).unwrap();
    let (a, b) = (read("pre.safetensors"), read("ft.safetensors"));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    assert_eq!(a, read("pre/backbone.safetensors"));
    let err = fails(&["export", "--run", &p("shapes"), "--format", "timm", "--out", &p("y.safetensors")]);
    assert!(err.contains("config.json"), "{err}");
}
