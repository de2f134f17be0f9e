//! Retention: age, count and size limits on a fake clock, and the pruner thread.

use std::sync::Arc;
use std::time::Duration;

use spotter::core::result::ResultRecord;
use spotter::store::{Pruner, Retention, Store, PRUNE_BATCH};

const SEC: u64 = 1_000_000_000;
/// Base timestamp: every test timestamp has the same number of digits, so
/// every encoded record has the same size.
const T0: u64 = 1_700_000_000 * SEC;

fn rec(ts_ns: u64) -> ResultRecord {
    crate::cat_record(ts_ns, 7)
}

/// A store holding one record per second at T0+1s ..= T0+n s.
fn store_with(n: u64) -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    for i in 1..=n {
        store.insert(&mut rec(T0 + i * SEC)).unwrap();
    }
    (dir, store)
}

/// Timestamps left, oldest first, as seconds after T0.
fn left(store: &Store) -> Vec<u64> {
    store
        .iter_since(None)
        .map(|r| (r.unwrap().ts_ns - T0) / SEC)
        .collect()
}

fn only(f: impl FnOnce(&mut Retention)) -> Retention {
    let mut r = Retention::unlimited();
    f(&mut r);
    r
}

// Catches: age cutoff off by one, newest deleted instead of oldest, wrong unit.
#[test]
fn max_age_alone_deletes_exactly_the_records_older_than_the_cutoff() {
    let (_d, store) = store_with(10);
    let policy = only(|r| r.max_age = Some(Duration::from_secs(3)));
    let report = store.prune_once(&policy, T0 + 10 * SEC).unwrap();
    // Cutoff is T0+7s; the record exactly at the cutoff is kept.
    assert_eq!(left(&store), vec![7, 8, 9, 10]);
    assert_eq!(
        (report.by_age, report.by_records, report.by_bytes),
        (6, 0, 0)
    );
    assert_eq!(store.len(), 4);
    // Idempotent at the same time; the clock moving on prunes more.
    assert_eq!(
        store.prune_once(&policy, T0 + 10 * SEC).unwrap().deleted(),
        0
    );
    assert_eq!(store.prune_once(&policy, T0 + 12 * SEC).unwrap().by_age, 2);
    assert_eq!(left(&store), vec![9, 10]);
}

// Catches: a clock still in 1970 (now < max_age) underflowing and deleting everything.
#[test]
fn max_age_with_a_clock_behind_the_records_deletes_nothing() {
    let (_d, store) = store_with(5);
    let policy = only(|r| r.max_age = Some(Duration::from_secs(3600)));
    assert_eq!(store.prune_once(&policy, 60 * SEC).unwrap().deleted(), 0);
    assert_eq!(store.prune_once(&policy, 0).unwrap().deleted(), 0);
    assert_eq!(store.len(), 5);
}

// Catches: count limit applied per batch only, or counters drifting across batches/reopen.
#[test]
fn max_records_alone_keeps_the_newest_across_several_batches() {
    let n = PRUNE_BATCH as u64 * 2 + 10;
    let (dir, store) = store_with(n);
    let policy = only(|r| r.max_records = Some(5));
    let report = store.prune_once(&policy, T0).unwrap();
    assert_eq!(
        (report.by_age, report.by_records, report.by_bytes),
        (0, n - 5, 0)
    );
    assert!(report.batches >= 3, "{report:?}");
    assert_eq!(left(&store), (n - 4..=n).collect::<Vec<_>>());
    assert_eq!(store.len(), 5);
    let bytes = store.data_bytes();
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(
        (store.len(), store.data_bytes()),
        (5, bytes),
        "counters after reopen"
    );
}

// Catches: size limit ignored, overshooting (deleting more than needed), or bytes not tracked.
#[test]
fn max_bytes_alone_deletes_just_enough_of_the_oldest() {
    let (_d, store) = store_with(20);
    let size = store.data_bytes() / 20;
    assert_eq!(store.data_bytes(), size * 20, "equal-size records");
    assert!(size > 100, "bytes count the encoded record, got {size}");
    // Room for 6.5 records: 14 must go, and 6 stay.
    let policy = only(|r| r.max_bytes = Some(size * 6 + size / 2));
    let report = store.prune_once(&policy, T0).unwrap();
    assert_eq!(
        (report.by_age, report.by_records, report.by_bytes),
        (0, 0, 14)
    );
    assert_eq!(report.bytes_freed, 14 * size);
    assert_eq!(left(&store), (15..=20).collect::<Vec<_>>());
    assert_eq!(store.data_bytes(), 6 * size);
}

