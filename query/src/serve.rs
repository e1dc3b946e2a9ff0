//! `query serve`: the console's JSON API over one store — the catalog the edges follow
//! (read, create, replace, delete), the report, the conversion feed and the logs — behind a
//! bearer token.
//!
//! | route | answer |
//! |---|---|
//! | `GET /api/v1/{kind}` | `{"version": N, "items": [object, …]}` |
//! | `GET /api/v1/{kind}/{id}` | the object, with what the user pastes elsewhere |
//! | `PUT /api/v1/{kind}/{id}` | creates (201) or replaces (200) it, or 400 naming the field; `If-None-Match: *` / `If-Match: ETAG` make it 412 when it exists / has changed |
//! | `DELETE /api/v1/{kind}/{id}` | 204; 404 when absent; 409 when something still uses it |
//! | `GET /api/v1/report?by=&from=&to=&include_bots=&filter=` | what `query report --format json` prints |
//! | `GET /api/v1/conversions?from=&to=&campaign=` | what `query conversions` prints (NDJSON) |
//! | `GET /api/v1/log/{clicks\|conversions}?from=&to=&campaign=&limit=&format=` | what `query log … --format json` (or `csv`) prints |
//! | `GET /api/v1/dimensions` | `{"dimensions": […]}`: what `by` and `filter` take |
//! | `GET /` | the dashboard (its files need no token; its requests do) |
//!
//! `{kind}` is `traffic_sources`, `affiliate_networks`, `offers`, `landing_pages` or
//! `campaigns`; objects are JSON with the config file's keys. Every API answer but a 401 needs
//! `Authorization: Bearer TOKEN`. `filter` is `DIMENSION=VALUE` and may repeat (a drill-down).

mod assets;
mod objects;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, Request, State as AxumState};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use catalog::store::{CatalogError, CatalogStore, Change, Kind, State};
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::feed::FeedRequest;
use crate::names::Names;
use crate::report::ReportRequest;
use crate::{DateRange, QueryError, Session, SessionOptions, dims, output};

/// What `query serve` was started with.
#[derive(Debug, Clone)]
pub struct Options {
    pub store: String,
    pub listen: SocketAddr,
    pub token: String,
    /// Where visitors reach the edges (`http://track.example.com`): the campaign and
    /// postback URLs the console shows start with it.
    pub edge_url: String,
    pub session: SessionOptions,
}

struct App {
    cs: CatalogStore,
    /// The newest version read; brought up to date before every answer.
    state: Mutex<State>,
    /// Names and payouts for reports, built once per version.
    names: std::sync::Mutex<Option<(u64, Option<Arc<Names>>)>>,
    opts: Options,
}

type Shared = Arc<App>;

/// An error answer: `{"error": …, "field": …}`.
struct Failure {
    status: StatusCode,
    error: String,
    field: Option<String>,
}

impl Failure {
    fn new(status: StatusCode, error: impl Into<String>) -> Self {
        Failure {
            status,
            error: error.into(),
            field: None,
        }
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let mut body = json!({ "error": self.error });
        if let Some(f) = self.field {
            body["field"] = Value::String(f);
        }
        (self.status, axum::Json(body)).into_response()
    }
}

impl From<CatalogError> for Failure {
    fn from(e: CatalogError) -> Self {
        match e {
            CatalogError::Invalid(catalog::ConfigError::Invalid { key, msg }) => Failure {
                status: StatusCode::BAD_REQUEST,
                error: format!("{key}: {msg}"),
                field: Some(key),
            },
            CatalogError::Invalid(other) => {
                Failure::new(StatusCode::BAD_REQUEST, other.to_string())
            }
            e @ CatalogError::NotFound { .. } => Failure::new(StatusCode::NOT_FOUND, e.to_string()),
            e @ (CatalogError::Referenced { .. } | CatalogError::Conflict { .. }) => {
                Failure::new(StatusCode::CONFLICT, e.to_string())
            }
            e @ (CatalogError::Store(_) | CatalogError::Damaged { .. }) => {
                eprintln!("query serve: catalog: {e}");
                Failure::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
            }
        }
    }
}

