//! Query strings and percent-encoding, without allocating: callers pass the output buffer.

/// Characters left as they are by [`encode_into`]: RFC 3986's unreserved set.
fn unreserved(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~')
}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

/// Appends `src` to `out`, percent-encoding every byte outside the unreserved set, so the
/// result can never carry a CR, LF, space, `&`, `#`, `/` or `?` into a URL or a header.
pub fn encode_into(src: &[u8], out: &mut Vec<u8>) {
    for &c in src {
        if unreserved(c) {
            out.push(c);
        } else {
            out.extend_from_slice(&[
                b'%',
                HEX_UPPER[(c >> 4) as usize],
                HEX_UPPER[(c & 15) as usize],
            ]);
        }
    }
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Appends the form-decoded `src` to `out`: `%XX` becomes the byte, `+` a space; a `%` not
/// followed by two hex digits is kept as it is.
pub fn decode_into(src: &[u8], out: &mut Vec<u8>) {
    out.reserve(src.len());
    let mut i = 0;
    while i < src.len() {
        // Bytes that stay as they are go over in one copy.
        let plain = src[i..]
            .iter()
            .position(|&c| c == b'%' || c == b'+')
            .unwrap_or(src.len() - i);
        out.extend_from_slice(&src[i..i + plain]);
        i += plain;
        let Some(&c) = src.get(i) else {
            break;
        };
        if c == b'+' {
            out.push(b' ');
        } else if c == b'%'
            && let Some((h, l)) = src
                .get(i + 1)
                .and_then(|&h| hex_val(h))
                .zip(src.get(i + 2).and_then(|&l| hex_val(l)))
        {
            out.push((h << 4) | l);
            i += 2;
        } else {
            out.push(c);
        }
        i += 1;
    }
}

/// Whether decoding would change `src` (it holds `%` or `+`).
pub fn needs_decoding(src: &[u8]) -> bool {
    src.iter().any(|&c| c == b'%' || c == b'+')
}

/// The raw `key=value` pairs of a query string (no leading `?`), in order; empty pieces
/// between `&`s are skipped and a piece without `=` has an empty value.
pub fn pairs(query: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    query
        .split(|&c| c == b'&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.iter().position(|&c| c == b'=') {
            Some(eq) => (&p[..eq], &p[eq + 1..]),
            None => (p, &p[p.len()..]),
        })
}

/// Whether the raw key `key` decodes to `name` (`scratch` is reused).
fn key_is(key: &[u8], name: &[u8], scratch: &mut Vec<u8>) -> bool {
    if needs_decoding(key) {
        scratch.clear();
        decode_into(key, scratch);
        scratch.as_slice() == name
    } else {
        key == name
    }
}

/// The raw value of the first parameter whose decoded key is `name`.
pub fn find<'q>(query: &'q [u8], name: &[u8], scratch: &mut Vec<u8>) -> Option<&'q [u8]> {
    pairs(query).find_map(|(k, v)| key_is(k, name, scratch).then_some(v))
}

/// Appends `query` to `out` with the value of every parameter whose decoded key is `name`
/// replaced by `with`; everything else is kept byte for byte.
pub fn redact_into(
    query: &[u8],
    name: &[u8],
    with: &[u8],
    scratch: &mut Vec<u8>,
    out: &mut Vec<u8>,
) {
    for (i, piece) in query.split(|&c| c == b'&').enumerate() {
        if i > 0 {
            out.push(b'&');
        }
        let key = match piece.iter().position(|&c| c == b'=') {
            Some(eq) => &piece[..eq],
            None => piece,
        };
        if !piece.is_empty() && key_is(key, name, scratch) {
            out.extend_from_slice(key);
            out.push(b'=');
            out.extend_from_slice(with);
        } else {
            out.extend_from_slice(piece);
        }
    }
}

