//! Filling a URL template's tokens with one request's values.

use super::*;

/// Fills template tokens for one request.
pub(super) struct Fill<'a> {
    pub(super) campaign: Option<&'a Campaign>,
    pub(super) source: Option<&'a TrafficSource>,
    pub(super) offer: Option<&'a Offer>,
    pub(super) landing_page: Option<&'a LandingPage>,
    pub(super) click_id: Option<&'a [u8; 24]>,
    /// The remapped parameters' decoded values: (name index, start, length) in `values`.
    pub(super) remapped: &'a [(u16, usize, usize)],
    pub(super) values: &'a [u8],
    pub(super) peer: IpAddr,
    pub(super) visitor: Visitor<'a>,
    pub(super) cost_micros: i64,
    pub(super) ts_ms: u64,
}

pub(super) fn encode_str(s: &str, out: &mut Vec<u8>) {
    url::encode_into(s.as_bytes(), out);
}

pub(super) fn write_ip(ip: IpAddr, out: &mut Vec<u8>) {
    let mut buf = [0u8; 64];
    url::encode_into(format_ip(ip, &mut buf).as_bytes(), out);
}

impl TokenValues for Fill<'_> {
    fn write(&mut self, token: Token, out: &mut Vec<u8>) {
        match token {
            Token::ClickId => {
                if let Some(id) = self.click_id {
                    out.extend_from_slice(id);
                }
            }
            Token::CampaignId => {
                if let Some(c) = self.campaign {
                    encode_str(&c.id, out);
                }
            }
            Token::CampaignName => {
                if let Some(c) = self.campaign {
                    encode_str(&c.name, out);
                }
            }
            Token::TrafficSource => {
                if let Some(s) = self.source {
                    encode_str(&s.id, out);
                }
            }
            Token::OfferId => {
                if let Some(o) = self.offer {
                    encode_str(&o.id, out);
                }
            }
            Token::LandingPageId => {
                if let Some(l) = self.landing_page {
                    encode_str(&l.id, out);
                }
            }
            Token::Country => {
                if let Some(c) = &self.visitor.country {
                    out.extend_from_slice(c);
                }
            }
            Token::Device => {
                if let Some(d) = self.visitor.device {
                    out.extend_from_slice(d.as_str().as_bytes());
                }
            }
            Token::Os => {
                if let Some(os) = self.visitor.os {
                    encode_str(os, out);
                }
            }
            Token::Browser => {
                if let Some(b) = self.visitor.browser {
                    encode_str(b, out);
                }
            }
            Token::Ip => write_ip(self.peer, out),
            Token::Cost => money::write_decimal(self.cost_micros, out),
            Token::Ts => money::write_digits(self.ts_ms, 1, out),
            Token::Param(name) => {
                if let Some(&(_, start, len)) = self.remapped.iter().find(|r| r.0 == name) {
                    url::encode_into(&self.values[start..start + len], out);
                }
            }
        }
    }
}
