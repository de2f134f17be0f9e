//! The listener and its connections: [`Server`] (bind the port first, then
//! the TLS material; builder options; [`Server::run`]), the accept loop,
//! which admits or refuses each connection at once by the limits in `conns`
//! and never waits on a handshake, and each connection's task: its TLS
//! handshake under `tls_handshake_timeout`, then hyper over `wire::ConnIo`
//! with our deadlines (a whole request head within `header_read_timeout` of
//! the handshake or of the head's first byte; `keep_alive_idle` with no
//! request), streamed bodies, connections a handler asks to drop or the
//! table evicts, and graceful shutdown with its grace period.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::Either;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use super::conns::{ConnGuard, ConnLimits, ConnTable};
use super::context::Ctx;
use super::wire::{Activity, ConnIo};
use super::{
    reload, request, results, tls, AccessOptions, ApiError, ApiOptions, PipelineHandle, TlsReloader,
};
use crate::state::AppState;
use crate::store::Store;

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
    /// Bind the listener, then load or generate the TLS material. When this
    /// returns, the port accepts connections (they are served once `run`
    /// runs). A port that cannot be bound fails before any file is written.
    pub async fn bind(
        opts: ApiOptions,
        state: Arc<AppState>,
        store: Arc<Store>,
    ) -> Result<Server, ApiError> {
        opts.validate()?;
        let listener = Self::listen(opts.listen).await?;
        Self::with_listener(listener, opts, state, store).await
    }

    /// Bind `addr` (before anything else is written at start: keys, TLS files).
    pub async fn listen(addr: SocketAddr) -> Result<TcpListener, ApiError> {
        TcpListener::bind(addr)
            .await
            .map_err(|source| ApiError::Bind { addr, source })
    }

    /// Like [`Server::bind`], on a listener bound by [`Server::listen`].
    pub async fn with_listener(
        listener: TcpListener,
        opts: ApiOptions,
        state: Arc<AppState>,
        store: Arc<Store>,
    ) -> Result<Server, ApiError> {
        opts.validate()?;
        let local_addr = listener.local_addr().map_err(|source| ApiError::Bind {
            addr: opts.listen,
            source,
        })?;
        let (settings, dir) = (opts.tls_settings(), opts.state_dir.clone());
        let material = tokio::task::spawn_blocking(move || tls::load(&settings, &dir, true))
            .await
            .map_err(|e| ApiError::Internal(format!("TLS setup task failed: {e}")))??;
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
            support,
            ..
        } = self.ctx;
        self.ctx = Ctx::new(state, store, &self.opts, access, &self.opts.state_dir);
        (self.ctx.pipeline, self.ctx.reloads) = (pipeline, reloads);
        self.ctx.support = support;
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

    /// The daemon's effective settings, for the support bundle's
    /// `config.json` (redacted there). Without them it says so.
    pub fn with_support(mut self, settings: std::sync::Arc<crate::config::Settings>) -> Self {
        self.ctx.support.settings = Some(settings);
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
        let table = ConnTable::new(ConnLimits {
            max_connections: opts.max_connections,
            per_address: opts.max_connections_per_address,
            handshakes_per_address: opts.max_handshakes_per_address,
        });
        let mut http = hyper::server::conn::http1::Builder::new();
        // The header deadline is ours (see `serve_connection`): hyper's would
        // also run while a kept-alive connection waits, cutting keep-alive
        // short to it.
        http.timer(TokioTimer::new())
            .header_read_timeout(None)
            .keep_alive(true);
        let http = Arc::new(http);
        let timing = Timing {
            handshake: opts.tls_handshake_timeout,
            header: opts.header_read_timeout,
            keep_alive: opts.keep_alive_idle,
        };
        let mut tasks = JoinSet::new();
        let mut refusals = RefusalLog::default();

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
                // Decided at once: the accept loop never waits for a place,
                // and handshakes run in the connection's own task.
                let admitted = match table.admit(peer.ip(), Instant::now()) {
                    Ok(a) => a,
                    Err(r) => {
                        ctx.state.metrics.count_connection_refused(r.label());
                        refusals.note(r.label(), peer, &opts, table.open());
                        drop(stream);
                        continue;
                    }
                };
                if let Some(hog) = admitted.evicted {
                    ctx.state.metrics.count_connection_refused("evicted");
                    refusals.note("evicted", SocketAddr::new(hog, 0), &opts, table.open());
                }
                tasks.spawn(serve_connection(
                    stream,
                    peer,
                    TlsAcceptor::from(tls.config()),
                    http.clone(),
                    ctx.clone(),
                    timing,
                    conn_stop_rx.clone(),
                    admitted.guard,
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

/// Connections refused or evicted, logged at most every 10 s.
#[derive(Default)]
struct RefusalLog {
    since_log: u64,
    last_log: Option<Instant>,
}

impl RefusalLog {
    fn note(&mut self, reason: &'static str, peer: SocketAddr, opts: &ApiOptions, open: usize) {
        self.since_log += 1;
        if self
            .last_log
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(10))
        {
            log::warn!(
                reason = reason, client:display = peer.ip(), open = open;
                "API connection limits reached ({reason}, from {}): {} connection(s) closed since \
                 the last report; limits: {} open, {} per address, {} handshakes per address",
                peer.ip(),
                self.since_log,
                opts.max_connections,
                opts.max_connections_per_address,
                opts.max_handshakes_per_address,
            );
            self.last_log = Some(Instant::now());
            self.since_log = 0;
        }
    }
}

/// A connection's deadlines.
#[derive(Debug, Clone, Copy)]
struct Timing {
    /// From accept to a finished TLS handshake.
    handshake: Duration,
    /// From the handshake's end, or a later head's first byte, to a whole head.
    header: Duration,
    /// With no request in flight and none begun for this long: closed.
    keep_alive: Duration,
}

#[allow(clippy::too_many_arguments)]
async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    http: Arc<hyper::server::conn::http1::Builder>,
    ctx: Arc<Ctx>,
    t: Timing,
    mut stop: watch::Receiver<bool>,
    place: ConnGuard,
) {
    let shared = place.shared.clone();
    if *stop.borrow_and_update() {
        return;
    }
    let tls = tokio::select! {
        r = tokio::time::timeout(t.handshake, acceptor.accept(stream)) => match r {
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
        },
        _ = shared.evicted.notified() => {
            log::debug!(peer:display = peer; "connection closed during its handshake for another client");
            return;
        }
        _ = stop.changed() => return,
    };
    place.handshake_done();
    let activity = Arc::new(Activity::new(shared.clone()));
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
    let io = ConnIo::new(tls, activity.clone());
    let mut conn = pin!(http.serve_connection(TokioIo::new(io), service));
    let mut closing = false;
    if *stop.borrow_and_update() {
        conn.as_mut().graceful_shutdown();
        closing = true;
    }
    // One timer and one waiter of each kind for the connection's life, so
    // a request costs no timer registration and no extra pass through this
    // loop: the loop only turns when a deadline is due or the connection
    // must end. A head that begins while the timer waits needs no wake-up
    // of its own: the timer never waits longer than the header limit, and a
    // head begun after it was armed has its deadline after it fires.
    let sleep = tokio::time::sleep(t.header);
    let mut sleep = pin!(sleep);
    let mut stopped = pin!(stop.changed());
    let mut killed = pin!(activity.kill.notified());
    let mut evicted = pin!(shared.evicted.notified());
    loop {
        let now = Instant::now();
        let head_at = activity.head_since().map(|s| s + t.header);
        let wake = match head_at {
            Some(at) => at,
            // A request in flight (possibly longer than the idle limit): look again later.
            None if activity.in_flight() > 0 => now + t.header,
            None => (activity.last() + t.keep_alive).min(now + t.header),
        };
        sleep.as_mut().reset(tokio::time::Instant::from_std(wake));
        tokio::select! {
            res = conn.as_mut() => {
                if let Err(e) = res {
                    log::debug!(peer:display = peer; "connection ended: {e}");
                }
                break;
            }
            _ = stopped.as_mut(), if !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
            // A handler asked for the connection to be dropped (a too-slow
            // event subscriber): close it without finishing the response.
            _ = killed.as_mut() => break,
            // Its place went to a client from an address holding fewer.
            _ = evicted.as_mut() => {
                log::debug!(peer:display = peer; "connection closed for another client");
                break;
            }
            _ = sleep.as_mut(), if head_at.is_some() || !closing => {
                if let Some(since) = activity.head_since() {
                    if since.elapsed() >= t.header {
                        log::debug!(peer:display = peer; "request head not received within {:?}", t.header);
                        break;
                    }
                } else if !closing
                    && activity.in_flight() == 0
                    && activity.last().elapsed() >= t.keep_alive
                {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
        }
    }
    drop(place);
}
