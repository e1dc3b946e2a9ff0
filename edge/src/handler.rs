//! Routing: one parsed request in, one response appended to the output buffer and at most
//! one event out. Pure and synchronous, so tests and benches call it without a server.

use std::io::Write as _;
use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use catalog::model::{Campaign, LandingPage, Needs, Offer, Path, TrafficSource, Visitor};
use catalog::template::{Token, TokenValues};
use sink::ack::AckReceiver;
use sink::columns::Visitors;
use sink::event::{Auth, NetworkPolicy, Pixels};
use sink::event::{encode_pair, format_ip};
use sink::geo::Cidr;
use sink::{Event, EventId, EventKind, Field, IdGenerator, money, url};

use crate::clicks::{COOKIE_MAX_AGE_S, COOKIE_PREFIX, ClickState, Clicks};
use crate::http::{Method, Request};
use crate::metrics::{Metrics, Route};
use crate::response::{self, DateCache, Framing, Status};
use crate::table::{Table, TokenError};
use crate::visitor::{self, Caches};

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
    rng: Rng,
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

/// wyrand: a fast, well-mixed 64-bit generator, plenty for weighted rotation.
#[derive(Debug)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0xa076_1d64_78bd_642f);
        let t = u128::from(self.0) * u128::from(self.0 ^ 0xe703_7ed1_a0b4_28db);
        ((t >> 64) ^ t) as u64
    }
}

impl Local {
    pub fn new(node_id: u16, worker_id: u8, seed: u64) -> Self {
        Local {
            worker_id,
            ids: IdGenerator::new(node_id, worker_id),
            rng: Rng(seed ^ 0x9e37_79b9_7f4a_7c15),
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
        self.rng.next()
    }
}

/// What the handler reads besides the request.
pub struct Ctx<'a> {
    pub table: &'a Table,
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

/// Fills template tokens for one request.
struct Fill<'a> {
    campaign: Option<&'a Campaign>,
    source: Option<&'a TrafficSource>,
    offer: Option<&'a Offer>,
    landing_page: Option<&'a LandingPage>,
    click_id: Option<&'a [u8; 24]>,
    /// The remapped parameters' decoded values: (name index, start, length) in `values`.
    remapped: &'a [(u16, usize, usize)],
    values: &'a [u8],
    peer: IpAddr,
    visitor: Visitor<'a>,
    cost_micros: i64,
    ts_ms: u64,
}

fn encode_str(s: &str, out: &mut Vec<u8>) {
    url::encode_into(s.as_bytes(), out);
}

fn write_ip(ip: IpAddr, out: &mut Vec<u8>) {
    let mut buf = [0u8; 64];
    url::encode_into(format_ip(ip, &mut buf).as_bytes(), out);
}

impl TokenValues for Fill<'_> {
    fn write(&mut self, token: Token, out: &mut Vec<u8>) {
        match token {
            Token::ClickId => {
                if let Some(id) = self.click_id {
                    out.extend_from_slice(id);
                }
            }
            Token::CampaignId => {
                if let Some(c) = self.campaign {
                    encode_str(&c.id, out);
                }
            }
            Token::CampaignName => {
                if let Some(c) = self.campaign {
                    encode_str(&c.name, out);
                }
            }
            Token::TrafficSource => {
                if let Some(s) = self.source {
                    encode_str(&s.id, out);
                }
            }
            Token::OfferId => {
                if let Some(o) = self.offer {
                    encode_str(&o.id, out);
                }
            }
            Token::LandingPageId => {
                if let Some(l) = self.landing_page {
                    encode_str(&l.id, out);
                }
            }
            Token::Country => {
                if let Some(c) = &self.visitor.country {
                    out.extend_from_slice(c);
                }
            }
            Token::Device => {
                if let Some(d) = self.visitor.device {
                    out.extend_from_slice(d.as_str().as_bytes());
                }
            }
            Token::Os => {
                if let Some(os) = self.visitor.os {
                    encode_str(os, out);
                }
            }
            Token::Browser => {
                if let Some(b) = self.visitor.browser {
                    encode_str(b, out);
                }
            }
            Token::Ip => write_ip(self.peer, out),
            Token::Cost => money::write_decimal(self.cost_micros, out),
            Token::Ts => money::write_digits(self.ts_ms, 1, out),
            Token::Param(name) => {
                if let Some(&(_, start, len)) = self.remapped.iter().find(|r| r.0 == name) {
                    url::encode_into(&self.values[start..start + len], out);
                }
            }
        }
    }
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

