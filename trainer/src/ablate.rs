//! `siamlab ablate FILE.toml` and `siamlab demo`: a grid of ingest → pretrain → finetune cells,
//! laid out like the paper's tables.
//!
//! An experiment file names its datasets (`[datasets.ID]`: a source and its options), its
//! pretraining runs (`[pretrain.ID]`: [`PretrainConfig`] fields, `data` = a dataset id), and
//! its cells (`[[cells]]`: `row`, `column`, and [`FinetuneConfig`] fields, with `data` a
//! dataset id and `init = "scratch" | "ssl:PRETRAIN_ID" | "imagenet:FILE"`), plus defaults
//! merged into every run (`[pretrain_defaults]`, `[finetune_defaults]`) and `seeds` (each cell
//! runs once per seed; tables show mean ± std). Everything lives under one work folder:
//! `data/ID`, `pretrain/ID`, `cells/ROW--COLUMN--sSEED`. Shards and pretrained runs shared by
//! several cells are made once; finished steps are skipped and interrupted ones resume, so
//! rerunning after a crash or Ctrl-C continues where it stopped. `results.md` and
//! `results.json` hold the tables with the run folder of every number; `runs.png` overlays
//! the curves of every run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use siamlab_datasets::decode::check_resize;
use siamlab_datasets::ingest::IngestOptions;
use siamlab_datasets::sources::SourceSpec;
use siamlab_datasets::store::{ingest_to, prepare_location};
use siamlab_model::backbones::vit_s_patch_size;

use crate::checkpoint::write_json;
use crate::error::{write_atomic, Error, IoContext, Result};
use crate::finetune::{finetune, EvalMetrics, FinetuneConfig, Summary};
use crate::pretrain::{pretrain, PretrainConfig};

/// A dataset of an experiment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetSpec {
    /// `cifar10`, `cifar100`, `stl10`, `celeba`, `folder`, `random` or `shapes`.
    pub source: String,
    /// Archive or folder of file sources (relative to the experiment file).
    #[serde(default)]
    pub src: Option<PathBuf>,
    /// random / shapes: (training) images.
    #[serde(default)]
    pub count: Option<u64>,
    /// shapes: test images.
    #[serde(default)]
    pub test_count: Option<u64>,
    /// random / shapes: side in pixels.
    #[serde(default)]
    pub size: Option<u32>,
    /// random / shapes: seed.
    #[serde(default)]
    pub seed: Option<u64>,
    /// Resize (shorter side) while ingesting.
    #[serde(default)]
    pub resize: Option<u32>,
}

/// One cell of a table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cell {
    /// Row label (a backbone).
    pub row: String,
    /// Column label (an initialisation).
    pub column: String,
    /// Finetuning options ([`FinetuneConfig`] fields; `data` a dataset id; `init` may name a
    /// pretraining id as `ssl:ID`).
    #[serde(flatten)]
    pub finetune: toml::Table,
}

/// An experiment file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Experiment {
    /// Short name.
    pub name: String,
    /// Title of the table.
    #[serde(default)]
    pub title: String,
    /// Metrics shown, by name: `top1`, `mean_accuracy`, `macro_auc`, `micro_auc`,
    /// `macro_jaccard`, `micro_jaccard` (each on validation and test).
    #[serde(default = "default_metrics")]
    pub metrics: Vec<String>,
    /// Seeds; every cell runs once per seed.
    #[serde(default = "default_seeds")]
    pub seeds: Vec<u64>,
    /// Datasets by id.
    pub datasets: BTreeMap<String, DatasetSpec>,
    /// Merged into every pretraining run.
    #[serde(default)]
    pub pretrain_defaults: toml::Table,
    /// Pretraining runs by id.
    #[serde(default)]
    pub pretrain: BTreeMap<String, toml::Table>,
    /// Merged into every cell.
    #[serde(default)]
    pub finetune_defaults: toml::Table,
    /// The cells.
    pub cells: Vec<Cell>,
}

