//! What the handlers share: [`Ctx`] (the state, store, limits, key cache,
//! pipeline handle and shutdown signal of one server, built from the
//! options), [`Req`] (the parts of a request a handler may need) and
//! [`blocking`] (store work on the blocking pool).

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use hyper::Method;
use tokio::sync::{watch, Semaphore};

use super::admission::{BodyBudget, BodyLimits};
use super::auth::{
    Caller, Credential, KeyCache, AUTH_FAILURE_LOG_THRESHOLD, AUTH_FAILURE_WINDOW,
    MAX_RATE_LIMIT_ENTRIES,
};
use super::limit::{FailureBursts, RateLimiter};
use super::{
    classify, events, frames, reload, session, AccessOptions, ApiError, ApiOptions, PipelineHandle,
};
use crate::state::AppState;
use crate::store::{Store, StoreError};

/// The probe bucket of an address refills at least this fast (tokens/s)
/// and holds at least this many, whatever `auth_fail_*` are set to: a
/// monitor probing every second never meets it; a flood of probes does.
const PROBE_MIN_RATE_PER_S: f64 = 10.0;
const PROBE_MIN_BURST: u32 = 50;

/// What the handlers need.
pub(super) struct Ctx {
    pub(super) state: Arc<AppState>,
    pub(super) store: Arc<Store>,
    pub(super) max_results_limit: usize,
    pub(super) access: AccessOptions,
    pub(super) keys: KeyCache,
    pub(super) client_limits: Mutex<RateLimiter<IpAddr>>,
    /// Per-address buckets for anonymous `/healthz` and `/readyz`, apart
    /// from `client_limits` so that failed keys do not lock the probes out.
    pub(super) probe_limits: Mutex<RateLimiter<IpAddr>>,
    pub(super) key_limits: Mutex<RateLimiter<String>>,
    pub(super) failure_bursts: Mutex<FailureBursts>,
    pub(super) state_dir: PathBuf,
    pub(super) pipeline: Option<PipelineHandle>,
    /// Where `POST /api/v1/reload` sends its request (the supervisor).
    pub(super) reloads: Option<tokio::sync::mpsc::Sender<reload::Request>>,
    pub(super) uploads: classify::Uploads,
    pub(super) subscribers: events::Subscribers,
    pub(super) max_model_bytes: u64,
    /// Bytes of request bodies held at once (model uploads aside).
    pub(super) body_budget: Arc<BodyBudget>,
    /// The deadline of every body read.
    pub(super) body_limits: BodyLimits,
    /// Becomes true when the server shuts down (set up by [`Server::run`](super::Server::run)).
    pub(super) stop: watch::Receiver<bool>,
    /// Browser sessions (issue 20).
    pub(super) sessions: session::Sessions,
    /// Viewers of the latest frames (issue 20).
    pub(super) frames: frames::FrameViewers,
    /// `[backup]` (issue 23): whom `GET /api/v1/backup` encrypts to.
    pub(super) backup: crate::config::BackupSettings,
    /// `[signing]` (issue 22): model bundle uploads are verified against it.
    pub(super) signing: crate::config::signing::SigningSettings,
    /// `GET /api/v1/support-bundle` (issue 22).
    pub(super) support: super::support::SupportCtx,
}

impl Ctx {
    pub(super) fn new(
        state: Arc<AppState>,
        store: Arc<Store>,
        opts: &ApiOptions,
        access: AccessOptions,
        state_dir: &Path,
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
            // The configuration checks the budget against the body limit;
            // clamped here too, so a body of the largest size always fits.
            body_budget: BodyBudget::new(opts.body_budget_bytes.max(access.max_body_bytes)),
            body_limits: BodyLimits {
                base: opts.body_timeout,
                min_rate: opts.body_min_rate.max(1),
            },
            frames: frames::FrameViewers::new(
                opts.max_frame_viewers,
                opts.frame_max_fps,
                opts.max_upload_pixels,
            ),
            sessions: session::Sessions::new(session::SessionLimits {
                idle: opts.session_idle,
                max_age: opts.session_max,
            }),
            stop: watch::channel(false).1,
            backup: opts.backup.clone(),
            signing: opts.signing.clone(),
            support: Default::default(),
            state,
            store,
            max_results_limit,
            keys: KeyCache::new(state_dir),
            client_limits: Mutex::new(RateLimiter::new(
                access.auth_fail_rate_per_s,
                access.auth_fail_burst,
                MAX_RATE_LIMIT_ENTRIES,
            )),
            probe_limits: Mutex::new(RateLimiter::new(
                access.auth_fail_rate_per_s.max(PROBE_MIN_RATE_PER_S),
                access.auth_fail_burst.max(PROBE_MIN_BURST),
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

/// The parts of a request a handler may need.
pub(super) struct Req<'a> {
    pub(super) method: &'a Method,
    pub(super) query: Option<&'a str>,
    pub(super) caller: &'a Caller,
    pub(super) body: Bytes,
    pub(super) peer: SocketAddr,
    /// An upload admitted before its body was read (`POST /api/v1/classify`).
    pub(super) upload: Option<classify::Admitted>,
    /// How the caller authenticated (sign-out ends the cookie's session).
    pub(super) credential: &'a Credential,
    /// The request's `Content-Type` (sign-in reads a form or JSON).
    pub(super) content_type: Option<&'a hyper::header::HeaderValue>,
}

/// Run blocking store work off the async workers.
pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(ApiError::from),
        Err(e) => Err(ApiError::Internal(format!("store task failed: {e}"))),
    }
}
