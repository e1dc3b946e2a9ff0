//! The catalog: traffic sources, affiliate networks, offers, landing pages and campaigns —
//! what a media buyer sets up — as the config file holds them and as a validated model with
//! ids resolved to indexes. The edge compiles its request-path table from it; the query tool
//! reads names and default payouts from it. It depends on the sink's event model only (device
//! classes and network policies are stored with events, so both sides agree on them).
//!
//! | module | what |
//! |---|---|
//! | [`file`](mod@file) | the config file's sections as written, with their defaults (serde) |
//! | [`compile`] | validation: [`Catalog::compile`], every error naming its key |
//! | [`key`] | config keys as errors name them, formatted only when one is reported |
//! | [`lifecycle`] | conversion statuses, their order, and how repeated reports count |
//! | [`model`] | the validated catalog: campaigns, paths, rules, weights, offers, networks |
//! | [`template`] | URL templates (`{click_id}`, remapped names) pre-split at load time |
//! | [`money`] | the one place a config amount becomes micro-units |
//! | [`postback`] | a traffic source's conversion postback: its URL template and what fires it |
//! | [`presets`] | built-in traffic-source and network templates (`template = "zeropark"`) |
//! | [`error`] | [`ConfigError`] |
//! | [`store`] | (feature `store`) the catalog kept in the object store: a log of commits, checkpoints, conditional puts |

pub mod compile;
pub mod error;
pub mod file;
pub mod key;
pub mod lifecycle;
pub mod model;
pub mod money;
pub mod postback;
pub mod presets;
#[cfg(feature = "store")]
pub mod store;
pub mod template;

pub use error::ConfigError;
pub use file::File;

use model::{Campaign, LandingPage, Network, Offer, TrafficSource};
use template::ParamNames;

/// A validated catalog ([`Catalog::compile`]): every reference resolved to an index into
/// these vectors, in the order the file lists them.
#[derive(Debug)]
pub struct Catalog {
    pub campaigns: Vec<Campaign>,
    pub sources: Vec<TrafficSource>,
    pub networks: Vec<Network>,
    pub offers: Vec<Offer>,
    pub landing_pages: Vec<LandingPage>,
    /// The remapped parameter names the templates use.
    pub params: ParamNames,
    /// Things that load but probably are not what the author meant.
    pub warnings: Vec<String>,
}
