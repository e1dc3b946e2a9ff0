//! Conversions: `GET|POST /postback`, `/p.gif` and the seed's `/{account}/a.gif` pixel —
//! checked, bounded, tokens redacted — answered once their event is durable.

use super::*;

/// The parameter names of a conversion route.
pub(super) struct ConversionParams {
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
pub(super) fn param<'r>(
    body: &'r [u8],
    query: &'r [u8],
    name: &[u8],
    scratch: &mut Vec<u8>,
) -> Option<&'r [u8]> {
    url::find(body, name, scratch).or_else(|| url::find(query, name, scratch))
}

pub(super) fn is_form(content_type: &[u8]) -> bool {
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
pub(super) fn redact_tokens(
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
pub(super) fn conversion(
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
        Answer::Done(
            route,
            Reject::new(status, msg).write(out, &local.date, framing),
        )
    };
    let decoded = |raw: Option<&[u8]>, scratch: &mut Vec<u8>| {
        scratch.clear();
        if let Some(raw) = raw {
            url::decode_into(raw, scratch);
        }
    };

    // What the conversion proves about its sender; whether it counts is decided against its
    // click's network at query time (docs/query.md "Trust").
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
            .routing
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
    } else if ctx.routing.any_postback_token() {
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
                    Ok(m) if m.unsigned_abs() > ctx.routing.max_payout_micros.unsigned_abs() => {
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
    let (sender, ack) = sink::model::ack::pair();
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
