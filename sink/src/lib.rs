//! The sink: the event model every request becomes, and the path that makes events durable —
//! the write-ahead log with group commit ([`writer`], [`wal`]) that conversions are
//! acknowledged against ([`ack`]).
//!
//! Sealed WAL segments become zstd Parquet in the store ([`uploader`], [`columns`],
//! [`store`]), Hive-partitioned by table, date and hour.

pub mod ack;
pub mod columns;
pub mod event;
pub mod id;
pub mod money;
pub mod store;
pub mod uploader;
pub mod url;
pub mod wal;
pub mod writer;

pub use event::{Event, EventKind, Field};
pub use id::{EventId, IdGenerator};
