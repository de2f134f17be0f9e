//! HTTPS API: owns the listener, TLS termination, connection limits and
//! timeouts, graceful shutdown, routing, and the JSON shapes of every response
//! (including the error table). Reads [`AppState`] and the [`Store`]; never
//! writes either.
//!
//! Routes (GET or HEAD; other methods → 405 with `Allow`):
//! - `/healthz`: liveness, always `{"status":"ok"}`.
//! - `/readyz`: 200 or 503 with `{"ready":..,"checks":{"source":..,"model":..,"store":..}}`.
//! - `/api/v1/status`: uptime, version, source, readiness, model, counters,
//!   last result, store size.
//! - `/api/v1/results?since=&until=&limit=`: newest first; `since`/`until` are
//!   inclusive nanoseconds since the Unix epoch or RFC 3339 times.
//! - `/api/v1/results/latest`, `/api/v1/results/{id}`.
//!
//! Store reads run on tokio's blocking pool (`spawn_blocking`), never on the
//! async workers.

pub mod tls;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CACHE_CONTROL, CONTENT_TYPE, X_CONTENT_TYPE_OPTIONS};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Serialize;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::state::AppState;
use crate::store::{Store, StoreError};
pub use tls::TlsError;

/// How long a new connection waits for a free slot when `max_connections`
/// are busy before it is closed.
pub const CONNECTION_SLOT_WAIT: Duration = Duration::from_millis(250);
/// Default for how long in-flight requests may take to finish after shutdown
/// is signalled; connections still open after that are dropped. Every handler
/// answers in milliseconds, so this is generous.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);
/// `limit` when the query does not give one (capped by `max_results_limit`).
pub const DEFAULT_RESULTS_LIMIT: usize = 50;

/// API configuration.
#[derive(Debug, Clone)]
pub struct ApiOptions {
    pub listen: SocketAddr,
    /// PEM certificate chain; with `key`. Neither set → self-signed pair in
    /// `<state_dir>/tls/`, generated on first start and reused.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub state_dir: PathBuf,
    /// Connections served at once (≥ 1).
    pub max_connections: usize,
    /// Bound on the TLS handshake and on receiving each request head. Hyper
    /// also applies it while a kept-alive connection waits for its next
    /// request, so it caps idle keep-alive too.
    pub header_read_timeout: Duration,
    /// A connection with no request in flight and no request started for this
    /// long is closed (the effective idle limit is the smaller of this and
    /// `header_read_timeout`).
    pub keep_alive_idle: Duration,
    /// Largest `limit` accepted by `/api/v1/results` (≥ 1).
    pub max_results_limit: usize,
}

impl ApiOptions {
    /// Options with the daemon's defaults for everything but the address and
    /// state directory.
    pub fn new(listen: SocketAddr, state_dir: PathBuf) -> Self {
        ApiOptions {
            listen,
            cert: None,
            key: None,
            state_dir,
            max_connections: 64,
            header_read_timeout: Duration::from_secs(10),
            keep_alive_idle: Duration::from_secs(5),
            max_results_limit: 1000,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("API configuration: {0}")]
    Config(String),
    #[error("API: cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("no such route")]
    RouteNotFound,
    #[error("method not allowed; allowed: {allow}")]
    MethodNotAllowed { allow: &'static str },
    #[error("no result with this id")]
    ResultNotFound,
    #[error("no results stored yet")]
    NoResults,
    #[error("invalid query parameter {name:?}: {reason}")]
    InvalidParameter { name: String, reason: String },
    #[error("malformed result id: expected {} hexadecimal digits", crate::store::ID_LEN)]
    InvalidId,
    #[error("result store: {0}")]
    Store(StoreError),
    #[error("internal: {0}")]
    Internal(String),
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::MalformedId { .. } => ApiError::InvalidId,
            other => ApiError::Store(other),
        }
    }
}

