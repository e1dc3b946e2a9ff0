//! `query compact`: one pass of compaction, retention and vacuum over the store's tables
//! (docs/table-format.md "Compaction"), meant for cron. The work is the sink's
//! ([`sink::storage::compact`]); this opens the store and says what was done.

use sink::storage::columns::TableKind;
use sink::storage::compact::{self, Options, Outcome};
use sink::storage::table::Location;

use crate::{QueryError, Result};

/// Runs one pass over both tables, `visits` first; `retain` gives each table's days kept.
pub async fn run(
    store: &str,
    opts: &Options,
    retain: [(TableKind, Option<u32>); 2],
) -> Result<Vec<(TableKind, Outcome)>> {
    let root = crate::session::open_store(store)?;
    let local = sink::storage::store::local_dir(store);
    let at = Location::new(root, local.as_deref())?;
    let mut out = Vec::with_capacity(2);
    for (kind, retain_days) in retain {
        let opts = Options {
            retain_days,
            ..opts.clone()
        };
        // delta-rs reads logs with `block_in_place`: a runtime of its own, off this one.
        let at = at.clone();
        let done = tokio::task::spawn_blocking(move || {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("query-compact")
                .enable_all()
                .build()?
                .block_on(compact::run(&at, kind, &opts))
                .map_err(|e| QueryError::Invalid(e.to_string()))
        })
        .await
        .map_err(|e| QueryError::Invalid(format!("the compaction of {}: {e}", kind.name())))??;
        out.push((kind, done));
    }
    Ok(out)
}

/// One line per table: what the pass did.
pub fn describe(kind: TableKind, o: &Outcome) -> String {
    let mut parts = vec![format!("{} → {} files", o.files_before, o.files_after)];
    if o.written > 0 {
        parts.push(format!(
            "merged {} into {} ({} rows, {} read, {} written)",
            o.merged,
            o.written,
            o.rows,
            mib(o.bytes_read),
            mib(o.bytes_written)
        ));
    }
    if o.dropped_files > 0 {
        parts.push(format!(
            "dropped {} day{} ({} files)",
            o.dropped_days,
            if o.dropped_days == 1 { "" } else { "s" },
            o.dropped_files
        ));
    }
    if o.vacuumed > 0 {
        parts.push(format!("vacuumed {} files", o.vacuumed));
    }
    if o.abandoned > 0 {
        parts.push(format!(
            "{} hours left to another process that changed them first",
            o.abandoned
        ));
    }
    if o.skipped > 0 {
        parts.push(format!(
            "{} files could not be merged (see the log)",
            o.skipped
        ));
    }
    match o.version {
        Some(v) => format!("{}: {}; version {v}", kind.name(), parts.join(", ")),
        None => format!("{}: no table yet (the edges create it)", kind.name()),
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
}
