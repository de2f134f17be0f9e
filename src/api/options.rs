//! The API's settings: [`ApiOptions`] (listener, TLS files, connection and
//! request limits, given to [`Server::bind`]) and [`AccessOptions`] (rate
//! limits, the body limit and CORS origins, given to
//! [`Server::with_access`]) with its validation.
//!
//! [`Server::bind`]: super::Server::bind
//! [`Server::with_access`]: super::Server::with_access

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::{ApiError, TlsSettings};
use crate::config::api as defaults;
use crate::config::{is_valid_origin, ClientAuth};

/// Default request body limit.
const DEFAULT_MAX_BODY_BYTES: u64 = defaults::DEFAULT_MAX_BODY_BYTES;

/// Default `api.body_timeout_ms`: the grace every body gets.
pub(crate) const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// Default `api.body_min_bytes_per_s`: 32 KiB/s, far below any LAN or Wi-Fi
/// link, far above a trickle.
pub(crate) const DEFAULT_BODY_MIN_RATE: u64 = 32 * 1024;
/// Default `api.body_budget_bytes`: four bodies of the default limit
/// (40 MiB), small beside a 1 GiB board's memory.
pub(crate) const DEFAULT_BODY_BUDGET_BYTES: u64 = 4 * DEFAULT_MAX_BODY_BYTES;

/// API configuration.
#[derive(Debug, Clone)]
pub struct ApiOptions {
    pub listen: SocketAddr,
    /// PEM certificate chain; with `key`. Neither set → self-signed pair in
    /// `<state_dir>/tls/`, generated on first start and reused.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// PEM CA certificate(s) client certificates must chain to (mTLS).
    pub client_ca: Option<PathBuf>,
    pub client_auth: ClientAuth,
    /// Holds `tls/`, and `keys.json` (see [`crate::keys`]).
    pub state_dir: PathBuf,
    /// Connections open at once, all addresses (≥ 1); see `server` for who
    /// gives way at the limit.
    pub max_connections: usize,
    /// Bound on receiving a request head: the first from the end of the
    /// handshake, each later one from its first byte.
    pub header_read_timeout: Duration,
    /// A kept-alive connection with no request for this long is closed.
    pub keep_alive_idle: Duration,
    /// Largest `limit` accepted by `/api/v1/results` (≥ 1).
    pub max_results_limit: usize,
    /// Uploads (`POST /api/v1/classify`) in flight at once (≥ 1); more get 503.
    pub max_concurrent_uploads: usize,
    /// Uploads that may wait (up to [`classify::UPLOAD_QUEUE_WAIT`](super::classify::UPLOAD_QUEUE_WAIT)) for a
    /// slot when all are busy; beyond that they get 503 at once.
    pub upload_queue: usize,
    /// Largest uploaded image (width × height), checked from its header.
    pub max_upload_pixels: u64,
    /// Largest model upload (`PUT /api/v1/model`), instead of the body limit.
    pub max_model_bytes: u64,
    /// Concurrent `/api/v1/events` subscribers (≥ 1); more get 503.
    pub max_event_subscribers: usize,
    /// Interval of heartbeat comments on event streams.
    pub event_heartbeat: Duration,

    // --- Request bodies (issue 21: slow bodies, the in-flight budget) ---
    /// Every request body may take this long, plus one second per
    /// `body_min_rate` bytes received; slower bodies are cut off with 408.
    pub body_timeout: Duration,
    /// The slowest transfer a request body may keep up, in bytes per second (≥ 1).
    pub body_min_rate: u64,
    /// Bytes of request bodies held at once, all requests together (model
    /// uploads aside); reserved from `Content-Length` before a body is read,
    /// beyond it 503 with `Retry-After`. At least the body limit.
    pub body_budget_bytes: u64,
    // Connection limits (issue 21).
    /// Connections open at once from one client address (IPv6: its /64), ≥ 1.
    pub max_connections_per_address: usize,
    /// TLS handshakes in progress at once from one client address, ≥ 1.
    pub max_handshakes_per_address: usize,
    /// From accept to a finished TLS handshake.
    pub tls_handshake_timeout: Duration,
    // --- Web page (issue 20) ---
    /// A browser session unused for this long ends (`api.session_idle_s`).
    pub session_idle: Duration,
    /// A browser session ends this long after sign-in (`api.session_max_s`).
    pub session_max: Duration,
    /// Viewers of `/api/v1/sources/{name}/frame` at once (≥ 1); more get 503.
    pub max_frame_viewers: usize,
    /// Frames per second each viewer may fetch (> 0); faster gets 429.
    pub frame_max_fps: f64,
    /// `[backup]`: recipients of encrypted backups, plain ones refused (issue 23).
    pub backup: crate::config::BackupSettings,
    /// `[signing]`: keys a model bundle upload must be signed by, and
    /// whether a bare or unsigned model is still accepted (issue 22).
    pub signing: crate::config::signing::SigningSettings,
}

