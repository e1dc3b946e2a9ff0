use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{Array, AsArray, StringArray};
use arrow::datatypes::TimestampMillisecondType;
use futures::{StreamExt, TryStreamExt};
use object_store::memory::InMemory;
use object_store::{ObjectStore, PutPayload};

use super::*;
use crate::storage::columns::Builder;
use crate::storage::columns::tests::visit;
use crate::storage::store::encode_parquet;
use crate::storage::table::{NewFile, TableLog};

// 2026-11-27T07:00:00Z: the hour the files are in.
const H7: i64 = 1_795_762_800_000;
const MIN: i64 = 60_000;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A visits file of `rows` visits at `ts`, to campaigns named after `campaigns` in turn.
fn visits_file(first: u32, rows: u32, ts: i64, campaigns: &[&str]) -> Bytes {
    let mut b = Builder::new(TableKind::Visits);
    for n in first..first + rows {
        b.append(&visit(ts as u64 + u64::from(n), n));
    }
    let batch = b.finish().unwrap();
    let names: Vec<&str> = (0..rows as usize)
        .map(|i| campaigns[i % campaigns.len()])
        .collect();
    let i = batch.schema().index_of("campaign_id").unwrap();
    let mut columns = batch.columns().to_vec();
    columns[i] = Arc::new(StringArray::from(names));
    let batch = RecordBatch::try_new(batch.schema(), columns).unwrap();
    Bytes::from(encode_parquet(TableKind::Visits, &batch).unwrap())
}

/// Stores `n` files of 3 visits each in the hour at `ts` and commits them as an edge does.
async fn edge_files(store: &Arc<dyn ObjectStore>, node: u16, from: u32, n: u32, ts: i64) {
    let mut log = TableLog::new(Location::remote(Arc::clone(store)), TableKind::Visits);
    let day = chrono::DateTime::from_timestamp_millis(ts).unwrap();
    let mut files = Vec::new();
    for seg in from..from + n {
        let path = ObjectPath::from(format!(
            "visits/dt={}/hour={}/{node}-{seg}.parquet",
            day.format("%Y-%m-%d"),
            day.format("%H")
        ));
        let bytes = visits_file(seg * 3, 3, ts, &["zeta", "alpha", "mid"]);
        let size = bytes.len() as u64;
        store.put(&path, PutPayload::from(bytes)).await.unwrap();
        files.push(NewFile {
            path,
            size,
            rows: Some(3),
            modified_ms: ts,
            replayed: false,
        });
    }
    log.commit(
        &files,
        &format!("clicktracker-node-{node}"),
        i64::from(from + n),
    )
    .await
    .unwrap();
}

/// The table's live files, by name, with their rows.
async fn table_rows(store: &Arc<dyn ObjectStore>) -> BTreeMap<String, Vec<RecordBatch>> {
    let at = Location::remote(Arc::clone(store));
    let t = load(&at, TableKind::Visits).await.unwrap().unwrap();
    let mut out = BTreeMap::new();
    for f in live(&t, TableKind::Visits).unwrap() {
        let path = ObjectPath::from(format!("visits/{}", f.rel));
        let bytes = store.get(&path).await.unwrap().bytes().await.unwrap();
        out.insert(f.rel, read(bytes, &TableKind::Visits.schema()).unwrap());
    }
    out
}

/// Every event id the table holds, in the order stored, with repeats.
fn ids(files: &BTreeMap<String, Vec<RecordBatch>>) -> Vec<String> {
    let mut out = Vec::new();
    for batches in files.values() {
        for b in batches {
            let col = b.column_by_name("event_id").unwrap().as_string::<i32>();
            out.extend(col.iter().map(|v| v.unwrap().to_owned()));
        }
    }
    out
}

fn opts(now_ms: i64) -> Options {
    Options {
        now_ms,
        ..Options::default()
    }
}

