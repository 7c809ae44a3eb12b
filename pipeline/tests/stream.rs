//! The streaming pipeline end to end, on shards written by `siamlab_datasets::ingest`.

use std::path::{Path, PathBuf};

use siamlab_datasets::shard::{self, Columns, Layout, Manifest, Row, ShardReader, SplitInfo, SplitWriter};
use siamlab_datasets::sources::Cifar;
use siamlab_datasets::{ingest, synth, IngestOptions, SourceInfo};
use siamlab_pipeline::augment::Normalize;
use siamlab_pipeline::{Batch, Error, Pipeline, PipelineState};

/// 5 × `per_file` CIFAR-layout images (pattern of `synth`), shards of ~`shard_kb` KB.
fn cifar_shards(dir: &Path, per_file: u64, shard_kb: u64) -> PathBuf {
    let src = synth::cifar_binary(dir, per_file, 4, false).unwrap();
    let out = dir.join("shards");
    let mut o = IngestOptions::new(&out);
    o.shard_bytes = shard_kb << 10;
    ingest(Box::new(Cifar::open(&src, false).unwrap()), &o).unwrap();
    out
}

fn collect(p: Pipeline) -> Vec<Batch> {
    p.map(|b| b.unwrap()).collect()
}

fn same(a: &[Batch], b: &[Batch]) {
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        assert_eq!(x.shape, y.shape);
        assert_eq!(x.rows(), y.rows());
        assert_eq!(x.labels(), y.labels());
        for v in 0..x.num_views() {
            let (p, q) = (x.view(v), y.view(v));
            assert!(p.iter().zip(q).all(|(a, b)| a.to_bits() == b.to_bits()), "batch {} view {v} differs", x.seq);
        }
    }
}

#[test]
fn eval_recipe_delivers_exact_pixels_labels_and_indices() {
    let t = tempfile::tempdir().unwrap();
    let dir = cifar_shards(t.path(), 10, 16);
    let p = Pipeline::builder(&dir)
        .views("eval", 1)
        .normalize(Normalize::new([0.0; 3], [1.0; 3]).unwrap())
        .batch_size(8)
        .shuffle(false)
        .workers(2)
        .build()
        .unwrap();
    assert_eq!(p.shape(), [8, 3, 32, 32]);
    let mut batches = collect(p);
    assert_eq!(batches.iter().map(|b| b.len()).sum::<usize>(), 50);
    let last = batches.last_mut().unwrap();
    let (n, first) = (last.len(), last.view(0)[0]);
    let mut parts = last.parts_mut();
    assert_eq!((parts.views.len(), parts.views[0].len(), parts.labels.len(), parts.indices.len()), (1, n * 3072, n, n));
    assert!(parts.attributes.is_empty());
    parts.views[0][0] = first + 1.0;
    assert_eq!(last.view(0)[0], first + 1.0, "parts_mut gives the batch's own memory");
    last.parts_mut().views[0][0] = first; // undone for the pixel checks below
    let mut seen = 0;
    for b in &batches {
        for k in 0..b.len() {
            let i = b.indices()[k] as u64;
            assert_eq!(i, seen);
            assert_eq!(b.labels()[k], (i % 10) as i64);
            let img = &b.view(0)[k * 3072..(k + 1) * 3072];
            for (c, y, x) in [(0, 0, 0), (1, 5, 7), (2, 31, 30)] {
                let want = synth::pixel(i, c, y, x) as f32 / 255.0;
                assert!((img[c * 1024 + y * 32 + x] - want).abs() < 1e-6, "image {i} c{c} y{y} x{x}");
            }
            seen += 1;
        }
    }
}

#[test]
fn one_and_four_workers_give_bitwise_identical_batches() {
    let t = tempfile::tempdir().unwrap();
    let dir = cifar_shards(t.path(), 20, 24);
    let run = |w| {
        collect(Pipeline::builder(&dir).seed(5).epoch(2).batch_size(16).workers(w).shuffle_window(30).build().unwrap())
    };
    let (a, b) = (run(1), run(4));
    assert_eq!(a.len(), 7);
    same(&a, &b);
    let other_epoch =
        collect(Pipeline::builder(&dir).seed(5).epoch(3).batch_size(16).workers(2).shuffle_window(30).build().unwrap());
    assert_ne!(a[0].rows(), other_epoch[0].rows(), "a new order every epoch");
}

