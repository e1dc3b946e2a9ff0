//! HTTP/1.x request parsing over the connection's buffer, with the request limits.
//!
//! `parse` never copies: a [`Request`] borrows the buffer. It answers `Partial` until a whole
//! request (head and body) is buffered, so the caller reads more and calls again.

use std::time::Duration;

/// Header lines parsed per request; more is answered 431.
pub const MAX_HEADERS: usize = 64;
/// Default request head limit (431 past it).
pub const MAX_REQUEST_HEAD: usize = 16 * 1024;
/// Default request target limit (414 past it).
pub const MAX_TARGET: usize = 8 * 1024;
/// Default body limit (413 past it).
pub const MAX_BODY: usize = 64 * 1024;
/// Default time a request may take to arrive whole, from its first byte (408 past it).
pub const HEAD_TIMEOUT_MS: u64 = 10_000;
/// Default time an idle keep-alive connection stays open.
pub const IDLE_TIMEOUT_MS: u64 = 60_000;
/// Default time a write may wait for the peer to read before the connection is closed
/// (nginx's `send_timeout`).
pub const SEND_TIMEOUT_MS: u64 = 10_000;
/// Default output a connection may have answered but not yet sent. Past it no further
/// pipelined request of that connection is answered, and nothing more is read from it,
/// until the peer reads: a client that sends and never reads pins at most this much.
pub const MAX_UNSENT_OUTPUT: usize = 64 * 1024;

/// The request limits of a server.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_head: usize,
    pub max_target: usize,
    pub max_body: usize,
    /// A request must arrive whole within this, from its first byte (408 past it).
    pub head_timeout: Duration,
    /// An idle keep-alive connection is closed after this.
    pub idle_timeout: Duration,
    /// A write that makes no progress for this long closes the connection.
    pub send_timeout: Duration,
    /// Answered but unsent output past which a connection's requests wait (backpressure).
    pub max_unsent_output: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_head: MAX_REQUEST_HEAD,
            max_target: MAX_TARGET,
            max_body: MAX_BODY,
            head_timeout: Duration::from_millis(HEAD_TIMEOUT_MS),
            idle_timeout: Duration::from_millis(IDLE_TIMEOUT_MS),
            send_timeout: Duration::from_millis(SEND_TIMEOUT_MS),
            max_unsent_output: MAX_UNSENT_OUTPUT,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Other,
}

/// A parsed request, borrowing the connection buffer.
#[derive(Debug, Clone)]
pub struct Request<'b> {
    /// The whole request as received: head and body.
    pub raw: &'b [u8],
    pub head_len: usize,
    pub method: Method,
    pub method_str: &'b [u8],
    /// The target as sent (origin-form, or absolute-form from a proxy).
    pub target_raw: &'b [u8],
    /// Path and query, with any `http://host` prefix removed.
    pub target: &'b [u8],
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    pub host: &'b [u8],
    pub referer: &'b [u8],
    pub user_agent: &'b [u8],
    pub accept_language: &'b [u8],
    /// The first `X-Forwarded-For` line; see [`Request::forwarded_for_lines`].
    pub forwarded_for: &'b [u8],
    /// How many `X-Forwarded-For` lines the head has. A proxy may append its own line
    /// instead of extending the last one, so when there are several, the header is all of
    /// them as one list ([`Request::join_forwarded_for`]).
    pub forwarded_for_lines: u8,
    /// The first `Cookie` header (click-throughs read their visit's state from it).
    pub cookie: &'b [u8],
    pub content_type: &'b [u8],
    pub body: &'b [u8],
    /// Whether the connection stays open after the response.
    pub keep_alive: bool,
}

impl<'b> Request<'b> {
    pub fn path_and_query(&self) -> (&'b [u8], &'b [u8]) {
        sink::model::url::split_target(self.target)
    }