/// The one table from error kind to HTTP status and stable machine code.
pub fn status_and_code(e: &ApiError) -> (StatusCode, &'static str) {
    match e {
        ApiError::RouteNotFound => (StatusCode::NOT_FOUND, "not_found"),
        ApiError::ResultNotFound => (StatusCode::NOT_FOUND, "result_not_found"),
        ApiError::NoResults => (StatusCode::NOT_FOUND, "no_results"),
        ApiError::MethodNotAllowed { .. } => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
        ApiError::InvalidParameter { .. } => (StatusCode::BAD_REQUEST, "invalid_parameter"),
        ApiError::InvalidId => (StatusCode::BAD_REQUEST, "invalid_id"),
        ApiError::Store(_) => (StatusCode::INTERNAL_SERVER_ERROR, "store_error"),
        ApiError::Config(_) | ApiError::Bind { .. } | ApiError::Tls(_) | ApiError::Internal(_) => {
            (StatusCode::INTERNAL_SERVER_ERROR, "internal")
        }
    }
}

/// The message a client sees: the error's text for client errors, a fixed
/// sentence for server errors (whose text may hold paths or internals).
fn public_message(e: &ApiError) -> String {
    match e {
        ApiError::Store(_) => "the result store failed; see the daemon log".into(),
        ApiError::Config(_) | ApiError::Bind { .. } | ApiError::Tls(_) | ApiError::Internal(_) => {
            "internal error; see the daemon log".into()
        }
        client => client.to_string(),
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Serialize)]
struct ErrorDetail<'a> {
    code: &'a str,
    message: String,
}

type Resp = Response<Full<Bytes>>;

fn json_response<T: Serialize + ?Sized>(status: StatusCode, body: &T) -> Resp {
    match serde_json::to_vec(body) {
        Ok(bytes) => {
            let mut r = Response::new(Full::new(Bytes::from(bytes)));
            *r.status_mut() = status;
            r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            r
        }
        Err(e) => {
            log::error!("cannot encode response: {e}");
            error_response(&ApiError::Internal("response encoding failed".into()))
        }
    }
}

fn error_response(e: &ApiError) -> Resp {
    let (status, code) = status_and_code(e);
    if status.is_server_error() {
        log::error!(code = code; "API request failed: {e}");
    }
    let body = ErrorBody { error: ErrorDetail { code, message: public_message(e) } };
    // Serialising two strings cannot fail; the fallback keeps this total anyway.
    let bytes = serde_json::to_vec(&body).unwrap_or_else(|_| {
        br#"{"error":{"code":"internal","message":"internal error"}}"#.to_vec()
    });
    let mut r = Response::new(Full::new(Bytes::from(bytes)));
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let ApiError::MethodNotAllowed { allow } = e {
        r.headers_mut().insert(ALLOW, HeaderValue::from_static(allow));
    }
    r
}

/// What the handlers need.
struct Ctx {
    state: Arc<AppState>,
    store: Arc<Store>,
    max_results_limit: usize,
}

#[derive(Debug, PartialEq)]
enum Route<'a> {
    Healthz,
    Readyz,
    Status,
    Results,
    Latest,
    ById(&'a str),
    Metrics,
}

impl Route<'_> {
    /// A bounded name for metrics labels (never the raw path).
    fn name(&self) -> &'static str {
        match self {
            Route::Healthz => "healthz",
            Route::Readyz => "readyz",
            Route::Status => "status",
            Route::Results => "results",
            Route::Latest => "results_latest",
            Route::ById(_) => "result_by_id",
            Route::Metrics => "metrics",
        }
    }
}

const ALLOW_GET: &str = "GET, HEAD";

fn match_route(path: &str) -> Option<Route<'_>> {
    Some(match path {
        "/healthz" => Route::Healthz,
        "/readyz" => Route::Readyz,
        "/api/v1/status" => Route::Status,
        "/api/v1/results" => Route::Results,
        "/api/v1/results/latest" => Route::Latest,
        "/metrics" => Route::Metrics,
        p => {
            let id = p.strip_prefix("/api/v1/results/")?;
            if id.is_empty() || id.contains('/') {
                return None;
            }
            Route::ById(id)
        }
    })
}

