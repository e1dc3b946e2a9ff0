use std::collections::BTreeSet;

use object_store::memory::InMemory;

use super::*;
use crate::storage::table::load;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A file of `node`'s segment `segment` in the visits table, stored, and its marker.
async fn stored(store: &Arc<dyn ObjectStore>, node: u16, segment: u64) -> Marker {
    let path = format!("visits/dt=2026-11-27/hour=07/{node}-{segment}.parquet");
    store
        .put(
            &ObjectPath::from(path.as_str()),
            PutPayload::from_static(b"x"),
        )
        .await
        .unwrap();
    let m = Marker {
        path,
        size: 1,
        rows: Some(5),
        modified_ms: now_ms(),
        replayed: false,
        node,
        segment,
        oldest_ms: Some(1_795_766_399_000),
    };
    put_marker(&Target::remote(Arc::clone(store)), &m)
        .await
        .unwrap();
    m
}

/// The paths the visits table's log names as live, relative to the table.
async fn live(store: &Arc<dyn ObjectStore>) -> BTreeSet<String> {
    let Some(t) = load(&Location::remote(Arc::clone(store)), TableKind::Visits)
        .await
        .unwrap()
    else {
        return BTreeSet::new();
    };
    t.snapshot()
        .unwrap()
        .log_data()
        .iter()
        .map(|f| f.path().into_owned())
        .collect()
}

async fn markers(store: &Arc<dyn ObjectStore>) -> usize {
    listed(store.as_ref(), TableKind::Visits)
        .await
        .unwrap()
        .len()
}

fn committer(store: &Arc<dyn ObjectStore>, node: u16, ttl: Duration) -> Committer {
    Committer::new(
        Location::remote(Arc::clone(store)),
        format!("node-{node}"),
        ttl,
    )
}

#[test]
fn a_marker_sits_beside_its_file_under_the_pending_prefix() {
    assert_eq!(
        marker_path(&ObjectPath::from(
            "visits/dt=2026-11-27/hour=07/3-9.parquet"
        ))
        .as_ref(),
        "_commit/pending/visits/dt=2026-11-27/hour=07/3-9.json"
    );
}

#[test]
fn the_lease_holder_commits_every_edges_files_in_one_commit_and_the_others_none() {
    rt().block_on(async {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        for node in 1..=3 {
            stored(&store, node, 7).await;
        }
        let mut a = committer(&store, 1, LEASE_TTL);
        let mut b = committer(&store, 2, LEASE_TTL);
        let p = a.pass().await.unwrap();
        assert!(p.holder);
        assert_eq!((p.markers, p.added, p.commits), (3, 3, 1));
        assert_eq!(p.oldest_ms, Some(1_795_766_399_000));
        assert_eq!(a.stats.holder.load(Ordering::Relaxed), 1);
        assert_eq!(markers(&store).await, 0, "committed markers are deleted");
        assert_eq!(live(&store).await.len(), 3);
        // The other edge's marker waits for the holder.
        stored(&store, 2, 8).await;
        let p = b.pass().await.unwrap();
        assert_eq!(p, Pass::default());
        assert_eq!(b.stats.holder.load(Ordering::Relaxed), 0);
        assert_eq!(markers(&store).await, 1);
        let p = a.pass().await.unwrap();
        assert_eq!((p.added, p.commits), (1, 1));
        assert_eq!(live(&store).await.len(), 4);
        // Each node's highest segment is recorded as its application transaction.
        let t = load(&Location::remote(Arc::clone(&store)), TableKind::Visits)
            .await
            .unwrap()
            .unwrap();
        let state = t.snapshot().unwrap();
        let txn = |app: &str| {
            let app = app.to_owned();
            let log = t.log_store();
            async move { state.transaction_version(log.as_ref(), app).await.unwrap() }
        };
        assert_eq!(txn("clicktracker-node-2").await, Some(8));
        assert_eq!(txn("clicktracker-node-3").await, Some(7));
        assert!(txn(COMMITTER_APP).await.is_some());
    });
}

