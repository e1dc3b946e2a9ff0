//! Reading a table's committed snapshot: a store wrapper whose listings of a table with a
//! Delta log answer exactly the files of the log's latest version (`sink::storage::table`).
//!
//! DataFusion's listing table then finds the files as before, Hive partitions and pruning
//! included, but never a file half uploaded, nor one a compaction has replaced, nor the log's
//! own checkpoints. A table without a log yet (a store written before the table format,
//! until the sink's first commit) is listed as it is.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions,
};
use sink::storage::columns::TableKind;
use sink::storage::table::Location;

use crate::{QueryError, Result};

/// The live files of one table's snapshot, by their path in the store.
#[derive(Debug, Default, Clone)]
pub struct TableFiles {
    pub version: u64,
    pub files: BTreeMap<Path, ObjectMeta>,
}

/// Loads the latest snapshot of `kind` at `at`; `None` when the table has no log.
pub async fn load(at: &Location, kind: TableKind) -> Result<Option<TableFiles>> {
    let err = |e: sink::storage::table::TableError| {
        QueryError::DataFusion(datafusion::error::DataFusionError::External(Box::new(e)))
    };
    let Some(table) = sink::storage::table::load(at, kind).await.map_err(err)? else {
        return Ok(None);
    };
    let state = table.snapshot().map_err(|source| {
        err(sink::storage::table::TableError::Delta {
            table: kind.name(),
            source,
        })
    })?;
    let mut files = BTreeMap::new();
    for f in state.log_data().iter() {
        let location = Path::from(format!("{}/{}", kind.name(), f.path()));
        let meta = ObjectMeta {
            location: location.clone(),
            last_modified: chrono::DateTime::from_timestamp_millis(f.modification_time())
                .unwrap_or_default(),
            size: f.size().max(0) as u64,
            e_tag: None,
            version: None,
        };
        files.insert(location, meta);
    }
    Ok(Some(TableFiles {
        version: state.version(),
        files,
    }))
}

/// A store whose listings under a table with a snapshot answer the snapshot's files; every
/// other call passes through.
#[derive(Debug)]
pub struct Snapshots {
    inner: Arc<dyn ObjectStore>,
    tables: Vec<(TableKind, Arc<TableFiles>)>,
}

impl Snapshots {
    /// Loads the snapshot of each table at `at` that has a log.
    pub async fn load(at: &Location) -> Result<Snapshots> {
        let mut tables = Vec::new();
        for kind in [TableKind::Visits, TableKind::Conversions] {
            if let Some(files) = load(at, kind).await? {
                tables.push((kind, Arc::new(files)));
            }
        }
        Ok(Snapshots {
            inner: Arc::clone(&at.root),
            tables,
        })
    }

    /// [`Snapshots::load`] on a runtime of its own. delta-rs' kernel blocks a runtime thread
    /// while it reads the log (`block_in_place`), and the store's file reads wait for the
    /// same blocking pool: on the server's runtime, several requests at once used up its
    /// threads between them and it hung. The runtime has a worker beside the thread that
    /// blocks, so the store's connections go on being driven.
    pub async fn load_apart(at: Location) -> Result<Snapshots> {
        tokio::task::spawn_blocking(move || {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("query-snapshot")
                .enable_all()
                .build()?
                .block_on(Snapshots::load(&at))
        })
        .await
        .map_err(|e| {
            QueryError::DataFusion(datafusion::error::DataFusionError::External(Box::new(e)))
        })?
    }

    /// The snapshot of `kind`, if the table has a log.
    pub fn table(&self, kind: TableKind) -> Option<&TableFiles> {
        self.tables
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, t)| t.as_ref())
    }

    /// The snapshot a listing of `prefix` answers from, if any.
    fn snapshot_for(&self, prefix: Option<&Path>) -> Option<Arc<TableFiles>> {
        let first = prefix?.parts().next()?;
        self.tables
            .iter()
            .find(|(k, _)| k.name() == first.as_ref())
            .map(|(_, t)| Arc::clone(t))
    }
}

impl fmt::Display for Snapshots {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Snapshots({})", self.inner)
    }
}

/// The snapshot's files under `prefix` (by whole path segments, as object stores list).
fn under<'a>(t: &'a TableFiles, prefix: &'a Path) -> impl Iterator<Item = &'a ObjectMeta> + 'a {
    t.files
        .range(prefix.clone()..)
        .take_while(move |(p, _)| p.as_ref().starts_with(prefix.as_ref()))
        .filter(move |(p, _)| p.prefix_matches(prefix))
        .map(|(_, m)| m)
}

