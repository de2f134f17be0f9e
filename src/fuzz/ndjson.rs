//! Fuzz target: `spotter import`, the NDJSON backup reader. Inputs are
//! mutated exports (header and records: JSON values of the wrong type,
//! garbage and blank lines, lines over the length limit) imported into one
//! store. An import must account for every line (added, already present or
//! reported invalid), stay idempotent, and keep what it added readable.

use rand::rngs::StdRng;
use rand::Rng;

use super::{mutate_bytes, mutate_text, Fuzz, Verdict};
use crate::core::result::{Detection, ResultRecord};
use crate::store::backup::{export, import, MAX_LINE_BYTES};
use crate::store::Store;

const DICT: &[&str] = &[
    "null",
    "true",
    "false",
    "0",
    "-1",
    "1.5",
    "1e400",
    "-0",
    "18446744073709551615",
    "18446744073709551616",
    "340282366920938463463374607431768211456",
    "\"\"",
    "\"x\"",
    "[]",
    "{}",
    "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
    "\"\\ud800\"",
    "\"\\u0000\"",
    "\"ts_ns\"",
    "\"id\"",
    "\"classes\"",
    "\"detections\"",
    "\"score\"",
    "\"spotter_export\"",
    "\"schema\"",
    "\"00000000000000000000000000000000\"",
    "\"ffffffffffffffffffffffffffffffff\"",
    "\n",
    "\r\n",
    ",",
    ":",
    "{",
    "}",
    "\"",
    "\\",
];

/// The store tests' record, varied by `seq`: every other one with a
/// detection, some with an unsynchronized clock, boot times set.
fn record(ts_ns: u64, seq: u64) -> ResultRecord {
    let mut r = crate::store::tests::rec(ts_ns, seq);
    if seq % 2 == 1 {
        r.detections = serde_json::from_str::<Vec<Detection>>(
            r#"[{"label":"dog","index":1,"score":0.5,"box":{"left":1.0,"top":2.0,"right":3.0,"bottom":4.0}}]"#,
        )
        .unwrap_or_default();
    }
    r.clock_synchronized = seq % 3 != 0;
    r.boottime_ns = seq * 1000;
    r
}

/// A real export of a few records.
fn seed() -> Vec<u8> {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("a store");
    for seq in 0..6 {
        store
            .insert(&mut record(
                1_700_000_000_000_000_000 + seq * 1_000_000,
                seq,
            ))
            .expect("insert");
    }
    let mut out = Vec::new();
    export(&store, None, &mut out, |_| {}).expect("export");
    out
}

fn generate(rng: &mut StdRng, seed: &[u8]) -> Vec<u8> {
    let mut data = seed.to_vec();
    for _ in 0..rng.gen_range(1..=6) {
        match rng.gen_range(0..8) {
            0 | 1 => mutate_bytes(rng, &mut data, &[]),
            // A line over the limit, or exactly at it, somewhere.
            2 if rng.gen_range(0..16) == 0 => {
                let len = MAX_LINE_BYTES + rng.gen_range(0..3) - 1;
                let fill = [b'x', b' ', b'{'][rng.gen_range(0..3)];
                let at = data
                    .iter()
                    .enumerate()
                    .filter(|(_, &b)| b == b'\n')
                    .map(|(i, _)| i + 1)
                    .nth(rng.gen_range(0..4))
                    .unwrap_or(data.len());
                let mut line = vec![fill; len];
                line.push(b'\n');
                data.splice(at..at, line);
            }
            _ => mutate_text(rng, &mut data, DICT),
        }
    }
    data
}

/// Non-blank record lines after the header, counted the way the importer
/// splits lines.
fn record_lines(bytes: &[u8]) -> u64 {
    let mut lines: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
    if lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    lines
        .iter()
        .skip(1)
        .filter(|l| {
            let l = l.strip_suffix(b"\r").unwrap_or(l);
            l.len() > MAX_LINE_BYTES || !l.trim_ascii().is_empty()
        })
        .count() as u64
}

fn check(store: &Store, bytes: &[u8]) -> Verdict {
    let first = match import(store, bytes) {
        Ok(r) => r,
        Err(
            crate::store::backup::BackupError::Io { .. }
            | crate::store::backup::BackupError::Store(_),
        ) => return Err("import failed on I/O or the store, not on its input".into()),
        Err(_) => return Ok(false),
    };
    let lines = record_lines(bytes);
    // Issue 18: sighting lines count too.
    let sightings = first.sightings_added + first.sightings_skipped;
    let seen = first.added + first.skipped + first.invalid_count + sightings;
    if seen != lines {
        return Err(format!(
            "{lines} record lines, but {} added + {} skipped + {} invalid + {sightings} sightings",
            first.added, first.skipped, first.invalid_count
        ));
    }
    if first.invalid.len() as u64 > first.invalid_count
        || first.invalid.iter().any(|(n, r)| *n < 2 || r.is_empty())
    {
        return Err(format!("bad invalid-line list {:?}", first.invalid));
    }
    let again = import(store, bytes).map_err(|e| format!("second import failed: {e}"))?;
    if again.added != 0 || again.sightings_added != 0 {
        return Err(format!(
            "importing twice added {} records, {} sightings",
            again.added, again.sightings_added
        ));
    }
    Ok(first.added > 0)
}

/// Catches `spotter import` panicking, allocating without bound or losing
/// track of lines on garbage, wrongly typed, huge or blank lines, and
/// imports that are not idempotent.
#[test]
fn ndjson() {
    let seed = seed();
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("a store");
    assert_eq!(check(&store, &seed), Ok(true), "the seed imports");
    let f = Fuzz::new("ndjson", 32 << 20);
    f.run(|rng| generate(rng, &seed), |bytes| check(&store, bytes));
}
