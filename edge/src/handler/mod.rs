//! Routing: one parsed request in, one response appended to the output buffer and at most
//! one event out. Pure and synchronous, so tests and benches call it without a server.
//!
//! This module routes ([`handle`]) and answers what is not a route of its own (`/metrics`,
//! the health check, unknown targets); a file per route does the rest: `visit` (campaign
//! redirects), `click` (landing-page click-throughs), `conversion` (postbacks and pixels),
//! with `fill` filling their URL templates.

use std::io::Write as _;
use std::net::IpAddr;
use std::time::SystemTime;

use catalog::model::{
    Campaign, LandingPage, Needs, Offer, OfferLink, Path, TrafficSource, Visitor,
};
use catalog::template::{Token, TokenValues};
use sink::model::ack::AckReceiver;
use sink::model::event::{Auth, NetworkPolicy, Pixels};
use sink::model::event::{encode_pair, format_ip};
use sink::model::id::unix_ms as now_ms;
use sink::model::{money, url};
use sink::visitors::Visitors;
use sink::visitors::geo::Cidr;
use sink::{Event, EventId, EventKind, Field, IdGenerator};

use crate::clicks::{COOKIE_MAX_AGE_S, COOKIE_PREFIX, ClickState, Clicks};
use crate::http::{Method, Request};
use crate::metrics::{Metrics, Route};
use crate::response::{self, DateCache, Framing, Reject, Status};
use crate::routing::{Routing, TokenError};
use crate::visitor::{self, Caches};

mod click;
mod conversion;
mod fill;
mod visit;

use click::click_through;
pub use conversion::REDACTED;
use conversion::conversion;
use fill::Fill;
use visit::visit;

/// Longest `txid`, `status` or `type` a conversion may carry.
pub const MAX_CONVERSION_FIELD: usize = 256;

/// Where events go. `emit` answers false when the event could not be queued.
pub trait Emit {
    fn emit(&mut self, event: Event) -> bool;
}

/// State a worker owns and reuses for every request.
#[derive(Debug)]
pub struct Local {
    pub worker_id: u8,
    ids: IdGenerator,
    /// Weighted rotation's dice (wyrand: fast, well mixed, no system call).
    rng: fastrand::Rng,
    pub date: DateCache,
    scratch: Vec<u8>,
    buf: Vec<u8>,
    /// Where each remapped parameter's value sits in `buf` (see [`Fill`]).
    remapped: Vec<(u16, usize, usize)>,
    location: Vec<u8>,
    /// Parsed user agents and GeoIP records' countries, for rules and tokens that use them.
    pub caches: Caches,
    /// A click state, encoded (for a landing-page visit) or read back (for a click-through).
    state: Vec<u8>,
    /// The `Set-Cookie` header line of a landing-page visit.
    cookie: Vec<u8>,
    /// `X-Forwarded-For` sent as several lines, joined.
    forwarded: Vec<u8>,
    /// A conversion's target and form body with its token redacted.
    redacted: Vec<u8>,
}

impl Local {
    pub fn new(node_id: u16, worker_id: u8, seed: u64) -> Self {
        Local {
            worker_id,
            ids: IdGenerator::new(node_id, worker_id),
            rng: fastrand::Rng::with_seed(seed ^ 0x9e37_79b9_7f4a_7c15),
            date: DateCache::default(),
            scratch: Vec::with_capacity(256),
            buf: Vec::with_capacity(256),
            remapped: Vec::with_capacity(16),
            location: Vec::with_capacity(512),
            caches: Caches::default(),
            state: Vec::with_capacity(256),
            cookie: Vec::with_capacity(512),
            forwarded: Vec::new(),
            redacted: Vec::new(),
        }
    }

    /// A uniform random number (weighted rotation).
    pub fn next_u64(&mut self) -> u64 {
        self.rng.u64(..)
    }
}

/// What the handler reads besides the request.
pub struct Ctx<'a> {
    pub routing: &'a Routing,
    pub metrics: &'a Metrics,
    /// What can be found out about visitors (GeoIP, agents, data-centre ranges), for rules
    /// and tokens.
    pub visitors: &'a Visitors,
    /// Landing-page click state: the node's table and the cookie signer.
    pub clicks: &'a Clicks,
    /// The server is shutting down: answer, then close.
    pub draining: bool,
    /// Peers that may read `/metrics` (`server.metrics_allow`).
    pub metrics_allow: &'a [Cidr],
}

