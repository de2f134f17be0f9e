//! Sightings over the HTTPS API (issue 18): `GET /api/v1/sightings` with
//! its filters and cursor, `/{id}`, `/{id}/snapshot`, `/summary`, their
//! 400s and 404s, the OpenAPI document served, and the `sighting_started` /
//! `sighting_ended` events on the SSE stream. Sightings are written with
//! the store's own `put_sighting`, as the result sink does.

use crate::api_harness;

use std::collections::BTreeMap;
use std::time::Duration;

use api_harness::{assert_problem, relaxed_access, start, start_with, Harness};
use serde_json::Value;
use spotter::core::sighting::{Sighting, SightingChange, SightingEvent};
use spotter::store::Snapshot;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const S: i64 = 1_000_000_000;
/// 2026-01-01T00:00:00Z: a whole UTC day, so hour buckets are aligned.
const T0: i64 = 1_767_225_600 * S;

fn sighting(
    id: u64,
    label: &str,
    source: &str,
    zone: Option<&str>,
    start: i64,
    end: Option<i64>,
) -> Sighting {
    Sighting {
        id,
        label: label.into(),
        source: source.into(),
        zone: zone.map(str::to_string),
        start_ns: start,
        end_ns: end,
        last_seen_ns: end.unwrap_or(start + 5 * S),
        peak_score: 0.5 + id as f32 / 100.0,
        frames: id * 3,
        max_objects: 1 + (id % 3) as u32,
        best_result_id: None,
        best_ns: start + S,
    }
}

/// Six sightings: ids 1..=6, starting 10 minutes apart from T0 (id 1 first),
/// of person/car on the yard/gate sources, some in the door zone, the newest
/// one still open.
fn fixture() -> Vec<Sighting> {
    let m = 60 * S;
    vec![
        sighting(1, "person", "yard", Some("door"), T0, Some(T0 + 2 * m)),
        sighting(2, "car", "yard", None, T0 + 10 * m, Some(T0 + 11 * m)),
        sighting(3, "person", "gate", None, T0 + 20 * m, Some(T0 + 25 * m)),
        sighting(
            4,
            "person",
            "yard",
            Some("door"),
            T0 + 30 * m,
            Some(T0 + 31 * m),
        ),
        sighting(5, "car", "gate", None, T0 + 40 * m, Some(T0 + 45 * m)),
        sighting(6, "person", "yard", Some("door"), T0 + 50 * m, None),
    ]
}

/// Store the fixture; sighting 4 with a snapshot (ASCII BMP magic, so the
/// harness can read it as text). Returns the sightings.
fn store_fixture(h: &Harness) -> Vec<Sighting> {
    let all = fixture();
    for s in &all {
        let snap = Snapshot {
            bytes: b"BM-best-frame-4".to_vec(),
        };
        h.store
            .put_sighting(
                s,
                (s.id == 4).then_some(&snap),
                Some(SightingChange::Started),
            )
            .unwrap();
    }
    all
}

/// The ids of a listing's page, and its cursor.
fn page(v: &Value) -> (Vec<u64>, Option<String>) {
    let ids = v["sightings"]
        .as_array()
        .unwrap_or_else(|| panic!("no sightings: {v}"))
        .iter()
        .map(|s| s["id"].as_u64().unwrap())
        .collect();
    (ids, v["next_cursor"].as_str().map(str::to_string))
}

/// Every id the listing with `query` returns, following cursors.
async fn all_ids(h: &Harness, query: &str) -> Vec<u64> {
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..100 {
        let sep = if query.is_empty() { "" } else { "&" };
        let path = match &cursor {
            Some(c) => format!("/api/v1/sightings?{query}{sep}cursor={c}"),
            None => format!("/api/v1/sightings?{query}"),
        };
        let r = h.get(&path).await;
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        let (got, next) = page(&r.json());
        ids.extend(got);
        match next {
            Some(c) => cursor = Some(c),
            None => return ids,
        }
    }
    panic!("{query}: more than 100 pages");
}

