//! Visitor facts on the request path: what a campaign's rules and URL tokens need (country,
//! device class, OS, browser, bot), found out only when it needs them. Parsing a user agent
//! runs uap-core's regexes (~6 µs), so each worker keeps the facts of the agents it saw in a
//! bounded cache; traffic repeats a few thousand agents.

use std::net::IpAddr;

use sink::agent::{Agents, DeviceType};
use sink::columns::Visitors;

use crate::table::{Needs, Visitor};

/// Slots in a worker's agent cache (a power of two).
pub const AGENT_CACHE_SLOTS: usize = 1 << 14;
/// Longer agents are parsed every time instead of being kept.
const MAX_CACHED_AGENT: usize = 1024;

/// What rules and tokens use of a user agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentFacts {
    pub device: DeviceType,
    pub os: Box<str>,
    pub browser: Box<str>,
    /// A crawler by its agent (the data-centre check is separate: it depends on the address).
    pub bot: bool,
}

impl AgentFacts {
    fn parse(agents: &Agents, ua: &[u8]) -> AgentFacts {
        let a = agents.parse(&String::from_utf8_lossy(ua));
        AgentFacts {
            device: a.device_type,
            os: a.os_family.into(),
            browser: a.browser_family.into(),
            bot: a.bot,
        }
    }
}

struct Entry {
    ua: Box<[u8]>,
    facts: AgentFacts,
}

/// A direct-mapped cache of parsed agents, one per worker: a lookup hashes the agent and
/// compares it with the one slot it can be in; a miss parses and replaces that slot.
pub struct AgentCache {
    slots: Vec<Option<Entry>>,
    hasher: ahash::RandomState,
    /// Agents parsed (misses), for the metrics.
    pub parsed: u64,
    /// Lookups answered from the cache.
    pub hits: u64,
}

impl std::fmt::Debug for AgentCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentCache")
            .field("parsed", &self.parsed)
            .field("hits", &self.hits)
            .finish()
    }
}

impl Default for AgentCache {
    fn default() -> Self {
        AgentCache {
            // Allocated on first use: a worker that never needs agents never pays for it.
            slots: Vec::new(),
            hasher: ahash::RandomState::new(),
            parsed: 0,
            hits: 0,
        }
    }
}

impl AgentCache {
    /// The facts of `ua`, from the cache or parsed now.
    pub fn get(&mut self, agents: &Agents, ua: &[u8]) -> &AgentFacts {
        if self.slots.is_empty() {
            self.slots.resize_with(AGENT_CACHE_SLOTS, || None);
        }
        let i = self.hasher.hash_one(ua) as usize & (AGENT_CACHE_SLOTS - 1);
        let hit = self.slots[i].as_ref().is_some_and(|e| *e.ua == *ua);
        if hit {
            self.hits += 1;
        } else {
            self.parsed += 1;
            let facts = AgentFacts::parse(agents, ua);
            // Overlong agents take a slot too, under an empty key no lookup matches but
            // their own (they are parsed each time they come back).
            let key = if ua.len() <= MAX_CACHED_AGENT {
                ua.into()
            } else {
                Box::default()
            };
            self.slots[i] = Some(Entry { ua: key, facts });
        }
        &self.slots[i].as_ref().expect("filled above").facts
    }
}

/// Finds out what `needs` asks about the visitor of a request. Facts not asked for, or not
/// knowable without a database or the agent rules, stay `None`.
pub fn facts<'c>(
    visitors: &Visitors,
    cache: &'c mut AgentCache,
    needs: Needs,
    peer: IpAddr,
    forwarded_for: &[u8],
    user_agent: &[u8],
    accept_language: &'c [u8],
) -> Visitor<'c> {
    let country = match &visitors.geo {
        Some(geo) if needs.country => geo
            .locate(peer, forwarded_for)
            .country
            .and_then(|c| <[u8; 2]>::try_from(c.as_bytes()).ok()),
        _ => None,
    };
    let agent = match &visitors.agents {
        Some(agents) if needs.agent => Some(cache.get(agents, user_agent)),
        _ => None,
    };
    let bot = if needs.bot {
        visitors.bot(agent.map(|a| a.bot), peer, forwarded_for)
    } else {
        None
    };
    Visitor {
        country,
        device: agent.map(|a| a.device),
        os: agent.map(|a| &*a.os),
        browser: agent.map(|a| &*a.browser),
        accept_language,
        bot,
    }
}