fn default_metrics() -> Vec<String> {
    vec!["top1".into()]
}
fn default_seeds() -> Vec<u64> {
    vec![0]
}

/// What one planned step is.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Ingest dataset `id`.
    Ingest {
        /// Dataset id.
        id: String,
        /// Spec.
        spec: DatasetSpec,
    },
    /// Pretraining run `id` with seed.
    Pretrain {
        /// Pretraining id (with the seed suffix).
        id: String,
        /// Its configuration.
        config: PretrainConfig,
    },
    /// A cell with a seed.
    Finetune {
        /// Run id.
        id: String,
        /// Cell row.
        row: String,
        /// Cell column.
        column: String,
        /// Seed.
        seed: u64,
        /// Its configuration.
        config: FinetuneConfig,
    },
}

/// An experiment resolved into ordered steps under a work folder.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The experiment.
    pub experiment: Experiment,
    /// Work folder.
    pub work: PathBuf,
    /// Steps in dependency order.
    pub steps: Vec<Step>,
    /// Where the datasets are kept (`WORK/data`, or a folder or URL: [`Plan::set_data`]).
    pub data: String,
    /// How datasets at a URL are read (cache folder and limit).
    pub store: siamlab_datasets::StoreOptions,
}

impl Experiment {
    /// Reads an experiment file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).at(path)?;
        Self::from_toml(&text).map_err(|e| match e {
            Error::Config(m) => Error::bad_file(path, m),
            e => e,
        })
    }

    /// Parses an experiment.
    pub fn from_toml(text: &str) -> Result<Self> {
        toml::from_str(text).map_err(|e| Error::config(e.to_string().replace('\n', " ")))
    }
}

fn merge(defaults: &toml::Table, own: &toml::Table) -> toml::Table {
    let mut t = defaults.clone();
    for (k, v) in own {
        t.insert(k.clone(), v.clone());
    }
    t
}

fn data_path(work: &Path, e: &Experiment, t: &mut toml::Table, key: &str, what: &str) -> Result<()> {
    if let Some(v) = t.get(key) {
        let id = v.as_str().ok_or_else(|| Error::config(format!("{what}: {key} must be a dataset id")))?;
        if !e.datasets.contains_key(id) {
            return Err(Error::config(format!(
                "{what}: {key} = {id:?} is not a dataset of this experiment (known: {})",
                e.datasets.keys().cloned().collect::<Vec<_>>().join(", ")
            )));
        }
        let p = work.join("data").join(id);
        t.insert(key.into(), toml::Value::String(p.display().to_string()));
    }
    Ok(())
}

fn slug(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect()
}

impl Plan {
    /// Runs every pretraining and finetuning step on `device` (`--device`).
    pub fn set_device(&mut self, device: crate::DeviceSpec) {
        for step in &mut self.steps {
            match step {
                Step::Pretrain { config, .. } => config.device = device,
                Step::Finetune { config, .. } => config.device = device,
                Step::Ingest { .. } => {}
            }
        }
    }

    /// Keeps the datasets under `root` — a folder, or a URL such as `s3://bucket/prefix` — instead
    /// of `WORK/data`: ingested there and read from there with `store`'s cache.
    pub fn set_data(&mut self, root: &str, store: &siamlab_datasets::StoreOptions) {
        let root = root.trim_end_matches('/').to_string();
        let old = self.work.join("data");
        let remap = |p: &mut PathBuf| {
            if let Ok(rest) = p.strip_prefix(&old) {
                *p = PathBuf::from(format!("{root}/{}", rest.display()));
            }
        };
        for step in &mut self.steps {
            match step {
                Step::Pretrain { config, .. } => {
                    remap(&mut config.data);
                    if let Some(k) = &mut config.knn_data {
                        remap(k);
                    }
                    config.store = store.clone();
                }
                Step::Finetune { config, .. } => {
                    remap(&mut config.data);
                    config.store = store.clone();
                }
                Step::Ingest { .. } => {}
            }
        }
        self.data = root;
        self.store = store.clone();
    }

