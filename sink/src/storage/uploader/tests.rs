use std::path::PathBuf;

use super::*;
use crate::storage::columns::tests::{postback, visit};
use crate::storage::table::TableLog;
use crate::storage::writer::{WalConfig, WalWriter};
use object_store::memory::InMemory;
use object_store::path::Path as ObjectPath;
use object_store::{PutOptions, PutPayload};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

/// A path (not yet created) in a fresh temporary directory, removed when the guard drops.
fn tmp(tag: &str) -> (tempfile::TempDir, PathBuf) {
    let guard = tempfile::tempdir().unwrap();
    let path = guard.path().join(tag);
    (guard, path)
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// Rows of the Parquet object at `path`.
fn rows(store: &dyn ObjectStore, path: &str) -> usize {
    let bytes =
        block_on(async { store.get(&ObjectPath::from(path)).await?.bytes().await }).unwrap();
    ParquetRecordBatchReaderBuilder::try_new(bytes)
        .unwrap()
        .build()
        .unwrap()
        .map(|b| b.unwrap().num_rows())
        .sum()
}

/// Object names under `prefix` (one level).
fn objects(store: &dyn ObjectStore, prefix: &str) -> Vec<String> {
    let list = block_on(store.list_with_delimiter(Some(&ObjectPath::from(prefix)))).unwrap();
    list.objects
        .into_iter()
        .map(|o| o.location.to_string())
        .collect()
}

/// The one object under `prefix` (segment numbers start from the clock, so tests look names up).
fn only(store: &dyn ObjectStore, prefix: &str) -> String {
    let found = objects(store, prefix);
    assert_eq!(found.len(), 1, "{prefix}: {found:?}");
    found.into_iter().next().unwrap()
}

/// The edge's wiring in small: a WAL writer on `dir` whose sealed segments go to an
/// uploader into an in-memory store.
fn pipeline(
    dir: &std::path::Path,
    queue: usize,
) -> (
    crate::storage::queue::EventSender,
    WalWriter,
    Uploader,
    Arc<dyn ObjectStore>,
) {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let (tx, w, up) = pipeline_to(dir, queue, Arc::clone(&store));
    (tx, w, up, store)
}

/// [`pipeline`] into `store`.
fn pipeline_to(
    dir: &std::path::Path,
    queue: usize,
    store: Arc<dyn ObjectStore>,
) -> (crate::storage::queue::EventSender, WalWriter, Uploader) {
    let (tx, rx) = crate::storage::queue::queue(queue, u64::MAX);
    let (sealed_tx, sealed_rx) = crossbeam_channel::unbounded();
    let w = WalWriter::spawn(vec![rx], WalConfig::new(dir.to_owned()), Some(sealed_tx)).unwrap();
    let up = Uploader::spawn(
        Target::remote(store),
        w.backlog.clone(),
        sealed_rx,
        Arc::clone(&w.stats),
        Visitors::default(),
        1,
        DEFAULT_COMMIT_INTERVAL,
    )
    .unwrap();
    (tx, w, up)
}

/// The paths the table's log names as live, relative to the table.
fn committed(store: &Arc<dyn ObjectStore>, kind: TableKind) -> Vec<String> {
    block_on(async {
        let at = crate::storage::table::Location::remote(Arc::clone(store));
        let Some(t) = crate::storage::table::load(&at, kind).await.unwrap() else {
            return Vec::new();
        };
        let mut v: Vec<String> = t
            .snapshot()
            .unwrap()
            .log_data()
            .iter()
            .map(|f| f.path().into_owned())
            .collect();
        v.sort();
        v
    })
}

// 2026-11-27T07:59:59.000Z and an hour later.
const H7: u64 = 1_795_766_399_000;
const H8: u64 = H7 + 3_600_000;

#[test]
fn a_segment_becomes_partitioned_parquet_and_is_deleted() {
    let (_tmp, dir) = tmp("seg");
    let (tx, w, up, store) = pipeline(&dir, 1000);
    for n in 0..30 {
        tx.try_send(visit(H7 + u64::from(n), n)).unwrap();
        tx.try_send(visit(H8 + u64::from(n), 100 + n)).unwrap();
    }
    for n in 0..5 {
        tx.try_send(postback(H8, n, Some(1_000_000))).unwrap();
    }
    drop(tx);
    assert_eq!(up.stats.running.load(Ordering::Relaxed), 1);
    let up_stats = Arc::clone(&up.stats);
    let wal_stats = w.join();
    assert_eq!(up.join(), 0, "nothing left");
    assert_eq!(
        up_stats.running.load(Ordering::Relaxed),
        0,
        "the thread has ended"
    );
    assert_eq!(
        rows(
            store.as_ref(),
            &only(store.as_ref(), "visits/dt=2026-11-27/hour=07")
        ),
        30
    );
    assert_eq!(
        rows(
            store.as_ref(),
            &only(store.as_ref(), "visits/dt=2026-11-27/hour=08")
        ),
        30
    );
    assert_eq!(
        rows(
            store.as_ref(),
            &only(store.as_ref(), "conversions/dt=2026-11-27/hour=08")
        ),
        5
    );
    assert!(objects(store.as_ref(), "conversions/dt=2026-11-27/hour=07").is_empty());
    assert!(
        crate::storage::wal::list_segments(&dir).unwrap().is_empty(),
        "uploaded segments are deleted"
    );
    assert_eq!(wal_stats.disk_bytes.load(Ordering::Relaxed), 0);
    // Each table's log names exactly its files.
    let visits = committed(&store, TableKind::Visits);
    assert_eq!(visits.len(), 2, "{visits:?}");
    assert!(visits[0].starts_with("dt=2026-11-27/hour=07/"));
    let conversions = committed(&store, TableKind::Conversions);
    assert_eq!(conversions.len(), 1, "{conversions:?}");
    assert_eq!(up_stats.files_committed.load(Ordering::Relaxed), 3);
    assert!(up_stats.commits.load(Ordering::Relaxed) >= 2);
    assert!(up_stats.last_commit_ms.load(Ordering::Relaxed) > 0);
    assert_eq!(up_stats.segments_uncommitted.load(Ordering::Relaxed), 0);
    assert_eq!(up_stats.oldest_uncommitted_ms.load(Ordering::Relaxed), 0);
}

/// Logs `events` through a writer of its own into `dir`, and answers the first segment.
fn logged(dir: &std::path::Path, events: impl IntoIterator<Item = Event>) -> (u64, PathBuf) {
    let (tx, rx) = crate::storage::queue::queue(1000, u64::MAX);
    let w = WalWriter::spawn(vec![rx], WalConfig::new(dir.to_owned()), None).unwrap();
    for e in events {
        tx.try_send(e).unwrap();
    }
    drop(tx);
    w.join();
    crate::storage::wal::list_segments(dir).unwrap().remove(0)
}

#[test]
fn uploading_a_segment_again_keeps_the_stored_file() {
    let (_tmp, dir) = tmp("again");
    let (seq, path) = logged(&dir, (0..10).map(|n| visit(H7, n)));
    // Sealed by this run: what it writes afresh was never committed.
    let seg = Sealed {
        seq,
        synced: Some(std::fs::metadata(&path).unwrap().len()),
        path,
    };
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let target = Target::remote(Arc::clone(&store));
    let stats = UploadStats::default();
    let first = block_on(upload_segment(&target, &seg, &stats, &Visitors::default())).unwrap();
    let again = block_on(upload_segment(&target, &seg, &stats, &Visitors::default())).unwrap();
    // Left by an earlier run, even a file written afresh may have been committed before.
    let earlier = Sealed {
        synced: None,
        ..seg.clone()
    };
    let other = Target::remote(Arc::new(InMemory::new()));
    let fresh = block_on(upload_segment(
        &other,
        &earlier,
        &stats,
        &Visitors::default(),
    ))
    .unwrap();
    assert!(fresh.files[0].file.replayed && fresh.files[0].file.rows == Some(10));
    let names = objects(store.as_ref(), "visits/dt=2026-11-27/hour=07");
    assert_eq!(names.len(), 1, "{names:?}");
    assert_eq!(rows(store.as_ref(), &names[0]), 10);
    assert_eq!(first.oldest_ms, Some(H7 as i64));
    let (a, b) = (&first.files[0].file, &again.files[0].file);
    assert!(
        !a.replayed && b.replayed,
        "the second upload finds it stored"
    );
    assert_eq!((&a.path, a.size, a.rows), (&b.path, b.size, Some(10)));
    assert_eq!(b.rows, None);
    assert_eq!(stats.objects_written.load(Ordering::Relaxed), 2);
}

#[test]
fn a_file_cut_short_by_a_crash_is_written_again() {
    let (_tmp, dir) = tmp("torn");
    let (seq, path) = logged(&dir, (0..10).map(|n| visit(H7, n)));
    let seg = Sealed {
        seq,
        path,
        synced: None,
    };
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let target = Target::remote(Arc::clone(&store));
    let stats = UploadStats::default();
    let first = block_on(upload_segment(&target, &seg, &stats, &Visitors::default())).unwrap();
    let object = first.files[0].file.path.clone();
    let whole = block_on(async { store.get(&object).await?.bytes().await }).unwrap();
    // What a power cut leaves of a file written and never synced: its start, or nothing.
    for cut in [whole.slice(..whole.len() / 2), Bytes::new()] {
        block_on(store.put(&object, PutPayload::from(cut))).unwrap();
        let again = block_on(upload_segment(&target, &seg, &stats, &Visitors::default())).unwrap();
        let f = &again.files[0].file;
        assert_eq!((f.size, f.rows), (whole.len() as u64, Some(10)));
        assert_eq!(rows(store.as_ref(), object.as_ref()), 10);
    }
    // A whole file is left as it is.
    let again = block_on(upload_segment(&target, &seg, &stats, &Visitors::default())).unwrap();
    assert_eq!(again.files[0].file.rows, None, "found stored, not written");
}

#[test]
fn a_crash_between_upload_and_commit_commits_the_files_once() {
    let (_tmp, dir) = tmp("crash");
    let (seq, path) = logged(&dir, (0..10).map(|n| visit(H7, n)));
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    // An earlier run uploaded the segment and committed it, then died before deleting it.
    let seg = Sealed {
        seq,
        path,
        synced: None,
    };
    let target = Target::remote(Arc::clone(&store));
    let up = block_on(upload_segment(
        &target,
        &seg,
        &UploadStats::default(),
        &Visitors::default(),
    ))
    .unwrap();
    let files: Vec<NewFile> = up.files.iter().map(|f| f.file.clone()).collect();
    let mut log = TableLog::new(Location::remote(Arc::clone(&store)), TableKind::Visits);
    block_on(log.commit(&files, "clicktracker-node-1", seq as i64)).unwrap();
    // The next run uploads it again: nothing is rewritten, nothing committed twice.
    let (tx, w, up) = pipeline_to(&dir, 10, Arc::clone(&store));
    assert_eq!(w.backlog.len(), 1);
    drop(tx);
    w.join();
    let stats = Arc::clone(&up.stats);
    assert_eq!(up.join(), 0);
    assert_eq!(committed(&store, TableKind::Visits).len(), 1);
    assert_eq!(stats.files_committed.load(Ordering::Relaxed), 0);
    assert_eq!(stats.objects_written.load(Ordering::Relaxed), 0);
    assert!(crate::storage::wal::list_segments(&dir).unwrap().is_empty());
}

#[test]
fn segments_left_by_an_earlier_run_are_uploaded_at_start() {
    let (_tmp, dir) = tmp("backlog");
    logged(&dir, (0..7).map(|n| postback(H7, n, None)));
    // A new run: the old segment is the backlog.
    let (_tx, w, up, store) = pipeline(&dir, 1);
    assert_eq!(w.backlog.len(), 1);
    drop(_tx);
    w.join();
    assert_eq!(up.join(), 0);
    assert_eq!(
        rows(
            store.as_ref(),
            &only(store.as_ref(), "conversions/dt=2026-11-27/hour=07")
        ),
        7
    );
}

#[test]
fn large_objects_go_up_in_parts() {
    let store = InMemory::new();
    let path = ObjectPath::from("visits/dt=2026-11-27/hour=07/1-9.parquet");
    let bytes: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let bytes = Bytes::from(bytes);
    assert!(block_on(put_new(&store, &path, bytes.clone(), 10_000)).unwrap());
    let back = block_on(async { store.get(&path).await?.bytes().await }).unwrap();
    assert_eq!(back, bytes);
    // Stored already, in one put or in parts: left as it is.
    assert!(!block_on(put_new(&store, &path, Bytes::from_static(b"small"), 10_000)).unwrap());
    assert!(!block_on(put_new(&store, &path, bytes.clone(), 10_000)).unwrap());
    let back = block_on(async { store.get(&path).await?.bytes().await }).unwrap();
    assert_eq!(back, bytes);
}

#[test]
fn a_foreign_file_is_set_aside_and_does_not_block_the_queue() {
    let (_tmp, dir) = tmp("foreign");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join(crate::storage::wal::segment_name(1)),
        b"not a wal segment",
    )
    .unwrap();
    let (tx, w, up, store) = pipeline(&dir, 10);
    tx.try_send(visit(H7, 1)).unwrap();
    drop(tx);
    w.join();
    let stats = Arc::clone(&up.stats);
    assert_eq!(up.join(), 0);
    assert_eq!(
        rows(
            store.as_ref(),
            &only(store.as_ref(), "visits/dt=2026-11-27/hour=07")
        ),
        1
    );
    assert_eq!(stats.bad_segments.load(Ordering::Relaxed), 1);
    assert!(
        dir.join(format!("{}.corrupt", crate::storage::wal::segment_name(1)))
            .exists()
    );
}

