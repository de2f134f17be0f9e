//! Model management over HTTPS (admin): `GET /api/v1/model` (the active
//! model and the installed versions, each with its bundle manifest: name,
//! version, signer key fingerprint), `PUT /api/v1/model` (upload a signed
//! model bundle, verified against `[signing] trusted_keys`, or a bare .tflite
//! when `signing.allow_unsigned_local`; validate it with the canary, install
//! and activate it) and
//! `POST /api/v1/model/rollback` and
//! `POST /api/v1/model/versions/{sha256}/activate` (make an installed version
//! the active one, for the web page's Device view). Owns only the HTTP side: versions are kept
//! by [`crate::modelstore`], and the switch is the SIGHUP path (the inference
//! thread reloads between two frames). A model that fails validation is
//! refused with the reason and never activated, so the previous model keeps
//! serving. One change runs at a time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::StatusCode;

use super::{json_response, ApiError, Ctx, Resp};
use crate::modelstore::{ModelStore, ModelStoreError, Trust, VersionMeta};
use crate::pipeline::load_model;

/// How long a change waits for the inference thread to run the new model.
pub(super) const ACTIVATION_TIMEOUT: Duration = Duration::from_secs(120);

fn store_err(e: ModelStoreError) -> ApiError {
    match e {
        ModelStoreError::NoHistory => ApiError::NoPreviousModel,
        ModelStoreError::Refused { reason, .. } | ModelStoreError::BundleRefused { reason, .. } => {
            ApiError::ModelRefused { reason }
        }
        ModelStoreError::UnknownVersion(_) | ModelStoreError::Ambiguous(_) => {
            ApiError::ModelVersionNotFound
        }
        other => ApiError::Internal(format!("model store: {other}")),
    }
}

async fn blocking_models<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::Internal(format!("model task failed: {e}")))?
}

/// `GET /api/v1/model`.
pub(super) async fn get(ctx: &Arc<Ctx>) -> Result<Resp, ApiError> {
    let models = ModelStore::new(&ctx.state_dir);
    let versions = blocking_models(move || models.list().map_err(store_err)).await?;
    let versions: Vec<serde_json::Value> = versions
        .into_iter()
        .map(|(m, active)| serde_json::json!({ "version": m, "active": active }))
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &serde_json::json!({ "running": ctx.state.model(), "versions": versions }),
    ))
}

