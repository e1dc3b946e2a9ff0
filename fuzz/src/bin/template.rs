//! Fuzz target: `Template::parse` on arbitrary text, and rendering what parses with hostile
//! token values written as the handler writes them (percent-encoded). A rendered URL holds
//! no CR, LF or space, and its scheme and host are the template's own.

use catalog::template::{ParamNames, Template, Token, TokenValues};

/// Token values taken in turn from the input's NUL-separated pieces.
struct Hostile<'a> {
    values: Vec<&'a [u8]>,
    next: usize,
}

impl TokenValues for Hostile<'_> {
    fn write(&mut self, _token: Token, out: &mut Vec<u8>) {
        if let Some(v) = self.values.get(self.next % self.values.len().max(1)) {
            sink::model::url::encode_into(v, out);
        }
        self.next += 1;
    }
}

/// The scheme and host of a URL: everything before the first `/`, `?` or `#` after `://`.
fn origin(url: &[u8]) -> &[u8] {
    let start = url
        .windows(3)
        .position(|w| w == b"://")
        .map_or(0, |p| p + 3);
    let end = url[start..]
        .iter()
        .position(|c| b"/?#".contains(c))
        .map_or(url.len(), |p| start + p);
    &url[..end]
}

fn main() {
    let mut out = Vec::new();
    afl::fuzz!(|data: &[u8]| {
        let mut pieces = data.split(|&c| c == 0);
        let text = String::from_utf8_lossy(pieces.next().unwrap_or_default());
        let Ok(t) = Template::parse(&text, "offers[0].url", &mut ParamNames::default()) else {
            return;
        };
        assert_eq!(t.as_str(), text);
        out.clear();
        let mut values = Hostile {
            values: pieces.collect(),
            next: 0,
        };
        t.render(&mut values, &mut out);
        assert!(
            out.iter().all(u8::is_ascii_graphic),
            "{:?}",
            String::from_utf8_lossy(&out)
        );
        assert_eq!(
            origin(&out),
            origin(text.as_bytes()),
            "{:?}",
            String::from_utf8_lossy(&out)
        );
        assert!(out.starts_with(origin(text.as_bytes())));
    });
}
