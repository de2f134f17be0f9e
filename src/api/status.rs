//! The probes and the status route: `GET /healthz` (liveness, no key),
//! `GET /readyz` (readiness, no key; the individual checks only with a
//! valid key) and `GET /api/v1/status` (read: uptime, version, source,
//! readiness, model, counters, last result, store, MQTT and GPIO).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use hyper::StatusCode;

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

/// `GET /api/v1/status`.
pub(super) async fn status(ctx: &Arc<Ctx>) -> Result<Resp, ApiError> {
    // O(1): counters and the size the pruner last measured.
    let stats = ctx.store.stats();
    let s = &ctx.state;
    let readiness = s.readiness();
    let body = serde_json::json!({
        "uptime_s": s.started.elapsed().as_secs(),
        "clock_synchronized": s.clock_synchronized.load(Ordering::Relaxed),
        "version": s.version,
        "source": s.source(),
        "readiness": { "ready": readiness.ready(), "checks": readiness },
        "model": s.model(),
        "counters": s.counters.snapshot(),
        "last_result": s.last_result(),
        "store": stats,
        "mqtt": s.mqtt.snapshot(),
        "gpio": s.gpio.snapshot(),
    });
    Ok(json_response(StatusCode::OK, &body))
}