/// Splits a request target into path and query (without the `?`; empty when absent).
pub fn split_target(target: &[u8]) -> (&[u8], &[u8]) {
    match target.iter().position(|&c| c == b'?') {
        Some(q) => (&target[..q], &target[q + 1..]),
        None => (target, &target[target.len()..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(s: &[u8]) -> String {
        let mut v = Vec::new();
        encode_into(s, &mut v);
        String::from_utf8(v).unwrap()
    }

    fn dec(s: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        decode_into(s, &mut v);
        v
    }

    #[test]
    fn encodes_everything_but_unreserved() {
        assert_eq!(enc(b"abc-._~XYZ09"), "abc-._~XYZ09");
        assert_eq!(enc(b"a b&c=d/e?f#g"), "a%20b%26c%3Dd%2Fe%3Ff%23g");
        assert_eq!(enc(b"\r\n\x00"), "%0D%0A%00");
        assert_eq!(enc(&[b'\r', b'\n', 0, 0xff]), "%0D%0A%00%FF");
        assert_eq!(enc("é".as_bytes()), "%C3%A9");
    }

    #[test]
    fn decodes_form_encoding_and_keeps_broken_escapes() {
        assert_eq!(dec(b"a+b%20c%2fd"), b"a b c/d");
        assert_eq!(dec(b"100%"), b"100%");
        assert_eq!(dec(b"%zz%4"), b"%zz%4");
        assert_eq!(dec(b"%0d%0A"), b"\r\n");
    }

    #[test]
    fn decode_then_encode_neutralises_crlf() {
        let mut v = Vec::new();
        encode_into(&dec(b"x%0D%0ALocation:%20evil"), &mut v);
        assert!(!v.contains(&b'\r') && !v.contains(&b'\n'));
    }

    #[test]
    fn finds_params_by_decoded_name() {
        let q = b"utm_source=blog&&flag&utm%5Fmedium=review&utm_source=second";
        let mut s = Vec::new();
        assert_eq!(find(q, b"utm_source", &mut s), Some(&b"blog"[..]));
        assert_eq!(find(q, b"utm_medium", &mut s), Some(&b"review"[..]));
        assert_eq!(find(q, b"flag", &mut s), Some(&b""[..]));
        assert_eq!(find(q, b"nope", &mut s), None);
        assert_eq!(pairs(q).count(), 4);
    }

    #[test]
    fn redacts_every_value_of_a_name_and_keeps_the_rest() {
        let mut s = Vec::new();
        let red = |q: &[u8], s: &mut Vec<u8>| {
            let mut out = Vec::new();
            redact_into(q, b"token", b"X", s, &mut out);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(red(b"cid=1&token=abc&x=2", &mut s), "cid=1&token=X&x=2");
        assert_eq!(
            red(b"t%6Fken=abc&&token&tokens=1", &mut s),
            "t%6Fken=X&&token=X&tokens=1"
        );
        assert_eq!(red(b"a=1", &mut s), "a=1");
        assert_eq!(red(b"", &mut s), "");
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        /// A key that may or may not decode to `token`.
        fn key() -> impl Strategy<Value = String> {
            prop_oneof![
                Just("token".to_string()),
                Just("t%6Fken".to_string()),
                Just("tok%65n".to_string()),
                Just("token%".to_string()),
                "[a-z0-9%+]{0,6}",
            ]
        }

        proptest! {
            #[test]
            fn decode_undoes_encode(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
                let mut e = Vec::new();
                encode_into(&bytes, &mut e);
                prop_assert!(e.iter().all(|&c| unreserved(c) || c == b'%'));
                prop_assert_eq!(dec(&e), bytes);
            }

            #[test]
            fn redaction_keeps_every_other_pair_byte_for_byte(
                pieces in proptest::collection::vec((key(), proptest::option::of("[a-z0-9%+=]{0,6}")), 0..8)
            ) {
                let query = pieces
                    .iter()
                    .map(|(k, v)| match v {
                        Some(v) => format!("{k}={v}"),
                        None => k.clone(),
                    })
                    .collect::<Vec<_>>()
                    .join("&");
                let mut scratch = Vec::new();
                let mut out = Vec::new();
                redact_into(query.as_bytes(), b"token", b"X", &mut scratch, &mut out);
                let ins: Vec<&[u8]> = query.as_bytes().split(|&c| c == b'&').collect();
                let outs: Vec<&[u8]> = out.split(|&c| c == b'&').collect();
                prop_assert_eq!(ins.len(), outs.len());
                for (i, o) in ins.into_iter().zip(outs) {
                    let k = i.split(|&c| c == b'=').next().unwrap_or_default();
                    if !i.is_empty() && dec(k) == b"token" {
                        prop_assert_eq!(o, [k, b"=X"].concat());
                    } else {
                        prop_assert_eq!(o, i);
                    }
                }
            }
        }
    }

    #[test]
    fn splits_targets() {
        assert_eq!(split_target(b"/c/x?a=1?b"), (&b"/c/x"[..], &b"a=1?b"[..]));
        assert_eq!(split_target(b"/c/x"), (&b"/c/x"[..], &b""[..]));
    }
}