/// Poll `done` every 50 ms until it holds, or fail after
/// [`ACTIVATION_TIMEOUT`] with `what` (what did not happen).
pub(super) async fn await_inference(
    mut done: impl FnMut() -> bool,
    what: impl FnOnce() -> String,
) -> Result<(), ApiError> {
    let deadline = Instant::now() + ACTIVATION_TIMEOUT;
    while !done() {
        if Instant::now() >= deadline {
            return Err(ApiError::Internal(format!(
                "{} within {ACTIVATION_TIMEOUT:?}",
                what()
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Wait until the inference thread has carried out a reload requested after
/// `before` (see [`reload`]) and runs `sha256` (polling the shared state).
/// Waiting for the reload too matters when the version was already running:
/// a bundle of the same model with other settings takes effect only then.
async fn await_running(ctx: &Arc<Ctx>, sha256: &str, before: u64) -> Result<(), ApiError> {
    let done = ctx.pipeline.as_ref().map(|p| p.control.clone());
    await_inference(
        || {
            done.as_ref()
                .is_none_or(|c| c.reloads_done.load(std::sync::atomic::Ordering::Acquire) > before)
                && ctx.state.model().is_some_and(|m| m.sha256 == sha256)
        },
        || format!("model {sha256} installed but not running"),
    )
    .await
}

/// Ask the inference thread to reload; returns its count of reloads done
/// before the request, for [`await_running`].
fn reload(ctx: &Arc<Ctx>) -> Result<u64, ApiError> {
    let p = ctx.pipeline.as_ref().ok_or(ApiError::ModelUnavailable)?;
    let before = p
        .control
        .reloads_done
        .load(std::sync::atomic::Ordering::Acquire);
    p.control
        .reload
        .store(true, std::sync::atomic::Ordering::Relaxed);
    Ok(before)
}

fn changed(ctx: &Arc<Ctx>, meta: &VersionMeta) -> Resp {
    json_response(
        StatusCode::OK,
        &serde_json::json!({ "running": ctx.state.model(), "version": meta }),
    )
}

/// `PUT /api/v1/model`: the body is a signed model bundle (sniffed by its
/// ZIP magic; its labels and settings come with it) or a bare .tflite (only
/// when `signing.allow_unsigned_local`; labels must be embedded in it, TFLite
/// metadata, else results are reported by class index). A refused bundle
/// changes nothing: 422 `model_refused` with the reason.
pub(super) async fn put(
    ctx: &Arc<Ctx>,
    body: Bytes,
    query: Option<&str>,
) -> Result<Resp, ApiError> {
    let name = match form_urlencoded::parse(query.unwrap_or("").as_bytes()).next() {
        Some((k, v)) if k == "name" && !v.is_empty() && v.len() <= 128 && !v.contains('/') => {
            v.into_owned()
        }
        Some((k, _)) if k == "name" => {
            return Err(super::invalid("name", "1-128 characters, no '/'"))
        }
        Some((k, _)) => return Err(super::invalid(&k, "unknown parameter (expected name)")),
        None => "uploaded.tflite".into(),
    };
    if body.is_empty() {
        return Err(ApiError::EmptyUpload);
    }
    let p = ctx.pipeline.clone().ok_or(ApiError::ModelUnavailable)?;
    let _change = p
        .control
        .change
        .try_begin()
        .ok_or(ApiError::ModelChangeInProgress)?;
    let signing = ctx.signing.clone();
    let meta = blocking_models(move || {
        // The keys are read per upload, so a rotated key file counts at once.
        let trust = Trust::from_settings(&signing, signing.allow_unsigned_local)
            .map_err(|e| ApiError::Internal(format!("[signing] trusted_keys: {e}")))?;
        let models = p.models.clone();
        std::fs::create_dir_all(models.dir())
            .map_err(|e| ApiError::Internal(format!("creating {}: {e}", models.dir().display())))?;
        let tmp = tempfile::Builder::new()
            .prefix(".upload-")
            .tempdir_in(models.dir())
            .map_err(|e| {
                ApiError::Internal(format!(
                    "temporary upload dir in {}: {e}",
                    models.dir().display()
                ))
            })?;
        let file = tmp.path().join(&name);
        std::fs::write(&file, &body)
            .map_err(|e| ApiError::Internal(format!("writing {}: {e}", file.display())))?;
        let hide = tmp.path().display().to_string();
        let meta = models
            .install_bundle(&file, &trust, |model, labels| {
                let mut m = p.model.clone();
                m.path = model.to_path_buf();
                m.labels = labels.map(|l| l.to_path_buf());
                // The reason names the temporary path; clients see the file name only.
                load_model(&m).map(|l| l.status.kind).map_err(|e| {
                    let mut msg = e.to_string().replace(&format!("{hide}/"), "");
                    // A bundle's model is checked from its own temporary directory.
                    if let Some(dir) = model.parent() {
                        msg = msg.replace(&format!("{}/", dir.display()), "");
                    }
                    msg
                })
            })
            .map_err(store_err)?;
        models.activate(&meta.sha256).map_err(store_err)
    })
    .await?;
    log::info!(spotter_model_sha256 = meta.sha256.as_str(); "API: model {} installed and activated", meta.sha256);
    let before = reload(ctx)?;
    await_running(ctx, &meta.sha256, before).await?;
    Ok(changed(ctx, &meta))
}

/// `POST /api/v1/model/rollback`.
pub(super) async fn rollback(ctx: &Arc<Ctx>) -> Result<Resp, ApiError> {
    switch(ctx, ModelStore::rollback).await
}

/// Make `choose` pick the active version among the installed ones (one
/// change at a time), then wait until the inference thread runs it.
async fn switch(
    ctx: &Arc<Ctx>,
    choose: impl FnOnce(&ModelStore) -> Result<VersionMeta, ModelStoreError> + Send + 'static,
) -> Result<Resp, ApiError> {
    let p = ctx.pipeline.clone().ok_or(ApiError::ModelUnavailable)?;
    let _change = p
        .control
        .change
        .try_begin()
        .ok_or(ApiError::ModelChangeInProgress)?;
    let meta = blocking_models(move || choose(&p.models).map_err(store_err)).await?;
    let before = reload(ctx)?;
    await_running(ctx, &meta.sha256, before).await?;
    Ok(changed(ctx, &meta))
}

/// `POST /api/v1/model/versions/{sha256}/activate`: make an installed version
/// (named by its whole SHA-256, as `GET /api/v1/model` lists it) the active
/// one. The version being replaced goes into the history, so a roll back
/// returns to it.
pub(super) async fn activate(ctx: &Arc<Ctx>, sha256: &str) -> Result<Resp, ApiError> {
    if sha256.len() != 64
        || !sha256
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return Err(super::invalid(
            "sha256",
            "64 lower-case hexadecimal digits, as GET /api/v1/model lists them",
        ));
    }
    let sha = sha256.to_string();
    switch(ctx, move |models| {
        let meta = models.activate(&sha)?;
        log::info!(spotter_model_sha256 = meta.sha256.as_str(); "API: model {} ({}) activated", meta.sha256, meta.original_name);
        Ok(meta)
    })
    .await
}
