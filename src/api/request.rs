//! The path of every request, in the order the module doc of `api` gives:
//! the body limit, CORS preflight, authentication and rate limits, route,
//! scope, body read, method, then the handler; and around it the security
//! and CORS headers, the HTTP metrics and the debug log line.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::{Body as _, Incoming};
use hyper::header::{HeaderMap, CONTENT_LENGTH, ORIGIN};
use hyper::{Method, Request, Response};

use super::auth::{authenticate, authorize};
use super::context::{Ctx, Req};
use super::errors::error_response;
use super::headers::{
    cors_headers, is_preflight, origin_allowed, preflight_response, security_headers,
};
use super::router::{dispatch, match_route, Route};
use super::{events, ApiError};

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
    let started = Instant::now();
    let method = req.method().clone();
    let origin = req.headers().get(ORIGIN).cloned();
    let (mut resp, route_name) = respond(&ctx, peer, req, kill).await;
    ctx.state
        .metrics
        .count_http(route_name, resp.status().as_u16());
    let h = resp.headers_mut();
    security_headers(h);
    cors_headers(h, &ctx.access, origin);
    log::debug!(
        "{method} {route_name} from {} -> {} in {} µs",
        peer.ip(),
        resp.status().as_u16(),
        started.elapsed().as_micros()
    );
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
    let route = match_route(parts.uri.path());
    let route_name = route.as_ref().map(|r| r.name()).unwrap_or("unknown");
    let result: Result<Response<OutBody>, ApiError> = async {
        // Model uploads have their own (larger) limit; everything else the body limit.
        let max = if route == Some(Route::Model) && parts.method == Method::PUT {
            ctx.max_model_bytes
        } else {
            ctx.access.max_body_bytes
        };
        if declared_length(&parts.headers).is_some_and(|n| n > max) {
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
        let caller = authenticate(ctx, peer.ip(), &parts.headers).await?;
        let route = route.ok_or(ApiError::RouteNotFound)?;
        authorize(&caller, route.spec().scope)?;
        // Reading every body here applies the limit while streaming, also
        // for requests whose method is then refused.
        let body = read_body(body, max).await?;
        let allow = route.spec().allow;
        if !allow.split(", ").any(|m| m == parts.method.as_str()) {
            return Err(ApiError::MethodNotAllowed { allow });
        }
        if route == Route::Events {
            return events::subscribe(ctx, kill, parts.method == Method::HEAD)
                .map(|r| r.map(Either::Right));
        }
        let req = Req {
            method: &parts.method,
            query: parts.uri.query(),
            caller: &caller,
            body,
            peer,
        };
        dispatch(ctx, route, req).await.map(|r| r.map(Either::Left))
    }
    .await;
    (
        result.unwrap_or_else(|e| error_response(&e).map(Either::Left)),
        route_name,
    )
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

/// Read the whole body, refusing more than `max` bytes as they arrive.
async fn read_body(body: Incoming, max: u64) -> Result<Bytes, ApiError> {
    if body.is_end_stream() {
        return Ok(Bytes::new());
    }
    let limit = usize::try_from(max).unwrap_or(usize::MAX);
    match Limited::new(body, limit).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            Err(ApiError::PayloadTooLarge { limit: max })
        }
        Err(e) => {
            log::debug!("request body read failed: {e}");
            Err(ApiError::BadBody)
        }
    }
}
