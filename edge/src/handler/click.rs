//! `GET /click[/N]`: a landing page's click-through to an offer, found from the visit's
//! signed cookie or click id; the click is an event of its own.

use super::fill::*;
use super::visit::Resolved;
use super::*;

/// `/click/{n}`: the n-th offer (from 1) of a multi-offer landing page; `/click`: none.
/// `Err` for anything else after `/click/`.
pub(super) fn offer_number(path: &[u8]) -> Result<Option<usize>, ()> {
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
pub(super) fn click_state<'b>(
    clicks: &Clicks,
    cid: Option<EventId>,
    cookie_header: &[u8],
    scratch: &mut Vec<u8>,
    buf: &'b mut Vec<u8>,
) -> Option<(ClickState<'b>, bool)> {
    if let Some(id) = cid
        && clicks.cache.get(&id, scratch).is_some()
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
pub(super) const CLOCK_SKEW_MS: u64 = 300_000;

/// Whether a click-through for visit `id` comes within the cookie's age of the visit.
pub(super) fn fresh(id: EventId, now: SystemTime) -> bool {
    let (now, visit) = (now_ms(now), id.ts_ms());
    visit <= now + CLOCK_SKEW_MS && now - visit.min(now) <= u64::from(COOKIE_MAX_AGE_S) * 1000
}

/// `/click?cid={click_id}` (and `/click/{n}`): the landing page's call-to-action. Finds the
/// visit's campaign and path, picks the offer (the n-th, or by weight), redirects to it and
/// records a click event that names its visit.
pub(super) fn click_through(
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
        return Reject::new(Status::NotFound, "not found").write(out, &local.date, framing);
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
    let routing = ctx.routing;
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
        .and_then(|id| routing.campaign(id.as_bytes()))
    else {
        return unknown_target(ctx, local, x, out, "unknown click");
    };
    // A reload may have changed the campaign's paths: then its default ones.
    let path: &Path = campaign
        .path(state.path_index)
        .unwrap_or_else(|| campaign.paths.pick(local.rng.u64(..)));
    let offers = path.offers.items();
    let offer_index = match number {
        Some(n) if n <= offers.len() => offers[n - 1],
        _ => *path.offers.pick(local.rng.u64(..)),
    };
    let offer = &routing.offers[offer_index as usize];
    let link = offer.link(|| local.rng.u64(..));
    let source = &routing.sources[campaign.source as usize];
    let landing_page = path
        .landing_page
        .map(|i| &routing.landing_pages[i as usize]);
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
    for (name, value) in sink::model::event::pairs(state.remapped) {
        if let Some(i) = std::str::from_utf8(name)
            .ok()
            .and_then(|n| routing.params.lookup(n))
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
    link.url.render(&mut fill, &mut local.location);

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
        link: Some(link),
        landing_page,
    };
    route.push(&mut e, routing, &local.location, state.remapped);
    emit.emit(e);
    response::write_redirect(out, &local.date, framing, &local.location, &[]);
    Status::Found
}
