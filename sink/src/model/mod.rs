//! The shared model: what every request becomes and what every crate agrees on — the event
//! and its codec, time-ordered ids, amounts in micro-units, URL encoding, and the
//! acknowledgement a conversion waits for. Built with no optional dependency.

pub mod ack;
pub mod event;
pub mod id;
pub mod money;
pub mod url;

/// Whether `a` and `b` are equal, taking the same time whichever byte differs: for
/// comparing secrets (postback tokens, the console's bearer token) with what a client sent.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
