//! `GET /c/{campaign}`: a campaign visit — the rules and weights pick a path, the answer is
//! a 302 to its landing page or offer with a fresh click id, and the visit is an event.

use super::fill::*;
use super::*;

/// `/c/{campaign_id}`: pick a path and offer, mint a click id, redirect, record the visit.
pub(super) fn visit(
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
    let routing = ctx.routing;
    let Some(campaign) = routing.campaign(&x.path[3..]) else {
        return unknown_target(ctx, local, x, out, "unknown campaign");
    };
    let source = &routing.sources[campaign.source as usize];
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
    let path = campaign.paths_for(&visitor).pick(local.rng.u64(..));
    let landing_page = path
        .landing_page
        .map(|i| &routing.landing_pages[i as usize]);
    // With a landing page the offer is chosen at the click-through; without, now.
    let offer = match landing_page {
        Some(_) => None,
        None => Some(&routing.offers[*path.offers.pick(local.rng.u64(..)) as usize]),
    };
    let link = offer.map(|o| o.link(|| local.rng.u64(..)));
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
        .filter(|&c| (0..=routing.max_cost_micros).contains(&c))
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
            routing.params.name(*name).as_bytes(),
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
    match (landing_page, link) {
        (Some(lp), _) => lp.url.render(&mut fill, &mut local.location),
        (None, Some(l)) => l.url.render(&mut fill, &mut local.location),
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
            ctx.clicks.cache.put(&id, &local.state);
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
        link,
        landing_page,
    };
    route.push(&mut e, routing, &local.location, &local.buf);
    emit.emit(e);
    response::write_redirect(out, &local.date, framing, &local.location, &local.cookie);
    Status::Found
}

/// Where a visit or click-through was sent, as its event records it.
pub(super) struct Resolved<'t> {
    pub(super) campaign: &'t Campaign,
    pub(super) source: &'t TrafficSource,
    pub(super) offer: Option<&'t Offer>,
    /// The offer's link taken.
    pub(super) link: Option<&'t OfferLink>,
    pub(super) landing_page: Option<&'t LandingPage>,
}

impl Resolved<'_> {
    /// Appends the campaign, source, offer (and its link) and network, landing page, the `Location` sent and
    /// the remapped parameters to `e`.
    pub(super) fn push(&self, e: &mut Event, routing: &Routing, location: &[u8], remapped: &[u8]) {
        e.push(Field::CampaignId, self.campaign.id.as_bytes());
        e.push(Field::TrafficSourceId, self.source.id.as_bytes());
        if let Some(o) = self.offer {
            e.push(Field::OfferId, o.id.as_bytes());
            if let Some(l) = self.link.filter(|l| !l.id.is_empty()) {
                e.push(Field::OfferLinkId, l.id.as_bytes());
            }
            if let Some(n) = o.network {
                let n = &routing.networks[n as usize];
                e.push(Field::NetworkId, n.id.as_bytes());
                e.network_policy = Some(n.policy);
            }
        }
        if let Some(lp) = self.landing_page {
            e.push(Field::LandingPageId, lp.id.as_bytes());
            if self.offer.is_none() {
                // No network has this click id until the click-through: as for a click id no
                // visit has, only a postback that carries some network's token counts, and a
                // pixel only when no network requires a token (docs/query.md "Trust").
                let pixels = if routing.any_postback_token() {
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
