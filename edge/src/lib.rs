//! The edge: a thread-per-core HTTP/1.1 server on monoio that answers campaign redirects,
//! conversion pixels and postbacks from an immutable routing (the compiled catalog), and turns every request
//! into a [`sink::Event`] on a bounded channel.
//!
//! One redirect, from the socket to the event: [`server`] accepts and reads, [`http`] parses
//! the request, [`handler`] routes it and builds the answer and the event from the [`routing`],
//! [`response`] writes the bytes, and the event goes to the sink's queue.
//!
//! | module | what |
//! |---|---|
//! | [`app`] | start-up: config, settings, the routing, the sink, the workers; reloads on SIGHUP |
//! | [`config`] | the config file's `[server]` table and its defaults (the catalog is [`catalog`]'s) |
//! | [`follow`] | the store's catalog: loaded at start, followed while running |
//! | [`settings`] | `[server]` validated into runtime settings |
//! | [`server`] | the monoio workers: accept, read, back-pressure, timeouts, write |
//! | [`http`] | the request parser (httparse) and request limits |
//! | [`handler`] | routes: campaign redirects, click-throughs, pixels, postbacks, `/metrics` |
//! | [`response`] | pre-built and written responses, the `Date` cache |
//! | [`routing`] | what the request path looks up: the catalog indexed by campaign id, the token check |
//! | [`clicks`] | landing-page click state (signed cookie, per-worker click cache) |
//! | [`visitor`] | per-worker caches of parsed agents and GeoIP answers |
//! | [`metrics`] | counters and histograms, rendered for Prometheus |

pub mod app;
pub mod clicks;
pub mod config;
pub mod follow;
pub mod handler;
pub mod http;
pub mod metrics;
pub mod response;
pub mod routing;
pub mod server;
pub mod settings;
pub mod visitor;
