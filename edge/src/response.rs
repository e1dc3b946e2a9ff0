//! Response bytes: status lines and the fixed headers are static, the `Date` header is
//! formatted once a second per worker, and responses are appended to the connection's
//! output buffer so pipelined requests go out in one write.

use std::time::{SystemTime, UNIX_EPOCH};

/// The 43-byte transparent 1x1 GIF served by the conversion pixels.
pub const PIXEL_GIF: &[u8; 43] = b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff\
\x21\xf9\x04\x01\x00\x00\x00\x00\x2c\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02\x44\x01\x00\x3b";

/// `100 Continue`, sent when a client asks before sending its body.
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// The statuses the edge answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    Found,
    BadRequest,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    RequestTimeout,
    LengthRequired,
    ContentTooLarge,
    UriTooLong,
    HeaderFieldsTooLarge,
    ServiceUnavailable,
}

impl Status {
    pub const ALL: [Status; 12] = [
        Status::Ok,
        Status::Found,
        Status::BadRequest,
        Status::Forbidden,
        Status::NotFound,
        Status::MethodNotAllowed,
        Status::RequestTimeout,
        Status::LengthRequired,
        Status::ContentTooLarge,
        Status::UriTooLong,
        Status::HeaderFieldsTooLarge,
        Status::ServiceUnavailable,
    ];

    pub fn code(self) -> u16 {
        match self {
            Status::Ok => 200,
            Status::Found => 302,
            Status::BadRequest => 400,
            Status::Forbidden => 403,
            Status::NotFound => 404,
            Status::MethodNotAllowed => 405,
            Status::RequestTimeout => 408,
            Status::LengthRequired => 411,
            Status::ContentTooLarge => 413,
            Status::UriTooLong => 414,
            Status::HeaderFieldsTooLarge => 431,
            Status::ServiceUnavailable => 503,
        }
    }

    pub fn from_code(code: u16) -> Status {
        Status::ALL
            .into_iter()
            .find(|s| s.code() == code)
            .unwrap_or(Status::BadRequest)
    }

    fn line(self) -> &'static [u8] {
        match self {
            Status::Ok => b"HTTP/1.1 200 OK\r\n",
            Status::Found => b"HTTP/1.1 302 Found\r\n",
            Status::BadRequest => b"HTTP/1.1 400 Bad Request\r\n",
            Status::Forbidden => b"HTTP/1.1 403 Forbidden\r\n",
            Status::NotFound => b"HTTP/1.1 404 Not Found\r\n",
            Status::MethodNotAllowed => b"HTTP/1.1 405 Method Not Allowed\r\n",
            Status::RequestTimeout => b"HTTP/1.1 408 Request Timeout\r\n",
            Status::LengthRequired => b"HTTP/1.1 411 Length Required\r\n",
            Status::ContentTooLarge => b"HTTP/1.1 413 Content Too Large\r\n",
            Status::UriTooLong => b"HTTP/1.1 414 URI Too Long\r\n",
            Status::HeaderFieldsTooLarge => b"HTTP/1.1 431 Request Header Fields Too Large\r\n",
            Status::ServiceUnavailable => b"HTTP/1.1 503 Service Unavailable\r\n",
        }
    }
}

/// The `Date` header value, reformatted when the second changes.
#[derive(Debug)]
pub struct DateCache {
    secs: u64,
    value: [u8; 29],
}

impl Default for DateCache {
    fn default() -> Self {
        let mut d = DateCache {
            secs: u64::MAX,
            value: [b' '; 29],
        };
        d.update(SystemTime::now());
        d
    }
}

impl DateCache {
    /// Brings the value up to `now`; formats only when the second changed.
    pub fn update(&mut self, now: SystemTime) {
        let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        if secs != self.secs {
            self.secs = secs;
            let s = httpdate::fmt_http_date(UNIX_EPOCH + std::time::Duration::from_secs(secs));
            let n = s.len().min(29);
            self.value[..n].copy_from_slice(&s.as_bytes()[..n]);
        }
    }

    pub fn value(&self) -> &[u8; 29] {
        &self.value
    }
}

/// How the response ends the exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Framing {
    /// Keep the connection open after this response.
    pub keep_alive: bool,
    /// The request was HTTP/1.0 (keep-alive must then be announced).
    pub http10: bool,
    /// A HEAD request: headers only.
    pub head_only: bool,
}

impl Framing {
    pub fn close() -> Self {
        Framing {
            keep_alive: false,
            http10: false,
            head_only: false,
        }
    }
}

