//! What the edge and the sink know how to find out about a visitor — country (GeoIP), agent
//! (uap-core), data-centre ranges — and the bot verdict from them. The edge's request path
//! and the column builder share one [`Visitors`].
//!
//! | module | what |
//! |---|---|
//! | [`agent`] | browser, OS, device and the bot flag from the user agent (uap-core) |
//! | [`geo`] | the client address behind proxies; country, GeoNames id and time zone (MaxMind) |
//! | [`huge`] | huge-page backed buffers for the GeoIP database and the click cache |

pub mod agent;
pub mod geo;
pub mod huge;

use std::net::IpAddr;
use std::sync::Arc;

use crate::visitors::agent::Agents;
use crate::visitors::geo::{Cidr, Locator, Networks, client_ip};

/// What the sink knows how to find out about visitors.
#[derive(Debug, Clone, Default)]
pub struct Visitors {
    pub geo: Option<Arc<Locator>>,
    pub agents: Option<Arc<Agents>>,
    /// Data-centre ranges: visitors from them count as bots.
    pub datacenters: Option<Arc<Networks>>,
    /// Proxies whose `X-Forwarded-For` is believed (the data-centre check uses the client).
    pub proxies: Vec<Cidr>,
}

impl Visitors {
    /// Whether a visitor counts as a bot: its agent says so (`agent_bot`, when the agent was
    /// parsed) or it comes from a data-centre range. `None` when neither is known.
    pub fn bot(&self, agent_bot: Option<bool>, peer: IpAddr, forwarded_for: &[u8]) -> Option<bool> {
        let dc = self
            .datacenters
            .as_ref()
            .map(|d| d.contains(client_ip(peer, forwarded_for, &self.proxies)));
        match (agent_bot, dc) {
            (None, None) => None,
            (a, d) => Some(a.unwrap_or(false) || d.unwrap_or(false)),
        }
    }
}
