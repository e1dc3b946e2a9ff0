//! The write-ahead log: events made durable on local disk before a conversion is acknowledged.
//!
//! A log is a directory of numbered segment files (`00000000000000000001.wal`, …). A segment
//! starts with an 8-byte magic and holds records `[len u32 LE][crc32 u32 LE][payload]`. The
//! writer appends a batch of records with one `write` and one `fdatasync` (group commit); a
//! crash can leave the last record of the last segment torn, which the reader detects by its
//! length or checksum and drops. Segments are never appended to after a restart: the writer
//! starts a new one, so a segment's content, once sealed, is fixed. Numbers only grow, across
//! runs too (they name the segment's objects in the store): a run starts past the last
//! number used (kept in `next-segment`) and past the clock in microseconds.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// First bytes of every segment.
pub const MAGIC: &[u8; 8] = b"CTWAL\x00\x00\x01";
/// Largest record payload accepted (a request is at most ~80 KiB).
pub const MAX_RECORD: usize = 4 << 20;
const HEADER: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}: not a WAL segment (bad magic)")]
    NotASegment(PathBuf),
    #[error("record of {0} bytes is larger than {MAX_RECORD}")]
    TooLarge(usize),
    #[error("the log has reached its limit of {0} bytes on disk")]
    Full(u64),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> WalError + '_ {
    move |source| WalError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The file name of segment `seq`.
pub fn segment_name(seq: u64) -> String {
    format!("{seq:020}.wal")
}

/// Remembers, across runs, the number the next segment takes. Segments are deleted once
/// uploaded and a segment's number names its objects in the store, so a number must never
/// come twice: restarting at 1 would overwrite the objects of an earlier run's first segment.
pub const NEXT_SEGMENT_FILE: &str = "next-segment";

/// The next segment number recorded in `dir` (0 when none is).
pub fn read_next_seq(dir: &Path) -> Result<u64, WalError> {
    let path = dir.join(NEXT_SEGMENT_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => text.trim().parse().map_err(|_| WalError::Io {
            path,
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("not a segment number: {:?}", text.trim()),
            ),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(io(&path)(e)),
    }
}

/// Records `next` as the next segment number, atomically (the caller syncs the directory).
fn write_next_seq(dir: &Path, next: u64) -> Result<(), WalError> {
    let tmp = dir.join(format!("{NEXT_SEGMENT_FILE}.tmp"));
    let mut f = File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(format!("{next}\n").as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(io(&tmp))?;
    let path = dir.join(NEXT_SEGMENT_FILE);
    std::fs::rename(&tmp, &path).map_err(io(&path))
}

/// The segments in `dir`, oldest first, as (sequence number, path).
pub fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, WalError> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(io(dir)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(io(dir))?;
        let name = entry.file_name();
        let Some(seq) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".wal"))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        out.push((seq, entry.path()));
    }
    out.sort();
    Ok(out)
}

/// Appends one framed record to `buf`.
pub fn frame(buf: &mut Vec<u8>, payload: &[u8]) -> Result<(), WalError> {
    if payload.len() > MAX_RECORD {
        return Err(WalError::TooLarge(payload.len()));
    }
    buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    buf.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    buf.extend_from_slice(payload);
    Ok(())
}

/// A segment being written.
#[derive(Debug)]
pub struct Segment {
    pub seq: u64,
    pub path: PathBuf,
    file: File,
    /// Bytes written (and synced) so far, header included.
    pub bytes: u64,
    pub records: u64,
    pub created: std::time::Instant,
}

impl Segment {
    /// Creates segment `seq` in `dir` and makes its name durable, with `seq + 1` recorded as
    /// the next number (see [`NEXT_SEGMENT_FILE`]).
    pub fn create(dir: &Path, seq: u64) -> Result<Segment, WalError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        write_next_seq(dir, seq + 1)?;
        let path = dir.join(segment_name(seq));
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io(&path))?;
        file.write_all(MAGIC).map_err(io(&path))?;
        file.sync_all().map_err(io(&path))?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io(dir))?;
        Ok(Segment {
            seq,
            path,
            file,
            bytes: HEADER as u64,
            records: 0,
            created: std::time::Instant::now(),
        })
    }

    /// Writes `framed` (records built with [`frame`]) and waits until they are on disk.
    pub fn commit(&mut self, framed: &[u8], records: u64) -> Result<(), WalError> {
        self.file.write_all(framed).map_err(io(&self.path))?;
        self.file.sync_data().map_err(io(&self.path))?;
        self.bytes += framed.len() as u64;
        self.records += records;
        Ok(())
    }
}

/// What reading a segment found.
#[derive(Debug, Default)]
pub struct SegmentContents {
    pub records: Vec<Vec<u8>>,
    /// Bytes after the last whole record (a torn write), dropped.
    pub torn_bytes: usize,
}