/// Starts an event with the request facts that are stored (not the whole head: other
/// headers are not kept, and every byte is written to the log). `target` is the request
/// target as it is stored, and `body` what is kept of the body: a postback's form fields,
/// nothing for the other routes.
fn new_event(
    kind: EventKind,
    id: EventId,
    req: &Request<'_>,
    peer: IpAddr,
    target: &[u8],
    body: &[u8],
    extra: usize,
) -> Event {
    let facts = [
        (Field::Method, req.method_str),
        (Field::Target, target),
        (Field::Host, req.host),
        (Field::Referer, req.referer),
        (Field::UserAgent, req.user_agent),
        (Field::AcceptLanguage, req.accept_language),
        (Field::ForwardedFor, req.forwarded_for),
        (Field::Body, body),
    ];
    let size: usize = facts.iter().map(|(_, part)| part.len()).sum();
    let mut e = Event::new(kind, id, peer, &[], size + extra + 64);
    for (field, part) in facts {
        e.push(field, part);
    }
    e
}

/// What became of a request.
#[derive(Debug)]
pub enum Answer {
    /// The response is in the output buffer.
    Done(Route, Status),
    /// A conversion was queued; its answer waits until its event is durable.
    Pending(Pending),
}

/// A conversion's answer, waiting for its event to reach the write-ahead log.
#[derive(Debug)]
pub struct Pending {
    pub route: Route,
    /// Resolves to whether the event is durable.
    pub ack: AckReceiver,
    framing: Framing,
}

impl Pending {
    /// Whether the connection stays open after this answer.
    pub fn keep_alive(&self) -> bool {
        self.framing.keep_alive
    }

    /// Appends the answer: the pixel or `OK` when the event is durable, else `503` so the
    /// network retries.
    pub fn answer(&self, durable: bool, date: &DateCache, out: &mut Vec<u8>) -> Status {
        if !durable {
            let msg = "the conversion could not be made durable; retry";
            return Reject::new(Status::ServiceUnavailable, msg).write(out, date, self.framing);
        }
        if self.route == Route::Pixel {
            response::write_pixel(out, date, self.framing);
        } else {
            let ct = b"text/plain; charset=utf-8";
            response::write(out, Status::Ok, date, self.framing, &[], ct, b"OK");
        }
        Status::Ok
    }
}

/// The request being answered, with what every route needs of it.
struct Exchange<'r, 'b> {
    req: &'r Request<'b>,
    path: &'b [u8],
    query: &'b [u8],
    peer: IpAddr,
    now: SystemTime,
    framing: Framing,
}

/// Answers one request: appends the response to `out` and returns what was answered.
pub fn handle(
    ctx: &Ctx<'_>,
    local: &mut Local,
    req: &Request<'_>,
    peer: IpAddr,
    now: SystemTime,
    emit: &mut impl Emit,
    out: &mut Vec<u8>,
) -> Answer {
    if req.forwarded_for_lines > 1 {
        // A proxy appended its own line: the header is every line, in order.
        let mut joined = std::mem::take(&mut local.forwarded);
        req.join_forwarded_for(&mut joined);
        let whole = Request {
            forwarded_for: &joined,
            forwarded_for_lines: 1,
            ..req.clone()
        };
        let answer = route(ctx, local, &whole, peer, now, emit, out);
        local.forwarded = joined;
        return answer;
    }
    route(ctx, local, req, peer, now, emit, out)
}

