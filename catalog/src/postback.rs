//! A traffic source's conversion postback: the URL template it is told conversions with, and
//! which conversions fire it (docs/postbacks.md).
//!
//! The template's tokens are a conversion's, not a request's: `{external_id}` (the source's own
//! click id, captured at the visit from `external_id_param`), `{payout}`, `{status}`, `{txid}`,
//! `{type}`, … and the source's remapped names as the visit carried them. As with the edge's
//! URLs, the scheme and host are literal and every value is percent-encoded, so no conversion
//! can send the request anywhere but where the config says.

use std::fmt::Write as _;

use crate::ConfigError;
use crate::lifecycle::Status;

/// What a postback template's `{token}` stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PostbackToken {
    /// The source's click id, from the visit's `external_id_param`.
    ExternalId,
    /// The payout the source is told (the conversion's, times `postback_payout_share`), as a
    /// decimal: `1.5`.
    Payout,
    /// The canonical status (`lead`, `sale`, …).
    Status,
    /// The status as the network sent it.
    RawStatus,
    Txid,
    /// The conversion type (`type=`), empty when none was sent.
    Type,
    CampaignId,
    /// Our click id (the visit's event id).
    ClickId,
    /// The report's event id.
    ConversionId,
    OfferId,
    NetworkId,
    Country,
    /// The key the receiver can drop repeats by (also sent as the `Idempotency-Key` header).
    IdempotencyKey,
    /// A remapped name of the source (`{zone}`), as the visit carried it.
    Param(Box<str>),
}

impl PostbackToken {
    /// The token called `name`; remapped names are checked against the source's by the
    /// caller.
    pub fn named(name: &str) -> PostbackToken {
        match name {
            "external_id" => PostbackToken::ExternalId,
            "payout" => PostbackToken::Payout,
            "status" => PostbackToken::Status,
            "raw_status" => PostbackToken::RawStatus,
            "txid" => PostbackToken::Txid,
            "type" => PostbackToken::Type,
            "campaign_id" => PostbackToken::CampaignId,
            "click_id" | "subid" => PostbackToken::ClickId,
            "conversion_id" => PostbackToken::ConversionId,
            "offer_id" => PostbackToken::OfferId,
            "network_id" => PostbackToken::NetworkId,
            "country" => PostbackToken::Country,
            "idempotency_key" => PostbackToken::IdempotencyKey,
            other => PostbackToken::Param(other.into()),
        }
    }
}

/// The built-in token names, for messages and docs.
pub const TOKENS: &[&str] = &[
    "external_id",
    "payout",
    "status",
    "raw_status",
    "txid",
    "type",
    "campaign_id",
    "click_id",
    "conversion_id",
    "offer_id",
    "network_id",
    "country",
    "idempotency_key",
];

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Lit(String),
    Tok(PostbackToken),
}

/// A parsed postback URL template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostbackUrl {
    source: String,
    pieces: Vec<Piece>,
}

/// Whether `text` still holds a part the user must fill in (`${ZEROPARK_KEY}`), and which.
pub fn placeholder(text: &str) -> Option<&str> {
    let start = text.find("${")?;
    let end = text[start..]
        .find('}')
        .map_or(text.len(), |e| start + e + 1);
    Some(&text[start..end])
}

