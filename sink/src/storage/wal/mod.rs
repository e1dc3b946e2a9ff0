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
mod read;
mod segment;

pub use faults::Faults;
pub use read::{Damage, SegmentContents, read_segment};
pub use segment::{Segment, frame};

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

/// A sealed segment: closed by the writer, waiting for the uploader.
#[derive(Debug, Clone)]
pub struct Sealed {
    pub seq: u64,
    pub path: PathBuf,
    /// Its length as synced, when this run wrote it: then no tail of it can be torn (a short
    /// one is damage), since the writer cut it back to that length after any failed commit.
    pub synced: Option<u64>,
}

#[cfg(test)]
mod tests;