#[test]
fn a_damaged_segment_uploads_what_it_can_and_is_kept_for_inspection() {
    let (_tmp, dir) = tmp("damaged");
    let (_, path) = logged(&dir, (0..100).map(|n| postback(H7, n, Some(1_000_000))));
    let mut data = std::fs::read(&path).unwrap();
    let third = data.len() / 3;
    data[third] ^= 0x10;
    std::fs::write(&path, &data).unwrap();
    let (tx, w, up, store) = pipeline(&dir, 10);
    drop(tx);
    w.join();
    let stats = Arc::clone(&up.stats);
    assert_eq!(up.join(), 0);
    let stored = rows(
        store.as_ref(),
        &only(store.as_ref(), "conversions/dt=2026-11-27/hour=07"),
    );
    assert_eq!(stored, 99, "only the damaged record is lost");
    assert_eq!(stats.damaged_segments.load(Ordering::Relaxed), 1);
    assert!(stats.damaged_bytes.load(Ordering::Relaxed) > 0);
    let kept = dir
        .join(crate::storage::wal::DAMAGED_DIR)
        .join(path.file_name().unwrap());
    assert_eq!(
        std::fs::read(&kept).unwrap(),
        data,
        "its bytes are kept as they were"
    );
    assert!(!path.exists());
}

