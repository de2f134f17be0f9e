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

use super::auth::{
    Caller, KeyCache, AUTH_FAILURE_LOG_THRESHOLD, AUTH_FAILURE_WINDOW, MAX_RATE_LIMIT_ENTRIES,
};
use super::limit::{FailureBursts, RateLimiter};
use super::{classify, events, reload, AccessOptions, ApiError, ApiOptions, PipelineHandle};
use crate::state::AppState;
use crate::store::{Store, StoreError};

/// What the handlers need.
pub(super) struct Ctx {
    pub(super) state: Arc<AppState>,
    pub(super) store: Arc<Store>,
    pub(super) max_results_limit: usize,
    pub(super) access: AccessOptions,
    pub(super) keys: KeyCache,
    pub(super) client_limits: Mutex<RateLimiter<IpAddr>>,
    pub(super) key_limits: Mutex<RateLimiter<String>>,
    pub(super) failure_bursts: Mutex<FailureBursts>,
    pub(super) state_dir: PathBuf,
    pub(super) pipeline: Option<PipelineHandle>,
    /// Where `POST /api/v1/reload` sends its request (the supervisor).
    pub(super) reloads: Option<tokio::sync::mpsc::Sender<reload::Request>>,
    pub(super) uploads: classify::Uploads,
    pub(super) subscribers: events::Subscribers,
    pub(super) max_model_bytes: u64,
    /// Held while a model change runs (one at a time).
    pub(super) model_change: tokio::sync::Mutex<()>,
    /// Becomes true when the server shuts down (set up by [`Server::run`](super::Server::run)).
    pub(super) stop: watch::Receiver<bool>,
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

/// The parts of a request a handler may need.
pub(super) struct Req<'a> {
    pub(super) method: &'a Method,
    pub(super) query: Option<&'a str>,
    pub(super) caller: &'a Caller,
    pub(super) body: Bytes,
    pub(super) peer: SocketAddr,
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
