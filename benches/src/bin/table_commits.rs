//! `table_commits`: how a Delta Lake table (delta-rs, without DataFusion) takes appends from
//! many edges at once. `--edges` simulated edges (default 100) each write one small Parquet
//! file into the table's `dt=…/hour=…` partition every `--interval-ms` (default 3 000, each
//! sleep jittered ±50 %) for `--seconds` (default 60), and commit it as a blind append: one
//! `add` action, the edge's own application transaction (`txn`, its id and a sequence
//! number), log clean-up off, delta-rs' checkpoint every 100 versions on. Commits are
//! optimistic: a writer that finds its version taken re-reads the commits in between, checks
//! them for conflicts and tries the next one, up to `--max-retries` (default 50) times.
//!
//! With `--files-per-commit K`, each commit adds K files: one edge then stands for a single
//! committer gathering the files of K edges.
//!
//! With `--markers`, the edges commit nothing: each stores its file and a marker beside it,
//! as the sink's uploader does, and one committer (the sink's own, holding the store's
//! lease) runs a pass every `--commit-ms` (default 1 000), as the edge holding the lease
//! does. Reported: the passes' durations, markers per pass, and each file's wait from its
//! marker to its commit.
//!
//! Then a fresh reader loads the table, and the files it lists are checked against the
//! commits acknowledged: none missing, none extra. Prints one JSON object:
//! commits made and failed, commits per second, commit latency percentiles, retries, the
//! versions and checkpoints written, and the reader's load time.
//!
//! `cargo build --profile fast -p benches --bin table_commits` then
//! `target/fast/table_commits [--dir DIR | --s3 s3://BUCKET/PREFIX] [--edges N]
//! [--interval-ms MS] [--seconds S] [--files-per-commit K]`; with `--s3`, the `AWS_*`
//! variables (`AWS_ENDPOINT`, `AWS_ALLOW_HTTP=true` for a local server such as moto's).

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use deltalake_core::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake_core::kernel::{Action, Add, DataType as DeltaType, StructField, Transaction};
use deltalake_core::logstore::{
    LogStore, LogStoreFactory, ObjectStoreRef, StorageConfig, default_logstore, logstore_factories,
};
use deltalake_core::protocol::{DeltaOperation, SaveMode};
use deltalake_core::table::state::DeltaTableState;
use deltalake_core::{DeltaResult, DeltaTableBuilder, ObjectStore, Path};
use object_store::ObjectStoreExt;
use object_store::aws::AmazonS3Builder;
use parquet::arrow::ArrowWriter;
use url::Url;

struct Opts {
    dir: PathBuf,
    /// `s3://bucket/prefix`: the table goes there instead of `--dir` (credentials, region and
    /// endpoint from the usual `AWS_*` variables).
    s3: Option<String>,
    edges: usize,
    interval_ms: u64,
    seconds: u64,
    max_retries: usize,
    /// Files each commit adds: with one edge, a committer that gathers many edges' files into
    /// one commit.
    files_per_commit: usize,
    /// Edges write markers and one committer commits them.
    markers: bool,
    commit_ms: u64,
}

fn opts() -> Opts {
    let mut o = Opts {
        dir: std::env::temp_dir().join(format!("table-commits-{}", std::process::id())),
        s3: None,
        edges: 100,
        interval_ms: 3_000,
        seconds: 60,
        max_retries: 50,
        files_per_commit: 1,
        markers: false,
        commit_ms: 1_000,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut v = || args.next().unwrap_or_else(|| panic!("{a} needs a value"));
        match a.as_str() {
            "--dir" => o.dir = PathBuf::from(v()),
            "--s3" => o.s3 = Some(v()),
            "--edges" => o.edges = v().parse().expect("--edges N"),
            "--interval-ms" => o.interval_ms = v().parse().expect("--interval-ms MS"),
            "--seconds" => o.seconds = v().parse().expect("--seconds S"),
            "--max-retries" => o.max_retries = v().parse().expect("--max-retries N"),
            "--files-per-commit" => o.files_per_commit = v().parse().expect("--files-per-commit N"),
            "--markers" => o.markers = true,
            "--commit-ms" => o.commit_ms = v().parse().expect("--commit-ms MS"),
            other => panic!("unknown flag {other}"),
        }
    }
    o
}

