//! `GET /metrics` (read): the OpenMetrics text that [`crate::state`]
//! renders from the daemon's state and the store's figures.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::Response;

use super::{Ctx, Resp};

/// `GET /metrics`.
pub(super) fn get(ctx: &Ctx) -> Resp {
    let body = crate::state::render_metrics(&ctx.state, &ctx.store.stats());
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    resp
}
