//! Sighting routes (issue 18): query parsing and handlers for
//! `GET /api/v1/sightings` (filters and cursor pagination, newest first),
//! `GET /api/v1/sightings/{id}`, `GET /api/v1/sightings/{id}/snapshot` (the
//! best frame) and `GET /api/v1/sightings/summary` (counts and seconds per
//! label per bucket, for charts).
//!
//! `/api/v1/sightings` parameters, all optional, combined with AND:
//! `since` (sightings present at or after it: ended at or after it, or still
//! open), `until` (sightings that started at or before it), both inclusive,
//! in nanoseconds since the epoch or RFC 3339 as for results; `label`,
//! `source` (a source's configured name), `zone` (a `[[zone]]` name),
//! `open=true|false`, `limit`, `cursor` (the previous page's `next_cursor`,
//! unchanged). The body is `{"sightings":[...],"next_cursor":"…"|null}`; as
//! for results, a page may hold fewer than `limit` and still have a cursor.
//!
//! `/api/v1/sightings/summary` parameters: `bucket=minute|hour|day`
//! (default `hour`), `since` and `until` (the half-open range
//! `[since, until)`; `until` defaults to now, `since` to 60 buckets of a
//! minute, 24 of an hour or 30 of a day before `until`). At most
//! [`MAX_SUMMARY_BUCKETS`] buckets. The body is
//! `{"bucket":…,"since_ns":…,"until_ns":…,"rows":[{"bucket_start_ns","label","count","seconds"}]}`:
//! per UTC bucket and label, the sightings that started in it and the
//! seconds of presence inside it (open sightings count up to their
//! `last_seen_ns`).
//!
//! Ids in the path are the sightings' decimal ids; anything else names no
//! sighting (404).

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Response, StatusCode};

use super::results::{parse_label, parse_source, parse_time};
use super::{blocking, invalid, json_response, ApiError, Ctx, Resp};
use crate::store::{snapshot_content_type, Bucket, SightingQuery, MAX_SUMMARY_BUCKETS};

/// `limit` when the query does not give one (capped by `max_results_limit`).
const DEFAULT_SIGHTINGS_LIMIT: usize = 50;

/// A time bound as signed nanoseconds (the sightings' type).
fn parse_time_i64(name: &str, v: &str) -> Result<i64, ApiError> {
    i64::try_from(parse_time(name, v)?)
        .map_err(|_| invalid(name, "time after 2262 (i64 nanoseconds)"))
}

/// Parse the `/api/v1/sightings` query string.
pub(super) fn parse_sightings_query(
    query: Option<&str>,
    max_limit: usize,
) -> Result<SightingQuery, ApiError> {
    let mut q = SightingQuery {
        limit: DEFAULT_SIGHTINGS_LIMIT.min(max_limit),
        ..SightingQuery::default()
    };
    let mut seen_limit = false;
    for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        let dup = || invalid(&k, "given more than once");
        match &*k {
            "since" if q.since_ns.is_some() => return Err(dup()),
            "until" if q.until_ns.is_some() => return Err(dup()),
            "label" if q.label.is_some() => return Err(dup()),
            "source" if q.source.is_some() => return Err(dup()),
            "zone" if q.zone.is_some() => return Err(dup()),
            "open" if q.open.is_some() => return Err(dup()),
            "cursor" if q.cursor.is_some() => return Err(dup()),
            "limit" if seen_limit => return Err(dup()),
            "since" => q.since_ns = Some(parse_time_i64("since", &v)?),
            "until" => q.until_ns = Some(parse_time_i64("until", &v)?),
            "label" => q.label = Some(parse_label(&v)?),
            "source" => q.source = Some(parse_source(&v)?),
            "zone" => {
                if !crate::core::zone::is_valid_zone_name(&v) {
                    return Err(invalid(
                        "zone",
                        "expected a zone name (1 to 64 of A-Z, a-z, 0-9, _, - and .)",
                    ));
                }
                q.zone = Some(v.into_owned());
            }
            "open" => {
                q.open = Some(match &*v {
                    "true" => true,
                    "false" => false,
                    _ => return Err(invalid("open", "expected true or false")),
                })
            }
            "cursor" => {
                let c = v.parse::<u64>().ok().filter(|c| *c > 0).ok_or_else(|| {
                    invalid(
                        "cursor",
                        "not a cursor from this API; pass next_cursor unchanged",
                    )
                })?;
                q.cursor = Some(c);
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
            other => {
                return Err(invalid(
                    other,
                    "unknown parameter (expected since, until, label, source, zone, open, cursor, limit)",
                ))
            }
        }
    }
    if let (Some(s), Some(u)) = (q.since_ns, q.until_ns) {
        if s > u {
            return Err(invalid("since", "is after until"));
        }
    }
    Ok(q)
}