    /// Where dataset `id` is kept.
    fn data_of(&self, id: &str) -> PathBuf {
        PathBuf::from(format!("{}/{id}", self.data))
    }

    /// Resolves `e` under `work`; `base` is the folder relative paths (`src`, `imagenet:`) are
    /// relative to.
    pub fn new(e: Experiment, work: &Path, base: &Path) -> Result<Plan> {
        let mut steps = Vec::new();
        for (id, spec) in &e.datasets {
            let mut spec = spec.clone();
            spec.source =
                crate::names::source(&spec.source).map_err(|e| Error::config(format!("[datasets.{id}]: {e}")))?.into();
            if let Some(src) = &spec.src {
                spec.src = Some(base.join(src));
            }
            spec.check(id)?;
            steps.push(Step::Ingest { id: id.clone(), spec });
        }
        let mut needed: BTreeMap<(String, u64), ()> = BTreeMap::new();
        let mut cells = Vec::new();
        for (i, cell) in e.cells.iter().enumerate() {
            let what = format!("cell {} ({} / {})", i + 1, cell.row, cell.column);
            for &seed in &e.seeds {
                let mut t = merge(&e.finetune_defaults, &cell.finetune);
                data_path(work, &e, &mut t, "data", &what)?;
                t.insert("seed".into(), toml::Value::Integer(seed as i64));
                if let Some(init) = t.get("init").and_then(|v| v.as_str()).map(String::from) {
                    if let Some(pid) = init.strip_prefix("ssl:") {
                        if !e.pretrain.contains_key(pid) {
                            return Err(Error::config(format!("{what}: init = {init:?} names no [pretrain.{pid}]")));
                        }
                        needed.insert((pid.to_string(), seed), ());
                        // The backbone is the pretrained one's (finetune checks they agree).
                        if !t.contains_key("backbone") {
                            let pre = merge(&e.pretrain_defaults, &e.pretrain[pid]);
                            if let Some(b) = pre.get("backbone") {
                                t.insert("backbone".into(), b.clone());
                            }
                        }
                        let dir = work.join("pretrain").join(format!("{pid}--s{seed}"));
                        t.insert("init".into(), toml::Value::String(format!("ssl:{}", dir.display())));
                    } else if let Some(file) = init.strip_prefix("imagenet:") {
                        t.insert("init".into(), toml::Value::String(format!("imagenet:{}", base.join(file).display())));
                    }
                }
                let mut config: FinetuneConfig = t
                    .try_into()
                    .map_err(|err| Error::config(format!("{what}: {}", err.to_string().replace('\n', " "))))?;
                if let Some(b) = &config.backbone {
                    let b = crate::names::backbone(b).map_err(|e| Error::config(format!("{what}: {e}")))?;
                    config.backbone = Some(b.into());
                }
                let id = format!("{}--{}--s{seed}", slug(&cell.row), slug(&cell.column));
                cells.push(Step::Finetune { id, row: cell.row.clone(), column: cell.column.clone(), seed, config });
            }
        }
        for (pid, seed) in needed.keys() {
            let own = &e.pretrain[pid];
            let mut t = merge(&e.pretrain_defaults, own);
            let what = format!("[pretrain.{pid}]");
            data_path(work, &e, &mut t, "data", &what)?;
            data_path(work, &e, &mut t, "knn_data", &what)?;
            t.insert("seed".into(), toml::Value::Integer(*seed as i64));
            let mut config: PretrainConfig =
                t.try_into().map_err(|err| Error::config(format!("{what}: {}", err.to_string().replace('\n', " "))))?;
            config.backbone =
                crate::names::backbone(&config.backbone).map_err(|e| Error::config(format!("{what}: {e}")))?.into();
            steps.push(Step::Pretrain { id: format!("{pid}--s{seed}"), config });
        }
        steps.extend(cells);
        let data = work.join("data").display().to_string();
        Ok(Plan { experiment: e, work: work.to_path_buf(), steps, data, store: Default::default() })
    }

