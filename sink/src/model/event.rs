//! The event the edge emits for every visit, click-through and conversion.
//!
//! One allocation per event: the request's raw head (and body) are copied into `data`, the
//! request facts are spans into it, and the values the edge resolved (campaign, offer, the
//! remapped parameters, the conversion's fields) are appended after it. Turning that into
//! columns is the sink's work, off the request path.

use std::net::IpAddr;

use crate::model::ack::AckSender;
use crate::model::id::EventId;

mod codec;
pub use codec::DecodeError;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// A campaign URL was visited (`/c/{campaign_id}`).
    Visit,
    /// A landing page's call-to-action was followed (`/click`).
    Click,
    /// A conversion reported server to server (`/postback`).
    Postback,
    /// A conversion reported by a browser pixel (`a.gif`, `p.gif`).
    Pixel,
}

impl EventKind {
    pub const ALL: [EventKind; 4] = [
        EventKind::Visit,
        EventKind::Click,
        EventKind::Postback,
        EventKind::Pixel,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Visit => "visit",
            EventKind::Click => "click",
            EventKind::Postback => "postback",
            EventKind::Pixel => "pixel",
        }
    }

    pub fn is_conversion(self) -> bool {
        matches!(self, EventKind::Postback | EventKind::Pixel)
    }
}

/// What a conversion proved about who sent it, as the edge checked it against the config.
/// Whether it counts is decided at query time against its click's visit (docs/query.md "Trust").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(u8)]
pub enum Auth {
    /// It carried no postback token, while some network requires one (pixels always).
    #[default]
    NoToken = 0,
    /// No network of the config requires a token: nothing could be checked.
    Open = 1,
    /// It carried the postback token of the network in [`Field::NetworkId`].
    Token = 2,
}

impl Auth {
    pub const ALL: [Auth; 3] = [Auth::NoToken, Auth::Open, Auth::Token];

    pub fn as_str(self) -> &'static str {
        match self {
            Auth::NoToken => "none",
            Auth::Open => "open",
            Auth::Token => "token",
        }
    }
}

/// Whether a network's pixels count, and with whose payout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Pixels {
    /// Pixel conversions do not count.
    Off = 0,
    /// They count with the offer's default payout; the pixel's own is ignored.
    DefaultPayout = 1,
    /// They count with the payout they carry.
    Payout = 2,
}

impl Pixels {
    pub const ALL: [Pixels; 3] = [Pixels::Off, Pixels::DefaultPayout, Pixels::Payout];

    pub fn as_str(self) -> &'static str {
        match self {
            Pixels::Off => "off",
            Pixels::DefaultPayout => "default_payout",
            Pixels::Payout => "payout",
        }
    }

    pub fn parse(s: &str) -> Option<Pixels> {
        Pixels::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

/// How the network of a visit's (or click's) offer takes conversions, as it stood when the
/// visit was answered: stored with the visit so a query can judge its conversions without
/// the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NetworkPolicy {
    /// Postbacks must carry the network's token.
    pub token: bool,
    pub pixels: Pixels,
}

impl NetworkPolicy {
    /// One byte: 0 for none, else 1 | token << 1 | pixels << 2.
    pub fn to_byte(p: Option<NetworkPolicy>) -> u8 {
        p.map_or(0, |p| {
            1 | (u8::from(p.token) << 1) | ((p.pixels as u8) << 2)
        })
    }

    pub(crate) fn from_byte(b: u8) -> Result<Option<NetworkPolicy>, ()> {
        if b == 0 {
            return Ok(None);
        }
        if b & 1 == 0 || b >> 4 != 0 {
            return Err(());
        }
        let pixels = *Pixels::ALL.get(usize::from((b >> 2) & 3)).ok_or(())?;
        Ok(Some(NetworkPolicy {
            token: b & 2 != 0,
            pixels,
        }))
    }
}

/// The byte fields an event carries, each a span of `Event::data`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Field {
    // Facts of the request, as received.
    Method,
    /// The request target (path and query), raw.
    Target,
    Host,
    Referer,
    UserAgent,
    AcceptLanguage,
    ForwardedFor,
    /// A POST's form body.
    Body,
    // What the edge resolved from the routing.
    CampaignId,
    TrafficSourceId,
    OfferId,
    /// The offer's network; on a conversion, the network whose postback token it carried.
    NetworkId,
    LandingPageId,
    /// The URL the visitor was redirected to.
    Location,
    /// The traffic source's remapped parameters, see [`Event::remapped`].
    Remapped,
    // A conversion's fields, decoded.
    ClickId,
    ConversionType,
    TxId,
    Status,
    /// The offer's link the visitor was sent to (for an offer with several).
    OfferLinkId,
}

