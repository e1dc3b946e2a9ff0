//! A DataFusion session over one store: the store opened from its URL (and wrapped to count
//! what is read), the two tables registered with their schemas and Hive partitions, and the
//! execution settings tuned for these files.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::config::ConfigOptions;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};
use object_store::ObjectStore;
use sink::storage::columns::TableKind;

use crate::progress::Counted;
use crate::{QueryError, Result};

/// The URL the store is registered under inside the session, whatever its real scheme.
const STORE_URL: &str = "lake://store/";

/// How to run queries.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    /// Memory the query may use before it spills or fails; 0 = unlimited.
    pub memory_limit: usize,
    /// Threads (and partitions) to scan with; 0 = one per core.
    pub threads: usize,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions {
            memory_limit: default_memory_limit(),
            threads: 0,
        }
    }
}

/// Half of the machine's physical memory.
pub fn default_memory_limit() -> usize {
    // SAFETY: sysconf takes no pointers and has no side effects.
    let (pages, size) = unsafe {
        (
            libc::sysconf(libc::_SC_PHYS_PAGES),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    if pages > 0 && size > 0 {
        (pages as usize).saturating_mul(size as usize) / 2
    } else {
        4 << 30
    }
}

/// The tokio runtime queries run on: `threads` workers (0 = one per core), and a blocking
/// pool of two threads per worker for file reads (the local store reads files on them): left
/// at tokio's default, a report started over a hundred and spent seconds of system time in
/// futex wake-ups on two cores. Answers the runtime and its number of workers.
pub fn runtime(threads: usize) -> std::io::Result<(tokio::runtime::Runtime, usize)> {
    let threads = if threads == 0 {
        std::thread::available_parallelism().map_or(2, |n| n.get())
    } else {
        threads
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .max_blocking_threads(2 * threads)
        .thread_name("query")
        .enable_all()
        .build()?;
    Ok((rt, threads))
}

/// Parses sizes like `512M`, `4G`, `1.5G`, `1000000` (bytes) or `0` (no limit).
pub fn parse_size(s: &str) -> Result<usize> {
    let bad = || QueryError::BadSize(s.to_owned());
    let t = s.trim();
    let (num, unit) = match t.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => (&t[..i], t[i..].to_ascii_uppercase()),
        None => (t, String::new()),
    };
    let mult: f64 = match unit.trim_end_matches("IB").trim_end_matches('B') {
        "" => 1.0,
        "K" => 1024.0,
        "M" => 1024.0 * 1024.0,
        "G" => 1024.0 * 1024.0 * 1024.0,
        "T" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return Err(bad()),
    };
    let n: f64 = num.trim().parse().map_err(|_| bad())?;
    if !n.is_finite() || n < 0.0 {
        return Err(bad());
    }
    Ok((n * mult) as usize)
}

/// A session with `visits` and `conversions` registered.
pub struct Session {
    pub ctx: SessionContext,
    /// The store itself, for what is not a table (cost updates).
    pub store: Arc<dyn ObjectStore>,
    /// Bytes read from the store so far (for progress).
    pub read: Arc<AtomicU64>,
}

/// Opens the store at `url` for reading. Unlike the sink, a missing local directory is an
/// error here, not something to create.
pub fn open_store(url: &str) -> Result<Arc<dyn ObjectStore>> {
    if let Some(sink::storage::store::StoreUrl::File(path)) =
        sink::storage::store::StoreUrl::parse(url)
        && !std::path::Path::new(path).is_dir()
    {
        return Err(QueryError::NoStore(url.to_owned()));
    }
    Ok(sink::storage::store::open(url)?)
}

impl Session {
    /// Opens the store at `url` and registers its tables.
    pub async fn open(url: &str, opts: &SessionOptions) -> Result<Self> {
        let raw = open_store(url)?;
        // Tables with a Delta log are read at their latest committed version.
        let local = sink::storage::store::local_dir(url);
        let at = sink::storage::table::Location::new(Arc::clone(&raw), local.as_deref())?;
        let snapshots = crate::snapshot::Snapshots::load_apart(at).await?;
        let store = Counted::new(Arc::new(snapshots));
        let read = store.counter();
        let threads = if opts.threads == 0 {
            std::thread::available_parallelism().map_or(2, |n| n.get())
        } else {
            opts.threads
        };
        let mut config = SessionConfig::new()
            .with_target_partitions(threads)
            .with_information_schema(true);
        let o = config.options_mut();
        // Evaluate filters while decoding (late materialisation) and in the cheapest order.
        o.execution.parquet.pushdown_filters = true;
        o.execution.parquet.reorder_filters = true;
        // Skip pages and row groups by their statistics; the files carry page indexes.
        o.execution.parquet.enable_page_index = true;
        o.execution.parquet.bloom_filter_on_read = true;
        // The sink's footers (many columns, page indexes) fit in one read of this size.
        o.execution.parquet.metadata_size_hint = Some(256 * 1024);
        // Build a join's hash table once and share it between the probing threads, instead of
        // repartitioning both sides by hash, up to this size: reports join a few million
        // conversions with every visit, and moving tens of millions of probe rows between
        // threads cost more than the join itself (4.0 s → 2.4 s over 50 M visits).
        o.optimizer.hash_join_single_partition_threshold = 1 << 30;
        o.optimizer.hash_join_single_partition_threshold_rows = 50_000_000;
        // No dynamic filter from a hash join's build side into the probe's scan: with a
        // million conversion click ids as the build side, the filter passed ~2 % of the visits
        // but cost more than it saved (docs/performance.md "Query against DuckDB").
        o.optimizer.enable_join_dynamic_filter_pushdown = false;
        // Any DataFusion setting can still be changed from the environment, e.g.
        // DATAFUSION_EXECUTION_BATCH_SIZE=16384.
        env_overrides(o)?;
        let views = o.execution.parquet.schema_force_view_types;
        let mut runtime = RuntimeEnvBuilder::new();
        if opts.memory_limit > 0 {
            runtime = runtime.with_memory_limit(opts.memory_limit, 1.0);
        }
        let ctx = SessionContext::new_with_config_rt(config, runtime.build_arc()?);
        // Reports settle each conversion's reports with the feed's code.
        ctx.register_udaf(datafusion::logical_expr::AggregateUDF::from(
            crate::lifecycle::SettleUdaf::default(),
        ));
        let lake = url::Url::parse(STORE_URL).map_err(|e| {
            QueryError::DataFusion(datafusion::error::DataFusionError::External(Box::new(e)))
        })?;
        ctx.register_object_store(&lake, Arc::new(store));
        for table in [TableKind::Visits, TableKind::Conversions] {
            register(&ctx, table, views).await?;
        }
        Ok(Session {
            ctx,
            store: raw,
            read,
        })
    }
}

/// Applies `DATAFUSION_*` environment variables (the setting's name in upper case, dots as
/// underscores) over `o`.
fn env_overrides(o: &mut ConfigOptions) -> Result<()> {
    for entry in o.entries() {
        let var = entry.key.to_uppercase().replace('.', "_");
        if let Some(value) = std::env::var_os(&var) {
            o.set(&entry.key, &value.to_string_lossy())?;
        }
    }
    Ok(())
}

/// `schema` with its top-level strings as `Utf8View`: the Parquet reader then hands out views
/// into the decoded pages instead of copying every string, and hashing and comparing them
/// starts from an inline prefix.
fn with_views(schema: &Schema) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Utf8 => f.as_ref().clone().with_data_type(DataType::Utf8View),
            _ => f.as_ref().clone(),
        })
        .collect();
    Arc::new(Schema::new(fields))
}

