//! Crash safety: a child process writes results continuously into a store
//! flushed every FLUSH_MS; the parent SIGKILLs it at a random moment (fixed
//! seed), reopens the store and checks that it opens, that nothing up to the
//! recovery point the store reported before the kill
//! (`Store::durable_through`, advanced by each completed flush) is missing,
//! and that what survived is an unbroken prefix of what was written. How old
//! the oldest lost record was at the kill is printed: the recovery point in
//! time, which a loaded machine stretches (the flusher starts late), so it is
//! reported, not asserted.
//!
//! The child is this test binary re-executed with `CHILD_ENV` set, running
//! the ignored `crash_child_writer` test. Iterations: `SPOTTER_CRASH_ITERATIONS`
//! (default 20).

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::time::{clock_gettime, ClockId};
use rand::{rngs::StdRng, Rng, SeedableRng};
use spotter::core::result::{ClassScore, ResultRecord, StageLatency};
use spotter::store::Store;

const CHILD_ENV: &str = "SPOTTER_CRASH_CHILD_DIR";
const FLUSH_MS: u64 = 50;
const SEED: u64 = 0x5907_7e12_c4a5_4001;

fn mono_ns() -> u64 {
    let t = clock_gettime(ClockId::CLOCK_MONOTONIC).unwrap();
    t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The writer: inserts records forever, reporting each on stdout as
/// `W <frame_seq> <id> <monotonic ns after insert returned>`, and the store's
/// recovery point whenever it moves as `D <id>`.
#[test]
#[ignore = "child process of store_survives_sigkill_at_random_moments, not a test by itself"]
fn crash_child_writer() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let store = Store::open_with(Path::new(&dir), FLUSH_MS).unwrap();
    let start = store.len() as u64;
    let mut out = std::io::stdout().lock();
    let mut durable = None;
    for frame_seq in start.. {
        let mut rec = ResultRecord {
            id: String::new(),
            ts_ns: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64,
            source: "files:/srv/crash".into(),
            origin: format!("/srv/crash/{frame_seq}.jpg"),
            frame_seq,
            model_sha256: "ef".repeat(32),
            runtime: "tflite".into(),
            classes: vec![ClassScore {
                index: 0,
                label: "person".into(),
                raw: 250.0,
                score: 0.98,
            }],
            detections: vec![],
            image_width: 224,
            image_height: 224,
            latency: StageLatency::default(),
            clock_synchronized: true,
            boottime_ns: spotter::core::clock::boottime_ns(),
            source_name: String::new(),
        };
        store.insert(&mut rec).unwrap();
        writeln!(out, "W {frame_seq} {} {}", rec.id, mono_ns()).unwrap();
        let now = store.durable_through();
        if now != durable {
            writeln!(out, "D {}", now.as_deref().unwrap_or("")).unwrap();
            durable = now;
        }
        out.flush().unwrap();
        std::thread::sleep(Duration::from_micros(300));
    }
}

struct Written {
    frame_seq: u64,
    id: String,
    mono_ns: u64,
}

// Catches: a store that fails to open after a crash, loses flushed results, or recovers with holes.
#[test]
fn store_survives_sigkill_at_random_moments() {
    let iterations = env_u64("SPOTTER_CRASH_ITERATIONS", 20);
    let mut rng = StdRng::seed_from_u64(SEED);
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let child_test = crate::common::test_name(module_path!(), "crash_child_writer");
    let mut survived_before: HashSet<String> = HashSet::new();
    let mut checked_total = 0usize;

    for it in 0..iterations {
        let mut child = Command::new(&exe)
            .args([
                "--ignored",
                "--exact",
                child_test.as_str(),
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (first_tx, first_rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut written = Vec::new();
            // The last recovery point the child reported (a complete line).
            let mut durable = String::new();
            for line in BufReader::new(stdout).lines() {
                let line = line.unwrap();
                if let Some(id) = line.strip_prefix("D ") {
                    if id.len() == spotter::store::ID_LEN {
                        durable = id.to_string();
                    }
                    continue;
                }
                // libtest's "test crash_child_writer ... " may precede the
                // first report on the same line.
                let mut f = line.split(' ').skip_while(|t| *t != "W");
                if f.next() != Some("W") {
                    continue;
                }
                let (Some(seq), Some(id), Some(mono)) = (f.next(), f.next(), f.next()) else {
                    continue; // a line torn by the kill
                };
                let (Ok(frame_seq), Ok(mono_ns)) = (seq.parse(), mono.parse()) else {
                    continue;
                };
                if written.is_empty() {
                    let _ = first_tx.send(());
                }
                written.push(Written {
                    frame_seq,
                    id: id.to_string(),
                    mono_ns,
                });
            }
            (written, durable)
        });
        // Wait until the child is writing, then let it run a random while.
        first_rx
            .recv_timeout(Duration::from_secs(60))
            .expect("child never wrote");
        let delay = rng.gen_range(1_200..3_000);
        std::thread::sleep(Duration::from_millis(delay));
        let kill_mono = mono_ns();
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let (written, durable) = reader.join().unwrap();

        let store = Store::open_with(dir.path(), FLUSH_MS)
            .unwrap_or_else(|e| panic!("iteration {it}: store does not open after SIGKILL: {e}"));
        let present: HashSet<String> = store.iter_since(None).map(|r| r.unwrap().id).collect();
        assert_eq!(store.len(), present.len(), "iteration {it}: count at open");

        // Ids are fixed-length lowercase hex of big-endian keys: string
        // order is key order, and this writer stores in key order.
        let due: Vec<&Written> = written
            .iter()
            .filter(|w| !durable.is_empty() && w.id.as_str() <= durable.as_str())
            .collect();
        checked_total += due.len();
        for w in &due {
            assert!(
                present.contains(&w.id),
                "iteration {it}: frame {} ({} ms before the kill) is missing, although the store reported it durable",
                w.frame_seq,
                (kill_mono - w.mono_ns) / 1_000_000
            );
        }
        // What survived is a prefix of what was written: no holes.
        let survived = written
            .iter()
            .take_while(|w| present.contains(&w.id))
            .count();
        assert!(
            written[survived..].iter().all(|w| !present.contains(&w.id)),
            "iteration {it}: recovered records have a hole after frame {}",
            written.get(survived).map_or(0, |w| w.frame_seq)
        );
        // Records of earlier iterations are still there, and frame numbers
        // continue from the count (no record counted twice).
        assert!(
            survived_before.is_subset(&present),
            "iteration {it}: older records lost"
        );
        if let Some(w) = written.first() {
            assert_eq!(
                w.frame_seq as usize,
                survived_before.len(),
                "iteration {it}: count at child open"
            );
        }
        // At most one record can be present without being reported: the
        // child may die between insert and report.
        let reported: HashSet<&str> = written.iter().map(|w| w.id.as_str()).collect();
        let unreported = present
            .iter()
            .filter(|id| !survived_before.contains(*id) && !reported.contains(id.as_str()))
            .count();
        assert!(
            unreported <= 1,
            "iteration {it}: {unreported} records nobody wrote"
        );
        // How old the oldest lost record was at the kill: the real recovery point.
        let lost_ms = written
            .get(survived)
            .map_or(0, |w| kill_mono.saturating_sub(w.mono_ns) / 1_000_000);
        eprintln!(
            "iteration {it}: killed after {delay} ms; {} written, {} checked, {} survived, oldest lost {lost_ms} ms",
            written.len(),
            due.len(),
            survived
        );
        survived_before = present;
    }
    assert!(
        checked_total > 0,
        "the store never reported a recovery point: is its flusher running?"
    );
}