/// Number of [`Field`]s.
pub const FIELD_COUNT: usize = Field::OfferLinkId as usize + 1;

/// A range of `Event::data`; `len == 0` is an absent or empty field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    pub start: u32,
    pub len: u32,
}

/// One visit, click-through or conversion.
#[derive(Debug)]
pub struct Event {
    pub kind: EventKind,
    /// The event's own id; for a visit it is also the click id handed to the offer.
    pub id: EventId,
    /// The address of the peer that sent the request.
    pub peer: IpAddr,
    /// The visit's cost, in millionths of the currency unit.
    pub cost_micros: i64,
    /// A conversion's payout in millionths, when it carried one.
    pub payout_micros: Option<i64>,
    /// Index of the campaign path taken (visits and clicks).
    pub path_index: Option<u16>,
    /// Visits and clicks: how the offer's network takes conversions (none without one).
    pub network_policy: Option<NetworkPolicy>,
    /// Conversions: what the request proved about its sender.
    pub auth: Auth,
    /// Set when someone waits for this event to be durable (a conversion's answer).
    pub ack: Option<AckSender>,
    data: Vec<u8>,
    spans: [Span; FIELD_COUNT],
}

impl Event {
    /// Starts an event whose data begins with `raw` (the request head and body, as received);
    /// `capacity` more bytes are reserved for the fields appended later.
    pub fn new(kind: EventKind, id: EventId, peer: IpAddr, raw: &[u8], capacity: usize) -> Self {
        let mut data = Vec::with_capacity(raw.len() + capacity);
        data.extend_from_slice(raw);
        Event {
            kind,
            id,
            peer,
            cost_micros: 0,
            payout_micros: None,
            path_index: None,
            network_policy: None,
            auth: Auth::NoToken,
            ack: None,
            data,
            spans: [Span::default(); FIELD_COUNT],
        }
    }

    /// Timestamp (Unix milliseconds) taken from the id.
    pub fn ts_ms(&self) -> u64 {
        self.id.ts_ms()
    }

    /// Points `field` at `raw[start..start + len]` of the bytes given to [`Event::new`].
    pub fn set_raw(&mut self, field: Field, start: usize, len: usize) {
        debug_assert!(start + len <= self.data.len());
        self.spans[field as usize] = Span {
            start: start as u32,
            len: len as u32,
        };
    }

    /// Appends `value` as `field`.
    pub fn push(&mut self, field: Field, value: &[u8]) {
        let start = self.data.len();
        self.data.extend_from_slice(value);
        self.set_raw(field, start, value.len());
    }

    /// Appends a field built by `write`, which appends its bytes to the vector it is given.
    pub fn push_with(&mut self, field: Field, write: impl FnOnce(&mut Vec<u8>)) {
        let start = self.data.len();
        write(&mut self.data);
        let len = self.data.len() - start;
        self.set_raw(field, start, len);
    }

    /// The bytes of `field` (empty when absent).
    pub fn get(&self, field: Field) -> &[u8] {
        let s = self.spans[field as usize];
        &self.data[s.start as usize..(s.start + s.len) as usize]
    }

    /// Writes the remapped parameters as `name`/`value` pairs (values decoded).
    pub fn push_remapped<'a>(&mut self, pairs: impl IntoIterator<Item = (&'a [u8], &'a [u8])>) {
        self.push_with(Field::Remapped, |out| {
            for (name, value) in pairs {
                encode_pair(out, name, value);
            }
        });
    }

    /// The remapped parameters, in the traffic source's order.
    pub fn remapped(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        pairs(self.get(Field::Remapped))
    }

    /// Bytes held by the event, for queue accounting.
    pub fn heap_bytes(&self) -> usize {
        self.data.capacity()
    }
}

/// Writes `ip` as text into `buf` without allocating (the longest IPv6 form fits).
pub fn format_ip(ip: IpAddr, buf: &mut [u8; 64]) -> &str {
    if let IpAddr::V4(v4) = ip {
        // Most visitors: digits written directly, a tenth of the cost of the formatter.
        let mut n = 0;
        for (i, octet) in v4.octets().into_iter().enumerate() {
            if i > 0 {
                buf[n] = b'.';
                n += 1;
            }
            if octet >= 100 {
                buf[n] = b'0' + octet / 100;
                n += 1;
            }
            if octet >= 10 {
                buf[n] = b'0' + octet / 10 % 10;
                n += 1;
            }
            buf[n] = b'0' + octet % 10;
            n += 1;
        }
        return std::str::from_utf8(&buf[..n]).unwrap_or_default();
    }
    let mut cur = std::io::Cursor::new(&mut buf[..]);
    let n = match std::io::Write::write_fmt(&mut cur, format_args!("{ip}")) {
        Ok(()) => cur.position() as usize,
        Err(_) => 0,
    };
    std::str::from_utf8(&buf[..n]).unwrap_or_default()
}

