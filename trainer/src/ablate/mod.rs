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

mod estimate;
mod results;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use siamlab_datasets::sources::SourceSpec;
use siamlab_datasets::{IngestOptions, IngestRequest};

use crate::ablate::results::collect;
use crate::error::{Error, IoContext, Result};
use crate::finetune::{finetune, FinetuneConfig, Summary};
use crate::pretrain::{pretrain, PretrainConfig};
use crate::run::files::{
    read_json, write_atomic, write_json, BACKBONE, CONFIG, RESULTS_JSON, RESULTS_MD, RUNS_PLOT, SUMMARY,
};

pub use estimate::duration;
pub use results::{markdown, ResultCell};

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
    pub(crate) fn data_of(&self, id: &str) -> PathBuf {
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

    /// The ingest of this spec into `out`, recording the spec as its arguments: what
    /// `siamlab ingest` would do with the same source and options ([`IngestRequest`]).
    pub fn request(&self, out: &Path) -> IngestRequest<'_> {
        let mut options = IngestOptions::new(out);
        options.resize = self.resize;
        options.arguments = serde_json::to_value(self).unwrap_or_default();
        IngestRequest { spec: self.source_spec(), options }
    }

    /// The checks `siamlab ingest` makes before reading anything ([`IngestRequest::check`]):
    /// a known source, its `src`, valid numbers, `resize` in range.
    pub fn check(&self, id: &str) -> Result<()> {
        self.request(Path::new(id)).check().map_err(|e| Error::config(format!("[datasets.{id}]: {e}")))
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
                let request = spec.request(&plan.data_of(id));
                // Done when complete with the same spec; a changed spec is an error naming what changed.
                if request.already_complete()?.is_some() {
                    log(&format!("[{n}/{total}] data/{id}: done"));
                    continue;
                }
                log(&format!("[{n}/{total}] ingest {} → data/{id}", spec.source));
                request.ingest(request.open()?)?;
            }
            Step::Pretrain { id, config } => {
                let out = plan.work.join("pretrain").join(id);
                if out.join(BACKBONE).is_file() {
                    log(&format!("[{n}/{total}] pretrain/{id}: done"));
                    continue;
                }
                let resume = out.join(CONFIG).is_file();
                log(&format!(
                    "[{n}/{total}] pretrain {id} ({} epochs){}",
                    config.epochs,
                    if resume { ", resuming" } else { "" }
                ));
                pretrain(config, &out, resume, quiet, &mut |l| log(&format!("    {l}")))?;
            }
            Step::Finetune { id, row, column, config, .. } => {
                let out = plan.work.join("cells").join(id);
                let done = out.join(SUMMARY);
                let summary: Summary = if done.is_file() {
                    log(&format!("[{n}/{total}] cells/{id}: done"));
                    read_json(&done)?
                } else {
                    let resume = out.join(CONFIG).is_file();
                    log(&format!("[{n}/{total}] finetune {id}{}", if resume { ", resuming" } else { "" }));
                    finetune(config, &out, resume, quiet, &mut |l| log(&format!("    {l}")))?
                };
                summaries.push((row.clone(), column.clone(), out, summary));
            }
        }
    }
    let cells = collect(&plan.experiment, &summaries);
    let md = markdown(&plan.experiment, &cells, t0.elapsed().as_secs_f64());
    write_atomic(&plan.work.join(RESULTS_MD), md.as_bytes())?;
    write_json(&plan.work.join(RESULTS_JSON), &cells)?;
    let mut runs: Vec<PathBuf> = plan
        .steps
        .iter()
        .filter_map(|s| match s {
            Step::Pretrain { id, .. } => Some(plan.work.join("pretrain").join(id)),
            _ => None,
        })
        .collect();
    runs.extend(summaries.iter().map(|s| s.2.clone()));
    crate::plots::write_overlay(&runs, &plan.experiment.title, &plan.work.join(RUNS_PLOT))?;
    Ok(cells)
}

/// The built-in demo experiment (`siamlab demo`): shapes + random images, a reduced ResNet-18.
pub const DEMO: &str = include_str!("demo.toml");