fn now_ms(now: SystemTime) -> u64 {
    now.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
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
            let st = Status::ServiceUnavailable;
            let msg = "the conversion could not be made durable; retry";
            response::write_text(out, st, date, self.framing, &[], msg);
            return st;
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
        let st = Status::MethodNotAllowed;
        response::write_text(
            out,
            st,
            &local.date,
            framing,
            &[allow],
            "method not allowed",
        );
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
            let st = Status::Forbidden;
            let msg = "metrics are not served to this address (server.metrics_allow)";
            response::write_text(out, st, &local.date, framing, &[], msg);
            st
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
        Route::Other => {
            response::write_text(
                out,
                Status::NotFound,
                &local.date,
                framing,
                &[],
                "not found",
            );
            Status::NotFound
        }
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
    let Some(fallback) = &ctx.table.fallback else {
        response::write_text(out, Status::NotFound, &local.date, framing, &[], message);
        return Status::NotFound;
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

/// `/c/{campaign_id}`: pick a path and offer, mint a click id, redirect, record the visit.
fn visit(
    ctx: &Ctx<'_>,
    local: &mut Local,
    x: &Exchange<'_, '_>,
    emit: &mut impl Emit,
    out: &mut Vec<u8>,
) -> Status {
    let Exchange {
        req,
        query,
        peer,
        now,
        framing,
        ..
    } = *x;
    let table = ctx.table;
    let Some(campaign) = table.campaign(&x.path[3..]) else {
        return unknown_target(ctx, local, x, out, "unknown campaign");
    };
    let source = &table.sources[campaign.source as usize];
    // Only what this campaign's rules and URLs use is looked up.
    report_agent_cache(ctx, local.worker_id, &local.caches, campaign.needs);
    let visitor = visitor::facts(
        ctx.visitors,
        &mut local.caches,
        campaign.needs,
        peer,
        req.forwarded_for,
        req.user_agent,
        req.accept_language,
    );
    let path = campaign.paths_for(&visitor).pick(local.rng.next());
    let landing_page = path.landing_page.map(|i| &table.landing_pages[i as usize]);
    // With a landing page the offer is chosen at the click-through; without, now.
    let offer = match landing_page {
        Some(_) => None,
        None => Some(&table.offers[*path.offers.pick(local.rng.next()) as usize]),
    };
    let ts_ms = now_ms(now);
    let id = local.ids.next(ts_ms);
    let hex = id.to_hex();
    let cost_micros = source
        .cost_param
        .as_deref()
        .and_then(|p| url::find(query, p, &mut local.scratch))
        .and_then(|raw| {
            local.buf.clear();
            url::decode_into(raw, &mut local.buf);
            money::parse_micros(&local.buf).ok()
        })
        // A visitor can send any cost: only a sane one is believed.
        .filter(|&c| (0..=table.max_cost_micros).contains(&c))
        .unwrap_or(campaign.cost_micros);

    // The remapped parameters, decoded once: for the event and for the URL's tokens.
    local.buf.clear();
    local.remapped.clear();
    for (name, key) in &source.params {
        let value = url::find(query, key, &mut local.scratch).unwrap_or_default();
        local.scratch.clear();
        url::decode_into(value, &mut local.scratch);
        encode_pair(
            &mut local.buf,
            table.params.name(*name).as_bytes(),
            &local.scratch,
        );
        let len = local.scratch.len().min(usize::from(u16::MAX));
        local.remapped.push((*name, local.buf.len() - len, len));
    }

    local.location.clear();
    let mut fill = Fill {
        campaign: Some(campaign),
        source: Some(source),
        offer,
        landing_page,
        click_id: Some(&hex),
        remapped: &local.remapped,
        values: &local.buf,
        peer,
        visitor,
        cost_micros,
        ts_ms,
    };
    match (landing_page, offer) {
        (Some(lp), _) => lp.url.render(&mut fill, &mut local.location),
        (None, Some(o)) => o.url.render(&mut fill, &mut local.location),
        (None, None) => {}
    }

    // A landing page's click-through needs this visit's state: kept in the node's table and
    // handed to the browser in a signed cookie (see `clicks`).
    local.cookie.clear();
    if landing_page.is_some() {
        let state = ClickState {
            click_id: id,
            campaign_id: campaign.id.as_bytes(),
            path_index: path.index,
            cost_micros,
            remapped: &local.buf,
        };
        local.state.clear();
        if state.encode(&mut local.state) {
            ctx.clicks.table.put(&id, &local.state);
            local.cookie.extend_from_slice(b"Set-Cookie: ");
            local.cookie.extend_from_slice(COOKIE_PREFIX);
            local.cookie.extend_from_slice(campaign.id.as_bytes());
            local.cookie.push(b'=');
            if ctx
                .clicks
                .signer
                .seal(&local.state, &mut local.scratch, &mut local.cookie)
            {
                let mut attrs = [0u8; 80];
                let mut cur = std::io::Cursor::new(&mut attrs[..]);
                let _ = write!(
                    cur,
                    "; Path=/click; Max-Age={COOKIE_MAX_AGE_S}; HttpOnly; SameSite=Lax\r\n"
                );
                let n = cur.position() as usize;
                local.cookie.extend_from_slice(&attrs[..n]);
            } else {
                local.cookie.clear();
            }
        }
    }

    let mut e = new_event(
        EventKind::Visit,
        id,
        req,
        peer,
        req.target_raw,
        &[],
        local.location.len() + local.buf.len(),
    );
    e.cost_micros = cost_micros;
    e.path_index = Some(path.index);
    let route = Resolved {
        campaign,
        source,
        offer,
        landing_page,
    };
    route.push(&mut e, table, &local.location, &local.buf);
    emit.emit(e);
    response::write_redirect(out, &local.date, framing, &local.location, &local.cookie);
    Status::Found
}

/// Where a visit or click-through was sent, as its event records it.
struct Resolved<'t> {
    campaign: &'t Campaign,
    source: &'t TrafficSource,
    offer: Option<&'t Offer>,
    landing_page: Option<&'t LandingPage>,
}

impl Resolved<'_> {
    /// Appends the campaign, source, offer and network, landing page, the `Location` sent and
    /// the remapped parameters to `e`.
    fn push(&self, e: &mut Event, table: &Table, location: &[u8], remapped: &[u8]) {
        e.push(Field::CampaignId, self.campaign.id.as_bytes());
        e.push(Field::TrafficSourceId, self.source.id.as_bytes());
        if let Some(o) = self.offer {
            e.push(Field::OfferId, o.id.as_bytes());
            if let Some(n) = o.network {
                let n = &table.networks[n as usize];
                e.push(Field::NetworkId, n.id.as_bytes());
                e.network_policy = Some(n.policy);
            }
        }
        if let Some(lp) = self.landing_page {
            e.push(Field::LandingPageId, lp.id.as_bytes());
            if self.offer.is_none() {
                // No network has this click id until the click-through: as for a click id no
                // visit has, only a postback that carries some network's token counts, and a
                // pixel only when no network requires a token (README "Trust").
                let pixels = if table.any_postback_token() {
                    Pixels::Off
                } else {
                    Pixels::Payout
                };
                e.network_policy = Some(NetworkPolicy {
                    token: true,
                    pixels,
                });
            }
        }
        e.push(Field::Location, location);
        e.push(Field::Remapped, remapped);
    }
}

