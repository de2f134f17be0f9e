//! Export/import (logical backups): round trip, bad lines, versions, idempotence.

use std::io::Cursor;

use spotter::core::result::{ClassScore, Detection, ResultRecord, StageLatency};
use spotter::store::backup::{self, BackupError, ExportHeader, EXPORT_VERSION};
use spotter::store::{Store, RECORD_VERSION};

fn rec(ts_ns: u64, label: &str) -> ResultRecord {
    ResultRecord {
        id: String::new(),
        ts_ns,
        source: "v4l2:/dev/video0".into(),
        origin: "/dev/video0".into(),
        frame_seq: ts_ns % 1000,
        model_sha256: "cd".repeat(32),
        runtime: "tflite".into(),
        classes: vec![ClassScore {
            index: 1,
            label: label.into(),
            raw: 17.0,
            score: 0.125,
        }],
        detections: vec![Detection {
            class_index: 1,
            label: label.into(),
            score: 0.5,
            x: 1.5,
            y: 2.0,
            width: 30.25,
            height: 40.0,
        }],
        image_width: 320,
        image_height: 240,
        latency: StageLatency {
            decode_us: 1,
            resize_us: 2,
            quantize_us: 3,
            invoke_us: 4,
            post_us: 5,
            store_us: 6,
        },
        clock_synchronized: true,
        boottime_ns: 0,
        source_name: String::new(),
    }
}

fn filled(n: u64) -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    for i in 0..n {
        // Two records share each timestamp so ids differ only by sequence.
        store
            .insert(&mut rec(
                1_700_000_000_000_000_000 + (i / 2) * 1_000,
                ["person", "cat"][i as usize % 2],
            ))
            .unwrap();
    }
    (dir, store)
}

fn empty() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    (dir, store)
}

fn export_all(store: &Store) -> Vec<u8> {
    let mut out = Vec::new();
    backup::export(store, None, &mut out, |_| {}).unwrap();
    out
}

fn lines(bytes: &[u8]) -> Vec<String> {
    String::from_utf8(bytes.to_vec())
        .unwrap()
        .lines()
        .map(String::from)
        .collect()
}

// Catches: fields lost or altered in the round trip, ids re-assigned on import, order changed.
#[test]
fn round_trip_into_an_empty_store_gives_the_same_results() {
    let (_a, src) = filled(2500);
    let mut progress = Vec::new();
    let mut out = Vec::new();
    let n = backup::export(&src, None, &mut out, |k| progress.push(k)).unwrap();
    assert_eq!(n, 2500);
    assert_eq!(progress, vec![1000, 2000, 2500]);

    let text = lines(&out);
    assert_eq!(text.len(), 2501);
    let header: ExportHeader = serde_json::from_str(&text[0]).unwrap();
    assert_eq!(
        (header.spotter_export, header.schema, header.count_hint),
        (EXPORT_VERSION, RECORD_VERSION, 2500)
    );
    assert!(header.created_ns > 1_600_000_000_000_000_000);
    // Oldest first.
    let first: ResultRecord = serde_json::from_str(&text[1]).unwrap();
    let last: ResultRecord = serde_json::from_str(&text[2500]).unwrap();
    assert!(first.id < last.id);

    let (_b, dst) = empty();
    let report = backup::import(&dst, Cursor::new(&out)).unwrap();
    assert_eq!(
        (report.added, report.skipped, report.invalid_count),
        (2500, 0, 0)
    );
    assert!(report.invalid.is_empty());
    assert_eq!(
        dst.range(None, None, 10_000).unwrap(),
        src.range(None, None, 10_000).unwrap()
    );
    let t = 1_700_000_000_000_000_000 + 300_000;
    assert_eq!(
        dst.range(Some(t), Some(t + 99_000), 50).unwrap(),
        src.range(Some(t), Some(t + 99_000), 50).unwrap()
    );
    assert_eq!((dst.len(), dst.data_bytes()), (src.len(), src.data_bytes()));
    // Exporting the restored store gives the same records, byte for byte.
    assert_eq!(lines(&export_all(&dst))[1..], text[1..]);
}

// Catches: --since ignored or exclusive.
#[test]
fn export_since_starts_at_the_bound_inclusive() {
    let (_a, src) = filled(10);
    let since = 1_700_000_000_000_000_000 + 3_000;
    let mut out = Vec::new();
    assert_eq!(
        backup::export(&src, Some(since), &mut out, |_| {}).unwrap(),
        4
    );
    let ts: Vec<u64> = lines(&out)[1..]
        .iter()
        .map(|l| serde_json::from_str::<ResultRecord>(l).unwrap().ts_ns)
        .collect();
    assert_eq!(ts, vec![since, since, since + 1_000, since + 1_000]);
}