#[async_trait::async_trait]
impl ObjectStore for Snapshots {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<Bytes>> {
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        match (self.snapshot_for(prefix), prefix) {
            (Some(t), Some(prefix)) => {
                let metas: Vec<_> = under(&t, prefix).cloned().map(Ok).collect();
                futures::stream::iter(metas).boxed()
            }
            _ => self.inner.list(prefix),
        }
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        match (self.snapshot_for(prefix), prefix) {
            (Some(t), Some(prefix)) => {
                let metas: Vec<_> = under(&t, prefix)
                    .filter(|m| m.location > *offset)
                    .cloned()
                    .map(Ok)
                    .collect();
                futures::stream::iter(metas).boxed()
            }
            _ => self.inner.list_with_offset(prefix, offset),
        }
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        let (Some(t), Some(prefix)) = (self.snapshot_for(prefix), prefix) else {
            return self.inner.list_with_delimiter(prefix).await;
        };
        let depth = prefix.parts().count();
        let mut common_prefixes: Vec<Path> = Vec::new();
        let mut objects = Vec::new();
        for m in under(&t, prefix) {
            let parts: Vec<_> = m.location.parts().collect();
            if parts.len() == depth + 1 {
                objects.push(m.clone());
            } else if parts.len() > depth + 1 {
                let dir = Path::from_iter(parts.into_iter().take(depth + 1));
                if common_prefixes.last() != Some(&dir) {
                    common_prefixes.push(dir);
                }
            }
        }
        Ok(ListResult {
            common_prefixes,
            objects,
        })
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(
        &self,
        from: &Path,
        to: &Path,
        options: RenameOptions,
    ) -> object_store::Result<()> {
        self.inner.rename_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use futures::TryStreamExt;
    use object_store::memory::InMemory;
    use object_store::{ObjectStoreExt, PutPayload};
    use sink::storage::table::{NewFile, TableLog};

    use super::*;

    async fn put(store: &dyn ObjectStore, p: &str) {
        store
            .put(&Path::from(p), PutPayload::from_static(b"x"))
            .await
            .unwrap();
    }

    fn file(p: &str) -> NewFile {
        NewFile {
            path: Path::from(p),
            size: 1,
            rows: Some(1),
            modified_ms: 1_795_766_400_000,
            replayed: false,
        }
    }

    #[tokio::test]
    async fn listings_of_a_table_with_a_log_answer_its_snapshot() {
        let raw: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let committed = [
            "visits/dt=2026-11-27/hour=07/1-1.parquet",
            "visits/dt=2026-11-27/hour=08/1-2.parquet",
            "visits/dt=2026-11-28/hour=00/1-3.parquet",
        ];
        for p in committed {
            put(raw.as_ref(), p).await;
        }
        let at = Location::remote(Arc::clone(&raw));
        let mut log = TableLog::new(at.clone(), TableKind::Visits);
        let files: Vec<NewFile> = committed.iter().map(|p| file(p)).collect();
        log.commit(&files, "test", 1).await.unwrap();
        // Uploaded, not committed: not in the table.
        put(raw.as_ref(), "visits/dt=2026-11-27/hour=07/1-4.parquet").await;
        // No log: listed as it is.
        put(
            raw.as_ref(),
            "conversions/dt=2026-11-27/hour=07/1-1.parquet",
        )
        .await;

        let s = Snapshots::load(&at).await.unwrap();
        assert_eq!(s.table(TableKind::Visits).unwrap().version, 0);
        assert!(s.table(TableKind::Conversions).is_none());
        let listed: Vec<String> = s
            .list(Some(&Path::from("visits")))
            .map_ok(|m| m.location.to_string())
            .try_collect()
            .await
            .unwrap();
        assert_eq!(listed, committed);
        let hour7: Vec<ObjectMeta> = s
            .list(Some(&Path::from("visits/dt=2026-11-27/hour=07")))
            .try_collect()
            .await
            .unwrap();
        assert_eq!(hour7.len(), 1);
        assert_eq!(hour7[0].size, 1);
        // A prefix matches whole segments: hour=0 is not hour=07.
        let none: Vec<ObjectMeta> = s
            .list(Some(&Path::from("visits/dt=2026-11-27/hour=0")))
            .try_collect()
            .await
            .unwrap();
        assert!(none.is_empty());

        let top = s
            .list_with_delimiter(Some(&Path::from("visits")))
            .await
            .unwrap();
        assert!(top.objects.is_empty());
        let dirs: Vec<String> = top.common_prefixes.iter().map(|p| p.to_string()).collect();
        assert_eq!(dirs, ["visits/dt=2026-11-27", "visits/dt=2026-11-28"]);
        let hours = s
            .list_with_delimiter(Some(&Path::from("visits/dt=2026-11-27")))
            .await
            .unwrap();
        assert_eq!(hours.common_prefixes.len(), 2);
        let leaf = s
            .list_with_delimiter(Some(&Path::from("visits/dt=2026-11-27/hour=07")))
            .await
            .unwrap();
        assert_eq!(leaf.objects.len(), 1);

        let offset: Vec<ObjectMeta> = s
            .list_with_offset(Some(&Path::from("visits")), &Path::from(committed[0]))
            .try_collect()
            .await
            .unwrap();
        assert_eq!(offset.len(), 2);

        let conversions: Vec<ObjectMeta> = s
            .list(Some(&Path::from("conversions")))
            .try_collect()
            .await
            .unwrap();
        assert_eq!(conversions.len(), 1);
    }
}
