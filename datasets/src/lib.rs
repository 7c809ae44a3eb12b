//! Source dataset readers and siamlab's Parquet shard format.
//!
//! This crate turns datasets as their publishers ship them — CIFAR-10/100 (binary or python
//! pickles), STL-10 (column-major binary), CelebA (folder or zip + attribute files), any image
//! folder, or seeded Gaussian-noise images — into Parquet shards with a manifest
//! ([`ingest()`]), and checks, summarizes and reads those shards back ([`shard`], [`inspect`]).
//! Archives are streamed, never extracted; output is deterministic and written atomically.
//! A shard folder may also be a URL (`s3://`, `gs://`, `az://`, `http(s)://`): [`store`]
//! resolves it, and reads go through a bounded, checked local cache.
//!
//! It knows nothing of streaming, augmentation or models: the `pipeline` crate reads shards
//! through [`shard::ShardReader`].
//!
//! ```
//! use siamlab_datasets::{ingest, sources::{Random, RandomSpec}, IngestOptions, Outcome};
//! let dir = tempfile::tempdir().unwrap();
//! let src = Random::new(RandomSpec { count: 8, size: 4, ..RandomSpec::default() }).unwrap();
//! let out = ingest(Box::new(src), &IngestOptions::new(dir.path().join("noise"))).unwrap();
//! assert_eq!(out.manifest().splits["train"].rows, 8);
//! ```
#![deny(missing_docs)]

pub mod container;
pub mod decode;
pub mod diff;
pub mod digest;
pub mod encode;
mod error;
pub mod ingest;
pub mod inspect;
pub mod names;
pub mod pickle;
pub mod record;
pub mod request;
pub mod shard;
pub mod sources;
pub mod store;
pub mod synth;

pub use error::{write_atomic, Error, Result};
pub use ingest::{ingest, IngestOptions, Outcome};
pub use record::{ImageData, Origin, Record, Source, SourceInfo};
pub use request::IngestRequest;
pub use store::{ingest_to, Location, StoreOptions};
