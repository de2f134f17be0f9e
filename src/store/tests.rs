//!
//! The store's unit tests (over 600 lines because they cover every write path
//! and its failure modes against a real sled database in a temporary folder).
use std::collections::BTreeMap;

use super::*;
use crate::core::result::{ClassScore, StageLatency};
use std::sync::atomic::AtomicU64;

/// A stored classifier result ("cat" 0.78) at `ts_ns` for frame `frame_seq`;
/// the fixture of other modules' tests too (fuzz, doctor).
pub(crate) fn rec(ts_ns: u64, frame_seq: u64) -> ResultRecord {
    ResultRecord {
        id: String::new(),
        ts_ns,
        source: "files:/srv/demo".into(),
        origin: format!("/srv/demo/{frame_seq}.jpg"),
        frame_seq,
        model_sha256: "ab".repeat(32),
        runtime: "tflite".into(),
        classes: vec![ClassScore {
            index: 3,
            label: "cat".into(),
            raw: 200.0,
            score: 0.78,
        }],
        detections: vec![],
        image_width: 640,
        image_height: 480,
        latency: StageLatency {
            invoke_us: 1234,
            ..Default::default()
        },
        clock_synchronized: true,
        boottime_ns: 0,
        source_name: String::new(),
    }
}

fn ts_of(v: &[ResultRecord]) -> Vec<u64> {
    v.iter().map(|r| r.ts_ns).collect()
}

/// Snapshot of every file under `dir`: relative path → (bytes, mtime).
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (Vec<u8>, std::time::SystemTime)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let md = fs::metadata(&p).unwrap();
                out.insert(
                    p.strip_prefix(dir).unwrap().to_path_buf(),
                    (fs::read(&p).unwrap(), md.modified().unwrap()),
                );
            }
        }
    }
    out
}

// Catches: keys not big-endian (byte order ≠ time order), or id ≠ hex of key.
#[test]
fn ids_follow_time_order_and_encode_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    // 256 and 1 differ in byte order: little-endian keys would sort 256 first.
    for ts in [256u64, 1, 1 << 40, 65_535] {
        store.insert(&mut rec(ts, ts)).unwrap();
    }
    let all = store.range(None, None, 10).unwrap();
    assert_eq!(ts_of(&all), vec![1 << 40, 65_535, 256, 1]);
    for r in &all {
        assert_eq!(r.id.len(), ID_LEN);
        assert_eq!(&r.id[..16], format!("{:016x}", r.ts_ns));
        assert_eq!(store.get(&r.id).unwrap().as_ref(), Some(r));
    }
    assert_eq!(store.latest().unwrap().unwrap().ts_ns, 1 << 40);
    assert_eq!(store.len(), 4);
}

// Catches: since/until exclusive or swapped, oldest-first order, limit ignored.
#[test]
fn range_is_newest_first_with_inclusive_bounds_and_limit() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    for ts in (10..=100).step_by(10) {
        store.insert(&mut rec(ts, ts)).unwrap();
    }
    assert_eq!(
        ts_of(&store.range(Some(30), Some(60), 50).unwrap()),
        vec![60, 50, 40, 30]
    );
    assert_eq!(
        ts_of(&store.range(Some(30), Some(60), 2).unwrap()),
        vec![60, 50]
    );
    assert_eq!(
        ts_of(&store.range(Some(85), None, 50).unwrap()),
        vec![100, 90]
    );
    assert_eq!(
        ts_of(&store.range(None, Some(25), 50).unwrap()),
        vec![20, 10]
    );
    assert_eq!(
        ts_of(&store.range(None, None, 3).unwrap()),
        vec![100, 90, 80]
    );
    assert!(store.range(Some(61), Some(69), 50).unwrap().is_empty());
    assert!(store.range(Some(60), Some(30), 50).unwrap().is_empty());
    assert!(store.range(None, None, 0).unwrap().is_empty());
}

// Catches: ids derived from the timestamp alone (second insert would overwrite the first).
#[test]
fn same_timestamp_records_get_distinct_ids() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut a = rec(42, 1);
    let mut b = rec(42, 2);
    store.insert(&mut a).unwrap();
    store.insert(&mut b).unwrap();
    assert_ne!(a.id, b.id);
    assert_eq!(store.len(), 2);
    assert_eq!(store.get(&a.id).unwrap().unwrap().frame_seq, 1);
    assert_eq!(store.get(&b.id).unwrap().unwrap().frame_seq, 2);
    // Insertion order breaks the tie: the later insert is "newer".
    assert_eq!(store.latest().unwrap().unwrap().frame_seq, 2);
}

