//! The appliance's web interface (issue 20): owns the page routes (`/`,
//! `/live`, `/history`, `/device`), their server-rendered HTML (askama
//! templates in `templates/`, compiled in), the static files under
//! `/assets/<hash>/<name>` (`assets`) and the History chart (`chart`).
//! Pages and assets carry `headers::page_headers` / `asset_headers` (a
//! strict CSP allowing only this origin's files; no inline script or style
//! anywhere; assets cached for a year under their hash).
//!
//! Pages are not API routes: they are matched before the API's router
//! ([`match_page`]), not listed in `ROUTES` nor in the OpenAPI document.
//! They take the caller the API's authentication found (the session
//! cookie, or a bearer key); a page other than `/` without one redirects
//! to `/` (the sign-in form), and `/` with one redirects to `/live`. Every
//! action a page offers is a call of the API from its JavaScript (cookie
//! authenticated), so the server decides scope as for any client: a read
//! key's page has no admin controls, and the API refuses admin calls from
//! it whatever the page sends. Assets need no key; their anonymous requests
//! take tokens from the probe bucket, not the failed-key one.

mod assets;
mod chart;

use std::sync::Arc;

use askama::Template;
use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CONTENT_TYPE, LOCATION, SET_COOKIE};
use hyper::{Method, Response, StatusCode};

use super::auth::Caller;
use super::headers::{asset_headers, page_headers};
use super::{blocking, ApiError, Ctx, Resp};
use crate::keys::Scope;
use crate::modelstore::ModelStore;
use crate::store::Bucket;

/// Results and sightings listed on the History page at most.
const HISTORY_ROWS: usize = 50;

/// A page or an asset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Page<'a> {
    SignIn,
    Live,
    History,
    Device,
    Asset(&'a str),
}

impl Page<'_> {
    /// A bounded name for metrics labels.
    pub(super) fn name(&self) -> &'static str {
        match self {
            Page::SignIn => "page_signin",
            Page::Live => "page_live",
            Page::History => "page_history",
            Page::Device => "page_device",
            Page::Asset(_) => "asset",
        }
    }

    /// Whether anonymous requests for it use the probe bucket (static files).
    pub(super) fn is_asset(&self) -> bool {
        matches!(self, Page::Asset(_))
    }
}

/// The page `path` names, if any.
pub(super) fn match_page(path: &str) -> Option<Page<'_>> {
    Some(match path {
        "/" => Page::SignIn,
        "/live" => Page::Live,
        "/history" => Page::History,
        "/device" => Page::Device,
        p => Page::Asset(p.strip_prefix("/assets/")?),
    })
}

fn html(status: StatusCode, body: String) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    page_headers(r.headers_mut());
    r
}

fn redirect(to: &'static str) -> Resp {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::SEE_OTHER;
    r.headers_mut()
        .insert(LOCATION, HeaderValue::from_static(to));
    r
}

fn render(t: &impl Template) -> Result<String, ApiError> {
    t.render()
        .map_err(|e| ApiError::Internal(format!("page template: {e}")))
}

/// What every page's frame shows: the navigation, the signed-in key and
/// the asset URLs.
struct Frame {
    page: &'static str,
    key_name: String,
    scope: &'static str,
    css: String,
    common_js: String,
    icon: String,
}

impl Frame {
    fn new(page: &'static str, caller: &Caller) -> Frame {
        let (key_name, scope) = match caller {
            Caller::Key(k) => (k.name.clone(), k.scope.as_str()),
            Caller::Anonymous => (String::new(), ""),
        };
        Frame {
            page,
            key_name,
            scope,
            css: assets::url("app.css"),
            common_js: assets::url("common.js"),
            icon: assets::url("icon.svg"),
        }
    }
}

#[derive(Template)]
#[template(path = "signin.html")]
struct SignInPage {
    frame: Frame,
    script: String,
    notice: &'static str,
}

#[derive(Template)]
#[template(path = "live.html")]
struct LivePage {
    frame: Frame,
    script: String,
    sources: Vec<LiveSource>,
}

/// One source on the Live page: its name and its zones as JSON
/// (`[{"name":…,"polygon":[[x,y],…]}]`, normalized coordinates), which the
/// script draws over the frame. Carried in a data attribute: the page CSP
/// allows no inline script.
struct LiveSource {
    name: String,
    zones: String,
}

struct ResultRow {
    id: String,
    time: String,
    source: String,
    top: String,
}

