//! Parquet files and where they go: zstd Parquet with explicit writer properties, object
//! stores opened from the config's URL, and the Hive-partitioned object names.

use std::path::PathBuf;
use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path as ObjectPath;
use object_store::prefix::PrefixStore;
use object_store::{ObjectStore, RetryConfig};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::errors::ParquetError;
use parquet::file::metadata::SortingColumn;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use crate::storage::columns::TableKind;

/// Rows per row group: large enough for scans, small enough to prune by statistics.
pub const ROW_GROUP_ROWS: usize = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store URL {0:?} is not file://PATH, s3://BUCKET[/PREFIX] or memory://")]
    BadUrl(String),
    #[error("cannot open store {url}: {source}")]
    Open {
        url: String,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// A store URL, read: the one place `file://`, `s3://` and `memory://` are told apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreUrl<'a> {
    /// `file://PATH`, relative or absolute.
    File(&'a str),
    /// `s3://BUCKET[/PREFIX]`.
    S3 { bucket: &'a str, prefix: &'a str },
    /// `memory://`.
    Memory,
}

impl<'a> StoreUrl<'a> {
    /// `None` for anything else (an empty path or bucket included).
    pub fn parse(url: &'a str) -> Option<Self> {
        if url == "memory://" {
            return Some(StoreUrl::Memory);
        }
        if let Some(path) = url.strip_prefix("file://").filter(|p| !p.is_empty()) {
            return Some(StoreUrl::File(path));
        }
        let rest = url.strip_prefix("s3://").filter(|r| !r.is_empty())?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        Some(StoreUrl::S3 {
            bucket,
            prefix: prefix.trim_matches('/'),
        })
    }
}

/// Opens the store named by `url`: `file://PATH` (relative or absolute; created when
/// missing), `s3://BUCKET[/PREFIX]` (credentials, region, `AWS_ENDPOINT` and
/// `AWS_ALLOW_HTTP` from the usual environment variables) or `memory://`.
pub fn open(url: &str) -> Result<Arc<dyn ObjectStore>, StoreError> {
    let open_err = |source: Box<dyn std::error::Error + Send + Sync>| StoreError::Open {
        url: url.to_owned(),
        source,
    };
    let (bucket, prefix) = match StoreUrl::parse(url) {
        None => return Err(StoreError::BadUrl(url.to_owned())),
        Some(StoreUrl::Memory) => return Ok(Arc::new(InMemory::new())),
        Some(StoreUrl::File(path)) => {
            std::fs::create_dir_all(path).map_err(|e| open_err(Box::new(e)))?;
            let fs = LocalFileSystem::new_with_prefix(path).map_err(|e| open_err(Box::new(e)))?;
            return Ok(Arc::new(fs));
        }
        Some(StoreUrl::S3 { bucket, prefix }) => (bucket, prefix),
    };
    // Short: the uploader keeps retrying a failed segment itself, with backoff, for as
    // long as it takes; a long client-side retry would only hide the outage.
    let retry = RetryConfig {
        max_retries: 2,
        retry_timeout: std::time::Duration::from_secs(5),
        ..RetryConfig::default()
    };
    let s3 = AmazonS3Builder::from_env()
        .with_bucket_name(bucket)
        .with_retry(retry)
        .build()
        .map_err(|e| open_err(Box::new(e)))?;
    Ok(if prefix.is_empty() {
        Arc::new(s3)
    } else {
        Arc::new(PrefixStore::new(s3, prefix))
    })
}

/// The directory of a `file://` store URL; `None` for any other.
pub fn local_dir(url: &str) -> Option<PathBuf> {
    match StoreUrl::parse(url) {
        Some(StoreUrl::File(path)) => Some(PathBuf::from(path)),
        _ => None,
    }
}

/// Where uploaded objects go: the store, and for a `file://` store its directory, whose
/// files and directories the uploader syncs before it deletes a log segment (the local
/// store writes without `fsync`, so a power cut could otherwise lose acknowledged events).
#[derive(Clone)]
pub struct Target {
    pub store: Arc<dyn ObjectStore>,
    pub local_root: Option<PathBuf>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("store", &self.store.to_string())
            .field("local_root", &self.local_root)
            .finish()
    }
}

impl Target {
    /// Opens the store named by `url` (see [`open`]).
    pub fn open(url: &str) -> Result<Target, StoreError> {
        Ok(Target {
            store: open(url)?,
            local_root: local_dir(url),
        })
    }

    /// A store with nothing to sync (memory, S3, tests).
    pub fn remote(store: Arc<dyn ObjectStore>) -> Target {
        Target {
            store,
            local_root: None,
        }
    }

    /// Makes the object at `path` durable: for a local store, syncs the file and every
    /// directory from its own up to the store's root (any may have just been created).
    pub fn sync(&self, path: &ObjectPath) -> std::io::Result<()> {
        let Some(root) = &self.local_root else {
            return Ok(());
        };
        let file = root.join(path.as_ref());
        std::fs::File::open(&file)?.sync_all()?;
        let mut dir = file.parent();
        while let Some(d) = dir {
            std::fs::File::open(d)?.sync_all()?;
            if d == root.as_path() {
                break;
            }
            dir = d.parent();
        }
        Ok(())
    }
}