impl ApiOptions {
    /// The TLS part of these options.
    pub(crate) fn tls_settings(&self) -> TlsSettings {
        TlsSettings {
            cert: self.cert.clone(),
            key: self.key.clone(),
            client_ca: self.client_ca.clone(),
            client_auth: self.client_auth,
        }
    }

    /// Options with the daemon's defaults for everything but the address and
    /// state directory.
    pub fn new(listen: SocketAddr, state_dir: PathBuf) -> Self {
        ApiOptions {
            listen,
            cert: None,
            key: None,
            client_ca: None,
            client_auth: ClientAuth::Required,
            state_dir,
            max_connections: defaults::DEFAULT_MAX_CONNECTIONS,
            header_read_timeout: defaults::DEFAULT_HEADER_READ_TIMEOUT,
            keep_alive_idle: defaults::DEFAULT_KEEP_ALIVE_IDLE,
            max_results_limit: 1000,
            max_concurrent_uploads: defaults::DEFAULT_MAX_CONCURRENT_UPLOADS,
            upload_queue: defaults::DEFAULT_UPLOAD_QUEUE,
            max_upload_pixels: defaults::DEFAULT_MAX_UPLOAD_PIXELS,
            max_model_bytes: defaults::DEFAULT_MAX_MODEL_BYTES,
            max_event_subscribers: defaults::DEFAULT_MAX_EVENT_SUBSCRIBERS,
            event_heartbeat: defaults::DEFAULT_EVENT_HEARTBEAT,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            body_min_rate: DEFAULT_BODY_MIN_RATE,
            body_budget_bytes: DEFAULT_BODY_BUDGET_BYTES,
            max_connections_per_address: defaults::DEFAULT_MAX_CONNECTIONS_PER_ADDRESS,
            max_handshakes_per_address: defaults::DEFAULT_MAX_HANDSHAKES_PER_ADDRESS,
            tls_handshake_timeout: defaults::DEFAULT_TLS_HANDSHAKE_TIMEOUT,
            session_idle: defaults::DEFAULT_SESSION_IDLE,
            session_max: defaults::DEFAULT_SESSION_MAX,
            max_frame_viewers: defaults::DEFAULT_MAX_FRAME_VIEWERS,
            frame_max_fps: defaults::DEFAULT_FRAME_MAX_FPS,
            backup: crate::config::BackupSettings::default(),
            signing: Default::default(),
        }
    }

    /// The checks `Server::bind` makes before binding.
    pub(crate) fn validate(&self) -> Result<(), ApiError> {
        let bad = |m: &str| Err(ApiError::Config(m.into()));
        if self.max_connections == 0 {
            return bad("max_connections must be at least 1");
        }
        if self.max_connections_per_address == 0 || self.max_handshakes_per_address == 0 {
            return bad(
                "max_connections_per_address and max_handshakes_per_address must be at least 1",
            );
        }
        if self.max_results_limit == 0 {
            return bad("max_results_limit must be at least 1");
        }
        if self.max_concurrent_uploads == 0 || self.max_event_subscribers == 0 {
            return bad("max_concurrent_uploads and max_event_subscribers must be at least 1");
        }
        if self.session_idle.is_zero() || self.session_max.is_zero() {
            return bad("session_idle and session_max must be above zero");
        }
        if self.max_frame_viewers == 0
            || !(self.frame_max_fps.is_finite() && self.frame_max_fps > 0.0)
        {
            return bad("max_frame_viewers must be at least 1 and frame_max_fps above zero");
        }
        if self.tls_handshake_timeout.is_zero()
            || self.header_read_timeout.is_zero()
            || self.keep_alive_idle.is_zero()
        {
            return bad(
                "tls_handshake_timeout, header_read_timeout and keep_alive_idle must be above zero",
            );
        }
        Ok(())
    }
}

