//! The shard format: `DIR/manifest.json` + `DIR/<split>/part-NNNNN-of-MMMMM.parquet`, with the
//! Hugging Face image convention (see shared/DESIGN.md).

pub mod manifest;
pub mod reader;
pub mod schema;
pub mod verify;
pub mod writer;

pub use manifest::{ChannelStats, Manifest, ShardInfo, SplitInfo, MANIFEST, MARKER, MARKER_TEXT, SCHEMA_VERSION};
pub use reader::{ShardBatch, ShardReader};
pub use schema::{schema, Columns};
pub use verify::{verify, VerifyReport};
pub use writer::{clean, shard_name, Layout, Row, SplitWriter};
