//! The listener and its connections: [`Server`] (bind with the TLS material,
//! builder options, [`Server::run`]), the accept loop with the connection
//! limit, TLS handshakes under the header timeout, serving each connection
//! with hyper (idle keep-alive closing, streamed bodies, connections a
//! handler asks to drop) and graceful shutdown with its grace period.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::Either;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use super::context::Ctx;
use super::{
    reload, request, results, tls, AccessOptions, ApiError, ApiOptions, PipelineHandle, TlsReloader,
};
use crate::state::AppState;
use crate::store::Store;

/// How long a new connection waits for a free slot when `max_connections`
/// are busy before it is closed.
const CONNECTION_SLOT_WAIT: Duration = Duration::from_millis(250);
/// Default for how long in-flight requests may take to finish after shutdown
/// is signalled; connections still open after that are dropped. Every handler
/// answers in milliseconds, so this is generous.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

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
    pub(crate) fn with_reloads(mut self, tx: tokio::sync::mpsc::Sender<reload::Request>) -> Self {
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
    pub(crate) fn with_shutdown_grace(mut self, grace: Duration) -> Self {
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
            let mut resp = request::handle(ctx, peer, req, kill).await;
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
