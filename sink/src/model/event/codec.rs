//! The event's binary form, as written to the write-ahead log.
//!
//! Layout (little-endian): version u8, kind u8, id [12], peer (4 → v4 | 6 → v6, then the
//! address), cost i64, payout flag u8 + i64, path index flag u8 + u16, network policy u8
//! ([`NetworkPolicy::to_byte`]), auth u8 ([`Auth`]), the spans (`FIELD_COUNT` × (start u32,
//! len u32)), data length u32, data. Versions 1 and 2 are still read: version 2 has one span
//! fewer (written before [`Field::OfferLinkId`](super::Field::OfferLinkId)); version 1 also
//! lacks the policy and auth bytes (no policy, and `Auth::Open`: its conversions passed the
//! token check of their time).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{Auth, Event, EventKind, FIELD_COUNT, NetworkPolicy, Span};
use crate::model::id::EventId;

const VERSION: u8 = 3;

/// Spans in a version 1 or 2 record: the fields before `OfferLinkId`.
const V2_FIELDS: usize = super::Field::OfferLinkId as usize;

/// Why bytes are not an encoded event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("truncated event record")]
    Truncated,
    #[error("unknown event record version {0}")]
    Version(u8),
    #[error("invalid event record: {0}")]
    Invalid(&'static str),
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.0.len() < n {
            return Err(DecodeError::Truncated);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn i64(&mut self) -> Result<i64, DecodeError> {
        Ok(i64::from_le_bytes(self.array()?))
    }
}

/// The fixed head of a record: its version (1 to 3), kind and id.
fn header(r: &mut Reader<'_>) -> Result<(u8, EventKind, EventId), DecodeError> {
    let version = r.u8()?;
    if !(1..=VERSION).contains(&version) {
        return Err(DecodeError::Version(version));
    }
    let kind = *EventKind::ALL
        .get(r.u8()? as usize)
        .ok_or(DecodeError::Invalid("kind"))?;
    Ok((version, kind, EventId(r.array()?)))
}

impl Event {
    /// Appends the event's binary form to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.reserve(64 + FIELD_COUNT * 8 + self.data.len());
        out.push(VERSION);
        out.push(self.kind as u8);
        out.extend_from_slice(&self.id.0);
        match self.peer {
            IpAddr::V4(a) => {
                out.push(4);
                out.extend_from_slice(&a.octets());
            }
            IpAddr::V6(a) => {
                out.push(6);
                out.extend_from_slice(&a.octets());
            }
        }
        out.extend_from_slice(&self.cost_micros.to_le_bytes());
        out.push(u8::from(self.payout_micros.is_some()));
        out.extend_from_slice(&self.payout_micros.unwrap_or(0).to_le_bytes());
        out.push(u8::from(self.path_index.is_some()));
        out.extend_from_slice(&self.path_index.unwrap_or(0).to_le_bytes());
        out.push(NetworkPolicy::to_byte(self.network_policy));
        out.push(self.auth as u8);
        for s in &self.spans {
            out.extend_from_slice(&s.start.to_le_bytes());
            out.extend_from_slice(&s.len.to_le_bytes());
        }
        out.extend_from_slice(&(self.data.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.data);
    }

    /// The kind and id of an encoded event, read from its fixed header without decoding it.
    pub fn peek(bytes: &[u8]) -> Result<(EventKind, EventId), DecodeError> {
        let (_, kind, id) = header(&mut Reader(bytes))?;
        Ok((kind, id))
    }

    /// Reads an event written by [`Event::encode`]; every span is checked against the data.
    pub fn decode(bytes: &[u8]) -> Result<Event, DecodeError> {
        let mut r = Reader(bytes);
        let (version, kind, id) = header(&mut r)?;
        let peer = match r.u8()? {
            4 => IpAddr::V4(Ipv4Addr::from(r.array::<4>()?)),
            6 => IpAddr::V6(Ipv6Addr::from(r.array::<16>()?)),
            _ => return Err(DecodeError::Invalid("peer address")),
        };
        let cost_micros = r.i64()?;
        let has_payout = r.u8()? != 0;
        let payout = r.i64()?;
        let has_path = r.u8()? != 0;
        let path = u16::from_le_bytes(r.array()?);
        let (network_policy, auth) = if version == 1 {
            (None, Auth::Open)
        } else {
            let policy = NetworkPolicy::from_byte(r.u8()?)
                .map_err(|()| DecodeError::Invalid("network policy"))?;
            let auth = *Auth::ALL
                .get(usize::from(r.u8()?))
                .ok_or(DecodeError::Invalid("auth"))?;
            (policy, auth)
        };
        let mut spans = [Span::default(); FIELD_COUNT];
        let written = if version < 3 { V2_FIELDS } else { FIELD_COUNT };
        for s in &mut spans[..written] {
            *s = Span {
                start: r.u32()?,
                len: r.u32()?,
            };
        }
        let len = r.u32()? as usize;
        let data = r.take(len)?.to_vec();
        if !r.0.is_empty() {
            return Err(DecodeError::Invalid("trailing bytes"));
        }
        if spans
            .iter()
            .any(|s| s.start as usize + s.len as usize > data.len())
        {
            return Err(DecodeError::Invalid("span outside the data"));
        }
        Ok(Event {
            kind,
            id,
            peer,
            cost_micros,
            payout_micros: has_payout.then_some(payout),
            path_index: has_path.then_some(path),
            network_policy,
            auth,
            ack: None,
            data,
            spans,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::event::Field;

    fn sample(kind: EventKind, peer: IpAddr) -> Event {
        let mut e = Event::new(
            kind,
            EventId::new(1_764_000_000_000, 3, 1, 9),
            peer,
            b"GET /c/x HTTP/1.1\r\n\r\n",
            64,
        );
        e.set_raw(Field::Method, 0, 3);
        e.push(Field::CampaignId, b"camp");
        e.push_remapped([(&b"source"[..], &b"blog"[..])]);
        e.cost_micros = 50_000;
        e.path_index = Some(2);
        e
    }

    #[test]
    fn round_trips() {
        for (kind, peer) in [
            (EventKind::Visit, IpAddr::V4(Ipv4Addr::new(8, 8, 8, 8))),
            (EventKind::Postback, "2001:db8::1".parse().unwrap()),
        ] {
            let mut e = sample(kind, peer);
            if kind == EventKind::Postback {
                e.payout_micros = Some(-1);
                e.path_index = None;
                e.auth = Auth::Token;
            } else {
                e.network_policy = Some(NetworkPolicy {
                    token: true,
                    pixels: super::super::Pixels::DefaultPayout,
                });
            }
            let mut buf = Vec::new();
            e.encode(&mut buf);
            let d = Event::decode(&buf).unwrap();
            assert_eq!((d.kind, d.id, d.peer), (e.kind, e.id, e.peer));
            assert_eq!(Event::peek(&buf).unwrap(), (e.kind, e.id));
            assert_eq!(
                (d.cost_micros, d.payout_micros, d.path_index),
                (e.cost_micros, e.payout_micros, e.path_index)
            );
            assert_eq!((d.network_policy, d.auth), (e.network_policy, e.auth));
            assert_eq!(d.get(Field::Method), b"GET");
            assert_eq!(d.get(Field::CampaignId), b"camp");
            assert_eq!(
                d.remapped().collect::<Vec<_>>(),
                e.remapped().collect::<Vec<_>>()
            );
        }
    }

    /// `encoded` (a version 3 record) as version 2 wrote it: without the last span.
    fn as_version_2(encoded: &[u8]) -> Vec<u8> {
        let spans_at = 1 + 1 + 12 + 1 + 4 + 8 + 1 + 8 + 1 + 2 + 1 + 1;
        let last = spans_at + (FIELD_COUNT - 1) * 8;
        let mut v2 = encoded[..last].to_vec();
        v2.extend_from_slice(&encoded[last + 8..]);
        v2[0] = 2;
        v2
    }

    #[test]
    fn version_2_records_still_decode() {
        let mut e = sample(EventKind::Visit, IpAddr::V4(Ipv4Addr::LOCALHOST));
        e.auth = Auth::NoToken;
        let mut v3 = Vec::new();
        e.encode(&mut v3);
        let d = Event::decode(&as_version_2(&v3)).unwrap();
        assert_eq!(d.auth, Auth::NoToken);
        assert_eq!(d.get(Field::CampaignId), b"camp");
        assert_eq!(d.get(Field::OfferLinkId), b"");
        // A version 3 record carries the link.
        e.push(Field::OfferLinkId, b"blog");
        let mut v3 = Vec::new();
        e.encode(&mut v3);
        assert_eq!(Event::decode(&v3).unwrap().get(Field::OfferLinkId), b"blog");
    }

    #[test]
    fn version_1_records_still_decode() {
        let mut e = sample(EventKind::Postback, IpAddr::V4(Ipv4Addr::LOCALHOST));
        e.auth = Auth::NoToken;
        let mut v3 = Vec::new();
        e.encode(&mut v3);
        let v2 = as_version_2(&v3);
        // Version 1 is version 2 without the policy and auth bytes.
        let at = 1 + 1 + 12 + 1 + 4 + 8 + 1 + 8 + 1 + 2;
        let mut v1 = v2[..at].to_vec();
        v1.extend_from_slice(&v2[at + 2..]);
        v1[0] = 1;
        let d = Event::decode(&v1).unwrap();
        assert_eq!((d.network_policy, d.auth), (None, Auth::Open));
        assert_eq!(d.get(Field::CampaignId), b"camp");
    }

    #[test]
    fn every_truncation_and_bad_span_is_an_error() {
        let mut buf = Vec::new();
        sample(EventKind::Visit, IpAddr::V4(Ipv4Addr::LOCALHOST)).encode(&mut buf);
        for cut in 0..buf.len() {
            assert!(Event::decode(&buf[..cut]).is_err(), "cut {cut}");
        }
        let mut bad = buf.clone();
        bad[0] = 9;
        assert_eq!(Event::decode(&bad).unwrap_err(), DecodeError::Version(9));
        let mut bad = buf.clone();
        bad[1] = 200;
        assert_eq!(
            Event::decode(&bad).unwrap_err(),
            DecodeError::Invalid("kind")
        );
        // The first span's length, made to reach past the data.
        let span_at = 1 + 1 + 12 + 1 + 4 + 8 + 1 + 8 + 1 + 2 + 1 + 1;
        let mut bad = buf.clone();
        bad[span_at + 4..span_at + 8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(Event::decode(&bad).is_err());
        let mut long = buf.clone();
        long.push(0);
        assert_eq!(
            Event::decode(&long).unwrap_err(),
            DecodeError::Invalid("trailing bytes")
        );
    }

    mod props {
        use super::super::super::Pixels;
        use super::*;
        use proptest::prelude::*;

        const FIELDS: [Field; FIELD_COUNT] = [
            Field::Method,
            Field::Target,
            Field::Host,
            Field::Referer,
            Field::UserAgent,
            Field::AcceptLanguage,
            Field::ForwardedFor,
            Field::Body,
            Field::CampaignId,
            Field::TrafficSourceId,
            Field::OfferId,
            Field::NetworkId,
            Field::LandingPageId,
            Field::Location,
            Field::Remapped,
            Field::ClickId,
            Field::ConversionType,
            Field::TxId,
            Field::Status,
            Field::OfferLinkId,
        ];

        fn peer() -> impl Strategy<Value = IpAddr> {
            prop_oneof![
                any::<[u8; 4]>().prop_map(|a| IpAddr::V4(Ipv4Addr::from(a))),
                any::<[u8; 16]>().prop_map(|a| IpAddr::V6(Ipv6Addr::from(a))),
            ]
        }

        fn policy() -> impl Strategy<Value = Option<NetworkPolicy>> {
            proptest::option::of(
                (
                    any::<bool>(),
                    proptest::sample::select(Pixels::ALL.to_vec()),
                )
                    .prop_map(|(token, pixels)| NetworkPolicy { token, pixels }),
            )
        }

        prop_compose! {
            /// An event with arbitrary header values, a raw part some fields point into, and
            /// fields appended after it.
            fn event()(
                kind in proptest::sample::select(EventKind::ALL.to_vec()),
                id in any::<[u8; 12]>(),
                peer in peer(),
                money in (any::<i64>(), proptest::option::of(any::<i64>())),
                path_index in proptest::option::of(any::<u16>()),
                network_policy in policy(),
                auth in proptest::sample::select(Auth::ALL.to_vec()),
                raw in proptest::collection::vec(any::<u8>(), 0..200),
                fields in proptest::collection::vec(
                    (0..FIELD_COUNT, proptest::collection::vec(any::<u8>(), 0..40), any::<bool>(), any::<(u16, u16)>()),
                    0..12,
                ),
            ) -> Event {
                let mut e = Event::new(kind, EventId(id), peer, &raw, 0);
                (e.cost_micros, e.payout_micros) = money;
                (e.path_index, e.network_policy, e.auth) = (path_index, network_policy, auth);
                for (f, value, in_raw, (a, b)) in fields {
                    if in_raw && !raw.is_empty() {
                        let start = usize::from(a) % raw.len();
                        let len = usize::from(b) % (raw.len() - start + 1);
                        e.set_raw(FIELDS[f], start, len);
                    } else {
                        e.push(FIELDS[f], &value);
                    }
                }
                e
            }
        }

        proptest! {
            #[test]
            fn events_round_trip_and_every_truncation_is_an_error(e in event()) {
                let mut buf = Vec::new();
                e.encode(&mut buf);
                let d = Event::decode(&buf).unwrap();
                prop_assert_eq!((d.kind, d.id, d.peer), (e.kind, e.id, e.peer));
                prop_assert_eq!(
                    (d.cost_micros, d.payout_micros, d.path_index),
                    (e.cost_micros, e.payout_micros, e.path_index)
                );
                prop_assert_eq!((d.network_policy, d.auth), (e.network_policy, e.auth));
                for f in FIELDS {
                    prop_assert_eq!(d.get(f), e.get(f), "{:?}", f);
                }
                prop_assert_eq!(Event::peek(&buf), Ok((e.kind, e.id)));
                for cut in 0..buf.len() {
                    prop_assert!(Event::decode(&buf[..cut]).is_err(), "cut at {}", cut);
                    prop_assert_eq!(Event::peek(&buf[..cut]).is_ok(), cut >= 14, "cut at {}", cut);
                }
            }

            /// A damaged byte never decodes into an event whose fields reach past its data.
            #[test]
            fn damaged_records_decode_or_fail_cleanly(
                e in event(),
                at in any::<proptest::sample::Index>(),
                x in 1..=u8::MAX,
            ) {
                let mut buf = Vec::new();
                e.encode(&mut buf);
                let at = at.index(buf.len());
                buf[at] ^= x;
                if let Ok(d) = Event::decode(&buf) {
                    for f in FIELDS {
                        let _ = d.get(f);
                    }
                    let _ = d.remapped().count();
                    prop_assert_eq!(Event::peek(&buf), Ok((d.kind, d.id)));
                }
            }
        }
    }
}