// Catches: data lost on restart, count not recovered, sequence reused after reopen.
#[test]
fn reopen_keeps_records_and_ids_stay_unique() {
    let dir = tempfile::tempdir().unwrap();
    let first = {
        let store = Store::open(dir.path()).unwrap();
        let mut r = rec(7, 1);
        store.insert(&mut r).unwrap();
        store.flush().unwrap();
        r
    };
    let store = reopen(dir.path());
    assert_eq!(store.len(), 1);
    assert_eq!(store.get(&first.id).unwrap(), Some(first.clone()));
    let mut again = rec(7, 2);
    store.insert(&mut again).unwrap();
    assert_ne!(again.id, first.id);
    assert_eq!(store.len(), 2);
}

// Catches: a newer store opened (and possibly rewritten) by an older build.
#[test]
fn future_schema_is_refused_and_files_untouched() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        store.insert(&mut rec(1, 1)).unwrap();
        store.flush().unwrap();
    }
    fs::write(
        dir.path().join(SCHEMA_FILE),
        format!("{}\n", SCHEMA_VERSION + 1),
    )
    .unwrap();
    let before = snapshot(dir.path());
    let err = Store::open(dir.path()).unwrap_err();
    assert!(matches!(err, StoreError::FutureSchema { found, .. } if found == SCHEMA_VERSION + 1));
    let msg = err.to_string();
    assert!(msg.contains(&dir.path().display().to_string()), "{msg}");
    assert!(msg.contains("schema version"), "{msg}");
    assert_eq!(snapshot(dir.path()), before);
}

// Catches: opening a foreign/partial directory as if it were ours.
#[test]
fn garbage_schema_file_or_missing_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(Store::open(dir.path()).unwrap());
    fs::write(dir.path().join(SCHEMA_FILE), "banana").unwrap();
    assert!(matches!(
        Store::open(dir.path()),
        Err(StoreError::BadSchema { .. })
    ));
    fs::remove_file(dir.path().join(SCHEMA_FILE)).unwrap();
    assert!(matches!(
        Store::open(dir.path()),
        Err(StoreError::BadSchema { .. })
    ));
}

// Catches: malformed ids reaching sled or answering "not found" instead of a distinct error.
#[test]
fn malformed_ids_are_a_distinct_error() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let bad_ids = [
        "".into(),
        "abc".into(),
        "0".repeat(31),
        "0".repeat(33),
        "g".repeat(32),
        "é".repeat(16),
    ];
    for bad in &bad_ids {
        assert!(
            matches!(store.get(bad), Err(StoreError::MalformedId { .. })),
            "{bad:?} should be malformed"
        );
    }
    // Well-formed but absent is not an error.
    assert_eq!(store.get(&"0".repeat(32)).unwrap(), None);
    assert_eq!(store.get(&"A".repeat(32)).unwrap(), None);
}

// Catches: a probe that does not actually write, or a count that a probe changes.
#[test]
fn check_writable_writes_without_adding_records() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.check_writable().unwrap();
    assert_eq!(store.meta.get(PROBE_KEY).unwrap().map(|v| v.len()), Some(8));
    assert_eq!(store.len(), 0);
    assert!(store.latest().unwrap().is_none());
    assert!(store.size_on_disk() > 0);
}

// Catches: a corrupt value breaking every listing instead of being skipped.
#[test]
fn corrupt_record_is_an_error_for_get_but_skipped_by_range() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut good = rec(5, 1);
    store.insert(&mut good).unwrap();
    let bad_key = make_key(9, 0);
    store
        .results
        .insert(bad_key, vec![VALUE_FORMAT_JSON, b'{'])
        .unwrap();
    assert!(matches!(
        store.get(&hex::encode(bad_key)),
        Err(StoreError::Corrupt { .. })
    ));
    assert_eq!(store.range(None, None, 10).unwrap(), vec![good]);
}

// Catches: pruning the newest instead of the oldest, or a record count that drifts.
#[test]
fn retain_newest_deletes_the_oldest() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    for ts in 1..=(PRUNE_BATCH as u64 + 5) {
        store.insert(&mut rec(ts, ts)).unwrap();
    }
    assert_eq!(store.retain_newest(3).unwrap(), PRUNE_BATCH + 2);
    assert_eq!(store.len(), 3);
    let left = PRUNE_BATCH as u64 + 5;
    assert_eq!(
        ts_of(&store.range(None, None, 10).unwrap()),
        vec![left, left - 1, left - 2]
    );
    assert_eq!(store.retain_newest(3).unwrap(), 0);
    drop(store);
    assert_eq!(reopen(dir.path()).len(), 3, "count after reopen");
}

