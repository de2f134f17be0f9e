//! Model rollout over the broker (issue 22) against a real Mosquitto (see
//! `mqtt`) and a local HTTPS server holding the bundles (signed with a key
//! made here, its public half in `[signing] trusted_keys`): a std-thread
//! rustls server with the test CA's server certificate (the daemon gets the
//! CA as `rollout.ca_file`), honouring `Range`, with a mode that cuts a
//! response at a given offset (once, to test resuming, or always, for a
//! download that cannot complete).

use crate::common;
use crate::mqtt::{config, log_count, pki, Broker, Pki, Subscriber, PASSWORD, USER};

use std::collections::HashMap;
use std::io::{BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{testdata, Daemon};
use sha2::Digest;

const ROLLOUT_REFUSED: &str = "2edf1b60a0c5479d9bbb3f18e44fae62";
const ROLLOUT_ROLLED_BACK: &str = "08f83ffcf64e4b80985a58f754074bbb";

/// One file the server holds.
struct Served {
    body: Vec<u8>,
    /// Responses cut at this absolute offset: `(offset, how many times)`.
    cut: Option<(usize, usize)>,
}

/// Served files by path: body, cut offset, cuts left.
type Files = HashMap<String, (Vec<u8>, Option<usize>, AtomicUsize)>;

/// The bundle server: files by path, and every Range header it was sent.
struct BundleServer {
    port: u16,
    ranges: Arc<Mutex<Vec<String>>>,
}

fn sha_hex(b: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(b))
}

impl BundleServer {
    fn start(pki: &Pki, files: Vec<(&str, Served)>) -> BundleServer {
        let read_pem = |p: &Path| std::fs::read(p).unwrap();
        let certs = rustls_pemfile::certs(&mut BufReader::new(&read_pem(&pki.server_cert)[..]))
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = rustls_pemfile::private_key(&mut BufReader::new(&read_pem(&pki.server_key)[..]))
            .unwrap()
            .unwrap();
        let cfg = Arc::new(
            rustls::ServerConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap(),
        );
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let files: Arc<Files> = Arc::new(
            files
                .into_iter()
                .map(|(p, s)| {
                    let (at, n) = s.cut.unwrap_or((0, 0));
                    (
                        p.to_string(),
                        (s.body, s.cut.map(|_| at), AtomicUsize::new(n)),
                    )
                })
                .collect(),
        );
        let ranges: Arc<Mutex<Vec<String>>> = Arc::default();
        let r2 = ranges.clone();
        std::thread::spawn(move || {
            for tcp in listener.incoming().flatten() {
                let (cfg, files, ranges) = (cfg.clone(), files.clone(), r2.clone());
                std::thread::spawn(move || {
                    let conn = rustls::ServerConnection::new(cfg).unwrap();
                    let mut tls = rustls::StreamOwned::new(conn, tcp);
                    let mut head = Vec::new();
                    let mut b = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        match tls.read(&mut b) {
                            Ok(1) => head.push(b[0]),
                            _ => return,
                        }
                    }
                    let head = String::from_utf8_lossy(&head).to_string();
                    let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
                    let range = head
                        .lines()
                        .find_map(|l| l.strip_prefix("Range: bytes="))
                        .or_else(|| head.lines().find_map(|l| l.strip_prefix("range: bytes=")))
                        .and_then(|r| r.trim().trim_end_matches('-').parse::<usize>().ok());
                    if let Some(r) = range {
                        ranges.lock().unwrap().push(format!("{path} {r}"));
                    }
                    let Some((body, cut_at, cuts)) = files.get(&path) else {
                        let _ = tls.write_all(
                            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                        );
                        tls.conn.send_close_notify();
                        let _ = tls.flush();
                        return;
                    };
                    let start = range.unwrap_or(0).min(body.len());
                    let head = match range {
                        Some(_) => format!(
                            "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {start}-{}/{}\r\nConnection: close\r\n\r\n",
                            body.len() - start,
                            body.len().saturating_sub(1),
                            body.len()
                        ),
                        None => format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            body.len()
                        ),
                    };
                    let _ = tls.write_all(head.as_bytes());
                    let cut = cut_at.filter(|_| {
                        cuts.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                            n.checked_sub(1)
                        })
                        .is_ok()
                    });
                    match cut {
                        Some(at) => {
                            // Cut: part of the body, no close_notify.
                            let _ = tls.write_all(&body[start..at.max(start)]);
                            let _ = tls.flush();
                        }
                        None => {
                            let _ = tls.write_all(&body[start..]);
                            tls.conn.send_close_notify();
                            let _ = tls.flush();
                        }
                    }
                });
            }
        });
        BundleServer { port, ranges }
    }

    fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }
}

