//! The dispatcher's outbox: an append-only log on local disk of the postbacks it decided to
//! send and of every attempt, each batch written and `fdatasync`ed before it acts on it.
//!
//! A job is logged before its first attempt, and a conversion object is logged as decided
//! only with (or after) its jobs, so a dispatcher killed at any point finds, when it starts
//! again, every job not yet delivered and every object not yet decided. A write that fails
//! is cut off again (the file truncated to where it was), so a torn record never hides the
//! records after it; a torn last line from a crash is skipped. When most of the log is
//! history, it is rewritten as one record per live fact (a new file, synced, renamed over
//! the old one).

use std::collections::{BTreeMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

const LOG: &str = "outbox.log";
const LOCK: &str = "outbox.lock";

/// A postback to send.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    /// The idempotency key: the report's event id and the source's id.
    pub key: String,
    pub source: String,
    pub url: String,
    /// The report (conversion event) it tells of, and its click.
    pub report: String,
    pub click: String,
    pub status: String,
    /// The payout the source is told, in micro-units.
    pub payout_micros: i64,
    pub created_ms: i64,
    /// Set when it is decided but cannot be sent (the visit carried no source click id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
}

/// What became of one attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    pub key: String,
    pub at_ms: i64,
    /// The HTTP status, when an answer came.
    pub code: Option<u16>,
    pub latency_ms: f64,
    pub error: Option<String>,
    /// The last attempt: delivered, or given up.
    pub outcome: Option<Outcome>,
    /// When to try again (Unix ms), when it is not the last.
    #[serde(default)]
    pub next_ms: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Delivered,
    GaveUp,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
enum Record {
    /// A conversion object whose postbacks are all decided.
    Seen {
        object: String,
    },
    Job(Job),
    Attempt(Attempt),
    /// A job's whole state (what a rewrite keeps of its attempts).
    State(JobState),
    /// Objects uploaded before this (Unix ms) are not decided: the outbox began then.
    Since {
        ms: i64,
    },
}

/// A job and what its attempts came to.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobState {
    pub job: Job,
    pub attempts: u32,
    pub outcome: Option<Outcome>,
    pub last_code: Option<u16>,
    pub last_error: Option<String>,
    pub last_latency_ms: Option<f64>,
    pub last_ms: Option<i64>,
    /// When the next attempt is due (Unix ms).
    #[serde(default)]
    pub next_ms: Option<i64>,
}

impl JobState {
    fn new(job: Job) -> JobState {
        let outcome = job.skipped.is_some().then_some(Outcome::GaveUp);
        JobState {
            job,
            attempts: 0,
            outcome,
            last_code: None,
            last_error: None,
            last_latency_ms: None,
            last_ms: None,
            next_ms: None,
        }
    }

    fn apply(&mut self, a: &Attempt) {
        self.attempts += 1;
        self.last_code = a.code;
        self.last_error = a.error.clone();
        self.last_latency_ms = Some(a.latency_ms);
        self.last_ms = Some(a.at_ms);
        self.next_ms = a.next_ms;
        if a.outcome.is_some() {
            self.outcome = a.outcome;
        }
    }
}

/// What the log says.
#[derive(Debug, Default)]
pub struct State {
    pub seen: HashSet<String>,
    pub jobs: BTreeMap<String, JobState>,
    /// Conversion objects uploaded before this (Unix ms) fire nothing.
    pub since_ms: Option<i64>,
    /// Records in the file (to decide when to rewrite it).
    records: usize,
}

impl State {
    fn apply(&mut self, r: Record) {
        self.records += 1;
        match r {
            Record::Seen { object } => {
                self.seen.insert(object);
            }
            Record::Job(job) => {
                self.jobs
                    .entry(job.key.clone())
                    .or_insert_with(|| JobState::new(job));
            }
            Record::Attempt(a) => {
                if let Some(j) = self.jobs.get_mut(&a.key) {
                    j.apply(&a);
                }
            }
            Record::State(s) => {
                self.jobs.insert(s.job.key.clone(), s);
            }
            Record::Since { ms } => self.since_ms = Some(ms),
        }
    }