/// A parsed summary request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct SummaryQuery {
    pub bucket: Bucket,
    pub since_ns: i64,
    pub until_ns: i64,
}

fn bucket_name(b: Bucket) -> &'static str {
    match b {
        Bucket::Minute => "minute",
        Bucket::Hour => "hour",
        Bucket::Day => "day",
    }
}

fn bucket_ns(b: Bucket) -> i64 {
    const MIN: i64 = 60_000_000_000;
    match b {
        Bucket::Minute => MIN,
        Bucket::Hour => 60 * MIN,
        Bucket::Day => 24 * 60 * MIN,
    }
}

/// Parse the `/api/v1/sightings/summary` query string; `now_ns` is the
/// default `until`.
pub(super) fn parse_summary_query(
    query: Option<&str>,
    now_ns: i64,
) -> Result<SummaryQuery, ApiError> {
    let (mut bucket, mut since, mut until) = (None, None, None);
    for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        let dup = || invalid(&k, "given more than once");
        match &*k {
            "bucket" if bucket.is_some() => return Err(dup()),
            "since" if since.is_some() => return Err(dup()),
            "until" if until.is_some() => return Err(dup()),
            "bucket" => {
                bucket = Some(match &*v {
                    "minute" => Bucket::Minute,
                    "hour" => Bucket::Hour,
                    "day" => Bucket::Day,
                    _ => return Err(invalid("bucket", "expected minute, hour or day")),
                })
            }
            "since" => since = Some(parse_time_i64("since", &v)?),
            "until" => until = Some(parse_time_i64("until", &v)?),
            other => {
                return Err(invalid(
                    other,
                    "unknown parameter (expected bucket, since, until)",
                ))
            }
        }
    }
    let bucket = bucket.unwrap_or(Bucket::Hour);
    let width = bucket_ns(bucket);
    let until = until.unwrap_or(now_ns);
    let default_buckets = match bucket {
        Bucket::Minute => 60,
        Bucket::Hour => 24,
        Bucket::Day => 30,
    };
    let since = since.unwrap_or_else(|| until.saturating_sub(default_buckets * width).max(0));
    if since >= until {
        return Err(invalid(
            "since",
            "must be before until (the range is [since, until))",
        ));
    }
    // UTC buckets touched by [since, until).
    let buckets = (until - 1).div_euclid(width) - since.div_euclid(width) + 1;
    if buckets > MAX_SUMMARY_BUCKETS {
        return Err(invalid(
            "since",
            format!(
                "the range spans {buckets} {} buckets, at most {MAX_SUMMARY_BUCKETS}; narrow since/until or use a larger bucket",
                bucket_name(bucket)
            ),
        ));
    }
    Ok(SummaryQuery {
        bucket,
        since_ns: since,
        until_ns: until,
    })
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A path id: the sighting's decimal id; anything else names none.
fn parse_id(id: &str) -> Result<u64, ApiError> {
    if id.is_empty() || id.len() > 20 || !id.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ApiError::SightingNotFound);
    }
    id.parse().map_err(|_| ApiError::SightingNotFound)
}

