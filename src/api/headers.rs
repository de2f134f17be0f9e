//! Response headers that do not depend on the route's answer: the security
//! headers every response carries, and CORS (preflight answers, and the
//! `Access-Control-*` headers for allowed origins). Also the headers of the
//! web page's responses (issue 20): [`page_headers`] (a strict CSP that
//! allows the page's own scripts, styles and images, nothing inline) and
//! [`asset_headers`] (long caching of the hashed `/assets/` files); the
//! security headers then keep what those set and add the rest.

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

/// The Content-Security-Policy of the HTML pages (issue 20): everything
/// from this origin only (`default-src 'self'`), no inline script or style
/// and no `eval` (neither `'unsafe-inline'` nor `'unsafe-eval'` nor a
/// nonce), no plugins, no `<base>` rewriting, forms posting only here, and
/// never framed.
/// Images also from `blob:` URLs: the Live page fetches each frame itself
/// (to read its focus figure and honour `Retry-After`) and shows the bytes
/// it got through an object URL; a `blob:` URL holds only what this
/// origin's own script fetched.
pub(crate) const PAGE_CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' blob:; connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

/// `Cache-Control` of the page's assets, served under a path holding their
/// content hash (a changed file gets a new URL): a year, never revalidated.
pub(crate) const ASSET_CACHE_CONTROL: &str = "public, max-age=31536000, immutable";

/// Headers of an HTML page response: the page CSP (instead of the API's
/// `default-src 'none'`); the other security headers are added as for
/// every response (`no-store` included: pages show live, per-key data).
pub(crate) fn page_headers(h: &mut HeaderMap) {
    h.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(PAGE_CSP));
}

/// Headers of a page asset (CSS, JavaScript, icon) at a hashed URL: the
/// page CSP and long caching instead of `no-store`.
pub(crate) fn asset_headers(h: &mut HeaderMap) {
    page_headers(h);
    h.insert(CACHE_CONTROL, HeaderValue::from_static(ASSET_CACHE_CONTROL));
}

/// Headers on every response this handler produces, errors included. A
/// `Content-Security-Policy` or `Cache-Control` the handler set (pages and
/// their assets, see [`page_headers`]) is kept; everything else is set here.
pub(super) fn security_headers(h: &mut HeaderMap) {
    h.insert(
        STRICT_TRANSPORT_SECURITY,
        HeaderValue::from_static("max-age=31536000"),
    );
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.entry(CONTENT_SECURITY_POLICY)
        .or_insert(HeaderValue::from_static(
            "default-src 'none'; frame-ancestors 'none'",
        ));
    h.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(
        PERMISSIONS_POLICY,
        HeaderValue::from_static(PERMISSIONS_POLICY_VALUE),
    );
    h.entry(CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
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

/// The media type of a request's `Content-Type` (`application/json` of
/// `Application/JSON; charset=utf-8`), lower case, without parameters;
/// empty when absent or not text.
pub(super) fn media_type(content_type: Option<&HeaderValue>) -> String {
    content_type
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    // Would catch: `Application/JSON; charset=utf-8` (what some clients
    // send) not taken as JSON by the sign-in and key-creation bodies.
    #[test]
    fn media_type_drops_parameters_and_case() {
        let v = HeaderValue::from_static("Application/JSON; charset=utf-8");
        assert_eq!(media_type(Some(&v)), "application/json");
        let f = HeaderValue::from_static("application/x-www-form-urlencoded");
        assert_eq!(media_type(Some(&f)), "application/x-www-form-urlencoded");
        assert_eq!(media_type(None), "");
    }

    fn get(h: &HeaderMap, name: HeaderName) -> &str {
        h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }

    // Catches: the page CSP allowing inline script or style, eval, other
    // origins or framing; the API's own responses losing their
    // `default-src 'none'` or `no-store`; or the security headers
    // overwriting a page's CSP (pages would load nothing) or an asset's
    // caching.
    #[test]
    fn page_and_asset_headers_survive_the_security_headers() {
        for directive in [
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            "object-src 'none'",
            "base-uri 'none'",
            "frame-ancestors 'none'",
        ] {
            assert!(PAGE_CSP.split("; ").any(|d| d == directive), "{directive}");
        }
        for banned in [
            "unsafe-inline",
            "unsafe-eval",
            "nonce-",
            "*",
            "http:",
            "data:",
        ] {
            assert!(!PAGE_CSP.contains(banned), "{banned}");
        }

        let mut api = HeaderMap::new();
        security_headers(&mut api);
        assert_eq!(
            get(&api, CONTENT_SECURITY_POLICY),
            "default-src 'none'; frame-ancestors 'none'"
        );
        assert_eq!(get(&api, CACHE_CONTROL), "no-store");

        let mut page = HeaderMap::new();
        page_headers(&mut page);
        security_headers(&mut page);
        assert_eq!(get(&page, CONTENT_SECURITY_POLICY), PAGE_CSP);
        assert_eq!(get(&page, CACHE_CONTROL), "no-store");
        assert_eq!(get(&page, X_FRAME_OPTIONS), "DENY");
        assert_eq!(page.get_all(CONTENT_SECURITY_POLICY).iter().count(), 1);

        let mut asset = HeaderMap::new();
        asset_headers(&mut asset);
        security_headers(&mut asset);
        assert_eq!(get(&asset, CONTENT_SECURITY_POLICY), PAGE_CSP);
        assert_eq!(get(&asset, CACHE_CONTROL), ASSET_CACHE_CONTROL);
        assert_eq!(get(&asset, X_CONTENT_TYPE_OPTIONS), "nosniff");
    }
}
