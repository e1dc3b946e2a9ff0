//! Click-throughs: how `/click?cid=` finds the visit a landing page was shown for.
//!
//! The edge keeps no database, and a click-through can land on any worker of any node. So a
//! visit sent to a landing page leaves what its click-through needs (campaign, path, cost and
//! the traffic source's parameters: [`ClickState`]) in two places:
//!
//! - **a signed cookie** set with the visit's 302, `ct_{campaign_id}`, scoped to `/click`. The
//!   browser brings it back to whichever node the click-through reaches, for a day. It is
//!   signed with a keyed BLAKE3 hash of the node's `click_secret` (nodes behind one balancer
//!   share it), so a forged or altered cookie is refused;
//! - **the node's click cache**, for visitors whose browsers do not send the cookie back: one
//!   ring per worker, a four-way set-associative cache keyed by the click id, which every
//!   worker reads without locks (a sequence lock per slot). It holds about a worker's last
//!   [`SLOTS_PER_WORKER`] landing-page visits.
//!
//! A click id found in neither is unknown: `fallback_url` or 404.

use std::sync::atomic::{AtomicU64, Ordering, fence};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sink::EventId;
use sink::model::ct_eq;
use sink::visitors::huge::HugeSlice;

/// Slots in each worker's ring (a power of two).
pub const SLOTS_PER_WORKER: usize = 1 << 16;
/// Data words in a slot (after its sequence word): 31 × 8 = 248 bytes, so a slot is 256
/// bytes.
const WORDS: usize = 31;
/// The largest encoded state a slot holds (the first two bytes are its length).
const SLOT_BYTES: usize = WORDS * 8 - 2;
/// Bytes of the signature.
const MAC_LEN: usize = 16;
/// Longest cookie value: browsers keep cookies up to 4096 bytes, name included.
const MAX_COOKIE_VALUE: usize = 3800;
const VERSION: u8 = 1;
/// The cookie name's prefix; the campaign id follows (ids are valid cookie-name characters).
pub const COOKIE_PREFIX: &[u8] = b"ct_";
/// How long a browser keeps a visit's state.
pub const COOKIE_MAX_AGE_S: u32 = 86_400;

/// What a click-through needs of its visit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClickState<'a> {
    /// The visit's id: the click id the landing page passes on.
    pub click_id: EventId,
    pub campaign_id: &'a [u8],
    /// The path the visit took (its landing page and offers).
    pub path_index: u16,
    pub cost_micros: i64,
    /// The traffic source's parameters as the visit event holds them (name/value pieces).
    pub remapped: &'a [u8],
}

impl<'a> ClickState<'a> {
    /// Appends the binary form; false (and nothing appended) when a part is too long for it.
    pub fn encode(&self, out: &mut Vec<u8>) -> bool {
        if self.campaign_id.len() > usize::from(u8::MAX)
            || self.remapped.len() > usize::from(u16::MAX)
        {
            return false;
        }
        out.push(VERSION);
        out.extend_from_slice(&self.click_id.0);
        out.extend_from_slice(&self.path_index.to_le_bytes());
        out.extend_from_slice(&self.cost_micros.to_le_bytes());
        out.push(self.campaign_id.len() as u8);
        out.extend_from_slice(self.campaign_id);
        out.extend_from_slice(&(self.remapped.len() as u16).to_le_bytes());
        out.extend_from_slice(self.remapped);
        true
    }