/// What one edge did.
#[derive(Default)]
struct Outcome {
    /// Paths of the files whose commits were acknowledged.
    committed: Vec<String>,
    latencies: Vec<Duration>,
    retries: Vec<u64>,
    failures: Vec<String>,
    checkpoints: usize,
}

/// A small Parquet file: `rows` rows of (event_id, n).
fn parquet_file(edge: usize, seq: u64, rows: usize) -> Vec<u8> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("event_id", DataType::Utf8, false),
        Field::new("n", DataType::Int64, false),
    ]));
    let ids: Vec<String> = (0..rows)
        .map(|i| format!("{edge:04}-{seq:06}-{i:04}"))
        .collect();
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![
            Arc::new(StringArray::from(ids)),
            Arc::new(Int64Array::from_iter_values(0..rows as i64)),
        ],
    )
    .expect("a batch");
    let mut out = Vec::new();
    let mut w = ArrowWriter::try_new(&mut out, schema, None).expect("a writer");
    w.write(&batch).expect("written");
    w.close().expect("closed");
    out
}

/// Where the table is: its URL, and for S3 the bucket's store (delta-rs' own S3 support is a
/// crate of its own; its commits need only a store that honours `PutMode::Create`).
#[derive(Clone)]
struct Location {
    url: Url,
    bucket: Option<Arc<dyn ObjectStore>>,
}

impl Location {
    fn builder(&self) -> DeltaTableBuilder {
        let b = DeltaTableBuilder::from_url(self.url.clone()).expect("a table URL");
        match &self.bucket {
            Some(store) => b.with_storage_backend(Arc::clone(store), self.url.clone()),
            None => b,
        }
    }
}

/// Delta's default log store (put-if-absent commits) for `s3://`.
struct S3Logs;

impl LogStoreFactory for S3Logs {
    fn with_options(
        &self,
        prefixed_store: ObjectStoreRef,
        root_store: ObjectStoreRef,
        location: &Url,
        options: &StorageConfig,
    ) -> DeltaResult<Arc<dyn LogStore>> {
        Ok(default_logstore(
            prefixed_store,
            root_store,
            location,
            options,
        ))
    }
}