/// `{table}/dt=YYYY-MM-DD/hour=HH/{node_id}-{segment}.parquet` for the hour holding `ts_ms`.
pub fn object_path(table: TableKind, ts_ms: i64, node_id: u16, segment: u64) -> ObjectPath {
    let t = chrono::DateTime::from_timestamp_millis(ts_ms).unwrap_or_default();
    ObjectPath::from(format!(
        "{}/dt={}/hour={}/{node_id}-{segment}.parquet",
        table.name(),
        t.format("%Y-%m-%d"),
        t.format("%H")
    ))
}

/// The writer properties of every file the sink writes: zstd, page statistics, rows sorted
/// by `ts` (delta encoded), bloom filters on the ids that queries look up.
pub fn writer_properties(table: TableKind) -> WriterProperties {
    properties(table, &["ts"])
}

/// The columns a compacted file of `table` is sorted by: visits by campaign then time (a
/// campaign's rows together, so a report for one campaign skips the rest by statistics),
/// conversions by time.
pub fn compacted_order(table: TableKind) -> &'static [&'static str] {
    match table {
        TableKind::Visits => &["campaign_id", "ts"],
        TableKind::Conversions => &["ts"],
    }
}

/// The writer properties of a compacted file: as the sink's, sorted by
/// [`compacted_order`].
pub fn compacted_properties(table: TableKind) -> WriterProperties {
    properties(table, compacted_order(table))
}

fn properties(table: TableKind, sorted_by: &[&str]) -> WriterProperties {
    let schema = table.schema();
    let sorting = sorted_by
        .iter()
        .filter_map(|name| schema.index_of(name).ok())
        .map(|i| SortingColumn {
            column_idx: i as i32,
            descending: false,
            nulls_first: true,
        })
        .collect();
    let ts = ColumnPath::from("ts");
    let mut b = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_sorting_columns(Some(sorting))
        .set_column_dictionary_enabled(ts.clone(), false)
        .set_column_encoding(ts, Encoding::DELTA_BINARY_PACKED)
        .set_column_dictionary_enabled(ColumnPath::from("event_id"), false)
        .set_column_bloom_filter_enabled(ColumnPath::from("event_id"), true);
    if table == TableKind::Conversions {
        b = b.set_column_bloom_filter_enabled(ColumnPath::from("click_id"), true);
    }
    b.build()
}

/// Encodes `batch` (rows already sorted by time) as one Parquet file.
pub fn encode_parquet(table: TableKind, batch: &RecordBatch) -> Result<Vec<u8>, ParquetError> {
    let mut w = parquet_writer(table)?;
    w.write(batch)?;
    w.into_inner()
}

/// A writer of one Parquet file of `table` in memory: write its rows (sorted by time) batch
/// by batch, then take the bytes with `into_inner`.
pub fn parquet_writer(table: TableKind) -> Result<ArrowWriter<Vec<u8>>, ParquetError> {
    ArrowWriter::try_new(
        Vec::with_capacity(1 << 20),
        table.schema(),
        Some(writer_properties(table)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_urls_are_read_in_one_place() {
        assert_eq!(StoreUrl::parse("memory://"), Some(StoreUrl::Memory));
        assert_eq!(
            StoreUrl::parse("file://./data/lake"),
            Some(StoreUrl::File("./data/lake"))
        );
        assert_eq!(
            StoreUrl::parse("s3://lake/tracker/"),
            Some(StoreUrl::S3 {
                bucket: "lake",
                prefix: "tracker"
            })
        );
        assert_eq!(
            StoreUrl::parse("s3://lake"),
            Some(StoreUrl::S3 {
                bucket: "lake",
                prefix: ""
            })
        );
        for bad in ["file://", "s3://", "memory://x", "gs://b", "/var/lake", ""] {
            assert_eq!(StoreUrl::parse(bad), None, "{bad}");
            assert!(matches!(open(bad), Err(StoreError::BadUrl(_))), "{bad}");
        }
    }

    #[test]
    fn object_names_are_hive_partitioned_by_utc_hour() {
        // 2026-11-27T07:59:59.999Z
        let p = object_path(TableKind::Visits, 1_795_766_399_999, 3, 42);
        assert_eq!(p.as_ref(), "visits/dt=2026-11-27/hour=07/3-42.parquet");
        let p = object_path(TableKind::Conversions, 1_795_766_400_000, 3, 42);
        assert_eq!(p.as_ref(), "conversions/dt=2026-11-27/hour=08/3-42.parquet");
    }

    #[test]
    fn bad_store_urls_are_refused() {
        for url in ["ftp://x", "file://", "s3://", "lake"] {
            assert!(matches!(open(url), Err(StoreError::BadUrl(_))), "{url}");
        }
        assert!(open("memory://").is_ok());
    }
}