fn route(
    ctx: &Ctx<'_>,
    local: &mut Local,
    req: &Request<'_>,
    peer: IpAddr,
    now: SystemTime,
    emit: &mut impl Emit,
    out: &mut Vec<u8>,
) -> Answer {
    local.date.update(now);
    let framing = Framing {
        keep_alive: req.keep_alive && !ctx.draining,
        http10: req.minor_version == 0,
        head_only: req.method == Method::Head,
    };
    let (path, query) = req.path_and_query();
    let route = match path {
        b"/postback" => Route::Postback,
        b"/p.gif" => Route::Pixel,
        b"/healthz" => Route::Health,
        b"/metrics" => Route::Metrics,
        b"/click" => Route::Click,
        p if p.starts_with(b"/click/") => Route::Click,
        p if p.starts_with(b"/c/") => Route::Campaign,
        p if is_seed_pixel(p) => Route::Pixel,
        _ => Route::Other,
    };
    let allowed: &[Method] = match route {
        Route::Postback => &[Method::Get, Method::Post],
        Route::Other => &[Method::Get, Method::Head, Method::Post, Method::Other],
        _ => &[Method::Get, Method::Head],
    };
    if !allowed.contains(&req.method) {
        let allow: &[u8] = if route == Route::Postback {
            b"Allow: GET, POST"
        } else {
            b"Allow: GET, HEAD"
        };
        let st = Reject::new(Status::MethodNotAllowed, "method not allowed")
            .with_headers(&[allow])
            .write(out, &local.date, framing);
        return Answer::Done(route, st);
    }
    let x = Exchange {
        req,
        path,
        query,
        peer,
        now,
        framing,
    };
    let status = match route {
        Route::Campaign => visit(ctx, local, &x, emit, out),
        Route::Click => click_through(ctx, local, &x, emit, out),
        Route::Pixel | Route::Postback => {
            return conversion(ctx, local, &x, route, emit, out);
        }
        Route::Health => {
            let (st, msg) = if ctx.draining {
                (Status::ServiceUnavailable, "draining")
            } else {
                (Status::Ok, "ok")
            };
            response::write_text(out, st, &local.date, framing, &[], msg);
            st
        }
        // Through a trusted proxy (its X-Forwarded-For names someone else) the peer is the
        // proxy: not who asks.
        Route::Metrics
            if !ctx.metrics_allow.iter().any(|c| c.contains(peer))
                || (!req.forwarded_for.is_empty()
                    && ctx.visitors.proxies.iter().any(|c| c.contains(peer))) =>
        {
            let msg = "metrics are not served to this address (server.metrics_allow)";
            Reject::new(Status::Forbidden, msg).write(out, &local.date, framing)
        }
        Route::Metrics => {
            let text = ctx.metrics.render();
            response::write(
                out,
                Status::Ok,
                &local.date,
                framing,
                &[],
                b"text/plain; version=0.0.4; charset=utf-8",
                text.as_bytes(),
            );
            Status::Ok
        }
        Route::Other => Reject::new(Status::NotFound, "not found").write(out, &local.date, framing),
    };
    Answer::Done(route, status)
}

/// `/{account}/a.gif`: one path segment, then `a.gif`.
fn is_seed_pixel(path: &[u8]) -> bool {
    path.strip_suffix(b"/a.gif")
        .and_then(|p| p.strip_prefix(b"/"))
        .is_some_and(|account| !account.is_empty() && !account.contains(&b'/'))
}

/// An unknown campaign or click: 302 to `fallback_url`, else 404.
fn unknown_target(
    ctx: &Ctx<'_>,
    local: &mut Local,
    x: &Exchange<'_, '_>,
    out: &mut Vec<u8>,
    message: &str,
) -> Status {
    let Exchange {
        peer, now, framing, ..
    } = *x;
    let Some(fallback) = &ctx.routing.fallback else {
        return Reject::new(Status::NotFound, message).write(out, &local.date, framing);
    };
    if let Some(stats) = ctx.metrics.workers.get(local.worker_id as usize) {
        stats.fallback();
    }
    local.location.clear();
    let mut fill = Fill {
        campaign: None,
        source: None,
        offer: None,
        landing_page: None,
        click_id: None,
        remapped: &[],
        values: &[],
        peer,
        visitor: Visitor::default(),
        cost_micros: 0,
        ts_ms: now_ms(now),
    };
    fallback.render(&mut fill, &mut local.location);
    response::write_redirect(out, &local.date, framing, &local.location, &[]);
    Status::Found
}

/// Copies the worker's agent-cache totals to its metrics (as of the previous lookup) when this
/// request will look an agent up.
fn report_agent_cache(ctx: &Ctx<'_>, worker_id: u8, caches: &Caches, needs: Needs) {
    if needs.agent
        && let Some(stats) = ctx.metrics.workers.get(usize::from(worker_id))
    {
        stats.agent_cache(caches.agents.hits, caches.agents.parsed);
    }
}

#[cfg(test)]
mod tests;