/// `GET /api/v1/sightings`.
pub(super) async fn list(ctx: &Arc<Ctx>, query: Option<&str>) -> Result<Resp, ApiError> {
    let q = parse_sightings_query(query, ctx.max_results_limit)?;
    let store = ctx.store.clone();
    let page = blocking(move || store.sightings(&q)).await?;
    Ok(json_response(
        StatusCode::OK,
        &serde_json::json!({
            "sightings": page.sightings,
            // A string, like the results' cursor: clients pass it back unchanged.
            "next_cursor": page.next_cursor.map(|c| c.to_string()),
        }),
    ))
}

/// `GET /api/v1/sightings/{id}`.
pub(super) async fn by_id(ctx: &Arc<Ctx>, id: &str) -> Result<Resp, ApiError> {
    let id = parse_id(id)?;
    let store = ctx.store.clone();
    match blocking(move || store.sighting(id)).await? {
        Some(s) => Ok(json_response(StatusCode::OK, &s)),
        None => Err(ApiError::SightingNotFound),
    }
}

/// `GET /api/v1/sightings/{id}/snapshot`.
pub(super) async fn snapshot(ctx: &Arc<Ctx>, id: &str) -> Result<Resp, ApiError> {
    let id = parse_id(id)?;
    let store = ctx.store.clone();
    // One trip to the blocking pool: the snapshot, or whether the sighting
    // itself is unknown (a different 404).
    let snap = blocking(move || match store.sighting_snapshot(id)? {
        Some(s) => Ok(Ok(s)),
        None => Ok(Err(match store.sighting(id)? {
            Some(_) => ApiError::NoSightingSnapshot,
            None => ApiError::SightingNotFound,
        })),
    })
    .await??;
    let content_type = snapshot_content_type(&snap.bytes).unwrap_or("application/octet-stream");
    let mut r = Response::new(Full::new(Bytes::from(snap.bytes)));
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    Ok(r)
}