struct SightingRow {
    id: u64,
    label: String,
    source: String,
    zone: String,
    start: String,
    length: String,
    peak: String,
    snapshot: bool,
}

struct Chart {
    title: &'static str,
    svg: String,
    legend: Vec<(String, String)>,
}

#[derive(Template)]
#[template(path = "history.html")]
struct HistoryPage {
    frame: Frame,
    filters: Vec<(&'static str, &'static str, String)>,
    error: String,
    results: Vec<ResultRow>,
    sightings: Vec<SightingRow>,
    charts: Vec<Chart>,
}

struct Section {
    title: String,
    rows: Vec<(String, String)>,
}

struct KeyRow {
    id: String,
    name: String,
    scope: &'static str,
    created: String,
    revoked: bool,
}

struct VersionRow {
    sha256: String,
    name: String,
    kind: String,
    installed: String,
    active: bool,
}

#[derive(Template)]
#[template(path = "device.html")]
struct DevicePage {
    frame: Frame,
    script: String,
    admin: bool,
    sections: Vec<Section>,
    keys: Vec<KeyRow>,
    versions: Vec<VersionRow>,
}

/// Answer a page or asset request from `caller`.
pub(super) async fn serve(
    ctx: &Arc<Ctx>,
    page: Page<'_>,
    caller: &Caller,
    method: &Method,
    query: Option<&str>,
) -> Result<Resp, ApiError> {
    if method != Method::GET && method != Method::HEAD {
        return Err(ApiError::MethodNotAllowed { allow: "GET, HEAD" });
    }
    if let Page::Asset(rest) = page {
        let a = assets::lookup(rest).ok_or(ApiError::RouteNotFound)?;
        let mut r = Response::new(Full::new(Bytes::from_static(a.body.as_bytes())));
        r.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(a.content_type));
        asset_headers(r.headers_mut());
        return Ok(r);
    }
    let signed_in = matches!(caller, Caller::Key(_));
    match page {
        Page::SignIn if signed_in => Ok(redirect("/live")),
        Page::SignIn => sign_in(caller, ""),
        _ if !signed_in => Ok(redirect("/")),
        Page::Live => live(ctx, caller),
        Page::History => history(ctx, caller, query).await,
        Page::Device => device(ctx, caller).await,
        Page::Asset(_) => Err(ApiError::RouteNotFound),
    }
}

/// A page request whose credentials failed (a revoked key's session, an
/// expired one): `/` shows the sign-in form and clears the cookie, every
/// other page redirects there. Rate limits and other errors stay errors.
pub(super) fn unauthenticated(page: Page<'_>, e: ApiError) -> Result<Resp, ApiError> {
    if page.is_asset() || !matches!(e, ApiError::InvalidKey | ApiError::SessionExpired) {
        return Err(e);
    }
    let mut r = match page {
        Page::SignIn => sign_in(
            &Caller::Anonymous,
            "Your session has ended (signed out, expired or its key revoked). Sign in again.",
        )?,
        _ => redirect("/"),
    };
    r.headers_mut().insert(
        SET_COOKIE,
        HeaderValue::from_static(
            "__Host-spotter_session=; Max-Age=0; Path=/; Secure; HttpOnly; SameSite=Strict",
        ),
    );
    Ok(r)
}

fn sign_in(caller: &Caller, notice: &'static str) -> Result<Resp, ApiError> {
    let page = SignInPage {
        frame: Frame::new("signin", caller),
        script: assets::url("signin.js"),
        notice,
    };
    Ok(html(StatusCode::OK, render(&page)?))
}

fn live(ctx: &Ctx, caller: &Caller) -> Result<Resp, ApiError> {
    // The zones the sightings stage uses (the running configuration's).
    let zones = ctx
        .pipeline
        .as_ref()
        .map(|p| {
            p.control
                .sightings
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .zones
                .clone()
        })
        .unwrap_or_default();
    let sources = ctx
        .state
        .source_stats()
        .iter()
        .map(|s| LiveSource {
            name: s.name.clone(),
            zones: zones_json(&zones, &s.name),
        })
        .collect();
    let page = LivePage {
        frame: Frame::new("live", caller),
        script: assets::url("live.js"),
        sources,
    };
    Ok(html(StatusCode::OK, render(&page)?))
}

