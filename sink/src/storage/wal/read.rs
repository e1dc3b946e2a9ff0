//! Reading a segment back: fragments joined into records, damage contained to the records it
//! touches and reported, a torn tail told apart from damage.

use super::*;
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
