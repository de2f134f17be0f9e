//! Browser sessions (issue 20): the bounded in-memory [`Sessions`] store,
//! the session cookie (`__Host-spotter_session`), the same-origin check of
//! state-changing requests a cookie authenticates, and the sign-in and
//! sign-out handlers (`POST` / `DELETE /api/v1/session`).
//!
//! A session is made by signing in with an API key; it stands for that key
//! (its scope, its rate limit) until it ends. The token the browser holds
//! is `<id>.<secret>`: 8 random bytes naming the session and 32 random bytes
//! (256 bits) proving it, in hex. Only the SHA-256 of the secret is kept,
//! and it is compared in constant time ([`same_hash`]); the id is not a
//! secret, it only finds the entry. A session ends:
//! - when it has not been used for `api.session_idle_s` (idle expiry),
//! - `api.session_max_s` after sign-in whatever its use (absolute expiry),
//! - on its next request after its key is revoked or removed (the key file
//!   is consulted on every request, see `auth`),
//! - at sign-out, and when the daemon restarts (nothing is written to disk).
//!
//! Bounded: at most [`MAX_SESSIONS`] sessions, at most
//! [`MAX_SESSIONS_PER_KEY`] per key; a new session beyond either bound
//! replaces the least recently used one (of that key, or of all), after the
//! expired ones are dropped.
//!
//! Cross-site request forgery: the cookie is `SameSite=Strict`, and a
//! state-changing request (any method but GET, HEAD, OPTIONS) authenticated
//! by the cookie must also carry an `Origin` that is this server's own
//! (`https://` + the request's host); sign-in requests with a foreign
//! `Origin` are refused too (login CSRF). Bearer-key requests are unchanged.
//!
//! Why a file of some 600 lines: about 210 of them are the unit tests of the
//! store's expiry, bounds and constant-time comparison, the cookie and the
//! origin check.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{
    HeaderMap, HeaderValue, CONTENT_TYPE, COOKIE, HOST, LOCATION, ORIGIN, SET_COOKIE,
};
use hyper::{Method, Response, StatusCode, Uri};
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::auth::{key_accepted, key_failed, Caller, Credential};
use super::{invalid, json_response, ApiError, Ctx, Resp};
use crate::store::{AuditAction, AuditRecord};

/// The cookie's name: `__Host-` makes browsers insist on `Secure`,
/// `Path=/` and no `Domain`, so no other host can set or read it.
pub const COOKIE_NAME: &str = "__Host-spotter_session";
/// Sessions held at most, all keys together.
pub(super) const MAX_SESSIONS: usize = 1024;
/// Sessions held at most per key (browsers and tabs signed in with it).
pub(super) const MAX_SESSIONS_PER_KEY: usize = 32;
/// Largest sign-in body accepted (a key is 68 bytes).
pub(super) const MAX_SIGN_IN_BYTES: u64 = 4096;

const ID_BYTES: usize = 8;
const SECRET_BYTES: usize = 32;

/// How long sessions last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct SessionLimits {
    /// A session unused for this long ends.
    pub idle: Duration,
    /// A session ends this long after sign-in, used or not.
    pub max_age: Duration,
}

#[derive(Debug)]
struct Entry {
    key_id: String,
    secret_hash: [u8; 32],
    created: Instant,
    last_used: Instant,
}

/// The sessions of one server; see the module documentation.
#[derive(Debug)]
pub(super) struct Sessions {
    limits: SessionLimits,
    map: Mutex<HashMap<String, Entry>>,
}

/// A new session: the token to give the browser (never stored).
#[derive(Debug)]
pub(super) struct NewSession {
    pub token: String,
}

/// A session a token named and proved, still valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Valid {
    pub id: String,
    pub key_id: String,
}

fn digest(secret: &[u8]) -> [u8; 32] {
    Sha256::digest(secret).into()
}