#[test]
fn a_lapsed_lease_is_taken_over_and_a_released_one_at_once() {
    rt().block_on(async {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let ttl = Duration::from_millis(400);
        let mut a = committer(&store, 1, ttl);
        let mut b = committer(&store, 2, ttl);
        assert!(a.pass().await.unwrap().holder);
        assert!(!b.pass().await.unwrap().holder);
        // The holder stops renewing (it died, or hangs): the lease lapses.
        tokio::time::sleep(ttl + Duration::from_millis(150)).await;
        stored(&store, 1, 1).await;
        let p = b.pass().await.unwrap();
        assert!(p.holder, "the lapsed lease is taken");
        assert_eq!(p.added, 1);
        // The old holder finds it has lost the lease.
        let p = a.pass().await.unwrap();
        assert!(!p.holder);
        // A holder that stops gives the lease up: the next look takes it without waiting.
        b.release().await;
        tokio::time::sleep(ttl / 4 + Duration::from_millis(20)).await;
        assert!(a.pass().await.unwrap().holder);
        // Old epochs are cleaned up as the lease moves on.
        let epochs: Vec<object_store::ObjectMeta> = store
            .list(Some(&ObjectPath::from(LEASE)))
            .try_collect()
            .await
            .unwrap();
        assert!(epochs.len() <= 3, "{epochs:?}");
    });
}

#[test]
fn a_committer_whose_lease_was_taken_over_is_fenced_and_commits_nothing() {
    rt().block_on(async {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let mut a = committer(&store, 1, LEASE_TTL);
        stored(&store, 1, 1).await;
        assert_eq!(a.pass().await.unwrap().added, 1);
        // Edge 2 takes the next epoch while edge 1 still believes its hold good (a clock that
        // runs ahead, a long pause), and commits.
        let hold = Hold {
            holder: "node-2".into(),
            expires_ms: now_ms() + 60_000,
        };
        let mut b = committer(&store, 2, LEASE_TTL);
        assert!(b.lease.create(2, &hold).await.unwrap());
        stored(&store, 2, 1).await;
        let p = b.pass().await.unwrap();
        assert!(p.holder);
        assert_eq!(p.added, 1);
        // Edge 1's next commit finds the later epoch in the log and stops.
        stored(&store, 1, 2).await;
        let e = a.pass().await.unwrap_err();
        assert!(matches!(e, TableError::Fenced { .. }), "{e}");
        assert_eq!(a.stats.holder.load(Ordering::Relaxed), 0);
        assert_eq!(markers(&store).await, 1, "the marker waits for the holder");
        assert_eq!(b.pass().await.unwrap().added, 1);
        assert_eq!(live(&store).await.len(), 3);
    });
}

#[test]
fn markers_a_dead_holder_left_behind_are_not_committed_again() {
    rt().block_on(async {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let m = stored(&store, 1, 1).await;
        // A holder committed the file and died before deleting its marker.
        let mut log = TableLog::new(Location::remote(Arc::clone(&store)), TableKind::Visits);
        log.commit(&[m.file()], "clicktracker-node-1", 1)
            .await
            .unwrap();
        stored(&store, 1, 2).await;
        let mut b = committer(&store, 2, LEASE_TTL);
        let p = b.pass().await.unwrap();
        assert_eq!((p.markers, p.added, p.known), (2, 1, 1));
        assert_eq!(markers(&store).await, 0);
        assert_eq!(live(&store).await.len(), 2);
    });
}

#[test]
fn a_marker_that_is_not_one_is_left_alone() {
    rt().block_on(async {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let junk = ObjectPath::from(format!("{PENDING}/visits/dt=2026-11-27/hour=07/x.json"));
        store
            .put(&junk, PutPayload::from_static(b"{not json"))
            .await
            .unwrap();
        stored(&store, 1, 1).await;
        let mut a = committer(&store, 1, LEASE_TTL);
        assert_eq!(a.pass().await.unwrap().added, 1);
        assert!(store.head(&junk).await.is_ok());
        assert_eq!(live(&store).await.len(), 1);
    });
}

/// Removes `rel` from the visits table, as a compaction that merged it away would.
async fn compacted_away(store: &Arc<dyn ObjectStore>, rel: &str) {
    use deltalake_core::kernel::transaction::CommitBuilder;
    use deltalake_core::kernel::{Action, Remove};
    use deltalake_core::protocol::DeltaOperation;
    let t = load(&Location::remote(Arc::clone(store)), TableKind::Visits)
        .await
        .unwrap()
        .unwrap();
    let state = t.snapshot().unwrap().clone();
    let remove = Action::Remove(Remove {
        path: rel.into(),
        deletion_timestamp: Some(now_ms()),
        data_change: false,
        ..Default::default()
    });
    CommitBuilder::default()
        .with_actions(vec![remove])
        .build(
            Some(&state),
            t.log_store(),
            DeltaOperation::Delete { predicate: None },
        )
        .await
        .unwrap();
}

