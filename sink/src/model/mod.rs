//! The shared model: what every request becomes and what every crate agrees on — the event
//! and its codec, time-ordered ids, amounts in micro-units, URL encoding, and the
//! acknowledgement a conversion waits for. Built with no optional dependency.

pub mod ack;
pub mod event;
pub mod id;
pub mod money;
pub mod url;
