//! Tests of the store's sightings (issue 18) against a real sled database in
//! a temporary folder.

use super::*;
use crate::store::tests::{rec, wait_until_free};
use crate::store::{OutboxEntry, OutboxLimits};

const S: i64 = 1_000_000_000;

/// A sighting of `label` on `source` from `start_s` (closed at `end_s`, or
/// open and last seen at `start_s + 1`), seconds after a fixed epoch.
pub(in crate::store) fn sighting(
    id: u64,
    label: &str,
    source: &str,
    start_s: i64,
    end_s: Option<i64>,
) -> Sighting {
    let t0 = 1_700_000_000 * S;
    let start_ns = t0 + start_s * S;
    let end_ns = end_s.map(|e| t0 + e * S);
    Sighting {
        id,
        label: label.into(),
        source: source.into(),
        zone: None,
        start_ns,
        end_ns,
        last_seen_ns: end_ns.unwrap_or(start_ns + S),
        peak_score: 0.9,
        frames: 3,
        max_objects: 1,
        best_result_id: None,
        best_ns: start_ns,
    }
}

pub(in crate::store) fn jpeg(tag: u8, len: usize) -> Snapshot {
    let mut bytes = vec![0xFF, 0xD8, 0xFF, 0xE0];
    bytes.resize(len, tag);
    Snapshot { bytes }
}

pub(in crate::store) fn open_with_outbox(dir: &std::path::Path) -> Store {
    Store::open_with(dir, 0)
        .unwrap()
        .with_outbox(OutboxLimits {
            max_records: 1000,
            max_bytes: 1 << 20,
        })
        .unwrap()
}

fn ids(v: &[Sighting]) -> Vec<u64> {
    v.iter().map(|s| s.id).collect()
}

/// Would catch: a sighting read back different from what was written (a
/// field lost in the JSON), a replace that adds a second row or loses the
/// snapshot when the update has none, a new snapshot not replacing the old,
/// the same snapshot written again (flash wear for nothing), and counters
/// that drift on replace.
#[test]
fn put_then_read_back_replace_keeps_or_replaces_the_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(dir.path(), 0).unwrap();
    assert_eq!(store.sighting(1).unwrap(), None);
    assert_eq!(store.sighting_snapshot(1).unwrap(), None);

    let mut s = sighting(1, "person", "door", 10, None);
    s.zone = Some("porch".into());
    s.best_result_id = Some("ab".repeat(16));
    store.put_sighting(&s, Some(&jpeg(1, 500)), None).unwrap();
    assert_eq!(store.sighting(1).unwrap().as_ref(), Some(&s));
    assert_eq!(store.sighting_snapshot(1).unwrap(), Some(jpeg(1, 500)));
    assert_eq!(store.sighting_count(), 1);
    let snap_bytes = store.sight.snap_bytes.load(Ordering::Relaxed);

    // The end, without a new best frame: the snapshot stays.
    s.end_ns = Some(s.last_seen_ns);
    s.frames = 40;
    store
        .put_sighting(&s, None, Some(SightingChange::Ended))
        .unwrap();
    assert_eq!(store.sighting(1).unwrap().as_ref(), Some(&s));
    assert_eq!(store.sighting_snapshot(1).unwrap(), Some(jpeg(1, 500)));
    assert_eq!(store.sighting_count(), 1);
    assert_eq!(store.sighting_snapshot_count(), 1);
    assert_eq!(store.sight.snap_bytes.load(Ordering::Relaxed), snap_bytes);

    // The same frame again (an open sighting's progress) is not rewritten.
    let written = store.stats().snapshot_written_bytes;
    store.put_sighting(&s, Some(&jpeg(1, 500)), None).unwrap();
    assert_eq!(store.stats().snapshot_written_bytes, written);
    assert_eq!(store.sight.snap_bytes.load(Ordering::Relaxed), snap_bytes);

    // A better frame replaces it.
    store.put_sighting(&s, Some(&jpeg(2, 300)), None).unwrap();
    assert!(store.stats().snapshot_written_bytes > written);
    assert_eq!(store.sighting_snapshot(1).unwrap(), Some(jpeg(2, 300)));
    assert_eq!(store.sighting_snapshot_count(), 1);
    assert_eq!(
        store.sight.snap_bytes.load(Ordering::Relaxed),
        snap_bytes - 200
    );
    // The counters agree with the trees.
    let (count, bytes, snaps, sbytes) = (
        store.sighting_count(),
        store.sighting_bytes(),
        store.sighting_snapshot_count(),
        store.sight.snap_bytes.load(Ordering::Relaxed),
    );
    store.sight.recount().unwrap();
    assert_eq!(
        (count, bytes, snaps, sbytes),
        (
            store.sighting_count(),
            store.sighting_bytes(),
            store.sighting_snapshot_count(),
            store.sight.snap_bytes.load(Ordering::Relaxed)
        )
    );
    // Sightings are not results.
    assert_eq!(store.len(), 0);
}

