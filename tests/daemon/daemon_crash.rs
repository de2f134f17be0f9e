//! Crash safety of the real daemon: start `spotter run` on the `files`
//! source with a short `store.flush_every_ms`, watch what it stores through
//! the HTTPS API, SIGKILL it at a random moment (fixed seed), then reopen the
//! store (`Store::open` in this process, and the next daemon start) and check
//! that every result the API listed up to the recovery point it reported
//! before the kill is still there.
//!
//! How the test knows what must survive: it polls `GET /api/v1/results` and
//! `GET /api/v1/status` every POLL_MS; `store.durable_through` in the last
//! status before the kill is the newest result id stored before the daemon's
//! last completed flush, so every listed result up to it must survive. The
//! flusher runs every FLUSH_MS; on a loaded machine it starts late, which
//! moves the recovery point, not the guarantee.
//!
//! `store_crash.rs` does the same at the library level (a child process
//! calling `Store::insert`); this one covers what only the daemon does:
//! the configured flush interval reaching sled, the pipeline's writes, and
//! the daemon starting again on a store killed mid-write.
//!
//! Iterations: `SPOTTER_DAEMON_CRASH_ITERATIONS` (default 20).

use crate::common;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use common::{testdata, Daemon};
use rand::{rngs::StdRng, Rng, SeedableRng};
use spotter::store::{Store, StoreError};

const FLUSH_MS: u64 = 100;
const POLL_MS: u64 = 100;
const SEED: u64 = 0xda3_0c4a_5117_0005;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The smallest classification model and two small photos: the daemon is
/// ready in well under a second and stores tens of results per second.
fn config(photos: &Path) -> String {
    let model = testdata().join("models/classification/mobilenet_v1_0.25_128_quant.tflite");
    format!(
        "[daemon]\nstate_dir = \"@STATE@\"\nlog_level = \"warn\"\n\n\
         [source]\nkind = \"files\"\ndir = \"{}\"\nfps = 50.0\nloop = true\n\n\
         [model]\npath = \"{}\"\nruntime = \"builtin\"\nthreads = 1\n\n\
         [store]\nflush_every_ms = {FLUSH_MS}\nmin_free_bytes = 0\n\n\
         [api]\nlisten = \"127.0.0.1:@PORT@\"\n",
        photos.display(),
        model.display()
    )
}

/// Open the store the daemon left behind. A killed process holds no lock,
/// but retry briefly in case the kernel has not yet closed its files.
fn open_store(dir: &Path) -> Store {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        // flush_every_ms 0: no background flusher thread, so the lock is
        // released as soon as the store is dropped and the daemon can start.
        match Store::open_with(dir, 0) {
            Err(StoreError::Locked { .. }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50))
            }
            other => {
                return other.unwrap_or_else(|e| panic!("store does not open after SIGKILL: {e}"))
            }
        }
    }
}

// Catches: the daemon's store not opening after a SIGKILL (or the daemon
// failing to start on it), results lost although the daemon reported them
// durable (a recovery point ahead of the disk), a flusher that never runs
// (no recovery point, so too few results checked), and older results lost
// by a later crash.
#[test]
fn daemon_killed_at_random_moments_keeps_results_older_than_the_flush_window() {
    let started = Instant::now();
    let iterations = env_u64("SPOTTER_DAEMON_CRASH_ITERATIONS", 20);
    let tmp = tempfile::tempdir().unwrap();
    let photos = tmp.path().join("photos");
    std::fs::create_dir_all(&photos).unwrap();
    for name in ["table.jpg", "pets.jpg"] {
        std::fs::copy(testdata().join("images").join(name), photos.join(name)).unwrap();
    }
    let store_dir = tmp.path().join("state/results");
    let mut rng = StdRng::seed_from_u64(SEED);
    let mut must_survive: HashSet<String> = HashSet::new();
    let mut d = Daemon::start(tmp.path(), &config(&photos));
    let (mut checked, mut total_seen) = (0usize, 0usize);

    for it in 0..iterations {
        if it > 0 {
            d.spawn();
        }
        let c = d.client();
        // id -> when a reply listing it was received.
        let mut seen: HashMap<String, Instant> = HashMap::new();
        // The recovery point from the last status reply.
        let mut durable = String::new();
        let first = Instant::now();
        let mut kill_at = None;
        loop {
            if let Ok(r) = c.get("/api/v1/results?limit=500") {
                let at = Instant::now();
                if r.status == 200 {
                    for x in r.json()["results"].as_array().into_iter().flatten() {
                        seen.entry(x["id"].as_str().unwrap().to_string())
                            .or_insert(at);
                    }
                }
            }
            if let Ok(r) = c.get("/api/v1/status") {
                if let Some(id) = (r.status == 200)
                    .then(|| {
                        r.json()["store"]["durable_through"]
                            .as_str()
                            .map(str::to_string)
                    })
                    .flatten()
                {
                    durable = id;
                }
            }
            let new = seen.keys().filter(|id| !must_survive.contains(*id)).count();
            if kill_at.is_none() && new > 0 {
                // The daemon is storing: die a random while from now.
                kill_at = Some(Instant::now() + Duration::from_millis(rng.gen_range(1_200..3_000)));
            }
            if kill_at.is_some_and(|k| Instant::now() >= k) {
                break;
            }
            assert!(
                first.elapsed() < Duration::from_secs(60),
                "iteration {it}: no new result within 60 s; log:\n{}",
                d.log()
            );
            d.assert_running();
            std::thread::sleep(Duration::from_millis(POLL_MS));
        }
        let mut child = d.child.take().unwrap();
        let killed = Instant::now();
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();

        let store = open_store(&store_dir);
        let present: HashSet<String> = store.iter_since(None).map(|r| r.unwrap().id).collect();
        assert_eq!(
            store.len(),
            present.len(),
            "iteration {it}: record count at open"
        );
        drop(store);

        let lost_old: Vec<&String> = must_survive
            .iter()
            .filter(|id| !present.contains(*id))
            .collect();
        assert!(
            lost_old.is_empty(),
            "iteration {it}: {} results of earlier runs lost",
            lost_old.len()
        );
        // Ids are fixed-length lowercase hex of big-endian (time, seq) keys:
        // string order is key order, and the pipeline stores in time order.
        let due: Vec<(&String, &Instant)> = seen
            .iter()
            .filter(|(id, _)| !durable.is_empty() && id.as_str() <= durable.as_str())
            .collect();
        for (id, at) in &due {
            assert!(
                present.contains(*id),
                "iteration {it}: result {id}, listed by the API {} ms before the kill and reported durable, is missing",
                killed.duration_since(**at).as_millis()
            );
        }
        checked += due.len();
        total_seen += seen.len();
        eprintln!(
            "iteration {it}: {} results listed, {} checked, {} present after the kill",
            seen.len(),
            due.len(),
            present.len()
        );
        must_survive.extend(present);
    }
    // The last reopen by the daemon itself: it starts and serves what survived.
    d.spawn();
    let c = d.client();
    let any = must_survive
        .iter()
        .next()
        .expect("no result survived any kill")
        .clone();
    assert_eq!(
        c.wait_for(&format!("/api/v1/results/{any}"), 60, |r| r.status != 503)
            .status,
        200
    );
    let (status, _) = d.terminate();
    assert!(
        status.success(),
        "exit status {status:?}; log:\n{}",
        d.log()
    );
    assert!(
        checked > iterations as usize,
        "only {checked} results were old enough to check; the test proves little"
    );
    eprintln!(
        "{iterations} kills: {total_seen} results listed, {checked} checked, total runtime {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