async fn handle(ctx: Arc<Ctx>, req: Request<Incoming>) -> Resp {
    let started = Instant::now();
    let mut resp = match route(&ctx, &req).await {
        Ok(r) => r,
        Err(e) => error_response(&e),
    };
    let route_name = match_route(req.uri().path()).map(|r| r.name()).unwrap_or("unknown");
    ctx.state.metrics.count_http(route_name, resp.status().as_u16());
    let h = resp.headers_mut();
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    log::debug!(
        "{} {} -> {} in {} µs",
        req.method(),
        req.uri().path(),
        resp.status().as_u16(),
        started.elapsed().as_micros()
    );
    resp
}

/// Run blocking store work off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(ApiError::from),
        Err(e) => Err(ApiError::Internal(format!("store task failed: {e}"))),
    }
}

async fn route(ctx: &Arc<Ctx>, req: &Request<Incoming>) -> Result<Resp, ApiError> {
    let route = match_route(req.uri().path()).ok_or(ApiError::RouteNotFound)?;
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Err(ApiError::MethodNotAllowed { allow: ALLOW_GET });
    }
    match route {
        Route::Healthz => Ok(json_response(StatusCode::OK, &serde_json::json!({"status": "ok"}))),
        Route::Readyz => {
            let r = ctx.state.readiness();
            let status =
                if r.ready() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
            Ok(json_response(status, &serde_json::json!({"ready": r.ready(), "checks": r})))
        }
        Route::Status => status(ctx).await,
        Route::Metrics => {
            let store = ctx.store.clone();
            let (records, size) = blocking(move || Ok((store.len(), store.size_on_disk()))).await?;
            let body = ctx.state.metrics.render(&ctx.state, records, size);
            let mut resp = Response::new(Full::new(Bytes::from(body)));
            resp.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
            );
            Ok(resp)
        }
        Route::Results => {
            let q = parse_results_query(req.uri().query(), ctx.max_results_limit)?;
            let store = ctx.store.clone();
            let results = blocking(move || store.range(q.since, q.until, q.limit)).await?;
            Ok(json_response(StatusCode::OK, &serde_json::json!({ "results": results })))
        }
        Route::Latest => {
            let store = ctx.store.clone();
            match blocking(move || store.latest()).await? {
                Some(r) => Ok(json_response(StatusCode::OK, &r)),
                None => Err(ApiError::NoResults),
            }
        }
        Route::ById(id) => {
            let store = ctx.store.clone();
            let id = id.to_string();
            match blocking(move || store.get(&id)).await? {
                Some(r) => Ok(json_response(StatusCode::OK, &r)),
                None => Err(ApiError::ResultNotFound),
            }
        }
    }
}

async fn status(ctx: &Arc<Ctx>) -> Result<Resp, ApiError> {
    let store = ctx.store.clone();
    let (records, size_bytes) = blocking(move || Ok((store.len(), store.size_on_disk()))).await?;
    let s = &ctx.state;
    let readiness = s.readiness();
    let body = serde_json::json!({
        "uptime_s": s.started.elapsed().as_secs(),
        "version": s.version,
        "source": s.source(),
        "readiness": { "ready": readiness.ready(), "checks": readiness },
        "model": s.model(),
        "counters": s.counters.snapshot(),
        "last_result": s.last_result(),
        "store": { "records": records, "size_bytes": size_bytes },
    });
    Ok(json_response(StatusCode::OK, &body))
}

#[derive(Debug, PartialEq)]
struct ResultsQuery {
    since: Option<u64>,
    until: Option<u64>,
    limit: usize,
}

fn invalid(name: &str, reason: impl Into<String>) -> ApiError {
    // Client-supplied names are echoed back; keep them short.
    ApiError::InvalidParameter { name: name.chars().take(32).collect(), reason: reason.into() }
}