    /// One line per step with its epochs and its estimated wall time on a 2-core CPU.
    pub fn describe(&self) -> Vec<String> {
        let secs = self.estimate_secs();
        self.steps
            .iter()
            .zip(secs)
            .map(|(s, t)| {
                let what = match s {
                    Step::Ingest { id, spec } => format!("ingest   {id:<24} {}", spec.source),
                    Step::Pretrain { id, config } => format!(
                        "pretrain {id:<24} {} {} epochs, batch {}×{}, on {}",
                        config.backbone,
                        config.epochs,
                        config.batch,
                        config.accum,
                        config.data.display()
                    ),
                    Step::Finetune { id, config, .. } => format!(
                        "finetune {id:<24} {} init {} {} epochs{}",
                        config.backbone.as_deref().unwrap_or("(from init)"),
                        config.init,
                        config.epochs,
                        if config.linear { " (linear)" } else { "" }
                    ),
                };
                format!("{what}  ≈ {}", duration(t))
            })
            .collect()
    }

    /// Estimated seconds of each step on a 2-core CPU, from measured throughputs (see
    /// `seconds_per_image` and `DataShape`).
    pub fn estimate_secs(&self) -> Vec<f64> {
        let mut data = BTreeMap::new();
        for s in &self.steps {
            if let Step::Ingest { id, spec } = s {
                data.insert(self.data_of(id), DataShape::of(spec));
            }
        }
        let unknown = DataShape::of(&DatasetSpec { source: "folder".into(), ..Default::default() });
        let shape = |p: &Path| data.get(p).unwrap_or(&unknown);
        self.steps
            .iter()
            .map(|s| match s {
                Step::Ingest { id, .. } => {
                    let d = shape(&self.data_of(id));
                    d.splits.iter().map(|(_, n)| n).sum::<f64>() * d.ingest_per_image
                }
                Step::Pretrain { config, .. } => {
                    let d = shape(&config.data);
                    let n = d.images(&config.split) * config.fraction;
                    let size = config.image_size.unwrap_or(d.side);
                    2.0 * n * config.epochs as f64 * seconds_per_image(&config.backbone, size)
                }
                Step::Finetune { config, .. } => {
                    let d = shape(&config.data);
                    let n = d.images("train") * config.fraction;
                    let size = config.image_size.unwrap_or(d.side);
                    let per = seconds_per_image(config.backbone.as_deref().unwrap_or("resnet18"), size);
                    // Linear evaluation: one pass to extract features, the head is negligible.
                    let epochs = if config.linear { 1.0 } else { config.epochs as f64 };
                    // Evaluation passes cost about a third of a training pass: the validation
                    // split (or a 10% hold-out of the training images) every epoch, then the test split.
                    let val = match d.images("valid") {
                        v if v > 0.0 => v,
                        _ => 0.1 * n,
                    };
                    let eval = epochs * val + d.images("test");
                    (n * epochs + eval / 3.0) * per
                }
            })
            .collect()
    }
}

/// `secs` as "42 s", "17 min", "2.5 h" or "9 days".
pub fn duration(secs: f64) -> String {
    if secs < 90.0 {
        format!("{secs:.0} s")
    } else if secs < 5400.0 {
        format!("{:.0} min", secs / 60.0)
    } else if secs < 172_800.0 {
        format!("{:.1} h", secs / 3600.0)
    } else {
        format!("{:.0} days", secs / 86_400.0)
    }
}

