//! The sink: the event model every request becomes, and the path that makes events durable —
//! the write-ahead log with group commit ([`writer`], [`wal`]) that conversions are
//! acknowledged against ([`ack`]).
//!
//! Sealed WAL segments become zstd Parquet in the store ([`uploader`], [`columns`],
//! [`store`]), Hive-partitioned by table, date and hour.

pub mod ack;
pub mod agent;
pub mod columns;
pub mod event;
pub mod geo;
pub mod huge;
pub mod id;
pub mod money;
pub mod queue;
pub mod store;
pub mod uploader;
pub mod url;
pub mod wal;
pub mod writer;

pub use event::{Event, EventKind, Field};
pub use id::{EventId, IdGenerator};

/// Raises the calling thread's nice value by `nice` (lower priority), best effort: the sink's
/// threads do batch work that must not delay the edge's workers on a shared core.
pub(crate) fn lower_priority(nice: i32) {
    // SAFETY: gettid and setpriority act on the calling thread only and take no pointers.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, nice) };
    if rc != 0 {
        eprintln!(
            "sink: cannot lower the priority of a background thread: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// A fresh path under the system's temporary directory for one test (not created).
#[cfg(test)]
pub(crate) fn test_dir(tag: &str) -> std::path::PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    std::env::temp_dir().join(format!("sink-{tag}-{}-{nanos}", std::process::id()))
}