/// Would catch: a start or end stored without its MQTT outbox entry, an
/// entry of the wrong kind or payload (the publisher picks the topic by
/// kind; subscribers parse `{event, sighting}`), sequence numbers that do
/// not interleave with the results' (the backlog would publish an end
/// before the results that preceded it), and updates without a change
/// being published.
#[test]
fn changes_are_queued_in_order_with_results() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_with_outbox(dir.path());
    let mut r1 = rec(100, 1);
    store.insert(&mut r1).unwrap();
    let mut s = sighting(7, "cat", "default", 0, None);
    store
        .put_sighting(&s, None, Some(SightingChange::Started))
        .unwrap();
    // An update (better frame) is not published.
    s.frames = 9;
    store.put_sighting(&s, Some(&jpeg(3, 64)), None).unwrap();
    let mut r2 = rec(50, 2); // an earlier wall clock: order is still insertion order
    store.insert(&mut r2).unwrap();
    s.end_ns = Some(s.last_seen_ns);
    store
        .put_sighting(&s, None, Some(SightingChange::Ended))
        .unwrap();

    let entries: Vec<OutboxEntry> = store.outbox().unwrap().read(None, None, 100).unwrap();
    let kinds: Vec<OutboxKind> = entries.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        vec![
            OutboxKind::Result,
            OutboxKind::Sighting,
            OutboxKind::Result,
            OutboxKind::Sighting
        ]
    );
    let ev: SightingEvent = serde_json::from_slice(&entries[1].payload).unwrap();
    assert_eq!(ev.event, SightingChange::Started);
    assert_eq!(ev.sighting.frames, 3);
    assert!(ev.sighting.is_open());
    let ev: SightingEvent = serde_json::from_slice(&entries[3].payload).unwrap();
    assert_eq!(
        ev,
        SightingEvent {
            event: SightingChange::Ended,
            sighting: s.clone()
        }
    );
    assert_eq!(store.outbox().unwrap().len(), 4);

    // Without MQTT a change writes only the sighting.
    let dir = tempfile::tempdir().unwrap();
    let plain = Store::open_with(dir.path(), 0).unwrap();
    plain
        .put_sighting(&s, None, Some(SightingChange::Ended))
        .unwrap();
    assert_eq!(plain.sighting(7).unwrap(), Some(s));
}

/// A varied set: labels, sources, zones, open and closed, out of id order.
fn varied(store: &Store) -> Vec<Sighting> {
    let labels = ["person", "cat", "car"];
    let sources = ["door", "yard"];
    let mut all = Vec::new();
    for i in 0..37u64 {
        let start = i as i64 * 100;
        let end = (i % 5 != 0).then_some(start + 10 + (i as i64 % 7) * 30);
        let mut s = sighting(
            i * 3 + 1,
            labels[i as usize % 3],
            sources[i as usize % 2],
            start,
            end,
        );
        s.zone = (i % 4 == 1).then(|| "porch".to_string());
        all.push(s);
    }
    // Written in a shuffled order: listing follows ids, not insertion.
    for k in 0..all.len() {
        let s = &all[(k * 11) % all.len()];
        store.put_sighting(s, None, None).unwrap();
    }
    all.sort_by_key(|s| std::cmp::Reverse(s.id));
    all
}