/// What an estimate needs of a dataset: images per split, their side, and the seconds
/// `siamlab ingest` spends per image (measured on a 2-core CPU: CIFAR-10 60,000 images in 3 s,
/// STL-10 113,000 at 96 px → 32 px in 47 s, CelebA 202,599 JPEGs → 32 px in 57 s).
struct DataShape {
    splits: Vec<(&'static str, f64)>,
    side: usize,
    ingest_per_image: f64,
}

impl DataShape {
    fn of(spec: &DatasetSpec) -> DataShape {
        let count = |d: u64| spec.count.unwrap_or(d) as f64;
        let (splits, side, per) = match spec.source.as_str() {
            "cifar10" | "cifar100" => (vec![("train", 50_000.0), ("test", 10_000.0)], 32, 5e-5),
            "stl10" => (vec![("train", 5_000.0), ("test", 8_000.0), ("unlabeled", 100_000.0)], 96, 4.2e-4),
            "celeba" => (vec![("train", 162_770.0), ("valid", 19_867.0), ("test", 19_962.0)], 178, 2.8e-4),
            "random" => (vec![("train", count(10_000))], 32, 5e-5),
            "shapes" => (vec![("train", count(5_000)), ("test", spec.test_count.unwrap_or(1_000) as f64)], 32, 5e-5),
            _ => (vec![("train", count(10_000))], 224, 2e-3),
        };
        let side = spec.resize.or(spec.size).map(|s| s as usize).unwrap_or(side);
        DataShape { splits, side, ingest_per_image: per }
    }

    fn images(&self, split: &str) -> f64 {
        self.splits.iter().find(|(k, _)| *k == split).map(|(_, n)| *n).unwrap_or(0.0)
    }
}

/// Seconds one image takes through a training pass of `backbone` at `size` px (forward,
/// backward, optimizer share, augmentation, monitors) on a 2-core CPU with batch 64: measured
/// at 32 px (SimSiam pairs/s ÷ 2, `siamlab ablate experiments/*-cpu.toml`, `siamlab bench
/// simsiam`) and scaled by the pixel count, or for ViT / PiT by the token count of the preset.
fn seconds_per_image(backbone: &str, size: usize) -> f64 {
    let per_32 = match backbone {
        "resnet18_tiny" => 1.0 / 660.0,
        "efficientnet_tiny" => 1.0 / 334.0,
        "vit_tiny" => 1.0 / 790.0,
        "pit_tiny" => 1.0 / 450.0,
        "efficientnet_b0" => 1.0 / 62.0,
        "vit_s" => 1.0 / 15.4,
        "pit_ti" => 1.0 / 57.6,
        _ => 1.0 / 32.4, // resnet18 (CIFAR stem)
    };
    let tokens = |s: usize, patch: usize, stride: usize| {
        let g = (s.saturating_sub(patch) / stride + 1) as f64;
        g * g
    };
    // The ViT and PiT presets share the patch sizes; PiT's stride is half its patch.
    let patch = vit_s_patch_size(size);
    let scale = match backbone {
        "vit_s" | "vit_tiny" => tokens(size, patch, patch) / tokens(32, 4, 4),
        "pit_ti" | "pit_tiny" => tokens(size, patch, patch / 2) / tokens(32, 4, 2),
        // A stride-4 ImageNet stem (ResNet-18 above 96 px) or EfficientNet's stride-2 stem (above
        // 64 px) costs what the CIFAR / stride-1 stem costs at a quarter / half the side.
        "resnet18_imagenet" => (size as f64 / 128.0).powi(2),
        "resnet18" | "resnet18_tiny" if size > 96 => (size as f64 / 128.0).powi(2),
        "efficientnet_b0" if size > 64 => (size as f64 / 64.0).powi(2),
        _ => (size as f64 / 32.0).powi(2),
    };
    per_32 * scale
}

impl DatasetSpec {
    /// The source this spec names, for `siamlab_datasets` to check and open.
    pub fn source_spec(&self) -> SourceSpec<'_> {
        SourceSpec {
            kind: &self.source,
            src: self.src.as_deref(),
            count: self.count,
            test_count: self.test_count,
            size: self.size,
            seed: self.seed,
            mean: None,
            std: None,
        }
    }

    /// The checks `siamlab ingest` makes before reading anything: a known source, its `src`,
    /// valid numbers, `resize` in range.
    pub fn check(&self, id: &str) -> Result<()> {
        let at = |e: siamlab_datasets::Error| Error::config(format!("[datasets.{id}]: {e}"));
        self.source_spec().check().map_err(at)?;
        check_resize(self.resize).map_err(at)
    }
}