    /// Reads what [`ClickState::encode`] wrote; `None` for anything else.
    pub fn decode(buf: &'a [u8]) -> Option<ClickState<'a>> {
        let (&version, rest) = buf.split_first()?;
        if version != VERSION {
            return None;
        }
        let (id, rest) = rest.split_first_chunk::<12>()?;
        let (path, rest) = rest.split_first_chunk::<2>()?;
        let (cost, rest) = rest.split_first_chunk::<8>()?;
        let (&clen, rest) = rest.split_first()?;
        let (campaign_id, rest) = rest.split_at_checked(usize::from(clen))?;
        let (rlen, rest) = rest.split_first_chunk::<2>()?;
        let rlen = usize::from(u16::from_le_bytes(*rlen));
        if rest.len() != rlen {
            return None;
        }
        Some(ClickState {
            click_id: EventId(*id),
            campaign_id,
            path_index: u16::from_le_bytes(*path),
            cost_micros: i64::from_le_bytes(*cost),
            remapped: rest,
        })
    }
}

/// Signs and checks click states.
#[derive(Clone)]
pub struct Signer {
    key: [u8; 32],
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(..)")
    }
}

impl Signer {
    /// A signer whose key is derived from `secret` (any length; nodes that must read each
    /// other's cookies share it).
    pub fn new(secret: &[u8]) -> Self {
        Signer {
            key: blake3::derive_key("clicktracker 2026-11 click-through state", secret),
        }
    }

    fn mac(&self, data: &[u8]) -> [u8; MAC_LEN] {
        let full = blake3::keyed_hash(&self.key, data);
        let mut mac = [0u8; MAC_LEN];
        mac.copy_from_slice(&full.as_bytes()[..MAC_LEN]);
        mac
    }

    /// Appends a state encoded by [`ClickState::encode`], signed and base64url-encoded: a
    /// cookie value. `scratch` is reused. False when it is too long for a cookie.
    pub fn seal(&self, encoded: &[u8], scratch: &mut Vec<u8>, out: &mut Vec<u8>) -> bool {
        scratch.clear();
        scratch.extend_from_slice(encoded);
        let mac = self.mac(scratch);
        scratch.extend_from_slice(&mac);
        if scratch.len().div_ceil(3) * 4 > MAX_COOKIE_VALUE {
            return false;
        }
        let at = out.len();
        out.resize(at + scratch.len().div_ceil(3) * 4, 0);
        match URL_SAFE_NO_PAD.encode_slice(&scratch[..], &mut out[at..]) {
            Ok(n) => {
                out.truncate(at + n);
                true
            }
            Err(_) => {
                out.truncate(at);
                false
            }
        }
    }

    /// The state in a cookie value that this signer (or a node sharing its secret) sealed.
    /// `buf` receives the decoded bytes the state borrows.
    pub fn open<'b>(&self, value: &[u8], buf: &'b mut Vec<u8>) -> Option<ClickState<'b>> {
        if value.len() > MAX_COOKIE_VALUE {
            return None;
        }
        buf.clear();
        URL_SAFE_NO_PAD.decode_vec(value, buf).ok()?;
        let n = buf.len().checked_sub(MAC_LEN)?;
        let (data, mac) = buf.split_at(n);
        if !ct_eq(&self.mac(data), mac) {
            return None;
        }
        // What stays in `buf` is the encoded state alone.
        buf.truncate(n);
        ClickState::decode(buf)
    }
}

/// Finds `ct_{campaign}` cookies in a `Cookie` header: (campaign id, value) pairs.
pub fn cookies(header: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    header.split(|&c| c == b';').filter_map(|pair| {
        let pair = pair.trim_ascii();
        let eq = pair.iter().position(|&c| c == b'=')?;
        let (name, value) = (&pair[..eq], &pair[eq + 1..]);
        let campaign = name.strip_prefix(COOKIE_PREFIX)?;
        let value = value
            .strip_prefix(b"\"")
            .and_then(|v| v.strip_suffix(b"\""))
            .unwrap_or(value);
        Some((campaign, value))
    })
}

/// What a node keeps for click-throughs: its click cache and the signer of the cookies.
#[derive(Debug)]
pub struct Clicks {
    pub cache: ClickCache,
    pub signer: Signer,
}

impl Clicks {
    /// Fails only when the click cache's memory cannot be mapped.
    pub fn new(workers: usize, secret: &[u8]) -> std::io::Result<Self> {
        Ok(Clicks {
            cache: ClickCache::new(workers)?,
            signer: Signer::new(secret),
        })
    }
}