/// Appends a whole response. `headers` are complete `Name: value` lines without CRLF;
/// callers only pass values the edge built or validated.
pub fn write(
    out: &mut Vec<u8>,
    status: Status,
    date: &DateCache,
    framing: Framing,
    headers: &[&[u8]],
    content_type: &[u8],
    body: &[u8],
) {
    out.extend_from_slice(status.line());
    out.extend_from_slice(b"Server: edge\r\nDate: ");
    out.extend_from_slice(date.value());
    out.extend_from_slice(b"\r\n");
    for h in headers {
        out.extend_from_slice(h);
        out.extend_from_slice(b"\r\n");
    }
    if !content_type.is_empty() {
        out.extend_from_slice(b"Content-Type: ");
        out.extend_from_slice(content_type);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"Content-Length: ");
    sink::model::money::write_digits(body.len() as u64, 1, out);
    out.extend_from_slice(b"\r\n");
    if !framing.keep_alive {
        out.extend_from_slice(b"Connection: close\r\n");
    } else if framing.http10 {
        out.extend_from_slice(b"Connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !framing.head_only {
        out.extend_from_slice(body);
    }
}

/// Appends a 302 to `location`, which must be a URL the edge built from a template.
/// `headers` are whole header lines (each ending in CRLF), or empty.
pub fn write_redirect(
    out: &mut Vec<u8>,
    date: &DateCache,
    framing: Framing,
    location: &[u8],
    headers: &[u8],
) {
    debug_assert!(!location.iter().any(|&c| c == b'\r' || c == b'\n'));
    out.extend_from_slice(Status::Found.line());
    out.extend_from_slice(b"Server: edge\r\nDate: ");
    out.extend_from_slice(date.value());
    out.extend_from_slice(b"\r\nLocation: ");
    out.extend_from_slice(location);
    out.extend_from_slice(b"\r\nCache-Control: no-store\r\nContent-Length: 0\r\n");
    out.extend_from_slice(headers);
    if !framing.keep_alive {
        out.extend_from_slice(b"Connection: close\r\n");
    } else if framing.http10 {
        out.extend_from_slice(b"Connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends a plain-text response whose body is `message` and a newline.
pub fn write_text(
    out: &mut Vec<u8>,
    status: Status,
    date: &DateCache,
    framing: Framing,
    headers: &[&[u8]],
    message: &str,
) {
    let mut body = [0u8; 256];
    let n = message.len().min(body.len() - 1);
    body[..n].copy_from_slice(&message.as_bytes()[..n]);
    body[n] = b'\n';
    write(
        out,
        status,
        date,
        framing,
        headers,
        b"text/plain; charset=utf-8",
        &body[..=n],
    );
}

/// A refusal: its status, the headers it needs (`Allow`), and a text naming the problem.
/// Every error answer the edge gives — the server's (400, 408, 413, 414, 431, 501, 505) and
/// the routes' (400, 403, 404, 405, 503) — is written through [`Reject::write`].
#[derive(Debug, Clone, Copy)]
pub struct Reject<'a> {
    pub status: Status,
    pub headers: &'a [&'a [u8]],
    pub message: &'a str,
}

impl<'a> Reject<'a> {
    pub const fn new(status: Status, message: &'a str) -> Self {
        Reject {
            status,
            headers: &[],
            message,
        }
    }

    pub const fn with_headers(self, headers: &'a [&'a [u8]]) -> Self {
        Reject { headers, ..self }
    }

    /// Appends the answer (the message as text, cut at 255 bytes) and returns its status.
    pub fn write(self, out: &mut Vec<u8>, date: &DateCache, framing: Framing) -> Status {
        write_text(out, self.status, date, framing, self.headers, self.message);
        self.status
    }
}

/// Appends the conversion pixel.
pub fn write_pixel(out: &mut Vec<u8>, date: &DateCache, framing: Framing) {
    write(
        out,
        Status::Ok,
        date,
        framing,
        &[b"Cache-Control: no-store, no-cache, must-revalidate"],
        b"image/gif",
        PIXEL_GIF,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date() -> DateCache {
        let mut d = DateCache::default();
        d.update(UNIX_EPOCH + std::time::Duration::from_secs(1_764_000_000));
        d
    }

    #[test]
    fn gif_is_the_43_byte_pixel() {
        assert_eq!(PIXEL_GIF.len(), 43);
        assert!(PIXEL_GIF.starts_with(b"GIF89a"));
        assert_eq!(PIXEL_GIF[42], b';');
    }

    #[test]
    fn date_is_imf_fixdate() {
        assert_eq!(date().value(), b"Mon, 24 Nov 2025 16:00:00 GMT");
    }

    #[test]
    fn redirect_bytes() {
        let mut out = Vec::new();
        let keep = Framing {
            keep_alive: true,
            http10: false,
            head_only: false,
        };
        write_redirect(&mut out, &date(), keep, b"https://a/?x=1", &[]);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 302 Found\r\nServer: edge\r\nDate: Mon, 24 Nov 2025 16:00:00 GMT\r\nLocation: https://a/?x=1\r\nCache-Control: no-store\r\nContent-Length: 0\r\n\r\n"
        );
    }

    #[test]
    fn text_responses_close_and_head_only() {
        let mut out = Vec::new();
        let f = Framing {
            keep_alive: false,
            http10: true,
            head_only: true,
        };
        write_text(
            &mut out,
            Status::NotFound,
            &date(),
            f,
            &[],
            "unknown campaign",
        );
        let s = String::from_utf8(out).unwrap();
        assert!(s.starts_with("HTTP/1.1 404 Not Found\r\n"), "{s}");
        assert!(s.contains("Content-Length: 17\r\n"), "{s}");
        assert!(s.ends_with("Connection: close\r\n\r\n"), "{s}");
    }

    #[test]
    fn http10_keep_alive_is_announced() {
        let mut out = Vec::new();
        let f = Framing {
            keep_alive: true,
            http10: true,
            head_only: false,
        };
        write_pixel(&mut out, &date(), f);
        let head_end = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        let head = std::str::from_utf8(&out[..head_end]).unwrap();
        assert!(head.contains("Connection: keep-alive\r\n"));
        assert!(head.contains("Content-Type: image/gif\r\n"));
        assert!(head.contains("Content-Length: 43\r\n"));
        assert_eq!(&out[head_end..], PIXEL_GIF);
    }

    #[test]
    fn status_codes_round_trip() {
        for s in Status::ALL {
            assert_eq!(Status::from_code(s.code()), s);
        }
    }
}
