//! The write-ahead log: events made durable on local disk before a conversion is acknowledged.
//!
//! A log is a directory of numbered segment files (`00000000000000000001.wal`, …). A segment
//! starts with an 8-byte magic and 8 random bytes, its salt, and is a sequence of 32 KiB
//! blocks (the header sits at the front of the first), the layout of LevelDB's and RocksDB's
//! logs. A record is written as one or more fragments, `[crc32 u32 LE][len u16 LE][type u8]
//! [payload]`, that never cross a block boundary: type 1 is a whole record, 2, 3 and 4 its
//! first, middle and last pieces; a block's last bytes, too few for a fragment header, are
//! zero. The checksum covers the segment's salt, the length, the type and the payload: bytes
//! a client sent, stored inside a record, cannot pass for a fragment of their own.
//!
//! So damage is contained. A reader that meets a fragment whose checksum fails looks for
//! the next good fragment: right after the damaged one when only its payload was hit, else
//! byte by byte to the end of the block, else from the next block on. Only the records the
//! damage touched are lost, and the reader says where and how much ([`Damage`]). The one
//! exception is a tail a crash cut short (a write the kernel had not finished): records
//! that end past the end of the file, or zeros to its end, with no good fragment after them.
//! That is the only place an
//! unfinished write can be, and nothing in it was acknowledged (a commit is acknowledged
//! after its `fdatasync`), so it is dropped as [`SegmentContents::torn_bytes`].
//!
//! The writer appends a batch of records with one `write` and one `fdatasync` (group
//! commit). Segments are never appended to after a restart or a failed write: the writer
//! starts a new one, so a segment's content, once sealed, is fixed. Numbers only grow,
//! across runs too (they name the segment's objects in the store): a run starts past the
//! last number used (kept in `next-segment`) and past the clock in microseconds.
//!
//! Segments of the first format (`CTWAL\0\0\x01`: unblocked `[len][crc][payload]` records)
//! are still read.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

mod faults;
pub use faults::Faults;

/// First bytes of every segment written now.
pub const MAGIC: &[u8; 8] = b"CTWAL\x00\x00\x02";
/// First bytes of a segment of the first, unblocked format.
const MAGIC_V1: &[u8; 8] = b"CTWAL\x00\x00\x01";
/// Largest record payload accepted (a request is at most ~80 KiB).
pub const MAX_RECORD: usize = 4 << 20;
/// Bytes of a block.
pub const BLOCK: usize = 32 * 1024;
/// Bytes of a segment's header: the magic, then the segment's salt.
const HEADER: usize = 16;
/// Bytes of the first format's header: the magic alone.
const HEADER_V1: usize = 8;
/// Bytes of a fragment header: crc32, length, type.
const FRAGMENT_HEADER: usize = 7;

const FULL: u8 = 1;
const FIRST: u8 = 2;
const MIDDLE: u8 = 3;
const LAST: u8 = 4;

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
    #[error(
        "{0} is in use by another process (another edge on the same data_dir?); one log has one writer"
    )]
    InUse(PathBuf),
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

/// Where segments with damaged records are kept for inspection once what could be read of
/// them is uploaded (a directory beside the segments).
pub const DAMAGED_DIR: &str = "damaged";

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
fn write_next_seq(dir: &Path, next: u64, faults: Option<&Faults>) -> Result<(), WalError> {
    let tmp = dir.join(format!("{NEXT_SEGMENT_FILE}.tmp"));
    let mut f = File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(format!("{next}\n").as_bytes())
        .and_then(|()| Faults::check(faults, |f| &f.sync))
        .and_then(|()| f.sync_all())
        .map_err(io(&tmp))?;
    let path = dir.join(NEXT_SEGMENT_FILE);
    std::fs::rename(&tmp, &path).map_err(io(&path))
}

/// The file whose lock marks a log as being written.
pub const LOCK_FILE: &str = "LOCK";

