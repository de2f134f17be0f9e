//! Types and defaults of the `[api]` section that the configuration owns and
//! the API server reads: client-certificate policy, the origin syntax CORS
//! accepts, and the default limits.

use std::time::Duration;

/// Whether clients must present a certificate when a client CA is set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// Handshakes without a certificate signed by the CA fail.
    #[default]
    Required,
    /// A client may present no certificate; one it presents must verify.
    Optional,
}

/// True for `http(s)://host[:port]` with no path, query or trailing slash,
/// which is the form browsers send in `Origin`.
pub fn is_valid_origin(o: &str) -> bool {
    let rest = match o
        .strip_prefix("https://")
        .or_else(|| o.strip_prefix("http://"))
    {
        Some(r) => r,
        None => return false,
    };
    !rest.is_empty()
        && rest
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
        && !rest.bytes().any(|b| b.is_ascii_uppercase())
}

/// Default `api.max_body_bytes`.
pub(crate) const DEFAULT_MAX_BODY_BYTES: u64 = 10 * 1024 * 1024;
/// Default `api.auth_fail_rate_per_s`.
pub(crate) const DEFAULT_AUTH_FAIL_RATE_PER_S: f64 = 10.0;
/// Default `api.auth_fail_burst`.
pub(crate) const DEFAULT_AUTH_FAIL_BURST: u32 = 50;
/// Default `api.key_rate_per_s`.
pub(crate) const DEFAULT_KEY_RATE_PER_S: f64 = 100.0;
/// Default `api.key_burst`.
pub(crate) const DEFAULT_KEY_BURST: u32 = 200;
/// Default `api.max_concurrent_uploads`.
pub(crate) const DEFAULT_MAX_CONCURRENT_UPLOADS: usize = 2;
/// Default `api.upload_queue`.
pub(crate) const DEFAULT_UPLOAD_QUEUE: usize = 16;
/// Default `api.max_upload_pixels`.
pub(crate) const DEFAULT_MAX_UPLOAD_PIXELS: u64 = 40_000_000;
/// Default `api.max_model_bytes`.
pub(crate) const DEFAULT_MAX_MODEL_BYTES: u64 = 64 * 1024 * 1024;
/// Default `api.max_event_subscribers`.
pub(crate) const DEFAULT_MAX_EVENT_SUBSCRIBERS: usize = 8;
/// Default `api.event_heartbeat_ms`.
pub(crate) const DEFAULT_EVENT_HEARTBEAT: Duration = Duration::from_secs(15);

// Connection limits and deadlines (the one definition of each default: the
// configuration and `ApiOptions::new` both read these).
/// Default `api.max_connections`: connections open at once, all addresses.
pub(crate) const DEFAULT_MAX_CONNECTIONS: usize = 64;
/// Default `api.max_connections_per_address` (IPv6: per /64). A browser
/// opens about six; a quarter of the global limit leaves room for others.
pub(crate) const DEFAULT_MAX_CONNECTIONS_PER_ADDRESS: usize = 16;
/// Default `api.max_handshakes_per_address`: TLS handshakes in progress at
/// once from one address (IPv6: per /64); a browser opening its six
/// connections at once fits.
pub(crate) const DEFAULT_MAX_HANDSHAKES_PER_ADDRESS: usize = 8;
/// Default `api.tls_handshake_timeout_ms`: from accept to a finished handshake.
pub(crate) const DEFAULT_TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Default `api.header_read_timeout_ms`: from the end of the handshake, or
/// the first byte of a later request, to its complete head.
pub(crate) const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Default `api.keep_alive_idle_ms`: a kept-alive connection with no request
/// for this long is closed.
pub(crate) const DEFAULT_KEEP_ALIVE_IDLE: Duration = Duration::from_secs(60);

// Browser sessions (issue 20, web page).
/// Default `api.session_idle_s`: a session unused for 30 minutes ends (a
/// live page polling frames keeps its session in use).
pub(crate) const DEFAULT_SESSION_IDLE: Duration = Duration::from_secs(30 * 60);
/// Default `api.session_max_s`: every session ends 12 hours after sign-in.
pub(crate) const DEFAULT_SESSION_MAX: Duration = Duration::from_secs(12 * 3600);
/// Default `api.max_frame_viewers`: viewers of the latest frames at once.
pub(crate) const DEFAULT_MAX_FRAME_VIEWERS: usize = 4;
/// Default `api.frame_max_fps`: frames per second per viewer (enough to
/// focus by; each new frame is encoded once, whatever the viewers).
pub(crate) const DEFAULT_FRAME_MAX_FPS: f64 = 4.0;
