//! What a new user sees first: forgiving names, `siamlab show` (a run at a glance), contact
//! sheets (`inspect --grid`), run plots and `siamlab plot`. Pictures are checked by shape and
//! by ink where text must be (not byte for byte); copies go to $SIAMLAB_PICTURES when set.

use std::path::{Path, PathBuf};

use image::RgbImage;
use siamlab_datasets::synth;

use crate::common::*;

/// CIFAR-10 layout, 40 train and 40 test images of 32 px, ingested (typed as users type it).
fn cifar(root: &Path) -> PathBuf {
    let src = synth::cifar_binary(&root.join("src"), 8, 40, false).unwrap();
    let out = root.join("c10");
    ok(&["ingest", "CIFAR-10", "--src", s(&src), "--out", s(&out), "-q"]);
    out
}

/// Keeps a copy of a picture for people to look at.
fn keep(p: &Path, name: &str) {
    if let Some(dir) = std::env::var_os("SIAMLAB_PICTURES") {
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(p, Path::new(&dir).join(name)).unwrap();
    }
}

/// Dark pixels (text, lines) in the rectangle.
fn ink(img: &RgbImage, x0: u32, y0: u32, x1: u32, y1: u32) -> usize {
    (y0..y1.min(img.height()))
        .flat_map(|y| (x0..x1.min(img.width())).map(move |x| (x, y)))
        .filter(|&(x, y)| img.get_pixel(x, y).0.iter().all(|&c| c < 110))
        .count()
}

/// Pixels that are neither white nor grey: anti-aliased text has many grey levels, so also
/// count distinct levels.
fn grey_levels(img: &RgbImage, x0: u32, y0: u32, x1: u32, y1: u32) -> usize {
    let mut levels = std::collections::BTreeSet::new();
    for y in y0..y1.min(img.height()) {
        for x in x0..x1.min(img.width()) {
            let p = img.get_pixel(x, y).0;
            if p[0] == p[1] && p[1] == p[2] {
                levels.insert(p[0]);
            }
        }
    }
    levels.len()
}

#[test]
fn names_accept_dashes_and_case_and_suggest_the_closest() {
    let out = ok(&["model", "summary", "--backbone", "ResNet18-Tiny", "--image-size", "32"]);
    assert!(out.contains("Total params"), "{out}");
    let err = fails(&["model", "summary", "--backbone", "resnet18-cifr"]);
    assert!(err.contains("did you mean resnet18_cifar?"), "{err}");
    let err = fails(&["ingest", "cifar-1O", "--src", "x", "--out", "y"]);
    assert!(err.contains("did you mean cifar10?"), "{err}");
    let err = fails(&["bench", "pipeline", "--recipe", "simsam"]);
    assert!(err.contains("did you mean simsiam?"), "{err}");
}