// Catches: a second opener (CLI export while the daemon runs) getting an opaque sled I/O error.
#[test]
fn a_store_in_use_is_reported_as_locked() {
    let dir = tempfile::tempdir().unwrap();
    let first = Store::open(dir.path()).unwrap();
    // sled's lock is a flock on its own file description, so a second open
    // in the same process conflicts just like a second process would.
    let err = Store::open(dir.path()).unwrap_err();
    assert!(matches!(err, StoreError::Locked { .. }), "{err}");
    assert!(err.to_string().contains("/api/v1/backup"), "{err}");
    drop(first);
    // sled lets go of the lock a moment after the last handle drops (under
    // qemu-user on aarch64 an open right after the drop once still found it
    // locked): wait as `reopen` does, which fails if it is never released.
    wait_until_free(dir.path());
    assert!(Store::open(dir.path()).is_ok(), "lock released after drop");
}

fn labelled(ts_ns: u64, labels: &[(&str, f32)], model: &str) -> ResultRecord {
    let mut r = rec(ts_ns, ts_ns);
    r.classes = labels
        .iter()
        .enumerate()
        .map(|(i, (l, s))| ClassScore {
            index: i,
            label: (*l).into(),
            raw: 0.0,
            score: *s,
        })
        .collect();
    r.model_sha256 = model.into();
    r
}

/// Every entry of `tree` as (key, value).
fn entries(tree: &sled::Tree) -> Vec<(Vec<u8>, Vec<u8>)> {
    tree.iter()
        .map(|i| i.unwrap())
        .map(|(k, v)| (k.to_vec(), v.to_vec()))
        .collect()
}

// Catches: label/model filters ignored, min_score compared against the wrong label's score,
// detections not indexed, or filters combined with OR.
#[test]
fn queries_filter_by_label_score_model_and_time() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let (m1, m2) = ("11".repeat(32), "22".repeat(32));
    store
        .insert(&mut labelled(10, &[("cat", 0.9), ("dog", 0.1)], &m1))
        .unwrap();
    store
        .insert(&mut labelled(20, &[("dog", 0.7), ("cat", 0.2)], &m1))
        .unwrap();
    store
        .insert(&mut labelled(30, &[("cat", 0.5)], &m2))
        .unwrap();
    let mut det = labelled(40, &[], &m2);
    det.detections = vec![crate::core::result::Detection {
        class_index: 0,
        label: "cat".into(),
        score: 0.95,
        x: 0.0,
        y: 0.0,
        width: 1.0,
        height: 1.0,
    }];
    store.insert(&mut det).unwrap();
    let q = |f: &dyn Fn(&mut Query)| {
        let mut q = Query::newest(100);
        f(&mut q);
        ts_of(&store.query(&q).unwrap().results)
    };
    assert_eq!(q(&|_| {}), vec![40, 30, 20, 10]);
    assert_eq!(q(&|q| q.label = Some("cat".into())), vec![40, 30, 20, 10]);
    assert_eq!(q(&|q| q.label = Some("dog".into())), vec![20, 10]);
    assert_eq!(
        q(&|q| q.label = Some("ca".into())),
        Vec::<u64>::new(),
        "prefix of a label is not the label"
    );
    assert_eq!(
        q(&|q| {
            q.label = Some("cat".into());
            q.min_score = Some(0.6)
        }),
        vec![40, 10]
    );
    // The dog score of record 10 is 0.1: its cat score must not qualify it.
    assert_eq!(
        q(&|q| {
            q.label = Some("dog".into());
            q.min_score = Some(0.5)
        }),
        vec![20]
    );
    assert_eq!(
        q(&|q| q.min_score = Some(0.8)),
        vec![40, 10],
        "best score without a label"
    );
    assert_eq!(q(&|q| q.model = Some(m2.clone())), vec![40, 30]);
    assert_eq!(
        q(&|q| {
            q.model = Some(m1.clone());
            q.label = Some("cat".into());
            q.min_score = Some(0.3)
        }),
        vec![10]
    );
    assert_eq!(
        q(&|q| {
            q.label = Some("cat".into());
            q.since = Some(20);
            q.until = Some(30)
        }),
        vec![30, 20]
    );
    assert_eq!(
        q(&|q| {
            q.model = Some(m1.clone());
            q.until = Some(15)
        }),
        vec![10]
    );
}

