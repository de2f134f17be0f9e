//! `GET /api/v1/keys` (admin): the metadata of every key in the key file
//! (id, name, scope, creation and revocation), never secrets or hashes.

use hyper::StatusCode;

use super::{json_response, Ctx, Resp};
use crate::keys::KeyInfo;

/// `GET /api/v1/keys`: `{"keys":[...]}`.
pub(super) async fn list(ctx: &Ctx) -> Resp {
    let set = ctx.keys.get().await;
    let keys: Vec<&KeyInfo> = set.infos().collect();
    json_response(StatusCode::OK, &serde_json::json!({ "keys": keys }))
}