#[test]
fn a_settled_hours_small_files_become_one_file_sorted_by_campaign_then_time() {
    rt().block_on(async {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        edge_files(&store, 1, 0, 6, H7).await;
        edge_files(&store, 2, 0, 4, H7 + 20 * MIN).await;
        let before = table_rows(&store).await;
        let mut expected = ids(&before);
        expected.sort();
        assert_eq!(expected.len(), 30);

        let at = Location::remote(Arc::clone(&store));
        let out = run(&at, TableKind::Visits, &opts(H7 + 2 * 60 * MIN))
            .await
            .unwrap();
        assert_eq!(
            (
                out.files_before,
                out.files_after,
                out.merged,
                out.written,
                out.rows
            ),
            (10, 1, 10, 1, 30)
        );
        let after = table_rows(&store).await;
        let name = after.keys().next().unwrap();
        assert!(
            name.starts_with("dt=2026-11-27/hour=07/c-"),
            "the merged file sits in its hour: {name}"
        );
        let mut got = ids(&after);
        got.sort();
        assert_eq!(got, expected, "every row once");

        // Sorted by campaign, then time.
        let batch = concat_batches(&TableKind::Visits.schema(), &after[name]).unwrap();
        let camp = batch
            .column_by_name("campaign_id")
            .unwrap()
            .as_string::<i32>();
        let ts = batch
            .column_by_name("ts")
            .unwrap()
            .as_primitive::<TimestampMillisecondType>();
        let keys: Vec<(&str, i64)> = (0..batch.num_rows())
            .map(|i| (camp.value(i), ts.value(i)))
            .collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
        assert_eq!(keys[0].0, "alpha");

        // The small files stay in the store for readers of older snapshots.
        let stored = store.list(Some(&ObjectPath::from("visits/dt=2026-11-27")));
        assert_eq!(stored.collect::<Vec<_>>().await.len(), 11);

        // Nothing left to do.
        let again = run(&at, TableKind::Visits, &opts(H7 + 2 * 60 * MIN))
            .await
            .unwrap();
        assert_eq!(
            (again.merged, again.written, again.version),
            (0, 0, out.version)
        );
    });
}

#[test]
fn an_hour_being_written_is_merged_in_steps_and_its_merged_files_once_it_settles() {
    rt().block_on(async {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let at = Location::remote(Arc::clone(&store));
        let during = H7 + 30 * MIN;
        edge_files(&store, 1, 0, 7, H7).await;
        let out = run(&at, TableKind::Visits, &opts(during)).await.unwrap();
        assert_eq!(out.written, 0, "7 small files: fewer than min_files");

        edge_files(&store, 1, 7, 1, H7).await;
        let out = run(&at, TableKind::Visits, &opts(during)).await.unwrap();
        assert_eq!((out.merged, out.written, out.files_after), (8, 1, 1));

        edge_files(&store, 1, 8, 8, H7).await;
        let out = run(&at, TableKind::Visits, &opts(during)).await.unwrap();
        assert_eq!(
            (out.merged, out.written, out.files_after),
            (8, 1, 2),
            "the merged file waits for the hour to settle"
        );

        // Merged files are merged in turn once there are eight of them.
        for step in 0..6u32 {
            edge_files(&store, 2, 100 + step * 8, 8, H7).await;
            let out = run(&at, TableKind::Visits, &opts(during)).await.unwrap();
            assert_eq!((out.written, out.files_after), (1, 3 + step as usize));
        }
        let out = run(&at, TableKind::Visits, &opts(during)).await.unwrap();
        assert_eq!((out.merged, out.written, out.files_after), (8, 1, 1));
        assert_eq!(ids(&table_rows(&store).await).len(), 64 * 3);
        edge_files(&store, 1, 16, 8, H7).await;
        let out = run(&at, TableKind::Visits, &opts(during)).await.unwrap();
        assert_eq!((out.merged, out.written, out.files_after), (8, 1, 2));

        // Settled: end of the hour plus ten minutes.
        let settled = H7 + 70 * MIN;
        let out = run(&at, TableKind::Visits, &opts(settled - 1))
            .await
            .unwrap();
        assert_eq!(out.written, 0);
        let out = run(&at, TableKind::Visits, &opts(settled)).await.unwrap();
        assert_eq!((out.merged, out.written, out.files_after), (2, 1, 1));
        assert_eq!(ids(&table_rows(&store).await).len(), 72 * 3);
    });
}