/// Registers `table` as a listing table over `{store}/{table}/dt=…/hour=…/*.parquet`, with
/// the sink's schema (files written before a column existed read it as null; strings as
/// views when `views`) and `dt`, `hour` as partition columns.
async fn register(ctx: &SessionContext, table: TableKind, views: bool) -> Result<()> {
    let path = ListingTableUrl::parse(format!("{STORE_URL}{}/", table.name()))?;
    let options = ListingOptions::new(Arc::new(ParquetFormat::default()))
        .with_file_extension(".parquet")
        .with_table_partition_cols(vec![
            ("dt".to_owned(), DataType::Utf8),
            ("hour".to_owned(), DataType::Utf8),
        ]);
    let config = ListingTableConfig::new(path)
        .with_listing_options(options)
        .with_schema(if views {
            with_views(&table.schema())
        } else {
            table.schema()
        });
    ctx.register_table(table.name(), Arc::new(ListingTable::try_new(config)?))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(parse_size("0").unwrap(), 0);
        assert_eq!(parse_size("512M").unwrap(), 512 << 20);
        assert_eq!(parse_size("4G").unwrap(), 4 << 30);
        assert_eq!(parse_size("4GiB").unwrap(), 4 << 30);
        assert_eq!(parse_size("1.5g").unwrap(), 3 << 29);
        assert_eq!(parse_size("100").unwrap(), 100);
        for bad in ["", "G", "-1G", "4X", "lots"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_missing_local_store_is_an_error_not_created() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("missing");
        let url = format!("file://{}", dir.display());
        let e = open_store(&url).err().unwrap().to_string();
        assert!(e.contains("does not exist"), "{e}");
        assert!(!dir.exists());
    }
}
