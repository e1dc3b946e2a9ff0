//! The storage pipeline: from a worker's queue to Parquet in the store.
//!
//! | module | what |
//! |---|---|
//! | [`queue`] | the bounded (count and bytes) queue from the edge's workers to the writer |
//! | [`writer`] | group commit into the write-ahead log, retries, the disk limit |
//! | [`wal`] | the log's segment format: blocks, fragments, damage and torn tails |
//! | [`uploader`] | sealed segments → sorted Arrow batches → Parquet in the store |
//! | [`columns`] | the tables' Arrow schemas and column builders |
//! | [`store`] | object_store targets (`file://`, `s3://`), puts that survive faults |
//! | [`table`] | the Delta Lake log of each table: commits, creation, what it names |
//! | [`committer`] | markers of stored files, the store's commit lease, the committer's pass |
//! | [`compact`] | compaction, retention and vacuum of the tables (`query compact`) |

pub mod columns;
pub mod committer;
pub mod compact;
pub mod queue;
pub mod store;
pub mod table;
pub mod uploader;
pub mod wal;
pub mod writer;

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