/// Whether two secret hashes are equal, in time independent of where they
/// differ.
fn same_hash(a: &[u8; 32], b: &[u8; 32]) -> bool {
    #[cfg(test)]
    tests::CT_COMPARES.with(|c| c.set(c.get() + 1));
    bool::from(a.ct_eq(b))
}

/// `<id>.<secret>` split and checked for shape (lowercase hex of the right
/// lengths); the secret as bytes.
fn parse_token(token: &str) -> Option<(&str, [u8; SECRET_BYTES])> {
    let (id, secret) = token.split_once('.')?;
    let lower_hex = |s: &str| s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if id.len() != ID_BYTES * 2 || !lower_hex(id) || !lower_hex(secret) {
        return None;
    }
    let mut bytes = [0u8; SECRET_BYTES];
    hex::decode_to_slice(secret, &mut bytes).ok()?;
    Some((id, bytes))
}

impl Sessions {
    pub(super) fn new(limits: SessionLimits) -> Self {
        Sessions {
            limits,
            map: Mutex::new(HashMap::new()),
        }
    }

    pub(super) fn limits(&self) -> SessionLimits {
        self.limits
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        // Each critical section is one map update: a panicked holder leaves
        // a consistent map.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn expired(&self, e: &Entry, now: Instant) -> bool {
        now.saturating_duration_since(e.last_used) >= self.limits.idle
            || now.saturating_duration_since(e.created) >= self.limits.max_age
    }

    /// Start a session for the key `key_id` at `now`, making room within the
    /// bounds first.
    pub(super) fn create(&self, key_id: &str, now: Instant) -> NewSession {
        let mut id = [0u8; ID_BYTES];
        let mut secret = [0u8; SECRET_BYTES];
        rand::rngs::OsRng.fill_bytes(&mut id);
        rand::rngs::OsRng.fill_bytes(&mut secret);
        let id = hex::encode(id);
        let token = format!("{id}.{}", hex::encode(secret));
        let mut map = self.lock();
        let of_key = map.values().filter(|e| e.key_id == key_id).count();
        if map.len() >= MAX_SESSIONS || of_key >= MAX_SESSIONS_PER_KEY {
            map.retain(|_, e| !self.expired(e, now));
        }
        for (bound, only_key) in [(MAX_SESSIONS_PER_KEY, true), (MAX_SESSIONS, false)] {
            loop {
                let held: Vec<(&String, Instant)> = map
                    .iter()
                    .filter(|(_, e)| !only_key || e.key_id == key_id)
                    .map(|(k, e)| (k, e.last_used))
                    .collect();
                if held.len() < bound {
                    break;
                }
                let Some(lru) = held
                    .iter()
                    .min_by_key(|(_, t)| *t)
                    .map(|(k, _)| (*k).clone())
                else {
                    break;
                };
                map.remove(&lru);
            }
        }
        map.insert(
            id.clone(),
            Entry {
                key_id: key_id.to_string(),
                secret_hash: digest(&secret),
                created: now,
                last_used: now,
            },
        );
        NewSession { token }
    }

    /// The session `token` names, when its secret matches and it has not
    /// expired at `now`; it is then marked used. An expired one is removed.
    pub(super) fn check(&self, token: &str, now: Instant) -> Option<Valid> {
        let (id, secret) = parse_token(token)?;
        let presented = digest(&secret);
        let mut map = self.lock();
        let entry = map.get_mut(id)?;
        if !same_hash(&entry.secret_hash, &presented) {
            return None;
        }
        if self.expired(entry, now) {
            map.remove(id);
            return None;
        }
        entry.last_used = now;
        Some(Valid {
            id: id.to_string(),
            key_id: entry.key_id.clone(),
        })
    }

    /// End the session `id` (sign-out, or its key is gone).
    pub(super) fn remove(&self, id: &str) {
        self.lock().remove(id);
    }

    /// Sessions held (expired ones not yet dropped included).
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.lock().len()
    }
}

/// The value of the session cookie in `headers`, if any.
pub(super) fn cookie_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            (name == COOKIE_NAME).then(|| value.trim_matches('"'))
        })
}

