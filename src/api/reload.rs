//! `POST /api/v1/reload` (admin): the configuration reload SIGHUP does,
//! asked for over HTTPS. Owns only the HTTP side: the request goes to the
//! supervisor (`app`), which re-reads the configuration files and applies
//! them (`app::reload::apply`); this waits for its reply and for the
//! inference thread to have acted on the model settings, then reports what
//! changed. A configuration that does not load is refused with its file,
//! line and reason, and nothing changes. One model change or reload runs at
//! a time.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use hyper::StatusCode;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::oneshot;

use super::model::await_inference;
use super::{json_response, ApiError, Ctx, Resp};

/// A reload asked for over the API (`POST /api/v1/reload`), carried out by
/// the supervisor as on SIGHUP. The reply is the outcome, or why the
/// configuration files were refused (nothing changed then).
#[derive(Debug)]
pub struct Request {
    pub reply: tokio::sync::oneshot::Sender<Result<Outcome, String>>,
}

/// What one reload did.
#[derive(Debug, Default, PartialEq)]
pub struct Outcome {
    /// Changed settings (`section.key`, sorted) that need a restart.
    pub restart_needed: Vec<String>,
    /// The fingerprint now served, or why the old certificate stays.
    pub tls: Option<Result<String, String>>,
}

pub(super) async fn post(ctx: &Arc<Ctx>) -> Result<Resp, ApiError> {
    let (Some(tx), Some(p)) = (&ctx.reloads, &ctx.pipeline) else {
        return Err(ApiError::ReloadUnavailable);
    };
    let _change = p
        .control
        .change
        .try_begin()
        .ok_or(ApiError::ModelChangeInProgress)?;
    let before = p.control.reloads_done.load(Ordering::Acquire);
    let (reply, answer) = oneshot::channel();
    tx.try_send(Request { reply }).map_err(|e| match e {
        TrySendError::Full(_) => ApiError::ModelChangeInProgress,
        TrySendError::Closed(_) => ApiError::ShuttingDown,
    })?;
    let outcome = match answer.await {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(reason)) => return Err(ApiError::ConfigRefused { reason }),
        // The supervisor dropped the request: it is stopping.
        Err(_) => return Err(ApiError::ShuttingDown),
    };
    // The inference thread reloads between two frames (at least every 200 ms).
    let reloaded = || p.control.reloads_done.load(Ordering::Acquire) != before;
    await_inference(reloaded, || "the inference thread did not reload".into()).await?;
    let model_error = p
        .control
        .last_reload_error
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let tls = match outcome.tls {
        Some(Ok(sha256)) => serde_json::json!({ "sha256": sha256 }),
        Some(Err(error)) => serde_json::json!({ "error": error }),
        None => serde_json::Value::Null,
    };
    Ok(json_response(
        StatusCode::OK,
        &serde_json::json!({
            "restart_needed": outcome.restart_needed,
            "tls": tls,
            "model_error": model_error,
            "running": ctx.state.model(),
        }),
    ))
}
