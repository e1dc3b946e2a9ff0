//! The load generator and verifier: drives the whole funnel (visit → click id from
//! `Location` → postback or pixel, with duplicates and upsells) against a running edge at
//! full speed, measures each step with HDR histograms, writes a ledger of what was sent and
//! acknowledged, and checks the store against that ledger event by event.
//!
//! [`plan`] checks the command line; [`funnel`] writes requests and parses responses;
//! [`run`] is the thread-per-core monoio generator; [`stats`] holds and prints what it
//! measured; [`ledger`] writes and reads the ledger; [`verify`] compares it with the store.

pub mod funnel;
pub mod ledger;
pub mod plan;
pub mod run;
pub mod stats;
#[cfg(feature = "verify")]
pub mod verify;
