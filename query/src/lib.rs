//! The query tool: campaign reports, the analytics-API conversion feed and plain SQL over the
//! Parquet store the sink writes, with DataFusion.
//!
//! [`session`] opens a store and registers its two tables, `visits` and `conversions`, with
//! their Hive partitions (`dt`, `hour`) so that `--from/--to` skip whole directories.
//! [`report`] computes the metrics of SPEC.md by any dimensions under the attribution rules
//! of docs/query.md; [`feed`] writes conversions in the seed's payload shape; [`output`] renders
//! tables, CSV and JSON. [`stored`] imports and exports the catalog the store keeps, and
//! reads names and default payouts from it; [`serve`] is the console's JSON API over all of it.

pub mod compact;
pub mod costs;
pub mod dims;
pub mod feed;
pub mod lifecycle;
pub mod log;
pub mod names;
pub mod output;
pub mod postbacks;
pub mod progress;
pub mod range;
pub mod report;
pub mod serve;
pub mod session;
pub mod snapshot;
pub mod stored;
pub mod templates;
pub mod trust;

pub use datafusion;

/// `s` as an SQL string literal (single quotes, inner quotes doubled): the one quoting every
/// generated statement uses.
pub fn sql_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}
pub use range::DateRange;
pub use session::{Session, SessionOptions};

use chrono::NaiveDate;

/// Everything the query tool can refuse, each naming what was wrong.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("bad {flag} value {value:?}: expected a date as YYYY-MM-DD")]
    BadDate { flag: String, value: String },
    #[error("--from {from} is after --to {to}")]
    EmptyRange { from: NaiveDate, to: NaiveDate },
    #[error("unknown dimension {name:?}; valid dimensions: {valid}")]
    UnknownDimension { name: String, valid: String },
    #[error("bad filter {0:?}: expected DIMENSION=VALUE, such as campaign=c1")]
    BadFilter(String),
    #[error("no store at {0}: the directory does not exist (is the path right, has the edge run?)")]
    NoStore(String),
    #[error(transparent)]
    Store(#[from] sink::storage::store::StoreError),
    #[error("{0}")]
    Config(#[from] catalog::ConfigError),
    #[error(transparent)]
    Catalog(#[from] catalog::store::CatalogError),
    #[error("bad --memory-limit {0:?}: expected a size like 512M, 4G or 0 for no limit")]
    BadSize(String),
    #[error("query failed: {0}")]
    DataFusion(#[from] datafusion::error::DataFusionError),
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("cannot write the output: {0}")]
    Io(#[from] std::io::Error),
    #[error("object store: {0}")]
    ObjectStore(#[from] object_store::Error),
    #[error("parquet: {0}")]
    Parquet(#[from] datafusion::parquet::errors::ParquetError),
    #[error("postbacks: {0}")]
    Postbacks(String),
    /// A value given on the command line that cannot be used, named in the message.
    #[error("{0}")]
    Invalid(String),
    #[error("no template is called {0:?}; `query templates` lists them")]
    UnknownTemplate(String),
}

pub type Result<T, E = QueryError> = std::result::Result<T, E>;