/// Takes the log in `dir` for this process: an exclusive `flock` on `dir/LOCK`, held as long as
/// the returned file is open. A second edge on the same `data_dir` (`SO_REUSEPORT` lets it bind
/// the same address) would otherwise write the same log and upload the same segments.
pub fn lock(dir: &Path) -> Result<File, WalError> {
    let path = dir.join(LOCK_FILE);
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io(&path))?;
    // SAFETY: flock takes a descriptor this function owns and no pointers.
    let rc = unsafe {
        libc::flock(
            std::os::fd::AsRawFd::as_raw_fd(&f),
            libc::LOCK_EX | libc::LOCK_NB,
        )
    };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        return Err(match e.raw_os_error() {
            Some(libc::EWOULDBLOCK) => WalError::InUse(dir.to_owned()),
            _ => io(&path)(e),
        });
    }
    Ok(f)
}

/// Eight bytes from the kernel's random source. The salt goes into every fragment's checksum,
/// so bytes a client sent (a postback's form body is stored as it came) can never pass for a
/// fragment when a damaged segment is searched for the next good one.
fn random_salt() -> std::io::Result<[u8; 8]> {
    let mut salt = [0u8; 8];
    // SAFETY: getrandom writes at most `salt.len()` bytes into the buffer it is given.
    let n = unsafe { libc::getrandom(salt.as_mut_ptr().cast(), salt.len(), 0) };
    if n != salt.len() as isize {
        return Err(std::io::Error::last_os_error());
    }
    Ok(salt)
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

/// Appends `payload` as the fragments of one record to `out`, whose first byte goes to file
/// offset `file_pos` (so fragments can be kept within blocks) of the segment whose salt is
/// `salt` (see [`Segment::frame`]).
pub fn frame(
    out: &mut Vec<u8>,
    file_pos: u64,
    salt: &[u8; 8],
    payload: &[u8],
) -> Result<(), WalError> {
    if payload.len() > MAX_RECORD {
        return Err(WalError::TooLarge(payload.len()));
    }
    let mut rest = payload;
    let mut first = true;
    loop {
        let pos = file_pos as usize + out.len();
        let left = BLOCK - pos % BLOCK;
        if left < FRAGMENT_HEADER {
            out.resize(out.len() + left, 0);
            continue;
        }
        let n = rest.len().min(left - FRAGMENT_HEADER);
        let last = n == rest.len();
        let kind = match (first, last) {
            (true, true) => FULL,
            (true, false) => FIRST,
            (false, false) => MIDDLE,
            (false, true) => LAST,
        };
        let len = (n as u16).to_le_bytes();
        let mut crc = crc32fast::Hasher::new();
        crc.update(salt);
        crc.update(&len);
        crc.update(&[kind]);
        crc.update(&rest[..n]);
        out.extend_from_slice(&crc.finalize().to_le_bytes());
        out.extend_from_slice(&len);
        out.push(kind);
        out.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
        first = false;
        if last {
            return Ok(());
        }
    }
}

/// A segment being written.
#[derive(Debug)]
pub struct Segment {
    pub seq: u64,
    pub path: PathBuf,
    file: File,
    /// Bytes written and synced so far, header included: the segment's good length.
    pub bytes: u64,
    pub records: u64,
    pub created: std::time::Instant,
    /// Random bytes of this segment, in its header and in every fragment's checksum.
    salt: [u8; 8],
    faults: Option<Arc<Faults>>,
}

impl Segment {
    /// Creates segment `seq` in `dir` and makes its name durable, with `seq + 1` recorded as
    /// the next number (see [`NEXT_SEGMENT_FILE`]). A failure may leave the file behind,
    /// empty or with its magic alone: it holds nothing, and its number is not used again.
    pub fn create(dir: &Path, seq: u64, faults: Option<Arc<Faults>>) -> Result<Segment, WalError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        write_next_seq(dir, seq + 1, faults.as_deref())?;
        let path = dir.join(segment_name(seq));
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io(&path))?;
        let salt = random_salt().map_err(io(&path))?;
        file.write_all(MAGIC)
            .and_then(|()| file.write_all(&salt))
            .and_then(|()| Faults::check(faults.as_deref(), |f| &f.sync))
            .and_then(|()| file.sync_all())
            .map_err(io(&path))?;
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
            salt,
            faults,
        })
    }

    /// Appends `payload` as a record to `out`, a batch this segment's next commit writes
    /// (at [`Segment::bytes`]).
    pub fn frame(&self, out: &mut Vec<u8>, payload: &[u8]) -> Result<(), WalError> {
        frame(out, self.bytes, &self.salt, payload)
    }

    /// Writes `framed` (records built with [`frame`] at offset [`Segment::bytes`]) and waits
    /// until they are on disk. After an error the segment's tail past [`Segment::bytes`] is
    /// unknown: [`Segment::cut_back`] it before handing it on, and write nothing more to it.
    pub fn commit(&mut self, framed: &[u8], records: u64) -> Result<(), WalError> {
        let faults = self.faults.as_deref();
        Faults::check(faults, |f| &f.write)
            .and_then(|()| self.file.write_all(framed))
            .and_then(|()| Faults::check(faults, |f| &f.sync))
            .and_then(|()| self.file.sync_data())
            .map_err(io(&self.path))?;
        self.bytes += framed.len() as u64;
        self.records += records;
        Ok(())
    }

    /// Cuts the file back to what was synced ([`Segment::bytes`]) after a failed commit, so
    /// the batch it may partly hold is not also read from it once the batch is written to a
    /// new segment.
    pub fn cut_back(&self) -> Result<(), WalError> {
        Faults::check(self.faults.as_deref(), |f| &f.truncate)
            .and_then(|()| self.file.set_len(self.bytes))
            .and_then(|()| self.file.sync_all())
            .map_err(io(&self.path))
    }
}