    /// Every `X-Forwarded-For` line, in order, joined with `", "` into `out` (a field sent as
    /// several lines is one comma-separated list, RFC 9110 §5.3). Only needed when
    /// [`Request::forwarded_for_lines`] is more than 1: the head is parsed again then.
    pub fn join_forwarded_for(&self, out: &mut Vec<u8>) {
        out.clear();
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        if req.parse(&self.raw[..self.head_len]).is_err() {
            return;
        }
        for h in req.headers.iter() {
            if h.name.eq_ignore_ascii_case("x-forwarded-for") {
                let v = h.value.trim_ascii();
                if v.is_empty() {
                    continue;
                }
                if !out.is_empty() {
                    out.extend_from_slice(b", ");
                }
                out.extend_from_slice(v);
            }
        }
    }
}

/// Why a request is refused; each maps to one status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// 400, with what is wrong.
    Malformed(&'static str),
    /// 431
    HeadTooLarge,
    /// 431
    TooManyHeaders,
    /// 414
    TargetTooLong,
    /// 413
    BodyTooLarge,
    /// 411: a body without Content-Length (chunked).
    LengthRequired,
}

impl ParseError {
    pub fn status(self) -> u16 {
        match self {
            ParseError::Malformed(_) => 400,
            ParseError::HeadTooLarge | ParseError::TooManyHeaders => 431,
            ParseError::TargetTooLong => 414,
            ParseError::BodyTooLarge => 413,
            ParseError::LengthRequired => 411,
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            ParseError::Malformed(m) => m,
            ParseError::HeadTooLarge => "request head too large",
            ParseError::TooManyHeaders => "too many header lines",
            ParseError::TargetTooLong => "request target too long",
            ParseError::BodyTooLarge => "request body too large",
            ParseError::LengthRequired => {
                "chunked request bodies are not accepted: send Content-Length"
            }
        }
    }
}

#[derive(Debug)]
pub enum Parse<'b> {
    Complete(Request<'b>),
    /// More bytes are needed. `expect_continue`: the head is complete and asked for
    /// `100 Continue` before the body is sent.
    Partial {
        expect_continue: bool,
    },
    Error(ParseError),
}

fn malformed(e: httparse::Error) -> ParseError {
    ParseError::Malformed(match e {
        httparse::Error::HeaderName => "malformed request: invalid header name",
        httparse::Error::HeaderValue => "malformed request: invalid header value",
        httparse::Error::NewLine => "malformed request: invalid line ending",
        httparse::Error::Status => "malformed request: invalid status",
        httparse::Error::Token => "malformed request: invalid method or token",
        httparse::Error::Version => "malformed request: invalid HTTP version",
        httparse::Error::TooManyHeaders => "too many header lines",
    })
}

/// The target's length in an incomplete head, if the request line got that far.
fn partial_target_len(buf: &[u8]) -> usize {
    let Some(sp) = buf.iter().position(|&c| c == b' ') else {
        return 0;
    };
    let rest = &buf[sp + 1..];
    rest.iter()
        .position(|&c| c == b' ' || c == b'\r' || c == b'\n')
        .unwrap_or(rest.len())
}

fn has_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|&c| c == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

