//! The key routes (admin): `GET /api/v1/keys` (the metadata of every key in
//! the key file: id, name, scope, creation and revocation; never secrets or
//! hashes), and for the web page's device view (issue 20)
//! `POST /api/v1/keys` (create a key; its secret is in this answer and
//! nowhere else, ever) and `DELETE /api/v1/keys/{id}` (revoke; its bearer
//! requests and its sessions end on their next request). Writes go through
//! [`KeyStore`] (locked, atomic), as `spotter keys` does.

use hyper::header::HeaderValue;
use hyper::StatusCode;

use std::net::IpAddr;

use super::auth::Caller;
use super::{audit, invalid, json_response, ApiError, Ctx, Resp};
use crate::keys::{KeyError, KeyInfo, KeyStore, Scope};
use crate::store::AuditAction;

/// Largest body of a key creation.
pub(super) const MAX_CREATE_BYTES: u64 = 4096;

/// `GET /api/v1/keys`: `{"keys":[...]}`.
pub(super) async fn list(ctx: &Ctx) -> Resp {
    let set = ctx.keys.get().await;
    let keys: Vec<&KeyInfo> = set.infos().collect();
    json_response(StatusCode::OK, &serde_json::json!({ "keys": keys }))
}

/// A key file error as the client's answer.
fn key_error(e: KeyError) -> ApiError {
    match e {
        KeyError::InvalidName { .. } => invalid("name", e.to_string()),
        KeyError::UnknownScope(_) => invalid("scope", e.to_string()),
        KeyError::NotFound(_) => ApiError::KeyNotFound,
        KeyError::NameTaken { .. } | KeyError::AlreadyRevoked { .. } | KeyError::TooMany { .. } => {
            ApiError::KeyConflict(e.to_string())
        }
        other => ApiError::Internal(other.to_string()),
    }
}

/// The name and scope of a creation body: JSON `{"name","scope"}` or a
/// form `name=…&scope=…` (scope defaults to read).
fn create_request(
    content_type: Option<&HeaderValue>,
    body: &[u8],
) -> Result<(String, Scope), ApiError> {
    let ct = super::headers::media_type(content_type);
    let (name, scope) = match ct.as_str() {
        "application/json" => {
            #[derive(serde::Deserialize)]
            struct Create {
                name: String,
                scope: Option<String>,
            }
            let c: Create = serde_json::from_slice(body).map_err(|e| {
                invalid(
                    "name",
                    format!("expected {{\"name\": …, \"scope\": \"read\"|\"admin\"}}: {e}"),
                )
            })?;
            (c.name, c.scope)
        }
        "application/x-www-form-urlencoded" => {
            let mut name = None;
            let mut scope = None;
            for (k, v) in form_urlencoded::parse(body) {
                match &*k {
                    "name" => name = Some(v.into_owned()),
                    "scope" => scope = Some(v.into_owned()),
                    _ => {}
                }
            }
            (
                name.ok_or_else(|| invalid("name", "the form has no `name` field"))?,
                scope,
            )
        }
        _ => {
            return Err(invalid(
                "content-type",
                "create a key with application/json or application/x-www-form-urlencoded",
            ))
        }
    };
    let scope = match scope.as_deref().map(str::trim) {
        None | Some("") => Scope::Read,
        Some(s) => s.parse().map_err(key_error)?,
    };
    Ok((name.trim().to_string(), scope))
}

/// `POST /api/v1/keys`: `{"key": {...}, "secret": "spk_…"}`; the secret is
/// shown this once.
pub(super) async fn create(
    ctx: &Ctx,
    content_type: Option<&HeaderValue>,
    body: &[u8],
    caller: &Caller,
    peer: IpAddr,
) -> Result<Resp, ApiError> {
    let by = caller.name();
    let rec = audit::by(caller, peer, AuditAction::KeyCreated);
    let created = async {
        let (name, scope) = create_request(content_type, body)?;
        let store = KeyStore::new(&ctx.state_dir);
        tokio::task::spawn_blocking(move || store.create(&name, scope))
            .await
            .map_err(|e| ApiError::Internal(format!("key task failed: {e}")))?
            .map_err(key_error)
    }
    .await;
    let rec = match &created {
        Ok((info, _)) => rec.target(&info.id),
        Err(e) => rec.refused(e.to_string()),
    };
    audit::record(ctx, rec).await;
    let (info, secret) = created?;
    log::info!(
        spotter_key_id = info.id.as_str(), spotter_key_name = info.name.as_str(), spotter_by = by;
        "API: key {} ({}) created by {by}", info.name, info.scope
    );
    Ok(json_response(
        StatusCode::OK,
        &serde_json::json!({ "key": info, "secret": secret.expose() }),
    ))
}

/// `DELETE /api/v1/keys/{id}`: revoke the key with this id: `{"key": {...}}`.
pub(super) async fn revoke(
    ctx: &Ctx,
    id: &str,
    caller: &Caller,
    peer: IpAddr,
) -> Result<Resp, ApiError> {
    let by = caller.name();
    // Ids only (16 hex digits): the CLI's revoke-by-name is not offered here.
    let well_formed = id.len() == 16 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    let rec = audit::by(caller, peer, AuditAction::KeyRevoked);
    let revoked = if well_formed {
        let store = KeyStore::new(&ctx.state_dir);
        let id = id.to_string();
        tokio::task::spawn_blocking(move || store.revoke(&id))
            .await
            .map_err(|e| ApiError::Internal(format!("key task failed: {e}")))
            .and_then(|r| r.map_err(key_error))
    } else {
        Err(ApiError::KeyNotFound)
    };
    // The target is the id asked for when it is one (a malformed path is
    // not recorded: it could be anything a client typed, a secret too).
    let rec = match &revoked {
        Ok(info) => rec.target(&info.id),
        Err(e) if well_formed => rec.target(id).refused(e.to_string()),
        Err(e) => rec.refused(e.to_string()),
    };
    audit::record(ctx, rec).await;
    let info = revoked?;
    log::info!(
        spotter_key_id = info.id.as_str(), spotter_key_name = info.name.as_str(), spotter_by = by;
        "API: key {} revoked by {by}", info.name
    );
    Ok(json_response(
        StatusCode::OK,
        &serde_json::json!({ "key": info }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Catches: a creation body read in only one form, a missing scope
    // becoming admin, or an unknown scope accepted.
    #[test]
    fn creation_bodies() {
        let json = HeaderValue::from_static("application/json");
        let form = HeaderValue::from_static("application/x-www-form-urlencoded");
        assert_eq!(
            create_request(Some(&json), br#"{"name":"tab","scope":"admin"}"#).unwrap(),
            ("tab".into(), Scope::Admin)
        );
        assert_eq!(
            create_request(Some(&form), b"name=tab").unwrap(),
            ("tab".into(), Scope::Read)
        );
        assert!(create_request(Some(&form), b"name=tab&scope=root").is_err());
        assert!(create_request(Some(&form), b"scope=read").is_err());
        assert!(create_request(None, b"name=tab").is_err());
    }
}
