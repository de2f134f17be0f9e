//! Rate limiting of the HTTPS API and what it logs. Its own test binary so
//! the captured log holds only these tests' servers.

mod api_harness;

use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use api_harness::{start_with, Auth};
use spotter::api::{AccessOptions, AUTH_FAILURE_LOG_THRESHOLD};

/// Every log record (message and key-values), for inspection.
struct Capture(Mutex<Vec<String>>);

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, record: &log::Record) {
        struct Kv(String);
        impl<'kvs> log::kv::VisitSource<'kvs> for Kv {
            fn visit_pair(
                &mut self,
                k: log::kv::Key<'kvs>,
                v: log::kv::Value<'kvs>,
            ) -> Result<(), log::kv::Error> {
                self.0.push_str(&format!(" {k}={v}"));
                Ok(())
            }
        }
        let mut kv = Kv(String::new());
        let _ = record.key_values().visit(&mut kv);
        self.0
            .lock()
            .unwrap()
            .push(format!("{}{}", record.args(), kv.0));
    }
    fn flush(&self) {}
}

fn capture() -> &'static Capture {
    static C: OnceLock<&'static Capture> = OnceLock::new();
    C.get_or_init(|| {
        let c: &'static Capture = Box::leak(Box::new(Capture(Mutex::new(Vec::new()))));
        log::set_logger(c).unwrap();
        log::set_max_level(log::LevelFilter::Trace);
        c
    })
}

fn random_key() -> String {
    use rand::RngCore;
    let mut b = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut b);
    format!("spk_{}", hex::encode(b))
}

// Catches: failed authentication not rate limited per client (fast brute force),
// 429 without Retry-After, bursts not logged with the stable MESSAGE_ID or logged
// per request, and key material (wrong or valid) reaching the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brute_force_is_slowed_and_logged_once() {
    let log = capture();
    const RATE: f64 = 200.0;
    const BURST: u32 = 10;
    const ATTEMPTS: usize = 1000;
    let h = start_with(
        |_| {},
        AccessOptions {
            auth_fail_rate_per_s: RATE,
            auth_fail_burst: BURST,
            ..AccessOptions::default()
        },
    )
    .await;
    // A valid key works before the attack (and is then in the log if it leaks).
    assert_eq!(h.get("/api/v1/status").await.status, 200);
    let guesses: Vec<String> = (0..ATTEMPTS).map(|_| random_key()).collect();
    let started = Instant::now();
    let mut checked = 0;
    let mut refused = 0;
    for guess in &guesses {
        loop {
            let r = h
                .call_as("GET", "/api/v1/status", Auth::Bearer(guess))
                .await;
            match r.status {
                401 => break,
                429 => {
                    refused += 1;
                    let retry: u64 = r
                        .header("retry-after")
                        .expect("429 without Retry-After")
                        .parse()
                        .unwrap();
                    assert!(retry >= 1);
                    // Retry sooner than Retry-After says, as an attacker would.
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                other => panic!("wrong key got {other}: {}", r.body),
            }
        }
        checked += 1;
    }
    let took = started.elapsed();
    assert_eq!(checked, ATTEMPTS);
    assert!(refused > 0, "never rate limited");
    // Lower bound from the bucket: BURST at once, then RATE per second. (Not a
    // speed threshold: any correct limiter is at least this slow.)
    let min = Duration::from_secs_f64((ATTEMPTS as f64 - f64::from(BURST)) / RATE);
    assert!(
        took >= min,
        "{ATTEMPTS} guesses in {took:?}, limiter allows no fewer than {min:?}"
    );

    let lines = log.0.lock().unwrap().clone();
    let bursts: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains(spotter::core::ids::AUTH_FAILURE_BURST))
        .collect();
    // One burst window (60 s) covers the whole attack: logged exactly once.
    assert_eq!(bursts.len(), 1, "{bursts:#?}");
    assert!(bursts[0].contains("127.0.0.1"), "{}", bursts[0]);
    assert!(
        bursts[0].contains(&format!("count={AUTH_FAILURE_LOG_THRESHOLD}")),
        "{}",
        bursts[0]
    );
    for line in &lines {
        assert!(!line.contains("spk_"), "key material in the log: {line}");
        for secret in [&h.read_key, &h.admin_key] {
            assert!(!line.contains(&secret[4..]), "key in the log: {line}");
        }
    }
    h.stop().await;
}

// Catches: a client without a key able to flood the API (anonymous requests not
// drawing on the per-address bucket), the probes drawing on that bucket (an
// address locked out by its failures refused on /healthz), or a valid key
// verified from a locked-out address (brute force riding on it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_requests_share_the_address_bucket() {
    capture();
    let h = start_with(
        |_| {},
        AccessOptions {
            auth_fail_rate_per_s: 0.01,
            auth_fail_burst: 3,
            ..AccessOptions::default()
        },
    )
    .await;
    for _ in 0..3 {
        assert_eq!(
            h.call_as("GET", "/api/v1/status", Auth::None).await.status,
            401
        );
    }
    let r = h.call_as("GET", "/api/v1/status", Auth::None).await;
    assert_eq!(r.status, 429, "{}", r.body);
    assert!(r.header("retry-after").unwrap().parse::<u64>().unwrap() >= 1);
    // Unknown routes are limited too (no free probing).
    assert_eq!(h.call_as("GET", "/nope", Auth::None).await.status, 429);
    // The probes have their own bucket: liveness stays answerable.
    assert_eq!(h.call_as("GET", "/healthz", Auth::None).await.status, 200);
    let m = h
        .call_as("GET", "/metrics", Auth::Bearer(&h.admin_key.clone()))
        .await;
    // A valid key needs a free token to be verified (the bucket is empty), so
    // even it is refused until the bucket refills: brute force cannot ride on it.
    assert_eq!(m.status, 429);
    h.stop().await;
}

// Catches: the first-start key written world-readable, its secret logged, or
// the log not saying where the file is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initial_admin_key_file_is_private_and_not_logged() {
    use std::os::unix::fs::MetadataExt;
    let log = capture();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let file = spotter::keys::ensure_initial_admin_key(&state)
        .unwrap()
        .unwrap();
    let secret = std::fs::read_to_string(&file).unwrap().trim().to_string();
    assert!(secret.starts_with("spk_"));
    assert_eq!(std::fs::metadata(&file).unwrap().mode() & 0o777, 0o600);
    assert_eq!(
        std::fs::metadata(state.join("keys.json")).unwrap().mode() & 0o777,
        0o600
    );
    let lines = log.0.lock().unwrap().clone();
    assert!(
        lines
            .iter()
            .any(|l| l.contains(&file.display().to_string())),
        "path not logged"
    );
    assert!(
        lines.iter().all(|l| !l.contains(&secret[4..])),
        "secret logged"
    );
}