fn parse_length(v: &[u8]) -> Option<usize> {
    let v = v.trim_ascii();
    if v.is_empty() || v.len() > 18 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// Strips `http://host` or `https://host` from an absolute-form target.
fn origin_form(target: &[u8]) -> Option<&[u8]> {
    if target.first() == Some(&b'/') {
        return Some(target);
    }
    let rest = target
        .strip_prefix(b"http://")
        .or_else(|| target.strip_prefix(b"https://"))?;
    let path = rest.iter().position(|&c| c == b'/' || c == b'?')?;
    let p = &rest[path..];
    (p.first() == Some(&b'/')).then_some(p)
}

/// Parses one request from the front of `buf`.
pub fn parse<'b>(buf: &'b [u8], limits: &Limits) -> Parse<'b> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            if partial_target_len(buf) > limits.max_target {
                return Parse::Error(ParseError::TargetTooLong);
            }
            if buf.len() > limits.max_head {
                return Parse::Error(ParseError::HeadTooLarge);
            }
            return Parse::Partial {
                expect_continue: false,
            };
        }
        Err(httparse::Error::TooManyHeaders) => return Parse::Error(ParseError::TooManyHeaders),
        Err(e) => return Parse::Error(malformed(e)),
    };
    let (Some(method_str), Some(target_raw), Some(minor_version)) =
        (req.method, req.path, req.version)
    else {
        return Parse::Error(ParseError::Malformed("malformed request line"));
    };
    if target_raw.len() > limits.max_target {
        return Parse::Error(ParseError::TargetTooLong);
    }
    if head_len > limits.max_head {
        return Parse::Error(ParseError::HeadTooLarge);
    }
    let target_raw = target_raw.as_bytes();
    let Some(target) = origin_form(target_raw) else {
        return Parse::Error(ParseError::Malformed(
            "request target must be a path like /c/{campaign_id}",
        ));
    };
    let method = match method_str {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        _ => Method::Other,
    };

    let mut r = Request {
        raw: &buf[..head_len],
        head_len,
        method,
        method_str: method_str.as_bytes(),
        target_raw,
        target,
        minor_version,
        host: &[],
        referer: &[],
        user_agent: &[],
        accept_language: &[],
        forwarded_for: &[],
        forwarded_for_lines: 0,
        cookie: &[],
        content_type: &[],
        body: &[],
        keep_alive: minor_version == 1,
    };
    let mut content_length: Option<usize> = None;
    let mut expect_continue = false;
    let mut has_host = false;
    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        let v = h.value;
        let is = |n: &[u8]| name.eq_ignore_ascii_case(n);
        if is(b"host") {
            if has_host {
                return Parse::Error(ParseError::Malformed("more than one Host header"));
            }
            has_host = true;
            r.host = v;
        } else if is(b"user-agent") {
            r.user_agent = v;
        } else if is(b"referer") {
            r.referer = v;
        } else if is(b"accept-language") {
            r.accept_language = v;
        } else if is(b"x-forwarded-for") {
            if r.forwarded_for_lines == 0 {
                r.forwarded_for = v;
            }
            r.forwarded_for_lines = r.forwarded_for_lines.saturating_add(1);
        } else if is(b"cookie") {
            if r.cookie.is_empty() {
                r.cookie = v;
            }
        } else if is(b"content-type") {
            r.content_type = v;
        } else if is(b"content-length") {
            let Some(n) = parse_length(v) else {
                return Parse::Error(ParseError::Malformed("invalid Content-Length"));
            };
            if content_length.is_some_and(|c| c != n) {
                return Parse::Error(ParseError::Malformed("conflicting Content-Length headers"));
            }
            content_length = Some(n);
        } else if is(b"transfer-encoding") {
            return Parse::Error(ParseError::LengthRequired);
        } else if is(b"connection") {
            if has_token(v, b"close") {
                r.keep_alive = false;
            } else if has_token(v, b"keep-alive") {
                r.keep_alive = true;
            }
        } else if is(b"expect") {
            if !v.trim_ascii().eq_ignore_ascii_case(b"100-continue") {
                return Parse::Error(ParseError::Malformed("unsupported Expect header"));
            }
            expect_continue = minor_version == 1;
        }
    }
    if minor_version == 1 && !has_host {
        return Parse::Error(ParseError::Malformed("missing Host header"));
    }
    let body_len = content_length.unwrap_or(0);
    if body_len > limits.max_body {
        return Parse::Error(ParseError::BodyTooLarge);
    }
    let total = head_len + body_len;
    if buf.len() < total {
        return Parse::Partial { expect_continue };
    }
    r.raw = &buf[..total];
    r.body = &buf[head_len..total];
    Parse::Complete(r)
}

#[cfg(test)]
mod tests;
