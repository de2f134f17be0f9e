//! Request-level attacks on the HTTPS API (issue 21): slow request bodies,
//! pending bodies held to grow memory, and an address locked out for bad
//! keys. The attacker's sockets bind 127.0.0.2 as their source address; a
//! legitimate client on 127.0.0.1 probes `/healthz` and `/api/v1/status`
//! every second with a 1 s limit during each attack, and no probe may fail.

use crate::api_harness;
use crate::common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use api_harness::{assert_problem, read_response, relaxed_access, Auth};
use spotter::api::AccessOptions;
use spotter::state::Check;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::client::TlsStream;

const ATTACKER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
const LEGIT: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));

/// Where the server is, how to trust it, and a key for the status probe.
#[derive(Clone)]
struct Target {
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    key: String,
}

impl Target {
    /// A TLS connection from `src`.
    async fn connect(&self, src: IpAddr) -> std::io::Result<TlsStream<TcpStream>> {
        let sock = TcpSocket::new_v4()?;
        sock.bind(SocketAddr::new(src, 0))?;
        let tcp = sock.connect(self.addr).await?;
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        tokio_rustls::TlsConnector::from(self.tls.clone())
            .connect(name, tcp)
            .await
    }

    /// One GET on a new connection from 127.0.0.1 within 1 s: its status.
    async fn probe(&self, path: &str, key: bool) -> Result<u16, String> {
        let auth = if key {
            format!("Authorization: Bearer {}\r\n", self.key)
        } else {
            String::new()
        };
        let head =
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Connection: close\r\n\r\n");
        tokio::time::timeout(Duration::from_secs(1), async {
            let mut tls = self.connect(LEGIT).await.map_err(|e| e.to_string())?;
            tls.write_all(head.as_bytes())
                .await
                .map_err(|e| e.to_string())?;
            Ok(read_response(&mut tls).await.0)
        })
        .await
        .map_err(|_| format!("GET {path}: no answer within 1 s"))?
    }
}

/// Probes `/healthz` (no key) and `/api/v1/status` (key) every second until
/// stopped; returns every failure (a timeout or a status other than 200).
struct Prober {
    stop: watch::Sender<bool>,
    task: JoinHandle<(usize, Vec<String>)>,
}