#[test]
fn resume_yields_exactly_the_remaining_batches() {
    let t = tempfile::tempdir().unwrap();
    let dir = cifar_shards(t.path(), 20, 24);
    let build = || Pipeline::builder(&dir).seed(1).epoch(4).batch_size(12).workers(2);
    let all = collect(build().build().unwrap());
    let mut p = build().build().unwrap();
    for _ in 0..3 {
        p.next_blocking().unwrap().unwrap();
    }
    let state = p.state();
    assert_eq!(state, PipelineState { epoch: 4, next_sample: 36, seed: 1 });
    drop(p);
    let json = serde_json::to_string(&state).unwrap();
    let state: PipelineState = serde_json::from_str(&json).unwrap();
    let rest = collect(Pipeline::builder(&dir).batch_size(12).workers(3).resume(state).build().unwrap());
    same(&all[3..], &rest);
}

#[test]
fn ranks_are_disjoint_covering_with_equal_batch_counts() {
    let t = tempfile::tempdir().unwrap();
    let dir = cifar_shards(t.path(), 20, 24);
    let mut rows = Vec::new();
    let mut counts = Vec::new();
    for rank in 0..3 {
        let builder = Pipeline::builder(&dir).seed(9).batch_size(8).shard(rank, 3).workers(1);
        assert_eq!(builder.batches_per_epoch().unwrap(), 5, "planned without starting");
        let p = builder.build().unwrap();
        counts.push(p.batches());
        for b in collect(p) {
            rows.extend_from_slice(b.rows());
        }
    }
    assert!(counts.iter().all(|&c| c == counts[0]), "{counts:?}");
    rows.sort();
    let n = rows.len();
    rows.dedup();
    assert_eq!(rows.len(), 100, "every row covered");
    assert_eq!(n, 102, "padding repeats 2 rows to make 3 equal blocks of 34");
}

#[test]
fn async_stream_and_missing_shard_error() {
    let t = tempfile::tempdir().unwrap();
    let dir = cifar_shards(t.path(), 20, 8);
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let n = rt.block_on(async {
        let mut p = Pipeline::builder(&dir).batch_size(10).workers(2).build().unwrap();
        let mut n = 0;
        while let Some(b) = p.next().await {
            n += b.unwrap().len();
        }
        n
    });
    assert_eq!(n, 100);
    // remove a shard after planning: the error reaches the consumer, no panic, no hang
    let p = Pipeline::builder(&dir).batch_size(10).shuffle(false).workers(2).build().unwrap();
    let shard = std::fs::read_dir(dir.join("train")).unwrap().flatten().map(|e| e.path()).max().unwrap();
    std::fs::remove_file(&shard).unwrap();
    let results: Vec<_> = p.collect();
    let err = results.last().unwrap().as_ref().unwrap_err();
    assert!(matches!(err, Error::Data(_)) && err.to_string().contains("part-"), "{err}");
}

/// A `train` split of 8 × 8 images written row by row, with classes and attributes as `info`
/// says, in shards of about `shard_bytes`.
fn hand_split(dir: &Path, info: SourceInfo, rows: Vec<Row>, shard_bytes: u64) {
    let cols = Columns::of(&info);
    let mut w = SplitWriter::new(dir, "train", shard::schema(&info, cols), cols, Layout::with_shard_bytes(shard_bytes));
    let n = rows.len() as u64;
    for row in rows {
        w.push(row).unwrap();
    }
    let shards = w.finish().unwrap();
    let m = Manifest {
        schema_version: shard::SCHEMA_VERSION,
        source: "test".into(),
        arguments: serde_json::Value::Null,
        created_by: "test".into(),
        split_order: vec!["train".into()],
        splits: [(
            "train".to_string(),
            SplitInfo { rows: n, skipped: 0, size_range: Some([8, 8, 8, 8]), stats: None, shards },
        )]
        .into(),
        classes: info.classes,
        coarse_classes: None,
        attributes: info.attributes,
        stats_split: None,
        stats: None,
        extra: serde_json::Value::Null,
    };
    m.store(dir).unwrap();
}