impl From<QueryError> for Failure {
    fn from(e: QueryError) -> Self {
        match e {
            QueryError::BadDate { .. }
            | QueryError::EmptyRange { .. }
            | QueryError::UnknownDimension { .. }
            | QueryError::BadFilter(_) => Failure::new(StatusCode::BAD_REQUEST, e.to_string()),
            QueryError::Catalog(c) => c.into(),
            other => {
                eprintln!("query serve: {other}");
                Failure::new(StatusCode::INTERNAL_SERVER_ERROR, other.to_string())
            }
        }
    }
}

/// Serves until the process is stopped.
pub async fn serve(opts: Options) -> crate::Result<()> {
    let cs = CatalogStore::new(crate::session::open_store(&opts.store)?);
    let state = cs.load().await?;
    let listener = tokio::net::TcpListener::bind(opts.listen).await?;
    eprintln!(
        "query: serving http://{}/api/v1/ over {} (catalog version {})",
        listener.local_addr()?,
        opts.store,
        state.version
    );
    let app = Arc::new(App {
        cs,
        state: Mutex::new(state),
        names: std::sync::Mutex::new(None),
        opts,
    });
    axum::serve(listener, router(app)).await?;
    Ok(())
}

fn router(app: Shared) -> Router {
    Router::new()
        .route("/api/v1/dimensions", get(dimensions))
        .route("/api/v1/report", get(report))
        .route("/api/v1/conversions", get(conversions))
        .route("/api/v1/log/{log}", get(log))
        .route("/api/v1/{kind}", get(list))
        .route(
            "/api/v1/{kind}/{id}",
            get(get_one).put(put_one).delete(delete_one),
        )
        .layer(middleware::from_fn_with_state(Arc::clone(&app), auth))
        .with_state(app)
        .merge(assets::routes())
}

/// Bearer-token check, in constant time.
async fn auth(AxumState(app): AxumState<Shared>, req: Request, next: Next) -> Response {
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then_some(token.trim())
        })
        .unwrap_or_default();
    if !sink::model::ct_eq(given.as_bytes(), app.opts.token.as_bytes()) {
        let mut r = Failure::new(
            StatusCode::UNAUTHORIZED,
            "an Authorization: Bearer token is needed",
        )
        .into_response();
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return r;
    }
    let mut r = next.run(req).await;
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn kind(s: &str) -> Result<Kind, Failure> {
    Kind::parse(s).ok_or_else(|| {
        Failure::new(
            StatusCode::NOT_FOUND,
            format!(
                "no such kind {s:?}: traffic_sources, affiliate_networks, offers, landing_pages or campaigns"
            ),
        )
    })
}

/// The newest version of the catalog, read now.
async fn fresh(app: &App) -> Result<tokio::sync::MutexGuard<'_, State>, Failure> {
    let mut state = app.state.lock().await;
    app.cs.catch_up(&mut state).await?;
    Ok(state)
}

/// Objects a list answers at most, and by default.
const LIST_MAX: usize = 10_000;
const LIST_DEFAULT: usize = 1_000;

/// The query's `limit`: `default` without one, else a number from 1 to `max`.
fn limit(q: &HashMap<String, String>, default: usize, max: usize) -> Result<usize, Failure> {
    match q.get("limit") {
        None => Ok(default),
        Some(l) => match l.parse::<usize>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(Failure {
                status: StatusCode::BAD_REQUEST,
                error: format!("limit {l:?}: a number from 1 to {max}"),
                field: Some("limit".into()),
            }),
        },
    }
}

