//! The audit trail's API side (issue 23): [`record`] (what the
//! administrative handlers call: the journal line and the store record, off
//! the async workers) and `GET /api/v1/audit` (admin): the records, newest
//! first, `{"records":[...],"next_cursor":"…"|null}`; `limit` (default 100,
//! at most `max_results_limit` and 1000) and `cursor` (the previous page's
//! `next_cursor`, unchanged).

use std::net::IpAddr;
use std::sync::Arc;

use hyper::StatusCode;

use super::auth::Caller;
use super::{blocking, invalid, json_response, ApiError, Ctx, Resp};
use crate::store::{AuditAction, AuditRecord, MAX_AUDIT_PAGE};

/// `limit` when the query gives none.
const DEFAULT_AUDIT_LIMIT: usize = 100;

/// A record of `action` by `caller` from `peer` (outcome ok until told).
pub(super) fn by(caller: &Caller, peer: IpAddr, action: AuditAction) -> AuditRecord {
    let rec = AuditRecord::new(action, peer.to_string());
    match caller {
        Caller::Key(k) => rec.by_key(&k.id, &k.name),
        Caller::Anonymous => rec,
    }
}

/// Log `rec` and append it to the store's audit trail. A store that
/// refuses the write (disk full) is logged by the store; the action's
/// answer does not change.
pub(super) async fn record(ctx: &Ctx, rec: AuditRecord) {
    let store = ctx.store.clone();
    if let Err(e) = tokio::task::spawn_blocking(move || store.audit(rec)).await {
        log::warn!("audit task failed: {e}");
    }
}

/// `(cursor, limit)` of a `GET /api/v1/audit` query.
fn parse_query(query: Option<&str>, max_limit: usize) -> Result<(Option<u64>, usize), ApiError> {
    let max = max_limit.clamp(1, MAX_AUDIT_PAGE);
    let (mut cursor, mut limit) = (None, None);
    for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match &*k {
            "cursor" if cursor.is_some() => return Err(invalid("cursor", "given more than once")),
            "limit" if limit.is_some() => return Err(invalid("limit", "given more than once")),
            "cursor" => {
                cursor = Some(
                    v.parse::<u64>()
                        .map_err(|_| invalid("cursor", "pass the previous page's next_cursor"))?,
                )
            }
            "limit" => {
                let n = v
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=max).contains(n))
                    .ok_or_else(|| invalid("limit", format!("an integer from 1 to {max}")))?;
                limit = Some(n);
            }
            other => {
                return Err(invalid(
                    other,
                    "unknown parameter (expected cursor or limit)",
                ))
            }
        }
    }
    Ok((cursor, limit.unwrap_or(DEFAULT_AUDIT_LIMIT.min(max))))
}

/// `GET /api/v1/audit`.
pub(super) async fn list(ctx: &Arc<Ctx>, query: Option<&str>) -> Result<Resp, ApiError> {
    let (cursor, limit) = parse_query(query, ctx.max_results_limit)?;
    let store = ctx.store.clone();
    let page = blocking(move || store.audit_page(cursor, limit)).await?;
    Ok(json_response(
        StatusCode::OK,
        &serde_json::json!({
            "records": page.records,
            // A string, like the results' and sightings' cursors.
            "next_cursor": page.next_cursor.map(|c| c.to_string()),
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Catches: a limit above the page bound accepted, a duplicate or
    // unknown parameter ignored, or a malformed cursor read as the start.
    #[test]
    fn queries() {
        assert_eq!(parse_query(None, 500).unwrap(), (None, 100));
        assert_eq!(
            parse_query(Some("cursor=42&limit=7"), 500).unwrap(),
            (Some(42), 7)
        );
        assert!(parse_query(Some("limit=501"), 500).is_err());
        assert!(parse_query(Some("limit=0"), 500).is_err());
        assert!(parse_query(Some("cursor=x"), 500).is_err());
        assert!(parse_query(Some("cursor=1&cursor=2"), 500).is_err());
        assert!(parse_query(Some("since=1"), 500).is_err());
    }
}