impl Prober {
    fn start(t: &Target) -> Prober {
        let (stop, mut rx) = watch::channel(false);
        let t = t.clone();
        let task = tokio::spawn(async move {
            let (mut probes, mut failures) = (0, Vec::new());
            loop {
                for (path, key) in [("/healthz", false), ("/api/v1/status", true)] {
                    probes += 1;
                    match t.probe(path, key).await {
                        Ok(200) => {}
                        Ok(s) => failures.push(format!("GET {path} answered {s}")),
                        Err(e) => failures.push(e),
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = rx.changed() => break,
                }
            }
            (probes, failures)
        });
        Prober { stop, task }
    }

    /// Stop and assert that every probe succeeded.
    async fn finish(self) {
        let _ = self.stop.send(true);
        let (probes, failures) = self.task.await.unwrap();
        assert!(probes >= 2, "no probe ran");
        assert!(
            failures.is_empty(),
            "{} probes failed: {failures:#?}",
            failures.len()
        );
    }
}

fn harness_target(h: &api_harness::Harness) -> Target {
    Target {
        addr: h.addr,
        tls: h.client_config.clone(),
        key: h.read_key.clone(),
    }
}

/// Read until the server closes the connection (or `limit` passes): true
/// when it closed.
async fn closed_within(tls: &mut TlsStream<TcpStream>, limit: Duration) -> bool {
    let mut buf = [0u8; 1024];
    tokio::time::timeout(limit, async {
        loop {
            match tls.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

/// Read until `end` has arrived (bounded: a server that never says it
/// fails the test); everything read.
async fn read_to(tls: &mut TlsStream<TcpStream>, end: &str) -> String {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        while !String::from_utf8_lossy(&buf).contains(end) {
            match tls.read(&mut byte).await {
                Ok(0) | Err(_) => return,
                Ok(_) => buf.push(byte[0]),
            }
        }
    })
    .await;
    let text = String::from_utf8_lossy(&buf).to_string();
    assert!(read.is_ok(), "no {end:?} within 10 s: {text}");
    text
}

/// Send one byte a second (ignoring errors: the server may have closed).
fn trickle(mut tls: TlsStream<TcpStream>) -> JoinHandle<()> {
    tokio::spawn(async move {
        for _ in 0..30 {
            if tls.write_all(b"x").await.is_err() || tls.flush().await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    })
}

// Catches: a route that takes no body reading one (POST /healthz with a large
// Content-Length trickled at a byte a second held open with no answer), the
// answer to such a request leaving the connection open for the rest of the
// body, and a short unread body not drained (the next request on the same
// connection misread or refused).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_bodies_to_probes_are_answered_without_reading() {
    let h = api_harness::start_with(|_| {}, relaxed_access()).await;
    let t = harness_target(&h);
    let prober = Prober::start(&t);
    let mut trickles = Vec::new();
    for i in 0..20 {
        let mut tls = t.connect(ATTACKER).await.unwrap();
        let (method, want) = if i % 2 == 0 {
            ("POST", 405)
        } else {
            ("GET", 200)
        };
        let head = format!(
            "{method} /healthz HTTP/1.1\r\nHost: localhost\r\nContent-Length: 8000000\r\n\r\nx"
        );
        let started = Instant::now();
        tls.write_all(head.as_bytes()).await.unwrap();
        let (status, text) = read_response(&mut tls).await;
        assert_eq!(status, want, "{text}");
        assert!(
            text.to_ascii_lowercase().contains("connection: close"),
            "{text}"
        );
        if status == 405 {
            assert!(text.contains("application/problem+json"), "{text}");
        }
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "answered after {:?}",
            started.elapsed()
        );
        assert!(
            closed_within(&mut tls, Duration::from_secs(2)).await,
            "{method} /healthz: connection left open for the rest of the body"
        );
        trickles.push(trickle(tls));
    }
    // A short body sent at once is discarded and the connection reused.
    let mut tls = t.connect(ATTACKER).await.unwrap();
    let (status, text) = api_harness::raw_exchange(
        &mut tls,
        "POST /healthz HTTP/1.1\r\nHost: localhost\r\nContent-Length: 10\r\n\r\n0123456789",
    )
    .await;
    assert_eq!(status, 405, "{text}");
    let (status, text) =
        api_harness::raw_exchange(&mut tls, "GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await;
    assert_eq!(status, 200, "the connection after a drained body: {text}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    prober.finish().await;
    for t in trickles {
        t.abort();
    }
    h.stop().await;
}

/// A pipeline handle whose slot nobody serves: uploads are admitted and
/// their bodies read, but never classified.
fn idle_pipeline(dir: &Path) -> spotter::api::PipelineHandle {
    spotter::api::PipelineHandle {
        slot: Arc::new(spotter::pipeline::FrameSlot::new()),
        control: Arc::new(spotter::pipeline::InferenceControl::default()),
        models: spotter::modelstore::ModelStore::new(dir),
        model: spotter::config::from_sources(vec![]).unwrap().model,
    }
}

// Catches: a body read with no deadline (an upload with a read key trickled
// at a byte a second holds its upload slot and connection forever), a
// timeout answered without problem+json, or the connection kept open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_upload_is_cut_off_at_the_minimum_rate() {
    let dir = tempfile::tempdir().unwrap();
    let h = api_harness::start_piped(
        |o| {
            o.body_timeout = Duration::from_secs(1);
            o.body_min_rate = 1024;
            o.max_concurrent_uploads = 1;
            o.upload_queue = 0;
        },
        relaxed_access(),
        idle_pipeline(dir.path()),
    )
    .await;
    let t = harness_target(&h);
    let prober = Prober::start(&t);
    let mut tls = t.connect(ATTACKER).await.unwrap();
    let head = format!(
        "POST /api/v1/classify HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\nContent-Length: 100000\r\n\r\n",
        h.read_key
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    let (mut rd, mut wr) = tokio::io::split(tls);
    let feeder = tokio::spawn(async move {
        for _ in 0..20 {
            if wr.write_all(b"x").await.is_err() || wr.flush().await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    let started = Instant::now();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), rd.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf).to_string();
    assert!(read.is_ok(), "the slow upload was not cut off: {text}");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "cut off before the base deadline: {:?}",
        started.elapsed()
    );
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("application/problem+json"), "{text}");
    assert!(text.contains("\"code\":\"body_timeout\""), "{text}");
    feeder.abort();
    // The only upload slot it held is free again: the next upload is
    // admitted and read (and refused as no image: 415, not 503 busy).
    let mut tls = t.connect(LEGIT).await.unwrap();
    let (status, text) = api_harness::raw_exchange(
        &mut tls,
        &format!(
            "POST /api/v1/classify HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\nContent-Length: 3\r\n\r\nabc",
            h.read_key
        ),
    )
    .await;
    assert_eq!(status, 415, "{text}");
    prober.finish().await;
    h.stop().await;
}

/// VmRSS of a process, in bytes.
fn rss(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = s.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

const BODY: u64 = 2 * 1024 * 1024;
const BUDGET: u64 = 4 * BODY;

// Catches: pending request bodies growing memory without bound (thirty
// requests each holding a body one byte short of complete raised the
// daemon's RSS by their sum), anonymous bodies read at all, and uploads
// beyond the global body budget read before being refused (or refused
// without 503 problem+json and Retry-After).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_bodies_stay_within_the_budget() {
    let dir = tempfile::tempdir().unwrap();
    let photos = dir.path().join("photos");
    std::fs::create_dir_all(&photos).unwrap();
    std::fs::copy(
        common::testdata().join("images/cat.bmp"),
        photos.join("cat.bmp"),
    )
    .unwrap();
    // A read key, made before the daemon starts.
    let state = dir.path().join("state");
    let (_, read) = spotter::keys::KeyStore::new(&state)
        .create("reader", spotter::keys::Scope::Read)
        .unwrap();
    let model = common::testdata().join("models/classification/mobilenet_v2_1.0_224_quant.tflite");
    let labels = common::testdata().join("labels/labels_mobilenet_quant_v1_224.txt");
    let cfg = format!(
        "[daemon]\nstate_dir = \"@STATE@\"\n\n\
         [source]\nkind = \"files\"\ndir = \"{}\"\nfps = 2.0\n\n\
         [model]\npath = \"{}\"\nlabels = \"{}\"\nthreads = 1\nretry_ms = 500\n\n\
         [api]\nlisten = \"127.0.0.1:@PORT@\"\nmax_connections = 128\n\
         max_body_bytes = {BODY}\nbody_budget_bytes = {BUDGET}\n\
         max_concurrent_uploads = 32\nupload_queue = 0\nbody_timeout_ms = 60000\n",
        photos.display(),
        model.display(),
        labels.display()
    );
    let d = common::Daemon::start(dir.path(), &cfg);
    let c = d.client().with_key(Some(read.expose().to_string()));
    tokio::task::spawn_blocking(move || {
        c.wait_for("/readyz", 120, |r| r.status == 200);
    })
    .await
    .unwrap();
    let pid = d.child.as_ref().unwrap().id();
    let t = Target {
        addr: SocketAddr::from(([127, 0, 0, 1], d.port)),
        tls: api_harness::client_config(&d.cert()),
        key: read.expose().to_string(),
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = rss(pid);
    let prober = Prober::start(&t);
    let filler = vec![b'x'; (BODY - 1) as usize];
    let mut held = Vec::new();
    // Thirty anonymous requests, each sending a body one byte short.
    for i in 0..30 {
        let mut tls = t.connect(ATTACKER).await.unwrap();
        let path = if i % 2 == 0 {
            "/healthz"
        } else {
            "/api/v1/classify"
        };
        let head =
            format!("POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {BODY}\r\n\r\n");
        tls.write_all(head.as_bytes()).await.unwrap();
        // The server answers without reading and closes: writes may fail.
        let _ = tokio::time::timeout(Duration::from_millis(200), tls.write_all(&filler)).await;
        held.push(tls);
    }
    // Thirty uploads with a key: those within the budget are read (and
    // held one byte short), the rest refused before their body is sent.
    let (mut admitted, mut refused) = (0, 0);
    for _ in 0..30 {
        let mut tls = t.connect(ATTACKER).await.unwrap();
        let head = format!(
            "POST /api/v1/classify HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\nContent-Length: {BODY}\r\nExpect: 100-continue\r\n\r\n",
            t.key
        );
        tls.write_all(head.as_bytes()).await.unwrap();
        tls.flush().await.unwrap();
        // `Expect: 100-continue`: the server says whether it will read the
        // body (100) or refuses it (503) before a byte of it is sent.
        let head = read_to(&mut tls, "\r\n\r\n").await;
        if head.starts_with("HTTP/1.1 100") {
            // Admitted: send all but the last byte and hold it.
            tls.write_all(&filler).await.unwrap();
            tls.flush().await.unwrap();
            admitted += 1;
            held.push(tls);
        } else {
            let text = head + &read_to(&mut tls, "}").await;
            assert!(text.starts_with("HTTP/1.1 503"), "{text}");
            assert!(text.contains("\"code\":\"body_budget\""), "{text}");
            assert!(
                text.to_ascii_lowercase().contains("retry-after: 1"),
                "{text}"
            );
            refused += 1;
        }
    }
    assert_eq!(admitted, BUDGET / BODY, "uploads read beyond the budget");
    assert_eq!(refused, 30 - admitted);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let grown = rss(pid).saturating_sub(before);
    let margin = 16 * 1024 * 1024;
    assert!(
        grown <= BUDGET + margin,
        "RSS grew by {} MiB with the budget at {} MiB",
        grown >> 20,
        BUDGET >> 20
    );
    prober.finish().await;
    drop(held);
    drop(d);
}

// Catches: an address locked out for bad keys also refused on /healthz and
// /readyz (a liveness probe behind the same NAT as a bad client locked out),
// or the lockout no longer applying to keyed requests from that address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_stay_answerable_for_a_locked_out_address() {
    let h = api_harness::start_with(
        |_| {},
        AccessOptions {
            auth_fail_rate_per_s: 0.01,
            auth_fail_burst: 3,
            ..relaxed_access()
        },
    )
    .await;
    h.state.update_readiness(|r| {
        r.source = Check::passing("frame 3 ms ago");
        r.model = Check::passing("canary ok");
        r.store = Check::passing("write probe ok");
    });
    let t = harness_target(&h);
    let get = |path: &'static str, auth: Option<&'static str>| {
        let t = t.clone();
        async move {
            let mut tls = t.connect(ATTACKER).await.unwrap();
            let auth = auth
                .map(|k| format!("Authorization: Bearer {k}\r\n"))
                .unwrap_or_default();
            api_harness::raw_exchange(
                &mut tls,
                &format!(
                    "GET {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Connection: close\r\n\r\n"
                ),
            )
            .await
        }
    };
    let bad = "spk_0000000000000000000000000000000000000000000000000000000000000000";
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(get("/api/v1/status", Some(bad)).await.0);
    }
    assert_eq!(statuses, [401, 401, 401, 429, 429]);
    for _ in 0..10 {
        for path in ["/healthz", "/readyz"] {
            let (status, text) = get(path, None).await;
            assert_eq!(status, 200, "{path} from a locked-out address: {text}");
        }
    }
    // The lockout itself holds: a key (even a bad one on a probe) is not
    // checked from that address until its bucket refills.
    assert_eq!(get("/healthz", Some(bad)).await.0, 429);
    // Another address is not locked out.
    let r = h.call_as("GET", "/healthz", Auth::None).await;
    assert_eq!(r.status, 200);
    let r = h.call("GET", "/api/v1/status").await;
    assert_eq!(r.status, 200);
    assert_problem(
        &h.call_as("GET", "/api/v1/status", Auth::Bearer(bad)).await,
        401,
        "invalid_key",
    );
    h.stop().await;
}