#[test]
fn contact_sheets_are_readable() {
    let t = tempfile::tempdir().unwrap();
    let data = cifar(t.path());
    let grid = t.path().join("grid.png");
    let out = ok(&["inspect", s(&data), "--split", "train", "--grid", s(&grid), "--n", "10", "--cols", "5"]);
    assert!(out.contains("wrote") && out.contains("10 samples of train"), "{out}");
    let img = image::open(&grid).unwrap().into_rgb8();
    keep(&grid, "contact-sheet.png");
    // 32 px images at 3× (96 px) in 5 columns, 2 rows; cell pitch 96 + 8.
    assert_eq!(img.width(), 5 * 104 + 8);
    let head = 8 + 22 + 16 + 8;
    assert!(img.height() >= head + 2 * (96 + 4 + 2 * 15), "{}", img.height());
    // Title band and caption band under the first cell have anti-aliased text.
    assert!(ink(&img, 0, 0, img.width(), 30) > 100);
    assert!(grey_levels(&img, 0, 0, img.width(), 30) > 20);
    let cap = (8 + 96 + 2, 8 + 96 + 2 + 30);
    let (cy0, cy1) = (head + cap.0 - 8, head + cap.1 - 8);
    assert!(ink(&img, 8, cy0, 8 + 96, cy1) > 30, "no caption under the first cell");

    // The two SimSiam views of each sample side by side: cells twice as wide.
    let aug = t.path().join("aug.png");
    ok(&[
        "inspect",
        s(&data),
        "--split",
        "train",
        "--grid",
        s(&aug),
        "--n",
        "4",
        "--cols",
        "2",
        "--augment",
        "SimSiam",
    ]);
    let img = image::open(&aug).unwrap().into_rgb8();
    keep(&aug, "contact-sheet-simsiam.png");
    assert_eq!(img.width(), 2 * (2 * 96 + 4 + 8) + 8);
    // --scale sets the enlargement.
    let big = t.path().join("big.png");
    ok(&["inspect", s(&data), "--grid", s(&big), "--n", "2", "--cols", "2", "--scale", "5"]);
    assert_eq!(image::open(&big).unwrap().width(), 360); // the minimum width: 2 · (160 + 8) + 8 is narrower
                                                         // Options of the grid need --grid.
    let out = siamlab(&["inspect", s(&data), "--cols", "3"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("--grid"));
}

#[test]
fn show_and_plot_summarise_runs() {
    let t = tempfile::tempdir().unwrap();
    let data = cifar(t.path());
    let mut runs = Vec::new();
    for seed in ["0", "1"] {
        let pre = t.path().join(format!("pre-s{seed}"));
        ok(&[
            "train",
            "pretrain",
            "--data",
            s(&data),
            "--epochs",
            "2",
            "--knn-every",
            "1",
            "--out",
            s(&pre),
            "--backbone",
            "resnet18-TINY",
            "--batch",
            "8",
            "--accum",
            "1",
            "--proj-dim",
            "128",
            "--seed",
            seed,
            "-q",
        ]);
        runs.push(pre);
    }
    let pre = &runs[0];
    let curves = pre.join("curves.png");
    let img = image::open(&curves).unwrap().into_rgb8();
    keep(&curves, "run-curves.png");
    // Loss above kNN accuracy: title band and two panels.
    assert_eq!(img.dimensions(), (800, 40 + 2 * 340));
    assert!(ink(&img, 0, 0, 800, 40) > 100, "title");
    assert!(ink(&img, 0, 40, 24, 380) > 30 && ink(&img, 0, 380, 24, 720) > 30, "y-axis labels");
    assert!(grey_levels(&img, 0, 0, 800, 40) > 20, "anti-aliased");

    let out = ok(&["show", s(pre)]);
    assert!(out.contains("SimSiam pretraining — finished, 2 epochs"), "{out}");
    assert!(out.contains("resnet18_tiny") && out.contains("kNN top-1 (%)") && out.contains("best (epoch)"), "{out}");
    assert!(out.contains("image pairs/s") && out.contains("wall time") && out.contains("curves.png"), "{out}");
    assert!(!out.contains("not recorded"), "{out}");

    // Finetuning names the pretrained backbone however it is typed.
    let ft = t.path().join("ft");
    let init = format!("ssl:{}", pre.display());
    ok(&[
        "train",
        "finetune",
        "--data",
        s(&data),
        "--init",
        &init,
        "--backbone",
        "ResNet18_Tiny",
        "--epochs",
        "2",
        "--batch",
        "8",
        "--out",
        s(&ft),
        "-q",
    ]);
    let out = ok(&["show", s(&ft)]);
    assert!(out.contains("finetuning — finished, 2 epochs") && out.contains("validation top-1 (%)"), "{out}");
    assert!(out.contains("test") && out.contains("images/s"), "{out}");

    // Several runs in one PNG.
    let all = t.path().join("all.png");
    let mut args = vec!["plot"];
    args.extend(runs.iter().map(|r| s(r)));
    args.extend([s(&ft), "--out", s(&all)]);
    ok(&args);
    let img = image::open(&all).unwrap().into_rgb8();
    keep(&all, "plot-overlay.png");
    // Pretraining loss, kNN, validation accuracy, finetuning losses.
    assert_eq!(img.dimensions(), (800, 40 + 4 * 340));
    // Legend: a run name per series right of the plot.
    assert!(ink(&img, 600, 60, 800, 120) > 50, "legend");

    // Bad input: one line naming the file.
    let err = fails(&["show", s(&data)]);
    assert!(err.contains("not a run folder"), "{err}");
    let mut text = std::fs::read_to_string(pre.join("metrics.jsonl")).unwrap();
    text.insert_str(0, "{oops}\n");
    std::fs::write(pre.join("metrics.jsonl"), text).unwrap();
    let err = fails(&["show", s(pre)]);
    assert!(err.contains("metrics.jsonl: line 1"), "{err}");
    fails(&["plot", s(pre), "--out", s(&all)]);
}