fn hand_row(i: u64, bytes: Vec<u8>) -> Row {
    Row { index: i as i64, label: None, coarse_label: None, attributes: None, bytes, path: None, width: 8, height: 8 }
}

#[test]
fn undecodable_row_names_shard_and_row_or_is_skipped() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("bad");
    let info = SourceInfo { name: "test".into(), splits: vec!["train".into()], ..Default::default() };
    let rows = (0..6)
        .map(|i| hand_row(i, if i == 4 { b"not an image".to_vec() } else { synth::pattern_png(i, 8, 8) }))
        .collect();
    hand_split(&dir, info, rows, 1 << 20);
    let res: Vec<_> = Pipeline::builder(&dir).batch_size(3).shuffle(false).workers(2).build().unwrap().collect();
    let err = res[1].as_ref().unwrap_err();
    assert!(matches!(err, Error::Decode { row: 4, err: siamlab_datasets::decode::DecodeError::Image(_), .. }), "{err}");
    let err = err.to_string();
    assert!(err.contains("part-00000-of-00001.parquet: row 4: image does not decode"), "{err}");
    let p = Pipeline::builder(&dir).batch_size(3).shuffle(false).workers(2).skip_bad(true).build().unwrap();
    let got: Vec<usize> = p.map(|b| b.unwrap().len()).collect();
    assert_eq!(got, [3, 2]);
}

/// Issue 17: a label outside the manifest's classes reached the trainer, which could only say
/// "label 12 is not a class" without the shard or row holding it.
/// A one-shard `train` split of 6 rows of a 2-class dataset in `dir`, row `i` labelled `label(i)`.
fn two_class_split(dir: &std::path::Path, label: impl Fn(u64) -> Option<i64>) {
    let info = SourceInfo {
        name: "test".into(),
        splits: vec!["train".into()],
        classes: Some(vec!["a".into(), "b".into()]),
        ..Default::default()
    };
    let rows = (0..6).map(|i| Row { label: label(i), ..hand_row(i, synth::pattern_png(i, 8, 8)) }).collect();
    hand_split(dir, info, rows, 1 << 20);
}

#[test]
fn a_label_outside_the_classes_names_its_shard_and_row() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("labels");
    two_class_split(&dir, |i| Some(if i == 4 { 12 } else { (i % 2) as i64 }));
    let res: Vec<_> = Pipeline::builder(&dir).batch_size(3).shuffle(false).workers(2).build().unwrap().collect();
    assert!(res[0].is_ok());
    let err = res[1].as_ref().unwrap_err().to_string();
    assert!(
        err.contains("part-00000-of-00001.parquet: row 4: label 12 is not a class of this dataset (0..2)"),
        "{err}"
    );
    assert_eq!(res.len(), 2, "the pipeline ends after the error");
}

#[test]
fn an_unlabeled_row_is_an_error_naming_its_shard_and_row_where_labels_are_required() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("unlabeled");
    two_class_split(&dir, |i| (i != 4).then_some((i % 2) as i64));
    let run = |require: bool| -> Vec<_> {
        Pipeline::builder(&dir)
            .batch_size(3)
            .shuffle(false)
            .workers(2)
            .require_labels(require)
            .build()
            .unwrap()
            .collect()
    };
    // Self-supervised use: the unlabeled row is delivered with label -1.
    let free = run(false);
    assert_eq!(free[1].as_ref().unwrap().labels(), &[1, -1, 1]);
    let res = run(true);
    assert!(res[0].is_ok());
    let err = res[1].as_ref().unwrap_err().to_string();
    assert!(err.contains("part-00000-of-00001.parquet: row 4: no label"), "{err}");
    assert_eq!(res.len(), 2, "the pipeline ends after the error");
}