/// Appends one remapped `name`/`value` pair in the layout of [`Field::Remapped`], for
/// callers that build the field in their own buffer and [`Event::push`] it.
pub fn encode_pair(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    write_piece(out, name);
    write_piece(out, value);
}

/// The (name, value) pairs [`encode_pair`] wrote.
pub fn pairs(mut rest: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    std::iter::from_fn(move || {
        let name = read_piece(&mut rest)?;
        let value = read_piece(&mut rest)?;
        Some((name, value))
    })
}

/// Length-prefixed piece: u16 little-endian length, then the bytes (cut at 65535).
fn write_piece(out: &mut Vec<u8>, piece: &[u8]) {
    let piece = &piece[..piece.len().min(u16::MAX as usize)];
    out.extend_from_slice(&(piece.len() as u16).to_le_bytes());
    out.extend_from_slice(piece);
}

fn read_piece<'a>(rest: &mut &'a [u8]) -> Option<&'a [u8]> {
    let (len, tail) = rest.split_first_chunk::<2>()?;
    let len = u16::from_le_bytes(*len) as usize;
    let piece = tail.get(..len)?;
    *rest = &tail[len..];
    Some(piece)
}

/// A device class, as rules and reports use it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceType {
    Desktop,
    Mobile,
    Tablet,
}

impl DeviceType {
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceType::Desktop => "desktop",
            DeviceType::Mobile => "mobile",
            DeviceType::Tablet => "tablet",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn formats_addresses_without_allocating() {
        let mut buf = [0u8; 64];
        assert_eq!(
            format_ip(IpAddr::V4(Ipv4Addr::new(8, 8, 4, 4)), &mut buf),
            "8.8.4.4"
        );
        let v6: IpAddr = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff".parse().unwrap();
        assert_eq!(
            format_ip(v6, &mut buf),
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
        );
        // Every octet value, in every position, as the standard formatter writes it.
        for v in 0..=255u8 {
            for ip in [
                Ipv4Addr::new(v, 0, 255, 7),
                Ipv4Addr::new(10, v, 99, 100),
                Ipv4Addr::new(1, 2, v, 3),
                Ipv4Addr::new(255, 9, 10, v),
            ] {
                assert_eq!(format_ip(IpAddr::V4(ip), &mut buf), ip.to_string());
            }
        }
    }

    #[test]
    fn network_policies_fit_in_a_byte() {
        assert_eq!(
            NetworkPolicy::from_byte(NetworkPolicy::to_byte(None)),
            Ok(None)
        );
        for token in [false, true] {
            for pixels in Pixels::ALL {
                let p = Some(NetworkPolicy { token, pixels });
                assert_eq!(NetworkPolicy::from_byte(NetworkPolicy::to_byte(p)), Ok(p));
            }
        }
        for bad in [2, 0x0d, 0x10, 0xff] {
            assert!(NetworkPolicy::from_byte(bad).is_err(), "{bad:#x}");
        }
        assert_eq!(Pixels::parse("default_payout"), Some(Pixels::DefaultPayout));
        assert_eq!(Pixels::parse("on"), None);
    }

    #[test]
    fn fields_point_into_raw_and_appended_bytes() {
        let raw = b"GET /c/x?a=1 HTTP/1.1\r\nHost: h\r\n\r\n";
        let mut e = Event::new(
            EventKind::Visit,
            EventId::new(1, 2, 3, 4),
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            raw,
            64,
        );
        e.set_raw(Field::Method, 0, 3);
        e.set_raw(Field::Target, 4, 8);
        e.push(Field::CampaignId, b"camp");
        e.push_remapped([(&b"source"[..], &b"blog"[..]), (&b"var_2"[..], &b""[..])]);
        e.push(Field::OfferId, b"offer");
        assert_eq!(e.get(Field::Method), b"GET");
        assert_eq!(e.get(Field::Target), b"/c/x?a=1");
        assert_eq!(e.get(Field::CampaignId), b"camp");
        assert_eq!(e.get(Field::OfferId), b"offer");
        assert_eq!(e.get(Field::Referer), b"");
        let pairs: Vec<_> = e.remapped().collect();
        assert_eq!(
            pairs,
            vec![(&b"source"[..], &b"blog"[..]), (&b"var_2"[..], &b""[..])]
        );
    }
}
