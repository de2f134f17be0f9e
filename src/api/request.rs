//! The path of every request, in the order the module doc of `api` gives:
//! the body limit, CORS preflight, authentication and rate limits, route,
//! scope, method, the same-origin check of cookie-authenticated state
//! changes (issue 20), admission and the body budget, the body read (only for
//! routes that take one), then the handler; what happens to a body left
//! unread; and around it the security and CORS headers, the HTTP metrics
//! and the debug log line.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::{Body as _, Incoming};
use hyper::header::{HeaderMap, HeaderValue, CONNECTION, CONTENT_LENGTH, ORIGIN};
use hyper::{Method, Request, Response};

use super::admission::{drain, read_body, DRAIN_CAP};
use super::auth::{authenticate, authorize, Credential};
use super::context::{Ctx, Req};
use super::errors::error_response;
use super::headers::{
    cors_headers, is_preflight, origin_allowed, preflight_response, security_headers,
};
use super::router::{dispatch, is_probe, match_route, takes_body, Route};
use super::{classify, events, keys, pages, session, ApiError};

/// What goes on the wire: a whole body, or an event stream.
pub(super) type OutBody = http_body_util::Either<Full<Bytes>, events::EventBody>;

/// Answer one request: [`respond`], then the headers every response gets,
/// the HTTP metrics and the debug log line.
pub(super) async fn handle(
    ctx: Arc<Ctx>,
    peer: SocketAddr,
    req: Request<Incoming>,
    kill: Arc<tokio::sync::Notify>,
) -> Response<OutBody> {
    // Timed only for the debug line (a clock read per request otherwise).
    let started = log::log_enabled!(log::Level::Debug).then(Instant::now);
    let method = req.method().clone();
    let origin = req.headers().get(ORIGIN).cloned();
    let (mut resp, route_name) = respond(&ctx, peer, req, kill).await;
    ctx.state
        .metrics
        .count_http(route_name, resp.status().as_u16());
    let h = resp.headers_mut();
    security_headers(h);
    cors_headers(h, &ctx.access, origin);
    if let Some(started) = started {
        log::debug!(
            "{method} {route_name} from {} -> {} in {} µs",
            peer.ip(),
            resp.status().as_u16(),
            started.elapsed().as_micros()
        );
    }
    resp
}

