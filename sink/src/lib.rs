//! The sink: the event model every request becomes, and the path that makes events durable
//! and queryable — the write-ahead log with group commit that conversions are acknowledged
//! against, and the uploader that turns sealed log segments into zstd Parquet in the store,
//! Hive-partitioned by table, date and hour.
//!
//! Features: the event model is always built; `visitors` adds the visitor lookups and
//! `storage` (the default) the storage pipeline.
//!
//! | module | what |
//! |---|---|
//! | [`event`] | the event every request becomes, and its binary codec |
//! | [`id`] | time-ordered event ids (the click id) |
//! | [`money`], [`url`] | amounts in micro-units; URL decoding, encoding and redaction |
//! | [`ack`] | the acknowledgement a conversion waits for (durable, or failed) |
//! | [`queue`] | the bounded (count and bytes) queue from the edge's workers to the writer |
//! | [`writer`] | group commit into the write-ahead log, retries, the disk limit |
//! | [`wal`] | the log's segment format: blocks, fragments, damage and torn tails |
//! | [`uploader`] | sealed segments → sorted Arrow batches → Parquet in the store |
//! | [`columns`] | the tables' Arrow schemas and column builders |
//! | [`store`] | object_store targets (`file://`, `s3://`), puts that survive faults |
//! | [`visitors`], [`agent`], [`geo`] | visitor facts: user agents (uap-core), GeoIP, data-centre ranges, the bot verdict |
//! | [`huge`] | huge-page backed buffers for the GeoIP database |

pub mod ack;
pub mod event;
pub mod id;
pub mod money;
pub mod url;

#[cfg(feature = "visitors")]
pub mod agent;
#[cfg(feature = "visitors")]
pub mod geo;
#[cfg(feature = "visitors")]
pub mod huge;
#[cfg(feature = "visitors")]
pub mod visitors;

#[cfg(feature = "storage")]
pub mod columns;
#[cfg(feature = "storage")]
pub mod queue;
#[cfg(feature = "storage")]
pub mod store;
#[cfg(feature = "storage")]
pub mod uploader;
#[cfg(feature = "storage")]
pub mod wal;
#[cfg(feature = "storage")]
pub mod writer;

pub use event::{Event, EventKind, Field};
pub use id::{EventId, IdGenerator};

#[cfg(feature = "storage")]
/// Raises the calling thread's nice value by `nice` (lower priority), best effort: the sink's
/// threads do batch work that must not delay the edge's workers on a shared core.
pub(crate) fn lower_priority(nice: i32) {
    // SAFETY: gettid and setpriority act on the calling thread only and take no pointers.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, nice) };
    if rc != 0 {
        tracing::warn!(
            "cannot lower the priority of a background thread: {}",
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