/// `/click/{n}`: the n-th offer (from 1) of a multi-offer landing page; `/click`: none.
/// `Err` for anything else after `/click/`.
fn offer_number(path: &[u8]) -> Result<Option<usize>, ()> {
    match path.strip_prefix(b"/click/") {
        None => Ok(None),
        Some(n) if (1..=4).contains(&n.len()) && n.iter().all(u8::is_ascii_digit) => {
            let n = n
                .iter()
                .fold(0usize, |acc, d| acc * 10 + usize::from(d - b'0'));
            if n == 0 { Err(()) } else { Ok(Some(n)) }
        }
        Some(_) => Err(()),
    }
}

/// Reads the state of the visit a click-through follows into `buf`: from the node's table
/// when the visit was served here and its slot still holds it, else from the visit's signed
/// cookie. Without a `cid`, the newest visit any valid cookie holds.
fn click_state<'b>(
    clicks: &Clicks,
    cid: Option<EventId>,
    cookie_header: &[u8],
    scratch: &mut Vec<u8>,
    buf: &'b mut Vec<u8>,
) -> Option<(ClickState<'b>, bool)> {
    if let Some(id) = cid
        && clicks.table.get(&id, scratch).is_some()
    {
        std::mem::swap(scratch, buf);
        return ClickState::decode(buf).map(|s| (s, true));
    }
    let mut best: Option<EventId> = None;
    for (_, value) in crate::clicks::cookies(cookie_header) {
        let Some(found) = clicks.signer.open(value, scratch).map(|s| s.click_id) else {
            continue;
        };
        let wanted = match cid {
            Some(id) => found == id,
            None => best.is_none_or(|b| found.0 > b.0),
        };
        if wanted {
            best = Some(found);
            std::mem::swap(scratch, buf);
            if cid.is_some() {
                break;
            }
        }
    }
    best.and_then(|_| ClickState::decode(buf))
        .map(|s| (s, false))
}

