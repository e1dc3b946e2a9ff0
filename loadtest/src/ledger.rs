//! The ledger: one line per request a run sent and how it was answered, so `verify` can
//! check the store against it event by event.
//!
//! Text, fields separated by tabs (shown here as spaces), times in Unix milliseconds, money in micro-units:
//! ```text
//! #clicktracker-loadtest-ledger    1
//! start    MS    TARGET    CAMPAIGN[,CAMPAIGN…]
//! V    MS    CLICK_ID                                   a visit answered 302 with this click id
//! v    MS                                             a visit sent but not answered (in doubt)
//! K    MS    CLICK_ID    OUTCOME    STATUS                   a landing page's click-through
//! C    MS    p|x    CLICK_ID    TXID|-    PAYOUT    TYPE    OUTCOME    STATUS   a postback (p) or pixel (x)
//! X    MS    KIND                                       a transport error (connect, io, timeout)
//! end    MS    REQUESTS    TRANSPORT_ERRORS
//! ```
//! `OUTCOME` is `ok` (the expected status: the server took it), `refused` (a 4xx: the
//! server said it recorded nothing) or `doubt` (no answer, or a 5xx: it may or may not be
//! stored). `STATUS` is the HTTP status, or `-` without an answer. A conversion's `MS` is
//! when it was sent; a visit's, when its redirect arrived.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};
use sink::EventId;
use sink::model::money;

use crate::funnel::Conversion;

const MAGIC: &str = "#clicktracker-loadtest-ledger\t1";
/// A worker hands its lines to the writer thread in chunks of about this size.
const CHUNK: usize = 1 << 20;

/// How the server answered a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    Ok,
    Refused,
    Doubt,
}

impl Outcome {
    /// The outcome of an answer with `status` to a request expecting `expected`.
    pub fn of(status: Option<u16>, expected: u16) -> Outcome {
        match status {
            Some(s) if s == expected => Outcome::Ok,
            Some(s) if (400..500).contains(&s) => Outcome::Refused,
            _ => Outcome::Doubt,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Refused => "refused",
            Outcome::Doubt => "doubt",
        }
    }

    fn parse(s: &str) -> Option<Outcome> {
        match s {
            "ok" => Some(Outcome::Ok),
            "refused" => Some(Outcome::Refused),
            "doubt" => Some(Outcome::Doubt),
            _ => None,
        }
    }
}

/// A worker's side of the ledger: lines are built in its own buffer and handed over in chunks.
pub struct LedgerBuf {
    buf: Vec<u8>,
    tx: Sender<Vec<u8>>,
}

fn status_field(status: Option<u16>, out: &mut Vec<u8>) {
    match status {
        Some(s) => money::write_digits(u64::from(s), 1, out),
        None => out.push(b'-'),
    }
}

impl LedgerBuf {
    fn line_start(&mut self, tag: &[u8], ms: u64) {
        self.buf.extend_from_slice(tag);
        self.buf.push(b'\t');
        money::write_digits(ms, 1, &mut self.buf);
    }

    fn line_end(&mut self) {
        self.buf.push(b'\n');
        if self.buf.len() >= CHUNK {
            self.flush();
        }
    }

    pub fn visit(&mut self, ms: u64, click: &EventId) {
        self.line_start(b"V", ms);
        self.buf.push(b'\t');
        self.buf.extend_from_slice(&click.to_hex());
        self.line_end();
    }

    pub fn visit_in_doubt(&mut self, ms: u64) {
        self.line_start(b"v", ms);
        self.line_end();
    }

    pub fn click(&mut self, ms: u64, click: &EventId, outcome: Outcome, status: Option<u16>) {
        self.line_start(b"K", ms);
        self.buf.push(b'\t');
        self.buf.extend_from_slice(&click.to_hex());
        self.buf.push(b'\t');
        self.buf.extend_from_slice(outcome.as_str().as_bytes());
        self.buf.push(b'\t');
        status_field(status, &mut self.buf);
        self.line_end();
    }

    pub fn conversion(&mut self, ms: u64, c: &Conversion, outcome: Outcome, status: Option<u16>) {
        self.line_start(b"C", ms);
        self.buf
            .extend_from_slice(if c.pixel { b"\tx\t" } else { b"\tp\t" });
        self.buf.extend_from_slice(&c.click.to_hex());
        self.buf.push(b'\t');
        match &c.txid {
            Some(t) => self.buf.extend_from_slice(t.as_bytes()),
            None => self.buf.push(b'-'),
        }
        self.buf.push(b'\t');
        self.buf
            .extend_from_slice(c.payout_micros.to_string().as_bytes());
        self.buf.push(b'\t');
        self.buf.extend_from_slice(c.kind.as_bytes());
        self.buf.push(b'\t');
        self.buf.extend_from_slice(outcome.as_str().as_bytes());
        self.buf.push(b'\t');
        status_field(status, &mut self.buf);
        self.line_end();
    }

    /// The server could not be reached or stopped answering (`kind`: connect, io, timeout).
    pub fn transport_error(&mut self, ms: u64, kind: &str) {
        self.line_start(b"X", ms);
        self.buf.push(b'\t');
        self.buf.extend_from_slice(kind.as_bytes());
        self.line_end();
    }