/// One number of the results, with where it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultCell {
    /// Row.
    pub row: String,
    /// Column.
    pub column: String,
    /// Metric name with split (`test top1`).
    pub metric: String,
    /// Values per seed.
    pub values: Vec<f64>,
    /// Mean.
    pub mean: f64,
    /// Sample std over seeds (0 for one seed).
    pub std: f64,
    /// Run folders.
    pub runs: Vec<String>,
}

fn metric_value(m: &EvalMetrics, name: &str) -> Option<f64> {
    let ml = m.multi_label.as_ref();
    match name {
        "top1" => m.top1,
        "mean_accuracy" => ml.map(|x| x.mean_accuracy),
        "macro_auc" => ml.map(|x| x.macro_auc),
        "micro_auc" => ml.map(|x| x.micro_auc),
        "macro_jaccard" => ml.map(|x| x.macro_jaccard),
        "micro_jaccard" => ml.map(|x| x.micro_jaccard),
        "loss" => Some(m.loss),
        _ => None,
    }
}

/// Runs every step of `plan` that is not finished yet; `log` gets progress lines. Returns the
/// result cells (also written to `results.md` / `results.json` in the work folder).
pub fn run(plan: &Plan, quiet: bool, log: &mut dyn FnMut(&str)) -> Result<Vec<ResultCell>> {
    std::fs::create_dir_all(&plan.work).at(&plan.work)?;
    let t0 = Instant::now();
    let mut summaries: Vec<(String, String, PathBuf, Summary)> = Vec::new();
    let total = plan.steps.len();
    for (i, step) in plan.steps.iter().enumerate() {
        let n = i + 1;
        match step {
            Step::Ingest { id, spec } => {
                let out = siamlab_datasets::store::open_path(&plan.data_of(id), &plan.store)?;
                let arguments = serde_json::to_value(spec).unwrap_or_default();
                // Done when complete with the same spec; a changed spec is an error naming what changed.
                if prepare_location(&out, false, &arguments)?.is_some() {
                    log(&format!("[{n}/{total}] data/{id}: done"));
                    continue;
                }
                log(&format!("[{n}/{total}] ingest {} → data/{id}", spec.source));
                let mut opts = IngestOptions::new(plan.data_of(id));
                opts.resize = spec.resize;
                opts.arguments = arguments;
                ingest_to(spec.source_spec().open()?, &opts, &out)?;
            }
            Step::Pretrain { id, config } => {
                let out = plan.work.join("pretrain").join(id);
                if out.join("backbone.safetensors").is_file() {
                    log(&format!("[{n}/{total}] pretrain/{id}: done"));
                    continue;
                }
                let resume = out.join("config.json").is_file();
                log(&format!(
                    "[{n}/{total}] pretrain {id} ({} epochs){}",
                    config.epochs,
                    if resume { ", resuming" } else { "" }
                ));
                pretrain(config, &out, resume, quiet, &mut |l| log(&format!("    {l}")))?;
            }
            Step::Finetune { id, row, column, config, .. } => {
                let out = plan.work.join("cells").join(id);
                let done = out.join("summary.json");
                let summary: Summary = if done.is_file() {
                    log(&format!("[{n}/{total}] cells/{id}: done"));
                    crate::checkpoint::read_json(&done)?
                } else {
                    let resume = out.join("config.json").is_file();
                    log(&format!("[{n}/{total}] finetune {id}{}", if resume { ", resuming" } else { "" }));
                    finetune(config, &out, resume, quiet, &mut |l| log(&format!("    {l}")))?
                };
                summaries.push((row.clone(), column.clone(), out, summary));
            }
        }
    }
    let cells = collect(&plan.experiment, &summaries);
    let md = markdown(&plan.experiment, &cells, t0.elapsed().as_secs_f64());
    write_atomic(&plan.work.join("results.md"), md.as_bytes())?;
    write_json(&plan.work.join("results.json"), &cells)?;
    let mut runs: Vec<PathBuf> = plan
        .steps
        .iter()
        .filter_map(|s| match s {
            Step::Pretrain { id, .. } => Some(plan.work.join("pretrain").join(id)),
            _ => None,
        })
        .collect();
    runs.extend(summaries.iter().map(|s| s.2.clone()));
    crate::plots::write_overlay(&runs, &plan.experiment.title, &plan.work.join("runs.png"))?;
    Ok(cells)
}