// Catches: limits not combined (only the first applied) or applied in the wrong order.
#[test]
fn all_limits_together_each_delete_their_share() {
    let (_d, store) = store_with(100);
    let size = store.data_bytes() / 100;
    let policy = Retention {
        // now = T0+100s: records at T0+1..=T0+20 s are older than 80 s.
        max_age: Some(Duration::from_secs(80)),
        max_records: Some(50),
        max_bytes: Some(40 * size),
        ..Retention::unlimited()
    };
    let report = store.prune_once(&policy, T0 + 100 * SEC).unwrap();
    assert_eq!(
        (report.by_age, report.by_records, report.by_bytes),
        (19, 31, 10),
        "{report:?}"
    );
    assert_eq!(left(&store), (61..=100).collect::<Vec<_>>());
    assert_eq!(
        store.prune_once(&policy, T0 + 100 * SEC).unwrap().deleted(),
        0
    );
}

// Catches: count/bytes drift when inserts race with pruning (lost updates).
#[test]
fn counters_stay_exact_while_writers_race_the_pruner() {
    let (dir, store) = store_with(3000);
    let store = Arc::new(store);
    let writer = {
        let store = store.clone();
        std::thread::spawn(move || {
            for i in 0..2000 {
                store.insert(&mut rec(T0 + (5000 + i) * SEC)).unwrap();
            }
        })
    };
    let policy = only(|r| r.max_records = Some(1000));
    for _ in 0..20 {
        store.prune_once(&policy, T0).unwrap();
    }
    writer.join().unwrap();
    store.prune_once(&policy, T0).unwrap();
    let (len, bytes) = (store.len(), store.data_bytes());
    assert_eq!(len, 1000);
    assert_eq!(store.iter_since(None).count(), 1000);
    drop(store);
    // A reopen recounts from the tree: the maintained counters must agree.
    let store = Store::open(dir.path()).unwrap();
    assert_eq!((store.len(), store.data_bytes()), (len, bytes));
}

// Catches the count limit overshot by everything written in one pruner
// interval (1,300 records at the soak test's rate between 10 s passes):
// with an hour-long interval only an early wake brings the count back
// near the limit while records keep coming.
#[test]
fn the_pruner_wakes_early_when_the_count_runs_past_the_limit() {
    let (_d, store) = store_with(0);
    let store = Arc::new(store);
    let max = 100;
    let pruner = Pruner::spawn(
        store.clone(),
        only(|r| r.max_records = Some(max)),
        Duration::from_secs(3600),
    )
    .unwrap();
    let written = 1000;
    for i in 1..=written {
        store.insert(&mut rec(T0 + i * SEC)).unwrap();
    }
    // The margin the pruner may leave: a tenth of the limit, at least a batch.
    let margin = (max / 10).max(PRUNE_BATCH);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while store.len() > max + margin && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let len = store.len();
    pruner.stop();
    assert!(
        len <= max + margin,
        "{len} records left of {written} written with max_records = {max}"
    );
    // The oldest went first.
    assert_eq!(left(&store).last(), Some(&written));
}

// Catches: the pruner not running its first pass at start, or stop() waiting a whole interval.
#[test]
fn pruner_thread_prunes_at_start_and_stops_on_request() {
    let (_d, store) = store_with(50);
    let store = Arc::new(store);
    let policy = only(|r| r.max_records = Some(10));
    // An hour-long interval: stop() must wake the thread, not wait it out.
    let pruner = Pruner::spawn(store.clone(), policy, Duration::from_secs(3600)).unwrap();
    pruner.stop();
    assert_eq!(left(&store), (41..=50).collect::<Vec<_>>());
    assert_eq!(
        Arc::strong_count(&store),
        1,
        "the thread released the store"
    );
}