/// A stretch of a segment that could not be read, before its tail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// Offset of the first bad byte in the file.
    pub offset: u64,
    /// Bytes skipped.
    pub bytes: u64,
    /// Records read before it.
    pub after_record: usize,
}

/// What reading a segment found. The records are spans of one buffer (the file as read,
/// then the records that had to be put together from pieces), so reading a segment takes
/// about its size in memory once.
#[derive(Debug, Default)]
pub struct SegmentContents {
    buf: Vec<u8>,
    spans: Vec<(usize, usize)>,
    /// Bytes after the last whole record that an unfinished write left (never
    /// acknowledged), dropped.
    pub torn_bytes: usize,
    /// Damaged stretches before the tail; the records they held are lost, the others kept.
    pub damage: Vec<Damage>,
}

impl SegmentContents {
    pub fn damaged_bytes(&self) -> u64 {
        self.damage.iter().map(|d| d.bytes).sum()
    }

    /// Records read.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Record `i`.
    pub fn record(&self, i: usize) -> &[u8] {
        let (start, len) = self.spans[i];
        &self.buf[start..start + len]
    }

    /// The records, copied (tests, tools).
    pub fn to_vec(&self) -> Vec<Vec<u8>> {
        self.records().map(<[u8]>::to_vec).collect()
    }

    /// The records, in order.
    pub fn records(&self) -> impl ExactSizeIterator<Item = &[u8]> {
        self.spans.iter().map(|&(s, n)| &self.buf[s..s + n])
    }

    /// A record that is a span of the buffer.
    fn push_span(&mut self, start: usize, len: usize) {
        self.spans.push((start, len));
    }

    /// A record put together from pieces, while reading: kept apart from the file's bytes
    /// (its span is marked, and moved after them once they are in place).
    fn push_joined(&mut self, record: &[u8]) {
        let start = self.buf.len();
        self.buf.extend_from_slice(record);
        self.spans.push((JOINED + start, record.len()));
    }
}