// Catches: the listing not newest first, a filter (label, source, zone,
// open, since, until) ignored or inverted, RFC 3339 bounds not accepted,
// a cursor that repeats or skips sightings, a sighting served with other
// JSON than the record's, the snapshot served without its bytes or content
// type, and 404s that do not tell an unknown sighting from a missing
// snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_filters_cursor_by_id_and_snapshot() {
    let h = start().await;
    let all = store_fixture(&h);
    assert_eq!(all_ids(&h, "").await, [6, 5, 4, 3, 2, 1]);
    let first = h.get("/api/v1/sightings?limit=2").await.json();
    assert_eq!(page(&first).0, [6, 5]);
    assert!(page(&first).1.is_some(), "more pages: {first}");
    assert_eq!(all_ids(&h, "limit=2").await, [6, 5, 4, 3, 2, 1]);
    assert_eq!(all_ids(&h, "limit=1&label=person").await, [6, 4, 3, 1]);
    assert_eq!(all_ids(&h, "label=car").await, [5, 2]);
    assert_eq!(all_ids(&h, "source=gate").await, [5, 3]);
    assert_eq!(all_ids(&h, "zone=door").await, [6, 4, 1]);
    assert_eq!(all_ids(&h, "open=true").await, [6]);
    assert_eq!(all_ids(&h, "open=false&source=yard").await, [4, 2, 1]);
    assert_eq!(
        all_ids(&h, "label=person&source=yard&zone=door&open=false").await,
        [4, 1]
    );
    assert!(all_ids(&h, "label=dog").await.is_empty());
    // since: present at or after (ended at or after it, or open);
    // until: started at or before.
    let m = 60 * S;
    assert_eq!(
        all_ids(&h, &format!("since={}", T0 + 25 * m)).await,
        [6, 5, 4, 3],
        "3 ended exactly at since"
    );
    assert_eq!(all_ids(&h, &format!("until={}", T0 + 10 * m)).await, [2, 1]);
    assert_eq!(
        all_ids(
            &h,
            "since=2026-01-01T00:40:00Z&until=2026-01-01T01:40:00%2B01:00"
        )
        .await,
        [5],
        "RFC 3339 with an offset"
    );

    let r = h.get("/api/v1/sightings/4").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let got: Sighting = serde_json::from_str(&r.body).unwrap();
    assert_eq!(got, all[3]);
    let open = h.get("/api/v1/sightings/6").await.json();
    assert!(open["end_ns"].is_null() && open["zone"] == "door", "{open}");
    assert!(h.get("/api/v1/sightings/2").await.json()["zone"].is_null());

    let r = h.get("/api/v1/sightings/4/snapshot").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("content-type"), Some("image/bmp"));
    assert_eq!(r.body, "BM-best-frame-4");
    assert_problem(
        &h.get("/api/v1/sightings/5/snapshot").await,
        404,
        "no_snapshot",
    );
    for unknown in [
        "/api/v1/sightings/99",
        "/api/v1/sightings/99/snapshot",
        "/api/v1/sightings/x1",
    ] {
        assert_problem(&h.get(unknown).await, 404, "sighting_not_found");
    }
    assert_problem(&h.get("/api/v1/sightings/1/image").await, 404, "not_found");
    h.stop().await;
}

// Catches: malformed or unknown parameters reaching the store or being
// ignored instead of a 400 problem naming the parameter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_parameters_are_400_naming_them() {
    let h = start().await;
    for (query, name) in [
        ("open=maybe", "open"),
        ("limit=0", "limit"),
        ("since=yesterday", "since"),
        ("since=9&until=5", "since"),
        ("cursor=not-a-cursor", "cursor"),
        ("zone=a%20b", "zone"),
        ("source=", "source"),
        ("label=a&label=b", "label"),
        ("min_score=0.5", "min_score"),
    ] {
        let r = h.get(&format!("/api/v1/sightings?{query}")).await;
        assert_problem(&r, 400, "invalid_parameter");
        assert!(
            r.json()["detail"].as_str().unwrap().contains(name),
            "{query}: {}",
            r.body
        );
    }
    for query in [
        "bucket=week",
        "bucket=minute&since=0",
        "since=10&until=5",
        "label=person",
    ] {
        let r = h.get(&format!("/api/v1/sightings/summary?{query}")).await;
        assert_problem(&r, 400, "invalid_parameter");
    }
    h.stop().await;
}

