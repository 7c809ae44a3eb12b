//! Shards on a real S3-compatible server: ingest → verify (two processes sharing one cache) →
//! inspect → pretrain 1 epoch → finetune → eval, all from `s3://`, and a damaged object
//! named. The server is moto's (`.ci/run` starts `moto_server` and sets
//! `SIAMLAB_TEST_S3_ENDPOINT`); without that variable the test says so and does nothing.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Output};

use siamlab_datasets::synth;

const ENDPOINT_VAR: &str = "SIAMLAB_TEST_S3_ENDPOINT";

/// `siamlab ARGS` with the AWS settings of the test server.
fn s3_cmd(endpoint: &str, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_siamlab"));
    c.args(args)
        .env("CI", "1")
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_ALLOW_HTTP", "true");
    c
}

fn ok(endpoint: &str, args: &[&str]) -> String {
    let out: Output = s3_cmd(endpoint, args).output().expect("run siamlab");
    assert!(out.status.success(), "siamlab {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A bare HTTP/1.1 request: status code and body. moto (5.x) refuses anonymous reads but does
/// not check signatures, so a SigV4 header of the test credentials with any signature passes.
fn http(endpoint: &str, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let host = endpoint.trim_start_matches("http://").trim_end_matches('/');
    let mut s = TcpStream::connect(host).expect("connect to the S3 test server");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\nConnection: close\r\n\
         Authorization: AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/s3/aws4_request, \
         SignedHeaders=host, Signature=00\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(body).unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).unwrap();
    let text = String::from_utf8_lossy(&resp);
    let code = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let start = resp.windows(4).position(|w| w == b"\r\n\r\n").map_or(resp.len(), |p| p + 4);
    (code, resp[start..].to_vec())
}

fn downloaded(out: &str) -> u64 {
    let line = out.lines().find(|l| l.starts_with("cache:")).unwrap_or_else(|| panic!("no cache line in {out}"));
    line["cache: ".len()..].split_whitespace().next().unwrap().parse().unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn ingest_train_and_eval_from_an_s3_bucket() {
    let Ok(endpoint) = std::env::var(ENDPOINT_VAR) else {
        // CI always runs it (.ci/run starts moto_server and sets the variable).
        assert!(std::env::var_os("CI").is_none(), "{ENDPOINT_VAR} is not set under CI");
        println!("skipped: {ENDPOINT_VAR} is not set (.ci/run starts moto_server and sets it)");
        return;
    };
    let bucket = format!("siamlab-it-{}", std::process::id());
    let (code, body) = http(&endpoint, "PUT", &format!("/{bucket}"), b"");
    assert_eq!(code, 200, "create bucket: {}", String::from_utf8_lossy(&body));
    let t = tempfile::tempdir().unwrap();
    let src = synth::cifar_binary(&t.path().join("src"), 20, 40, false).unwrap();
    let url = format!("s3://{bucket}/c10");

    let out = ok(&endpoint, &["ingest", "cifar10", "--src", s(&src), "--out", &url, "--shard-size-mb", "0.05", "-q"]);
    assert!(out.contains(&format!("wrote {url} (cifar10)")), "{out}");
    let (code, manifest) = http(&endpoint, "GET", &format!("/{bucket}/c10/manifest.json"), b"");
    assert_eq!(code, 200);
    let m: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    let shards = m["splits"]["train"]["shards"].as_array().unwrap().len()
        + m["splits"]["test"]["shards"].as_array().unwrap().len();
    assert!(shards >= 4, "{shards} shards");
    // The cache is content-addressed: shards with the same bytes (the synthetic archive repeats
    // images) are one file.
    let distinct: std::collections::BTreeSet<&str> = ["train", "test"]
        .iter()
        .flat_map(|s| m["splits"][*s]["shards"].as_array().unwrap())
        .map(|sh| sh["sha256"].as_str().unwrap())
        .collect();
    let again = ok(&endpoint, &["ingest", "cifar10", "--src", s(&src), "--out", &url, "--shard-size-mb", "0.05", "-q"]);
    assert!(again.contains("is already complete"), "{again}");

    // Two processes verify through one cache: each shard is downloaded once between them.
    let cache = t.path().join("cache");
    let spawn = || {
        s3_cmd(&endpoint, &["verify", &url, "--decode", "--cache", s(&cache)])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let outs: Vec<String> = [a, b]
        .into_iter()
        .map(|c| {
            let o = c.wait_with_output().unwrap();
            assert!(o.status.success());
            String::from_utf8_lossy(&o.stdout).into_owned()
        })
        .collect();
    assert!(outs[0].contains(&format!("{url}: OK ({shards} shards, 140 rows, 140 images decoded)")), "{}", outs[0]);
    // Each distinct shard once between the two, and all of them in the shared cache afterwards.
    assert_eq!(downloaded(&outs[0]) + downloaded(&outs[1]), distinct.len() as u64, "{outs:?}");
    let cached = std::fs::read_dir(cache.join("shards"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".parquet"))
        .count();
    assert_eq!(cached, distinct.len(), "{outs:?}");

    let out = ok(&endpoint, &["inspect", &url, "--split", "test", "--cache", s(&cache)]);
    assert!(out.contains("test: 40 rows, images 32x32"), "{out}");

    let tiny = ["--backbone", "resnet18_tiny", "--batch", "16", "--accum", "2", "--proj-dim", "128", "-q"];
    let pre = t.path().join("pre");
    let mut args = vec!["train", "pretrain", "--data", &url, "--epochs", "1", "--knn-every", "1"];
    args.extend_from_slice(&["--out", s(&pre), "--cache", s(&cache), "--shuffle-by", "shards"]);
    args.extend_from_slice(&tiny);
    let out = ok(&endpoint, &args);
    assert_eq!(out.lines().filter(|l| l.starts_with("epoch")).count(), 1, "{out}");
    assert!(pre.join("backbone.safetensors").is_file());
    // The order is part of the run's configuration (a resume replays it).
    let config = std::fs::read_to_string(pre.join("config.json")).unwrap().replace(' ', "");
    assert!(config.contains(r#""shuffle_by":"shards""#), "{config}");

    let ft = t.path().join("ft");
    let init = format!("ssl:{}", pre.display());
    ok(
        &endpoint,
        &["train", "finetune", "--data", &url, "--init", &init, "--epochs", "1", "--batch", "16"]
            .into_iter()
            .chain(["--out", s(&ft), "--cache", s(&cache), "-q"])
            .collect::<Vec<_>>(),
    );
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ft.join("summary.json")).unwrap()).unwrap();
    // eval reads the run's data (the URL) again, through a fresh cache.
    let json = ok(&endpoint, &["eval", s(&ft), "--split", "test", "--json", "--cache", s(&t.path().join("cache2"))]);
    let e: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(e["top1"], summary["test"]["top1"]);
    assert_eq!(e["images"], 40);

    // A damaged object: named, with its sha256, and nothing cached.
    let shard = m["splits"]["train"]["shards"][0]["path"].as_str().unwrap();
    let key = format!("/{bucket}/c10/{shard}");
    let (_, mut bytes) = http(&endpoint, "GET", &key, b"");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    assert_eq!(http(&endpoint, "PUT", &key, &bytes).0, 200);
    let out = s3_cmd(&endpoint, &["verify", &url, "--cache", s(&t.path().join("cache3"))]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{url}/{shard}: content differs from the manifest (sha256 ")), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}