/// The zones of `source` as the Live script reads them.
fn zones_json(zones: &[crate::config::sightings::ZoneSettings], source: &str) -> String {
    let list: Vec<serde_json::Value> = zones
        .iter()
        .filter(|z| z.source == source)
        .map(|z| serde_json::json!({ "name": z.name, "polygon": z.polygon.points() }))
        .collect();
    serde_json::Value::Array(list).to_string()
}

/// A Unix time in ns as `YYYY-MM-DD HH:MM:SS` UTC.
fn utc(ns: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ns))
        .map(|t| {
            format!(
                "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute(),
                t.second()
            )
        })
        .unwrap_or_else(|_| ns.to_string())
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The History filters (the results API's parameters), empty ones dropped.
const FILTERS: &[(&str, &str)] = &[
    ("label", "Label"),
    ("min_score", "Min. score"),
    ("source", "Source"),
    ("since", "Since (RFC 3339)"),
    ("until", "Until (RFC 3339)"),
];

async fn history(ctx: &Arc<Ctx>, caller: &Caller, query: Option<&str>) -> Result<Resp, ApiError> {
    let given: Vec<(String, String)> = form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .filter(|(k, v)| !v.is_empty() && FILTERS.iter().any(|(f, _)| f == k))
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let filters = FILTERS
        .iter()
        .map(|(k, label)| {
            let v = given
                .iter()
                .find(|(g, _)| g == k)
                .map(|(_, v)| v.clone())
                .unwrap_or_default();
            (*k, *label, v)
        })
        .collect();
    let q_text = {
        let mut q = form_urlencoded::Serializer::new(String::new());
        for (k, v) in &given {
            q.append_pair(k, v);
        }
        q.finish()
    };
    let mut error = String::new();
    let mut results = Vec::new();
    let mut sightings = Vec::new();
    match super::results::parse_results_query(Some(&q_text), ctx.max_results_limit) {
        Err(e) => error = e.to_string(),
        Ok(mut q) => {
            q.limit = q.limit.min(HISTORY_ROWS);
            let sq = crate::store::SightingQuery {
                since_ns: q.since.map(|t| i64::try_from(t).unwrap_or(i64::MAX)),
                until_ns: q.until.map(|t| i64::try_from(t).unwrap_or(i64::MAX)),
                label: q.label.clone(),
                source: q.source.clone(),
                zone: None,
                open: None,
                limit: HISTORY_ROWS,
                cursor: None,
            };
            let store = ctx.store.clone();
            let (page, spage) =
                blocking(move || Ok((store.query(&q)?, store.sightings(&sq)?))).await?;
            results = page
                .results
                .iter()
                .map(|r| ResultRow {
                    id: r.id.clone(),
                    time: utc(i64::try_from(r.ts_ns).unwrap_or(i64::MAX)),
                    source: r.source_name.clone(),
                    top: r
                        .classes
                        .first()
                        .map(|c| format!("{} {:.2}", c.label, c.score))
                        .or_else(|| {
                            r.detections
                                .first()
                                .map(|d| format!("{} {:.2}", d.label, d.score))
                        })
                        .unwrap_or_else(|| "—".into()),
                })
                .collect();
            sightings = spage
                .sightings
                .iter()
                .map(|s| SightingRow {
                    id: s.id,
                    label: s.label.clone(),
                    source: s.source.clone(),
                    zone: s.zone.clone().unwrap_or_default(),
                    start: utc(s.start_ns),
                    length: match s.end_ns {
                        Some(e) => format!("{:.1} s", (e - s.start_ns) as f64 / 1e9),
                        None => "open".into(),
                    },
                    peak: format!("{:.2}", s.peak_score),
                    snapshot: s.best_result_id.is_some(),
                })
                .collect();
        }
    }
    let now = now_ns();
    let hour = Bucket::Hour.len_ns();
    let mut charts = Vec::new();
    // One pass over the store for the week; the day's chart is its last 24
    // hour buckets (hour-aligned, so each bucket's figures are the same).
    let week_since = Bucket::Hour.floor(now) - (24 * 7 - 1) * hour;
    let store = ctx.store.clone();
    let week =
        blocking(move || store.sighting_summary(Bucket::Hour, week_since, now.saturating_add(1)))
            .await?;
    for (title, hours) in [("Last 24 hours", 24usize), ("Last 7 days", 24 * 7)] {
        let since = Bucket::Hour.floor(now) - (hours as i64 - 1) * hour;
        let rows: Vec<_> = week
            .iter()
            .filter(|r| r.bucket_start_ns >= since)
            .cloned()
            .collect();
        let (svg, legend) = chart::render(
            &format!("Sightings per label per hour, {title}"),
            &rows,
            since,
            hour,
            hours,
        );
        charts.push(Chart { title, svg, legend });
    }
    let page = HistoryPage {
        frame: Frame::new("history", caller),
        filters,
        error,
        results,
        sightings,
        charts,
    };
    Ok(html(StatusCode::OK, render(&page)?))
}

/// The status document's sections as rows of text (nested values as
/// compact JSON), in the order a technician reads them.
fn status_sections(status: &serde_json::Value) -> Vec<Section> {
    let text = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "—".into(),
        other => other.to_string(),
    };
    let mut out = vec![Section {
        title: "Device".into(),
        rows: ["version", "uptime_s", "clock_synchronized", "source"]
            .iter()
            .map(|k| (k.to_string(), text(&status[*k])))
            .chain(std::iter::once(("clock (UTC)".to_string(), utc(now_ns()))))
            .collect(),
    }];
    // Readiness: each check on its own row, failing ones with their reason.
    let check = |c: &serde_json::Value| {
        let state = if c["ok"] == serde_json::Value::Bool(true) {
            "ok"
        } else {
            "failing"
        };
        match c["detail"].as_str() {
            Some(d) if !d.is_empty() => format!("{state}: {d}"),
            _ => state.to_string(),
        }
    };
    let checks = &status["readiness"]["checks"];
    let mut rows = vec![("ready".to_string(), text(&status["readiness"]["ready"]))];
    for k in ["source", "model", "store"] {
        if !checks[k].is_null() {
            rows.push((k.to_string(), check(&checks[k])));
        }
    }
    for s in checks["sources"].as_array().into_iter().flatten() {
        rows.push((format!("source {}", text(&s["name"])), check(s)));
    }
    out.push(Section {
        title: "Readiness".into(),
        rows,
    });
    for (key, title) in [
        ("model", "Model"),
        ("counters", "Counters"),
        ("store", "Store and disk"),
        ("mqtt", "MQTT"),
        ("gpio", "GPIO"),
        ("motion", "Motion"),
    ] {
        let rows = match &status[key] {
            serde_json::Value::Object(m) => m.iter().map(|(k, v)| (k.clone(), text(v))).collect(),
            serde_json::Value::Null => vec![("—".into(), "not configured".into())],
            other => vec![(key.to_string(), text(other))],
        };
        out.push(Section {
            title: title.into(),
            rows,
        });
    }
    out
}