/// Reads every whole record of a segment: a torn tail is dropped, damage elsewhere skipped
/// (see the module's doc).
pub fn read_segment(path: &Path) -> Result<SegmentContents, WalError> {
    let mut data = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut data))
        .map_err(io(path))?;
    let magic = &data[..data.len().min(HEADER_V1)];
    let near =
        |m: &[u8]| m.len() == HEADER_V1 && m.iter().zip(MAGIC).filter(|(a, b)| a != b).count() == 1;
    let mut out = if magic == MAGIC && data.len() >= HEADER {
        read_blocks(&data)
    } else if magic == MAGIC_V1 {
        read_v1(&data)
    } else if near(magic) && data.len() >= HEADER {
        // One damaged byte in the magic: the fragments check themselves, read them.
        let mut out = read_blocks(&data);
        out.damage.insert(
            0,
            Damage {
                offset: 0,
                bytes: HEADER_V1 as u64,
                after_record: 0,
            },
        );
        out
    } else if data.iter().all(|&b| b == 0) || (magic == MAGIC && data.len() < HEADER) {
        // Created but the header never reached the disk whole: nothing was acknowledged from
        // it.
        return Ok(SegmentContents::default());
    } else {
        return Err(WalError::NotASegment(path.to_owned()));
    };
    // The spans point into the file's bytes; records put together from pieces follow them.
    let joined = std::mem::replace(&mut out.buf, data);
    let base = out.buf.len();
    out.buf.extend_from_slice(&joined);
    for span in out.spans.iter_mut().filter(|s| s.0 >= JOINED) {
        span.0 = span.0 - JOINED + base;
    }
    Ok(out)
}

/// While reading, spans from here on are in the buffer of joined records, not in the file.
const JOINED: usize = 1 << 62;

/// The fragment at `pos`, if it is whole, in its block, and its checksum holds:
/// (type, payload).
fn fragment(data: &[u8], pos: usize) -> Option<(u8, &[u8])> {
    let salt = &data[HEADER_V1..HEADER];
    let block_end = (pos / BLOCK + 1) * BLOCK;
    let head = data.get(pos..pos + FRAGMENT_HEADER)?;
    let crc = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
    let len = usize::from(u16::from_le_bytes([head[4], head[5]]));
    let kind = head[6];
    let end = pos + FRAGMENT_HEADER + len;
    if !(FULL..=LAST).contains(&kind) || end > block_end {
        return None;
    }
    let payload = data.get(pos + FRAGMENT_HEADER..end)?;
    let mut h = crc32fast::Hasher::new();
    h.update(salt);
    h.update(&head[4..7]);
    h.update(payload);
    (h.finalize() == crc).then_some((kind, payload))
}

/// Whether the bytes at `pos` are what an unfinished last write leaves: a fragment that
/// would end past the end of the file, or zeros to its end.
fn unfinished(data: &[u8], pos: usize) -> bool {
    let rest = &data[pos..];
    if rest.iter().all(|&b| b == 0) {
        return true;
    }
    if rest.len() < FRAGMENT_HEADER {
        return true;
    }
    let len = usize::from(u16::from_le_bytes([rest[4], rest[5]]));
    let block_end = (pos / BLOCK + 1) * BLOCK;
    pos + FRAGMENT_HEADER + len > data.len() && pos + FRAGMENT_HEADER + len <= block_end
}

/// Whether a good fragment lies anywhere after `pos`: then what is at `pos` is damage, not
/// an unfinished last write (a damaged length can make a whole record look cut short).
fn good_after(data: &[u8], pos: usize) -> bool {
    (pos + 1..data.len().saturating_sub(FRAGMENT_HEADER - 1)).any(|p| fragment(data, p).is_some())
}

/// Where reading can resume after a bad fragment at `pos`: just past it when its length
/// leads to a good fragment (only its payload was hit), else the first good fragment later
/// in the block, else the next block.
fn resume_after(data: &[u8], pos: usize) -> usize {
    let block_end = (pos / BLOCK + 1) * BLOCK;
    // What follows a fragment that ends at `p` is the end of the file, a good fragment, or
    // the zeros at the end of its block and then a good fragment (or the end).
    let next_is_good = |p: usize| {
        p == data.len()
            || fragment(data, p).is_some()
            || (p < data.len()
                && block_end - p < FRAGMENT_HEADER
                && data[p..block_end.min(data.len())].iter().all(|&b| b == 0)
                && (block_end >= data.len() || fragment(data, block_end).is_some()))
    };
    if let Some(head) = data.get(pos..pos + FRAGMENT_HEADER) {
        let after = pos + FRAGMENT_HEADER + usize::from(u16::from_le_bytes([head[4], head[5]]));
        if after <= block_end && after <= data.len() && next_is_good(after) {
            return after;
        }
    }
    (pos + 1..block_end.min(data.len()))
        .find(|&p| fragment(data, p).is_some())
        .unwrap_or(block_end.min(data.len()))
}