/// A time bound: nanoseconds since the epoch, or an RFC 3339 timestamp.
fn parse_time(name: &str, v: &str) -> Result<u64, ApiError> {
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        return v.parse().map_err(|_| invalid(name, "nanosecond value out of range"));
    }
    let t = time::OffsetDateTime::parse(v, &time::format_description::well_known::Rfc3339)
        .map_err(|_| {
            invalid(name, "expected nanoseconds since the Unix epoch or an RFC 3339 time")
        })?;
    u64::try_from(t.unix_timestamp_nanos())
        .map_err(|_| invalid(name, "time outside 1970..2554 (u64 nanoseconds)"))
}

fn parse_results_query(query: Option<&str>, max_limit: usize) -> Result<ResultsQuery, ApiError> {
    let mut q = ResultsQuery { since: None, until: None, limit: DEFAULT_RESULTS_LIMIT.min(max_limit) };
    let mut seen_limit = false;
    for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        let dup = || invalid(&k, "given more than once");
        match &*k {
            "since" if q.since.is_some() => return Err(dup()),
            "until" if q.until.is_some() => return Err(dup()),
            "limit" if seen_limit => return Err(dup()),
            "since" => q.since = Some(parse_time("since", &v)?),
            "until" => q.until = Some(parse_time("until", &v)?),
            "limit" => {
                seen_limit = true;
                q.limit = v
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=max_limit).contains(n))
                    .ok_or_else(|| invalid("limit", format!("expected an integer 1..={max_limit}")))?;
            }
            other => return Err(invalid(other, "unknown parameter (expected since, until, limit)")),
        }
    }
    if let (Some(s), Some(u)) = (q.since, q.until) {
        if s > u {
            return Err(invalid("since", "is after until"));
        }
    }
    Ok(q)
}

/// Per-connection activity, for closing idle kept-alive connections.
struct Activity {
    base: Instant,
    in_flight: AtomicUsize,
    /// Nanoseconds since `base` of the last request start or end.
    last: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Activity { base: Instant::now(), in_flight: AtomicUsize::new(0), last: AtomicU64::new(0) }
    }
    fn touch(&self) {
        let ns = u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.last.store(ns, Ordering::Relaxed);
    }
    fn last(&self) -> Instant {
        self.base + Duration::from_nanos(self.last.load(Ordering::Relaxed))
    }
    fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.touch();
        InFlight(self.clone())
    }
}

/// Marks a request in flight until dropped (also when the handler is cancelled).
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A bound HTTPS listener, ready to [`Server::run`].
pub struct Server {
    listener: TcpListener,
    acceptor: TlsAcceptor,
    local_addr: SocketAddr,
    fingerprint: String,
    opts: ApiOptions,
    ctx: Arc<Ctx>,
    shutdown_grace: Duration,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("local_addr", &self.local_addr)
            .field("fingerprint", &self.fingerprint)
            .finish()
    }
}

impl Server {
    /// Load or generate the TLS material and bind the listener. When this
    /// returns, the port accepts connections (they are served once `run` runs).
    pub async fn bind(
        opts: ApiOptions,
        state: Arc<AppState>,
        store: Arc<Store>,
    ) -> Result<Server, ApiError> {
        if opts.max_connections == 0 {
            return Err(ApiError::Config("max_connections must be at least 1".into()));
        }
        if opts.max_results_limit == 0 {
            return Err(ApiError::Config("max_results_limit must be at least 1".into()));
        }
        let (cert, key, dir) = (opts.cert.clone(), opts.key.clone(), opts.state_dir.clone());
        let material = tokio::task::spawn_blocking(move || {
            tls::load_or_generate(cert.as_deref(), key.as_deref(), &dir)
        })
        .await
        .map_err(|e| ApiError::Internal(format!("TLS setup task failed: {e}")))??;
        let bind_err = |source| ApiError::Bind { addr: opts.listen, source };
        let listener = TcpListener::bind(opts.listen).await.map_err(bind_err)?;
        let local_addr = listener.local_addr().map_err(bind_err)?;
        log::info!(addr:display = local_addr; "API listening on https://{local_addr}");
        Ok(Server {
            listener,
            acceptor: TlsAcceptor::from(material.config),
            local_addr,
            fingerprint: material.fingerprint,
            ctx: Arc::new(Ctx { state, store, max_results_limit: opts.max_results_limit }),
            opts,
            shutdown_grace: SHUTDOWN_GRACE,
        })
    }