async fn device(ctx: &Arc<Ctx>, caller: &Caller) -> Result<Resp, ApiError> {
    let admin = matches!(caller, Caller::Key(k) if k.scope.allows(Scope::Admin));
    let status: serde_json::Value =
        serde_json::from_slice(&ctx.state.status_json(ctx.store.stats())).unwrap_or_default();
    let sections = status_sections(&status);
    let mut keys = Vec::new();
    let mut versions = Vec::new();
    if admin {
        keys = ctx
            .keys
            .get()
            .await
            .infos()
            .map(|k| KeyRow {
                id: k.id.clone(),
                name: k.name.clone(),
                scope: k.scope.as_str(),
                created: utc(i64::try_from(k.created_unix_s)
                    .unwrap_or(i64::MAX / 1_000_000_000)
                    .saturating_mul(1_000_000_000)),
                revoked: k.revoked,
            })
            .collect();
        let models = ModelStore::new(&ctx.state_dir);
        let list = tokio::task::spawn_blocking(move || models.list())
            .await
            .map_err(|e| ApiError::Internal(format!("model task failed: {e}")))?
            .unwrap_or_default();
        versions = list
            .into_iter()
            .map(|(m, active)| VersionRow {
                installed: utc(i64::try_from(m.installed_unix_s)
                    .unwrap_or(i64::MAX / 1_000_000_000)
                    .saturating_mul(1_000_000_000)),
                sha256: m.sha256,
                name: m.original_name,
                kind: m.kind,
                active,
            })
            .collect();
    }
    let page = DevicePage {
        frame: Frame::new("device", caller),
        script: assets::url("device.js"),
        admin,
        sections,
        keys,
        versions,
    };
    Ok(html(StatusCode::OK, render(&page)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Catches: an API path or a near miss (`/live/`, `/assets`) taken as a
    // page, or a page missing from the matcher.
    #[test]
    fn pages_match_exactly() {
        assert_eq!(match_page("/"), Some(Page::SignIn));
        assert_eq!(match_page("/live"), Some(Page::Live));
        assert_eq!(match_page("/history"), Some(Page::History));
        assert_eq!(match_page("/device"), Some(Page::Device));
        assert_eq!(
            match_page("/assets/ab/app.css"),
            Some(Page::Asset("ab/app.css"))
        );
        assert_eq!(match_page("/live/"), None);
        assert_eq!(match_page("/assets"), None);
        assert_eq!(match_page("/api/v1/status"), None);
        assert_eq!(match_page("/healthz"), None);
    }

    // Catches: a failing readiness check shown without its reason (the
    // technician's first question), or a source's own check dropped.
    #[test]
    fn device_sections_give_each_readiness_check_its_reason() {
        let status = serde_json::json!({
            "version": "1",
            "readiness": {"ready": false, "checks": {
                "source": {"ok": false, "detail": "no frame for 3 s"},
                "model": {"ok": true, "detail": "passed its canary"},
                "store": {"ok": true, "detail": ""},
                "sources": [{"name": "yard", "ok": false, "detail": "unplugged"}],
            }},
            "model": null,
        });
        let sections = status_sections(&status);
        let r = sections.iter().find(|s| s.title == "Readiness").unwrap();
        let row = |k: &str| r.rows.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(row("ready"), Some("false"));
        assert_eq!(row("source"), Some("failing: no frame for 3 s"));
        assert_eq!(row("store"), Some("ok"));
        assert_eq!(row("source yard"), Some("failing: unplugged"));
        let m = sections.iter().find(|s| s.title == "Model").unwrap();
        assert_eq!(m.rows[0].1, "not configured");
    }

    // Catches: the Live page drawing another source's zones over a frame, or
    // zones in pixel rather than the normalized coordinates the script scales.
    #[test]
    fn zones_json_lists_the_sources_own_zones_normalized() {
        use crate::config::sightings::ZoneSettings;
        use crate::core::zone::{Anchor, Polygon};
        let zone = |name: &str, source: &str| ZoneSettings {
            name: name.into(),
            source: source.into(),
            polygon: Polygon::new(vec![[0.1, 0.2], [0.9, 0.2], [0.5, 0.8]]).unwrap(),
            anchor: Anchor::default(),
            labels: Vec::new(),
        };
        let zones = [zone("door", "front"), zone("drive", "back")];
        let v: serde_json::Value = serde_json::from_str(&zones_json(&zones, "front")).unwrap();
        assert_eq!(
            v,
            serde_json::json!([{"name": "door", "polygon": [[0.1, 0.2], [0.9, 0.2], [0.5, 0.8]]}])
        );
        assert_eq!(zones_json(&zones, "side"), "[]");
    }

    // Catches: markup in a key name or label rendered as HTML (a key named
    // `<script>` by an admin would run in every admin's page), and inline
    // script or style in a template.
    #[test]
    fn templates_escape_and_hold_no_inline_code() {
        let caller = Caller::Key(std::sync::Arc::new(crate::keys::KeyInfo {
            id: "0123456789abcdef".into(),
            name: "<script>alert(1)</script>".into(),
            scope: Scope::Read,
            created_unix_s: 0,
            revoked: false,
            revoked_unix_s: None,
        }));
        let page = LivePage {
            frame: Frame::new("live", &caller),
            script: assets::url("live.js"),
            sources: vec![LiveSource {
                name: "<b>cam</b>".into(),
                zones: r#"[{"name":"\"><script>x</script>"}]"#.into(),
            }],
        };
        let text = render(&page).unwrap();
        assert!(!text.contains("<script>alert"), "{text}");
        assert!(!text.contains("<b>cam"), "{text}");
        assert!(!text.contains("<script>x"), "{text}");
        for t in [
            include_str!("templates/base.html"),
            include_str!("templates/signin.html"),
            include_str!("templates/live.html"),
            include_str!("templates/history.html"),
            include_str!("templates/device.html"),
        ] {
            assert!(!t.contains("style="), "inline style in a template");
            assert!(!t.contains("<style"), "inline style in a template");
            assert!(!t.contains("<script>"), "inline script in a template");
            // No event handler attributes (` onclick=`, ` onload=`, ...).
            for (i, _) in t.match_indices(" on") {
                let rest = &t[i + 3..];
                let word: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase())
                    .collect();
                assert!(
                    !rest[word.len()..].starts_with('='),
                    "an event handler attribute in a template"
                );
            }
        }
    }
}
