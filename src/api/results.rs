//! Results and backup routes: query parsing and handlers for
//! `GET /api/v1/results` (filters and cursor pagination),
//! `GET /api/v1/results/latest`, `GET /api/v1/results/{id}`,
//! `GET /api/v1/results/{id}/image` (the snapshot kept with a result) and
//! `GET /api/v1/backup` (admin: the result store as streamed NDJSON, the
//! same format as `spotter export`, with snapshots; encrypted with age to
//! `[backup] recipients` or the request's `recipient=age1…` keys, served as
//! `application/octet-stream`; `plain=true` asks for plain NDJSON, refused
//! with `encryption_required` under `backup.require_encryption`, as is any
//! plain backup then).
//!
//! `/api/v1/results` parameters, all optional, combined with AND:
//! `since`, `until` (inclusive; nanoseconds since the epoch or RFC 3339),
//! `label`, `min_score` (the label's score with `label`, else the best
//! score), `model` (SHA-256 hex), `source` (a source's configured name,
//! the records' `source_name`; `upload` for uploaded images), `limit`,
//! `cursor` (the `next_cursor` of the previous page). Newest first. The body is
//! `{"results":[...],"next_cursor":"…"|null}`; a page can hold fewer than
//! `limit` results and still have a cursor (the scan budget ran out), so
//! clients page until `next_cursor` is null.
//!
//! The backup body is produced on a blocking thread and handed to hyper
//! through a bounded channel ([`BACKUP_CHUNKS_IN_FLIGHT`] chunks of about
//! [`BACKUP_CHUNK_BYTES`]), so memory stays bounded whatever the store size
//! and a slow client slows the export instead of buffering it.

use std::io::{self, Write};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Frame;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use tokio::sync::mpsc;

use super::{blocking, invalid, json_response, ApiError, Ctx, Resp};
use crate::store::{Query, MAX_TERM_LEN};

/// `limit` when the query does not give one (capped by `max_results_limit`).
const DEFAULT_RESULTS_LIMIT: usize = 50;
/// Bytes the backup writer collects before handing a chunk to hyper.
pub(super) const BACKUP_CHUNK_BYTES: usize = 64 * 1024;
/// Chunks queued between the backup writer and the connection.
pub(super) const BACKUP_CHUNKS_IN_FLIGHT: usize = 4;
/// Content type of the backup (newline-delimited JSON).
pub(super) const NDJSON: &str = "application/x-ndjson";
/// Content type of an encrypted backup (an age file; issue 23).
pub(super) const AGE_BACKUP: &str = "application/octet-stream";

/// A time bound: nanoseconds since the epoch, or an RFC 3339 timestamp.
pub(super) fn parse_time(name: &str, v: &str) -> Result<u64, ApiError> {
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        return v
            .parse()
            .map_err(|_| invalid(name, "nanosecond value out of range"));
    }
    let t = time::OffsetDateTime::parse(v, &time::format_description::well_known::Rfc3339)
        .map_err(|_| {
            invalid(
                name,
                "expected nanoseconds since the Unix epoch or an RFC 3339 time",
            )
        })?;
    u64::try_from(t.unix_timestamp_nanos())
        .map_err(|_| invalid(name, "time outside 1970..2554 (u64 nanoseconds)"))
}

/// A `label` filter (results and sightings): 1..=[`MAX_TERM_LEN`] bytes.
pub(super) fn parse_label(v: &str) -> Result<String, ApiError> {
    if v.is_empty() || v.len() > MAX_TERM_LEN {
        return Err(invalid(
            "label",
            format!("expected 1..={MAX_TERM_LEN} bytes"),
        ));
    }
    Ok(v.to_owned())
}

/// A `source` filter (results and sightings): the names `config` accepts,
/// 1..=32 of A-Z a-z 0-9 _ -.
pub(super) fn parse_source(v: &str) -> Result<String, ApiError> {
    let ok = (1..=32).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !ok {
        return Err(invalid(
            "source",
            "expected a source name (1 to 32 of A-Z, a-z, 0-9, _ and -)",
        ));
    }
    Ok(v.to_owned())
}