    /// Replace the shutdown grace period (default [`SHUTDOWN_GRACE`]).
    pub fn with_shutdown_grace(mut self, grace: Duration) -> Self {
        self.shutdown_grace = grace;
        self
    }

    /// The bound address (the real port when `listen` had port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// SHA-256 of the served leaf certificate's DER, lowercase hex.
    pub fn cert_fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Serve until `shutdown` becomes true (or its sender is dropped). Then
    /// stop accepting, let in-flight requests finish for up to the shutdown
    /// grace period, drop what remains, and return.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) -> Result<(), ApiError> {
        let Server { listener, acceptor, opts, ctx, shutdown_grace, .. } = self;
        let slots = Arc::new(Semaphore::new(opts.max_connections));
        let (conn_stop_tx, conn_stop_rx) = watch::channel(false);
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(opts.header_read_timeout)
            .keep_alive(true);
        let http = Arc::new(http);
        let mut tasks = JoinSet::new();
        let mut rejected: u64 = 0;
        let mut last_reject_log: Option<Instant> = None;

        let stopping = |rx: &mut watch::Receiver<bool>| *rx.borrow_and_update();
        if !stopping(&mut shutdown) {
            loop {
                // Reap finished connection tasks so the set stays bounded.
                while tasks.try_join_next().is_some() {}
                let accepted = tokio::select! {
                    changed = shutdown.changed() => {
                        if changed.is_err() || stopping(&mut shutdown) { break; }
                        continue;
                    }
                    a = listener.accept() => a,
                };
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // E.g. EMFILE: back off briefly instead of spinning.
                        log::warn!("API accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let permit = tokio::select! {
                    changed = shutdown.changed() => {
                        if changed.is_err() || stopping(&mut shutdown) { break; }
                        tokio::time::timeout(CONNECTION_SLOT_WAIT, slots.clone().acquire_owned()).await
                    }
                    p = tokio::time::timeout(CONNECTION_SLOT_WAIT, slots.clone().acquire_owned()) => p,
                };
                let Ok(Ok(permit)) = permit else {
                    rejected += 1;
                    if last_reject_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                        log::warn!(
                            "API at its limit of {} connections; closed {rejected} new connection(s)",
                            opts.max_connections
                        );
                        last_reject_log = Some(Instant::now());
                        rejected = 0;
                    }
                    drop(stream);
                    continue;
                };
                tasks.spawn(serve_connection(
                    stream,
                    peer,
                    acceptor.clone(),
                    http.clone(),
                    ctx.clone(),
                    opts.header_read_timeout,
                    opts.keep_alive_idle,
                    conn_stop_rx.clone(),
                    permit,
                ));
            }
        }

        drop(listener);
        let open = tasks.len();
        log::info!(connections = open; "API shutting down");
        // Receivers may all be gone already; nothing to tell then.
        let _ = conn_stop_tx.send(true);
        let drained = tokio::time::timeout(shutdown_grace, async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            log::warn!(
                "API: {} connection(s) still open after {:?}; closing them",
                tasks.len(),
                shutdown_grace
            );
            tasks.abort_all();
            while tasks.join_next().await.is_some() {}
        }
        Ok(())
    }
}

