use std::collections::BTreeSet;

use deltalake_core::kernel::Remove;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::{ObjectStoreExt, PutPayload};

use super::*;

fn file(path: &str, replayed: bool) -> NewFile {
    NewFile {
        path: ObjectPath::from(path),
        size: 10,
        rows: Some(3),
        modified_ms: 1_795_766_400_000,
        replayed,
    }
}

async fn live(store: &Arc<dyn ObjectStore>, kind: TableKind) -> BTreeSet<String> {
    let t = load(&at(store), kind).await.unwrap().expect("a table");
    t.snapshot()
        .unwrap()
        .log_data()
        .iter()
        .map(|f| f.path().into_owned())
        .collect()
}

fn at(store: &Arc<dyn ObjectStore>) -> Location {
    Location::remote(Arc::clone(store))
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn the_first_commit_creates_the_table_with_the_files_already_there() {
    rt().block_on(async {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        assert!(!exists(store.as_ref(), TableKind::Visits).await.unwrap());
        assert!(
            load(&at(&store), TableKind::Visits)
                .await
                .unwrap()
                .is_none()
        );
        // Written before the table format: taken in by the commit that creates the table.
        for p in [
            "visits/dt=2026-11-27/hour=07/1-1.parquet",
            "visits/dt=2026-11-27/hour=07/1-1.json",
            "visits/stray.parquet",
        ] {
            store
                .put(&ObjectPath::from(p), PutPayload::from_static(b"x"))
                .await
                .unwrap();
        }
        let mut log = TableLog::new(at(&store), TableKind::Visits);
        let c = log
            .commit(
                &[file("visits/dt=2026-11-27/hour=08/1-2.parquet", false)],
                "node-1",
                2,
            )
            .await
            .unwrap();
        assert_eq!((c.version, c.added, c.adopted), (Some(0), 1, 1));
        assert!(exists(store.as_ref(), TableKind::Visits).await.unwrap());
        assert!(
            !exists(store.as_ref(), TableKind::Conversions)
                .await
                .unwrap()
        );
        assert_eq!(
            live(&store, TableKind::Visits).await,
            BTreeSet::from([
                "dt=2026-11-27/hour=07/1-1.parquet".to_owned(),
                "dt=2026-11-27/hour=08/1-2.parquet".to_owned()
            ])
        );
        let t = load(&at(&store), TableKind::Visits).await.unwrap().unwrap();
        let state = t.snapshot().unwrap();
        assert_eq!(state.metadata().partition_columns(), &["dt", "hour"]);
        let f = state
            .log_data()
            .iter()
            .find(|f| f.path().ends_with("1-2.parquet"))
            .unwrap();
        assert_eq!((f.size(), f.num_records()), (10, Some(3)));
        assert_eq!(f.partition_values_map()["hour"], Some("08".to_owned()));
    });
}

#[test]
fn a_replayed_file_is_committed_once_and_never_after_its_removal() {
    rt().block_on(async {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let mut log = TableLog::new(at(&store), TableKind::Conversions);
        let f = "conversions/dt=2026-11-27/hour=07/2-9.parquet";
        let c = log.commit(&[file(f, false)], "node-2", 9).await.unwrap();
        assert_eq!(c.version, Some(0));
        // The segment uploaded again after a crash: the log already names the file.
        let c = log.commit(&[file(f, true)], "node-2", 9).await.unwrap();
        assert_eq!((c.version, c.added, c.known), (None, 0, 1));

        // A compaction removes it; a later replay must not bring it back.
        let t = load(&at(&store), TableKind::Conversions)
            .await
            .unwrap()
            .unwrap();
        let state = t.snapshot().unwrap().clone();
        let remove = Action::Remove(Remove {
            path: "dt=2026-11-27/hour=07/2-9.parquet".into(),
            deletion_timestamp: Some(1),
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
        let c = log.commit(&[file(f, true)], "node-2", 9).await.unwrap();
        assert_eq!((c.version, c.added, c.known), (None, 0, 1));
        assert!(live(&store, TableKind::Conversions).await.is_empty());
        // A file uploaded afresh goes in without a look at the log.
        let g = "conversions/dt=2026-11-27/hour=07/2-10.parquet";
        let c = log.commit(&[file(g, false)], "node-2", 10).await.unwrap();
        assert_eq!((c.version, c.added), (Some(2), 1));
    });
}

#[test]
fn two_writers_at_once_both_land_and_the_loser_checks_again() {
    rt().block_on(async {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let mut a = TableLog::new(at(&store), TableKind::Visits);
        let mut b = TableLog::new(at(&store), TableKind::Visits);
        a.commit(
            &[file("visits/dt=2026-11-27/hour=07/1-1.parquet", false)],
            "node-1",
            1,
        )
        .await
        .unwrap();
        // The table exists: b commits on top of it.
        let c = b
            .commit(
                &[file("visits/dt=2026-11-27/hour=07/2-1.parquet", false)],
                "node-2",
                1,
            )
            .await
            .unwrap();
        assert_eq!((c.version, c.conflicts), (Some(1), 0));
        // a's state is at version 0: it loses the race for version 1, reloads, checks and
        // takes version 2.
        let c = a
            .commit(
                &[file("visits/dt=2026-11-27/hour=07/1-2.parquet", false)],
                "node-1",
                2,
            )
            .await
            .unwrap();
        assert_eq!((c.version, c.added, c.conflicts), (Some(2), 1, 1));
        assert_eq!(live(&store, TableKind::Visits).await.len(), 3);
    });
}

#[test]
fn a_local_store_holds_the_log_beside_the_hive_directories() {
    rt().block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let store: Arc<dyn ObjectStore> =
            Arc::new(LocalFileSystem::new_with_prefix(tmp.path()).unwrap());
        let local = Location::new(Arc::clone(&store), Some(tmp.path())).unwrap();
        let mut log = TableLog::new(local.clone(), TableKind::Visits);
        log.commit(
            &[file("visits/dt=2026-11-27/hour=07/1-1.parquet", false)],
            "node-1",
            1,
        )
        .await
        .unwrap();
        let json = |v: u64| tmp.path().join(format!("visits/_delta_log/{v:020}.json"));
        assert!(json(0).is_file());
        // Versions listed in order however the directory lists them.
        for v in 1..=12 {
            let mut log = TableLog::new(local.clone(), TableKind::Visits);
            let c = log
                .commit(
                    &[file(
                        &format!("visits/dt=2026-11-27/hour=07/1-{}.parquet", v + 1),
                        false,
                    )],
                    "node-1",
                    v as i64 + 1,
                )
                .await
                .unwrap();
            assert_eq!(c.version, Some(v));
            assert!(json(v).is_file());
        }
        let t = load(&local, TableKind::Visits).await.unwrap().unwrap();
        assert_eq!(t.snapshot().unwrap().log_data().num_files(), 13);
    });
}

#[test]
fn files_outside_the_hive_directories_are_refused() {
    rt().block_on(async {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let mut log = TableLog::new(at(&store), TableKind::Visits);
        for bad in [
            "conversions/dt=2026-11-27/hour=07/1-1.parquet",
            "visits/1-1.parquet",
            "visits/dt=2026-11-27/1-1.parquet",
            "visits/dt=/hour=07/1-1.parquet",
        ] {
            let e = log
                .commit(&[file(bad, false)], "node-1", 1)
                .await
                .unwrap_err();
            assert!(e.to_string().contains(bad), "{e}");
        }
        assert!(!exists(store.as_ref(), TableKind::Visits).await.unwrap());
    });
}

#[test]
fn both_tables_have_delta_schemas() {
    for kind in [TableKind::Visits, TableKind::Conversions] {
        let fields = delta_schema(&kind.schema()).unwrap();
        assert_eq!(fields.len(), kind.schema().fields().len() + 2);
        assert_eq!(fields.last().unwrap().name(), "hour");
    }
}

#[test]
fn losing_the_race_to_create_the_table_commits_on_top_of_the_winner() {
    rt().block_on(async {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let mut a = TableLog::new(at(&store), TableKind::Visits);
        let mut b = TableLog::new(at(&store), TableKind::Visits);
        let c = a
            .commit(
                &[file("visits/dt=2026-11-27/hour=07/1-1.parquet", false)],
                "node-1",
                1,
            )
            .await
            .unwrap();
        assert_eq!(c.version, Some(0));
        let id = |t: &DeltaTable| t.snapshot().unwrap().metadata().id().to_owned();
        let created = id(&load(&at(&store), TableKind::Visits).await.unwrap().unwrap());
        // b saw no table and creates it too: the table is there by now, and b must not
        // create it again as version 1. (The narrower race, both past delta-rs' own look for
        // a table, is why creation makes no retries of its own.)
        let b_file = b
            .add_action(&file("visits/dt=2026-11-27/hour=07/2-1.parquet", false))
            .unwrap();
        assert!(b.create(&[b_file], &[]).await.is_err());
        let t = load(&at(&store), TableKind::Visits).await.unwrap().unwrap();
        assert_eq!(t.version(), Some(0));
        // Its files go in as an ordinary commit.
        let c = b
            .commit(
                &[file("visits/dt=2026-11-27/hour=07/2-1.parquet", false)],
                "node-2",
                1,
            )
            .await
            .unwrap();
        assert_eq!((c.version, c.added), (Some(1), 1));
        let t = load(&at(&store), TableKind::Visits).await.unwrap().unwrap();
        assert_eq!(id(&t), created, "one table, created once");
        assert_eq!(live(&store, TableKind::Visits).await.len(), 2);
    });
}
