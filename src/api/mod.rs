//! HTTPS API: owns the listener, TLS termination, connection limits and
//! timeouts, graceful shutdown, routing, authentication and authorisation of
//! every request (API keys from [`crate::keys`]), rate limiting, the request
//! body limit, CORS, the security headers, and the JSON shapes of every
//! response (including the one error table, served as RFC 9457 problem
//! details). Reads [`AppState`], the [`Store`] and the key file; never writes
//! any of them.
//!
//! Routes (GET or HEAD; other methods → 405 with `Allow`), see [`ROUTES`]:
//! - `/healthz` (no key): liveness, always `{"status":"ok"}`.
//! - `/readyz` (no key): 200 or 503; `{"ready":..}` without a key, plus
//!   `"checks":{"source":..,"model":..,"store":..}` with a valid key.
//! - `/api/v1/status` (read): uptime, version, source, readiness, model,
//!   counters, last result, store size.
//! - `/api/v1/results?since=&until=&limit=` (read): newest first; `since`/
//!   `until` are inclusive nanoseconds since the Unix epoch or RFC 3339 times.
//! - `/api/v1/results/latest`, `/api/v1/results/{id}` (read).
//! - `/api/v1/results?label=&min_score=&model=&cursor=` and
//!   `/api/v1/results/{id}/image` (read), `/api/v1/backup` (admin): see
//!   [`results`].
//! - `/metrics` (read): OpenMetrics text.
//! - `/api/v1/keys` (admin): the keys' metadata (never secrets or hashes).
//!
//! Order of checks for each request: declared body size (413) → CORS
//! preflight from an allowed origin (204) → client-address rate limit for
//! requests without a verified key (429) → key verification (401) → per-key
//! rate limit (429) → route (404) → scope (401 without a key, 403 with too
//! small a scope) → body read with the limit (413) → method (405) → handler.
//! A request that presents a key has it checked on every route, public ones
//! included, so `/healthz` cannot be used to test keys without being counted.
//!
//! TLS: new connections take the server configuration current at accept from
//! a [`TlsReloader`] ([`Server::tls_reloader`]); SIGHUP swaps it, so a renewed
//! certificate (or client CA) applies to new handshakes without dropping the
//! established connections. With `client_ca` set, clients also need a
//! certificate signed by that CA (mTLS) — in addition to the API key.
//!
//! The key file is re-read when its inode, size or modification time changes
//! (one `stat` per request), so `spotter keys create|revoke` apply to the
//! next request without a signal.
//!
//! Store and key-file reads run on tokio's blocking pool (`spawn_blocking`),
//! never on the async workers.

mod auth;
pub mod classify;
mod errors;
pub mod events;
mod headers;
mod keys;
pub mod limit;
mod metrics;
mod model;
pub mod openapi;
mod options;
pub mod reload;
mod results;
mod status;
pub mod tls;

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Either, Full, LengthLimitError, Limited};
use hyper::body::{Body as _, Incoming};
use hyper::header::{HeaderMap, CONTENT_LENGTH, ORIGIN};
use hyper::{Method, Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

pub use crate::config::ClientAuth;
use crate::keys::Scope;
use crate::state::AppState;
use crate::store::{Store, StoreError};
pub use auth::AUTH_FAILURE_LOG_THRESHOLD;
use auth::{
    authenticate, authorize, Caller, KeyCache, AUTH_FAILURE_WINDOW, MAX_RATE_LIMIT_ENTRIES,
};
pub use classify::PipelineHandle;
use errors::{error_response, invalid, json_response, Resp};
pub use errors::{status_and_code, ApiError};
use headers::{cors_headers, is_preflight, origin_allowed, preflight_response, security_headers};
use limit::{FailureBursts, RateLimiter};
pub use options::{AccessOptions, ApiOptions};
pub use tls::{TlsError, TlsReloader, TlsSettings};

/// How long a new connection waits for a free slot when `max_connections`
/// are busy before it is closed.
pub const CONNECTION_SLOT_WAIT: Duration = Duration::from_millis(250);
/// Default for how long in-flight requests may take to finish after shutdown
/// is signalled; connections still open after that are dropped. Every handler
/// answers in milliseconds, so this is generous.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// What goes on the wire: a whole body, or an event stream.
type OutBody = http_body_util::Either<Full<Bytes>, events::EventBody>;

/// One route of the API: its path (with `{id}` for the parameter), metrics
/// name, the scope it needs (`None` = answers without a key) and methods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteSpec {
    pub path: &'static str,
    pub name: &'static str,
    pub scope: Option<Scope>,
    pub allow: &'static str,
}