/// Parse the `/api/v1/results` query string.
pub(super) fn parse_results_query(
    query: Option<&str>,
    max_limit: usize,
) -> Result<Query, ApiError> {
    let mut q = Query::newest(DEFAULT_RESULTS_LIMIT.min(max_limit));
    let mut seen_limit = false;
    for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        let dup = || invalid(&k, "given more than once");
        match &*k {
            "since" if q.since.is_some() => return Err(dup()),
            "until" if q.until.is_some() => return Err(dup()),
            "label" if q.label.is_some() => return Err(dup()),
            "model" if q.model.is_some() => return Err(dup()),
            "min_score" if q.min_score.is_some() => return Err(dup()),
            "cursor" if q.cursor.is_some() => return Err(dup()),
            "source" if q.source.is_some() => return Err(dup()),
            "limit" if seen_limit => return Err(dup()),
            "since" => q.since = Some(parse_time("since", &v)?),
            "until" => q.until = Some(parse_time("until", &v)?),
            "label" => q.label = Some(parse_label(&v)?),
            "model" => {
                if v.len() != 64 || !v.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(invalid(
                        "model",
                        "expected the model's SHA-256 as 64 hexadecimal digits",
                    ));
                }
                q.model = Some(v.to_ascii_lowercase());
            }
            "min_score" => {
                let s = v.parse::<f32>().ok().filter(|s| s.is_finite());
                q.min_score =
                    Some(s.ok_or_else(|| invalid("min_score", "expected a finite number"))?);
            }
            "source" => q.source = Some(parse_source(&v)?),
            "cursor" => {
                crate::store::decode_cursor(&v).map_err(|_| {
                    invalid(
                        "cursor",
                        "not a cursor from this API; pass next_cursor unchanged",
                    )
                })?;
                q.cursor = Some(v.into_owned());
            }
            "limit" => {
                seen_limit = true;
                q.limit = v
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=max_limit).contains(n))
                    .ok_or_else(|| {
                        invalid("limit", format!("expected an integer 1..={max_limit}"))
                    })?;
            }
            other => return Err(invalid(
                other,
                "unknown parameter (expected since, until, label, min_score, model, source, cursor, limit)",
            )),
        }
    }
    if let (Some(s), Some(u)) = (q.since, q.until) {
        if s > u {
            return Err(invalid("since", "is after until"));
        }
    }
    Ok(q)
}

/// `GET /api/v1/results`.
pub(super) async fn list(ctx: &Arc<Ctx>, query: Option<&str>) -> Result<Resp, ApiError> {
    let q = parse_results_query(query, ctx.max_results_limit)?;
    let store = ctx.store.clone();
    let page = blocking(move || store.query(&q)).await?;
    Ok(json_response(
        StatusCode::OK,
        &serde_json::json!({ "results": page.results, "next_cursor": page.next_cursor }),
    ))
}

/// `GET /api/v1/results/latest`.
pub(super) async fn latest(ctx: &Arc<Ctx>) -> Result<Resp, ApiError> {
    let store = ctx.store.clone();
    match blocking(move || store.latest()).await? {
        Some(r) => Ok(json_response(StatusCode::OK, &r)),
        None => Err(ApiError::NoResults),
    }
}

/// `GET /api/v1/results/{id}`.
pub(super) async fn by_id(ctx: &Arc<Ctx>, id: &str) -> Result<Resp, ApiError> {
    let store = ctx.store.clone();
    let id = id.to_string();
    match blocking(move || store.get(&id)).await? {
        Some(r) => Ok(json_response(StatusCode::OK, &r)),
        None => Err(ApiError::ResultNotFound),
    }
}

/// `GET /api/v1/results/{id}/image`.
pub(super) async fn image(ctx: &Arc<Ctx>, id: &str) -> Result<Resp, ApiError> {
    let store = ctx.store.clone();
    let id = id.to_string();
    let Some((content_type, bytes)) = blocking(move || store.snapshot(&id)).await? else {
        return Err(ApiError::NoSnapshot);
    };
    let mut r = Response::new(Full::new(Bytes::from(bytes)));
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    Ok(r)
}

