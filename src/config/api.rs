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