/// A visit's clock may run this far ahead of the node answering its click-through.
const CLOCK_SKEW_MS: u64 = 300_000;

/// Whether a click-through for visit `id` comes within the cookie's age of the visit.
fn fresh(id: EventId, now: SystemTime) -> bool {
    let (now, visit) = (now_ms(now), id.ts_ms());
    visit <= now + CLOCK_SKEW_MS && now - visit.min(now) <= u64::from(COOKIE_MAX_AGE_S) * 1000
}

/// `/click?cid={click_id}` (and `/click/{n}`): the landing page's call-to-action. Finds the
/// visit's campaign and path, picks the offer (the n-th, or by weight), redirects to it and
/// records a click event that names its visit.
fn click_through(
    ctx: &Ctx<'_>,
    local: &mut Local,
    x: &Exchange<'_, '_>,
    emit: &mut impl Emit,
    out: &mut Vec<u8>,
) -> Status {
    let Exchange {
        req,
        path,
        query,
        peer,
        now,
        framing,
    } = *x;
    let Ok(number) = offer_number(path) else {
        response::write_text(
            out,
            Status::NotFound,
            &local.date,
            framing,
            &[],
            "not found",
        );
        return Status::NotFound;
    };
    let cid = match url::find(query, b"cid", &mut local.scratch) {
        None => None,
        Some(raw) => {
            local.buf.clear();
            url::decode_into(raw, &mut local.buf);
            match EventId::parse(&local.buf) {
                Ok(id) => Some(id),
                Err(_) => return unknown_target(ctx, local, x, out, "unknown click"),
            }
        }
    };
    let table = ctx.table;
    let state = click_state(
        ctx.clicks,
        cid,
        req.cookie,
        &mut local.scratch,
        &mut local.state,
    );
    let Some((state, in_table)) = state else {
        return unknown_target(ctx, local, x, out, "unknown click");
    };
    if !fresh(state.click_id, now) {
        // A cookie outlives its Max-Age in a browser that ignores it, or in a replay.
        return unknown_target(ctx, local, x, out, "expired click");
    }
    let stats = ctx.metrics.workers.get(usize::from(local.worker_id));
    if let Some(stats) = stats {
        stats.click_found(in_table);
    }
    let Some(campaign) = std::str::from_utf8(state.campaign_id)
        .ok()
        .and_then(|id| table.campaign(id.as_bytes()))
    else {
        return unknown_target(ctx, local, x, out, "unknown click");
    };
    // A reload may have changed the campaign's paths: then its default ones.
    let path: &Path = campaign
        .path(state.path_index)
        .unwrap_or_else(|| campaign.paths.pick(local.rng.next()));
    let offers = path.offers.items();
    let offer_index = match number {
        Some(n) if n <= offers.len() => offers[n - 1],
        _ => *path.offers.pick(local.rng.next()),
    };
    let offer = &table.offers[offer_index as usize];
    let source = &table.sources[campaign.source as usize];
    let landing_page = path.landing_page.map(|i| &table.landing_pages[i as usize]);
    report_agent_cache(ctx, local.worker_id, &local.caches, offer.needs);
    let visitor = visitor::facts(
        ctx.visitors,
        &mut local.caches,
        offer.needs,
        peer,
        req.forwarded_for,
        req.user_agent,
        req.accept_language,
    );
    // The visit's remapped values, for the offer URL's tokens.
    local.remapped.clear();
    let base = state.remapped.as_ptr() as usize;
    for (name, value) in sink::event::pairs(state.remapped) {
        if let Some(i) = std::str::from_utf8(name)
            .ok()
            .and_then(|n| table.params.lookup(n))
        {
            local
                .remapped
                .push((i, value.as_ptr() as usize - base, value.len()));
        }
    }
    let hex = state.click_id.to_hex();
    let ts_ms = now_ms(now);
    local.location.clear();
    let mut fill = Fill {
        campaign: Some(campaign),
        source: Some(source),
        offer: Some(offer),
        landing_page,
        click_id: Some(&hex),
        remapped: &local.remapped,
        values: state.remapped,
        peer,
        visitor,
        cost_micros: state.cost_micros,
        ts_ms,
    };
    offer.url.render(&mut fill, &mut local.location);

    let id = local.ids.next(ts_ms);
    let mut e = new_event(
        EventKind::Click,
        id,
        req,
        peer,
        req.target_raw,
        &[],
        local.location.len() + state.remapped.len() + 64,
    );
    e.path_index = Some(path.index);
    e.push(Field::ClickId, &hex);
    let route = Resolved {
        campaign,
        source,
        offer: Some(offer),
        landing_page,
    };
    route.push(&mut e, table, &local.location, state.remapped);
    emit.emit(e);
    response::write_redirect(out, &local.date, framing, &local.location, &[]);
    Status::Found
}

