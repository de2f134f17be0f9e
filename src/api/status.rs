//! The probes and the status route: `GET /healthz` (liveness, no key),
//! `GET /readyz` (readiness, no key; the individual checks only with a
//! valid key) and `GET /api/v1/status` (read: uptime, version, source,
//! readiness, model, counters, last result, store, MQTT and GPIO).

use std::sync::Arc;

use http_body_util::Full;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Response, StatusCode};

use super::auth::Caller;
use super::{json_response, ApiError, Ctx, Resp};

/// `GET /healthz`: always `{"status":"ok"}`.
pub(super) fn healthz() -> Resp {
    json_response(StatusCode::OK, &serde_json::json!({"status": "ok"}))
}

/// `GET /readyz`: 200 or 503; `{"ready":..}`, plus `"checks"` for a caller
/// with a valid key.
pub(super) fn readyz(ctx: &Ctx, caller: &Caller) -> Resp {
    let r = ctx.state.readiness();
    let status = if r.ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = match caller {
        Caller::Key(_) => serde_json::json!({"ready": r.ready(), "checks": r}),
        Caller::Anonymous => serde_json::json!({"ready": r.ready()}),
    };
    json_response(status, &body)
}

/// `GET /api/v1/status`: the state's cached document (serialised once per
/// change, see `state::status`), answered on the connection's own task with
/// no blocking-pool hand-off: the store's figures are atomics and the size
/// the pruner last measured.
pub(super) async fn status(ctx: &Arc<Ctx>) -> Result<Resp, ApiError> {
    let mut body = ctx.state.status_json(ctx.store.stats());
    // Issue 23: `retention`, the pruner's last statement, spliced into the
    // cached document's outer object (no re-serialisation per request).
    if let Some(said) = ctx.store.retention_json() {
        if let Some(open) = body.strip_suffix(b"}") {
            let mut v = Vec::with_capacity(body.len() + said.len() + 16);
            v.extend_from_slice(open);
            if !open.trim_ascii_end().ends_with(b"{") {
                v.push(b',');
            }
            v.extend_from_slice(b"\"retention\":");
            v.extend_from_slice(&said);
            v.push(b'}');
            body = v.into();
        }
    }
    let mut resp = Response::new(Full::new(body));
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(resp)
}