// Catches: cursors that repeat the boundary record, skip records sharing a timestamp,
// or never end.
#[test]
fn cursor_pages_cover_everything_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    for i in 0..50u64 {
        // Pairs of records share a timestamp.
        store
            .insert(&mut labelled(i / 2, &[("cat", 0.9)], "m"))
            .unwrap();
    }
    for label in [None, Some("cat".to_string())] {
        let mut q = Query::newest(7);
        q.label = label;
        let mut seen = Vec::new();
        let mut pages = 0;
        loop {
            let page = store.query(&q).unwrap();
            pages += 1;
            seen.extend(page.results.iter().map(|r| r.id.clone()));
            match page.next_cursor {
                Some(c) => q.cursor = Some(c),
                None => break,
            }
            assert!(pages < 100, "paging does not end");
        }
        let all: Vec<String> = store
            .range(None, None, 100)
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(seen, all, "label filter {:?}", q.label);
    }
}

// Catches: retention leaving index entries or snapshots behind, or byte counters that drift.
#[test]
fn retention_removes_index_entries_and_snapshots_with_records() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let jpeg = Snapshot {
        bytes: vec![0xFF, 0xD8, 0xFF, 0xE0, 1, 2, 3],
    };
    for ts in 1..=10 {
        let snap = (ts % 2 == 0).then_some(&jpeg);
        store
            .insert_with_snapshot(&mut labelled(ts, &[("cat", 0.9), ("dog", 0.4)], "m"), snap)
            .unwrap();
    }
    assert_eq!(entries(&store.by_label).len(), 20);
    assert_eq!(entries(&store.by_model).len(), 10);
    assert_eq!(store.snapshot_count(), 5);
    store.retain_newest(3).unwrap();
    // Only the newest 3 records' entries remain: 8, 9 and 10.
    let keys: Vec<[u8; 16]> = store
        .results
        .iter()
        .keys()
        .map(|k| k.unwrap().as_ref().try_into().unwrap())
        .collect();
    assert_eq!(keys.len(), 3);
    for (k, _) in entries(&store.by_label)
        .iter()
        .chain(entries(&store.by_model).iter())
    {
        assert!(
            keys.iter().any(|rk| k.ends_with(rk)),
            "dangling index entry {}",
            hex::encode(k)
        );
    }
    assert_eq!(entries(&store.by_label).len(), 6);
    assert_eq!(store.snapshot_count(), 2, "snapshots of 8 and 10");
    assert_eq!(entries(&store.snapshots).len(), 2);
    let before = store.data_bytes();
    store.retain_newest(0).unwrap();
    assert_eq!(
        (store.data_bytes(), store.snapshot_bytes()),
        (0, 0),
        "from {before}"
    );
    assert!(entries(&store.by_label).is_empty() && entries(&store.by_model).is_empty());
    drop(store);
    let store = reopen(dir.path());
    assert_eq!(
        (store.len(), store.data_bytes(), store.snapshot_count()),
        (0, 0, 0)
    );
}

// Catches: snapshots served with the wrong content type, a missing one reported as present,
// or snapshot limits deleting records instead of just snapshots.
#[test]
fn snapshots_are_kept_served_and_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let png = Snapshot {
        bytes: b"\x89PNG\r\n\x1a\nrest".to_vec(),
    };
    let jpeg = Snapshot {
        bytes: vec![0xFF, 0xD8, 0xFF, 0xDB, 9, 9],
    };
    let mut a = rec(1, 1);
    let mut b = rec(2, 2);
    let mut c = rec(3, 3);
    assert!(store.insert_with_snapshot(&mut a, Some(&png)).unwrap());
    assert!(!store.insert_with_snapshot(&mut b, None).unwrap());
    assert!(store.insert_with_snapshot(&mut c, Some(&jpeg)).unwrap());
    assert_eq!(
        store.snapshot(&a.id).unwrap(),
        Some(("image/png", png.bytes.clone()))
    );
    assert_eq!(store.snapshot(&b.id).unwrap(), None);
    assert_eq!(
        store.snapshot(&c.id).unwrap(),
        Some(("image/jpeg", jpeg.bytes.clone()))
    );
    assert!(matches!(
        store.snapshot("nope"),
        Err(StoreError::MalformedId { .. })
    ));
    let policy = Retention {
        snapshot_max_count: Some(1),
        ..Retention::unlimited()
    };
    let report = store.prune_once(&policy, 0).unwrap();
    assert_eq!((report.snapshots, report.deleted()), (1, 0));
    assert_eq!(
        store.snapshot(&a.id).unwrap(),
        None,
        "the oldest snapshot goes first"
    );
    assert!(store.snapshot(&c.id).unwrap().is_some());
    assert_eq!(store.len(), 3, "records stay");
    let one = store.snapshot_bytes();
    assert_eq!(one, (16 + 1 + jpeg.bytes.len()) as u64);
    let policy = Retention {
        snapshot_max_bytes: Some(one - 1),
        ..Retention::unlimited()
    };
    assert_eq!(store.prune_once(&policy, 0).unwrap().snapshots, 1);
    assert_eq!((store.snapshot_count(), store.len()), (0, 3));
}