/// Whether `method` may change state (everything but GET, HEAD, OPTIONS).
pub(super) fn state_changing(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// This server's own origin as the request names it: `https://` and the
/// `Host` header (HTTP/1.1) or the URI's authority (HTTP/2).
fn own_origin(headers: &HeaderMap, uri: &Uri) -> Option<String> {
    let host = match uri.authority() {
        Some(a) => a.as_str().to_string(),
        None => headers.get(HOST)?.to_str().ok()?.to_string(),
    };
    Some(format!("https://{}", host.to_ascii_lowercase()))
}

/// The same-origin check: `Origin` must be present (`required`) and equal
/// to this server's own origin; when not required, only a foreign one is
/// refused.
pub(super) fn check_origin(headers: &HeaderMap, uri: &Uri, required: bool) -> Result<(), ApiError> {
    let Some(origin) = headers.get(ORIGIN) else {
        return if required {
            Err(ApiError::CrossOrigin)
        } else {
            Ok(())
        };
    };
    let ok = own_origin(headers, uri)
        .is_some_and(|own| origin.to_str().is_ok_and(|o| o.eq_ignore_ascii_case(&own)));
    if ok {
        Ok(())
    } else {
        Err(ApiError::CrossOrigin)
    }
}

/// The `Set-Cookie` value of a new session (`max_age` seconds: the
/// absolute expiry, so the browser drops it then too).
fn set_cookie(token: &str, max_age: Duration) -> String {
    format!(
        "{COOKIE_NAME}={token}; Secure; HttpOnly; SameSite=Strict; Path=/; Max-Age={}",
        max_age.as_secs()
    )
}

/// The `Set-Cookie` value that removes the session cookie.
const CLEAR_COOKIE: &str =
    "__Host-spotter_session=; Secure; HttpOnly; SameSite=Strict; Path=/; Max-Age=0";

/// How the sign-in body came: an HTML form or JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    Urlencoded,
    Json,
}

/// The API key in a sign-in body: `key=<key>` (form) or `{"key":"<key>"}`.
fn sign_in_key(
    content_type: Option<&HeaderValue>,
    body: &[u8],
) -> Result<(Form, String), ApiError> {
    let ct = super::headers::media_type(content_type);
    match ct.as_str() {
        "application/x-www-form-urlencoded" => form_urlencoded::parse(body)
            .find(|(k, _)| k == "key")
            .map(|(_, v)| (Form::Urlencoded, v.trim().to_string()))
            .ok_or_else(|| invalid("key", "the form has no `key` field")),
        "application/json" => {
            #[derive(serde::Deserialize)]
            struct SignIn {
                key: String,
            }
            serde_json::from_slice::<SignIn>(body)
                .map(|s| (Form::Json, s.key.trim().to_string()))
                .map_err(|e| invalid("key", format!("expected {{\"key\": \"spk_…\"}}: {e}")))
        }
        _ => Err(invalid(
            "content-type",
            "sign in with application/x-www-form-urlencoded (key=…) or application/json ({\"key\":…})",
        )),
    }
}

