//! Shadow evaluation over HTTPS (admin, issue 22): it owns the HTTP side of
//! `POST /api/v1/model/shadow` (start a candidate in shadow), `GET` (the
//! comparison so far), `DELETE` (discard) and
//! `POST /api/v1/model/shadow/promote` (activate the candidate through the
//! same switch as `POST /api/v1/model/versions/{sha256}/activate`, after the
//! shadow stops). The run itself is [`crate::pipeline::Shadow`], shared with
//! the fleet worker through the pipeline's `InferenceControl`.

use std::sync::Arc;

use hyper::header::HeaderValue;
use hyper::StatusCode;

use super::{json_response, ApiError, Ctx, Resp};
use crate::pipeline::{Shadow, ShadowError, ShadowReport};

fn shadow(ctx: &Ctx) -> Result<Arc<Shadow>, ApiError> {
    let p = ctx.pipeline.as_ref().ok_or(ApiError::ModelUnavailable)?;
    Ok(p.control.shadow.clone())
}

fn shadow_err(e: ShadowError) -> ApiError {
    match e {
        ShadowError::UnknownVersion(_) => ApiError::ModelVersionNotFound,
        ShadowError::IsActive(_) | ShadowError::KindMismatch { .. } => {
            ApiError::ShadowConflict(e.to_string())
        }
        ShadowError::InvalidShare(_) => super::invalid("share", "a number in (0, 1]"),
        ShadowError::Load { .. } => ApiError::ModelRefused {
            reason: e.to_string(),
        },
        ShadowError::NotReady => ApiError::ModelUnavailable,
        ShadowError::Store(_) | ShadowError::Spawn(_) => ApiError::Internal(e.to_string()),
    }
}

fn report_response(status: StatusCode, r: &ShadowReport) -> Resp {
    json_response(status, &serde_json::json!({ "shadow": r }))
}

/// `POST /api/v1/model/shadow` with `{"sha256": "...", "share": 0.2}`
/// (`share` optional, default 0.2): start (or restart) the candidate.
pub(super) async fn start(
    ctx: &Arc<Ctx>,
    content_type: Option<&HeaderValue>,
    body: &[u8],
) -> Result<(Resp, String), ApiError> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Start {
        sha256: String,
        share: Option<f64>,
    }
    // JSON, said or unsaid (`curl -d` sends a form type; any other is refused).
    if !matches!(
        super::headers::media_type(content_type).as_str(),
        "" | "application/json" | "application/x-www-form-urlencoded"
    ) {
        return Err(super::invalid("Content-Type", "application/json"));
    }
    let s: Start = serde_json::from_slice(body).map_err(|e| {
        super::invalid(
            "sha256",
            format!("expected {{\"sha256\": \"…\", \"share\": 0.2}}: {e}"),
        )
    })?;
    if s.sha256.is_empty()
        || s.sha256.len() > 64
        || !s.sha256.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return Err(super::invalid(
            "sha256",
            "hexadecimal digits, as GET /api/v1/model lists them",
        ));
    }
    let handle = shadow(ctx)?;
    let share = s.share.unwrap_or(0.2);
    let report = tokio::task::spawn_blocking(move || handle.start(&s.sha256, share))
        .await
        .map_err(|e| ApiError::Internal(format!("shadow task failed: {e}")))?
        .map_err(shadow_err)?;
    log::info!(spotter_model_sha256 = report.candidate_sha256.as_str(); "API: model {} runs in shadow on {} of the frames", report.candidate_sha256, report.share);
    let sha = report.candidate_sha256.clone();
    Ok((report_response(StatusCode::OK, &report), sha))
}

/// `GET /api/v1/model/shadow`: `{"shadow": report}`, or `{"shadow": null}`
/// when no model runs in shadow (nor any pipeline).
pub(super) fn get(ctx: &Arc<Ctx>) -> Resp {
    let report = shadow(ctx).ok().and_then(|s| s.report());
    json_response(StatusCode::OK, &serde_json::json!({ "shadow": report }))
}

/// `DELETE /api/v1/model/shadow`: stop and discard; answers the last report.
pub(super) async fn discard(ctx: &Arc<Ctx>) -> Result<(Resp, String), ApiError> {
    let handle = shadow(ctx)?;
    let report = tokio::task::spawn_blocking(move || handle.stop())
        .await
        .map_err(|e| ApiError::Internal(format!("shadow task failed: {e}")))?
        .ok_or(ApiError::ShadowNotRunning)?;
    log::info!(spotter_model_sha256 = report.candidate_sha256.as_str(); "API: shadow run of model {} discarded", report.candidate_sha256);
    let sha = report.candidate_sha256.clone();
    Ok((report_response(StatusCode::OK, &report), sha))
}

/// `POST /api/v1/model/shadow/promote`: stop the shadow and activate its
/// candidate. The answer is activation's, with the last shadow report.
pub(super) async fn promote(ctx: &Arc<Ctx>) -> Result<Resp, ApiError> {
    let handle = shadow(ctx)?;
    let sha = handle.candidate().ok_or(ApiError::ShadowNotRunning)?;
    let report = tokio::task::spawn_blocking(move || handle.stop())
        .await
        .map_err(|e| ApiError::Internal(format!("shadow task failed: {e}")))?;
    log::info!(spotter_model_sha256 = sha.as_str(); "API: shadow candidate {sha} promoted");
    let resp = super::model::activate(ctx, &sha).await?;
    // Activation answered JSON; the report goes beside it.
    let (parts, body) = resp.into_parts();
    let bytes = http_body_util::BodyExt::collect(body)
        .await
        .map_err(|e| ApiError::Internal(format!("activation answer: {e}")))?
        .to_bytes();
    let mut v: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::Internal(format!("activation answer: {e}")))?;
    v["shadow"] = serde_json::to_value(&report)
        .map_err(|e| ApiError::Internal(format!("shadow report: {e}")))?;
    Ok(json_response(parts.status, &v))
}