// Catches: a rule that ignores labels or scores, a rate limit that never refills,
// or snapshots taken while disabled.
#[test]
fn snapshot_gate_applies_labels_scores_and_rate() {
    let now = std::time::Instant::now();
    let cat = labelled(1, &[("cat", 0.8), ("dog", 0.3)], "m");
    let mut off = SnapshotGate::new(SnapshotRule::off());
    assert!(!off.admit(&cat, now));
    let rule = |labels: &[&str], min: f32, rate: u32| SnapshotRule {
        enabled: true,
        labels: labels.iter().map(|s| s.to_string()).collect(),
        min_score: min,
        max_per_minute: rate,
    };
    assert!(rule(&["cat"], 0.5, 0).matches(&cat));
    assert!(!rule(&["dog"], 0.5, 0).matches(&cat), "dog scores 0.3 only");
    assert!(rule(&[], 0.7, 0).matches(&cat));
    assert!(!rule(&[], 0.9, 0).matches(&cat));
    let mut gate = SnapshotGate::new(rule(&["cat"], 0.5, 2));
    assert!(gate.admit(&cat, now));
    assert!(gate.admit(&cat, now + std::time::Duration::from_secs(1)));
    assert!(
        !gate.admit(&cat, now + std::time::Duration::from_secs(2)),
        "third in a minute"
    );
    assert!(
        gate.admit(&cat, now + std::time::Duration::from_secs(61)),
        "the window moved on"
    );
}

// Catches: a version 1 store opened without building its indexes (label queries empty),
// or the schema file not advanced after migration.
#[test]
fn schema_1_store_is_migrated_with_indexes_built() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        for ts in 1..=100 {
            store
                .insert(&mut labelled(
                    ts,
                    &[(if ts % 3 == 0 { "cat" } else { "dog" }, 0.9)],
                    "m",
                ))
                .unwrap();
        }
        // What a version 1 build left: records without indexes.
        store.by_label.clear().unwrap();
        store.by_model.clear().unwrap();
        store.flush().unwrap();
    }
    fs::write(dir.path().join(SCHEMA_FILE), "1\n").unwrap();
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(
        fs::read_to_string(dir.path().join(SCHEMA_FILE))
            .unwrap()
            .trim(),
        SCHEMA_VERSION.to_string()
    );
    let mut q = Query::newest(1000);
    q.label = Some("cat".into());
    assert_eq!(store.query(&q).unwrap().results.len(), 33);
    q.label = None;
    q.model = Some("m".into());
    assert_eq!(store.query(&q).unwrap().results.len(), 100);
    assert_eq!(store.len(), 100);
}

/// A free-space probe the test sets by hand.
#[derive(Debug, Clone)]
struct FakeDisk(std::sync::Arc<AtomicU64>);

impl FreeSpace for FakeDisk {
    fn free_bytes(&self, _: &Path) -> io::Result<u64> {
        Ok(self.0.load(Ordering::Relaxed))
    }
}