    /// Jobs neither delivered nor given up.
    pub fn pending(&self) -> impl Iterator<Item = &JobState> {
        self.jobs.values().filter(|j| j.outcome.is_none())
    }
}

/// Reads the log in `dir` (none yet: empty). Lines that do not parse (a torn write) are
/// skipped and counted.
pub fn read(dir: &Path) -> std::io::Result<(State, usize)> {
    let mut state = State::default();
    let mut torn = 0;
    let file = match File::open(dir.join(LOG)) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((state, 0)),
        Err(e) => return Err(e),
    };
    for line in BufReader::new(file).split(b'\n') {
        let line = line?;
        if line.is_empty() {
            continue;
        }
        match serde_json::from_slice::<Record>(&line) {
            Ok(r) => state.apply(r),
            Err(_) => torn += 1,
        }
    }
    Ok((state, torn))
}

/// The outbox, open for writing by one dispatcher (an advisory lock on `outbox.lock`).
pub struct Outbox {
    dir: PathBuf,
    file: File,
    _lock: File,
    pub state: State,
}

impl Outbox {
    /// Opens (or creates) the outbox in `dir`; fails when another dispatcher holds it. A new
    /// outbox begins at `since_ms`: conversion objects uploaded before it fire nothing.
    pub fn open(dir: &Path, since_ms: i64) -> std::io::Result<Outbox> {
        std::fs::create_dir_all(dir)?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(LOCK))?;
        // SAFETY: flock on a descriptor this function owns.
        if unsafe {
            libc::flock(
                std::os::fd::AsRawFd::as_raw_fd(&lock),
                libc::LOCK_EX | libc::LOCK_NB,
            )
        } != 0
        {
            return Err(std::io::Error::new(
                std::io::ErrorKind::WouldBlock,
                format!(
                    "{} is in use by another dispatcher (one dispatcher per outbox)",
                    dir.display()
                ),
            ));
        }
        let (state, torn) = read(dir)?;
        if torn > 0 {
            tracing::warn!(
                torn,
                "skipped outbox records that did not parse (a torn write)"
            );
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(LOG))?;
        let mut outbox = Outbox {
            dir: dir.to_owned(),
            file,
            _lock: lock,
            state,
        };
        if torn > 0 {
            // Start from a clean file, so the torn line cannot swallow the next record.
            outbox.rewrite()?;
        }
        if outbox.state.since_ms.is_none() {
            outbox.append(vec![Record::Since { ms: since_ms }])?;
        }
        Ok(outbox)
    }

    /// Appends the records and syncs them; on failure the file is cut back to where it was
    /// and nothing is applied.
    fn append(&mut self, records: Vec<Record>) -> std::io::Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        // Each batch starts on a line of its own, whatever a failed write left behind.
        let mut buf = Vec::with_capacity(records.len() * 256 + 1);
        buf.push(b'\n');
        for r in &records {
            serde_json::to_writer(&mut buf, r)?;
            buf.push(b'\n');
        }
        let len = self.file.metadata()?.len();
        let written = self
            .file
            .write_all(&buf)
            .and_then(|()| self.file.sync_data());
        if let Err(e) = written {
            let _ = self.file.set_len(len);
            return Err(e);
        }
        for r in records {
            self.state.apply(r);
        }
        if self.state.records > 10_000
            && self.state.records > 4 * self.live()
            && let Err(e) = self.rewrite()
        {
            tracing::warn!(error = %e, "could not rewrite the outbox (it keeps growing)");
        }
        Ok(())
    }

    fn live(&self) -> usize {
        self.state.seen.len() + self.state.jobs.len()
    }

    /// Logs new jobs and the objects they decide, in one synced write. Jobs already known
    /// are left out; answers the jobs that were new.
    pub fn decide(&mut self, jobs: Vec<Job>, objects: Vec<String>) -> std::io::Result<Vec<Job>> {
        let mut fresh = Vec::new();
        let mut keys = HashSet::new();
        for j in jobs {
            if !self.state.jobs.contains_key(&j.key) && keys.insert(j.key.clone()) {
                fresh.push(j);
            }
        }
        let mut records: Vec<Record> = fresh.iter().cloned().map(Record::Job).collect();
        records.extend(
            objects
                .into_iter()
                .filter(|o| !self.state.seen.contains(o))
                .map(|object| Record::Seen { object }),
        );
        self.append(records)?;
        Ok(fresh)
    }

    /// Logs attempts.
    pub fn attempted(&mut self, attempts: Vec<Attempt>) -> std::io::Result<()> {
        self.append(attempts.into_iter().map(Record::Attempt).collect())
    }

    /// Forgets decided objects no longer in the store (`listed` is every object there) and
    /// finished jobs older than `keep_ms`, at the next rewrite.
    pub fn forget(&mut self, listed: &HashSet<String>, now_ms: i64, keep_ms: i64) {
        self.state.seen.retain(|o| listed.contains(o));
        self.state.jobs.retain(|_, j| {
            j.outcome.is_none() || j.last_ms.unwrap_or(j.job.created_ms) + keep_ms > now_ms
        });
    }

    /// Writes the state as a new log and renames it over the old one.
    pub fn rewrite(&mut self) -> std::io::Result<()> {
        let tmp = self.dir.join(format!("{LOG}.tmp"));
        let mut out = std::io::BufWriter::new(File::create(&tmp)?);
        let mut n = 0;
        if let Some(ms) = self.state.since_ms {
            serde_json::to_writer(&mut out, &Record::Since { ms })?;
            out.write_all(b"\n")?;
            n += 1;
        }
        for object in &self.state.seen {
            serde_json::to_writer(
                &mut out,
                &Record::Seen {
                    object: object.clone(),
                },
            )?;
            out.write_all(b"\n")?;
            n += 1;
        }
        for j in self.state.jobs.values() {
            serde_json::to_writer(&mut out, &Record::State(j.clone()))?;
            out.write_all(b"\n")?;
            n += 1;
        }
        let f = out.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        std::fs::rename(&tmp, self.dir.join(LOG))?;
        // Append to the new file from now on, before anything else can fail.
        self.file = OpenOptions::new().append(true).open(self.dir.join(LOG))?;
        self.state.records = n;
        File::open(&self.dir)?.sync_all()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(key: &str) -> Job {
        Job {
            key: key.into(),
            source: "zp".into(),
            url: format!("http://127.0.0.1:9/pb?k={key}"),
            report: key.into(),
            click: "c".into(),
            status: "sale".into(),
            payout_micros: 1_000_000,
            created_ms: 1,
            skipped: None,
        }
    }

    #[test]
    fn jobs_survive_a_reopen_and_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut o = Outbox::open(dir.path(), 0).unwrap();
            // A second dispatcher is refused while the first holds it.
            assert!(Outbox::open(dir.path(), 0).is_err());
            let fresh = o
                .decide(
                    vec![job("a"), job("b"), job("a")],
                    vec!["conversions/x.parquet".into()],
                )
                .unwrap();
            assert_eq!(fresh.len(), 2);
            assert!(o.decide(vec![job("a")], vec![]).unwrap().is_empty());
            o.attempted(vec![Attempt {
                key: "a".into(),
                at_ms: 5,
                code: Some(200),
                latency_ms: 1.5,
                error: None,
                outcome: Some(Outcome::Delivered),
                next_ms: None,
            }])
            .unwrap();
        }
        // A crash in the middle of a write leaves half a line.
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.path().join(LOG))
            .unwrap();
        f.write_all(b"{\"t\":\"job\",\"key\":\"c").unwrap();
        drop(f);
        let mut o = Outbox::open(dir.path(), 5).unwrap();
        // The outbox began when it was first opened.
        assert_eq!(o.state.since_ms, Some(0));
        assert!(o.state.seen.contains("conversions/x.parquet"));
        let pending: Vec<&str> = o.state.pending().map(|j| j.job.key.as_str()).collect();
        assert_eq!(pending, ["b"]);
        assert_eq!(o.state.jobs["a"].outcome, Some(Outcome::Delivered));
        // Records written after the torn line are read back.
        o.decide(vec![job("d")], vec![]).unwrap();
        drop(o);
        let (state, torn) = read(dir.path()).unwrap();
        assert_eq!(torn, 0);
        assert!(state.jobs.contains_key("d") && state.jobs["a"].attempts == 1);
    }
}