#[test]
fn a_local_store_is_synced_before_a_segment_is_deleted() {
    let (_tmp, dir) = tmp("local");
    let lake = dir.join("lake");
    let target = Target::open(&format!("file://{}", lake.display())).unwrap();
    let path = ObjectPath::from("visits/dt=2026-11-27/hour=07/1-1.parquet");
    block_on(put_new(
        target.store.as_ref(),
        &path,
        Bytes::from_static(b"x"),
        100,
    ))
    .unwrap();
    target.sync(&path).unwrap();
    // A file that is not there is an error, not a silent success.
    assert!(
        target
            .sync(&ObjectPath::from("visits/nope.parquet"))
            .is_err()
    );
    assert!(Target::remote(target.store.clone()).sync(&path).is_ok());
}

#[test]
fn an_unreadable_segment_is_set_aside_and_does_not_hold_up_the_others() {
    let (_tmp, dir) = tmp("unreadable");
    // A "segment" that cannot be read: a directory by a segment's name.
    std::fs::create_dir_all(dir.join(crate::storage::wal::segment_name(1))).unwrap();
    let (tx, w, up, store) = pipeline(&dir, 10);
    tx.try_send(visit(H7, 1)).unwrap();
    drop(tx);
    w.join();
    let stats = Arc::clone(&up.stats);
    assert_eq!(up.join(), 0);
    assert_eq!(
        rows(
            store.as_ref(),
            &only(store.as_ref(), "visits/dt=2026-11-27/hour=07")
        ),
        1
    );
    assert_eq!(stats.damaged_segments.load(Ordering::Relaxed), 1);
    assert!(
        dir.join(crate::storage::wal::DAMAGED_DIR)
            .join(crate::storage::wal::segment_name(1))
            .exists()
    );
}

