//! Fuzz target: the bytes as a postback's parameters, sent as a GET query and as a form
//! POST body, with a config where one network has a postback token and one has none
//! (token checks, click ids, payouts, redaction). Every answer must be well formed, and a
//! stored conversion must carry no `token` value but the redaction mark.

use std::panic::AssertUnwindSafe;

use clicktracker_fuzz::{Edge, POSTBACK_TOKEN};
use edge::handler::REDACTED;
use sink::Field;
use sink::model::url::{decode_into, pairs, split_target};

/// The demo config's network gets a token; a second network takes postbacks without one.
fn extra() -> String {
    format!(
        "[[affiliate_networks]]\nid = \"net-free\"\nname = \"Free\"\npostback_token = \"\"\n\n\
         [[affiliate_networks]]\nid = \"net-locked\"\nname = \"Locked\"\npostback_token = \"{POSTBACK_TOKEN}\"\n"
    )
}

/// Every `token` pair of `query` has the redaction mark as its value.
fn check_redacted(query: &[u8], scratch: &mut Vec<u8>) {
    for (k, v) in pairs(query) {
        scratch.clear();
        decode_into(k, scratch);
        if scratch.as_slice() == b"token" {
            assert_eq!(v, REDACTED, "stored: {:?}", String::from_utf8_lossy(query));
        }
    }
}

fn main() {
    // Unwind safety does not matter: a panic aborts the process (afl's panic hook).
    let mut edge = AssertUnwindSafe(Edge::demo(&extra()));
    let mut req = Vec::new();
    let mut scratch = Vec::new();
    afl::fuzz!(|data: &[u8]| {
        for post in [false, true] {
            req.clear();
            if post {
                req.extend_from_slice(b"POST /postback?network=net-locked HTTP/1.1\r\nHost: t\r\n");
                req.extend_from_slice(b"Content-Type: application/x-www-form-urlencoded\r\n");
                req.extend_from_slice(format!("Content-Length: {}\r\n\r\n", data.len()).as_bytes());
                req.extend_from_slice(data);
            } else {
                // A target holds no space, CR or LF: those bytes end it, as on the wire.
                let end = data.iter().position(|&c| matches!(c, b' ' | b'\r' | b'\n'));
                req.extend_from_slice(b"GET /postback?");
                req.extend_from_slice(&data[..end.unwrap_or(data.len())]);
                req.extend_from_slice(b" HTTP/1.1\r\nHost: t\r\n\r\n");
            }
            edge.serve(&req);
            for e in &edge.sink.events {
                check_redacted(split_target(e.get(Field::Target)).1, &mut scratch);
                check_redacted(e.get(Field::Body), &mut scratch);
            }
        }
    });
}