    /// Hands what is buffered to the writer.
    pub fn flush(&mut self) {
        if !self.buf.is_empty() {
            let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK + 4096));
            // The writer only stops once every sender is gone, so this cannot fail.
            let _ = self.tx.send(chunk);
        }
    }
}

impl Drop for LedgerBuf {
    fn drop(&mut self) {
        self.flush();
    }
}

/// The file being written, and the thread writing it.
pub struct LedgerWriter {
    path: PathBuf,
    tx: Sender<Vec<u8>>,
    thread: JoinHandle<std::io::Result<File>>,
}

impl LedgerWriter {
    /// Creates `path` (replacing it) and writes the `start` line.
    pub fn create(
        path: &Path,
        start_ms: u64,
        target: &str,
        campaigns: &[String],
    ) -> std::io::Result<Self> {
        let mut file = File::create(path)?;
        writeln!(file, "{MAGIC}")?;
        writeln!(file, "start\t{start_ms}\t{target}\t{}", campaigns.join(","))?;
        let (tx, rx): (Sender<Vec<u8>>, Receiver<Vec<u8>>) = crossbeam_channel::bounded(64);
        let thread = std::thread::Builder::new()
            .name("ledger".into())
            .spawn(move || {
                for chunk in rx {
                    file.write_all(&chunk)?;
                }
                Ok(file)
            })?;
        Ok(LedgerWriter {
            path: path.to_owned(),
            tx,
            thread,
        })
    }

    /// A buffer for one worker thread.
    pub fn buffer(&self) -> LedgerBuf {
        LedgerBuf {
            buf: Vec::with_capacity(CHUNK + 4096),
            tx: self.tx.clone(),
        }
    }

    /// Writes the `end` line once every buffer is dropped, and syncs the file.
    pub fn finish(
        self,
        end_ms: u64,
        requests: u64,
        transport_errors: u64,
    ) -> std::io::Result<PathBuf> {
        drop(self.tx);
        let mut file = self
            .thread
            .join()
            .map_err(|_| std::io::Error::other("the ledger writer panicked"))??;
        writeln!(file, "end\t{end_ms}\t{requests}\t{transport_errors}")?;
        file.sync_all()?;
        Ok(self.path)
    }
}

/// A conversion as the ledger recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentConversion {
    pub ms: u64,
    pub pixel: bool,
    pub click: EventId,
    pub txid: Option<String>,
    pub payout_micros: i64,
    pub kind: String,
    pub outcome: Outcome,
    pub status: Option<u16>,
}

/// A whole ledger, read back.
#[derive(Debug, Clone, Default)]
pub struct Ledger {
    pub start_ms: u64,
    pub target: String,
    pub campaigns: Vec<String>,
    /// `None` when the run did not finish writing it (the generator was killed).
    pub end_ms: Option<u64>,
    pub requests: u64,
    /// Connections refused, reset or timed out: the server went away during the run.
    pub transport_errors: u64,
    /// Visits answered with a click id, and when.
    pub visits: Vec<(EventId, u64)>,
    /// Visits sent but never answered: when each was sent.
    pub visits_in_doubt: Vec<u64>,
    pub clicks: Vec<(EventId, u64, Outcome)>,
    pub conversions: Vec<SentConversion>,
    /// When transport errors happened, in order.
    pub transport_errors_at: Vec<u64>,
}

/// Why a ledger cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a loadtest ledger (its first line is not {MAGIC:?})")]
    NotALedger { path: PathBuf },
    #[error("{path}:{line}: {what}")]
    Bad {
        path: PathBuf,
        line: usize,
        what: String,
    },
}

impl Ledger {
    pub fn read(path: &Path) -> Result<Ledger, LedgerError> {
        let io = |source| LedgerError::Io {
            path: path.to_owned(),
            source,
        };
        let mut lines = BufReader::new(File::open(path).map_err(io)?).lines();
        match lines.next() {
            Some(Ok(l)) if l == MAGIC => {}
            Some(Err(e)) => return Err(io(e)),
            _ => {
                return Err(LedgerError::NotALedger {
                    path: path.to_owned(),
                });
            }
        }
        let mut ledger = Ledger::default();
        for (n, line) in lines.enumerate() {
            let line = line.map_err(io)?;
            ledger.take(&line).map_err(|what| LedgerError::Bad {
                path: path.to_owned(),
                line: n + 2,
                what,
            })?;
        }
        ledger.transport_errors_at.sort_unstable();
        Ok(ledger)
    }

