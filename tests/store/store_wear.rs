//! Flash-wear figures for the result store: results/s inserted, bytes written
//! to disk per result (from /proc/self/io `write_bytes`, so this includes
//! sled's log, snapshots and fsyncs), and database bytes per 100k results.
//!
//! Ignored by default (it writes ~100 MB and measures); run it alone (the
//! bytes are the whole test process's) with
//! `cargo test --release --test store -- --ignored --nocapture store_wear::`.
//! `SPOTTER_WEAR_RESULTS` sets the number of results (default 100000);
//! `SPOTTER_WEAR_RATE` paces inserts at that many per second (default: as
//! fast as possible), which shows the cost of the 1 s flush at camera rates.

use std::time::Instant;

use spotter::core::result::ResultRecord;
use spotter::store::Store;

fn write_bytes() -> u64 {
    let io = std::fs::read_to_string("/proc/self/io").unwrap();
    io.lines()
        .find_map(|l| l.strip_prefix("write_bytes: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap()
}

/// A typical classification result: top-5 classes, no detections (the
/// record `spotter bench-store` writes).
fn rec(i: u64) -> ResultRecord {
    spotter::tools::wear::typical_record(i)
}

// Catches: a store whose writes never reach the disk (write_bytes unchanged) or whose size is not reported.
#[test]
#[ignore = "measurement: writes ~100 MB; run explicitly"]
fn store_wear_figures() {
    let n: u64 = std::env::var("SPOTTER_WEAR_RESULTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    // On tmpfs write_bytes stays 0; measure on a real filesystem.
    let base = std::env::var_os("SPOTTER_WEAR_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::env::current_dir().unwrap().join("target"));
    let dir = tempfile::tempdir_in(base).unwrap();
    let store = Store::open_with(dir.path(), 1000).unwrap();
    let before = write_bytes();
    let started = Instant::now();
    let rate: Option<f64> = std::env::var("SPOTTER_WEAR_RATE")
        .ok()
        .and_then(|v| v.parse().ok());
    for i in 0..n {
        store.insert(&mut rec(i)).unwrap();
        if let Some(rate) = rate {
            let due = std::time::Duration::from_secs_f64((i + 1) as f64 / rate);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
    }
    store.flush().unwrap();
    let secs = started.elapsed().as_secs_f64();
    let written = write_bytes() - before;
    let logical = store.data_bytes();
    let on_disk = store.size_on_disk();
    // How long one pruning batch holds sled's writer lock.
    let policy = spotter::store::Retention {
        max_records: Some(n as usize / 2),
        ..spotter::store::Retention::unlimited()
    };
    let pruned = store.prune_once(&policy, 0).unwrap();
    assert_eq!(pruned.by_records, n - n / 2);
    drop(store);
    let files: u64 = walk(dir.path());
    eprintln!("results: {n}");
    eprintln!("results/s inserted: {:.0}", n as f64 / secs);
    eprintln!(
        "bytes written to disk per result: {:.0}",
        written as f64 / n as f64
    );
    eprintln!(
        "logical bytes per result (max_bytes unit): {:.0}",
        logical as f64 / n as f64
    );
    eprintln!(
        "sled size_on_disk per 100k results: {}",
        on_disk * 100_000 / n
    );
    eprintln!(
        "directory bytes per 100k results after close: {}",
        files * 100_000 / n
    );
    eprintln!(
        "pruning {} results: {} batches, longest {} us",
        pruned.by_records, pruned.batches, pruned.max_batch_us
    );
    assert!(
        written > logical / 2,
        "write_bytes {written} for {logical} logical bytes"
    );
    assert!(on_disk >= logical / 2, "size_on_disk {on_disk}");
}

fn walk(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let md = e.metadata().unwrap();
        total += if md.is_dir() {
            walk(&e.path())
        } else {
            md.len()
        };
    }
    total
}