#[test]
fn labels_attributes_and_indices_follow_their_rows_across_row_groups() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("attrs");
    let n_attr = siamlab_datasets::record::NUM_ATTRIBUTES;
    let info = SourceInfo {
        name: "test".into(),
        splits: vec!["train".into()],
        classes: Some(vec!["a".into(), "b".into(), "c".into()]),
        attributes: Some((0..n_attr).map(|k| format!("attr{k}")).collect()),
        ..Default::default()
    };
    let attrs = |i: u64| -> [i8; siamlab_datasets::record::NUM_ATTRIBUTES] {
        std::array::from_fn(|k| ((i + k as u64) % 2) as i8)
    };
    let rows = (0..40)
        .map(|i| Row {
            label: (i % 5 != 3).then_some((i % 3) as i64),
            attributes: (i % 7 != 2).then(|| attrs(i)),
            index: 1000 + i as i64,
            ..hand_row(i, synth::pattern_png(i, 8, 8))
        })
        .collect();
    hand_split(&dir, info, rows, 2 << 10); // row groups of a few rows
    let p =
        Pipeline::builder(&dir).views("eval", 1).seed(2).batch_size(6).workers(2).shuffle_window(9).build().unwrap();
    let mut seen = 0;
    for b in collect(p) {
        assert_eq!(b.attributes().len(), b.len() * n_attr);
        for k in 0..b.len() {
            let i = b.rows()[k];
            assert_eq!(b.indices()[k], 1000 + i as i64);
            assert_eq!(b.labels()[k], if i % 5 == 3 { -1 } else { (i % 3) as i64 }, "row {i}");
            let want = if i % 7 == 2 { [0; siamlab_datasets::record::NUM_ATTRIBUTES] } else { attrs(i) };
            assert_eq!(&b.attributes()[k * n_attr..(k + 1) * n_attr], &want[..], "row {i}");
            seen += 1;
        }
    }
    assert_eq!(seen, 40);
}

/// Regression, issue 3 (peak RSS grew by 60% from 10k to 100k images of 96 px): the default
/// shuffle window was 8,192 rows whatever their size, and nothing bounded the batches a
/// stalled worker let the reorder stage collect. The read stage holds at most two shuffle
/// windows of row groups and the batch buffers stay within `prefetch + 2 × workers + 1`,
/// however many batches the epoch has.
#[test]
fn memory_is_bounded_by_the_window_and_the_queues_not_the_dataset() {
    let t = tempfile::tempdir().unwrap();
    let dir = cifar_shards(t.path(), 60, 16);
    let mut group_rows = Vec::new();
    for e in std::fs::read_dir(dir.join("train")).unwrap().flatten() {
        let r = ShardReader::open(&e.path()).unwrap();
        group_rows.extend((0..r.row_groups()).map(|g| r.row_group_rows(g)));
    }
    let (workers, prefetch, window) = (2, 2, 24);
    // a window is the shortest run of row groups holding `window` rows or more
    let per_window = (window - 1) / group_rows.iter().min().unwrap() + 1;
    assert!(group_rows.len() as u64 > 4 * per_window, "{} row groups", group_rows.len());
    let mut p = Pipeline::builder(&dir)
        .seed(3)
        .batch_size(8)
        .workers(workers)
        .prefetch(prefetch)
        .shuffle_window(window)
        .build()
        .unwrap();
    let mut n = 0;
    while let Some(b) = p.next_blocking() {
        n += b.unwrap().len();
    }
    assert_eq!(n, 300);
    let st = p.stats();
    assert!(st.row_groups_peak <= 2 * per_window, "{} row groups held, windows of {per_window}", st.row_groups_peak);
    assert!(st.buffers_allocated as usize <= prefetch + 2 * workers + 1, "{} batch buffers", st.buffers_allocated);
    assert!((st.reorder_peak as usize) < 2 * workers, "{} batches held for reordering", st.reorder_peak);
}

#[test]
fn waiting_in_short_slices_yields_the_same_batches_as_blocking() {
    use siamlab_pipeline::Waited;
    let t = tempfile::tempdir().unwrap();
    let dir = cifar_shards(t.path(), 20, 24);
    let build = || Pipeline::builder(&dir).seed(5).batch_size(16).workers(2).image_size(64).build().unwrap();
    let want = collect(build());
    let mut p = build();
    let (mut got, mut timed_out) = (Vec::new(), 0);
    // a zero wait right after the start finds the queue empty (decoding a batch takes longer)
    loop {
        match p.next_within(std::time::Duration::ZERO) {
            Waited::Item(Some(b)) => got.push(b.unwrap()),
            Waited::Item(None) => break,
            Waited::TimedOut => timed_out += 1,
        }
    }
    assert!(timed_out > 0);
    same(&got, &want);
    assert!(matches!(p.next_within(std::time::Duration::ZERO), Waited::Item(None)));
}
