//! The sink's side of the edge: the event model every request becomes, and the consumer
//! at the other end of the edge's bounded event channel.
//!
//! Durable storage (write-ahead log, Parquet on object storage) is not built yet: today the
//! consumer in [`discard`] only counts events and drops them.

pub mod ack;
pub mod discard;
pub mod event;
pub mod id;
pub mod money;
pub mod url;
pub mod wal;
pub mod writer;

pub use event::{Event, EventKind, Field};
pub use id::{EventId, IdGenerator};