/// A page of objects in id order: `limit` of them (default 1 000, at most 10 000) after the
/// id `after`; `next` is the `after` of the following page, absent on the last.
async fn list(
    AxumState(app): AxumState<Shared>,
    Path(k): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, Failure> {
    let kind = kind(&k)?;
    let limit = limit(&q, LIST_DEFAULT, LIST_MAX)?;
    let after = q.get("after").cloned().unwrap_or_default();
    let state = fresh(&app).await?;
    let ids = state.ids_after(kind, &after, limit + 1);
    let more = ids.len() > limit;
    let page = &ids[..ids.len().min(limit)];
    let items: Vec<Value> = page
        .iter()
        .filter_map(|id| objects::object(&app, &state, kind, id))
        .collect();
    let mut body = json!({ "version": state.version, "total": state.len(kind), "items": items });
    if more && let Some(last) = page.last() {
        body["next"] = Value::String((*last).clone());
    }
    Ok(axum::Json(body).into_response())
}

async fn get_one(
    AxumState(app): AxumState<Shared>,
    Path((k, id)): Path<(String, String)>,
) -> Result<Response, Failure> {
    let kind = kind(&k)?;
    let state = fresh(&app).await?;
    let v = objects::object(&app, &state, kind, &id).ok_or_else(|| {
        Failure::from(CatalogError::NotFound {
            kind,
            id: id.clone(),
        })
    })?;
    Ok(tagged(v, objects::tag(&state, kind, &id)).into_response())
}

/// An object's answer, with its entity tag.
fn tagged(v: Value, tag: Option<String>) -> Response {
    let mut r = axum::Json(v).into_response();
    if let Some(t) = tag.and_then(|t| HeaderValue::from_str(&t).ok()) {
        r.headers_mut().insert(header::ETAG, t);
    }
    r
}

/// `If-None-Match: *` (create only) and `If-Match: TAG` (change only the version read): a
/// `412` when the object in the newest catalog does not meet them.
fn preconditions(h: &HeaderMap, state: &State, kind: Kind, id: &str) -> Result<(), Failure> {
    let header = |name| h.get(name).and_then(|v: &HeaderValue| v.to_str().ok());
    let current = objects::tag(state, kind, id);
    if header(header::IF_NONE_MATCH).is_some_and(|v| v.trim() == "*") && current.is_some() {
        return Err(Failure {
            status: StatusCode::PRECONDITION_FAILED,
            error: format!("{kind}/{id} already exists"),
            field: Some("id".into()),
        });
    }
    if let Some(want) = header(header::IF_MATCH) {
        let ok = current
            .as_deref()
            .is_some_and(|cur| want.split(',').any(|t| t.trim() == "*" || t.trim() == cur));
        if !ok {
            return Err(Failure::new(
                StatusCode::PRECONDITION_FAILED,
                format!("{kind}/{id} has changed since it was read: read it again"),
            ));
        }
    }
    Ok(())
}

async fn put_one(
    AxumState(app): AxumState<Shared>,
    Path((k, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, Failure> {
    let kind = kind(&k)?;
    let put = objects::parse(kind, &id, &body)?;
    let mut state = app.state.lock().await;
    app.cs.catch_up(&mut state).await?;
    preconditions(&headers, &state, kind, &id)?;
    let created = !state.contains(kind, &id);
    let change = Change {
        put,
        ..Change::default()
    };
    app.cs.change(&mut state, change, "api").await?;
    let v = objects::object(&app, &state, kind, &id).unwrap_or(Value::Null);
    let mut r = tagged(v, objects::tag(&state, kind, &id));
    if created {
        *r.status_mut() = StatusCode::CREATED;
    }
    Ok(r)
}

async fn delete_one(
    AxumState(app): AxumState<Shared>,
    Path((k, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, Failure> {
    let kind = kind(&k)?;
    let mut state = app.state.lock().await;
    app.cs.catch_up(&mut state).await?;
    if state.contains(kind, &id) {
        preconditions(&headers, &state, kind, &id)?;
    }
    let mut change = Change::default();
    change.delete.of_mut(kind).push(id);
    app.cs.change(&mut state, change, "api").await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// What a report can be broken down by: the fixed dimensions, then the remapped names the
/// traffic sources define.
async fn dimensions(AxumState(app): AxumState<Shared>) -> Result<Response, Failure> {
    let state = fresh(&app).await?;
    let mut all: Vec<&str> = dims::FIXED.iter().map(|(n, _)| *n).collect();
    let remapped: std::collections::BTreeSet<&str> = state
        .traffic_sources
        .values()
        .flat_map(|t| t.params.keys().map(String::as_str))
        .filter(|n| !all.contains(n))
        .collect();
    all.extend(remapped);
    Ok(axum::Json(json!({ "dimensions": all })).into_response())
}

fn range(q: &HashMap<String, String>) -> Result<DateRange, Failure> {
    Ok(DateRange::parse(
        q.get("from").map(String::as_str).filter(|s| !s.is_empty()),
        q.get("to").map(String::as_str).filter(|s| !s.is_empty()),
    )?)
}

/// The session and the names a report or the feed runs with.
async fn session(app: &App) -> Result<(Session, Option<Arc<Names>>), Failure> {
    let names = {
        let state = fresh(app).await?;
        let cached = app.names.lock().expect("not poisoned").clone();
        match cached {
            Some((v, names)) if v == state.version => names,
            _ => {
                let names = Names::from_store(&state)?.map(Arc::new);
                *app.names.lock().expect("not poisoned") = Some((state.version, names.clone()));
                names
            }
        }
    };
    let session = Session::open(&app.opts.store, &app.opts.session).await?;
    Ok((session, names))
}

async fn report(
    AxumState(app): AxumState<Shared>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Response, Failure> {
    let filters = pairs
        .iter()
        .filter(|(k, _)| k == "filter")
        .map(|(_, f)| dims::parse_filter(f))
        .collect::<Result<_, _>>()?;
    let q: HashMap<String, String> = pairs.into_iter().collect();
    let dims = dims::parse(q.get("by").map_or("campaign", String::as_str))?;
    if dims.is_empty() {
        return Err(Failure::new(
            StatusCode::BAD_REQUEST,
            "by needs at least one dimension",
        ));
    }
    let req = ReportRequest {
        range: range(&q)?,
        dims,
        include_bots: q
            .get("include_bots")
            .is_some_and(|v| v == "true" || v == "1"),
        filters,
    };
    let (session, names) = session(&app).await?;
    let r = crate::report::run(&session, &req, names.as_deref()).await?;
    let mut out = Vec::new();
    output::report(&r, output::Format::Json, &mut out).map_err(Failure::from)?;
    Ok(([(header::CONTENT_TYPE, "application/json")], out).into_response())
}

/// The click or conversion log (`query log`): the newest `limit` events (default 100, at
/// most 10 000), one JSON object per line, or CSV with `format=csv`.
async fn log(
    AxumState(app): AxumState<Shared>,
    Path(which): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, Failure> {
    let Some(log) = crate::log::Log::parse(&which) else {
        return Err(Failure::new(
            StatusCode::NOT_FOUND,
            format!("no such log {which:?}: clicks or conversions"),
        ));
    };
    let (format, content_type) = match q.get("format").map(String::as_str) {
        None | Some("json") => (output::Format::Json, "application/x-ndjson"),
        Some("csv") => (output::Format::Csv, "text/csv"),
        Some(other) => {
            return Err(Failure {
                status: StatusCode::BAD_REQUEST,
                error: format!("format {other:?}: json or csv"),
                field: Some("format".into()),
            });
        }
    };
    let req = crate::log::LogRequest {
        log,
        range: range(&q)?,
        campaign: q.get("campaign").filter(|c| !c.is_empty()).cloned(),
        limit: limit(&q, 100, LIST_MAX)?,
    };
    let session = Session::open(&app.opts.store, &app.opts.session).await?;
    let batches = crate::log::run(&session, &req).await?;
    let mut out = Vec::new();
    output::batches(&batches, format, &mut out).map_err(Failure::from)?;
    Ok(([(header::CONTENT_TYPE, content_type)], out).into_response())
}

async fn conversions(
    AxumState(app): AxumState<Shared>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, Failure> {
    let req = FeedRequest {
        range: range(&q)?,
        campaign: q.get("campaign").filter(|c| !c.is_empty()).cloned(),
        clicks: None,
    };
    let (session, names) = session(&app).await?;
    let mut out = Vec::new();
    crate::feed::run(&session, &req, names.as_deref(), &mut out).await?;
    Ok(Response::builder()
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .body(Body::from(out))
        .expect("a response"))
}
