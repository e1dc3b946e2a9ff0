//! Event ids: 12 bytes, written as 24 lowercase hex digits.
//!
//! Layout (big-endian, so the hex form sorts by time):
//! 48-bit Unix milliseconds | 16-bit node id | 8-bit worker id | 24-bit per-worker counter.

use std::fmt;

/// Largest value of the per-worker counter (24 bits).
pub const COUNTER_MAX: u32 = (1 << 24) - 1;
/// Largest timestamp an id can carry (48 bits of milliseconds, year 10889).
pub const TS_MAX: u64 = (1 << 48) - 1;

/// A 12-byte, time-ordered event id (also the click id carried to offers).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct EventId(pub [u8; 12]);

/// Why a string is not an event id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("a click id is 24 hex digits, got {0} characters")]
    Length(usize),
    #[error("a click id is 24 hex digits, found a character that is not one")]
    NotHex,
}

const HEX: &[u8; 16] = b"0123456789abcdef";

impl EventId {
    /// Assembles an id; `ts_ms` is truncated to 48 bits and `counter` to 24 bits.
    pub fn new(ts_ms: u64, node_id: u16, worker_id: u8, counter: u32) -> Self {
        let mut b = [0u8; 12];
        b[..6].copy_from_slice(&(ts_ms & TS_MAX).to_be_bytes()[2..]);
        b[6..8].copy_from_slice(&node_id.to_be_bytes());
        b[8] = worker_id;
        b[9..].copy_from_slice(&(counter & COUNTER_MAX).to_be_bytes()[1..]);
        EventId(b)
    }

    pub fn ts_ms(&self) -> u64 {
        let mut t = [0u8; 8];
        t[2..].copy_from_slice(&self.0[..6]);
        u64::from_be_bytes(t)
    }

    pub fn node_id(&self) -> u16 {
        u16::from_be_bytes([self.0[6], self.0[7]])
    }

    pub fn worker_id(&self) -> u8 {
        self.0[8]
    }

    pub fn counter(&self) -> u32 {
        u32::from_be_bytes([0, self.0[9], self.0[10], self.0[11]])
    }

    /// The 24 lowercase hex digits, without allocating.
    pub fn to_hex(&self) -> [u8; 24] {
        let mut out = [0u8; 24];
        for (i, b) in self.0.iter().enumerate() {
            out[2 * i] = HEX[(b >> 4) as usize];
            out[2 * i + 1] = HEX[(b & 0xf) as usize];
        }
        out
    }

    /// Parses 24 hex digits (either case).
    pub fn parse(s: &[u8]) -> Result<Self, IdError> {
        if s.len() != 24 {
            return Err(IdError::Length(s.len()));
        }
        let mut b = [0u8; 12];
        for (i, pair) in s.chunks_exact(2).enumerate() {
            b[i] = (nibble(pair[0])? << 4) | nibble(pair[1])?;
        }
        Ok(EventId(b))
    }
}

fn nibble(c: u8) -> Result<u8, IdError> {
    match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        b'A'..=b'F' => Ok(c - b'A' + 10),
        _ => Err(IdError::NotHex),
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hex = self.to_hex();
        // The digits are ASCII by construction.
        f.write_str(std::str::from_utf8(&hex).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EventId({self})")
    }
}

/// `t` in milliseconds since the Unix epoch, the clock event ids count in (0 before it).
pub fn unix_ms(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Hands out ids for one worker: strictly increasing, even if the wall clock steps back.
#[derive(Debug)]
pub struct IdGenerator {
    node_id: u16,
    worker_id: u8,
    last_ms: u64,
    counter: u32,
}

impl IdGenerator {
    pub fn new(node_id: u16, worker_id: u8) -> Self {
        IdGenerator {
            node_id,
            worker_id,
            last_ms: 0,
            counter: 0,
        }
    }

    /// The next id at wall-clock time `now_ms`. Within one millisecond the counter runs up;
    /// should it ever fill (16 M ids in a millisecond) the id borrows the next millisecond.
    pub fn next(&mut self, now_ms: u64) -> EventId {
        if now_ms > self.last_ms {
            self.last_ms = now_ms;
            self.counter = 0;
        } else if self.counter == COUNTER_MAX {
            self.last_ms += 1;
            self.counter = 0;
        } else {
            self.counter += 1;
        }
        EventId::new(self.last_ms, self.node_id, self.worker_id, self.counter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_id_round_trips() {
        let id = EventId::parse(b"0167a15c98772c0004000001").unwrap();
        assert_eq!(id.ts_ms(), 0x0167a15c9877);
        assert_eq!(id.node_id(), 0x2c00);
        assert_eq!(id.worker_id(), 4);
        assert_eq!(id.counter(), 1);
        assert_eq!(id.to_string(), "0167a15c98772c0004000001");
        assert_eq!(EventId::parse(b"0167A15C98772C0004000001").unwrap(), id);
    }

    #[test]
    fn fields_pack_and_unpack() {
        let id = EventId::new(1_764_000_000_123, 65535, 7, 0xabcdef);
        assert_eq!(id.ts_ms(), 1_764_000_000_123);
        assert_eq!(id.node_id(), 65535);
        assert_eq!(id.worker_id(), 7);
        assert_eq!(id.counter(), 0xabcdef);
    }

    #[test]
    fn rejects_bad_ids() {
        assert_eq!(EventId::parse(b"0167"), Err(IdError::Length(4)));
        assert_eq!(
            EventId::parse(b"0167a15c98772c000400000g"),
            Err(IdError::NotHex)
        );
        assert_eq!(
            EventId::parse("0167a15c98772c00040000é".as_bytes()),
            Err(IdError::NotHex)
        );
    }

    #[test]
    fn generator_is_strictly_increasing_even_when_clock_steps_back() {
        let mut g = IdGenerator::new(3, 1);
        let a = g.next(1000);
        let b = g.next(1000);
        let c = g.next(999);
        let d = g.next(1001);
        assert!(a < b && b < c && c < d, "{a} {b} {c} {d}");
        assert!(a.to_hex() < b.to_hex() && c.to_hex() < d.to_hex());
        assert_eq!(d.counter(), 0);
    }

    #[test]
    fn generator_borrows_next_millisecond_when_counter_fills() {
        let mut g = IdGenerator::new(0, 0);
        g.next(5);
        g.counter = COUNTER_MAX;
        let id = g.next(5);
        assert_eq!((id.ts_ms(), id.counter()), (6, 0));
    }

    #[test]
    fn ids_differ_across_workers_and_nodes() {
        let a = IdGenerator::new(1, 0).next(42);
        let b = IdGenerator::new(1, 1).next(42);
        let c = IdGenerator::new(2, 0).next(42);
        assert!(a != b && a != c && b != c);
    }
}