/// A response body fed from a channel by a blocking producer.
pub(super) struct ChannelBody {
    rx: mpsc::Receiver<io::Result<Bytes>>,
}

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.rx.poll_recv(cx).map(|o| o.map(|r| r.map(Frame::data)))
    }
}

/// Marks a response whose body is streamed: the connection layer replaces
/// the (empty) `Full` body with this one. In an `Arc<Mutex<…>>` because
/// response extensions must be `Clone`.
#[derive(Clone)]
pub(super) struct Streamed(pub Arc<Mutex<Option<ChannelBody>>>);

impl Streamed {
    /// The streamed body of `resp`, if it has one.
    pub(super) fn take<B>(resp: &mut hyper::Response<B>) -> Option<ChannelBody> {
        let s = resp.extensions_mut().remove::<Streamed>()?;
        let mut guard = s.0.lock().unwrap_or_else(|e| e.into_inner());
        guard.take()
    }
}

/// Writes into the channel in chunks of [`BACKUP_CHUNK_BYTES`], blocking
/// while the channel is full. A closed channel (client gone) is an error,
/// which stops the export.
struct ChannelWriter {
    tx: mpsc::Sender<io::Result<Bytes>>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(
            &mut self.buf,
            Vec::with_capacity(BACKUP_CHUNK_BYTES),
        ));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "backup client disconnected"))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= BACKUP_CHUNK_BYTES {
            self.send()?;
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

/// What `GET /api/v1/backup` serves: plain NDJSON, or NDJSON inside an age
/// file encrypted to these recipients.
#[derive(Debug, PartialEq)]
pub(super) enum BackupForm {
    Plain,
    Encrypted(Vec<age::x25519::Recipient>),
}

/// The parameters of `GET /api/v1/backup`: `since`, `plain=true` (ask for
/// plain NDJSON), `recipient=age1…` (repeatable: encrypt to these).
#[derive(Debug, Default, PartialEq)]
pub(super) struct BackupQuery {
    since: Option<u64>,
    plain: bool,
    recipients: Vec<age::x25519::Recipient>,
}

pub(super) fn parse_backup_query(query: Option<&str>) -> Result<BackupQuery, ApiError> {
    let mut q = BackupQuery::default();
    let mut plain_seen = false;
    for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match &*k {
            "since" if q.since.is_some() => return Err(invalid("since", "given more than once")),
            "since" => q.since = Some(parse_time("since", &v)?),
            "plain" if plain_seen => return Err(invalid("plain", "given more than once")),
            "plain" => {
                plain_seen = true;
                q.plain = match &*v {
                    "true" => true,
                    "false" => false,
                    _ => return Err(invalid("plain", "expected true or false")),
                }
            }
            "recipient" if q.recipients.len() >= crate::config::backup::MAX_RECIPIENTS => {
                return Err(invalid(
                    "recipient",
                    format!(
                        "at most {} recipients",
                        crate::config::backup::MAX_RECIPIENTS
                    ),
                ))
            }
            "recipient" => q
                .recipients
                .push(crate::config::parse_recipient(&v).map_err(|m| invalid("recipient", m))?),
            other => {
                return Err(invalid(
                    other,
                    "unknown parameter (expected since, plain or recipient)",
                ))
            }
        }
    }
    if q.plain && !q.recipients.is_empty() {
        return Err(invalid(
            "plain",
            "plain=true and recipient exclude each other",
        ));
    }
    Ok(q)
}