/// Would catch: any filter ignored or inverted (since must match the end,
/// or last_seen while open; until the start), zone = null matched by a zone
/// filter, pages out of newest-first order, and a cursor that repeats or
/// skips a sighting or announces a page that does not exist.
#[test]
fn listing_filters_and_pages_newest_first() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(dir.path(), 0).unwrap();
    let all = varied(&store);
    let t0 = 1_700_000_000 * S;
    let queries = [
        SightingQuery::default(),
        SightingQuery {
            label: Some("cat".into()),
            ..Default::default()
        },
        SightingQuery {
            source: Some("yard".into()),
            ..Default::default()
        },
        SightingQuery {
            zone: Some("porch".into()),
            ..Default::default()
        },
        SightingQuery {
            open: Some(true),
            ..Default::default()
        },
        SightingQuery {
            open: Some(false),
            label: Some("person".into()),
            ..Default::default()
        },
        SightingQuery {
            since_ns: Some(t0 + 1_050 * S),
            until_ns: Some(t0 + 2_500 * S),
            ..Default::default()
        },
        SightingQuery {
            since_ns: Some(t0 + 3_000 * S),
            open: Some(true),
            ..Default::default()
        },
        SightingQuery {
            label: Some("dog".into()),
            ..Default::default()
        },
    ];
    for q in queries {
        let want: Vec<u64> = ids(&all
            .iter()
            .filter(|s| q.matches(s))
            .cloned()
            .collect::<Vec<_>>());
        for limit in [1, 4, 100] {
            let mut q = q.clone();
            q.limit = limit;
            let mut got = Vec::new();
            let mut pages = 0;
            loop {
                let page = store.sightings(&q).unwrap();
                pages += 1;
                assert!(page.sightings.len() <= limit);
                got.extend(ids(&page.sightings));
                match page.next_cursor {
                    Some(c) => {
                        assert!(
                            !page.sightings.is_empty(),
                            "{q:?}: empty page with a cursor"
                        );
                        q.cursor = Some(c)
                    }
                    None => break,
                }
                assert!(pages < 100);
            }
            assert_eq!(got, want, "{q:?}");
        }
    }
    // The since/until semantics on one sighting, by hand: id 7 (i = 2) ran
    // from 200 s to 270 s.
    let s7 = store.sighting(7).unwrap().unwrap();
    assert_eq!((s7.start_ns, s7.end_ns), (t0 + 200 * S, Some(t0 + 270 * S)));
    let q = |since: i64, until: i64| SightingQuery {
        since_ns: Some(t0 + since * S),
        until_ns: Some(t0 + until * S),
        ..Default::default()
    };
    assert!(q(270, 200).matches(&s7), "both bounds inclusive");
    assert!(!q(271, 1000).matches(&s7), "ended before since");
    assert!(!q(0, 199).matches(&s7), "started after until");
    // A limit of 0 and a cursor of 0 are empty.
    let page = store
        .sightings(&SightingQuery {
            cursor: Some(0),
            limit: 10,
            ..Default::default()
        })
        .unwrap();
    assert_eq!((page.sightings.len(), page.next_cursor), (0, None));
}

/// Would catch: a listing that walks the whole tree for a filter nothing
/// matches (one request scanning every sighting), or a scan-limited page
/// without a cursor (the rest would be unreachable).
#[test]
fn a_rare_filter_returns_short_pages_with_a_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(dir.path(), 0).unwrap();
    let n = MAX_SCAN_PER_PAGE as u64 + 50;
    // Written in one batch (put_sighting per row would be slow here); the
    // format is the store's own.
    let mut batch = sled::Batch::default();
    for id in 1..=n {
        let label = if id == 3 { "fox" } else { "cat" };
        let s = sighting(id, label, "default", id as i64, Some(id as i64 + 1));
        batch.insert(&id.to_be_bytes(), store.encode_sighting(&s).unwrap());
    }
    store.sight.rows.apply_batch(batch).unwrap();
    let mut q = SightingQuery {
        label: Some("fox".into()),
        limit: 10,
        ..Default::default()
    };
    let first = store.sightings(&q).unwrap();
    assert!(first.sightings.is_empty());
    assert_eq!(first.next_cursor, Some(n - MAX_SCAN_PER_PAGE as u64 + 1));
    q.cursor = first.next_cursor;
    let second = store.sightings(&q).unwrap();
    assert_eq!(ids(&second.sightings), vec![3]);
    assert_eq!(second.next_cursor, None);
}