impl PostbackUrl {
    /// Parses `text`; `remapped` are the source's remapped names (other unknown tokens are
    /// errors); `key` names the config key in errors.
    pub fn parse(text: &str, remapped: &[&str], key: &str) -> Result<PostbackUrl, ConfigError> {
        let bad = |msg: String| ConfigError::invalid(key, msg);
        if let Some(p) = placeholder(text) {
            return Err(bad(format!(
                "{p} stands for a value of your account with the source: write it in"
            )));
        }
        crate::template::check_literal_host(text, key)?;
        if text.chars().any(|c| c.is_ascii_control() || c == ' ') {
            return Err(bad(format!(
                "{text:?} holds a space or a control character"
            )));
        }
        let mut pieces = Vec::new();
        let mut lit = String::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            lit.push_str(&rest[..open]);
            let after = &rest[open + 1..];
            let close = after
                .find('}')
                .ok_or_else(|| bad(format!("{text:?}: a '{{' is not closed")))?;
            let name = &after[..close];
            let tok = PostbackToken::named(name);
            if let PostbackToken::Param(p) = &tok
                && !remapped.contains(&&**p)
            {
                return Err(bad(format!(
                    "{{{name}}} is neither a postback token ({}) nor a remapped name of this source",
                    TOKENS.join(", ")
                )));
            }
            if !lit.is_empty() {
                pieces.push(Piece::Lit(std::mem::take(&mut lit)));
            }
            pieces.push(Piece::Tok(tok));
            rest = &after[close + 1..];
        }
        if rest.contains('}') {
            return Err(bad(format!("{text:?}: a '}}' without its '{{'")));
        }
        lit.push_str(rest);
        if !lit.is_empty() {
            pieces.push(Piece::Lit(lit));
        }
        Ok(PostbackUrl {
            source: text.to_owned(),
            pieces,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The tokens it uses, in order.
    pub fn tokens(&self) -> impl Iterator<Item = &PostbackToken> {
        self.pieces.iter().filter_map(|p| match p {
            Piece::Tok(t) => Some(t),
            Piece::Lit(_) => None,
        })
    }

    /// The URL with each token's value percent-encoded (`None`: empty).
    pub fn fill<'v>(&self, mut value: impl FnMut(&PostbackToken) -> Option<&'v str>) -> String {
        let mut out = Vec::with_capacity(self.source.len() + 64);
        for p in &self.pieces {
            match p {
                Piece::Lit(l) => out.extend_from_slice(l.as_bytes()),
                Piece::Tok(t) => {
                    if let Some(v) = value(t) {
                        sink::model::url::encode_into(v.as_bytes(), &mut out);
                    }
                }
            }
        }
        // Literals come from a `&str` and every value was percent-encoded to ASCII.
        String::from_utf8(out).unwrap_or_default()
    }
}

/// Micro-units as the shortest decimal: `1500000` → `1.5`, `-250000` → `-0.25`, `0` → `0`.
pub fn decimal(micros: i64) -> String {
    let mut s = String::new();
    let (sign, abs) = if micros < 0 {
        ("-", micros.unsigned_abs())
    } else {
        ("", micros as u64)
    };
    let _ = write!(s, "{sign}{}", abs / 1_000_000);
    let frac = abs % 1_000_000;
    if frac != 0 {
        let digits = format!("{frac:06}");
        s.push('.');
        s.push_str(digits.trim_end_matches('0'));
    }
    s
}

/// A traffic source's postback as compiled: the URL and which conversions fire it.
#[derive(Debug, Clone)]
pub struct SourcePostback {
    pub url: PostbackUrl,
    /// The statuses that fire it.
    pub statuses: Vec<Status>,
    /// The conversion types that fire it (lower case); empty: all.
    pub types: Vec<Box<str>>,
    /// In millionths: the share of the payout the source is told.
    pub payout_share_ppm: u32,
    /// In millionths: the share of conversions it is told about.
    pub send_share_ppm: u32,
    pub first_only: bool,
}

/// A 64-bit hash of `s` that is the same on every build and platform (FNV-1a), unlike the
/// std hasher: what chooses the conversions a send share keeps, and names txids in keys.
pub fn stable_hash(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The statuses a source hears about when its config names none.
pub const DEFAULT_STATUSES: [Status; 2] = [Status::Lead, Status::Sale];

impl SourcePostback {
    /// Whether a report of this status and type fires it.
    pub fn fires_for(&self, status: Status, conversion_type: &str) -> bool {
        self.statuses.contains(&status)
            && (self.types.is_empty()
                || self
                    .types
                    .iter()
                    .any(|t| t.eq_ignore_ascii_case(conversion_type.trim())))
    }

    /// The payout the source is told of one the network reported (rounded to the micro).
    pub fn share_of(&self, payout_micros: i64) -> i64 {
        ((i128::from(payout_micros) * i128::from(self.payout_share_ppm) + 500_000) / 1_000_000)
            as i64
    }

    /// Whether the conversion with this key is in the share sent (a stable hash of it).
    pub fn sends(&self, conversion_key: &str) -> bool {
        if self.send_share_ppm >= 1_000_000 {
            return true;
        }
        (stable_hash(conversion_key) % 1_000_000) < u64::from(self.send_share_ppm)
    }
}

/// A share key (`postback_payout_share`, `postback_send_share`) in millionths; 0..=1.
pub fn share(v: Option<f64>, key: &str) -> Result<u32, ConfigError> {
    match v {
        None => Ok(1_000_000),
        Some(v) if (0.0..=1.0).contains(&v) => Ok((v * 1e6).round() as u32),
        Some(v) => Err(ConfigError::invalid(
            key,
            format!("{v} is not a share between 0 and 1 (0.8 = 80 %)"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_fill_encoded_and_the_host_is_literal() {
        let u = PostbackUrl::parse(
            "https://pb.example.com/cv?cid={external_id}&p={payout}&s={status}&z={zone}",
            &["zone"],
            "k",
        )
        .unwrap();
        let url = u.fill(|t| match t {
            PostbackToken::ExternalId => Some("a&b c"),
            PostbackToken::Payout => Some("1.5"),
            PostbackToken::Param(p) if &**p == "zone" => Some("z/1"),
            _ => None,
        });
        assert_eq!(
            url,
            "https://pb.example.com/cv?cid=a%26b%20c&p=1.5&s=&z=z%2F1"
        );
        for bad in [
            "https://{zone}.example.com/",
            "ftp://x/",
            "https://x/?a={nope}",
            "https://x/?a={payout",
            "https://x/?a=payout}",
            "https://x/zp/${KEY}?cid={external_id}",
            "https://x/?a=1 2",
        ] {
            assert!(PostbackUrl::parse(bad, &["zone"], "k").is_err(), "{bad}");
        }
    }

    #[test]
    fn shares_and_decimals() {
        assert_eq!(decimal(1_500_000), "1.5");
        assert_eq!(decimal(-250_000), "-0.25");
        assert_eq!(decimal(0), "0");
        assert_eq!(decimal(12_000_001), "12.000001");
        let p = SourcePostback {
            url: PostbackUrl::parse("https://x/", &[], "k").unwrap(),
            statuses: DEFAULT_STATUSES.to_vec(),
            types: vec!["sale".into()],
            payout_share_ppm: share(Some(0.8), "k").unwrap(),
            send_share_ppm: share(Some(0.5), "k").unwrap(),
            first_only: false,
        };
        assert_eq!(p.share_of(10_000_000), 8_000_000);
        assert!(p.fires_for(Status::Sale, " Sale"));
        assert!(!p.fires_for(Status::Sale, "install"));
        assert!(!p.fires_for(Status::Rejected, "sale"));
        let sent = (0..10_000).filter(|i| p.sends(&format!("c{i}"))).count();
        assert!((4_500..5_500).contains(&sent), "{sent}");
        assert!(share(Some(1.2), "k").is_err());
        assert!(share(Some(-0.1), "k").is_err());
    }
}