fn read_blocks(data: &[u8]) -> SegmentContents {
    let mut out = SegmentContents::default();
    let mut pos = HEADER;
    // A record being put together from its fragments, and where it began.
    let mut partial: Option<(usize, Vec<u8>)> = None;
    let mut bad_from: Option<usize> = None;
    while pos < data.len() {
        let block_end = (pos / BLOCK + 1) * BLOCK;
        if block_end - pos < FRAGMENT_HEADER {
            pos = block_end;
            continue;
        }
        let Some((kind, payload)) = fragment(data, pos) else {
            if bad_from.is_none() && unfinished(data, pos) && !good_after(data, pos) {
                // The tail a crash cut short, with the record it was part of.
                let start = partial.take().map_or(pos, |(s, _)| s);
                out.torn_bytes = data.len() - start;
                return out;
            }
            bad_from.get_or_insert(pos);
            if let Some((start, _)) = partial.take() {
                bad_from = Some(bad_from.map_or(start, |b| b.min(start)));
            }
            pos = resume_after(data, pos);
            continue;
        };
        let end = pos + FRAGMENT_HEADER + payload.len();
        // A piece that does not continue the record under way: the pieces it belongs with
        // were damaged, and so is this record.
        let orphan = matches!(kind, MIDDLE | LAST) && partial.is_none();
        if orphan || (matches!(kind, FULL | FIRST) && partial.is_some()) {
            let from = partial.take().map_or(pos, |(s, _)| s);
            bad_from = Some(bad_from.map_or(from, |b| b.min(from)));
            if orphan {
                pos = end;
                continue;
            }
        }
        if let Some(from) = bad_from.take() {
            out.damage.push(Damage {
                offset: from as u64,
                bytes: (pos - from) as u64,
                after_record: out.len(),
            });
        }
        match kind {
            FULL => out.push_span(pos + FRAGMENT_HEADER, payload.len()),
            FIRST => partial = Some((pos, payload.to_vec())),
            MIDDLE | LAST => {
                let (start, mut rec) = partial.take().expect("checked above");
                rec.extend_from_slice(payload);
                if kind == LAST {
                    out.push_joined(&rec);
                } else {
                    partial = Some((start, rec));
                }
            }
            _ => unreachable!("fragment() checks the type"),
        }
        pos = end;
    }
    match (partial, bad_from) {
        // A record whose last pieces never reached the disk: an unfinished write.
        (Some((start, _)), None) => out.torn_bytes = data.len() - start,
        (partial, Some(from)) => {
            let from = partial.map_or(from, |(s, _)| s.min(from));
            out.damage.push(Damage {
                offset: from as u64,
                bytes: (data.len() - from) as u64,
                after_record: out.len(),
            });
        }
        (None, None) => {}
    }
    out
}

/// The first format: `[len u32][crc32 u32][payload]` records, read until the first one that
/// is not whole.
fn read_v1(data: &[u8]) -> SegmentContents {
    let mut out = SegmentContents::default();
    let mut rest = &data[HEADER_V1..];
    while !rest.is_empty() {
        let whole = rest.split_first_chunk::<8>().and_then(|(head, body)| {
            let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
            let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
            let payload = body.get(..len.min(MAX_RECORD + 1))?;
            (len <= MAX_RECORD && crc32fast::hash(payload) == crc).then_some(payload)
        });
        match whole {
            Some(payload) => {
                let start = data.len() - rest.len() + 8;
                out.push_span(start, payload.len());
                rest = &rest[8 + payload.len()..];
            }
            None => {
                out.torn_bytes = rest.len();
                break;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