/// Publish a retained QoS 1 command with mosquitto_pub.
fn publish(broker: &Broker, pki: &Pki, topic: &str, payload: &serde_json::Value) {
    let st = std::process::Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &broker.port.to_string()])
        .arg("--cafile")
        .arg(&pki.ca)
        .arg("--cert")
        .arg(&pki.client_cert)
        .arg("--key")
        .arg(&pki.client_key)
        .args(["-u", USER, "-P", PASSWORD, "-q", "1", "-r", "-t", topic])
        .args(["-m", &payload.to_string()])
        .status()
        .unwrap();
    assert!(
        st.success(),
        "mosquitto_pub failed; broker log:\n{}",
        broker.log()
    );
}

/// The status messages of `device` for rollout `id`, in arrival order.
fn steps(sub: &Subscriber, device: &str, id: &str) -> Vec<serde_json::Value> {
    sub.messages(&format!("spotter/{device}/model_status"))
        .iter()
        .map(|p| serde_json::from_slice::<serde_json::Value>(p).unwrap())
        .filter(|v| v["rollout_id"] == id)
        .collect()
}

/// Wait until `device` reported one of `last` for rollout `id`; returns
/// the steps' names in order (duplicates from redelivery removed).
fn wait_steps(
    d: &Daemon,
    sub: &Subscriber,
    device: &str,
    id: &str,
    last: &[&str],
) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let s = steps(sub, device, id);
        if s.iter().any(|v| last.iter().any(|l| v["step"] == *l)) {
            return s;
        }
        d.assert_running();
        assert!(
            Instant::now() < deadline,
            "{device}: rollout {id} did not reach {last:?}; steps {s:?}\nlog:\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn names(steps: &[serde_json::Value]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for s in steps {
        let n = s["step"].as_str().unwrap().to_string();
        if !out.contains(&n) {
            out.push(n);
        }
    }
    out
}

/// The running model's SHA-256, once one runs.
fn running(d: &Daemon) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = d.client().get("/api/v1/model") {
            if r.status == 200 {
                if let Some(s) = r.json()["running"]["sha256"].as_str() {
                    return s.to_string();
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "no model running; log:\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn versions(d: &Daemon) -> usize {
    let r = d.client().get("/api/v1/model").unwrap();
    r.json()["versions"].as_array().map_or(0, |v| v.len())
}

fn device(dir: &Path, pki: &Pki, broker: &Broker, name: &str, rollout: &str) -> Daemon {
    let sub = dir.join(name);
    std::fs::create_dir_all(&sub).unwrap();
    let cfg = config(&sub, pki, broker.port, name, true, "")
        + &format!(
            "\n[rollout]\nenabled = true\nca_file = \"{}\"\n{rollout}\n",
            pki.ca.display()
        )
        + &signing(&sub);
    Daemon::start(&sub, &cfg)
}

fn other_model() -> Vec<u8> {
    std::fs::read(testdata().join("models/classification/mobilenet_v1_0.5_160_quant.tflite"))
        .unwrap()
}

/// The test's signing key (fixed seed) and another one nobody trusts.
fn key(seed: u8) -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&[seed; 32])
}

/// `[signing]` trusting `key(1)`: its public key written (DER) in `dir`.
fn signing(dir: &Path) -> String {
    use ed25519_dalek::pkcs8::EncodePublicKey;
    let p = dir.join("rollout-signer.pub.der");
    let der = key(1).verifying_key().to_public_key_der().unwrap();
    std::fs::write(&p, der.as_bytes()).unwrap();
    format!("\n[signing]\ntrusted_keys = [\"{}\"]\n", p.display())
}