/// `POST /api/v1/session`: exchange the API key in the body for a session
/// cookie. A wrong key counts as a failed authentication of the client (the
/// same rate limits, lockout and log as a wrong bearer key). A form
/// sign-in is answered `303 See Other` to `/`, a JSON one with
/// `{"key_name","scope","idle_timeout_s","expires_in_s"}`.
pub(super) async fn sign_in(
    ctx: &Ctx,
    peer: std::net::IpAddr,
    content_type: Option<&HeaderValue>,
    body: &[u8],
) -> Result<Resp, ApiError> {
    let (form, key) = sign_in_key(content_type, body)?;
    let info = ctx.keys.get().await.verify(&key).cloned();
    let Some(info) = info else {
        // Issue 23: a refused sign-in is audited too (no key to name).
        let rec = AuditRecord::new(AuditAction::SignIn, peer.to_string()).refused("unknown key");
        super::audit::record(ctx, rec).await;
        return Err(key_failed(ctx, peer));
    };
    if let Err(e) = key_accepted(ctx, peer, &info) {
        let rec = AuditRecord::new(AuditAction::SignIn, peer.to_string())
            .by_key(&info.id, &info.name)
            .refused(e.to_string());
        super::audit::record(ctx, rec).await;
        return Err(e);
    }
    let rec = AuditRecord::new(AuditAction::SignIn, peer.to_string()).by_key(&info.id, &info.name);
    super::audit::record(ctx, rec).await;
    let limits = ctx.sessions.limits();
    let new = ctx.sessions.create(&info.id, Instant::now());
    log::info!(
        spotter_key_id = info.id.as_str(), spotter_key_name = info.name.as_str(), client:display = peer;
        "API: session started for key {} from {peer}", info.name
    );
    let mut resp = match form {
        Form::Urlencoded => {
            let mut r = Response::new(Full::new(Bytes::new()));
            *r.status_mut() = StatusCode::SEE_OTHER;
            r.headers_mut()
                .insert(LOCATION, HeaderValue::from_static("/"));
            r
        }
        Form::Json => json_response(
            StatusCode::OK,
            &serde_json::json!({
                "key_name": info.name,
                "scope": info.scope,
                "idle_timeout_s": limits.idle.as_secs(),
                "expires_in_s": limits.max_age.as_secs(),
            }),
        ),
    };
    let cookie = HeaderValue::from_str(&set_cookie(&new.token, limits.max_age))
        .map_err(|e| ApiError::Internal(format!("session cookie: {e}")))?;
    resp.headers_mut().insert(SET_COOKIE, cookie);
    Ok(resp)
}

/// `DELETE /api/v1/session`: end the session the cookie names (if any) and
/// tell the browser to drop the cookie. Answers 200 whether or not a
/// session was open, so a page can always sign out.
/// Also says whether a session was ended (for the audit trail).
pub(super) fn sign_out(ctx: &Ctx, credential: &Credential, caller: &Caller) -> (Resp, bool) {
    let ended = match credential {
        Credential::Session(v) => {
            ctx.sessions.remove(&v.id);
            true
        }
        _ => false,
    };
    if ended {
        log::info!(spotter_key_name = caller.name(); "API: session of key {} ended (sign-out)", caller.name());
    }
    let mut r = json_response(StatusCode::OK, &serde_json::json!({ "signed_out": ended }));
    r.headers_mut()
        .insert(SET_COOKIE, HeaderValue::from_static(CLEAR_COOKIE));
    (r, ended)
}