#[test]
fn a_short_tail_in_a_segment_this_run_synced_is_damage_not_a_torn_write() {
    let (_tmp, dir) = tmp("short");
    let (seq, path) = logged(&dir, (0..10).map(|n| postback(H7, n, Some(1))));
    let synced = std::fs::metadata(&path).unwrap().len();
    // The disk lost the end of what was synced.
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(synced - 10)
        .unwrap();
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let stats = UploadStats::default();
    let seg = Sealed {
        seq,
        path: path.clone(),
        synced: Some(synced),
    };
    let damaged = block_on(upload_segment(
        &Target::remote(Arc::clone(&store)),
        &seg,
        &stats,
        &Visitors::default(),
    ))
    .unwrap()
    .damaged;
    assert!(damaged, "a short tail of a synced segment is damage");
    assert_eq!(stats.torn_bytes.load(Ordering::Relaxed), 0);
    assert_eq!(
        rows(
            store.as_ref(),
            &only(store.as_ref(), "conversions/dt=2026-11-27/hour=07")
        ),
        9
    );
    // Found at start-up instead (no synced length known), it is a torn tail.
    let seg = Sealed {
        synced: None,
        ..seg
    };
    let stats = UploadStats::default();
    let target = Target::remote(Arc::new(InMemory::new()));
    assert!(
        !block_on(upload_segment(&target, &seg, &stats, &Visitors::default()))
            .unwrap()
            .damaged
    );
    assert!(stats.torn_bytes.load(Ordering::Relaxed) > 0);
}

