//! MQTT publishing against a real Mosquitto (Debian package `mosquitto`,
//! installed by scripts/setup.sh) on a loopback port with TLS (a CA, server
//! and client certificates made here with rcgen), a password file made with
//! `mosquitto_passwd`, and the daemon as a real process on the `files` source.
//! The subscriber is a rumqttc client with a persistent session, so messages
//! published while it reconnects after a broker restart are kept for it.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::BufReader;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{free_port, photo_dir, testdata, Daemon};
use spotter::core::result::ResultRecord;

pub(crate) const USER: &str = "spotter";
pub(crate) const PASSWORD: &str = "s3cret-Pass";
const MQTT_AUTH_FAILED: &str = "3601c07609bf46cf9341c25b13ddcfce";
const MQTT_TLS_FAILED: &str = "958d182b0ce249a681cba4ce68b0c3eb";
const MQTT_OUTBOX_OVERFLOW: &str = "659a9257f9b947059bec4052f50bc881";

/// CA, server and client certificates, plus an unrelated CA.
pub(crate) struct Pki {
    pub(crate) ca: PathBuf,
    other_ca: PathBuf,
    pub(crate) server_cert: PathBuf,
    pub(crate) server_key: PathBuf,
    pub(crate) client_cert: PathBuf,
    pub(crate) client_key: PathBuf,
}

fn make_ca(name: &str) -> (rcgen::Certificate, rcgen::KeyPair) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.distinguished_name.push(rcgen::DnType::CommonName, name);
    (p.self_signed(&key).unwrap(), key)
}

pub(crate) fn pki(dir: &Path) -> Pki {
    let (ca, ca_key) = make_ca("spotter test CA");
    let (other, _) = make_ca("some other CA");
    let leaf = |sans: Vec<String>, cn: &str| {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(sans).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        (p.signed_by(&key, &ca, &ca_key).unwrap(), key)
    };
    let (server, server_key) = leaf(vec!["127.0.0.1".into(), "localhost".into()], "localhost");
    let (client, client_key) = leaf(vec![], "spotter-client");
    let w = |name: &str, text: String| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        // Issue 23: private keys others can read stop the daemon's start.
        owner_only(&p);
        p
    };
    Pki {
        ca: w("ca.pem", ca.pem()),
        other_ca: w("other-ca.pem", other.pem()),
        server_cert: w("server.pem", server.pem()),
        server_key: w("server.key", server_key.serialize_pem()),
        client_cert: w("client.pem", client.pem()),
        client_key: w("client.key", client_key.serialize_pem()),
    }
}

/// A Mosquitto process on a loopback port; killed on drop.
pub(crate) struct Broker {
    child: Option<Child>,
    pub(crate) port: u16,
    conf: PathBuf,
    dir: PathBuf,
}

impl Broker {
    pub(crate) fn start(dir: &Path, pki: &Pki) -> Broker {
        let port = free_port();
        let passwd = dir.join("passwd");
        let st = Command::new("mosquitto_passwd")
            .args(["-b", "-c"])
            .arg(&passwd)
            .args([USER, PASSWORD])
            .status();
        assert!(
            st.map(|s| s.success()).unwrap_or(false),
            "mosquitto_passwd failed (run scripts/setup.sh)"
        );
        let data = dir.join("mosquitto-data");
        std::fs::create_dir_all(&data).unwrap();
        let conf = dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {}\n\
                 cafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\n\
                 persistence true\npersistence_location {}/\nmax_queued_messages 100000\n\
                 user root\nlog_dest file {}\n",
                passwd.display(),
                pki.ca.display(),
                pki.server_cert.display(),
                pki.server_key.display(),
                data.display(),
                dir.join("mosquitto.log").display(),
            ),
        )
        .unwrap();
        let mut b = Broker {
            child: None,
            port,
            conf,
            dir: dir.to_path_buf(),
        };
        b.spawn();
        b
    }

    fn spawn(&mut self) {
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&self.conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto not installed (run scripts/setup.sh)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "mosquitto did not listen; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM (Mosquitto saves its persistent sessions) and wait.
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(c.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let _ = c.wait();
        }
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("mosquitto.log")).unwrap_or_default()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn tls_client_config(pki: &Pki) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(&pki.ca).unwrap();
    for c in rustls_pemfile::certs(&mut BufReader::new(&pem[..])) {
        roots.add(c.unwrap()).unwrap();
    }
    let pem = std::fs::read(&pki.client_cert).unwrap();
    let certs = rustls_pemfile::certs(&mut BufReader::new(&pem[..]))
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let pem = std::fs::read(&pki.client_key).unwrap();
    let key = rustls_pemfile::private_key(&mut BufReader::new(&pem[..]))
        .unwrap()
        .unwrap();
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)
        .unwrap()
}