#[test]
fn a_marker_put_again_after_its_commit_and_a_compaction_is_not_committed_again() {
    rt().block_on(async {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let mut a = committer(&store, 1, LEASE_TTL);
        let mut m = stored(&store, 1, 1).await;
        assert_eq!(a.pass().await.unwrap().added, 1);
        // Settle the tenure with a later commit, then merge the first file away.
        tokio::time::sleep(Duration::from_millis(CLOCK_GRAIN_MS as u64 + 100)).await;
        stored(&store, 1, 2).await;
        assert_eq!(a.pass().await.unwrap().added, 1);
        compacted_away(&store, "dt=2026-11-27/hour=07/1-1.parquet").await;
        tokio::time::sleep(Duration::from_millis(CLOCK_GRAIN_MS as u64 + 100)).await;
        // The edge's put of the first marker had failed on its way back and is retried.
        m.replayed = true;
        put_marker(&Target::remote(Arc::clone(&store)), &m)
            .await
            .unwrap();
        let p = a.pass().await.unwrap();
        assert_eq!((p.markers, p.added, p.known, p.checked), (1, 0, 1, 1));
        assert_eq!(live(&store).await.len(), 1);
        assert_eq!(markers(&store).await, 0);
    });
}

#[test]
fn a_new_holder_checks_what_an_earlier_one_left_until_its_own_first_commit_lands() {
    rt().block_on(async {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        // An earlier holder committed a file, died before deleting its marker, and a
        // compaction has merged the file away since.
        let m = stored(&store, 1, 1).await;
        let mut log = TableLog::new(Location::remote(Arc::clone(&store)), TableKind::Visits);
        log.commit(&[m.file()], "clicktracker-node-1", 1)
            .await
            .unwrap();
        compacted_away(&store, "dt=2026-11-27/hour=07/1-1.parquet").await;
        // The new holder's first pass fails: the store refuses commits.
        let fail = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let flaky: Arc<dyn ObjectStore> =
            Arc::new(crate::storage::uploader::tests::RefusesCommits {
                inner: Arc::clone(&store),
                fail: Arc::clone(&fail),
            });
        let mut b = committer(&flaky, 2, LEASE_TTL);
        stored(&store, 2, 1).await;
        assert!(b.pass().await.is_err());
        assert_eq!(b.stats.markers_pending.load(Ordering::Relaxed), 2);
        assert_eq!(
            b.stats.oldest_pending_ms.load(Ordering::Relaxed),
            1_795_766_399_000
        );
        // The fault passes: the next pass still checks the marker left behind.
        fail.store(false, Ordering::SeqCst);
        let p = b.pass().await.unwrap();
        assert_eq!((p.markers, p.added, p.known), (2, 1, 1));
        assert_eq!(
            live(&store).await,
            BTreeSet::from(["dt=2026-11-27/hour=07/2-1.parquet".to_owned()])
        );
        assert_eq!(b.stats.markers_pending.load(Ordering::Relaxed), 0);
        assert_eq!(b.stats.oldest_pending_ms.load(Ordering::Relaxed), 0);
        // Markers stored after the tenure's first commit go in unchecked.
        tokio::time::sleep(Duration::from_millis(CLOCK_GRAIN_MS as u64 + 100)).await;
        stored(&store, 2, 2).await;
        let p = b.pass().await.unwrap();
        assert_eq!((p.added, p.checked), (1, 0));
    });
}

#[test]
fn a_lease_lost_and_taken_back_is_a_new_tenure() {
    rt().block_on(async {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let ttl = Duration::from_millis(400);
        let mut a = committer(&store, 1, ttl);
        let mut b = committer(&store, 2, ttl);
        assert!(a.pass().await.unwrap().holder);
        let first = a.lease.tenure();
        // A pauses; B takes the lapsed lease, then lets it lapse in turn.
        tokio::time::sleep(ttl + Duration::from_millis(150)).await;
        assert!(b.pass().await.unwrap().holder);
        tokio::time::sleep(ttl + Duration::from_millis(150)).await;
        assert!(a.pass().await.unwrap().holder);
        assert_ne!(
            a.lease.tenure(),
            first,
            "not a renewal: B held it in between"
        );
        // A renewal keeps the tenure.
        let now = a.lease.tenure();
        tokio::time::sleep(ttl * 3 / 4).await;
        assert!(a.pass().await.unwrap().holder);
        assert_eq!(a.lease.tenure(), now);
    });
}
