//! `GET /api/v1/keys` (admin): the metadata of every key in the key file
//! (id, name, scope, creation and revocation), never secrets or hashes;
//! `POST /api/v1/keys` (admin, issue 20's Device page): create a key, its
//! secret in the answer once; `DELETE /api/v1/keys/{id}` (admin): revoke a
//! key by its id, which ends its sessions on their next request (the key
//! cache sees the file change). Writes go through [`crate::keys::KeyStore`]
//! (its lock and atomic replace), on the blocking pool.

use bytes::Bytes;
use hyper::StatusCode;

use super::errors::invalid;
use super::{json_response, ApiError, Ctx, Resp};
use crate::keys::{KeyError, KeyInfo, KeyStore, Scope};

/// `GET /api/v1/keys`: `{"keys":[...]}`.
pub(super) async fn list(ctx: &Ctx) -> Resp {
    let set = ctx.keys.get().await;
    let keys: Vec<&KeyInfo> = set.infos().collect();
    json_response(StatusCode::OK, &serde_json::json!({ "keys": keys }))
}

fn key_err(e: KeyError) -> ApiError {
    match e {
        KeyError::NotFound(_) => ApiError::KeyNotFound,
        KeyError::InvalidName { .. } => invalid("name", e.to_string()),
        KeyError::UnknownScope(_) => invalid("scope", e.to_string()),
        KeyError::NameTaken { .. } | KeyError::AlreadyRevoked { .. } | KeyError::TooMany { .. } => {
            ApiError::KeyRefused {
                reason: e.to_string(),
            }
        }
        other => ApiError::Internal(other.to_string()),
    }
}

async fn on_key_file<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, KeyError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::Internal(format!("key file task failed: {e}")))?
        .map_err(key_err)
}

/// The body of `POST /api/v1/keys`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NewKey {
    name: String,
    scope: String,
}

/// `POST /api/v1/keys` with `{"name":..,"scope":"read"|"admin"}`: 201 with
/// `{"key":{..},"secret":".."}` (the secret is not kept and never shown again).
pub(super) async fn create(ctx: &Ctx, body: Bytes, by: &str) -> Result<Resp, ApiError> {
    let new: NewKey = serde_json::from_slice(&body).map_err(|e| {
        invalid(
            "body",
            format!("expected {{\"name\":..,\"scope\":..}}: {e}"),
        )
    })?;
    let scope: Scope = new.scope.parse().map_err(key_err)?;
    let store = KeyStore::new(&ctx.state_dir);
    let name = new.name.clone();
    let (info, secret) = on_key_file(move || store.create(&name, scope)).await?;
    log::info!(key_id = info.id.as_str(), by = by; "API: key {} ({}) created", info.name, scope.as_str());
    Ok(json_response(
        StatusCode::CREATED,
        &serde_json::json!({ "key": info, "secret": secret.expose() }),
    ))
}

/// `DELETE /api/v1/keys/{id}`: revoke the key with this id (16 hex digits;
/// never a name, so a name that looks like another key's id cannot be hit).
pub(super) async fn revoke(ctx: &Ctx, id: &str, by: &str) -> Result<Resp, ApiError> {
    if id.len() != 16 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::KeyNotFound);
    }
    let known = ctx.keys.get().await.infos().any(|k| k.id == id);
    if !known {
        return Err(ApiError::KeyNotFound);
    }
    let store = KeyStore::new(&ctx.state_dir);
    let id = id.to_string();
    let info = on_key_file(move || store.revoke(&id)).await?;
    log::info!(key_id = info.id.as_str(), by = by; "API: key {} revoked", info.name);
    Ok(json_response(
        StatusCode::OK,
        &serde_json::json!({ "key": info }),
    ))
}