/// `CONTENT_TYPE` of a request, for the sign-in handler.
pub(super) fn content_type(headers: &HeaderMap) -> Option<&HeaderValue> {
    headers.get(CONTENT_TYPE)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use std::cell::Cell;

    thread_local! {
        /// Constant-time comparisons made on this thread.
        pub(super) static CT_COMPARES: Cell<usize> = const { Cell::new(0) };
    }

    fn store(idle_s: u64, max_s: u64) -> Sessions {
        Sessions::new(SessionLimits {
            idle: Duration::from_secs(idle_s),
            max_age: Duration::from_secs(max_s),
        })
    }

    // Catches: a session surviving its idle time, use not extending it, or
    // an expired entry kept (and counted against the bound).
    #[test]
    fn idle_sessions_expire_and_use_extends_them() {
        let s = store(60, 3600);
        let t0 = Instant::now();
        let a = s.create("k1", t0);
        assert!(s.check(&a.token, t0 + Duration::from_secs(59)).is_some());
        // Used at 59 s: valid until 119 s.
        assert!(s.check(&a.token, t0 + Duration::from_secs(118)).is_some());
        let b = s.create("k1", t0);
        assert!(s.check(&b.token, t0 + Duration::from_secs(60)).is_none());
        assert_eq!(s.len(), 1, "the expired session is dropped when seen");
    }

    // Catches: a session kept alive past its absolute limit by steady use
    // (a page polling frames never goes idle).
    #[test]
    fn absolute_expiry_holds_whatever_the_use() {
        let s = store(60, 300);
        let t0 = Instant::now();
        let a = s.create("k1", t0);
        for t in (30..300).step_by(30) {
            assert!(
                s.check(&a.token, t0 + Duration::from_secs(t)).is_some(),
                "{t}"
            );
        }
        assert!(s.check(&a.token, t0 + Duration::from_secs(300)).is_none());
    }

    // Catches: a token accepted with a changed secret or id, a malformed
    // token panicking, and sessions of one key readable with another's token.
    #[test]
    fn tokens_must_match_exactly() {
        let s = store(60, 300);
        let t0 = Instant::now();
        let a = s.create("k1", t0);
        let b = s.create("k2", t0);
        assert_eq!(s.check(&a.token, t0).unwrap().key_id, "k1");
        assert_eq!(s.check(&b.token, t0).unwrap().key_id, "k2");
        let (id_a, sec_a) = a.token.split_once('.').unwrap();
        let (id_b, sec_b) = b.token.split_once('.').unwrap();
        for bad in [
            format!("{id_a}.{sec_b}"),
            format!("{id_b}.{sec_a}"),
            format!("{id_a}.{}", sec_a.to_uppercase()),
            format!("{id_a}.{}", &sec_a[1..]),
            format!("{id_a}.{sec_a}0"),
            format!("{id_a}{sec_a}"),
            id_a.to_string(),
            String::new(),
            ".".into(),
            "é.é".into(),
        ] {
            assert!(s.check(&bad, t0).is_none(), "{bad}");
        }
    }

    // Catches: the secret compared with `==` (or looked up by its hash in
    // the map) instead of in constant time: a wrong secret differing in its
    // first byte and one differing in its last both go through exactly one
    // constant-time comparison of the whole hash.
    #[test]
    fn secrets_are_compared_in_constant_time() {
        let s = store(60, 300);
        let t0 = Instant::now();
        let a = s.create("k1", t0);
        let (id, secret) = a.token.split_once('.').unwrap();
        let flip = |i: usize| {
            let mut b = secret.as_bytes().to_vec();
            b[i] = if b[i] == b'0' { b'1' } else { b'0' };
            format!("{id}.{}", String::from_utf8(b).unwrap())
        };
        for (token, ok) in [(flip(0), false), (flip(63), false), (a.token.clone(), true)] {
            let before = CT_COMPARES.with(Cell::get);
            assert_eq!(s.check(&token, t0).is_some(), ok);
            assert_eq!(CT_COMPARES.with(Cell::get) - before, 1, "{token}");
        }
        assert!(same_hash(&[7; 32], &[7; 32]));
        assert!(!same_hash(&[7; 32], &[8; 32]));
    }

    // Catches: the store growing without bound under repeated sign-ins, one
    // key crowding out every other key's sessions, or the bound evicting
    // the session in use instead of the least recently used.
    #[test]
    fn sessions_are_bounded() {
        let s = store(3600, 7200);
        let t0 = Instant::now();
        let first = s.create("busy", t0);
        let mut last = None;
        for i in 1..(MAX_SESSIONS_PER_KEY as u64 * 3) {
            let t = t0 + Duration::from_millis(i);
            // The first session stays in use: it must not be the one evicted.
            assert!(s.check(&first.token, t).is_some(), "{i}");
            last = Some(s.create("busy", t + Duration::from_micros(1)));
        }
        assert_eq!(s.len(), MAX_SESSIONS_PER_KEY);
        assert!(s
            .check(&last.unwrap().token, t0 + Duration::from_secs(1))
            .is_some());
        let t1 = t0 + Duration::from_secs(2);
        for i in 0..MAX_SESSIONS * 2 {
            s.create(&format!("k{i}"), t1 + Duration::from_millis(i as u64));
        }
        assert_eq!(s.len(), MAX_SESSIONS);
    }

    // Catches: expired sessions kept when the bound is reached (a full
    // store of dead sessions evicting a live one).
    #[test]
    fn expired_sessions_go_first() {
        let s = store(10, 7200);
        let t0 = Instant::now();
        let live = s.create("k", t0 + Duration::from_secs(100));
        for i in 0..(MAX_SESSIONS_PER_KEY - 1) {
            s.create("k", t0 + Duration::from_millis(i as u64));
        }
        let t = t0 + Duration::from_secs(101);
        s.create("k", t);
        assert!(s.check(&live.token, t).is_some());
        assert_eq!(s.len(), 2);
    }

    // Catches: the cookie parsed from a look-alike name, a quoted value kept
    // with its quotes, or a second Cookie header ignored.
    #[test]
    fn cookie_parsing() {
        let mut h = HeaderMap::new();
        h.append(
            COOKIE,
            HeaderValue::from_static("a=1; x__Host-spotter_session=no"),
        );
        assert_eq!(cookie_token(&h), None);
        h.append(
            COOKIE,
            HeaderValue::from_static("b=2; __Host-spotter_session=\"abc.def\"; c=3"),
        );
        assert_eq!(cookie_token(&h), Some("abc.def"));
    }

    // Catches: a foreign or missing Origin accepted for a cookie's state
    // change, the port ignored, or a sign-in without Origin (an API client)
    // refused.
    #[test]
    fn origin_check() {
        let uri: Uri = "/api/v1/session".parse().unwrap();
        let with = |origin: Option<&'static str>| {
            let mut h = HeaderMap::new();
            h.insert(HOST, HeaderValue::from_static("spotter.local:8443"));
            if let Some(o) = origin {
                h.insert(ORIGIN, HeaderValue::from_static(o));
            }
            h
        };
        let ok = |o, req| check_origin(&with(o), &uri, req).is_ok();
        assert!(ok(Some("https://spotter.local:8443"), true));
        assert!(!ok(Some("https://spotter.local"), true));
        assert!(!ok(Some("http://spotter.local:8443"), true));
        assert!(!ok(Some("https://evil.example"), true));
        assert!(!ok(Some("null"), true));
        assert!(!ok(None, true));
        assert!(ok(None, false));
        assert!(!ok(Some("https://evil.example"), false));
        // HTTP/2: the authority is in the URI.
        let h2: Uri = "https://[::1]:8443/api/v1/keys".parse().unwrap();
        let mut h = HeaderMap::new();
        h.insert(ORIGIN, HeaderValue::from_static("https://[::1]:8443"));
        assert!(check_origin(&h, &h2, true).is_ok());
    }

    // Catches: a sign-in body read in only one of the two forms, or another
    // content type accepted (a cross-site text/plain form post).
    #[test]
    fn sign_in_bodies() {
        let form = HeaderValue::from_static("application/x-www-form-urlencoded");
        let json = HeaderValue::from_static("application/json; charset=utf-8");
        let text = HeaderValue::from_static("text/plain");
        assert_eq!(
            sign_in_key(Some(&form), b"key=spk_abc&x=1").unwrap(),
            (Form::Urlencoded, "spk_abc".into())
        );
        assert_eq!(
            sign_in_key(Some(&json), br#"{"key":" spk_abc "}"#).unwrap(),
            (Form::Json, "spk_abc".into())
        );
        assert!(sign_in_key(Some(&form), b"nokey=1").is_err());
        assert!(sign_in_key(Some(&json), b"{}").is_err());
        assert!(sign_in_key(Some(&text), b"key=spk_abc").is_err());
        assert!(sign_in_key(None, b"key=spk_abc").is_err());
        assert!(set_cookie("t", Duration::from_secs(5)).contains(
            "__Host-spotter_session=t; Secure; HttpOnly; SameSite=Strict; Path=/; Max-Age=5"
        ));
    }
}
