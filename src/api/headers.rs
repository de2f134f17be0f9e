//! Response headers that do not depend on the route's answer: the security
//! headers every response carries, and CORS (preflight answers, and the
//! `Access-Control-*` headers for allowed origins).

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{
    HeaderMap, HeaderName, HeaderValue, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE,
    ACCESS_CONTROL_REQUEST_METHOD, CACHE_CONTROL, CONTENT_SECURITY_POLICY, ORIGIN, REFERRER_POLICY,
    STRICT_TRANSPORT_SECURITY, VARY, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use hyper::{Method, Response, StatusCode};

use super::{AccessOptions, Resp, RouteSpec};

const PERMISSIONS_POLICY: HeaderName = HeaderName::from_static("permissions-policy");
const PERMISSIONS_POLICY_VALUE: &str =
    "camera=(), microphone=(), geolocation=(), usb=(), serial=(), bluetooth=(), payment=(), fullscreen=()";

pub(super) fn is_preflight(method: &Method, headers: &HeaderMap) -> bool {
    method == Method::OPTIONS
        && headers.contains_key(ORIGIN)
        && headers.contains_key(ACCESS_CONTROL_REQUEST_METHOD)
}

pub(super) fn preflight_response(route: &RouteSpec) -> Resp {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::NO_CONTENT;
    let h = r.headers_mut();
    h.insert(
        ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(route.allow),
    );
    h.insert(
        ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("authorization"),
    );
    h.insert(ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
    r
}

/// Headers on every response this handler produces, errors included.
pub(super) fn security_headers(h: &mut HeaderMap) {
    h.insert(
        STRICT_TRANSPORT_SECURITY,
        HeaderValue::from_static("max-age=31536000"),
    );
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
    );
    h.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(
        PERMISSIONS_POLICY,
        HeaderValue::from_static(PERMISSIONS_POLICY_VALUE),
    );
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

/// Whether `origin` is one of the configured CORS origins.
pub(super) fn origin_allowed(access: &AccessOptions, origin: &HeaderValue) -> bool {
    access
        .cors_allowed_origins
        .iter()
        .any(|o| o.as_bytes() == origin.as_bytes())
}

/// The CORS headers of a response to a request from `origin` (none when
/// CORS is off).
pub(super) fn cors_headers(h: &mut HeaderMap, access: &AccessOptions, origin: Option<HeaderValue>) {
    if !access.cors_allowed_origins.is_empty() {
        h.append(VARY, HeaderValue::from_static("origin"));
        if let Some(o) = origin.filter(|o| origin_allowed(access, o)) {
            h.insert(ACCESS_CONTROL_ALLOW_ORIGIN, o);
            h.insert(
                ACCESS_CONTROL_EXPOSE_HEADERS,
                HeaderValue::from_static("retry-after, www-authenticate"),
            );
        }
    }
}