/// One slot of a ring: a sequence word (odd while it is written) and the data.
struct Slot {
    seq: AtomicU64,
    words: [AtomicU64; WORDS],
}

/// A worker's ring, and beside it the time of the click id each slot holds (to pick the slot
/// of a set to reuse, and to skip slots without reading them): a set's stamps share one cache
/// line.
struct Ring {
    stamps: HugeSlice<AtomicU64>,
    slots: HugeSlice<Slot>,
}

/// Slots a click id may live in (neighbours).
const WAYS: usize = 4;

/// The node's click cache: one ring per worker, each written by its worker only and read by
/// all without locks. A click id may live in one of `WAYS` neighbouring slots chosen by its
/// hash (a set): a new state takes the one holding the oldest id, so a ring keeps about its
/// last [`SLOTS_PER_WORKER`] landing-page visits whatever the rate.
pub struct ClickCache {
    rings: Vec<Ring>,
}

impl std::fmt::Debug for ClickCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClickCache")
            .field("workers", &self.rings.len())
            .finish()
    }
}

fn new_ring() -> std::io::Result<Ring> {
    // Zeroed memory mapped lazily (a node that serves no landing pages never touches its
    // rings) and backed by huge pages where the kernel allows (a put lands anywhere in 16 MiB).
    // SAFETY: `AtomicU64` and `Slot` (only `AtomicU64`s) are valid as all-zero bytes.
    unsafe {
        Ok(Ring {
            stamps: HugeSlice::zeroed(SLOTS_PER_WORKER)?,
            slots: HugeSlice::zeroed(SLOTS_PER_WORKER)?,
        })
    }
}

/// The first of the slots `id` may live in. Ids are not spread by their counter alone
/// (it restarts every millisecond), so time and counter are mixed.
fn set_of(id: &EventId) -> usize {
    let x = id.ts_ms().wrapping_mul(0x9e37_79b9_7f4a_7c15)
        ^ u64::from(id.counter()).wrapping_mul(0xc2b2_ae3d_27d4_eb4f);
    ((x ^ (x >> 29)) as usize % SLOTS_PER_WORKER) & !(WAYS - 1)
}

impl ClickCache {
    pub fn new(workers: usize) -> std::io::Result<Self> {
        Ok(ClickCache {
            rings: (0..workers).map(|_| new_ring()).collect::<Result<_, _>>()?,
        })
    }

    /// The stamps and slots of the set `id` may live in.
    fn set(&self, id: &EventId) -> Option<(&[AtomicU64], &[Slot])> {
        let ring = self.rings.get(usize::from(id.worker_id()))?;
        let at = set_of(id);
        Some((&ring.stamps[at..at + WAYS], &ring.slots[at..at + WAYS]))
    }

    /// Records an encoded state under its click id. Only the worker that minted the id may
    /// call this (one writer per ring). False when it does not fit a slot.
    pub fn put(&self, id: &EventId, encoded: &[u8]) -> bool {
        if encoded.len() > SLOT_BYTES {
            return false;
        }
        let Some((stamps, slots)) = self.set(id) else {
            return false;
        };
        // The slot holding the oldest click (an empty one has stamp 0).
        let way = (0..WAYS)
            .min_by_key(|&i| stamps[i].load(Ordering::Relaxed))
            .expect("a set is never empty");
        let slot = &slots[way];
        let mut bytes = [0u8; WORDS * 8];
        bytes[..2].copy_from_slice(&(encoded.len() as u16).to_le_bytes());
        bytes[2..2 + encoded.len()].copy_from_slice(encoded);
        let used = (2 + encoded.len()).div_ceil(8);
        let seq = slot.seq.load(Ordering::Relaxed);
        slot.seq.store(seq.wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::Release);
        for (w, chunk) in slot.words.iter().zip(bytes.chunks_exact(8)).take(used) {
            w.store(
                u64::from_le_bytes(chunk.try_into().expect("8 bytes")),
                Ordering::Relaxed,
            );
        }
        stamps[way].store(id.ts_ms().max(1), Ordering::Relaxed);
        slot.seq.store(seq.wrapping_add(2), Ordering::Release);
        true
    }