/// Would catch: a restart leaving sightings open forever (the issue's
/// "never leaves them open forever"), an end other than the last time the
/// label was seen, no `ended` published for them, closed ones touched, and
/// a second start-up closing (and publishing) them again.
#[test]
fn close_open_sightings_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (open_a, open_b, closed) = {
        let store = open_with_outbox(dir.path());
        let mut a = sighting(1, "person", "door", 0, None);
        a.last_seen_ns += 37 * S;
        let b = sighting(2, "car", "yard", 50, None);
        let c = sighting(3, "cat", "door", 60, Some(70));
        for s in [&a, &b, &c] {
            store
                .put_sighting(s, Some(&jpeg(s.id as u8, 100)), None)
                .unwrap();
        }
        store.flush().unwrap();
        (a, b, c)
    };
    wait_until_free(dir.path());
    let store = open_with_outbox(dir.path());
    let before = store.outbox().unwrap().len();
    let done = store.close_open_sightings().unwrap();
    assert_eq!(ids(&done), vec![1, 2]);
    for (s, want) in done.iter().zip([&open_a, &open_b]) {
        assert_eq!(s.end_ns, Some(want.last_seen_ns));
        assert_eq!(store.sighting(s.id).unwrap().as_ref(), Some(s));
        // The snapshot stays.
        assert!(store.sighting_snapshot(s.id).unwrap().is_some());
    }
    assert_eq!(store.sighting(3).unwrap(), Some(closed));
    let entries = store.outbox().unwrap().read(None, None, 100).unwrap();
    assert_eq!(entries.len(), before + 2);
    for (e, s) in entries[before..].iter().zip(&done) {
        assert_eq!(e.kind, OutboxKind::Sighting);
        let ev: SightingEvent = serde_json::from_slice(&e.payload).unwrap();
        assert_eq!(
            ev,
            SightingEvent {
                event: SightingChange::Ended,
                sighting: s.clone()
            }
        );
    }
    let open = store
        .sightings(&SightingQuery {
            open: Some(true),
            limit: 10,
            ..Default::default()
        })
        .unwrap();
    assert!(open.sightings.is_empty());
    assert!(store.close_open_sightings().unwrap().is_empty());
    assert_eq!(store.outbox().unwrap().len(), before + 2);
}

/// Would catch: ids reused after a restart (a new sighting would overwrite
/// an old one), the largest id forgotten when the newest sightings are gone,
/// or "largest" taken as "latest written".
#[test]
fn last_sighting_id_is_the_largest_ever_stored() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open_with(dir.path(), 0).unwrap();
        assert_eq!(store.last_sighting_id().unwrap(), 0);
        for id in [4, 9, 2] {
            store
                .put_sighting(&sighting(id, "cat", "default", 0, Some(1)), None, None)
                .unwrap();
        }
        assert_eq!(store.last_sighting_id().unwrap(), 9);
        // The newest goes (as retention would delete it).
        store.sight.rows.remove(9u64.to_be_bytes()).unwrap();
        store.flush().unwrap();
    }
    wait_until_free(dir.path());
    let store = Store::open_with(dir.path(), 0).unwrap();
    assert_eq!(store.last_sighting_id().unwrap(), 9);
    assert_eq!(store.sighting_count(), 2);
}

/// A day-, hour- and minute-aligned base time (s since the Unix epoch).
const T: i64 = 1_699_920_000;

/// A sighting from `a` to `b` seconds after [`T`] (`open`: still open and
/// last seen at `b`).
fn span(id: u64, label: &str, a: i64, b: i64, open: bool) -> Sighting {
    let mut s = sighting(id, label, "default", 0, None);
    s.start_ns = (T + a) * S;
    s.last_seen_ns = (T + b) * S;
    s.end_ns = (!open).then_some(s.last_seen_ns);
    s.best_ns = s.start_ns;
    s
}

fn row(bucket_s: i64, label: &str, count: u64, seconds: f64) -> SummaryRow {
    SummaryRow {
        bucket_start_ns: (T + bucket_s) * S,
        label: label.into(),
        count,
        seconds,
    }
}