/// A bundle of `model`, signed by `signer` (None: unsigned), for Spotter
/// `min` and later.
fn bundle(model: &[u8], signer: Option<u8>, min: Option<&str>) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    let spec = spotter::modelstore::bundle::BundleSpec {
        name: "rollout-test",
        version: "1",
        model,
        labels: None,
        settings: Default::default(),
        min_spotter_version: min.map(str::to_owned),
    };
    spotter::modelstore::bundle::write_bundle(&mut out, &spec, signer.map(key).as_ref()).unwrap();
    out.into_inner()
}

// Would catch: the command topics not subscribed (group or retained), a
// download that does not resume after a cut (it would start over or fail),
// a step missing from model_status, the new model not actually running
// afterwards, and a device that was offline when the command was published
// not picking it up when it connects; two devices of one group both update.
#[test]
fn a_group_rollout_resumes_a_cut_download_and_reaches_a_late_device() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let broker = Broker::start(dir.path(), &pki);
    let sub = Subscriber::start(broker.port, &pki);
    let model = bundle(&other_model(), Some(1), None);
    let sha = sha_hex(&model);
    let model_sha = sha_hex(&other_model());
    let cut_at = model.len() / 3;
    let server = BundleServer::start(
        &pki,
        vec![(
            "/m.bundle",
            Served {
                body: model.clone(),
                cut: Some((cut_at, 1)),
            },
        )],
    );
    let rollout = "groups = [\"north\"]\nhealth_window_s = 2\nmax_score_drift = 1.0";
    let mut a = device(dir.path(), &pki, &broker, "cam-a", rollout);
    let before = running(&a);
    assert_ne!(before, model_sha);
    publish(
        &broker,
        &pki,
        "spotter/group/north/cmd/model",
        &serde_json::json!({"id": "r1", "url": server.url("/m.bundle"), "sha256": sha}),
    );
    let got = wait_steps(
        &a,
        &sub,
        "cam-a",
        "r1",
        &["healthy", "refused", "rolled_back"],
    );
    assert_eq!(
        names(&got),
        ["received", "downloaded", "verified", "active", "healthy"],
        "{got:?}\nlog:\n{}",
        a.log()
    );
    assert!(got.iter().all(|s| s["sha256"] == sha.as_str()), "{got:?}");
    assert_eq!(running(&a), model_sha);
    // The cut download went on from where it stopped.
    let ranges = server.ranges.lock().unwrap().clone();
    assert!(
        ranges.contains(&format!("/m.bundle {cut_at}")),
        "no resume at {cut_at}: {ranges:?}"
    );
    // A device offline when the command was published gets it (retained).
    let mut b = device(dir.path(), &pki, &broker, "cam-b", rollout);
    let got = wait_steps(
        &b,
        &sub,
        "cam-b",
        "r1",
        &["healthy", "refused", "rolled_back"],
    );
    assert_eq!(names(&got).last().unwrap(), "healthy", "{got:?}");
    assert_eq!(running(&b), model_sha);
    // Restarted, cam-a sees the retained command again and ignores it.
    let n = steps(&sub, "cam-a", "r1").len();
    a.terminate();
    a.spawn();
    running(&a);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(steps(&sub, "cam-a", "r1").len(), n, "r1 applied twice");
    assert_eq!(running(&a), model_sha);
    b.terminate();
    a.terminate();
}