/// A store whose puts into a table's log fail while `fail` is set (a store that refuses the
/// commit, as an outage or a full bucket would).
#[derive(Debug)]
pub(crate) struct RefusesCommits {
    pub(crate) inner: Arc<dyn ObjectStore>,
    pub(crate) fail: Arc<std::sync::atomic::AtomicBool>,
}

impl std::fmt::Display for RefusesCommits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RefusesCommits({})", self.inner)
    }
}

#[async_trait::async_trait]
impl ObjectStore for RefusesCommits {
    async fn put_opts(
        &self,
        location: &ObjectPath,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<object_store::PutResult> {
        if self.fail.load(Ordering::SeqCst) && location.as_ref().contains("_delta_log/") {
            return Err(object_store::Error::Generic {
                store: "test",
                source: "the store refuses the commit".into(),
            });
        }
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &ObjectPath,
        opts: object_store::PutMultipartOptions,
    ) -> object_store::Result<Box<dyn object_store::MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &ObjectPath,
        options: object_store::GetOptions,
    ) -> object_store::Result<object_store::GetResult> {
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: futures::stream::BoxStream<'static, object_store::Result<ObjectPath>>,
    ) -> futures::stream::BoxStream<'static, object_store::Result<ObjectPath>> {
        self.inner.delete_stream(locations)
    }

    fn list(
        &self,
        prefix: Option<&ObjectPath>,
    ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(
        &self,
        prefix: Option<&ObjectPath>,
    ) -> object_store::Result<object_store::ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &ObjectPath,
        to: &ObjectPath,
        options: object_store::CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

#[test]
fn a_refused_commit_keeps_the_markers_until_the_store_takes_it() {
    let (_tmp, dir) = tmp("refused");
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let fail = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let flaky: Arc<dyn ObjectStore> = Arc::new(RefusesCommits {
        inner: Arc::clone(&store),
        fail: Arc::clone(&fail),
    });
    let (tx, w, up) = pipeline_to(&dir, 100, flaky);
    for n in 0..10 {
        tx.try_send(visit(H7 + u64::from(n), n)).unwrap();
    }
    drop(tx);
    w.join();
    let stats = Arc::clone(&up.stats);
    let deadline = Instant::now() + Duration::from_secs(10);
    while stats.commit_failures.load(Ordering::Relaxed) < 2 {
        assert!(Instant::now() < deadline, "no commit was tried");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The file and its marker are stored, so the segment is gone; the file is not in the
    // table yet.
    assert_eq!(
        objects(store.as_ref(), "visits/dt=2026-11-27/hour=07").len(),
        1
    );
    assert_eq!(
        objects(
            store.as_ref(),
            "_commit/pending/visits/dt=2026-11-27/hour=07"
        )
        .len(),
        1
    );
    assert!(committed(&store, TableKind::Visits).is_empty());
    assert!(crate::storage::wal::list_segments(&dir).unwrap().is_empty());
    assert_eq!(stats.segments_uncommitted.load(Ordering::Relaxed), 0);
    assert_eq!(stats.committer.holder.load(Ordering::Relaxed), 1);
    assert_eq!(stats.committer.markers_pending.load(Ordering::Relaxed), 1);
    assert_eq!(
        stats.oldest_uncommitted_ms.load(Ordering::Relaxed),
        H7,
        "the store's lag starts at the oldest event waiting"
    );
    // The fault passes: the same file is committed, its marker deleted.
    fail.store(false, Ordering::SeqCst);
    assert_eq!(up.join(), 0);
    assert_eq!(committed(&store, TableKind::Visits).len(), 1);
    assert!(objects(store.as_ref(), "_commit/pending").is_empty());
    assert_eq!(stats.objects_written.load(Ordering::Relaxed), 1);
    assert_eq!(stats.oldest_uncommitted_ms.load(Ordering::Relaxed), 0);
    assert_eq!(
        stats.committer.holder.load(Ordering::Relaxed),
        0,
        "released"
    );
}

/// Two edges share a store: the one holding the lease commits both edges' files; the other,
/// stopping, waits until its files are committed.
#[test]
fn two_edges_commit_through_one_holder() {
    let (_tmp, dir) = tmp("two");
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let spawn = |dir: PathBuf, node: u16| {
        let (tx, rx) = crate::storage::queue::queue(100, u64::MAX);
        let (sealed_tx, sealed_rx) = crossbeam_channel::unbounded();
        let w = WalWriter::spawn(vec![rx], WalConfig::new(dir), Some(sealed_tx)).unwrap();
        let up = Uploader::spawn(
            Target::remote(Arc::clone(&store)),
            w.backlog.clone(),
            sealed_rx,
            Arc::clone(&w.stats),
            Visitors::default(),
            node,
            Duration::from_millis(100),
        )
        .unwrap();
        (tx, w, up)
    };
    let (tx1, w1, up1) = spawn(dir.join("a"), 1);
    let (tx2, w2, up2) = spawn(dir.join("b"), 2);
    let event = |node: u16, n: u32| {
        let mut e = visit(H7 + u64::from(n), n);
        e.id = crate::model::id::EventId::new(H7 + u64::from(n), node, 1, n);
        e
    };
    for n in 0..10 {
        tx1.try_send(event(1, n)).unwrap();
        tx2.try_send(event(2, n)).unwrap();
    }
    drop(tx1);
    w1.join();
    // Only one of them commits.
    let deadline = Instant::now() + Duration::from_secs(10);
    while up1.stats.committer.holder.load(Ordering::Relaxed)
        + up2.stats.committer.holder.load(Ordering::Relaxed)
        == 0
    {
        assert!(Instant::now() < deadline, "nobody took the lease");
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(tx2);
    w2.join();
    let (s1, s2) = (Arc::clone(&up1.stats), Arc::clone(&up2.stats));
    assert_eq!(up2.join(), 0);
    assert_eq!(up1.join(), 0);
    let live = committed(&store, TableKind::Visits);
    assert_eq!(live.len(), 2, "{live:?}");
    assert!(objects(store.as_ref(), "_commit/pending").is_empty());
    let files =
        s1.files_committed.load(Ordering::Relaxed) + s2.files_committed.load(Ordering::Relaxed);
    assert_eq!(files, 2);
}