/// Would catch: a sighting counted in a bucket other than its start's (or
/// counted when it started before `since`), seconds put all in the start
/// bucket instead of split across the buckets spanned, presence not
/// clipped to `[since, until)`, an open sighting not counted up to its
/// last sighting, `until` taken as inclusive, buckets not aligned to UTC,
/// and a range of millions of buckets answered instead of refused.
#[test]
fn summary_counts_at_the_start_and_splits_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(dir.path(), 0).unwrap();
    for s in [
        span(1, "car", 10, 20, false),     // over before since
        span(2, "car", 20, 40, false),     // started before since: 10 s, no count
        span(3, "person", 50, 130, false), // 10 s + 60 s + 10 s
        span(4, "cat", 100, 110, true),    // open: up to last seen
        span(5, "person", 170, 175, false),
        span(6, "dog", 180, 200, false), // starts at until: out
    ] {
        store.put_sighting(&s, None, None).unwrap();
    }
    let (since, until) = ((T + 30) * S, (T + 180) * S);
    assert_eq!(
        store
            .sighting_summary(Bucket::Minute, since, until)
            .unwrap(),
        vec![
            row(0, "car", 0, 10.0),
            row(0, "person", 1, 10.0),
            row(60, "cat", 1, 10.0),
            row(60, "person", 0, 60.0),
            row(120, "person", 1, 15.0),
        ]
    );
    assert_eq!(
        store.sighting_summary(Bucket::Hour, since, until).unwrap(),
        vec![
            row(0, "car", 0, 10.0),
            row(0, "cat", 1, 10.0),
            row(0, "person", 2, 85.0),
        ]
    );
    // The counts equal the sightings that started in the range.
    let day = store
        .sighting_summary(Bucket::Day, T * S, (T + 86_400) * S)
        .unwrap();
    let counted: u64 = day.iter().map(|r| r.count).sum();
    assert_eq!(counted, 6);
    assert!(day.iter().all(|r| r.bucket_start_ns == T * S));
    // An empty or reversed range has no rows; a huge one is refused.
    assert!(store
        .sighting_summary(Bucket::Minute, until, since)
        .unwrap()
        .is_empty());
    assert!(matches!(
        store.sighting_summary(Bucket::Minute, 0, T * S),
        Err(StoreError::SummaryTooWide { .. })
    ));
}

fn policy(f: impl FnOnce(&mut crate::store::Retention)) -> crate::store::Retention {
    let mut r = crate::store::Retention::unlimited();
    f(&mut r);
    r
}

/// Would catch: sightings never pruned (the 90-day limit ignored), pruned
/// by start instead of end (a long one cut while recent), open ones
/// deleted, snapshots or open markers left behind, the results touched,
/// the count limit deleting the newest or an open one, counters drifting,
/// and the largest id forgotten once the newest is pruned.
#[test]
fn retention_prunes_closed_sightings_by_end_and_count() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(dir.path(), 0).unwrap();
    store.insert(&mut rec(5, 1)).unwrap();
    let all = [
        span(1, "a", 0, 10, false),
        span(2, "a", 20, 30, true),   // open, old
        span(3, "a", 40, 950, false), // started long ago, ended recently
        span(4, "a", 60, 70, false),
        span(5, "a", 960, 970, false),
        span(6, "a", 980, 990, false),
    ];
    for s in &all {
        store
            .put_sighting(s, Some(&jpeg(s.id as u8, 50)), None)
            .unwrap();
    }
    let now = u64::try_from((T + 1000) * S).unwrap();
    let r = store
        .prune_once(
            &policy(|p| p.sightings_max_age = Some(std::time::Duration::from_secs(100))),
            now,
        )
        .unwrap();
    assert_eq!((r.sightings.by_age, r.sightings.snapshots), (2, 2));
    let left = |store: &Store| {
        ids(&store
            .sightings(&SightingQuery {
                limit: 100,
                ..Default::default()
            })
            .unwrap()
            .sightings)
    };
    assert_eq!(left(&store), vec![6, 5, 3, 2]);
    for id in [1, 4] {
        assert_eq!(store.sighting_snapshot(id).unwrap(), None);
    }
    assert_eq!(store.sighting_snapshot_count(), 4);
    assert_eq!(store.len(), 1, "results are not sightings");

    // The count limit: the oldest closed go, the open one stays.
    let r = store
        .prune_once(&policy(|p| p.sightings_max_records = Some(2)), now)
        .unwrap();
    assert_eq!(r.sightings.by_records, 2);
    assert_eq!(left(&store), vec![6, 2]);
    // Only the open one and the newest are left: nothing more can go.
    let r = store
        .prune_once(&policy(|p| p.sightings_max_records = Some(1)), now)
        .unwrap();
    assert_eq!(left(&store), vec![2]);
    assert_eq!(r.sightings.by_records, 1);
    let r = store
        .prune_once(&policy(|p| p.sightings_max_records = Some(0)), now)
        .unwrap();
    assert_eq!((r.sightings.by_records, left(&store)), (0, vec![2]));
    // max_records = Some(0) is "keep none" here; settings map 0 to no limit.
    assert_eq!(store.last_sighting_id().unwrap(), 6);
    let (count, bytes, snaps) = (
        store.sighting_count(),
        store.sighting_bytes(),
        store.sighting_snapshot_count(),
    );
    store.sight.recount().unwrap();
    assert_eq!(
        (count, bytes, snaps),
        (
            store.sighting_count(),
            store.sighting_bytes(),
            store.sighting_snapshot_count()
        )
    );
    assert_eq!((count, snaps), (1, 1));
    // The open marker went with the deleted ones: only 2 is open.
    assert_eq!(ids(&store.close_open_sightings().unwrap()), vec![2]);
}

