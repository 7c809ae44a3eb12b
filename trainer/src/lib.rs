//! siamlab's trainer: SimSiam pretraining ([`pretrain`]), finetuning and linear evaluation
//! ([`finetune`], [`evaluate`]) on batches from [`siamlab_pipeline`], with models from
//! [`siamlab_model`]; metrics ([`metrics`], [`knn`]) and collapse monitors, PNG plots
//! ([`plots`], drawn by `siamlab_draw`), run summaries ([`overview`]), the run folder ([`run`]:
//! its files, start or resume) and checkpoints that resume bit for bit on CPU.
//!
//! A backbone is chosen by name at run time and wrapped in an object-safe [`net::SslNet`] /
//! [`net::ClsNet`], so the loops compile once for all architectures. Optimizers ([`optim`])
//! step on the model's device with their moments there, by parameter groups where a run asks
//! for them ([`choices`]: the official SimSiam code's frozen projector output and fixed
//! predictor rate); [`checkpoint`] writes them next to the model.
//!
//! This crate reads shards only through the pipeline and knows no command line: `siamlab
//! train ...` parses flags into [`PretrainConfig`] / [`FinetuneConfig`] and calls it.
#![deny(missing_docs)]

pub mod ablate;
pub mod checkpoint;
pub mod choices;
pub mod data;
pub mod device;
pub mod dump;
mod error;
pub mod finetune;
pub mod head;
pub mod knn;
pub mod metrics;
pub mod names;
pub mod net;
pub mod optim;
pub mod overlap;
pub mod overview;
pub mod parallel;
pub mod params;
pub mod plots;
pub mod prefetch;
pub mod pretrain;
pub mod progress;
pub mod run;
pub mod schedule;
pub mod speed;
mod step;

pub use device::DeviceSpec;
pub use error::{Error, Result};
pub use finetune::{dump_finetune, evaluate, evaluate_in, finetune, finetune_in, EvalMetrics, FinetuneConfig, Summary};
pub use pretrain::{pretrain, pretrain_in, Outcome, PretrainConfig};
