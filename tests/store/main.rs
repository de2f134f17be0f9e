//! Result-store integration tests in one binary (one link of the crate
//! instead of one per file): backups, crash safety, a full disk, export while
//! the daemon runs, paging, retention and the flash-wear measurement.
//!
//! `store_crash::store_survives_sigkill_at_random_moments` re-executes this
//! binary to run only the ignored `store_crash::crash_child_writer`
//! (`common::test_name`). `store_wear::store_wear_figures` (ignored) reads
//! this process's write_bytes: run it alone, as its module doc says.

#[path = "../common/mod.rs"]
mod common;

mod store_backup;
mod store_crash;
mod store_disk_floor;
mod store_enospc;
mod store_export_live;
mod store_query;
mod store_retention;
mod store_wear;

use spotter::core::result::{ClassScore, ResultRecord, StageLatency};

/// A stored classification from the files source: frame `seq` of
/// `/srv/demo`, one class ("cat"), the record the retention and disk-floor
/// tests write (its encoded size depends only on the digits of `ts_ns` and
/// `seq`).
fn cat_record(ts_ns: u64, seq: u64) -> ResultRecord {
    ResultRecord {
        id: String::new(),
        ts_ns,
        source: "files:/srv/demo".into(),
        origin: format!("/srv/demo/{seq}.jpg"),
        frame_seq: seq,
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