/// Would catch: sighting snapshots outside the snapshot budgets (they would
/// grow without bound), the budget deleting newer snapshots before older
/// ones of the other kind, a sighting itself deleted with its snapshot, and
/// the snapshot counters drifting.
#[test]
fn snapshot_budgets_take_the_oldest_of_both_kinds() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(dir.path(), 0).unwrap();
    let base = u64::try_from(T * S).unwrap();
    let mut results = Vec::new();
    for (i, off) in [10u64, 30].into_iter().enumerate() {
        let mut r = rec(base + off * 1_000_000_000, i as u64);
        store
            .insert_with_snapshot(&mut r, Some(&jpeg(9, 100)))
            .unwrap();
        results.push(r.id);
    }
    for (id, off) in [(1u64, 20i64), (2, 40)] {
        let mut s = span(id, "cat", off, off + 5, false);
        s.best_ns = (T + off) * S;
        store.put_sighting(&s, Some(&jpeg(1, 100)), None).unwrap();
    }
    let r = store
        .prune_once(&policy(|p| p.snapshot_max_count = Some(2)), 0)
        .unwrap();
    assert_eq!(r.snapshots, 2);
    assert_eq!(store.snapshot(&results[0]).unwrap(), None);
    assert_eq!(store.sighting_snapshot(1).unwrap(), None);
    assert!(store.snapshot(&results[1]).unwrap().is_some());
    assert!(store.sighting_snapshot(2).unwrap().is_some());
    assert!(store.sighting(1).unwrap().is_some(), "the sighting stays");
    assert_eq!(store.len(), 2, "the results stay");
    // The byte budget counts both kinds: one snapshot's worth left.
    let one = store.sighting_snapshot_bytes();
    let r = store
        .prune_once(&policy(|p| p.snapshot_max_bytes = Some(one)), 0)
        .unwrap();
    assert_eq!(r.snapshots, 1);
    assert_eq!(store.snapshot(&results[1]).unwrap(), None);
    assert!(store.sighting_snapshot(2).unwrap().is_some());
    assert_eq!(
        (store.snapshot_count(), store.sighting_snapshot_count()),
        (0, 1)
    );
}