// Catches: writes continuing below the floor, snapshots kept when space is low, reads
// failing while full, or writes not resuming when space returns.
#[test]
fn disk_guard_pauses_snapshots_then_results_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let free = std::sync::Arc::new(AtomicU64::new(10_000_000));
    let guard = DiskGuard::new(
        Box::new(FakeDisk(free.clone())),
        1_000_000,
        std::time::Duration::ZERO,
    );
    let store = Store::open(dir.path()).unwrap().with_guard(guard);
    let jpeg = Snapshot {
        bytes: vec![0xFF, 0xD8, 0xFF, 0xE0],
    };
    assert!(store
        .insert_with_snapshot(&mut rec(1, 1), Some(&jpeg))
        .unwrap());
    free.store(1_500_000, Ordering::Relaxed); // below the snapshot floor (2 MB)
    let mut low = rec(2, 2);
    assert!(
        !store.insert_with_snapshot(&mut low, Some(&jpeg)).unwrap(),
        "snapshot dropped"
    );
    assert_eq!(store.snapshot(&low.id).unwrap(), None);
    assert!(matches!(
        store.guard().current(),
        PressureLevel::Low {
            free: 1_500_000,
            floor: 2_000_000
        }
    ));
    free.store(999_999, Ordering::Relaxed);
    let err = store.insert(&mut rec(3, 3)).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::DiskFull {
                free: 999_999,
                floor: 1_000_000,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("min_free_bytes"), "{err}");
    assert!(matches!(
        store.check_writable(),
        Err(StoreError::DiskFull { .. })
    ));
    assert_eq!(store.len(), 2);
    assert_eq!(
        store.range(None, None, 10).unwrap().len(),
        2,
        "reads still work"
    );
    assert_eq!(
        (
            store.guard().refused_results(),
            store.guard().refused_snapshots()
        ),
        (1, 1)
    );
    free.store(5_000_000, Ordering::Relaxed);
    store.insert(&mut rec(4, 4)).unwrap();
    store.check_writable().unwrap();
    assert_eq!(store.guard().current(), PressureLevel::Ok);
    assert_eq!(store.len(), 3);
}

/// A filesystem the test fills itself: each admitted write takes `amp` times
/// its logical bytes at once, as a (pessimistic) sled would.
fn fill_until_refused(amp: u64, write: u64, floor: u64, size: u64) -> (u64, u64, u64) {
    let free = std::sync::Arc::new(AtomicU64::new(size));
    // A probe interval far longer than the test: only the byte accounting
    // can make the guard look again.
    let guard = DiskGuard::new(
        Box::new(FakeDisk(free.clone())),
        floor,
        std::time::Duration::from_secs(3600),
    );
    let (mut lowest, mut admitted) = (size, 0u64);
    for _ in 0..100_000 {
        match guard.admit(Path::new("/"), write, None) {
            crate::store::pressure::Admission::Refused { .. } => break,
            crate::store::pressure::Admission::All(r)
            | crate::store::pressure::Admission::ResultOnly(r) => {
                let now = free.load(Ordering::Relaxed).saturating_sub(write * amp);
                free.store(now, Ordering::Relaxed);
                lowest = lowest.min(now);
                admitted += 1;
                drop(r);
            }
        }
    }
    (lowest, admitted, guard.probes())
}

// Catches: the floors checked only once per interval (the issue: a small
// filesystem written at 30 fps went from above both floors to ENOSPC within
// the probe interval), an amplification estimate that never learns a
// write-heavy database, and a guard so cautious it stops far above the floor.
#[test]
fn the_floor_holds_between_probes_at_any_write_rate() {
    let (floor, size) = (4u64 << 20, 16u64 << 20);
    for amp in [1u64, 3, 10, 30] {
        for write in [600u64, 50_000, 300_000] {
            let (lowest, admitted, probes) = fill_until_refused(amp, write, floor, size);
            assert!(
                lowest + write * amp >= floor,
                "amp {amp}, write {write}: free fell to {lowest}, floor {floor}"
            );
            assert!(
                admitted > 0 && probes > 1,
                "amp {amp}, write {write}: {admitted} {probes}"
            );
            // Stopped near the floor, not at the first sign of writing:
            // within the largest of one write's estimate at the maximal
            // amplification and a tenth of the headroom.
            let slack = (write * crate::store::pressure::AMP_MAX as u64).max((size - floor) / 10);
            assert!(
                lowest <= floor + slack,
                "amp {amp}, write {write}: stopped at {lowest}, floor {floor}"
            );
        }
    }
}