    fn take(&mut self, line: &str) -> Result<(), String> {
        let f: Vec<&str> = line.split('\t').collect();
        let num = |i: usize| -> Result<u64, String> {
            let s = f.get(i).ok_or_else(|| format!("missing field {}", i + 1))?;
            s.parse()
                .map_err(|_| format!("field {} is not a number: {s:?}", i + 1))
        };
        let id = |i: usize| -> Result<EventId, String> {
            let s = f.get(i).ok_or_else(|| format!("missing field {}", i + 1))?;
            EventId::parse(s.as_bytes()).map_err(|e| format!("field {}: {e}", i + 1))
        };
        let outcome = |i: usize| -> Result<Outcome, String> {
            f.get(i)
                .and_then(|s| Outcome::parse(s))
                .ok_or_else(|| format!("field {} is not ok, refused or doubt", i + 1))
        };
        let status = |i: usize| -> Result<Option<u16>, String> {
            match f.get(i) {
                Some(&"-") => Ok(None),
                Some(s) => s.parse().map(Some).map_err(|_| format!("bad status {s:?}")),
                None => Err(format!("missing field {}", i + 1)),
            }
        };
        match f[0] {
            "start" => {
                self.start_ms = num(1)?;
                self.target = f.get(2).unwrap_or(&"").to_string();
                self.campaigns = f
                    .get(3)
                    .unwrap_or(&"")
                    .split(',')
                    .filter(|c| !c.is_empty())
                    .map(str::to_owned)
                    .collect();
            }
            "V" => self.visits.push((id(2)?, num(1)?)),
            "v" => self.visits_in_doubt.push(num(1)?),
            "K" => self.clicks.push((id(2)?, num(1)?, outcome(3)?)),
            "C" => {
                let payout = f.get(5).ok_or("missing payout")?;
                self.conversions.push(SentConversion {
                    ms: num(1)?,
                    pixel: match f.get(2) {
                        Some(&"x") => true,
                        Some(&"p") => false,
                        _ => return Err("field 3 is not p or x".into()),
                    },
                    click: id(3)?,
                    txid: match f.get(4) {
                        Some(&"-") => None,
                        Some(t) => Some((*t).to_owned()),
                        None => return Err("missing txid".into()),
                    },
                    payout_micros: payout
                        .parse()
                        .map_err(|_| format!("bad payout {payout:?}"))?,
                    kind: f.get(6).ok_or("missing type")?.to_string(),
                    outcome: outcome(7)?,
                    status: status(8)?,
                });
            }
            "X" => self.transport_errors_at.push(num(1)?),
            "end" => {
                self.end_ms = Some(num(1)?);
                self.requests = num(2)?;
                self.transport_errors = num(3)?;
            }
            "" => {}
            other => return Err(format!("unknown record {other:?}")),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_written_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.ledger");
        let w = LedgerWriter::create(&path, 1000, "http://127.0.0.1:1", &["a".into(), "b".into()])
            .unwrap();
        let click = EventId::new(1_795_800_000_000, 1, 0, 9);
        let conv = Conversion {
            click,
            txid: Some("lt-1".into()),
            payout_micros: 1_500_000,
            kind: "sale",
            pixel: false,
        };
        {
            let mut b = w.buffer();
            b.visit(1001, &click);
            b.visit_in_doubt(1002);
            b.click(1003, &click, Outcome::Refused, Some(404));
            b.conversion(1004, &conv, Outcome::Ok, Some(200));
            let pixel = Conversion {
                txid: None,
                pixel: true,
                ..conv.clone()
            };
            b.conversion(1005, &pixel, Outcome::Doubt, None);
            b.transport_error(1007, "io");
            b.transport_error(1006, "connect");
        }
        w.finish(2000, 5, 1).unwrap();
        let l = Ledger::read(&path).unwrap();
        assert_eq!(
            (l.start_ms, l.end_ms, l.requests, l.transport_errors),
            (1000, Some(2000), 5, 1)
        );
        assert_eq!(l.campaigns, ["a", "b"]);
        assert_eq!(l.visits, [(click, 1001)]);
        assert_eq!(l.visits_in_doubt, [1002]);
        assert_eq!(l.clicks, [(click, 1003, Outcome::Refused)]);
        assert_eq!(l.conversions.len(), 2);
        assert_eq!(
            l.conversions[0],
            SentConversion {
                ms: 1004,
                pixel: false,
                click,
                txid: Some("lt-1".into()),
                payout_micros: 1_500_000,
                kind: "sale".into(),
                outcome: Outcome::Ok,
                status: Some(200),
            }
        );
        assert!(l.conversions[1].pixel && l.conversions[1].txid.is_none());
        assert_eq!(l.conversions[1].outcome, Outcome::Doubt);
        assert_eq!(l.transport_errors_at, [1006, 1007]);
        std::fs::write(&path, "not a ledger\n").unwrap();
        assert!(matches!(
            Ledger::read(&path),
            Err(LedgerError::NotALedger { .. })
        ));
        std::fs::write(&path, format!("{MAGIC}\nV\t12\tnot-an-id\n")).unwrap();
        let e = Ledger::read(&path).unwrap_err().to_string();
        assert!(e.contains(":2:") && e.contains("field 3"), "{e}");
    }

    #[test]
    fn outcomes_follow_the_status() {
        assert_eq!(Outcome::of(Some(200), 200), Outcome::Ok);
        assert_eq!(Outcome::of(Some(403), 200), Outcome::Refused);
        assert_eq!(Outcome::of(Some(503), 200), Outcome::Doubt);
        assert_eq!(Outcome::of(None, 302), Outcome::Doubt);
    }
}