fn collect(e: &Experiment, summaries: &[(String, String, PathBuf, Summary)]) -> Vec<ResultCell> {
    let mut out = Vec::new();
    let mut keys: Vec<(String, String)> = Vec::new();
    for (r, c, _, _) in summaries {
        if !keys.contains(&(r.clone(), c.clone())) {
            keys.push((r.clone(), c.clone()));
        }
    }
    for (row, column) in keys {
        for split in ["val", "test"] {
            for metric in &e.metrics {
                let mut values = Vec::new();
                let mut runs = Vec::new();
                for (r, c, dir, s) in summaries {
                    if *r != row || *c != column {
                        continue;
                    }
                    let m = if split == "val" { Some(&s.val) } else { s.test.as_ref() };
                    if let Some(v) = m.and_then(|m| metric_value(m, metric)) {
                        values.push(v);
                        runs.push(dir.display().to_string());
                    }
                }
                if values.is_empty() {
                    continue;
                }
                let mean = values.iter().sum::<f64>() / values.len() as f64;
                let std = if values.len() > 1 {
                    (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (values.len() - 1) as f64).sqrt()
                } else {
                    0.0
                };
                out.push(ResultCell {
                    row: row.clone(),
                    column: column.clone(),
                    metric: format!("{split} {metric}"),
                    values,
                    mean,
                    std,
                    runs,
                });
            }
        }
    }
    out
}

/// The tables as Markdown: one table per metric, rows × columns, `mean ± std` (percent for
/// accuracies), and the run folders below.
pub fn markdown(e: &Experiment, cells: &[ResultCell], secs: f64) -> String {
    let mut rows: Vec<&str> = Vec::new();
    let mut cols: Vec<&str> = Vec::new();
    let mut metrics: Vec<&str> = Vec::new();
    for c in cells {
        if !rows.contains(&c.row.as_str()) {
            rows.push(&c.row);
        }
        if !cols.contains(&c.column.as_str()) {
            cols.push(&c.column);
        }
        if !metrics.contains(&c.metric.as_str()) {
            metrics.push(&c.metric);
        }
    }
    let mut s = format!("# {}\n\n", if e.title.is_empty() { &e.name } else { &e.title });
    s += &format!("Seeds: {:?}. Wall time of this invocation: {:.0} s.\n\n", e.seeds, secs);
    for m in &metrics {
        let pct = !m.ends_with("loss") && !m.contains("auc") && !m.contains("jaccard");
        s += &format!("## {m}{}\n\n| backbone |", if pct { " (%)" } else { "" });
        for c in &cols {
            s += &format!(" {c} |");
        }
        s += "\n|---|";
        s += &"---|".repeat(cols.len());
        s += "\n";
        for r in &rows {
            s += &format!("| {r} |");
            for c in &cols {
                match cells.iter().find(|x| x.row == *r && x.column == *c && x.metric == *m) {
                    Some(x) => {
                        let k = if pct { 100.0 } else { 1.0 };
                        if x.values.len() > 1 {
                            s += &format!(" {:.2} ± {:.2} |", k * x.mean, k * x.std);
                        } else {
                            s += &format!(" {:.2} |", k * x.mean);
                        }
                    }
                    None => s += " – |",
                }
            }
            s += "\n";
        }
        s += "\n";
    }
    s += "## Runs\n\n";
    for c in cells.iter().filter(|c| c.metric == metrics[0]) {
        s += &format!("- {} / {}: {}\n", c.row, c.column, c.runs.join(", "));
    }
    s
}

/// The built-in demo experiment (`siamlab demo`): shapes + random images, a reduced ResNet-18.
pub const DEMO: &str = include_str!("demo.toml");