const ALLOW_GET: &str = "GET, HEAD";

/// Every route the router serves.
pub const ROUTES: &[RouteSpec] = &[
    RouteSpec {
        path: "/healthz",
        name: "healthz",
        scope: None,
        allow: ALLOW_GET,
    },
    RouteSpec {
        path: "/readyz",
        name: "readyz",
        scope: None,
        allow: ALLOW_GET,
    },
    RouteSpec {
        path: "/api/v1/status",
        name: "status",
        scope: Some(Scope::Read),
        allow: ALLOW_GET,
    },
    RouteSpec {
        path: "/api/v1/results",
        name: "results",
        scope: Some(Scope::Read),
        allow: ALLOW_GET,
    },
    RouteSpec {
        path: "/api/v1/results/latest",
        name: "results_latest",
        scope: Some(Scope::Read),
        allow: ALLOW_GET,
    },
    RouteSpec {
        path: "/api/v1/results/{id}",
        name: "result_by_id",
        scope: Some(Scope::Read),
        allow: ALLOW_GET,
    },
    RouteSpec {
        path: "/metrics",
        name: "metrics",
        scope: Some(Scope::Read),
        allow: ALLOW_GET,
    },
    RouteSpec {
        path: "/api/v1/keys",
        name: "keys",
        scope: Some(Scope::Admin),
        allow: ALLOW_GET,
    },
    RouteSpec {
        path: "/api/v1/results/{id}/image",
        name: "result_image",
        scope: Some(Scope::Read),
        allow: ALLOW_GET,
    },
    RouteSpec {
        path: "/api/v1/backup",
        name: "backup",
        scope: Some(Scope::Admin),
        allow: ALLOW_GET,
    },
    RouteSpec {
        path: "/api/v1/classify",
        name: "classify",
        scope: Some(Scope::Read),
        allow: "POST",
    },
    RouteSpec {
        path: "/api/v1/events",
        name: "events",
        scope: Some(Scope::Read),
        allow: ALLOW_GET,
    },
    RouteSpec {
        path: "/api/v1/model",
        name: "model",
        scope: Some(Scope::Admin),
        allow: "GET, HEAD, PUT",
    },
    RouteSpec {
        path: "/api/v1/model/rollback",
        name: "model_rollback",
        scope: Some(Scope::Admin),
        allow: "POST",
    },
    RouteSpec {
        path: "/api/v1/openapi.json",
        name: "openapi",
        scope: Some(Scope::Read),
        allow: ALLOW_GET,
    },
    RouteSpec {
        path: "/api/v1/reload",
        name: "reload",
        scope: Some(Scope::Admin),
        allow: "POST",
    },
];

#[derive(Debug, PartialEq)]
enum Route<'a> {
    Healthz,
    Readyz,
    Status,
    Results,
    Latest,
    ById(&'a str),
    Metrics,
    Keys,
    Image(&'a str),
    Backup,
    Classify,
    Events,
    Model,
    ModelRollback,
    OpenApi,
    Reload,
}

impl Route<'_> {
    fn spec(&self) -> &'static RouteSpec {
        let i = match self {
            Route::Healthz => 0,
            Route::Readyz => 1,
            Route::Status => 2,
            Route::Results => 3,
            Route::Latest => 4,
            Route::ById(_) => 5,
            Route::Metrics => 6,
            Route::Keys => 7,
            Route::Image(_) => 8,
            Route::Backup => 9,
            Route::Classify => 10,
            Route::Events => 11,
            Route::Model => 12,
            Route::ModelRollback => 13,
            Route::OpenApi => 14,
            Route::Reload => 15,
        };
        &ROUTES[i]
    }

    /// A bounded name for metrics labels (never the raw path).
    fn name(&self) -> &'static str {
        self.spec().name
    }
}

fn match_route(path: &str) -> Option<Route<'_>> {
    Some(match path {
        "/healthz" => Route::Healthz,
        "/readyz" => Route::Readyz,
        "/api/v1/status" => Route::Status,
        "/api/v1/results" => Route::Results,
        "/api/v1/results/latest" => Route::Latest,
        "/metrics" => Route::Metrics,
        "/api/v1/keys" => Route::Keys,
        "/api/v1/backup" => Route::Backup,
        "/api/v1/classify" => Route::Classify,
        "/api/v1/events" => Route::Events,
        "/api/v1/model" => Route::Model,
        "/api/v1/model/rollback" => Route::ModelRollback,
        "/api/v1/openapi.json" => Route::OpenApi,
        "/api/v1/reload" => Route::Reload,
        p => {
            let id = p.strip_prefix("/api/v1/results/")?;
            if let Some(id) = id.strip_suffix("/image") {
                if id.is_empty() || id.contains('/') {
                    return None;
                }
                return Some(Route::Image(id));
            }
            if id.is_empty() || id.contains('/') {
                return None;
            }
            Route::ById(id)
        }
    })
}

