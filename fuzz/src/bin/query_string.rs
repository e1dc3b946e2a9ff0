//! Fuzz target: `sink::model::url` on arbitrary bytes. Encoding leaves only unreserved bytes and
//! `%XX`, decoding undoes it, and finding, splitting and redacting never panic and keep
//! every other byte.

use sink::model::url::{decode_into, encode_into, find, pairs, redact_into, split_target};

fn main() {
    let (mut enc, mut dec, mut scratch, mut out) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    afl::fuzz!(|data: &[u8]| {
        enc.clear();
        encode_into(data, &mut enc);
        let mut i = 0;
        while i < enc.len() {
            let c = enc[i];
            if c == b'%' {
                let hex = |c: u8| c.is_ascii_digit() || (b'A'..=b'F').contains(&c);
                assert!(
                    enc.len() > i + 2 && hex(enc[i + 1]) && hex(enc[i + 2]),
                    "{enc:?}"
                );
                i += 3;
            } else {
                assert!(c.is_ascii_alphanumeric() || b"-._~".contains(&c), "{enc:?}");
                i += 1;
            }
        }
        dec.clear();
        decode_into(&enc, &mut dec);
        assert_eq!(dec, data);

        dec.clear();
        decode_into(data, &mut dec);
        assert!(dec.len() <= data.len());
        let (path, query) = split_target(data);
        assert!(path.len() + query.len() + usize::from(path.len() < data.len()) == data.len());
        for (k, _) in pairs(query).take(16) {
            // A key that decoding leaves as it is finds its own pair.
            if !k.contains(&b'%') && !k.contains(&b'+') {
                assert!(find(query, k, &mut scratch).is_some());
            }
        }
        // Redacting the first key's values changes those values only.
        let mut name = Vec::new();
        decode_into(pairs(query).next().map_or(&b""[..], |(k, _)| k), &mut name);
        out.clear();
        redact_into(query, &name, b"X", &mut scratch, &mut out);
        let pieces = |q: &[u8]| q.split(|&c| c == b'&').count();
        assert_eq!(pieces(&out), pieces(query));
        let mut kept = |(k, _): &(&[u8], &[u8])| {
            scratch.clear();
            decode_into(k, &mut scratch);
            scratch != name
        };
        let before: Vec<_> = pairs(query).filter(&mut kept).collect();
        let after: Vec<_> = pairs(&out).filter(&mut kept).collect();
        assert_eq!(before, after);
    });
}