/// `GET /api/v1/sightings/summary`.
pub(super) async fn summary(ctx: &Arc<Ctx>, query: Option<&str>) -> Result<Resp, ApiError> {
    let q = parse_summary_query(query, now_ns())?;
    let store = ctx.store.clone();
    let rows = blocking(move || store.sighting_summary(q.bucket, q.since_ns, q.until_ns)).await?;
    Ok(json_response(
        StatusCode::OK,
        &serde_json::json!({
            "bucket": bucket_name(q.bucket),
            "since_ns": q.since_ns,
            "until_ns": q.until_ns,
            "rows": rows,
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::super::errors::status_and_code;
    use super::*;

    // Catches: wrong defaults, limit above the max accepted, since/until
    // swapped, RFC 3339 not accepted as for results, `open` taking anything
    // but true/false, unknown or repeated parameters silently accepted, and
    // malformed filters or cursors reaching the store.
    #[test]
    fn sightings_query_parsing() {
        let q = |s: &str| parse_sightings_query(Some(s), 100);
        assert_eq!(
            q("").unwrap(),
            SightingQuery {
                limit: 50,
                ..Default::default()
            }
        );
        assert_eq!(parse_sightings_query(None, 10).unwrap().limit, 10);
        let got = q("since=5&until=9&limit=100&open=true&cursor=77").unwrap();
        assert_eq!(
            (got.since_ns, got.until_ns, got.limit, got.open, got.cursor),
            (Some(5), Some(9), 100, Some(true), Some(77))
        );
        assert_eq!(q("open=false").unwrap().open, Some(false));
        assert_eq!(
            q("since=1970-01-01T00:00:01Z").unwrap().since_ns,
            Some(1_000_000_000)
        );
        assert_eq!(
            q("until=1970-01-01T01:00:00.5%2B01:00").unwrap().until_ns,
            Some(500_000_000),
            "+01:00 offset must be applied"
        );
        let got = q("label=tabby+cat&source=yard-2&zone=front.door").unwrap();
        assert_eq!(got.label.as_deref(), Some("tabby cat"));
        assert_eq!(got.source.as_deref(), Some("yard-2"));
        assert_eq!(got.zone.as_deref(), Some("front.door"));
        for bad in [
            "open=yes".to_string(),
            "open=1".into(),
            "open=".into(),
            "open=true&open=false".into(),
            "zone=".into(),
            "zone=a%20b".into(),
            format!("zone={}", "z".repeat(65)),
            "zone=a&zone=b".into(),
            "source=".into(),
            "source=a%2Fb".into(),
            "label=".into(),
            "label=a&label=b".into(),
            "limit=0".into(),
            "limit=101".into(),
            "limit=x".into(),
            "limit=1&limit=2".into(),
            "since=yesterday".into(),
            "since=-5".into(),
            "since=9&until=5".into(),
            // After 2262: fits the results' u64 but not a sighting's i64.
            "until=10000000000000000000".into(),
            "cursor=abc".into(),
            "cursor=-1".into(),
            "cursor=0".into(),
            "cursor=1&cursor=2".into(),
            "min_score=0.5".into(),
            "model=abc".into(),
        ] {
            let e = q(&bad).unwrap_err();
            assert_eq!(status_and_code(&e).0, StatusCode::BAD_REQUEST, "{bad}");
        }
    }

    // Catches: a wrong default bucket or range, `since` defaulting to
    // something other than a chart's worth of buckets before `until`, an
    // empty or inverted range accepted, unbounded bucket counts (a year of
    // minutes), and unknown buckets or parameters accepted.
    #[test]
    fn summary_query_parsing() {
        const H: i64 = 3_600_000_000_000;
        let now = 1_000 * 24 * H;
        let q = |s: &str| parse_summary_query(Some(s), now);
        assert_eq!(
            q("").unwrap(),
            SummaryQuery {
                bucket: Bucket::Hour,
                since_ns: now - 24 * H,
                until_ns: now
            }
        );
        assert_eq!(q("bucket=minute").unwrap().since_ns, now - H);
        assert_eq!(q("bucket=day").unwrap().since_ns, now - 30 * 24 * H);
        let got = q("bucket=day&since=1970-01-02T00:00:00Z&until=172800000000000").unwrap();
        assert_eq!(
            (got.bucket, got.since_ns, got.until_ns),
            (Bucket::Day, 24 * H, 48 * H)
        );
        // Exactly the store's bound is fine; one more bucket (touched by a
        // nanosecond) is not.
        let most = MAX_SUMMARY_BUCKETS * (H / 60);
        assert!(q(&format!("bucket=minute&since={}", now - most)).is_ok());
        assert!(q(&format!("bucket=minute&since={}", now - most - 1)).is_err());
        for bad in [
            "bucket=week".to_string(),
            "bucket=".into(),
            "bucket=hour&bucket=day".into(),
            format!("since={now}"),
            format!("since={}&until={}", now, now - 1),
            "since=0&bucket=minute".into(),
            "since=x".into(),
            "label=person".into(),
            "limit=5".into(),
        ] {
            let e = q(&bad).unwrap_err();
            assert_eq!(status_and_code(&e).0, StatusCode::BAD_REQUEST, "{bad}");
        }
    }

    // Catches: ids other than plain decimal u64s reaching the store (or
    // panicking), e.g. signs, spaces, overflow.
    #[test]
    fn path_ids_are_decimal() {
        assert_eq!(parse_id("42").unwrap(), 42);
        assert_eq!(parse_id("0123").unwrap(), 123);
        for bad in ["", "-1", "+1", "1 ", "0x10", "18446744073709551616", "abc"] {
            let e = parse_id(bad).unwrap_err();
            assert_eq!(
                status_and_code(&e),
                (StatusCode::NOT_FOUND, "sighting_not_found")
            );
        }
    }
}
