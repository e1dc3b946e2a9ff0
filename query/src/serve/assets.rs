//! The dashboard's files, built into the binary (`query/console/`): the console loads nothing
//! from anywhere else, so it works on a closed network. They carry no data and need no token;
//! everything they show comes from the API, which does.

use std::sync::OnceLock;

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// Each file: where it is served, its text and its type.
const ASSETS: [(&str, &str, &str); 4] = [
    (
        "/",
        include_str!("../../console/index.html"),
        "text/html; charset=utf-8",
    ),
    (
        "/assets/app.js",
        include_str!("../../console/app.js"),
        "text/javascript; charset=utf-8",
    ),
    (
        "/assets/app.css",
        include_str!("../../console/app.css"),
        "text/css; charset=utf-8",
    ),
    (
        "/assets/icon.svg",
        include_str!("../../console/icon.svg"),
        "image/svg+xml",
    ),
];

/// Scripts, styles and requests from this server only; no framing (clickjacking), no
/// referrer (the URL carries report filters).
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                      connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// A route for each of [`ASSETS`].
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    ASSETS
        .iter()
        .fold(Router::new(), |router, &(path, body, kind)| {
            router.route(
                path,
                get(move |h: HeaderMap| async move { send(body, kind, &h) }),
            )
        })
}

/// The files' version: a new binary's files are fetched again, the same ones are not.
fn etag() -> &'static str {
    static TAG: OnceLock<String> = OnceLock::new();
    TAG.get_or_init(|| {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        for (_, body, _) in ASSETS {
            body.hash(&mut h);
        }
        format!("\"{:016x}\"", h.finish())
    })
}

fn send(body: &'static str, content_type: &'static str, req: &HeaderMap) -> Response {
    let tag = etag();
    let fresh = req
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag));
    let mut r = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        body.into_response()
    };
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(header::ETAG, HeaderValue::from_str(tag).expect("hex"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(POLICY),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    r
}
