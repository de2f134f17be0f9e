use std::collections::BTreeMap;

use super::*;
use crate::result::{ClassScore, StageLatency};

fn rec(ts_ns: u64, frame_seq: u64) -> ResultRecord {
    ResultRecord {
        id: String::new(),
        ts_ns,
        source: "files:/srv/demo".into(),
        origin: format!("/srv/demo/{frame_seq}.jpg"),
        frame_seq,
        model_sha256: "ab".repeat(32),
        runtime: "tflite".into(),
        classes: vec![ClassScore { index: 3, label: "cat".into(), raw: 200.0, score: 0.78 }],
        detections: vec![],
        image_width: 640,
        image_height: 480,
        latency: StageLatency { invoke_us: 1234, ..Default::default() },
        clock_synchronized: true,
        boottime_ns: 0,
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
    assert_eq!(ts_of(&store.range(Some(30), Some(60), 50).unwrap()), vec![60, 50, 40, 30]);
    assert_eq!(ts_of(&store.range(Some(30), Some(60), 2).unwrap()), vec![60, 50]);
    assert_eq!(ts_of(&store.range(Some(85), None, 50).unwrap()), vec![100, 90]);
    assert_eq!(ts_of(&store.range(None, Some(25), 50).unwrap()), vec![20, 10]);
    assert_eq!(ts_of(&store.range(None, None, 3).unwrap()), vec![100, 90, 80]);
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
    let store = Store::open(dir.path()).unwrap();
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
    fs::write(dir.path().join(SCHEMA_FILE), format!("{}\n", SCHEMA_VERSION + 1)).unwrap();
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
    assert!(matches!(Store::open(dir.path()), Err(StoreError::BadSchema { .. })));
    fs::remove_file(dir.path().join(SCHEMA_FILE)).unwrap();
    assert!(matches!(Store::open(dir.path()), Err(StoreError::BadSchema { .. })));
}

// Catches: malformed ids reaching sled or answering "not found" instead of a distinct error.
#[test]
fn malformed_ids_are_a_distinct_error() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let bad_ids =
        ["".into(), "abc".into(), "0".repeat(31), "0".repeat(33), "g".repeat(32), "é".repeat(16)];
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
    store.results.insert(bad_key, vec![VALUE_FORMAT_JSON, b'{']).unwrap();
    assert!(matches!(store.get(&hex::encode(bad_key)), Err(StoreError::Corrupt { .. })));
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
    assert_eq!(ts_of(&store.range(None, None, 10).unwrap()), vec![left, left - 1, left - 2]);
    assert_eq!(store.retain_newest(3).unwrap(), 0);
    drop(store);
    assert_eq!(Store::open(dir.path()).unwrap().len(), 3, "count after reopen");
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
    assert!(Store::open(dir.path()).is_ok(), "lock released on drop");
}