/// Access control and request limits (`[api]` keys of the same names).
/// Applied with [`Server::with_access`](super::Server::with_access); without
/// it the defaults apply.
#[derive(Debug, Clone, PartialEq)]
pub struct AccessOptions {
    /// Refill rate of each client address's bucket, which every request
    /// without a verified key (anonymous or failed authentication) drains.
    pub auth_fail_rate_per_s: f64,
    /// Size of that bucket.
    pub auth_fail_burst: u32,
    /// Refill rate of each key's bucket (every request with that key).
    pub key_rate_per_s: f64,
    pub key_burst: u32,
    /// Largest request body, checked from `Content-Length` and while reading.
    pub max_body_bytes: u64,
    /// Origins (`scheme://host[:port]`) allowed to call the API from a
    /// browser; empty = CORS off.
    pub cors_allowed_origins: Vec<String>,
}

impl Default for AccessOptions {
    fn default() -> Self {
        AccessOptions {
            auth_fail_rate_per_s: defaults::DEFAULT_AUTH_FAIL_RATE_PER_S,
            auth_fail_burst: defaults::DEFAULT_AUTH_FAIL_BURST,
            key_rate_per_s: defaults::DEFAULT_KEY_RATE_PER_S,
            key_burst: defaults::DEFAULT_KEY_BURST,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            cors_allowed_origins: Vec::new(),
        }
    }
}

impl AccessOptions {
    pub(crate) fn validate(&self) -> Result<(), ApiError> {
        let bad = |m: String| Err(ApiError::Config(m));
        for (name, v) in [
            ("auth_fail_rate_per_s", self.auth_fail_rate_per_s),
            ("key_rate_per_s", self.key_rate_per_s),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return bad(format!("{name} must be a positive number, not {v}"));
            }
        }
        if self.auth_fail_burst == 0 || self.key_burst == 0 {
            return bad("auth_fail_burst and key_burst must be at least 1".into());
        }
        if self.max_body_bytes == 0 {
            return bad("max_body_bytes must be at least 1".into());
        }
        if let Some(o) = self
            .cors_allowed_origins
            .iter()
            .find(|o| !is_valid_origin(o))
        {
            return bad(format!(
                "CORS origin {o:?} is not of the form https://host[:port] (lower case, no path)"
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Catches: the server's defaults drifting from the configuration's (the
    // documented ones): keep-alive once defaulted to 5 s here and 60 s there.
    #[test]
    fn api_options_defaults_are_the_documented_ones() {
        let s =
            crate::config::from_sources(vec![(PathBuf::from("t.toml"), String::new())]).unwrap();
        let o = ApiOptions::new(s.api.listen, PathBuf::from("/x"));
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap();
        assert_eq!(ms(o.keep_alive_idle), s.api.keep_alive_idle_ms);
        assert_eq!(s.api.keep_alive_idle_ms, 60_000, "the documented default");
        assert_eq!(ms(o.header_read_timeout), s.api.header_read_timeout_ms);
        assert_eq!(ms(o.tls_handshake_timeout), s.api.tls_handshake_timeout_ms);
        assert_eq!(o.max_connections, s.api.max_connections);
        assert_eq!(
            o.max_connections_per_address,
            s.api.max_connections_per_address
        );
        assert_eq!(
            o.max_handshakes_per_address,
            s.api.max_handshakes_per_address
        );
        assert!(o.validate().is_ok());
        let mut z = o.clone();
        z.max_connections_per_address = 0;
        assert!(z.validate().is_err());
    }

    // Catches: invalid limits or CORS origins accepted (e.g. a trailing slash
    // that never matches a browser's Origin, or "*").
    #[test]
    fn access_options_validation() {
        assert!(AccessOptions::default().validate().is_ok());
        let with = |f: &dyn Fn(&mut AccessOptions)| {
            let mut a = AccessOptions::default();
            f(&mut a);
            a.validate()
        };
        assert!(with(&|a| a.auth_fail_rate_per_s = 0.0).is_err());
        assert!(with(&|a| a.key_rate_per_s = f64::NAN).is_err());
        assert!(with(&|a| a.key_burst = 0).is_err());
        assert!(with(&|a| a.max_body_bytes = 0).is_err());
        for bad in [
            "*",
            "https://a.example/",
            "a.example",
            "https://A.example",
            "https://a.example/x",
        ] {
            assert!(
                with(&|a| a.cors_allowed_origins = vec![bad.into()]).is_err(),
                "{bad}"
            );
        }
        assert!(with(&|a| a.cors_allowed_origins =
            vec!["https://ui.example:8080".into(), "http://[::1]:3000".into()])
        .is_ok());
    }
}
