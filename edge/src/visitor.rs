//! Visitor facts on the request path: what a campaign's rules and URL tokens need (country,
//! device class, OS, browser, bot), found out only when it needs them. Parsing a user agent
//! runs uap-core's regexes (~6 µs), so each worker keeps the facts of the agents it saw in a
//! bounded cache; traffic repeats a few thousand agents.

use std::net::IpAddr;

use sink::visitors::Visitors;
use sink::visitors::agent::{Agents, DeviceType, parsed_bytes};
use sink::visitors::geo::CountryCache;

use catalog::model::{Needs, Visitor};

/// Slots in a worker's agent cache (a power of two).
pub const AGENT_CACHE_SLOTS: usize = 1 << 14;

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
    /// When it was last used (the cache's own clock), to pick the entry a miss replaces.
    used: u64,
}

/// Entries an agent may live in (neighbours).
const WAYS: usize = 4;

/// A set-associative cache of parsed agents, one per worker: a lookup hashes the agent and
/// compares it with the `WAYS` entries of its set; a miss parses it and replaces the entry
/// of the set used longest ago. (Direct-mapped, 3 000 agents missed 17 % of the time.)
pub struct AgentCache {
    slots: Vec<Option<Entry>>,
    hasher: ahash::RandomState,
    clock: u64,
    /// Agents parsed (misses).
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
            clock: 0,
            parsed: 0,
            hits: 0,
        }
    }
}

impl AgentCache {
    /// The facts of `ua`, from the cache or parsed now. Only the part of an agent that is
    /// parsed ([`sink::visitors::agent::MAX_PARSED_AGENT`] bytes) is its key, so an entry is bounded
    /// and an overlong agent costs no more than a normal one.
    pub fn get(&mut self, agents: &Agents, ua: &[u8]) -> &AgentFacts {
        let ua = parsed_bytes(ua);
        if self.slots.is_empty() {
            self.slots.resize_with(AGENT_CACHE_SLOTS, || None);
        }
        self.clock += 1;
        let set = (self.hasher.hash_one(ua) as usize % AGENT_CACHE_SLOTS) & !(WAYS - 1);
        let ways = &mut self.slots[set..set + WAYS];
        let i = match ways
            .iter()
            .position(|e| e.as_ref().is_some_and(|e| *e.ua == *ua))
        {
            Some(i) => {
                self.hits += 1;
                i
            }
            None => {
                self.parsed += 1;
                // An empty entry, else the one used longest ago.
                let i = (0..WAYS)
                    .min_by_key(|&i| ways[i].as_ref().map_or(0, |e| e.used))
                    .expect("a set is never empty");
                ways[i] = Some(Entry {
                    ua: ua.into(),
                    facts: AgentFacts::parse(agents, ua),
                    used: 0,
                });
                i
            }
        };
        let e = ways[i].as_mut().expect("found or filled above");
        e.used = self.clock;
        &e.facts
    }
}

/// What a worker remembers to find visitor facts fast: parsed agents, and the countries of
/// GeoIP records.
#[derive(Debug, Default)]
pub struct Caches {
    pub agents: AgentCache,
    pub countries: CountryCache,
}

/// Finds out what `needs` asks about the visitor of a request. Facts not asked for, or not
/// knowable without a database or the agent rules, stay `None`.
pub fn facts<'c>(
    visitors: &Visitors,
    caches: &'c mut Caches,
    needs: Needs,
    peer: IpAddr,
    forwarded_for: &[u8],
    user_agent: &[u8],
    accept_language: &'c [u8],
) -> Visitor<'c> {
    let country = match &visitors.geo {
        Some(geo) if needs.country => geo.country(peer, forwarded_for, &mut caches.countries),
        _ => None,
    };
    let agent = match &visitors.agents {
        Some(agents) if needs.agent => Some(caches.agents.get(agents, user_agent)),
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
