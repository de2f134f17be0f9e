//! Who is calling, and whether they may: the key file cache (re-read when
//! the file changes), bearer-token parsing, [`authenticate`] with the
//! client-address, probe and per-key rate limits and the failed-authentication log,
//! the session cookie standing for its key (issue 20, see `session`),
//! and [`authorize`] (a route's scope against the caller's key).

use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use hyper::header::{HeaderMap, HeaderValue, AUTHORIZATION};

use super::{limit, ApiError, Ctx};
use crate::keys::{KeyInfo, KeySet, KeyStore, Scope};

/// Client addresses (and keys) with their own token bucket; beyond this the
/// least useful bucket is dropped.
pub(super) const MAX_RATE_LIMIT_ENTRIES: usize = 4096;
/// Failed authentications are counted per client in windows of this length.
pub(super) const AUTH_FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// A window with this many failures from one client is logged (once, with
/// `MESSAGE_ID` [`crate::core::ids::AUTH_FAILURE_BURST`]).
pub const AUTH_FAILURE_LOG_THRESHOLD: u64 = 10;

/// The key file as last loaded, reloaded when the file changes.
pub(super) struct KeyCache {
    store: KeyStore,
    current: Mutex<(Option<FileStamp>, Arc<KeySet>)>,
}

/// Identity of one version of the key file (`None` inside: no file).
type FileStamp = Option<(u64, u64, u64, i64, i64)>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded data stays consistent even if a holder panicked (every
    // critical section is a single update), so a poisoned lock is usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl KeyCache {
    /// The cache of `<state_dir>/keys.json`; nothing is read until [`get`](Self::get).
    pub(super) fn new(state_dir: &Path) -> Self {
        KeyCache {
            store: KeyStore::new(state_dir),
            current: Mutex::new((None, Arc::new(KeySet::default()))),
        }
    }

    fn stamp(&self) -> Result<FileStamp, std::io::Error> {
        match std::fs::metadata(self.store.path()) {
            Ok(m) => Ok(Some((
                m.dev(),
                m.ino(),
                m.size(),
                m.mtime(),
                m.mtime_nsec(),
            ))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The current keys. A file that cannot be read or parsed yields no keys
    /// (fail closed) and an error in the log.
    pub(super) async fn get(&self) -> Arc<KeySet> {
        let stamp = match self.stamp() {
            Ok(s) => s,
            Err(e) => {
                log::error!(path:display = self.store.path().display(); "cannot inspect the API key file: {e}; no key is accepted");
                return Arc::new(KeySet::default());
            }
        };
        {
            let cur = lock(&self.current);
            if cur.0 == Some(stamp) {
                return cur.1.clone();
            }
        }
        let store = self.store.clone();
        let set = match tokio::task::spawn_blocking(move || store.load()).await {
            Ok(Ok(set)) => {
                log::info!(path:display = self.store.path().display(); "loaded {} API key(s)", set.len());
                set
            }
            Ok(Err(e)) => {
                log::error!("{e}; no API key is accepted until it is fixed");
                KeySet::default()
            }
            Err(e) => {
                log::error!("API key load task failed: {e}");
                return Arc::new(KeySet::default());
            }
        };
        let set = Arc::new(set);
        *lock(&self.current) = (Some(stamp), set.clone());
        set
    }
}

/// Who is calling.
pub(super) enum Caller {
    Anonymous,
    Key(std::sync::Arc<KeyInfo>),
}

impl Caller {
    /// The name results stored for this caller carry: its key's name, or
    /// `anonymous`.
    pub(super) fn name(&self) -> &str {
        match self {
            Caller::Key(k) => k.name.as_str(),
            Caller::Anonymous => "anonymous",
        }
    }
}

/// The token of an `Authorization: Bearer <token>` header; `None` when the
/// header is not of that form.
fn bearer_token(v: &HeaderValue) -> Option<&str> {
    let (scheme, token) = v.to_str().ok()?.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

fn rate_limited(wait: Duration) -> ApiError {
    ApiError::RateLimited {
        retry_after_s: limit::retry_after_secs(wait),
    }
}

/// How a request proved who it is (issue 20: sessions).
pub(super) enum Credential {
    /// Nothing (or a probe).
    None,
    /// An `Authorization: Bearer` key.
    Bearer,
    /// The session cookie, naming a valid session of a valid key.
    Session(super::session::Valid),
    /// A session cookie naming no valid session (unknown, expired, signed
    /// out, or its key revoked): the request is anonymous, and a route that
    /// needs a key answers `session_expired`.
    StaleSession,
}

/// A presented key failed: count it against the client (metrics, the
/// failed-authentication log) and return the error to answer. The client's
/// token is not given back, so guessing keys (by header or by sign-in form)
/// meets the client-address rate limit.
pub(super) fn key_failed(ctx: &Ctx, peer: IpAddr) -> ApiError {
    let client = limit::client_key(peer);
    ctx.state.metrics.count_auth_failure();
    if let Some(count) = lock(&ctx.failure_bursts).record(client, Instant::now()) {
        log::warn!(
            message_id = crate::core::ids::AUTH_FAILURE_BURST, client:display = client, count = count;
            "API: {count} failed authentications from {client} within {} s; not logged again for this client in this window",
            AUTH_FAILURE_WINDOW.as_secs()
        );
    }
    ApiError::InvalidKey
}

/// A key (or a session of it) was verified: give the client's token back
/// and take one from the key's own bucket.
pub(super) fn key_accepted(ctx: &Ctx, peer: IpAddr, info: &KeyInfo) -> Result<(), ApiError> {
    let now = Instant::now();
    lock(&ctx.client_limits).refund(&limit::client_key(peer), now);
    if let Err(wait) = lock(&ctx.key_limits).try_take(&info.id, now) {
        ctx.state.metrics.count_rate_limited("key");
        return Err(rate_limited(wait));
    }
    Ok(())
}

/// Identify the caller and apply the rate limits. Every request without a
/// verified key takes a token from its client address's bucket; one that
/// presents a key takes it before verification (so guessing is bounded even
/// when many guesses run at once) and gets it back when the key is valid.
/// An anonymous probe (`probe`: `/healthz`, `/readyz` without a key) takes
/// its token from the address's probe bucket instead, so an address locked
/// out for failed keys (a bad client behind the same NAT) still gets its
/// liveness and readiness answered. Without an `Authorization` header, the
/// session cookie (issue 20) stands for its key, with the key's scope and
/// rate limit, as long as the session is valid and the key not revoked.
pub(super) async fn authenticate(
    ctx: &Ctx,
    peer: IpAddr,
    headers: &HeaderMap,
    probe: bool,
) -> Result<(Caller, Credential), ApiError> {
    let client = limit::client_key(peer);
    if probe && !headers.contains_key(AUTHORIZATION) {
        if let Err(wait) = lock(&ctx.probe_limits).try_take(&client, Instant::now()) {
            ctx.state.metrics.count_rate_limited("probe");
            return Err(rate_limited(wait));
        }
        return Ok((Caller::Anonymous, Credential::None));
    }
    if let Err(wait) = lock(&ctx.client_limits).try_take(&client, Instant::now()) {
        ctx.state.metrics.count_rate_limited("client_ip");
        return Err(rate_limited(wait));
    }
    let Some(value) = headers.get(AUTHORIZATION) else {
        return session_caller(ctx, peer, headers).await;
    };
    let info = match bearer_token(value) {
        Some(token) => ctx.keys.get().await.verify(token).cloned(),
        None => None,
    };
    let Some(info) = info else {
        return Err(key_failed(ctx, peer));
    };
    key_accepted(ctx, peer, &info)?;
    Ok((Caller::Key(info), Credential::Bearer))
}

/// The caller a session cookie stands for (anonymous without one).
async fn session_caller(
    ctx: &Ctx,
    peer: IpAddr,
    headers: &HeaderMap,
) -> Result<(Caller, Credential), ApiError> {
    let Some(token) = super::session::cookie_token(headers) else {
        return Ok((Caller::Anonymous, Credential::None));
    };
    let Some(valid) = ctx.sessions.check(token, Instant::now()) else {
        return Ok((Caller::Anonymous, Credential::StaleSession));
    };
    let keys = ctx.keys.get().await;
    let info = keys.active(&valid.key_id).cloned();
    let Some(info) = info else {
        // The key was revoked or removed: its sessions end on their next request.
        ctx.sessions.remove(&valid.id);
        log::info!(spotter_key_id = valid.key_id.as_str(); "API: session ended: its key was revoked or removed");
        return Ok((Caller::Anonymous, Credential::StaleSession));
    };
    key_accepted(ctx, peer, &info)?;
    Ok((Caller::Key(info), Credential::Session(valid)))
}

/// Check the caller against the scope a route needs (`None`: any caller):
/// 401 without a key, 403 with too small a scope.
pub(super) fn authorize(caller: &Caller, needed: Option<Scope>) -> Result<(), ApiError> {
    if let Some(needed) = needed {
        match caller {
            Caller::Anonymous => return Err(ApiError::MissingKey),
            Caller::Key(k) if !k.scope.allows(needed) => {
                return Err(ApiError::InsufficientScope { needed })
            }
            Caller::Key(_) => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    // Catches: Basic or other schemes taken as bearer tokens, empty tokens accepted.
    #[test]
    fn bearer_parsing() {
        let t = |s: &str| bearer_token(&HeaderValue::from_str(s).unwrap()).map(str::to_string);
        assert_eq!(t("Bearer spk_x").as_deref(), Some("spk_x"));
        assert_eq!(t("bearer  spk_x ").as_deref(), Some("spk_x"));
        assert_eq!(t("Basic dXNlcjpwYXNz"), None);
        assert_eq!(t("Bearer "), None);
        assert_eq!(t("Bearer"), None);
        assert_eq!(t("spk_x"), None);
    }
}