// Would catch a bad download or bundle being installed or activated: a wrong
// sha256, a bundle over rollout.max_bundle_bytes, a download that cannot
// complete, an unsigned bundle, one signed by an untrusted key, one for a
// newer Spotter, a bare .tflite (unsigned: never over the broker) and a file
// that is no bundle must each be refused with the reason and a
// ROLLOUT_REFUSED log, leaving the active model and the versions as they were.
#[test]
fn bad_downloads_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let broker = Broker::start(dir.path(), &pki);
    let sub = Subscriber::start(broker.port, &pki);
    let bare = other_model();
    let model = bundle(&bare, Some(1), None);
    let small = vec![7u8; 4096];
    let unsigned = bundle(&bare, None, None);
    let untrusted = bundle(&bare, Some(2), None);
    let newer = bundle(&bare, Some(1), Some("99.0.0"));
    let big = bundle(&[bare.clone(), bare.clone()].concat(), Some(1), None);
    let plain = |body: &Vec<u8>| Served {
        body: body.clone(),
        cut: None,
    };
    let server = BundleServer::start(
        &pki,
        vec![
            ("/m.bundle", plain(&model)),
            ("/unsigned.bundle", plain(&unsigned)),
            ("/untrusted.bundle", plain(&untrusted)),
            ("/newer.bundle", plain(&newer)),
            ("/bare.tflite", plain(&bare)),
            (
                "/cut.bundle",
                Served {
                    body: small.clone(),
                    cut: Some((1000, usize::MAX)),
                },
            ),
            ("/big.bundle", plain(&big)),
            (
                "/garbage.bundle",
                Served {
                    body: small.clone(),
                    cut: None,
                },
            ),
        ],
    );
    // The bound lets the bundles through but not the big one below.
    let bound = model.len() as u64 + 4096;
    let mut d = device(
        dir.path(),
        &pki,
        &broker,
        "cam-c",
        &format!("max_bundle_bytes = {bound}\nhealth_window_s = 2"),
    );
    let before = running(&d);
    let n_versions = versions(&d);
    let topic = "spotter/cam-c/cmd/model";
    let cases = [
        (
            "wrong-sha",
            server.url("/garbage.bundle"),
            "0".repeat(64),
            "sha256 mismatch",
        ),
        (
            "too-big",
            server.url("/big.bundle"),
            sha_hex(&big),
            "max_bundle_bytes",
        ),
        (
            "cut",
            server.url("/cut.bundle"),
            sha_hex(&small),
            "incomplete",
        ),
        (
            "unsigned",
            server.url("/unsigned.bundle"),
            sha_hex(&unsigned),
            "sign",
        ),
        (
            "untrusted",
            server.url("/untrusted.bundle"),
            sha_hex(&untrusted),
            "sign",
        ),
        (
            "newer",
            server.url("/newer.bundle"),
            sha_hex(&newer),
            "99.0.0",
        ),
        (
            "bare",
            server.url("/bare.tflite"),
            sha_hex(&bare),
            "unsigned",
        ),
        (
            "garbage",
            server.url("/garbage.bundle"),
            sha_hex(&small),
            "",
        ),
    ];
    for (i, (id, url, sha256, why)) in cases.iter().enumerate() {
        publish(
            &broker,
            &pki,
            topic,
            &serde_json::json!({"id": id, "url": url, "sha256": sha256}),
        );
        let got = wait_steps(&d, &sub, "cam-c", id, &["refused", "active"]);
        let last = got.last().unwrap();
        assert_eq!(last["step"], "refused", "{id}: {got:?}");
        let reason = last["reason"].as_str().unwrap();
        assert!(reason.contains(why), "{id}: {reason}");
        assert!(
            !names(&got).contains(&"active".to_string()),
            "{id}: {got:?}"
        );
        assert_eq!(running(&d), before, "{id} changed the model");
        assert_eq!(versions(&d), n_versions, "{id} installed a version");
        assert!(
            log_count(&d, ROLLOUT_REFUSED) > i,
            "{id}: no ROLLOUT_REFUSED log"
        );
    }
    d.terminate();
}

/// One device with its own broker, subscriber and a bundle server holding
/// `other_model()` signed by the trusted key at `/m.bundle` (`sha`: the
/// bundle file's SHA-256).
struct One {
    d: Daemon,
    sub: Subscriber,
    server: BundleServer,
    broker: Broker,
    pki: Pki,
    sha: String,
    _dir: tempfile::TempDir,
}

impl One {
    fn start(name: &str, rollout: &str) -> One {
        let dir = tempfile::tempdir().unwrap();
        let pki = pki(dir.path());
        let broker = Broker::start(dir.path(), &pki);
        let sub = Subscriber::start(broker.port, &pki);
        let model = bundle(&other_model(), Some(1), None);
        let sha = sha_hex(&model);
        let served = Served {
            body: model,
            cut: None,
        };
        let server = BundleServer::start(&pki, vec![("/m.bundle", served)]);
        let d = device(dir.path(), &pki, &broker, name, rollout);
        One {
            d,
            sub,
            server,
            broker,
            pki,
            sha,
            _dir: dir,
        }
    }
}

