//! URL templates: `https://host/path?aff_sub={click_id}&src={source}` pre-split at load time
//! into literal bytes and tokens, so a request only copies literals and writes values.
//!
//! The scheme and host are literal (a token there is a load-time error) and every value is
//! percent-encoded when written, so no request can change the redirect's host or put a CR or
//! LF into the `Location` header.

use crate::ConfigError;

/// What a `{token}` stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Token {
    ClickId,
    CampaignId,
    CampaignName,
    TrafficSource,
    OfferId,
    LandingPageId,
    Country,
    Device,
    Os,
    Browser,
    Ip,
    Cost,
    Ts,
    /// A remapped parameter name (`source`, `var_2`, …), interned in [`ParamNames`].
    Param(u16),
}

impl Token {
    /// The built-in token called `name`, if there is one.
    pub fn builtin(name: &str) -> Option<Token> {
        Some(match name {
            "click_id" | "event_id" | "subid" => Token::ClickId,
            "campaign_id" => Token::CampaignId,
            "campaign_name" => Token::CampaignName,
            "traffic_source" => Token::TrafficSource,
            "offer_id" => Token::OfferId,
            "landing_page_id" => Token::LandingPageId,
            "country" => Token::Country,
            "device" => Token::Device,
            "os" => Token::Os,
            "browser" => Token::Browser,
            "ip" => Token::Ip,
            "cost" => Token::Cost,
            "ts" => Token::Ts,
            _ => return None,
        })
    }
}

/// Remapped parameter names, interned to small indexes. `var_1`..`var_10` always exist.
#[derive(Debug, Clone)]
pub struct ParamNames {
    names: Vec<Box<str>>,
    /// Names some traffic source defines (or `var_N`); the rest render empty.
    defined: Vec<bool>,
}

impl Default for ParamNames {
    fn default() -> Self {
        let mut p = ParamNames {
            names: Vec::new(),
            defined: Vec::new(),
        };
        for i in 1..=10 {
            p.define(&format!("var_{i}"));
        }
        p
    }
}

/// Distinct remapped names a catalog may use: indexes are 16 bits, and an edge keeps every
/// name it has seen while it follows the store's catalog.
pub const MAX_PARAM_NAMES: usize = 4096;

impl ParamNames {
    /// Whether `name` is new and there is no room for it.
    pub fn full_for(&self, name: &str) -> bool {
        self.names.len() >= MAX_PARAM_NAMES && self.lookup(name).is_none()
    }

    /// The index of `name`, if it has been interned.
    pub fn lookup(&self, name: &str) -> Option<u16> {
        self.names
            .iter()
            .position(|n| &**n == name)
            .map(|i| i as u16)
    }

    pub fn intern(&mut self, name: &str) -> u16 {
        if let Some(i) = self.lookup(name) {
            return i;
        }
        self.names.push(name.into());
        self.defined.push(false);
        (self.names.len() - 1) as u16
    }

    pub fn define(&mut self, name: &str) -> u16 {
        let i = self.intern(name);
        self.defined[i as usize] = true;
        i
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    pub fn name(&self, i: u16) -> &str {
        &self.names[i as usize]
    }

    pub fn is_defined(&self, i: u16) -> bool {
        self.defined[i as usize]
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Lit(Box<[u8]>),
    Tok(Token),
}

/// A compiled URL template.
#[derive(Debug, Clone)]
pub struct Template {
    source: Box<str>,
    parts: Vec<Part>,
    literal_len: usize,
}

/// Writes the value of a token, percent-encoded, to `out`.
pub trait TokenValues {
    fn write(&mut self, token: Token, out: &mut Vec<u8>);
}

fn host_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b'_' | b':' | b'[' | b']')
}

/// Checks that the URL template `text` starts with `http://` or `https://` and a literal host
/// (no token, nothing but host characters), so no value filled in can change where it goes.
pub(crate) fn check_literal_host(text: &str, key: &str) -> Result<(), ConfigError> {
    let bad = |msg: String| ConfigError::invalid(key, msg);
    let rest = text
        .strip_prefix("https://")
        .or_else(|| text.strip_prefix("http://"))
        .ok_or_else(|| bad(format!("{text:?} must start with http:// or https://")))?;
    let host_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let host = &rest[..host_end];
    if host.is_empty() {
        return Err(bad(format!("{text:?} has no host")));
    }
    if host.contains(['{', '}']) {
        return Err(bad(format!(
            "{text:?}: tokens are not allowed in the scheme or host, only in the path and query"
        )));
    }
    if let Some(c) = host.bytes().find(|&c| !host_byte(c)) {
        return Err(bad(format!(
            "{text:?}: the host holds {:?}, which is not allowed there",
            c as char
        )));
    }
    Ok(())
}