async fn edge(
    id: usize,
    at: Location,
    o: Arc<Opts>,
    start: Instant,
    mut rng: fastrand::Rng,
) -> Outcome {
    let mut out = Outcome::default();
    let mut table = at.builder().load().await.expect("the table loads");
    let store = table.log_store().object_store(None);
    let mut state: DeltaTableState = table.snapshot().expect("a snapshot").clone();
    let app = format!("edge-{id}");
    let end = start + Duration::from_secs(o.seconds);
    let mut seq = 0u64;
    // Edges start spread over one interval, as independent processes would.
    tokio::time::sleep(Duration::from_millis(rng.u64(0..o.interval_ms.max(1)))).await;
    while Instant::now() < end {
        seq += 1;
        let now = chrono::Utc::now();
        let (dt, hour) = (
            now.format("%Y-%m-%d").to_string(),
            now.format("%H").to_string(),
        );
        let rows = 100;
        let mut adds = Vec::with_capacity(o.files_per_commit);
        let mut paths = Vec::with_capacity(o.files_per_commit);
        for f in 0..o.files_per_commit {
            let path = format!("dt={dt}/hour={hour}/{id:04}-{seq:06}-{f:04}.parquet");
            let bytes = parquet_file(id, seq, rows);
            let size = bytes.len() as i64;
            store
                .put(&Path::from(path.as_str()), bytes.into())
                .await
                .expect("the file is written");
            adds.push(Action::Add(Add {
                path: path.clone(),
                partition_values: HashMap::from([
                    ("dt".to_owned(), Some(dt.clone())),
                    ("hour".to_owned(), Some(hour.clone())),
                ]),
                size,
                modification_time: now.timestamp_millis(),
                data_change: true,
                stats: Some(format!("{{\"numRecords\":{rows}}}")),
                ..Default::default()
            }));
            paths.push(path);
        }
        let props = CommitProperties::default()
            .with_max_retries(o.max_retries)
            .with_cleanup_expired_logs(Some(false))
            .with_application_transaction(Transaction::new(&app, seq as i64));
        let t = Instant::now();
        let commit = CommitBuilder::from(props)
            .with_actions(adds)
            .build(
                Some(&state),
                table.log_store(),
                DeltaOperation::Write {
                    mode: SaveMode::Append,
                    partition_by: Some(vec!["dt".into(), "hour".into()]),
                    predicate: None,
                },
            )
            .await;
        match commit {
            Ok(done) => {
                out.latencies.push(t.elapsed());
                out.retries.push(done.metrics.num_retries);
                out.checkpoints += usize::from(done.metrics.new_checkpoint_created);
                out.committed.extend(paths);
                state = done.snapshot();
            }
            Err(e) => {
                out.failures.push(e.to_string());
                table.update_state().await.expect("the table reloads");
                state = table.snapshot().expect("a snapshot").clone();
            }
        }
        let half = o.interval_ms / 2;
        tokio::time::sleep(Duration::from_millis(half + rng.u64(0..=o.interval_ms))).await;
    }
    out
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

/// An edge of the `--markers` mode: a file and its marker every interval.
async fn marking_edge(
    id: usize,
    target: sink::storage::store::Target,
    o: Arc<Opts>,
    start: Instant,
    mut rng: fastrand::Rng,
) -> Vec<String> {
    let mut written = Vec::new();
    let end = start + Duration::from_secs(o.seconds);
    let mut seq = 0u64;
    tokio::time::sleep(Duration::from_millis(rng.u64(0..o.interval_ms.max(1)))).await;
    while Instant::now() < end {
        seq += 1;
        let now = chrono::Utc::now();
        let rel = format!(
            "dt={}/hour={}/{id}-{seq:06}.parquet",
            now.format("%Y-%m-%d"),
            now.format("%H")
        );
        let bytes = parquet_file(id, seq, 100);
        let path = Path::from(format!("visits/{rel}"));
        let size = bytes.len() as u64;
        target
            .store
            .put(&path, bytes.into())
            .await
            .expect("the file is written");
        target.sync(&path).expect("the file is synced");
        let marker = sink::storage::committer::Marker {
            path: path.to_string(),
            size,
            rows: Some(100),
            modified_ms: now.timestamp_millis(),
            replayed: false,
            node: id as u16,
            segment: seq,
            // The wait measured is from here.
            oldest_ms: Some(chrono::Utc::now().timestamp_millis()),
        };
        sink::storage::committer::put_marker(&target, &marker)
            .await
            .expect("the marker is written");
        written.push(rel);
        let half = o.interval_ms / 2;
        tokio::time::sleep(Duration::from_millis(half + rng.u64(0..=o.interval_ms))).await;
    }
    written
}

/// The `--markers` mode: `--edges` edges mark files, one committer commits them.
fn markers(o: Arc<Opts>) {
    use sink::storage::committer::{Committer, LEASE_TTL};
    let target = match &o.s3 {
        Some(s3) => sink::storage::store::Target::open(s3).expect("the bucket's store"),
        None => {
            std::fs::create_dir_all(&o.dir).expect("the store's directory is made");
            let dir = o.dir.canonicalize().expect("an absolute directory");
            sink::storage::store::Target::open(&format!("file://{}", dir.display()))
                .expect("the store")
        }
    };
    let tables = sink::storage::table::Location::new(
        Arc::clone(&target.store),
        target.local_root.as_deref(),
    )
    .expect("the tables");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(async {
        let start = Instant::now();
        let mut seeds = fastrand::Rng::with_seed(7);
        let edges: Vec<_> = (0..o.edges)
            .map(|i| {
                tokio::spawn(marking_edge(
                    i + 1,
                    target.clone(),
                    Arc::clone(&o),
                    start,
                    fastrand::Rng::with_seed(seeds.u64(..)),
                ))
            })
            .collect();
        let mut committer = Committer::new(tables.clone(), "node-bench".into(), LEASE_TTL);
        let mut passes: Vec<Duration> = Vec::new();
        let mut per_pass: Vec<usize> = Vec::new();
        let mut waits: Vec<Duration> = Vec::new();
        let mut failures: Vec<String> = Vec::new();
        let mut commits = 0;
        let end = start + Duration::from_secs(o.seconds);
        let mut last_round = false;
        loop {
            let t = Instant::now();
            match committer.pass().await {
                Ok(p) => {
                    passes.push(t.elapsed());
                    per_pass.push(p.markers);
                    commits += p.commits;
                    if let Some(oldest) = p.oldest_ms {
                        let now = chrono::Utc::now().timestamp_millis();
                        waits.push(Duration::from_millis((now - oldest).max(0) as u64));
                    }
                    if last_round && p.markers == 0 {
                        break;
                    }
                }
                Err(e) => failures.push(e.to_string()),
            }
            if Instant::now() >= end && edges.iter().all(|e| e.is_finished()) {
                last_round = true;
            }
            tokio::time::sleep(Duration::from_millis(o.commit_ms).saturating_sub(t.elapsed()))
                .await;
        }
        let elapsed = start.elapsed();
        let mut written = BTreeSet::new();
        for e in edges {
            written.extend(e.await.expect("an edge ends"));
        }
        let t = Instant::now();
        let reader = sink::storage::table::load(&tables, sink::storage::columns::TableKind::Visits)
            .await
            .expect("the table loads")
            .expect("a table");
        let load_ms = t.elapsed().as_secs_f64() * 1000.0;
        let listed: BTreeSet<String> = reader
            .snapshot()
            .expect("a snapshot")
            .log_data()
            .iter()
            .map(|f| f.path().into_owned())
            .collect();
        passes.sort();
        waits.sort();
        let report = serde_json::json!({
            "mode": "markers",
            "edges": o.edges,
            "interval_ms": o.interval_ms,
            "commit_ms": o.commit_ms,
            "seconds": elapsed.as_secs_f64(),
            "files": written.len(),
            "files_per_s": written.len() as f64 / elapsed.as_secs_f64(),
            "passes": passes.len(),
            "commits": commits,
            "failed": failures.len(),
            "first_failure": failures.first(),
            "markers_per_pass_max": per_pass.iter().max(),
            "pass_ms": {
                "p50": percentile(&passes, 0.5),
                "p99": percentile(&passes, 0.99),
                "max": percentile(&passes, 1.0),
            },
            "oldest_marker_wait_ms": {
                "p50": percentile(&waits, 0.5),
                "p99": percentile(&waits, 0.99),
                "max": percentile(&waits, 1.0),
            },
            "version": reader.version(),
            "reader_load_ms": load_ms,
            "missing": written.difference(&listed).count(),
            "extra": listed.difference(&written).count(),
        });
        println!("{report}");
    });
}

fn main() {
    let o = Arc::new(opts());
    if o.markers {
        return markers(o);
    }
    let at = match &o.s3 {
        Some(s3) => {
            let url =
                Url::parse(&format!("{}/visits/", s3.trim_end_matches('/'))).expect("an s3:// URL");
            let bucket = AmazonS3Builder::from_env()
                .with_url(s3.as_str())
                .build()
                .expect("the bucket's store");
            logstore_factories().insert(Url::parse("s3://").expect("a scheme"), Arc::new(S3Logs));
            Location {
                url,
                bucket: Some(Arc::new(bucket)),
            }
        }
        None => {
            std::fs::create_dir_all(o.dir.join("visits")).expect("the table directory is made");
            let dir = o.dir.canonicalize().expect("an absolute directory");
            Location {
                url: Url::from_directory_path(dir.join("visits")).expect("a file URL"),
                bucket: None,
            }
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(async {
        let table = at.builder().build().expect("a table");
        table
            .create()
            .with_columns([
                StructField::new("event_id", DeltaType::STRING, false),
                StructField::new("n", DeltaType::LONG, false),
                StructField::new("dt", DeltaType::STRING, true),
                StructField::new("hour", DeltaType::STRING, true),
            ])
            .with_partition_columns(["dt", "hour"])
            .with_save_mode(SaveMode::Ignore)
            .await
            .expect("the table is created");

        let start = Instant::now();
        let mut seeds = fastrand::Rng::with_seed(7);
        let local = tokio::task::LocalSet::new();
        let outcomes: Vec<Outcome> = local
            .run_until(async {
                let edges: Vec<_> = (0..o.edges)
                    .map(|i| {
                        tokio::task::spawn_local(edge(
                            i,
                            at.clone(),
                            Arc::clone(&o),
                            start,
                            fastrand::Rng::with_seed(seeds.u64(..)),
                        ))
                    })
                    .collect();
                let mut v = Vec::new();
                for e in edges {
                    v.push(e.await.expect("an edge ends"));
                }
                v
            })
            .await;
        let elapsed = start.elapsed();

        let t = Instant::now();
        let reader = at.builder().load().await.expect("the table loads");
        let load_ms = t.elapsed().as_secs_f64() * 1000.0;
        let listed: Vec<String> = reader
            .get_file_uris()
            .expect("its files")
            .map(|u| {
                u.rsplit_once("/visits/")
                    .map_or(u.clone(), |(_, p)| p.to_owned())
            })
            .collect();
        let listed_set: BTreeSet<&str> = listed.iter().map(String::as_str).collect();
        let committed: BTreeSet<&str> = outcomes
            .iter()
            .flat_map(|o| o.committed.iter().map(String::as_str))
            .collect();
        let mut latencies: Vec<Duration> =
            outcomes.iter().flat_map(|o| o.latencies.clone()).collect();
        latencies.sort();
        let retries: Vec<u64> = outcomes.iter().flat_map(|o| o.retries.clone()).collect();
        let failures: Vec<&String> = outcomes.iter().flat_map(|o| &o.failures).collect();
        let report = serde_json::json!({
            "edges": o.edges,
            "interval_ms": o.interval_ms,
            "files_per_commit": o.files_per_commit,
            "seconds": elapsed.as_secs_f64(),
            "files": committed.len(),
            "commits": latencies.len(),
            "commits_per_s": latencies.len() as f64 / elapsed.as_secs_f64(),
            "failed": failures.len(),
            "first_failure": failures.first(),
            "latency_ms": {
                "p50": percentile(&latencies, 0.5),
                "p90": percentile(&latencies, 0.9),
                "p99": percentile(&latencies, 0.99),
                "max": percentile(&latencies, 1.0),
            },
            "retries": {
                "mean": retries.iter().sum::<u64>() as f64 / retries.len().max(1) as f64,
                "max": retries.iter().max(),
                "commits_retried": retries.iter().filter(|&&r| r > 0).count(),
            },
            "version": reader.version(),
            "checkpoints": outcomes.iter().map(|o| o.checkpoints).sum::<usize>(),
            "reader_load_ms": load_ms,
            "files_listed": listed.len(),
            "missing": committed.difference(&listed_set).count(),
            "extra": listed_set.difference(&committed).count(),
        });
        println!("{report}");
    });
}