// Catches: a store that keeps calling sled after an ENOSPC (sled 0.34 then
// fails every write until reopened, so the guard would flap between full and
// recovered, logging each time), refused writes not counted in the stats,
// reads failing meanwhile, or a restart requested while the disk is still
// full (a systemd restart loop) or never requested once space is back, and
// a shutdown flush or pruner pass that calls the poisoned sled.
#[test]
fn enospc_poisons_the_store_counts_refusals_and_asks_for_a_restart_when_space_returns() {
    let dir = tempfile::tempdir().unwrap();
    let free = std::sync::Arc::new(AtomicU64::new(100 << 20));
    let guard = DiskGuard::new(
        Box::new(FakeDisk(free.clone())),
        1_000,
        std::time::Duration::ZERO,
    );
    let store = Store::open(dir.path()).unwrap().with_guard(guard);
    let mut kept = rec(1, 1);
    store.insert(&mut kept).unwrap();
    let before = store.stats();
    assert_eq!(
        (before.records, before.written_bytes > 0, before.poisoned),
        (1, true, false)
    );

    // sled's log writer hits ENOSPC (injected: the error sled returns).
    free.store(0, Ordering::Relaxed);
    let enospc = sled::Error::Io(io::Error::from_raw_os_error(nix::libc::ENOSPC));
    assert!(matches!(
        store.write_err(enospc),
        StoreError::DiskFull { .. }
    ));
    assert!(
        !store.restart_due(),
        "restart requested while the disk is full"
    );
    // Space returns: the guard would allow writes, but sled would refuse.
    free.store(100 << 20, Ordering::Relaxed);
    for i in 2..5 {
        let err = store.insert(&mut rec(i, i)).unwrap_err();
        assert!(matches!(err, StoreError::Poisoned { .. }), "{err}");
        assert!(err.to_string().contains("restarts itself"), "{err}");
    }
    assert!(matches!(
        store.check_writable(),
        Err(StoreError::Poisoned { .. })
    ));
    assert_eq!(
        store.get(&kept.id).unwrap().map(|r| r.frame_seq),
        Some(1),
        "reads still work"
    );
    let s = store.stats();
    assert_eq!(
        (s.records, s.refused_results, s.enospc_errors, s.poisoned),
        (1, 3, 1, true)
    );
    assert_eq!(
        s.written_bytes, before.written_bytes,
        "nothing written while poisoned"
    );
    assert!(
        store.restart_due(),
        "no restart requested once space is back"
    );
    // Shutdown must not hand the poisoned database to sled again (its flush
    // blocked a daemon's exit in CI), and the pruner leaves it alone.
    assert!(matches!(store.flush(), Err(StoreError::Poisoned { .. })));
    let policy = crate::store::retention::Retention {
        max_records: Some(0),
        ..crate::store::retention::Retention::unlimited()
    };
    assert_eq!(store.prune_once(&policy, 0).unwrap().deleted(), 0);
    assert_eq!(store.len(), 1);
    // A free-space figure between the configured floor and the restart
    // minimum is not "space back".
    free.store(RESTART_MIN_FREE - 1, Ordering::Relaxed);
    assert!(!store.restart_due());
}

// Catches: wear figures that do not move with writes (metrics stuck at 0)
// or snapshots not counted separately.
#[test]
fn stats_count_written_and_snapshot_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let s0 = store.stats();
    assert_eq!(
        (
            s0.written_bytes,
            s0.snapshot_written_bytes,
            s0.size_growth_bytes
        ),
        (0, 0, 0)
    );
    store.insert(&mut rec(1, 1)).unwrap();
    let s1 = store.stats();
    assert!(
        s1.written_bytes > 0 && s1.snapshot_written_bytes == 0,
        "{s1:?}"
    );
    let jpeg = Snapshot {
        bytes: vec![0xAB; 10_000],
    };
    assert!(store
        .insert_with_snapshot(&mut rec(2, 2), Some(&jpeg))
        .unwrap());
    let s2 = store.stats();
    assert!(s2.snapshot_written_bytes >= 10_000, "{s2:?}");
    assert!(
        s2.written_bytes >= s1.written_bytes + s2.snapshot_written_bytes,
        "{s2:?}"
    );
    for i in 3..2_000 {
        store.insert(&mut rec(i, i)).unwrap();
    }
    store.flush().unwrap();
    // The size is measured by the pruner's pass (stats stay O(1)).
    store.size_on_disk();
    assert!(store.stats().size_growth_bytes > 0, "{:?}", store.stats());
}

/// Open the store again in the same process. sled releases its file lock
/// from its background flusher shortly after the last handle drops, so an
/// immediate reopen can briefly see `Locked`; a new process never does.
fn reopen(dir: &std::path::Path) -> Store {
    wait_until_free(dir);
    Store::open(dir).unwrap()
}