#[allow(clippy::too_many_arguments)]
async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    http: Arc<hyper::server::conn::http1::Builder>,
    ctx: Arc<Ctx>,
    handshake_timeout: Duration,
    keep_alive_idle: Duration,
    mut stop: watch::Receiver<bool>,
    _permit: tokio::sync::OwnedSemaphorePermit,
) {
    let tls = match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            ctx.state.metrics.count_tls_failure();
            log::debug!(peer:display = peer; "TLS handshake failed: {e}");
            return;
        }
        Err(_) => {
            ctx.state.metrics.count_tls_failure();
            log::debug!(peer:display = peer; "TLS handshake timed out");
            return;
        }
    };
    let activity = Arc::new(Activity::new());
    let act = activity.clone();
    let service = hyper::service::service_fn(move |req| {
        let ctx = ctx.clone();
        let guard = act.begin();
        async move {
            let resp = handle(ctx, req).await;
            drop(guard);
            Ok::<_, Infallible>(resp)
        }
    });
    let mut conn = pin!(http.serve_connection(TokioIo::new(tls), service));
    let mut closing = false;
    if *stop.borrow_and_update() {
        conn.as_mut().graceful_shutdown();
        closing = true;
    }
    loop {
        let idle_at = tokio::time::Instant::from_std(activity.last() + keep_alive_idle);
        tokio::select! {
            res = conn.as_mut() => {
                if let Err(e) = res {
                    log::debug!(peer:display = peer; "connection ended: {e}");
                }
                break;
            }
            _ = stop.changed(), if !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
            _ = tokio::time::sleep_until(idle_at), if !closing => {
                let idle = activity.in_flight.load(Ordering::Relaxed) == 0
                    && activity.last().elapsed() >= keep_alive_idle;
                if idle {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Catches: "latest" captured as an id, nested paths or empty ids accepted.
    #[test]
    fn routes_match_exactly() {
        assert_eq!(match_route("/api/v1/results/latest"), Some(Route::Latest));
        assert_eq!(match_route("/api/v1/results/abc"), Some(Route::ById("abc")));
        assert_eq!(match_route("/api/v1/results"), Some(Route::Results));
        assert_eq!(match_route("/api/v1/results/"), None);
        assert_eq!(match_route("/api/v1/results/a/b"), None);
        assert_eq!(match_route("/healthz/"), None);
        assert_eq!(match_route("/"), None);
    }

    // Catches: wrong defaults, limit above the max accepted, swapped or exclusive bounds,
    // RFC 3339 offsets ignored, unknown or repeated parameters silently accepted.
    #[test]
    fn results_query_parsing() {
        let q = |s: &str| parse_results_query(Some(s), 100);
        assert_eq!(q("").unwrap(), ResultsQuery { since: None, until: None, limit: 50 });
        assert_eq!(parse_results_query(None, 10).unwrap().limit, 10);
        assert_eq!(
            q("since=5&until=9&limit=100").unwrap(),
            ResultsQuery { since: Some(5), until: Some(9), limit: 100 }
        );
        assert_eq!(q("since=1970-01-01T00:00:01Z").unwrap().since, Some(1_000_000_000));
        assert_eq!(
            q("until=1970-01-01T01:00:00.5%2B01:00").unwrap().until,
            Some(500_000_000),
            "+01:00 offset must be applied"
        );
        for bad in [
            "limit=0",
            "limit=101",
            "limit=-1",
            "limit=x",
            "since=yesterday",
            "since=-5",
            "since=99999999999999999999",
            "since=1960-01-01T00:00:00Z",
            "since=9&until=5",
            "sinse=5",
            "limit=1&limit=2",
        ] {
            let e = q(bad).unwrap_err();
            assert_eq!(status_and_code(&e).0, StatusCode::BAD_REQUEST, "{bad}");
        }
    }

    // Catches: server errors leaking paths or internals into the response body.
    #[test]
    fn server_errors_do_not_leak_internals() {
        let e = ApiError::Store(StoreError::Io {
            path: "/var/lib/spotter/secret".into(),
            action: "read",
            source: std::io::Error::other("boom"),
        });
        assert_eq!(status_and_code(&e), (StatusCode::INTERNAL_SERVER_ERROR, "store_error"));
        let msg = public_message(&e);
        assert!(!msg.contains("/var/lib") && !msg.contains("boom"), "{msg}");
        // Malformed ids from the store become a client error.
        let e: ApiError = StoreError::MalformedId { id: "x".into() }.into();
        assert_eq!(status_and_code(&e), (StatusCode::BAD_REQUEST, "invalid_id"));
    }
}