impl Template {
    /// Parses `text`; `key` names the config key in errors.
    pub fn parse(text: &str, key: &str, names: &mut ParamNames) -> Result<Self, ConfigError> {
        let bad = |msg: String| ConfigError::invalid(key, msg);
        check_literal_host(text, key)?;
        let mut parts = Vec::new();
        let mut lit = Vec::new();
        let mut bytes = text.bytes().enumerate();
        while let Some((i, c)) = bytes.next() {
            match c {
                b'{' => {
                    let close = text[i..].find('}').ok_or_else(|| {
                        bad(format!("{text:?}: '{{' at byte {i} is never closed"))
                    })?;
                    let name = &text[i + 1..i + close];
                    if name.is_empty()
                        || !name
                            .bytes()
                            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_')
                    {
                        return Err(bad(format!(
                            "{text:?}: {{{name}}} is not a token name (lowercase letters, digits, _)"
                        )));
                    }
                    if !lit.is_empty() {
                        parts.push(Part::Lit(std::mem::take(&mut lit).into()));
                    }
                    let tok = match Token::builtin(name) {
                        Some(t) => t,
                        None if names.full_for(name) => {
                            return Err(bad(format!(
                                "{{{name}}}: more than {MAX_PARAM_NAMES} distinct parameter names"
                            )));
                        }
                        None => Token::Param(names.intern(name)),
                    };
                    parts.push(Part::Tok(tok));
                    for _ in 0..close {
                        bytes.next();
                    }
                }
                b'}' => return Err(bad(format!("{text:?}: '}}' at byte {i} has no '{{'"))),
                0x21..=0x7e => lit.push(c),
                _ => {
                    return Err(bad(format!(
                        "{text:?}: byte {i} is a space, control or non-ASCII character; percent-encode it"
                    )));
                }
            }
        }
        if !lit.is_empty() {
            parts.push(Part::Lit(lit.into()));
        }
        let literal_len = parts
            .iter()
            .map(|p| match p {
                Part::Lit(l) => l.len(),
                Part::Tok(_) => 0,
            })
            .sum();
        Ok(Template {
            source: text.into(),
            parts,
            literal_len,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The tokens the template uses, in order.
    pub fn tokens(&self) -> impl Iterator<Item = Token> + '_ {
        self.parts.iter().filter_map(|p| match p {
            Part::Tok(t) => Some(*t),
            Part::Lit(_) => None,
        })
    }

    /// Appends the filled-in URL to `out`.
    pub fn render(&self, values: &mut impl TokenValues, out: &mut Vec<u8>) {
        out.reserve(self.literal_len + 64);
        for p in &self.parts {
            match p {
                Part::Lit(l) => out.extend_from_slice(l),
                Part::Tok(t) => values.write(*t, out),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed;
    impl TokenValues for Fixed {
        fn write(&mut self, token: Token, out: &mut Vec<u8>) {
            match token {
                Token::ClickId => out.extend_from_slice(b"0167a15c98772c0004000001"),
                Token::Param(_) => sink::model::url::encode_into(b"a b\r\n", out),
                _ => {}
            }
        }
    }

    fn parse(t: &str) -> Result<Template, String> {
        Template::parse(t, "offers[0].url", &mut ParamNames::default()).map_err(|e| e.to_string())
    }

    #[test]
    fn splits_literals_and_tokens() {
        let mut names = ParamNames::default();
        let t = Template::parse(
            "https://o.example.com/x?aff_sub={click_id}&s={source}&sub={subid}&c={country}",
            "k",
            &mut names,
        )
        .unwrap();
        let src = names.intern("source");
        assert_eq!(
            t.tokens().collect::<Vec<_>>(),
            vec![
                Token::ClickId,
                Token::Param(src),
                Token::ClickId,
                Token::Country
            ]
        );
        let mut out = Vec::new();
        t.render(&mut Fixed, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "https://o.example.com/x?aff_sub=0167a15c98772c0004000001&s=a%20b%0D%0A&sub=0167a15c98772c0004000001&c="
        );
    }

    #[test]
    fn var_names_are_predefined() {
        let mut names = ParamNames::default();
        let i = names.intern("var_10");
        assert!(names.is_defined(i));
        let j = names.intern("keyword");
        assert!(!names.is_defined(j));
        assert_eq!(names.name(j), "keyword");
    }

    #[test]
    fn rejects_bad_templates_naming_the_key() {
        for (t, want) in [
            ("ftp://a/", "must start with http"),
            ("https:///x", "no host"),
            (
                "https://{var_1}.example.com/",
                "not allowed in the scheme or host",
            ),
            ("https://a@b.com/", "not allowed there"),
            ("https://a.com/x?{click_id", "never closed"),
            ("https://a.com/x?}", "has no '{'"),
            ("https://a.com/x?{Click}", "not a token name"),
            ("https://a.com/x?{}", "not a token name"),
            ("https://a.com/x y", "percent-encode"),
            ("https://a.com/x\r\nSet-Cookie: a", "percent-encode"),
            ("https://a.com/é", "percent-encode"),
        ] {
            let e = parse(t).unwrap_err();
            assert!(e.starts_with("offers[0].url:"), "{e}");
            assert!(e.contains(want), "{t}: {e}");
        }
    }

    #[test]
    fn plain_urls_are_templates_too() {
        let t = parse("http://127.0.0.1:9/landing").unwrap();
        let mut out = Vec::new();
        t.render(&mut Fixed, &mut out);
        assert_eq!(out, b"http://127.0.0.1:9/landing");
        assert_eq!(t.as_str(), "http://127.0.0.1:9/landing");
    }

    #[test]
    fn parameter_names_are_bounded() {
        let mut names = ParamNames::default();
        for i in names.len()..MAX_PARAM_NAMES {
            names.intern(&format!("p{i}"));
        }
        assert!(Template::parse("https://x.example/?a={p20}", "k", &mut names).is_ok());
        let e = Template::parse("https://x.example/?a={one_more}", "k", &mut names)
            .unwrap_err()
            .to_string();
        assert!(e.contains("distinct parameter names"), "{e}");
    }
}
