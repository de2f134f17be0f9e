//! `GET /api/v1/support-bundle` (admin, issue 22): the support bundle of
//! [`crate::support`] as `application/gzip`, an attachment. `journal_lines`
//! (1 to [`MAX_JOURNAL_LINES`], default [`DEFAULT_JOURNAL_LINES`]) sets how
//! much of the journal goes in. One bundle is built at a time (a second
//! request meanwhile gets 429); it is built on a blocking thread (it runs
//! `journalctl`, bounded in time) and bounded in size.
//!
//! The configuration in it is the one the daemon started with
//! ([`Server::with_support`](super::Server::with_support)); a reload that
//! changed settings is not reflected. Without it (a server started without
//! its configuration) `config.json` says so.

use std::sync::Arc;
use std::time::SystemTime;

use http_body_util::Full;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_DISPOSITION, CONTENT_TYPE};
use hyper::Response;

use super::{invalid, ApiError, Ctx, Resp};
use crate::config::Settings;
use crate::support::{Bundle, Journalctl, DEFAULT_JOURNAL_LINES, MAX_JOURNAL_LINES};

/// What the route needs beyond the common context.
#[derive(Default)]
pub(super) struct SupportCtx {
    /// The daemon's effective settings (at start).
    pub(super) settings: Option<Arc<Settings>>,
    /// Held while a bundle is built (one at a time).
    pub(super) building: Arc<tokio::sync::Mutex<()>>,
}

/// `journal_lines` of the query.
fn parse_query(query: Option<&str>) -> Result<usize, ApiError> {
    let mut lines = None;
    for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match &*k {
            "journal_lines" if lines.is_some() => {
                return Err(invalid("journal_lines", "given more than once"))
            }
            "journal_lines" => {
                let n = v
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=MAX_JOURNAL_LINES).contains(n))
                    .ok_or_else(|| {
                        invalid(
                            "journal_lines",
                            format!("an integer from 1 to {MAX_JOURNAL_LINES}"),
                        )
                    })?;
                lines = Some(n);
            }
            other => return Err(invalid(other, "unknown parameter (expected journal_lines)")),
        }
    }
    Ok(lines.unwrap_or(DEFAULT_JOURNAL_LINES))
}

/// `GET /api/v1/support-bundle`.
pub(super) async fn get(ctx: &Arc<Ctx>, query: Option<&str>) -> Result<Resp, ApiError> {
    let lines = parse_query(query)?;
    let Ok(_one) = ctx.support.building.clone().try_lock_owned() else {
        return Err(ApiError::RateLimited { retry_after_s: 5 });
    };
    let ctx2 = ctx.clone();
    let (name, body) = tokio::task::spawn_blocking(move || build(&ctx2, lines))
        .await
        .map_err(|e| ApiError::Internal(format!("support bundle task failed: {e}")))?
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let mut resp = Response::new(Full::new(body.into()));
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/gzip"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // The name is `spotter-support-<digits>.tar.gz`: always a valid value.
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{name}.tar.gz\"")) {
        h.insert(CONTENT_DISPOSITION, v);
    }
    Ok(resp)
}

/// The bundle's name and bytes.
fn build(ctx: &Ctx, lines: usize) -> Result<(String, Vec<u8>), crate::support::SupportError> {
    let mut b = Bundle::new(SystemTime::now());
    let running = ctx.state.model().and_then(|m| serde_json::to_value(m).ok());
    let power = ctx.state.power();
    let journal = Journalctl::default();
    match &ctx.support.settings {
        Some(settings) => b.common(settings, running, power, &journal, lines)?,
        None => {
            b.json(
                "config.json",
                &serde_json::json!({"error": "the API was started without its configuration"}),
            )?;
            b.json(
                "model.json",
                &crate::support::model_info(&ctx.state_dir, running),
            )?;
            b.json("power.json", &serde_json::json!({"reading": power}))?;
            b.text(
                "journal.txt",
                &crate::support::Journal::tail(&journal, lines),
            )?;
        }
    }
    b.daemon(&ctx.state, &ctx.store)?;
    let name = b.root().to_string();
    Ok((name, b.finish()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Catches: a journal line count beyond the bound accepted, or an
    // unknown parameter ignored.
    #[test]
    fn queries() {
        assert_eq!(parse_query(None).unwrap(), DEFAULT_JOURNAL_LINES);
        assert_eq!(parse_query(Some("journal_lines=7")).unwrap(), 7);
        assert!(parse_query(Some("journal_lines=0")).is_err());
        assert!(parse_query(Some(&format!("journal_lines={}", MAX_JOURNAL_LINES + 1))).is_err());
        assert!(parse_query(Some("journal_lines=1&journal_lines=2")).is_err());
        assert!(parse_query(Some("lines=1")).is_err());
    }
}
