//! Writing a segment: records framed into fragments within blocks, appended with one write
//! and one `fdatasync` per batch.

use super::*;
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
    pub(super) salt: [u8; 8],
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