#[test]
fn a_compaction_that_loses_its_hour_to_another_leaves_it_and_deletes_its_file() {
    rt().block_on(async {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let at = Location::remote(Arc::clone(&store));
        edge_files(&store, 1, 0, 4, H7).await;
        let now = H7 + 2 * 60 * MIN;
        // This pass read the log before the other one committed.
        let mut stale = load(&at, TableKind::Visits).await.unwrap().unwrap();
        let o = opts(now);
        let bins = plan(&live(&stale, TableKind::Visits).unwrap(), &o.policy, now);
        assert_eq!(bins.len(), 1);

        let other = run(&at, TableKind::Visits, &o).await.unwrap();
        assert_eq!(other.written, 1);
        // An edge commits meanwhile, too.
        edge_files(&store, 2, 0, 1, H7).await;

        let mut out = Outcome::default();
        let mut pass = Pass {
            at: &at,
            kind: TableKind::Visits,
            opts: &o,
            seq: 100,
        };
        for (dir, bins) in bins {
            pass.compact_hour(&mut stale, &dir, bins, &mut out)
                .await
                .unwrap();
        }
        assert_eq!((out.abandoned, out.written), (1, 0));
        let rows = table_rows(&store).await;
        assert_eq!(ids(&rows).len(), 5 * 3, "no row twice, none missing");
        // Its merged file is gone: the store holds 5 edge files and the winner's.
        let stored: Vec<_> = store
            .list(Some(&ObjectPath::from("visits/dt=2026-11-27")))
            .collect()
            .await;
        assert_eq!(stored.len(), 6);

        // A commit on top of an edge's append is no conflict: it goes through.
        edge_files(&store, 3, 0, 2, H7).await;
        let mut fresh = load(&at, TableKind::Visits).await.unwrap().unwrap();
        let bins = plan(&live(&fresh, TableKind::Visits).unwrap(), &o.policy, now);
        edge_files(&store, 4, 0, 1, H7).await;
        let mut out = Outcome::default();
        for (dir, bins) in bins {
            pass.compact_hour(&mut fresh, &dir, bins, &mut out)
                .await
                .unwrap();
        }
        assert_eq!((out.abandoned, out.written), (0, 1));
        let rows = table_rows(&store).await;
        assert_eq!(ids(&rows).len(), 8 * 3);
        assert_eq!(rows.len(), 2, "the merged file and node 4's");
    });
}

#[test]
fn retention_drops_old_days_and_the_vacuum_deletes_removed_files_later() {
    rt().block_on(async {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let at = Location::remote(Arc::clone(&store));
        let day = 24 * 60 * MIN;
        edge_files(&store, 1, 0, 2, H7 - 7 * day).await;
        edge_files(&store, 1, 2, 2, H7 - 3 * day).await;
        edge_files(&store, 1, 4, 2, H7).await;
        let now = H7 + 2 * 60 * MIN;
        let o = Options {
            retain_days: Some(3),
            vacuum_after_ms: Some(60 * MIN),
            ..opts(now)
        };
        let out = run(&at, TableKind::Visits, &o).await.unwrap();
        // 2026-11-20 goes; 2026-11-24 is exactly three days back and stays.
        assert_eq!((out.dropped_files, out.dropped_days), (2, 1));
        assert_eq!(out.vacuumed, 0, "removed just now");
        let rows = table_rows(&store).await;
        assert!(
            rows.keys().all(|k| !k.starts_with("dt=2026-11-20")),
            "{rows:?}"
        );

        // A vacuum an hour on deletes the dropped files and the merged-away ones.
        let later = Options {
            now_ms: now + 61 * MIN,
            ..o.clone()
        };
        let out = run(&at, TableKind::Visits, &later).await.unwrap();
        assert_eq!(out.vacuumed, 2 + 2 + 2, "{out:?}");
        let stored: Vec<String> = store
            .list(Some(&ObjectPath::from("visits")))
            .map_ok(|m| m.location.to_string())
            .try_collect::<Vec<_>>()
            .await
            .unwrap()
            .into_iter()
            .filter(|p| !p.contains("_delta_log"))
            .collect();
        assert_eq!(stored.len(), 2, "one merged file a day kept: {stored:?}");
    });
}

#[test]
fn files_with_other_columns_are_conformed_or_left_alone() {
    let schema = TableKind::Visits.schema();
    let mut b = Builder::new(TableKind::Visits);
    b.append(&visit(H7 as u64, 1));
    let full = b.finish().unwrap();
    // Written before `offer_link_id` existed: it reads as null.
    let i = schema.index_of("offer_link_id").unwrap();
    let mut fields: Vec<_> = schema.fields().iter().cloned().collect();
    let mut columns = full.columns().to_vec();
    fields.remove(i);
    columns.remove(i);
    let older = RecordBatch::try_new(
        Arc::new(arrow::datatypes::Schema::new(fields.clone())),
        columns.clone(),
    )
    .unwrap();
    let conformed = conform(older, &schema).unwrap();
    assert_eq!(conformed.schema(), schema);
    assert!(conformed.column(i).is_null(0));
    // A column the table does not have: merging would lose it.
    fields.push(Arc::new(arrow::datatypes::Field::new(
        "extra",
        arrow::datatypes::DataType::Int32,
        true,
    )));
    columns.push(Arc::new(arrow::array::Int32Array::from(vec![1])));
    let newer =
        RecordBatch::try_new(Arc::new(arrow::datatypes::Schema::new(fields)), columns).unwrap();
    assert!(conform(newer, &schema).is_none());
}