/// What the handlers need.
struct Ctx {
    state: Arc<AppState>,
    store: Arc<Store>,
    max_results_limit: usize,
    access: AccessOptions,
    keys: KeyCache,
    client_limits: Mutex<RateLimiter<IpAddr>>,
    key_limits: Mutex<RateLimiter<String>>,
    failure_bursts: Mutex<FailureBursts>,
    state_dir: PathBuf,
    pipeline: Option<PipelineHandle>,
    /// Where `POST /api/v1/reload` sends its request (the supervisor).
    reloads: Option<tokio::sync::mpsc::Sender<reload::Request>>,
    uploads: classify::Uploads,
    subscribers: events::Subscribers,
    max_model_bytes: u64,
    /// Held while a model change runs (one at a time).
    model_change: tokio::sync::Mutex<()>,
    /// Becomes true when the server shuts down (set up by [`Server::run`]).
    stop: watch::Receiver<bool>,
}

impl Ctx {
    fn new(
        state: Arc<AppState>,
        store: Arc<Store>,
        opts: &ApiOptions,
        access: AccessOptions,
        state_dir: &std::path::Path,
    ) -> Ctx {
        let max_results_limit = opts.max_results_limit;
        Ctx {
            state_dir: state_dir.to_path_buf(),
            pipeline: None,
            reloads: None,
            uploads: classify::Uploads::new(
                opts.max_concurrent_uploads,
                opts.upload_queue,
                opts.max_upload_pixels,
            ),
            subscribers: events::Subscribers {
                permits: Arc::new(Semaphore::new(opts.max_event_subscribers)),
                heartbeat: opts.event_heartbeat,
            },
            max_model_bytes: opts.max_model_bytes,
            model_change: tokio::sync::Mutex::new(()),
            stop: watch::channel(false).1,
            state,
            store,
            max_results_limit,
            keys: KeyCache::new(state_dir),
            client_limits: Mutex::new(RateLimiter::new(
                access.auth_fail_rate_per_s,
                access.auth_fail_burst,
                MAX_RATE_LIMIT_ENTRIES,
            )),
            key_limits: Mutex::new(RateLimiter::new(
                access.key_rate_per_s,
                access.key_burst,
                MAX_RATE_LIMIT_ENTRIES,
            )),
            failure_bursts: Mutex::new(FailureBursts::new(
                AUTH_FAILURE_WINDOW,
                AUTH_FAILURE_LOG_THRESHOLD,
                MAX_RATE_LIMIT_ENTRIES,
            )),
            access,
        }
    }
}

fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Read the whole body, refusing more than `max` bytes as they arrive.
async fn read_body(body: Incoming, max: u64) -> Result<Bytes, ApiError> {
    if body.is_end_stream() {
        return Ok(Bytes::new());
    }
    let limit = usize::try_from(max).unwrap_or(usize::MAX);
    match Limited::new(body, limit).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            Err(ApiError::PayloadTooLarge { limit: max })
        }
        Err(e) => {
            log::debug!("request body read failed: {e}");
            Err(ApiError::BadBody)
        }
    }
}

async fn handle(
    ctx: Arc<Ctx>,
    peer: SocketAddr,
    req: Request<Incoming>,
    kill: Arc<tokio::sync::Notify>,
) -> Response<OutBody> {
    let started = Instant::now();
    let method = req.method().clone();
    let origin = req.headers().get(ORIGIN).cloned();
    let (mut resp, route_name) = respond(&ctx, peer, req, kill).await;
    ctx.state
        .metrics
        .count_http(route_name, resp.status().as_u16());
    let h = resp.headers_mut();
    security_headers(h);
    cors_headers(h, &ctx.access, origin);
    log::debug!(
        "{method} {route_name} from {} -> {} in {} µs",
        peer.ip(),
        resp.status().as_u16(),
        started.elapsed().as_micros()
    );
    resp
}