    /// Copies the state recorded for `id` into `buf`, if one of its slots still holds it.
    pub fn get<'b>(&self, id: &EventId, buf: &'b mut Vec<u8>) -> Option<ClickState<'b>> {
        let (stamps, slots) = self.set(id)?;
        // A slot stamped with another time cannot hold it: skip it without reading it.
        (0..WAYS)
            .filter(|&i| stamps[i].load(Ordering::Relaxed) == id.ts_ms().max(1))
            .find(|&i| read_slot(&slots[i], id, buf))?;
        ClickState::decode(buf)
    }
}

/// Copies `slot`'s state into `buf` when it is whole and belongs to `id`.
fn read_slot(slot: &Slot, id: &EventId, buf: &mut Vec<u8>) -> bool {
    let mut bytes = [0u8; WORDS * 8];
    let before = slot.seq.load(Ordering::Acquire);
    if before % 2 == 1 || before == 0 {
        return false;
    }
    for (w, chunk) in slot.words.iter().zip(bytes.chunks_exact_mut(8)) {
        chunk.copy_from_slice(&w.load(Ordering::Relaxed).to_le_bytes());
    }
    fence(Ordering::Acquire);
    if slot.seq.load(Ordering::Relaxed) != before {
        return false;
    }
    let len = usize::from(u16::from_le_bytes([bytes[0], bytes[1]]));
    if len > SLOT_BYTES {
        return false;
    }
    let state = &bytes[2..2 + len];
    if ClickState::decode(state).is_none_or(|s| s.click_id != *id) {
        return false;
    }
    buf.clear();
    buf.extend_from_slice(state);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state<'a>(id: EventId, remapped: &'a [u8]) -> ClickState<'a> {
        ClickState {
            click_id: id,
            campaign_id: b"camp-1",
            path_index: 3,
            cost_micros: 1_250_000,
            remapped,
        }
    }

    #[test]
    fn state_round_trips_and_refuses_garbage() {
        let id = EventId::new(1_700_000_000_000, 7, 1, 42);
        let mut buf = Vec::new();
        let mut pairs = Vec::new();
        sink::model::event::encode_pair(&mut pairs, b"source", b"news letter");
        assert!(state(id, &pairs).encode(&mut buf));
        assert_eq!(ClickState::decode(&buf), Some(state(id, &pairs)));
        for cut in 0..buf.len() {
            assert_eq!(ClickState::decode(&buf[..cut]), None, "cut at {cut}");
        }
        let mut longer = buf.clone();
        longer.push(0);
        assert_eq!(ClickState::decode(&longer), None);
        buf[0] = 9;
        assert_eq!(ClickState::decode(&buf), None);
    }

    #[test]
    fn sealed_cookies_open_only_with_the_same_secret_and_unaltered() {
        let id = EventId::new(1_700_000_000_000, 7, 1, 42);
        let signer = Signer::new(b"node secret");
        let (mut scratch, mut value, mut buf) = (Vec::new(), Vec::new(), Vec::new());
        let mut enc = Vec::new();
        assert!(state(id, b"").encode(&mut enc));
        assert!(signer.seal(&enc, &mut scratch, &mut value));
        assert!(
            value
                .iter()
                .all(|c| c.is_ascii_alphanumeric() || b"-_".contains(c))
        );
        assert_eq!(signer.open(&value, &mut buf), Some(state(id, b"")));
        assert_eq!(Signer::new(b"other").open(&value, &mut buf), None);
        for i in 0..value.len() {
            let mut forged = value.clone();
            forged[i] = if forged[i] == b'A' { b'B' } else { b'A' };
            assert_eq!(signer.open(&forged, &mut buf), None, "byte {i} altered");
        }
        assert_eq!(signer.open(b"", &mut buf), None);
        assert_eq!(signer.open(b"!!!", &mut buf), None);
    }

    #[test]
    fn states_too_long_for_a_cookie_are_not_sealed() {
        let id = EventId::new(1_700_000_000_000, 7, 1, 42);
        let signer = Signer::new(b"s");
        let long = vec![b'x'; 4000];
        let (mut scratch, mut value, mut enc) = (Vec::new(), Vec::new(), Vec::new());
        assert!(state(id, &long).encode(&mut enc));
        assert!(!signer.seal(&enc, &mut scratch, &mut value));
        assert!(value.is_empty());
    }

    #[test]
    fn cookie_header_yields_campaign_cookies_only() {
        let h = b"a=1; ct_camp-1=AAA; ct_x=\"BBB\";ct_=C; other=ct_no";
        let got: Vec<_> = cookies(h).collect();
        assert_eq!(
            got,
            vec![
                (&b"camp-1"[..], &b"AAA"[..]),
                (&b"x"[..], &b"BBB"[..]),
                (&b""[..], &b"C"[..])
            ]
        );
    }

    #[test]
    fn table_keeps_the_latest_visits_whatever_the_rate() {
        let t = ClickCache::new(2).unwrap();
        let mut enc = Vec::new();
        let mut buf = Vec::new();
        // Three rings' worth of visits, 300 a millisecond (counters restart every ms).
        let ids: Vec<EventId> = (0..3 * SLOTS_PER_WORKER as u64)
            .map(|n| EventId::new(1_700_000_000_000 + n / 300, 7, 1, (n % 300) as u32))
            .collect();
        for id in &ids {
            enc.clear();
            assert!(state(*id, b"").encode(&mut enc));
            assert!(t.put(id, &enc));
        }
        let recent = &ids[ids.len() - 4096..];
        let found = recent
            .iter()
            .filter(|id| t.get(id, &mut buf).is_some())
            .count();
        assert_eq!(found, recent.len(), "the last 4096 visits are all there");
        let last_ring = &ids[ids.len() - SLOTS_PER_WORKER..];
        let kept = last_ring
            .iter()
            .filter(|id| t.get(id, &mut buf).is_some())
            .count();
        assert!(
            kept * 10 > last_ring.len() * 7,
            "most of the last ring's worth: {kept}"
        );
        assert_eq!(t.get(&ids[0], &mut buf), None, "the oldest are gone");
        assert_eq!(
            t.get(ids.last().unwrap(), &mut buf).map(|s| s.click_id),
            ids.last().copied()
        );
        // Another worker's id with the same time and counter lives in another ring.
        let other = EventId::new(ids[5].ts_ms(), 7, 0, ids[5].counter());
        assert_eq!(t.get(&other, &mut buf), None);
        // A worker id past the table and an oversized state are refused.
        assert!(!t.put(&EventId::new(1, 7, 9, 1), &enc));
        assert!(!t.put(&ids[0], &[0u8; SLOT_BYTES + 1]));
    }

    #[test]
    fn readers_never_see_a_torn_state() {
        let t = std::sync::Arc::new(ClickCache::new(1).unwrap());
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        // One id, rewritten over and over with a different fill each time.
        let id = EventId::new(1_700_000_000_000, 7, 0, 1);
        let reader = {
            let (t, stop) = (t.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let mut seen = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    if let Some(s) = t.get(&id, &mut buf) {
                        let first = s.remapped[0];
                        assert!(s.remapped.iter().all(|&b| b == first), "torn");
                        assert_eq!(s.remapped.len(), 200);
                        seen += 1;
                    }
                }
                seen
            })
        };
        let mut enc = Vec::new();
        for i in 0..200_000u32 {
            let fill = [i as u8; 200];
            enc.clear();
            assert!(state(id, &fill).encode(&mut enc));
            assert!(t.put(&id, &enc));
        }
        stop.store(true, Ordering::Relaxed);
        assert!(reader.join().expect("reader") > 0);
    }
}