/// The parameter names of a conversion route.
struct ConversionParams {
    click_id: &'static [u8],
    payout: &'static [u8],
    kind: &'static [u8],
}

const POSTBACK_PARAMS: ConversionParams = ConversionParams {
    click_id: b"cid",
    payout: b"payout",
    kind: b"type",
};
const SEED_PIXEL_PARAMS: ConversionParams = ConversionParams {
    click_id: b"h",
    payout: b"a",
    kind: b"c",
};

/// Finds a parameter in the form body (when there is one) or else in the query.
fn param<'r>(
    body: &'r [u8],
    query: &'r [u8],
    name: &[u8],
    scratch: &mut Vec<u8>,
) -> Option<&'r [u8]> {
    url::find(body, name, scratch).or_else(|| url::find(query, name, scratch))
}

fn is_form(content_type: &[u8]) -> bool {
    let ct = content_type
        .split(|&c| c == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    ct.is_empty() || ct.eq_ignore_ascii_case(b"application/x-www-form-urlencoded")
}

/// The value written in place of a postback token in what is stored.
pub const REDACTED: &[u8] = b"REDACTED";

/// When the target's query or the body carries a `token`, writes both into `out` with every
/// token's value replaced by [`REDACTED`] and answers the target's length in `out` (the body
/// follows it). `None` when there is nothing to redact.
fn redact_tokens(
    target: &[u8],
    body: &[u8],
    scratch: &mut Vec<u8>,
    out: &mut Vec<u8>,
) -> Option<usize> {
    let (path, query) = url::split_target(target);
    let in_query = url::find(query, b"token", scratch).is_some();
    let in_body = url::find(body, b"token", scratch).is_some();
    if !in_query && !in_body {
        return None;
    }
    out.clear();
    if in_query {
        out.extend_from_slice(path);
        out.push(b'?');
        url::redact_into(query, b"token", REDACTED, scratch, out);
    } else {
        out.extend_from_slice(target);
    }
    let n = out.len();
    if in_body {
        url::redact_into(body, b"token", REDACTED, scratch, out);
    } else {
        out.extend_from_slice(body);
    }
    Some(n)
}

/// A conversion (`/postback`, `/p.gif`, `/{account}/a.gif`): validate, record, acknowledge.
fn conversion(
    ctx: &Ctx<'_>,
    local: &mut Local,
    x: &Exchange<'_, '_>,
    route: Route,
    emit: &mut impl Emit,
    out: &mut Vec<u8>,
) -> Answer {
    let Exchange {
        req,
        path,
        query,
        peer,
        now,
        framing,
    } = *x;
    let names = if path.ends_with(b"/a.gif") {
        &SEED_PIXEL_PARAMS
    } else {
        &POSTBACK_PARAMS
    };
    let body: &[u8] = if req.method == Method::Post && is_form(req.content_type) {
        req.body
    } else {
        &[]
    };
    let fail = |local: &mut Local, out: &mut Vec<u8>, status: Status, msg: &str| {
        response::write_text(out, status, &local.date, framing, &[], msg);
        Answer::Done(route, status)
    };
    let decoded = |raw: Option<&[u8]>, scratch: &mut Vec<u8>| {
        scratch.clear();
        if let Some(raw) = raw {
            url::decode_into(raw, scratch);
        }
    };

    // What the conversion proves about its sender; whether it counts is decided against its
    // click's network at query time (README "Trust").
    let (auth, auth_network) = if route == Route::Postback {
        let network = param(body, query, b"network", &mut local.scratch);
        local.buf.clear();
        if let Some(n) = network {
            url::decode_into(n, &mut local.buf);
        }
        let token = param(body, query, b"token", &mut local.scratch);
        decoded(token, &mut local.scratch);
        let net = network.map(|_| local.buf.as_slice());
        match ctx
            .table
            .check_postback_token(net, token.map(|_| local.scratch.as_slice()))
        {
            Ok((auth, n)) => (auth, n),
            Err(TokenError::BadToken) => {
                return fail(local, out, Status::Forbidden, "bad or missing token");
            }
            Err(TokenError::UnknownNetwork) => {
                return fail(local, out, Status::Forbidden, "unknown network");
            }
        }
    } else if ctx.table.any_postback_token() {
        (Auth::NoToken, None)
    } else {
        (Auth::Open, None)
    };

    let Some(cid) = param(body, query, names.click_id, &mut local.scratch) else {
        let msg = if names.click_id == b"h" {
            "missing h (the click id)"
        } else {
            "missing cid (the click id)"
        };
        return fail(local, out, Status::BadRequest, msg);
    };
    decoded(Some(cid), &mut local.scratch);
    let click_id = match EventId::parse(&local.scratch) {
        Ok(id) => id,
        Err(e) => {
            let mut msg = [0u8; 128];
            let mut cur = std::io::Cursor::new(&mut msg[..]);
            let _ = write!(cur, "malformed click id: {e}");
            let n = cur.position() as usize;
            return fail(
                local,
                out,
                Status::BadRequest,
                std::str::from_utf8(&msg[..n]).unwrap_or("malformed click id"),
            );
        }
    };
    let payout_micros = match param(body, query, names.payout, &mut local.scratch) {
        None => None,
        Some(raw) => {
            decoded(Some(raw), &mut local.scratch);
            if local.scratch.trim_ascii().is_empty() {
                None
            } else {
                match money::parse_micros(&local.scratch) {
                    Ok(m) if m.unsigned_abs() > ctx.table.max_payout_micros.unsigned_abs() => {
                        let msg = "bad payout: above server.max_payout";
                        return fail(local, out, Status::BadRequest, msg);
                    }
                    Ok(m) => Some(m),
                    Err(e) => {
                        let msg = match e {
                            money::MoneyError::TooPrecise => {
                                "bad payout: more than 6 decimal places"
                            }
                            money::MoneyError::TooLarge => "bad payout: too large",
                            _ => "bad payout: not a decimal number like 12.34",
                        };
                        return fail(local, out, Status::BadRequest, msg);
                    }
                }
            }
        }
    };

    let kind = if route == Route::Pixel {
        EventKind::Pixel
    } else {
        EventKind::Postback
    };
    // Only a postback's form fields are kept of a body, and no token is stored.
    let body = if route == Route::Postback { body } else { &[] };
    let target_len = redact_tokens(
        req.target_raw,
        body,
        &mut local.scratch,
        &mut local.redacted,
    );
    let (target, kept_body) = match target_len {
        Some(n) => local.redacted.split_at(n),
        None => (req.target_raw, body),
    };
    let ts_ms = now_ms(now);
    let id = local.ids.next(ts_ms);
    let mut e = new_event(kind, id, req, peer, target, kept_body, 128);
    e.payout_micros = payout_micros;
    e.auth = auth;
    if let Some(n) = auth_network {
        e.push(Field::NetworkId, n.id.as_bytes());
    }
    e.push(Field::ClickId, &click_id.to_hex());
    for (field, name, default) in [
        (Field::ConversionType, names.kind, &b""[..]),
        (Field::TxId, &b"txid"[..], &b""[..]),
        (Field::Status, &b"status"[..], &b"approved"[..]),
    ] {
        let raw = param(body, query, name, &mut local.scratch);
        decoded(raw, &mut local.scratch);
        if local.scratch.len() > MAX_CONVERSION_FIELD {
            let msg = match field {
                Field::TxId => "txid longer than 256 bytes",
                Field::Status => "status longer than 256 bytes",
                _ => "type longer than 256 bytes",
            };
            return fail(local, out, Status::BadRequest, msg);
        }
        let value = if local.scratch.is_empty() {
            default
        } else {
            &local.scratch[..]
        };
        e.push(field, value);
    }
    let (sender, ack) = sink::ack::pair();
    e.ack = Some(sender);
    if !emit.emit(e) {
        return fail(
            local,
            out,
            Status::ServiceUnavailable,
            "the conversion cannot be recorded now; retry",
        );
    }
    Answer::Pending(Pending {
        route,
        ack,
        framing,
    })
}

#[cfg(test)]
mod tests;