/// Wait until no handle in this process still holds the store's sled lock
/// (see [`reopen`]), without taking the store: other modules' tests call it
/// between dropping a store and a check that opens it itself.
pub(crate) fn wait_until_free(dir: &std::path::Path) {
    use nix::fcntl::{Flock, FlockArg};
    let lock_file = dir.join(DB_DIR).join("db");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let file = std::fs::File::open(&lock_file).unwrap();
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            // Dropping the guard unlocks at once.
            Ok(_free) => return,
            Err((_, nix::errno::Errno::EWOULDBLOCK)) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(50))
            }
            Err((_, e)) => panic!("{} still locked: {e}", lock_file.display()),
        }
    }
}

// Catches: disk pressure that never frees space (the issue's "prune
// harder"), a pass that deletes the newest results instead of the oldest,
// an episode that wipes the whole history (the budget), pruning while the
// disk has room, and an episode whose budget is not renewed after space
// returned.
#[test]
fn disk_pressure_deletes_the_oldest_within_a_budget_per_episode() {
    use crate::store::retention::{
        PressurePrune, PRESSURE_PRUNE_MAX_PERCENT, PRESSURE_PRUNE_STEP_PERCENT,
    };
    let dir = tempfile::tempdir().unwrap();
    let free = std::sync::Arc::new(AtomicU64::new(1 << 30));
    let guard = DiskGuard::new(
        Box::new(FakeDisk(free.clone())),
        1_000,
        std::time::Duration::ZERO,
    );
    let store = Store::open(dir.path()).unwrap().with_guard(guard);
    for i in 1..=200 {
        store.insert(&mut rec(i * 1_000, i)).unwrap();
    }
    let mut p = PressurePrune::default();
    assert_eq!(p.pass(&store).unwrap(), 0, "pruned with room on the disk");
    assert!(!p.active());

    free.store(1_500, Ordering::Relaxed); // below the snapshot floor only
    let step = 200 * PRESSURE_PRUNE_STEP_PERCENT / 100;
    assert_eq!(p.pass(&store).unwrap(), step);
    assert!(p.active());
    let seqs: Vec<u64> = store
        .range(None, None, 1000)
        .unwrap()
        .iter()
        .map(|r| r.frame_seq)
        .collect();
    assert_eq!(
        (seqs.iter().min(), seqs.iter().max()),
        (Some(&(step + 1)), Some(&200)),
        "not the oldest results deleted"
    );
    let mut total = step;
    for _ in 0..20 {
        total += p.pass(&store).unwrap();
    }
    assert_eq!(
        total,
        200 * PRESSURE_PRUNE_MAX_PERCENT / 100,
        "the episode's budget was not respected"
    );
    assert_eq!(store.len() as u64, 200 - total);

    // Space returns: the episode ends; a new one gets a new budget.
    free.store(1 << 30, Ordering::Relaxed);
    assert_eq!(p.pass(&store).unwrap(), 0);
    assert!(!p.active());
    free.store(10, Ordering::Relaxed);
    assert!(
        p.pass(&store).unwrap() > 0,
        "a second episode deleted nothing"
    );
}

// Catches: a recovery point reported before the flush that makes it true
// (durable_through ahead of the disk), one that counts a record stored after
// the flush began, one that moves backwards, or a flusher that never runs
// (the point would stay where the last explicit flush left it).
#[test]
fn durable_through_follows_completed_flushes() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(dir.path(), 0).unwrap(); // no flusher: explicit flushes only
    assert_eq!(store.durable_through(), None);
    let mut a = rec(1_000, 1);
    store.insert(&mut a).unwrap();
    assert_eq!(store.durable_through(), None, "durable before any flush");
    store.flush().unwrap();
    assert_eq!(store.durable_through().as_deref(), Some(a.id.as_str()));
    let mut b = rec(2_000, 2);
    store.insert(&mut b).unwrap();
    assert_eq!(
        store.durable_through().as_deref(),
        Some(a.id.as_str()),
        "ahead of the disk"
    );
    // An older key stored later (an import) does not move the point back.
    store.insert(&mut rec(500, 3)).unwrap();
    store.flush().unwrap();
    assert_eq!(store.durable_through().as_deref(), Some(b.id.as_str()));
    assert_eq!(
        store.stats().durable_through.as_deref(),
        Some(b.id.as_str())
    );
    drop(store);

    wait_until_free(dir.path());
    let store = Store::open_with(dir.path(), 10).unwrap();
    let mut c = rec(3_000, 4);
    store.insert(&mut c).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while store.durable_through().as_deref() != Some(c.id.as_str()) {
        assert!(
            std::time::Instant::now() < deadline,
            "the flusher never made {} durable",
            c.id
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert!(store.flushes() > 0);
}