/// Apply the checks in the order the module doc gives, then the handler.
async fn respond(
    ctx: &Arc<Ctx>,
    peer: SocketAddr,
    req: Request<Incoming>,
    kill: Arc<tokio::sync::Notify>,
) -> (Response<OutBody>, &'static str) {
    use http_body_util::Either;
    let (parts, body) = req.into_parts();
    let route = match_route(parts.uri.path());
    let route_name = route.as_ref().map(|r| r.name()).unwrap_or("unknown");
    let result: Result<Response<OutBody>, ApiError> = async {
        // Model uploads have their own (larger) limit; everything else the body limit.
        let max = if route == Some(Route::Model) && parts.method == Method::PUT {
            ctx.max_model_bytes
        } else {
            ctx.access.max_body_bytes
        };
        if declared_length(&parts.headers).is_some_and(|n| n > max) {
            return Err(ApiError::PayloadTooLarge { limit: max });
        }
        if let Some(r) = &route {
            let allowed_origin = parts
                .headers
                .get(ORIGIN)
                .is_some_and(|o| origin_allowed(&ctx.access, o));
            if allowed_origin && is_preflight(&parts.method, &parts.headers) {
                return Ok(preflight_response(r.spec()).map(Either::Left));
            }
        }
        let caller = authenticate(ctx, peer.ip(), &parts.headers).await?;
        let route = route.ok_or(ApiError::RouteNotFound)?;
        authorize(&caller, route.spec().scope)?;
        // Reading every body here applies the limit while streaming, also
        // for requests whose method is then refused.
        let body = read_body(body, max).await?;
        let allow = route.spec().allow;
        if !allow.split(", ").any(|m| m == parts.method.as_str()) {
            return Err(ApiError::MethodNotAllowed { allow });
        }
        if route == Route::Events {
            return events::subscribe(ctx, kill, parts.method == Method::HEAD)
                .map(|r| r.map(Either::Right));
        }
        let req = Req {
            method: &parts.method,
            query: parts.uri.query(),
            caller: &caller,
            body,
            peer,
        };
        dispatch(ctx, route, req).await.map(|r| r.map(Either::Left))
    }
    .await;
    (
        result.unwrap_or_else(|e| error_response(&e).map(Either::Left)),
        route_name,
    )
}

/// The parts of a request a handler may need.
struct Req<'a> {
    method: &'a Method,
    query: Option<&'a str>,
    caller: &'a Caller,
    body: Bytes,
    peer: SocketAddr,
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

async fn dispatch(ctx: &Arc<Ctx>, route: Route<'_>, req: Req<'_>) -> Result<Resp, ApiError> {
    let (query, caller) = (req.query, req.caller);
    match route {
        Route::Healthz => Ok(status::healthz()),
        Route::Readyz => Ok(status::readyz(ctx, caller)),
        Route::Status => status::status(ctx).await,
        Route::Metrics => Ok(metrics::get(ctx)),
        Route::Results => results::list(ctx, query).await,
        Route::Image(id) => results::image(ctx, id).await,
        Route::Backup => results::backup(ctx, query).await,
        Route::Latest => results::latest(ctx).await,
        Route::ById(id) => results::by_id(ctx, id).await,
        Route::Keys => Ok(keys::list(ctx).await),
        Route::Classify => classify::classify(ctx, query, req.body, req.peer, caller.name()).await,
        // Answered in `respond` (a stream, not a whole body).
        Route::Events => Err(ApiError::Internal(
            "events route dispatched as a whole body".into(),
        )),
        Route::Model if req.method == Method::PUT => model::put(ctx, req.body, query).await,
        Route::Model => model::get(ctx).await,
        Route::ModelRollback => model::rollback(ctx).await,
        Route::OpenApi => Ok(openapi::response()),
        Route::Reload => reload::post(ctx).await,
    }
}