// Catches: summary counts that differ from the sightings listed over the
// same range, presence seconds not split across the buckets a sighting
// spans (or not clipped to the range), rows not keyed by UTC bucket start,
// and the default parameters not giving a usable 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn summary_counts_match_the_listing() {
    let h = start().await;
    store_fixture(&h);
    let m = 60 * S;
    // Spans the 01:00 boundary: 30 minutes in each hour.
    let long = sighting(7, "car", "yard", None, T0 + 90 * m, Some(T0 + 150 * m));
    h.store.put_sighting(&long, None, None).unwrap();
    let (since, until) = (T0, T0 + 3 * 60 * m);
    let r = h
        .get(&format!(
            "/api/v1/sightings/summary?bucket=hour&since={since}&until={until}"
        ))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(
        (
            v["bucket"].as_str(),
            v["since_ns"].as_i64(),
            v["until_ns"].as_i64()
        ),
        (Some("hour"), Some(since), Some(until))
    );
    let mut rows: BTreeMap<(i64, String), (u64, f64)> = BTreeMap::new();
    for row in v["rows"].as_array().unwrap() {
        let key = (
            row["bucket_start_ns"].as_i64().unwrap(),
            row["label"].as_str().unwrap().to_string(),
        );
        assert_eq!((key.0 - T0) % (60 * m), 0, "bucket not on an hour: {row}");
        let val = (
            row["count"].as_u64().unwrap(),
            row["seconds"].as_f64().unwrap(),
        );
        assert!(rows.insert(key, val).is_none(), "duplicate row {row}");
    }
    let counted: u64 = rows.values().map(|(c, _)| c).sum();
    let listed = all_ids(&h, &format!("until={}", until - 1)).await.len() as u64;
    assert_eq!(counted, listed, "{v}");
    let get = |b: i64, l: &str| {
        rows.get(&(T0 + b * 60 * m, l.to_string()))
            .copied()
            .unwrap_or((0, 0.0))
    };
    let close = |a: f64, b: f64| (a - b).abs() < 1e-6;
    // Hour 0: cars 2 (60 s) and 5 (300 s) started; 7 not yet.
    assert_eq!(get(0, "car").0, 2);
    assert!(close(get(0, "car").1, 360.0), "{v}");
    // Hour 1: car 7 starts at 01:30, present 30 minutes in it ...
    assert_eq!(get(1, "car").0, 1);
    assert!(close(get(1, "car").1, 1800.0), "{v}");
    // ... and 30 minutes in hour 2, where it did not start.
    assert_eq!(get(2, "car").0, 0);
    assert!(close(get(2, "car").1, 1800.0), "{v}");
    // Persons 1 (120 s), 3 (300 s), 4 (60 s) and the open 6 (to its last
    // sighting, 5 s), all in hour 0.
    assert_eq!(get(0, "person").0, 4);
    assert!(close(get(0, "person").1, 485.0), "{v}");
    // Defaults: hour buckets over the last day.
    let r = h.get("/api/v1/sightings/summary").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let d = r.json();
    assert_eq!(d["bucket"], "hour");
    assert_eq!(
        d["until_ns"].as_i64().unwrap() - d["since_ns"].as_i64().unwrap(),
        24 * 60 * m
    );
    h.stop().await;
}

// Catches: the served OpenAPI document missing the sighting routes or the
// Sighting schema (clients generated from it would not see them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_lists_the_sighting_routes() {
    let h = start().await;
    let doc = h.get("/api/v1/openapi.json").await.json();
    for p in [
        "/api/v1/sightings",
        "/api/v1/sightings/summary",
        "/api/v1/sightings/{id}",
        "/api/v1/sightings/{id}/snapshot",
    ] {
        assert!(
            doc["paths"][p]["get"]["responses"]["200"].is_object(),
            "{p}"
        );
    }
    let schema = &doc["components"]["schemas"]["Sighting"]["properties"];
    for field in [
        "id",
        "label",
        "source",
        "zone",
        "start_ns",
        "end_ns",
        "peak_score",
        "frames",
        "max_objects",
    ] {
        assert!(schema[field].is_object(), "Sighting.{field}");
    }
    let events = doc["paths"]["/api/v1/events"]["get"]["summary"]
        .as_str()
        .unwrap();
    assert!(events.contains("sighting_started") && events.contains("sighting_ended"));
    h.stop().await;
}

// Catches: sighting changes not reaching event subscribers, arriving under
// other event names, in another order, or with data other than the
// sighting's JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighting_events_are_streamed() {
    let h = start_with(|_| {}, relaxed_access()).await;
    let mut tls = h.raw_tls().await;
    let req = format!(
        "GET /api/v1/events HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\n\r\n",
        h.read_key
    );
    tls.write_all(req.as_bytes()).await.unwrap();
    let mut text = String::new();
    let mut chunk = [0u8; 8192];
    let mut read_until = async |text: &mut String, want: &str| {
        while !text.contains(want) {
            // Bound so a stream that never delivers fails instead of hanging.
            let n = tokio::time::timeout(Duration::from_secs(30), tls.read(&mut chunk))
                .await
                .unwrap_or_else(|_| panic!("no {want:?} within 30 s: {text}"))
                .unwrap();
            assert!(n > 0, "stream closed: {text}");
            text.push_str(&String::from_utf8_lossy(&chunk[..n]));
        }
    };
    // The opening comment: the subscription exists before publishing.
    read_until(&mut text, ": spotter events").await;
    let mut s = sighting(41, "person", "yard", Some("door"), T0, None);
    h.state.sighting_changed(&SightingEvent {
        event: SightingChange::Started,
        sighting: s.clone(),
    });
    s.end_ns = Some(T0 + 9 * S);
    s.last_seen_ns = T0 + 9 * S;
    h.state.sighting_changed(&SightingEvent {
        event: SightingChange::Ended,
        sighting: s.clone(),
    });
    read_until(&mut text, "event: sighting_ended\ndata: ").await;
    read_until(&mut text, "}\n\n").await;
    let data = |name: &str| -> Sighting {
        let rest = text
            .split(&format!("event: {name}\ndata: "))
            .nth(1)
            .unwrap_or_else(|| panic!("no {name}: {text}"));
        serde_json::from_str(rest.split('\n').next().unwrap()).unwrap()
    };
    let started = data("sighting_started");
    assert!(started.end_ns.is_none() && started.id == 41, "{started:?}");
    assert_eq!(data("sighting_ended"), s);
    assert!(
        text.find("event: sighting_started") < text.find("event: sighting_ended"),
        "{text}"
    );
    h.stop().await;
}