// Catches: one bad line aborting the import, or reported with the wrong line number.
#[test]
fn corrupted_lines_are_reported_by_number_and_the_rest_imports() {
    let (_a, src) = filled(8);
    let mut text = lines(&export_all(&src));
    // Line 3 (the 2nd record): truncated JSON, as from an interrupted copy.
    let half = text[2].len() / 2;
    text[2].truncate(half);
    // Line 5: valid JSON whose id does not encode its timestamp.
    let mut r: ResultRecord = serde_json::from_str(&text[4]).unwrap();
    r.ts_ns += 1;
    text[4] = serde_json::to_string(&r).unwrap();
    // Line 7: a malformed id.
    let mut r: ResultRecord = serde_json::from_str(&text[6]).unwrap();
    r.id = "xyz".into();
    text[6] = serde_json::to_string(&r).unwrap();
    // Line 10: blank (ignored); line 11: not even JSON, with no final newline.
    text.push(String::new());
    text.push("garbage".into());
    let input = text.join("\n");

    let (_b, dst) = empty();
    let report = backup::import(&dst, Cursor::new(input)).unwrap();
    let bad: Vec<u64> = report.invalid.iter().map(|(n, _)| *n).collect();
    assert_eq!(bad, vec![3, 5, 7, 11], "{:?}", report.invalid);
    assert!(
        report.invalid[1].1.contains("timestamp"),
        "{}",
        report.invalid[1].1
    );
    assert_eq!(
        (report.added, report.skipped, report.invalid_count),
        (5, 0, 4)
    );
    assert_eq!(dst.len(), 5);
}

// Catches: an unbounded line read into memory, or a long line poisoning the following ones.
#[test]
fn an_overlong_line_is_rejected_and_the_next_line_imports() {
    let (_a, src) = filled(2);
    let text = lines(&export_all(&src));
    let long = format!(
        "{{\"pad\":\"{}\"}}",
        "x".repeat(backup::MAX_LINE_BYTES + 10)
    );
    let input = [text[0].clone(), long, text[1].clone(), text[2].clone()].join("\n") + "\n";
    let (_b, dst) = empty();
    let report = backup::import(&dst, Cursor::new(input)).unwrap();
    assert_eq!(report.invalid.len(), 1);
    assert_eq!(report.invalid[0].0, 2);
    assert_eq!(report.added, 2);
}

// Catches: a newer export format (or schema) silently half-imported by an older build.
#[test]
fn a_future_header_is_refused_before_anything_is_written() {
    let (_a, src) = filled(3);
    let text = lines(&export_all(&src));
    for header in [
        format!(
            r#"{{"spotter_export":{},"schema":1,"created_ns":1,"count_hint":3}}"#,
            EXPORT_VERSION + 1
        ),
        format!(
            r#"{{"spotter_export":1,"schema":{},"created_ns":1,"count_hint":3}}"#,
            RECORD_VERSION + 1
        ),
        // A future version may add header fields: still "future", not "garbage".
        format!(
            r#"{{"spotter_export":{},"schema":1,"created_ns":1,"count_hint":3,"codec":"zstd"}}"#,
            EXPORT_VERSION + 1
        ),
    ] {
        let input = [header.clone(), text[1].clone(), text[2].clone()].join("\n");
        let (_b, dst) = empty();
        let err = backup::import(&dst, Cursor::new(input)).unwrap_err();
        assert!(
            matches!(err, BackupError::FutureVersion { .. }),
            "{header}: {err}"
        );
        assert!(err.to_string().contains("upgrade Spotter"), "{err}");
        assert_eq!(dst.len(), 0);
    }
}

// Catches: a file without a header (e.g. a plain record dump) or an empty file accepted.
#[test]
fn missing_or_empty_header_is_refused() {
    let (_a, src) = filled(2);
    let text = lines(&export_all(&src));
    let (_b, dst) = empty();
    let err = backup::import(&dst, Cursor::new(text[1..].join("\n"))).unwrap_err();
    assert!(matches!(err, BackupError::BadHeader { .. }), "{err}");
    assert!(matches!(
        backup::import(&dst, Cursor::new("")).unwrap_err(),
        BackupError::Empty
    ));
    assert!(matches!(
        backup::import(&dst, Cursor::new("\n")).unwrap_err(),
        BackupError::BadHeader { .. }
    ));
    assert_eq!(dst.len(), 0);
}

// Catches: import not idempotent (duplicates on re-import) or existing records overwritten.
#[test]
fn re_import_adds_nothing_and_keeps_existing_records() {
    let (_a, src) = filled(50);
    let out = export_all(&src);
    let (_b, dst) = empty();
    assert_eq!(backup::import(&dst, Cursor::new(&out)).unwrap().added, 50);
    let before = dst.range(None, None, 100).unwrap();
    let again = backup::import(&dst, Cursor::new(&out)).unwrap();
    assert_eq!(
        (again.added, again.skipped, again.invalid_count),
        (0, 50, 0)
    );
    assert_eq!(dst.range(None, None, 100).unwrap(), before);
    assert_eq!(dst.len(), 50);
    // New inserts after a restore still get fresh ids.
    let mut r = rec(1_700_000_000_000_000_000, "dog");
    dst.insert(&mut r).unwrap();
    assert_eq!(dst.len(), 51);
    assert_eq!(dst.get(&r.id).unwrap().unwrap().classes[0].label, "dog");
}