/// A subscriber to `spotter/#` and `homeassistant/#` with a persistent
/// session, collecting (topic, payload) in arrival order.
/// (topic, payload) pairs in arrival order.
type Received = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

pub(crate) struct Subscriber {
    got: Received,
    subscribed: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl Subscriber {
    pub(crate) fn start(port: u16, pki: &Pki) -> Subscriber {
        let mut o = rumqttc::MqttOptions::new("test-subscriber", "127.0.0.1", port);
        o.set_clean_session(false)
            .set_credentials(USER, PASSWORD)
            .set_keep_alive(Duration::from_secs(5));
        o.set_transport(rumqttc::Transport::Tls(rumqttc::TlsConfiguration::Rustls(
            Arc::new(tls_client_config(pki)),
        )));
        let (client, mut conn) = rumqttc::Client::new(o, 100);
        client
            .subscribe("spotter/#", rumqttc::QoS::AtLeastOnce)
            .unwrap();
        client
            .subscribe("homeassistant/#", rumqttc::QoS::AtLeastOnce)
            .unwrap();
        let s = Subscriber {
            got: Arc::default(),
            subscribed: Arc::default(),
            stop: Arc::default(),
        };
        let (got, subscribed, stop) = (s.got.clone(), s.subscribed.clone(), s.stop.clone());
        std::thread::spawn(move || {
            let _client = client;
            for ev in conn.iter() {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                match ev {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => got
                        .lock()
                        .unwrap()
                        .push((p.topic.clone(), p.payload.to_vec())),
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_))) => {
                        subscribed.store(true, Ordering::Relaxed)
                    }
                    Ok(_) => {}
                    Err(_) => std::thread::sleep(Duration::from_millis(100)),
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        while !s.subscribed.load(Ordering::Relaxed) {
            assert!(Instant::now() < deadline, "subscriber never subscribed");
            std::thread::sleep(Duration::from_millis(20));
        }
        s
    }

    pub(crate) fn messages(&self, topic: &str) -> Vec<Vec<u8>> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .filter(|(t, _)| t == topic)
            .map(|(_, p)| p.clone())
            .collect()
    }

    /// Results received on `device`'s result topic, in arrival order.
    fn results(&self, device: &str) -> Vec<ResultRecord> {
        self.messages(&format!("spotter/{device}/result"))
            .iter()
            .map(|p| {
                serde_json::from_slice(p).unwrap_or_else(|e| {
                    panic!("result not JSON ({e}): {}", String::from_utf8_lossy(p))
                })
            })
            .collect()
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A daemon config publishing to `port`; `extra` lines go into `[mqtt]`.
pub(crate) fn config(
    dir: &Path,
    pki: &Pki,
    port: u16,
    device: &str,
    looping: bool,
    extra: &str,
) -> String {
    let password = dir.join("mqtt-password");
    std::fs::write(&password, format!("{PASSWORD}\n")).unwrap();
    owner_only(&password);
    let model = testdata().join("models/classification/mobilenet_v1_0.25_128_quant.tflite");
    let labels = testdata().join("labels/labels_mobilenet_quant_v1_224.txt");
    format!(
        "[daemon]\nstate_dir = \"@STATE@\"\n\n\
         [source]\nkind = \"files\"\ndir = \"{}\"\nfps = 10.0\nloop = {looping}\n\n\
         [model]\npath = \"{}\"\nlabels = \"{}\"\nthreads = 1\n\n\
         [api]\nlisten = \"127.0.0.1:@PORT@\"\n\n\
         [mqtt]\nenabled = true\nhost = \"127.0.0.1\"\nport = {port}\ndevice_id = \"{device}\"\n\
         ca_file = \"{}\"\nclient_cert = \"{}\"\nclient_key = \"{}\"\nusername = \"{USER}\"\npassword_file = \"{}\"\n\
         reconnect_initial_ms = 200\nreconnect_max_ms = 1000\n{extra}\n",
        photo_dir(dir).0.display(),
        model.display(),
        labels.display(),
        pki.ca.display(),
        pki.client_cert.display(),
        pki.client_key.display(),
        password.display(),
    )
}

fn mqtt_status(d: &Daemon) -> serde_json::Value {
    try_status(d).unwrap_or_else(|| panic!("no status; log:\n{}", d.log()))
}

fn try_status(d: &Daemon) -> Option<serde_json::Value> {
    let r = d.client().get("/api/v1/status").ok()?;
    (r.status == 200).then(|| r.json())
}

/// Poll the daemon's status until `pred` holds (panics after `secs`).
pub(crate) fn wait_status(
    d: &Daemon,
    secs: u64,
    what: &str,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        d.assert_running();
        let s = try_status(d).unwrap_or_default();
        if !s.is_null() && pred(&s) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; status: {s}\nlog:\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every stored result and the outbox's remaining ids, read after the daemon stopped.
fn stored(d: &Daemon) -> (Vec<ResultRecord>, BTreeSet<String>) {
    let store = spotter::store::Store::open(&d.dir.join("state/results"))
        .unwrap()
        .with_outbox(spotter::store::OutboxLimits {
            max_records: usize::MAX,
            max_bytes: u64::MAX,
        })
        .unwrap();
    let all: Vec<ResultRecord> = store.iter_since(None).map(|r| r.unwrap()).collect();
    let outbox = store
        .outbox()
        .unwrap()
        .read(None, None, usize::MAX)
        .unwrap()
        .iter()
        // Sighting entries (issue 18) have their own topic and test.
        .filter(|e| e.kind == spotter::store::OutboxKind::Result)
        .map(|e| {
            serde_json::from_slice::<ResultRecord>(&e.payload)
                .unwrap()
                .id
        })
        .collect();
    (all, outbox)
}

/// Received results, deduplicated by id: duplicates must be identical.
/// Returns (id → record, number of duplicates).
fn dedup(received: &[ResultRecord]) -> (BTreeMap<String, ResultRecord>, usize) {
    let mut map = BTreeMap::new();
    let mut dups = 0;
    for r in received {
        if let Some(prev) = map.insert(r.id.clone(), r.clone()) {
            assert_eq!(
                &prev, r,
                "a redelivered result differs from the first delivery"
            );
            dups += 1;
        }
    }
    (map, dups)
}

/// Stop the daemon and check that what the subscriber received is exactly
/// what the store holds, less what is still queued; returns (stored, dups).
fn check_exact(d: &mut Daemon, sub: &Subscriber, device: &str) -> (usize, usize) {
    let (st, _) = d.terminate();
    assert!(st.success(), "daemon exit {st:?}; log:\n{}", d.log());
    std::thread::sleep(Duration::from_millis(300));
    let (all, left) = stored(d);
    let (got, dups) = dedup(&sub.results(device));
    let want: BTreeSet<String> = all
        .iter()
        .map(|r| r.id.clone())
        .filter(|id| !left.contains(id))
        .collect();
    let have: BTreeSet<String> = got.keys().cloned().collect();
    let missing: Vec<_> = want.difference(&have).collect();
    let every: BTreeSet<String> = all.iter().map(|r| r.id.clone()).collect();
    let extra: Vec<_> = have.difference(&every).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing {missing:?}, unknown {extra:?}; log:\n{}",
        d.log()
    );
    for r in &all {
        if let Some(g) = got.get(&r.id) {
            assert_eq!(g, r, "published content differs from the stored result");
        }
    }
    (all.len(), dups)
}

pub(crate) fn log_count(d: &Daemon, id: &str) -> usize {
    d.log().matches(&format!("message_id={id}")).count()
}

// Would catch results not published, published with different content than
// the API serves, out of order, or a protocol version that does not work;
// and a missing retained status, last-will/offline, event or HA discovery.
#[test]
fn results_arrive_in_order_with_content_over_3_1_1_and_5() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let _broker = Broker::start(dir.path(), &pki);
    let sub = Subscriber::start(_broker.port, &pki);
    let (da, db) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir_all(&da).unwrap();
    std::fs::create_dir_all(&db).unwrap();
    let mut a = Daemon::start(
        &da,
        &config(
            &da,
            &pki,
            _broker.port,
            "dev-a",
            true,
            "protocol = \"3.1.1\"",
        ),
    );
    let mut b = Daemon::start(
        &db,
        &config(
            &db,
            &pki,
            _broker.port,
            "dev-b",
            true,
            "protocol = \"5\"\nhomeassistant = true\nhomeassistant_labels = [\"military uniform\"]",
        ),
    );
    for d in [&a, &b] {
        let s = wait_status(d, 120, "10 acknowledged results", |s| {
            s["mqtt"]["acked"].as_u64().unwrap_or(0) >= 10
        });
        assert_eq!(s["mqtt"]["connected"], true, "{s}");
        let m = d.client().get("/metrics").unwrap().body;
        assert!(m.contains("spotter_mqtt_connected 1"), "{m}");
    }
    for (d, dev) in [(&mut a, "dev-a"), (&mut b, "dev-b")] {
        let (n, dups) = check_exact(d, &sub, dev);
        assert!(n >= 10);
        assert_eq!(dups, 0, "no duplicates without a connection loss");
        let ids: Vec<String> = sub.results(dev).iter().map(|r| r.id.clone()).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted, "results out of order");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let st = sub.messages(&format!("spotter/{dev}/status"));
            if st.last().map(|s| s.as_slice()) == Some(b"offline") {
                assert!(st.iter().any(|s| s == b"online"));
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no offline status for {dev}: {st:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let events = sub.messages(&format!("spotter/{dev}/event"));
        assert!(
            events.iter().any(
                |e| serde_json::from_slice::<serde_json::Value>(e).unwrap()["event"]
                    == "model_activated"
            ),
            "no model_activated event"
        );
    }
    let ha = sub.messages("homeassistant/binary_sensor/dev-b/label_military_uniform/config");
    let v: serde_json::Value =
        serde_json::from_slice(ha.first().expect("no HA discovery for dev-b")).unwrap();
    // Issue 18: the binary sensors follow the label's sightings.
    assert_eq!(
        v["state_topic"],
        "spotter/dev-b/sighting/military_uniform/state"
    );
    assert!(
        sub.messages("homeassistant/sensor/dev-a/last_label/config")
            .is_empty(),
        "discovery is off by default"
    );
}

/// Broker down for `outage`, optionally killing (SIGKILL) and restarting the
/// daemon in the middle; then everything queued must arrive. Returns the
/// backlog drained and how long it took.
fn outage(outage: Duration, crash: bool, drain_rate: &str) -> (u64, Duration) {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let mut broker = Broker::start(dir.path(), &pki);
    let sub = Subscriber::start(broker.port, &pki);
    let mut d = Daemon::start(
        dir.path(),
        &config(dir.path(), &pki, broker.port, "dev", true, drain_rate),
    );
    wait_status(&d, 120, "5 acknowledged results", |s| {
        s["mqtt"]["acked"].as_u64().unwrap_or(0) >= 5
    });
    broker.stop();
    let down = Instant::now();
    let stored_at_stop = mqtt_status(&d)["counters"]["results_stored"]
        .as_u64()
        .unwrap();
    if crash {
        std::thread::sleep(outage / 2);
        let queued = wait_status(&d, 60, "results queued", |s| {
            s["mqtt"]["outbox_records"].as_u64().unwrap_or(0) >= 5
        });
        let mut child = d.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        d.spawn();
        // Results in the store's flush window may be lost; older queued ones
        // are still there.
        let q = queued["mqtt"]["outbox_records"].as_u64().unwrap();
        let after = wait_status(&d, 60, "restart", |s| s["mqtt"]["enabled"] == true);
        assert!(
            after["mqtt"]["outbox_records"].as_u64().unwrap() + 20 >= q,
            "outbox lost by the crash: {after} vs {q}"
        );
        assert_eq!(after["mqtt"]["connected"], false);
    }
    while down.elapsed() < outage {
        std::thread::sleep(Duration::from_millis(200));
    }
    let s = mqtt_status(&d);
    assert_eq!(s["mqtt"]["connected"], false, "{s}");
    assert!(
        crash || s["counters"]["results_stored"].as_u64().unwrap() > stored_at_stop,
        "results must keep coming during the outage: {s}"
    );
    let backlog = s["mqtt"]["outbox_records"].as_u64().unwrap();
    broker.spawn();
    let up = Instant::now();
    wait_status(&d, 120, "reconnect", |s| s["mqtt"]["connected"] == true);
    // Drained: the outbox is back to the live level.
    wait_status(&d, 300, "backlog drained", |s| {
        s["mqtt"]["outbox_records"].as_u64().unwrap_or(u64::MAX) <= 2
    });
    let took = up.elapsed();
    let (n, dups) = check_exact(&mut d, &sub, "dev");
    println!("outage {:?} crash={crash}: {n} results stored, backlog {backlog}, drained in {took:?}, {dups} duplicates", outage);
    (backlog, took)
}

// Would catch results produced while the broker is down being lost, sent
// twice (beyond QoS 1 redelivery, told apart by id and identical), or not
// sent after the reconnect.
#[test]
fn broker_outage_of_30s_loses_nothing() {
    let (backlog, took) = outage(Duration::from_secs(30), false, "drain_rate_per_s = 200.0");
    assert!(backlog > 0);
    println!(
        "drain rate at drain_rate_per_s = 200: {:.0} results/s",
        backlog as f64 / took.as_secs_f64()
    );
}

// Would catch the outbox not surviving a crash (SIGKILL) of the daemon
// during an outage: what was queued and not acknowledged must still arrive.
#[test]
fn daemon_crash_during_outage_keeps_the_outbox() {
    outage(Duration::from_secs(4), true, "drain_rate_per_s = 200.0");
}

/// A sighting of `label` for the outage test.
fn sighting(id: u64, label: &str, end_ns: Option<i64>) -> spotter::core::sighting::Sighting {
    spotter::core::sighting::Sighting {
        id,
        label: label.into(),
        source: "default".into(),
        zone: Some("door".into()),
        start_ns: 1_000 * id as i64,
        end_ns,
        last_seen_ns: end_ns.unwrap_or(1_000 * id as i64 + 500),
        peak_score: 0.75,
        frames: 3,
        max_objects: 1,
        best_result_id: None,
        best_ns: 1_000 * id as i64,
    }
}

// Would catch (issue 18) sighting changes not published, published on the
// result topic, with another payload than the stored SightingEvent, out of
// the outbox's order, or lost across a broker outage (store-and-forward);
// and the Home Assistant binary sensor not following the label's sightings
// (ON while one is open, retained) or still reading the result topic.
#[test]
fn sightings_are_stored_and_forwarded_across_a_broker_outage() {
    use spotter::core::sighting::{SightingChange, SightingEvent};
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let mut broker = Broker::start(dir.path(), &pki);
    let sub = Subscriber::start(broker.port, &pki);
    broker.stop();
    // Queued before the daemon starts, as a run that lost the broker leaves
    // them: two sightings of "person" start, the first one ends.
    let (one, two) = (sighting(1, "person", None), sighting(2, "person", None));
    let mut one_ended = one.clone();
    one_ended.end_ns = Some(1_700);
    one_ended.last_seen_ns = 1_700;
    let queued = [
        (SightingChange::Started, one.clone()),
        (SightingChange::Started, two.clone()),
        (SightingChange::Ended, one_ended.clone()),
    ];
    {
        let store = spotter::store::Store::open(&dir.path().join("state/results"))
            .unwrap()
            .with_outbox(spotter::store::OutboxLimits {
                max_records: 1000,
                max_bytes: 1 << 20,
            })
            .unwrap();
        for (change, s) in &queued {
            store.put_sighting(s, None, Some(*change)).unwrap();
        }
        let entries = store.outbox().unwrap().read(None, None, 10).unwrap();
        assert_eq!(entries.len(), 3);
    }
    let mut d = Daemon::start(
        dir.path(),
        &config(
            dir.path(),
            &pki,
            broker.port,
            "dev",
            true,
            // Every frame stored, so results queue during the outage.
            "homeassistant = true\nhomeassistant_labels = [\"person\"]\n\n[store]\nkeep_frames = \"all\"",
        ),
    );
    // Results keep coming and queue behind the sightings while the broker is down.
    wait_status(&d, 120, "results queued behind the sightings", |s| {
        s["mqtt"]["outbox_records"].as_u64().unwrap_or(0) >= 6
    });
    assert_eq!(mqtt_status(&d)["mqtt"]["connected"], false);
    // Results captured from here on may be live ones, which go out before
    // the backlog by design (a long backlog never delays new results).
    let reconnect_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    broker.spawn();
    wait_status(&d, 120, "reconnect", |s| s["mqtt"]["connected"] == true);
    wait_status(&d, 300, "backlog drained", |s| {
        s["mqtt"]["outbox_records"].as_u64().unwrap_or(u64::MAX) <= 2
    });
    let (st, _) = d.terminate();
    assert!(st.success(), "daemon exit {st:?}; log:\n{}", d.log());
    std::thread::sleep(Duration::from_millis(300));

    let events: Vec<SightingEvent> = sub
        .messages("spotter/dev/sighting")
        .iter()
        .map(|p| {
            serde_json::from_slice(p).unwrap_or_else(|e| {
                panic!("not a SightingEvent ({e}): {}", String::from_utf8_lossy(p))
            })
        })
        .collect();
    // At least once: a redelivery is identical; first deliveries in order.
    let mut first: Vec<SightingEvent> = Vec::new();
    for e in &events {
        match first
            .iter()
            .find(|f| f.event == e.event && f.sighting.id == e.sighting.id)
        {
            Some(f) => assert_eq!(f, e, "a redelivered sighting event differs"),
            None => first.push(e.clone()),
        }
    }
    let want: Vec<SightingEvent> = queued
        .iter()
        .map(|(event, sighting)| SightingEvent {
            event: *event,
            sighting: sighting.clone(),
        })
        .collect();
    assert!(
        first.len() >= 3 && first[..3] == want[..],
        "got {first:#?}; log:\n{}",
        d.log()
    );
    // Anything after them can only be the start-up closing sighting 2 (the
    // result sink closes what a previous run left open).
    for e in &first[3..] {
        assert_eq!(
            (e.event, e.sighting.id),
            (SightingChange::Ended, 2),
            "{e:?}"
        );
    }
    // Every message on the result topic is a result (a sighting event
    // there would not parse).
    assert!(!sub.results("dev").is_empty());
    // The queued sightings went out before the results queued after them.
    let got = sub.got.lock().unwrap().clone();
    let last_queued = got
        .iter()
        .position(|(t, p)| {
            t == "spotter/dev/sighting"
                && serde_json::from_slice::<SightingEvent>(p)
                    .is_ok_and(|e| (e.event, e.sighting.id) == (SightingChange::Ended, 1))
        })
        .unwrap();
    let first_backlog_result = got
        .iter()
        .position(|(t, p)| {
            t == "spotter/dev/result"
                && serde_json::from_slice::<serde_json::Value>(p)
                    .is_ok_and(|r| r["ts_ns"].as_u64().is_some_and(|ts| ts < reconnect_ns))
        })
        .expect("no result queued during the outage was published");
    assert!(
        last_queued < first_backlog_result,
        "sightings overtaken by results queued after them"
    );
    // Home Assistant: retained ON once person 1 started, and the last state
    // says whether a person sighting is still open.
    let states: Vec<String> = sub
        .messages("spotter/dev/sighting/person/state")
        .iter()
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect();
    assert!(states.iter().any(|s| s == "ON"), "{states:?}");
    let still_open = !first[3..].iter().any(|e| e.event == SightingChange::Ended);
    assert_eq!(
        states.last().map(String::as_str),
        Some(if still_open { "ON" } else { "OFF" }),
        "{states:?}"
    );
    let ha = sub.messages("homeassistant/binary_sensor/dev/label_person/config");
    let v: serde_json::Value =
        serde_json::from_slice(ha.first().expect("no HA discovery")).unwrap();
    assert_eq!(v["state_topic"], "spotter/dev/sighting/person/state");
}

// Would catch an unbounded outbox, dropping the newest instead of the
// oldest, drops going uncounted, or a warning per dropped result.
#[test]
fn small_outbox_bound_drops_oldest_counts_and_logs_once() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    // The broker is not running yet: everything queues.
    let mut broker = Broker::start(dir.path(), &pki);
    let sub = Subscriber::start(broker.port, &pki);
    broker.stop();
    let mut d = Daemon::start(
        dir.path(),
        &config(
            dir.path(),
            &pki,
            broker.port,
            "dev",
            false,
            "outbox_max_records = 3",
        ),
    );
    // One pass over the photos (some frames may be replaced before
    // inference takes them; what counts is what was stored).
    wait_status(&d, 120, "the single pass to finish", |s| {
        s["readiness"]["checks"]["source"]["detail"]
            .as_str()
            .unwrap_or("")
            .contains("finished")
    });
    std::thread::sleep(Duration::from_millis(500));
    let s = mqtt_status(&d);
    let n = s["counters"]["results_stored"].as_u64().unwrap();
    assert!(n > 3, "{s}");
    assert_eq!(s["mqtt"]["outbox_records"], 3, "{s}");
    assert_eq!(s["mqtt"]["dropped"].as_u64(), Some(n - 3), "{s}");
    let m = d.client().get("/metrics").unwrap().body;
    assert!(
        m.contains(&format!("spotter_mqtt_outbox_dropped_total {}", n - 3)),
        "{m}"
    );
    assert_eq!(log_count(&d, MQTT_OUTBOX_OVERFLOW), 1, "log:\n{}", d.log());
    broker.spawn();
    wait_status(&d, 60, "the 3 kept results acknowledged", |s| {
        s["mqtt"]["acked"].as_u64() == Some(3)
    });
    let (st, _) = d.terminate();
    assert!(st.success());
    let (all, _) = stored(&d);
    let newest: Vec<String> = all[all.len() - 3..].iter().map(|r| r.id.clone()).collect();
    let (got, _) = dedup(&sub.results("dev"));
    assert_eq!(
        got.keys().cloned().collect::<Vec<_>>(),
        newest,
        "the newest three, not the oldest"
    );
}

// Would catch a login or certificate failure that is silent, unclear, logged
// on every retry, or that takes the local pipeline and API down with it.
#[test]
fn bad_credentials_and_wrong_ca_are_clear_errors_and_the_api_keeps_working() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let broker = Broker::start(dir.path(), &pki);
    let (dx, dy) = (dir.path().join("x"), dir.path().join("y"));
    std::fs::create_dir_all(&dx).unwrap();
    std::fs::create_dir_all(&dy).unwrap();
    let cx = config(&dx, &pki, broker.port, "dev-x", true, "");
    std::fs::write(dx.join("mqtt-password"), "not-the-password\n").unwrap();
    owner_only(&dx.join("mqtt-password"));
    let x = Daemon::start(&dx, &cx);
    let cy = config(&dy, &pki, broker.port, "dev-y", true, "protocol = \"5\"").replace(
        &format!("ca_file = \"{}\"", pki.ca.display()),
        &format!("ca_file = \"{}\"", pki.other_ca.display()),
    );
    let y = Daemon::start(&dy, &cy);
    for (d, id, words) in [
        (&x, MQTT_AUTH_FAILED, "refused the login"),
        (&y, MQTT_TLS_FAILED, "TLS failed"),
    ] {
        // Several retries (every 200 ms to 1 s) happen while the pipeline runs.
        let s = wait_status(d, 120, "results stored and an MQTT error", |s| {
            s["counters"]["results_stored"].as_u64().unwrap_or(0) >= 10
                && s["mqtt"]["last_error"].is_string()
        });
        assert_eq!(s["mqtt"]["connected"], false);
        let err = s["mqtt"]["last_error"].as_str().unwrap();
        assert!(err.contains(words), "{err}");
        assert_eq!(d.anonymous_client().get("/readyz").unwrap().status, 200);
        assert_eq!(
            d.client().get("/api/v1/results/latest").unwrap().status,
            200
        );
        assert_eq!(
            log_count(d, id),
            1,
            "logged once, not on every retry; log:\n{}",
            d.log()
        );
    }
    assert!(
        x.log().contains("bad user name or password") || x.log().contains("not authorized"),
        "{}",
        x.log()
    );
    assert!(
        y.log().contains("UnknownIssuer") || y.log().contains("certificate"),
        "{}",
        y.log()
    );
}

// Measures what the outbox costs per stored result (the second sled tree in
// the insert transaction). Run:
// cargo test --test daemon -- --ignored --nocapture mqtt::measure_outbox_insert_overhead
#[test]
#[ignore]
fn measure_outbox_insert_overhead() {
    let rec = |i: u64| ResultRecord {
        id: String::new(),
        ts_ns: 1_700_000_000_000_000_000 + i,
        source: "files:/x".into(),
        origin: "/x/a.jpg".into(),
        frame_seq: i,
        model_sha256: "ab".repeat(32),
        runtime: "litert".into(),
        classes: (0..5)
            .map(|k| spotter::core::result::ClassScore {
                index: k,
                label: format!("label {k}"),
                raw: 10.0,
                score: 0.1,
            })
            .collect(),
        detections: vec![],
        image_width: 640,
        image_height: 480,
        latency: Default::default(),
        clock_synchronized: true,
        boottime_ns: 0,
        source_name: String::new(),
    };
    let n = 5000u64;
    for outbox in [false, true, false, true] {
        let dir = tempfile::tempdir().unwrap();
        let mut store = spotter::store::Store::open_with(dir.path(), 1000).unwrap();
        if outbox {
            store = store
                .with_outbox(spotter::store::OutboxLimits {
                    max_records: 100_000,
                    max_bytes: 1 << 30,
                })
                .unwrap();
        }
        let t = Instant::now();
        for i in 0..n {
            store.insert(&mut rec(i)).unwrap();
        }
        println!(
            "outbox={outbox}: {:.1} µs per insert",
            t.elapsed().as_secs_f64() * 1e6 / n as f64
        );
    }
}

// Measures the fastest backlog drain (rate limit out of the way) after a
// 10 s outage. Run:
// cargo test --test daemon -- --ignored --nocapture mqtt::measure_drain_rate_unlimited
#[test]
#[ignore]
fn measure_drain_rate_unlimited() {
    let (backlog, took) = outage(
        Duration::from_secs(10),
        false,
        "drain_rate_per_s = 1000000.0\nmax_inflight = 100",
    );
    println!(
        "unlimited drain: {backlog} results in {took:?} = {:.0} results/s",
        backlog as f64 / took.as_secs_f64()
    );
}

/// Mode 0600: Spotter refuses secret files others can read (issue 23).
fn owner_only(p: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600)).unwrap();
}