/// Per-connection activity, for closing idle kept-alive connections.
struct Activity {
    kill: Arc<tokio::sync::Notify>,
    base: Instant,
    in_flight: AtomicUsize,
    /// Nanoseconds since `base` of the last request start or end.
    last: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Activity {
            kill: Arc::new(tokio::sync::Notify::new()),
            base: Instant::now(),
            in_flight: AtomicUsize::new(0),
            last: AtomicU64::new(0),
        }
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
    tls: TlsReloader,
    local_addr: SocketAddr,
    fingerprint: String,
    opts: ApiOptions,
    ctx: Ctx,
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
            return Err(ApiError::Config(
                "max_connections must be at least 1".into(),
            ));
        }
        if opts.max_results_limit == 0 {
            return Err(ApiError::Config(
                "max_results_limit must be at least 1".into(),
            ));
        }
        if opts.max_concurrent_uploads == 0 || opts.max_event_subscribers == 0 {
            return Err(ApiError::Config(
                "max_concurrent_uploads and max_event_subscribers must be at least 1".into(),
            ));
        }
        let (settings, dir) = (opts.tls_settings(), opts.state_dir.clone());
        let material = tokio::task::spawn_blocking(move || tls::load(&settings, &dir, true))
            .await
            .map_err(|e| ApiError::Internal(format!("TLS setup task failed: {e}")))??;
        let bind_err = |source| ApiError::Bind {
            addr: opts.listen,
            source,
        };
        let listener = TcpListener::bind(opts.listen).await.map_err(bind_err)?;
        let local_addr = listener.local_addr().map_err(bind_err)?;
        log::info!(addr:display = local_addr; "API listening on https://{local_addr}");
        Ok(Server {
            listener,
            tls: TlsReloader::new(&material, &opts.state_dir),
            local_addr,
            fingerprint: material.fingerprint,
            ctx: Ctx::new(
                state,
                store,
                &opts,
                AccessOptions::default(),
                &opts.state_dir,
            ),
            opts,
            shutdown_grace: SHUTDOWN_GRACE,
        })
    }

    /// Apply access control and request limits (default:
    /// [`AccessOptions::default`]). Replaces any earlier call's options.
    pub fn with_access(mut self, access: AccessOptions) -> Result<Self, ApiError> {
        access.validate()?;
        let Ctx {
            state,
            store,
            pipeline,
            reloads,
            ..
        } = self.ctx;
        self.ctx = Ctx::new(state, store, &self.opts, access, &self.opts.state_dir);
        (self.ctx.pipeline, self.ctx.reloads) = (pipeline, reloads);
        Ok(self)
    }

    /// Let admins reload the configuration (`POST /api/v1/reload`): each
    /// request is sent to the supervisor, which applies it as on SIGHUP and
    /// replies. Needs the pipeline too; without either the route answers 503.
    pub fn with_reloads(mut self, tx: tokio::sync::mpsc::Sender<reload::Request>) -> Self {
        self.ctx.reloads = Some(tx);
        self
    }

    /// Connect the running pipeline: uploads are classified by its model and
    /// models are managed through it. Without it those routes answer 503.
    pub fn with_pipeline(mut self, pipeline: PipelineHandle) -> Self {
        self.ctx.pipeline = Some(pipeline);
        self
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

    /// SHA-256 of the served leaf certificate's DER, lowercase hex (as
    /// bound; see [`TlsReloader::fingerprint`] after reloads).
    pub fn cert_fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The handle that swaps the TLS configuration of the running server.
    pub fn tls_reloader(&self) -> TlsReloader {
        self.tls.clone()
    }

    /// Serve until `shutdown` becomes true (or its sender is dropped). Then
    /// stop accepting, let in-flight requests finish for up to the shutdown
    /// grace period, drop what remains, and return.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) -> Result<(), ApiError> {
        let Server {
            listener,
            tls,
            opts,
            mut ctx,
            shutdown_grace,
            ..
        } = self;
        let (conn_stop_tx, conn_stop_rx) = watch::channel(false);
        ctx.stop = conn_stop_rx.clone();
        let ctx = Arc::new(ctx);
        let slots = Arc::new(Semaphore::new(opts.max_connections));
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
                    TlsAcceptor::from(tls.config()),
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
        let kill = act.kill.clone();
        async move {
            let mut resp = handle(ctx, peer, req, kill).await;
            drop(guard);
            // A streamed body (the backup) replaces the empty placeholder.
            let resp = match results::Streamed::take(&mut resp) {
                Some(body) => resp.map(|_| Either::Right(body)),
                None => resp.map(Either::Left),
            };
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
            // A handler asked for the connection to be dropped (a too-slow
            // event subscriber): close it without finishing the response.
            _ = activity.kill.notified() => break,
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
        assert_eq!(match_route("/api/v1/keys"), Some(Route::Keys));
    }

    // Catches: a route served but missing from ROUTES (and so from the auth
    // matrix), or a Route mapped to another route's spec (wrong scope).
    #[test]
    fn route_table_matches_the_router() {
        for spec in ROUTES {
            let path = spec.path.replace("{id}", "0123");
            let r = match_route(&path).unwrap_or_else(|| panic!("{} not routed", spec.path));
            assert_eq!(r.spec(), spec);
        }
        let names: std::collections::HashSet<_> = ROUTES.iter().map(|r| r.name).collect();
        assert_eq!(names.len(), ROUTES.len());
        // Only the probes answer without a key.
        let public: Vec<_> = ROUTES
            .iter()
            .filter(|r| r.scope.is_none())
            .map(|r| r.path)
            .collect();
        assert_eq!(public, ["/healthz", "/readyz"]);
    }
}
