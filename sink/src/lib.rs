//! The sink: the event model every request becomes, and the path that makes events durable
//! and queryable — the write-ahead log with group commit that conversions are acknowledged
//! against, and the uploader that turns sealed log segments into zstd Parquet in the store,
//! Hive-partitioned by table, date and hour, and commits the files to each table's Delta
//! Lake log.
//!
//! Three layers, each a folder; a crate takes only what it uses (features):
//!
//! | layer | feature | what |
//! |---|---|---|
//! | [`model`] | always | the [`Event`] and its codec, time-ordered [`EventId`]s, money in micro-units, URL encoding, the conversion's acknowledgement |
//! | [`visitors`] | `visitors` | visitor facts: user agents (uap-core), GeoIP, data-centre ranges, the bot verdict |
//! | [`storage`] | `storage` (default; includes `visitors`) | queue → write-ahead log (group commit) → Arrow → Parquet in the store → the tables' Delta logs |

pub mod model;
#[cfg(feature = "storage")]
pub mod storage;
#[cfg(feature = "visitors")]
pub mod visitors;

pub use model::event::{Event, EventKind, Field};
pub use model::id::{EventId, IdGenerator};

/// The log filter of the binaries when `RUST_LOG` is unset: ours at `info`, delta-rs and its
/// kernel (which report every snapshot they build at `info`) at `warn`.
pub const DEFAULT_LOG_FILTER: &str =
    "info,buoyant_kernel=warn,buoyant_kernel_engine=warn,deltalake_core=warn";