/// Apply the checks in the order the module doc gives, then the handler.
async fn respond(
    ctx: &Arc<Ctx>,
    peer: SocketAddr,
    req: Request<Incoming>,
    kill: Arc<tokio::sync::Notify>,
) -> (Response<OutBody>, &'static str) {
    use http_body_util::Either;
    let (parts, body) = req.into_parts();
    // The body stays here unless a route reads it; what is left unread when
    // the answer is ready is drained or the connection closed (`unread`).
    let mut body = Some(body);
    let route = match_route(parts.uri.path());
    // The web interface's pages and assets (issue 20): not API routes.
    let page = pages::match_page(parts.uri.path());
    let route_name = route
        .as_ref()
        .map(|r| r.name())
        .or(page.map(|p| p.name()))
        .unwrap_or("unknown");
    let declared = declared_length(&parts.headers);
    let result: Result<Response<OutBody>, ApiError> = async {
        // Model uploads have their own (larger) limit, sign-ins a small one;
        // everything else the body limit.
        let max = if route == Some(Route::Model) && parts.method == Method::PUT {
            ctx.max_model_bytes
        } else if route == Some(Route::Session) {
            session::MAX_SIGN_IN_BYTES.min(ctx.access.max_body_bytes)
        } else if route == Some(Route::Keys) {
            keys::MAX_CREATE_BYTES.min(ctx.access.max_body_bytes)
        } else {
            ctx.access.max_body_bytes
        };
        if declared.is_some_and(|n| n > max) {
            return Err(ApiError::PayloadTooLarge { limit: max });
        }
        if let Some(r) = &route {
            let allowed_origin = parts
                .headers
                .get(ORIGIN)
                .is_some_and(|o| origin_allowed(&ctx.access, o));
            if allowed_origin && is_preflight(&parts.method, &parts.headers) {
                return Ok(preflight_response(r.spec()).map(Either::Left));
            }
        }
        if let Some(page) = page {
            let caller = match authenticate(ctx, peer.ip(), &parts.headers, page.is_asset()).await {
                Ok((_, Credential::StaleSession)) => {
                    return pages::unauthenticated(page, ApiError::SessionExpired)
                        .map(|r| r.map(Either::Left))
                }
                Ok((c, _)) => c,
                Err(e) => return pages::unauthenticated(page, e).map(|r| r.map(Either::Left)),
            };
            return pages::serve(ctx, page, &caller, &parts.method, parts.uri.query())
                .await
                .map(|r| r.map(Either::Left));
        }
        let probe = route.as_ref().is_some_and(is_probe);
        let (caller, credential) = authenticate(ctx, peer.ip(), &parts.headers, probe).await?;
        let route = route.ok_or(ApiError::RouteNotFound)?;
        authorize(&caller, route.spec().scope).map_err(|e| match (e, &credential) {
            // A cookie whose session ended: the page signs in again.
            (ApiError::MissingKey, Credential::StaleSession) => ApiError::SessionExpired,
            (e, _) => e,
        })?;
        let allow = route.spec().allow;
        if !allow.split(", ").any(|m| m == parts.method.as_str()) {
            return Err(ApiError::MethodNotAllowed { allow });
        }
        // CSRF (issue 20): a state change the cookie authenticates must come
        // from this server's own origin; a sign-in from a foreign one is refused.
        if session::state_changing(&parts.method) {
            if let Credential::Session(_) = credential {
                session::check_origin(&parts.headers, &parts.uri, true)?;
            } else if route == Route::Session {
                session::check_origin(&parts.headers, &parts.uri, false)?;
            }
        }
        if route == Route::Events {
            return events::subscribe(ctx, kill, parts.method == Method::HEAD)
                .map(|r| r.map(Either::Right));
        }
        let mut upload = None;
        let mut reservation = None;
        let mut bytes = Bytes::new();
        if takes_body(&route, &parts.method) {
            if route == Route::Classify {
                // Admission before the body: a refused upload is never read.
                upload = Some(classify::admit(ctx, parts.uri.query()).await?);
                // Then the bytes it will hold, from the declared length (a
                // chunked body reserves as it grows).
                reservation = Some(ctx.body_budget.reserve(declared.unwrap_or(0))?);
            }
            // (Model uploads: admin only, one change at a time, their own
            // limit; not counted against the budget, which is smaller.)
            let incoming = body
                .take()
                .ok_or_else(|| ApiError::Internal("request body taken twice".into()))?;
            bytes = read_body(
                incoming,
                declared,
                max,
                ctx.body_limits,
                reservation.as_mut(),
            )
            .await?;
        }
        let req = Req {
            method: &parts.method,
            query: parts.uri.query(),
            caller: &caller,
            body: bytes,
            peer,
            upload,
            credential: &credential,
            content_type: session::content_type(&parts.headers),
        };
        let resp = dispatch(ctx, route, req).await.map(|r| r.map(Either::Left));
        drop(reservation);
        resp
    }
    .await;
    let mut resp = result.unwrap_or_else(|e| error_response(&e).map(Either::Left));
    if let Some(b) = body {
        unread(ctx, b, declared, &mut resp);
    }
    (resp, route_name)
}

/// A request answered without reading its body (a route that takes none,
/// or a refusal before the read): a short body arriving in time is drained
/// in the background and discarded, so the connection serves the next
/// request (a client that retries a refused upload does not pay a new TLS
/// handshake); a longer or unbounded one gets `Connection: close`. Either
/// way nothing of it is kept.
fn unread(ctx: &Ctx, body: Incoming, declared: Option<u64>, resp: &mut Response<OutBody>) {
    if body.is_end_stream() {
        return;
    }
    let closing = resp
        .headers()
        .get(CONNECTION)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
    if !closing && declared.is_some_and(|n| n <= DRAIN_CAP) {
        let limits = ctx.body_limits;
        tokio::spawn(async move {
            drain(body, DRAIN_CAP, limits).await;
        });
        return;
    }
    resp.headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
}

fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}