/// Would catch: backups without sightings (a restore would lose them),
/// fields lost on the way, ids not kept (the restored store would hand out
/// an id again), an import that is not idempotent, `--since` ignored for
/// sightings, and a bad sighting line failing the whole import instead of
/// being listed by number.
#[test]
fn backups_carry_sightings() {
    use crate::store::backup::{export, import};
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(dir.path(), 0).unwrap();
    store.insert(&mut rec(1, 1)).unwrap();
    let mut a = span(3, "person", 0, 10, false);
    a.zone = Some("porch".into());
    a.best_result_id = Some("cd".repeat(16));
    let b = span(8, "cat", 5000, 5010, true);
    for s in [&a, &b] {
        store.put_sighting(s, Some(&jpeg(1, 50)), None).unwrap();
    }
    let mut out = Vec::new();
    assert_eq!(export(&store, None, &mut out, |_| {}).unwrap(), 3);

    let dir2 = tempfile::tempdir().unwrap();
    let restored = Store::open_with(dir2.path(), 0).unwrap();
    let r = import(&restored, std::io::Cursor::new(&out)).unwrap();
    assert_eq!(
        (r.added, r.sightings_added, r.invalid_count),
        (1, 2, 0),
        "{r:?}"
    );
    assert_eq!(restored.sighting(3).unwrap(), Some(a.clone()));
    assert_eq!(restored.sighting(8).unwrap(), Some(b.clone()));
    assert_eq!(restored.last_sighting_id().unwrap(), 8);
    let r = import(&restored, std::io::Cursor::new(&out)).unwrap();
    assert_eq!((r.sightings_added, r.sightings_skipped), (0, 2));
    // The open one restored is closed at the next start.
    assert_eq!(ids(&restored.close_open_sightings().unwrap()), vec![8]);

    // --since: only what was present at or after it.
    let since = u64::try_from((T + 100) * S).unwrap();
    let mut out = Vec::new();
    export(&store, Some(since), &mut out, |_| {}).unwrap();
    let text = String::from_utf8(out).unwrap();
    // (Issue 23: each sighting's best frame follows it on its own line.)
    let lines: Vec<&str> = text
        .lines()
        .skip(1)
        .filter(|l| !l.starts_with("{\"sighting_snapshot\":{\"sighting\":8,"))
        .collect();
    assert_eq!(lines.len(), 1, "{text}");
    assert!(lines[0].starts_with("{\"sighting\":{\"id\":8"), "{text}");

    // Bad sighting lines are listed; the good one is imported.
    let mut bad = serde_json::to_value(&b).unwrap();
    bad["id"] = 9.into();
    bad["end_ns"] = (b.start_ns - 1).into();
    let good = serde_json::to_value(span(10, "dog", 0, 1, false)).unwrap();
    let text = format!(
        "{}\n{}\n{{\"sighting\": 5}}\n{}\n",
        lines_header(),
        serde_json::json!({ "sighting": bad }),
        serde_json::json!({ "sighting": good })
    );
    let dir3 = tempfile::tempdir().unwrap();
    let fresh = Store::open_with(dir3.path(), 0).unwrap();
    let r = import(&fresh, std::io::Cursor::new(text)).unwrap();
    assert_eq!((r.sightings_added, r.invalid_count), (1, 2), "{r:?}");
    assert_eq!(
        r.invalid.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
        vec![2, 3]
    );
    assert!(r.invalid[0].1.contains("ends before it starts"), "{r:?}");
    assert_eq!(fresh.sighting(9).unwrap(), None);
}

fn lines_header() -> String {
    r#"{"spotter_export":1,"schema":1,"created_ns":0,"count_hint":0}"#.into()
}

/// Would catch: sighting counters that drift when the pruner deletes a
/// sighting's snapshot (or the sighting) while the tracker replaces it with
/// a better frame: the budgets would then be enforced against wrong
/// figures, forever (the counters are only recounted at open).
#[test]
fn counters_stay_exact_while_puts_race_the_pruner() {
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(Store::open_with(dir.path(), 0).unwrap());
    let writer = {
        let store = store.clone();
        std::thread::spawn(move || {
            for i in 0..400u64 {
                let id = i / 4 + 1;
                let mut s = span(id, "cat", i as i64, i as i64 + 1, i % 4 != 3);
                s.frames = i;
                let snap = jpeg(i as u8, 40 + (i as usize % 7) * 10);
                store.put_sighting(&s, Some(&snap), None).unwrap();
            }
        })
    };
    let policy = policy(|p| {
        p.snapshot_max_count = Some(5);
        p.sightings_max_records = Some(20);
    });
    while !writer.is_finished() {
        store.prune_once(&policy, 0).unwrap();
    }
    writer.join().unwrap();
    store.prune_once(&policy, 0).unwrap();
    let counted = (
        store.sighting_count(),
        store.sighting_bytes(),
        store.sighting_snapshot_count(),
        store.sighting_snapshot_bytes(),
    );
    store.sight.recount().unwrap();
    assert_eq!(
        counted,
        (
            store.sighting_count(),
            store.sighting_bytes(),
            store.sighting_snapshot_count(),
            store.sighting_snapshot_bytes()
        )
    );
    assert!(counted.0 <= 20 && counted.2 <= 5, "{counted:?}");
}
