//! The sink: the event model every request becomes, and the path that makes events durable —
//! the write-ahead log with group commit ([`writer`], [`wal`]) that conversions are
//! acknowledged against ([`ack`]).
//!
//! Turning sealed WAL segments into Parquet on object storage is not built yet: segments stay
//! in the data directory until it is.

pub mod ack;
pub mod event;
pub mod id;
pub mod money;
pub mod url;
pub mod wal;
pub mod writer;

pub use event::{Event, EventKind, Field};
pub use id::{EventId, IdGenerator};