/// The form of the backup a request gets under `[backup]`: the request's
/// recipients (only when none are configured), else the configured ones
/// unless it asks for plain; plain only without `require_encryption`.
pub(super) fn backup_form(
    settings: &crate::config::BackupSettings,
    q: &BackupQuery,
) -> Result<BackupForm, ApiError> {
    let configured = settings.age_recipients();
    if !q.recipients.is_empty() {
        if !configured.is_empty() {
            return Err(invalid(
                "recipient",
                "backup.recipients is set: backups are encrypted to those keys only; leave \
                 recipient out",
            ));
        }
        return Ok(BackupForm::Encrypted(q.recipients.clone()));
    }
    if !q.plain && !configured.is_empty() {
        return Ok(BackupForm::Encrypted(configured));
    }
    if settings.require_encryption {
        return Err(ApiError::EncryptionRequired(if q.plain {
            "a plain backup was asked for (plain=true), but backup.require_encryption = true: \
             ask without plain=true for a backup encrypted to backup.recipients"
                .into()
        } else {
            "backup.require_encryption = true and backup.recipients is empty: set \
             backup.recipients (age public keys), or ask with recipient=age1…"
                .into()
        }));
    }
    Ok(BackupForm::Plain)
}

/// `GET /api/v1/backup[?since=&plain=&recipient=]` (admin).
pub(super) async fn backup(ctx: &Arc<Ctx>, query: Option<&str>) -> Result<Resp, ApiError> {
    let q = parse_backup_query(query)?;
    let form = backup_form(&ctx.backup, &q)?;
    let since = q.since;
    let (tx, rx) = mpsc::channel(BACKUP_CHUNKS_IN_FLIGHT);
    let store = ctx.store.clone();
    let content_type = match form {
        BackupForm::Plain => NDJSON,
        BackupForm::Encrypted(_) => AGE_BACKUP,
    };
    // The export runs on the blocking pool; the task is not awaited: it ends
    // when the export does or the client goes away (send fails).
    tokio::task::spawn_blocking(move || {
        let mut w = ChannelWriter {
            tx: tx.clone(),
            buf: Vec::with_capacity(BACKUP_CHUNK_BYTES),
        };
        let (done, recipients) = match &form {
            BackupForm::Plain => (
                crate::store::backup::export(&store, since, &mut w, |_| {}),
                0,
            ),
            BackupForm::Encrypted(r) => (
                crate::store::backup::export_encrypted(&store, since, &mut w, r, |_| {}),
                r.len(),
            ),
        };
        match done {
            Ok(n) => log::info!(
                records = n, encrypted = recipients > 0, recipients = recipients;
                "API backup: exported {n} results and sightings"
            ),
            Err(e) => {
                log::warn!("API backup stopped: {e}");
                // Abort the body so the client sees a failed transfer, not a short file.
                let _ =
                    tx.blocking_send(Err(io::Error::other("backup failed; see the daemon log")));
            }
        }
    });
    let mut r = Response::new(Full::new(Bytes::new()));
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r.extensions_mut()
        .insert(Streamed(Arc::new(Mutex::new(Some(ChannelBody { rx })))));
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::super::errors::status_and_code;
    use super::*;

    // Would catch any combination of `[backup]` and the request serving a
    // plain backup under `require_encryption`, configured recipients being
    // bypassed by the request (`plain=true` without the requirement is the
    // one way out, by design), or the request's recipients ignored.
    #[test]
    fn backup_form_follows_the_settings_and_the_request() {
        use crate::config::BackupSettings;
        let (a, b) = (
            age::x25519::Identity::generate().to_public(),
            age::x25519::Identity::generate().to_public(),
        );
        let q = |s: &str| parse_backup_query(Some(s)).unwrap();
        let set = |r: &[&age::x25519::Recipient], require: bool| BackupSettings {
            recipients: r.iter().map(|r| r.to_string()).collect(),
            require_encryption: require,
        };
        let code = |r: Result<BackupForm, ApiError>| status_and_code(&r.unwrap_err()).1;
        let enc = |r: &[&age::x25519::Recipient]| {
            BackupForm::Encrypted(r.iter().map(|&r| r.clone()).collect())
        };
        let with_b = q(&format!("recipient={b}"));
        // No [backup]: plain unless the request names recipients.
        assert_eq!(
            backup_form(&set(&[], false), &q("")).unwrap(),
            BackupForm::Plain
        );
        assert_eq!(backup_form(&set(&[], false), &with_b).unwrap(), enc(&[&b]));
        // Recipients configured: encrypted to them; plain on request only
        // without the requirement; the request cannot add its own.
        assert_eq!(backup_form(&set(&[&a], false), &q("")).unwrap(), enc(&[&a]));
        assert_eq!(
            backup_form(&set(&[&a], false), &q("plain=true")).unwrap(),
            BackupForm::Plain
        );
        assert_eq!(backup_form(&set(&[&a], true), &q("")).unwrap(), enc(&[&a]));
        assert_eq!(
            code(backup_form(&set(&[&a], true), &q("plain=true"))),
            "encryption_required"
        );
        assert_eq!(
            code(backup_form(&set(&[&a], true), &with_b)),
            "invalid_parameter"
        );
        // Required without recipients: only a request naming its own.
        assert_eq!(
            code(backup_form(&set(&[], true), &q(""))),
            "encryption_required"
        );
        assert_eq!(backup_form(&set(&[], true), &with_b).unwrap(), enc(&[&b]));
        // Parameters.
        for bad in [
            "plain=yes",
            "plain=true&plain=true",
            "recipient=age1nope",
            "x=1",
        ] {
            assert!(parse_backup_query(Some(bad)).is_err(), "{bad}");
        }
        assert!(parse_backup_query(Some(&format!("plain=true&recipient={b}"))).is_err());
    }

    // Catches: wrong defaults, limit above the max accepted, swapped or exclusive bounds,
    // RFC 3339 offsets ignored, unknown or repeated parameters silently accepted,
    // malformed filters or cursors reaching the store.
    #[test]
    fn results_query_parsing() {
        let q = |s: &str| parse_results_query(Some(s), 100);
        assert_eq!(q("").unwrap(), Query::newest(50));
        assert_eq!(parse_results_query(None, 10).unwrap().limit, 10);
        let got = q("since=5&until=9&limit=100").unwrap();
        assert_eq!((got.since, got.until, got.limit), (Some(5), Some(9), 100));
        assert_eq!(
            q("since=1970-01-01T00:00:01Z").unwrap().since,
            Some(1_000_000_000)
        );
        assert_eq!(
            q("until=1970-01-01T01:00:00.5%2B01:00").unwrap().until,
            Some(500_000_000),
            "+01:00 offset must be applied"
        );
        let sha = "AB".repeat(32);
        let cursor = crate::store::encode_cursor(&[7; 16]);
        let got = q(&format!(
            "label=tabby+cat&min_score=0.6&model={sha}&cursor={cursor}"
        ))
        .unwrap();
        assert_eq!(got.label.as_deref(), Some("tabby cat"));
        assert_eq!(got.min_score, Some(0.6));
        assert_eq!(
            got.model,
            Some("ab".repeat(32)),
            "model normalised to lower case"
        );
        assert_eq!(got.cursor, Some(cursor.clone()));
        assert_eq!(
            q("source=yard-2").unwrap().source.as_deref(),
            Some("yard-2")
        );
        for bad in [
            "source=".to_string(),
            "source=a&source=b".into(),
            "source=a%20b".into(),
            format!("source={}", "x".repeat(33)),
            "limit=0".to_string(),
            "limit=101".into(),
            "limit=-1".into(),
            "limit=x".into(),
            "since=yesterday".into(),
            "since=-5".into(),
            "since=99999999999999999999".into(),
            "since=1960-01-01T00:00:00Z".into(),
            "since=9&until=5".into(),
            "sinse=5".into(),
            "limit=1&limit=2".into(),
            "label=".into(),
            "label=a&label=b".into(),
            "min_score=NaN".into(),
            "min_score=high".into(),
            "model=abc".into(),
            format!("model={}", "g".repeat(64)),
            "cursor=xyz".into(),
            format!("cursor={}", &cursor[2..]),
            format!("cursor=02{}", &cursor[2..]),
        ] {
            let e = q(&bad).unwrap_err();
            assert_eq!(status_and_code(&e).0, StatusCode::BAD_REQUEST, "{bad}");
        }
    }
}