// Would catch a model that fails its health window staying active: with
// rollout.max_score_drift = 0 any change of the mean top score fails the
// window (two different classifiers never score this scene identically),
// and the device must go back to the previous model by itself and say why.
#[test]
fn a_model_failing_its_health_window_is_rolled_back() {
    // Fields in this order so the daemon stops before the broker and the
    // directory go (locals drop in reverse).
    let One {
        _dir,
        pki,
        broker,
        server,
        sub,
        mut d,
        sha,
    } = One::start("cam-d", "health_window_s = 3\nmax_score_drift = 0.0");
    let before = running(&d);
    publish(
        &broker,
        &pki,
        "spotter/cam-d/cmd/model",
        &serde_json::json!({"id": "bad-1", "url": server.url("/m.bundle"), "sha256": sha}),
    );
    let got = wait_steps(
        &d,
        &sub,
        "cam-d",
        "bad-1",
        &["rolled_back", "healthy", "refused"],
    );
    assert_eq!(
        names(&got),
        [
            "received",
            "downloaded",
            "verified",
            "active",
            "rolled_back"
        ],
        "{got:?}\nlog:\n{}",
        d.log()
    );
    let reason = got.last().unwrap()["reason"].as_str().unwrap().to_string();
    assert!(reason.contains("drifted"), "{reason}");
    assert_eq!(running(&d), before);
    assert_eq!(log_count(&d, ROLLOUT_ROLLED_BACK), 1, "{}", d.log());
    d.terminate();
}

// Would catch a command's shadow period being skipped (no `shadow` step, or
// nothing compared), a model activated although its measured agreement is
// below `min_agreement` (or refused although it is not), and a refusal that
// changes the running model. The decision is checked against the figure the
// device itself reported, so the test holds whatever the two models agree on.
#[test]
fn a_shadow_period_gates_activation_on_the_measured_agreement() {
    // Fields in this order so the daemon stops before the broker and the
    // directory go (locals drop in reverse).
    let One {
        _dir,
        pki,
        broker,
        server,
        sub,
        mut d,
        sha,
    } = One::start("cam-s", "health_window_s = 2\nmax_score_drift = 1.0");
    let before = running(&d);
    let shadowed = |id: &str, min: f64| {
        publish(
            &broker,
            &pki,
            "spotter/cam-s/cmd/model",
            &serde_json::json!({"id": id, "url": server.url("/m.bundle"), "sha256": sha,
                "shadow_s": 3, "shadow_share": 1.0, "min_agreement": min}),
        );
        let got = wait_steps(
            &d,
            &sub,
            "cam-s",
            id,
            &["healthy", "refused", "rolled_back"],
        );
        let shadow = got
            .iter()
            .find(|s| s["step"] == "shadow")
            .unwrap_or_else(|| panic!("no shadow step: {got:?}\nlog:\n{}", d.log()))
            .clone();
        let report = &shadow["report"];
        assert!(report["frames_compared"].as_u64().unwrap() > 0, "{report}");
        let agreement = report["agreement"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&agreement), "{report}");
        (names(&got), agreement, got)
    };
    // At least perfect agreement demanded: refused unless the models agree on
    // every frame, and then the running model must not have changed.
    let (steps, agreement, got) = shadowed("shadow-strict", 1.0);
    if agreement < 1.0 {
        assert_eq!(
            steps,
            ["received", "downloaded", "verified", "shadow", "refused"],
            "{got:?}"
        );
        let reason = got.last().unwrap()["reason"].as_str().unwrap();
        assert!(reason.contains("min_agreement"), "{reason}");
        assert_eq!(
            running(&d),
            before,
            "a refused shadow period changed the model"
        );
        // Nothing demanded: the same model is activated after its shadow period.
        let (steps, _, got) = shadowed("shadow-any", 0.0);
        assert_eq!(
            steps,
            [
                "received",
                "downloaded",
                "verified",
                "shadow",
                "active",
                "healthy"
            ],
            "{got:?}\nlog:\n{}",
            d.log()
        );
    } else {
        assert_eq!(
            steps,
            [
                "received",
                "downloaded",
                "verified",
                "shadow",
                "active",
                "healthy"
            ],
            "{got:?}"
        );
    }
    let model_sha = got.iter().find(|s| s["step"] == "verified").unwrap()["model_sha256"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(running(&d), model_sha);
    d.terminate();
}
