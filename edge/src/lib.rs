//! The edge: a thread-per-core HTTP/1.1 server on monoio that answers campaign redirects,
//! conversion pixels and postbacks from an immutable campaign table, and turns every request
//! into a [`sink::Event`] on a bounded channel.

pub mod app;
pub mod clicks;
pub mod config;
pub mod handler;
pub mod http;
pub mod metrics;
pub mod response;
pub mod server;
pub mod settings;
pub mod table;
pub mod template;
pub mod visitor;