/// Reads every whole record of a segment; a torn or corrupt tail is counted and dropped.
pub fn read_segment(path: &Path) -> Result<SegmentContents, WalError> {
    let mut data = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut data))
        .map_err(io(path))?;
    if data.len() < HEADER || &data[..HEADER] != MAGIC {
        if data.is_empty() {
            // Created but the header never reached the disk: nothing was acknowledged from it.
            return Ok(SegmentContents::default());
        }
        return Err(WalError::NotASegment(path.to_owned()));
    }
    let mut out = SegmentContents::default();
    let mut rest = &data[HEADER..];
    while !rest.is_empty() {
        match whole_record(rest) {
            Some(payload) => {
                out.records.push(payload.to_vec());
                rest = &rest[8 + payload.len()..];
            }
            None => {
                out.torn_bytes = rest.len();
                break;
            }
        }
    }
    Ok(out)
}

/// The payload of the record at the front of `rest`, if it is whole and its checksum holds.
fn whole_record(rest: &[u8]) -> Option<&[u8]> {
    let (head, body) = rest.split_first_chunk::<8>()?;
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
    let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    if len > MAX_RECORD {
        return None;
    }
    let payload = body.get(..len)?;
    (crc32fast::hash(payload) == crc).then_some(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(tag: &str) -> PathBuf {
        crate::test_dir(&format!("wal-{tag}"))
    }

    #[test]
    fn records_round_trip_in_order() {
        let dir = tmp("rt");
        let mut seg = Segment::create(&dir, 1).unwrap();
        let mut buf = Vec::new();
        for i in 0..100u32 {
            frame(&mut buf, format!("record {i}").as_bytes()).unwrap();
        }
        seg.commit(&buf, 100).unwrap();
        buf.clear();
        frame(&mut buf, b"").unwrap();
        seg.commit(&buf, 1).unwrap();
        let c = read_segment(&seg.path).unwrap();
        assert_eq!(c.records.len(), 101);
        assert_eq!(c.records[7], b"record 7");
        assert_eq!(c.records[100], b"");
        assert_eq!(c.torn_bytes, 0);
        assert_eq!(seg.bytes, std::fs::metadata(&seg.path).unwrap().len());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_torn_tail_is_dropped_at_every_cut() {
        let dir = tmp("torn");
        let mut seg = Segment::create(&dir, 1).unwrap();
        let mut buf = Vec::new();
        for i in 0..3u32 {
            frame(&mut buf, format!("r{i}-payload").as_bytes()).unwrap();
        }
        seg.commit(&buf, 3).unwrap();
        let full = std::fs::read(&seg.path).unwrap();
        let record = 8 + b"r0-payload".len();
        for cut in HEADER..full.len() {
            std::fs::write(&seg.path, &full[..cut]).unwrap();
            let c = read_segment(&seg.path).unwrap();
            let whole = (cut - HEADER) / record;
            assert_eq!(c.records.len(), whole, "cut at {cut}");
            assert_eq!(c.torn_bytes, cut - HEADER - whole * record);
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_corrupt_record_ends_the_segment() {
        let dir = tmp("crc");
        let mut seg = Segment::create(&dir, 1).unwrap();
        let mut buf = Vec::new();
        frame(&mut buf, b"good").unwrap();
        frame(&mut buf, b"flipped").unwrap();
        seg.commit(&buf, 2).unwrap();
        let mut data = std::fs::read(&seg.path).unwrap();
        let n = data.len();
        data[n - 2] ^= 0x40;
        std::fs::write(&seg.path, &data).unwrap();
        let c = read_segment(&seg.path).unwrap();
        assert_eq!(c.records, vec![b"good".to_vec()]);
        assert_eq!(c.torn_bytes, 8 + 7);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn segments_list_in_order_and_foreign_files_are_refused() {
        let dir = tmp("list");
        for seq in [3, 1, 20] {
            Segment::create(&dir, seq).unwrap();
        }
        std::fs::write(dir.join("notes.txt"), "x").unwrap();
        let seqs: Vec<u64> = list_segments(&dir)
            .unwrap()
            .into_iter()
            .map(|(s, _)| s)
            .collect();
        assert_eq!(seqs, vec![1, 3, 20]);
        assert!(
            Segment::create(&dir, 3).is_err(),
            "a segment is never reopened"
        );
        let bogus = dir.join(segment_name(99));
        std::fs::write(&bogus, "hello world").unwrap();
        assert!(matches!(
            read_segment(&bogus),
            Err(WalError::NotASegment(_))
        ));
        assert!(list_segments(&dir.join("missing")).unwrap().is_empty());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn oversized_records_are_refused() {
        let mut buf = Vec::new();
        assert!(matches!(
            frame(&mut buf, &vec![0; MAX_RECORD + 1]),
            Err(WalError::TooLarge(_))
        ));
        assert!(buf.is_empty());
    }
}
