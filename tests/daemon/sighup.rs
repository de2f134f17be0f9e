//! SIGHUP on the running daemon, as `systemctl reload spotter` sends it, and
//! the same reload asked for with `POST /api/v1/reload`: a re-read
//! configuration that names another model and another certificate takes
//! effect without a restart. tests/api/reload.rs covers the reload logic piece
//! by piece; this drives the real signal and endpoint end to end.

use crate::common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{photo_dir, testdata, Client, Daemon};

/// A self-signed certificate for 127.0.0.1 and localhost: (cert, key) paths.
fn pair(dir: &Path, stem: &str) -> (PathBuf, PathBuf) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let (c, k) = (
        dir.join(format!("{stem}.crt")),
        dir.join(format!("{stem}.key")),
    );
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    // Issue 23: a private key others can read stops the start.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&k, std::fs::Permissions::from_mode(0o600)).unwrap();
    (c, k)
}

fn sha256_hex(path: &Path) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(std::fs::read(path).unwrap()))
}

/// The admin key the daemon writes at first start.
fn admin_key(d: &Daemon) -> String {
    let key_file = d.dir.join("state/initial-admin-key");
    let t = Instant::now();
    while !key_file.exists() {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "no admin key; log:\n{}",
            d.log()
        );
        d.assert_running();
        std::thread::sleep(Duration::from_millis(50));
    }
    std::fs::read_to_string(&key_file)
        .unwrap()
        .trim()
        .to_string()
}

/// The daemon's configuration text with its placeholders filled in.
fn filled(d: &Daemon, text: &str) -> String {
    common::pre_sightings_defaults(
        &text
            .replace("@STATE@", &d.dir.join("state").display().to_string())
            .replace("@PORT@", &d.port.to_string()),
    )
}

fn config(photos: &Path, model: &Path, cert: &Path, key: &Path) -> String {
    format!(
        "[daemon]\nstate_dir = \"@STATE@\"\nlog_level = \"info\"\n\n\
         [source]\nkind = \"files\"\ndir = \"{}\"\nfps = 20.0\nloop = true\n\n\
         [model]\npath = \"{}\"\nruntime = \"builtin\"\nthreads = 1\n\n\
         [api]\nlisten = \"127.0.0.1:@PORT@\"\ncert = \"{}\"\nkey = \"{}\"\n",
        photos.display(),
        model.display(),
        cert.display(),
        key.display()
    )
}

// Would catch SIGHUP leaving the old model serving (results keep the old
// model's SHA-256), the new certificate not reaching new connections (a
// renewed certificate would need a restart), the daemon restarting or
// dropping out of readiness on a reload, or the old certificate still being
// handed to new clients.
#[test]
fn sighup_swaps_the_model_and_the_certificate_of_the_running_daemon() {
    let tmp = tempfile::tempdir().unwrap();
    let (photos, _) = photo_dir(tmp.path());
    let models = testdata().join("models/classification");
    let (model_a, model_b) = (
        models.join("mobilenet_v1_0.25_128_quant.tflite"),
        models.join("mobilenet_v1_0.5_160_quant.tflite"),
    );
    let (sha_a, sha_b) = (sha256_hex(&model_a), sha256_hex(&model_b));
    let (cert_a, key_a) = pair(tmp.path(), "a");
    let (cert_b, key_b) = pair(tmp.path(), "b");
    let mut d = Daemon::start(tmp.path(), &config(&photos, &model_a, &cert_a, &key_a));
    let pid = nix::unistd::Pid::from_raw(d.child.as_ref().unwrap().id() as i32);

    let key = Some(admin_key(&d));
    let (trust_a, trust_b) = (
        Client::new(&cert_a, d.port).with_key(key.clone()),
        Client::new(&cert_b, d.port).with_key(key),
    );
    let latest = trust_a.wait_for("/api/v1/results/latest", 60, |r| {
        r.status == 200 && r.json()["model_sha256"] == sha_a.as_str()
    });
    assert_eq!(latest.json()["model_sha256"], sha_a.as_str());
    assert!(
        trust_b.get("/healthz").is_err(),
        "certificate B served before the reload"
    );

    // The new configuration, then the signal systemctl reload sends.
    std::fs::write(
        &d.config,
        filled(&d, &config(&photos, &model_b, &cert_b, &key_b)),
    )
    .unwrap();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();

    let r = trust_b.wait_for("/api/v1/results/latest", 60, |r| {
        r.status == 200 && r.json()["model_sha256"] == sha_b.as_str()
    });
    assert_eq!(r.json()["model_sha256"], sha_b.as_str());
    // A fresh client: the old one's pooled keep-alive connection rightly
    // keeps certificate A.
    assert!(
        trust_a.get("/healthz").is_ok(),
        "an established connection was dropped by the reload"
    );
    let fresh_a = Client::new(&cert_a, d.port);
    assert!(
        fresh_a.get("/healthz").is_err(),
        "certificate A still handed to new connections after the reload"
    );
    assert_eq!(trust_b.get("/readyz").unwrap().status, 200);
    let status = trust_b.get("/api/v1/status").unwrap().json();
    assert_eq!(status["model"]["sha256"], sha_b.as_str(), "{status}");
    // Issue 23: the reload is in the audit trail, by the signal.
    let audit = trust_b.wait_for("/api/v1/audit", 10, |r| {
        r.status == 200
            && r.json()["records"]
                .as_array()
                .is_some_and(|a| !a.is_empty())
    });
    let rec = &audit.json()["records"][0];
    assert_eq!(rec["action"], "config_reloaded", "{rec}");
    assert_eq!(
        (&rec["client"], &rec["outcome"]),
        (&"signal".into(), &"ok".into())
    );
    d.assert_running();
    let log = d.log();
    assert_eq!(
        log.matches("5e5100a56e644a9d9273547877394e52").count(),
        1,
        "the daemon restarted instead of reloading:\n{log}"
    );
    assert!(d.terminate().0.success());
}

// Would catch POST /api/v1/reload: applying a configuration that does not
// load (or answering 200 for it, or losing the running model), not telling
// the admin which file and line are wrong, leaving the old model running
// after a good reload, not naming settings that need a restart, hiding a
// model that failed to load behind a 200 with no error, or letting a read
// key reload.
#[test]
fn post_reload_applies_the_files_refuses_broken_ones_and_reports_a_failed_model() {
    let tmp = tempfile::tempdir().unwrap();
    let (photos, _) = photo_dir(tmp.path());
    let models = testdata().join("models/classification");
    let (model_a, model_b) = (
        models.join("mobilenet_v1_0.25_128_quant.tflite"),
        models.join("mobilenet_v1_0.5_160_quant.tflite"),
    );
    let (sha_a, sha_b) = (sha256_hex(&model_a), sha256_hex(&model_b));
    let (cert, key) = pair(tmp.path(), "a");
    let mut d = Daemon::start(tmp.path(), &config(&photos, &model_a, &cert, &key));
    let admin = Client::new(&cert, d.port).with_key(Some(admin_key(&d)));
    admin.wait_for("/api/v1/results/latest", 60, |r| {
        r.status == 200 && r.json()["model_sha256"] == sha_a.as_str()
    });
    let running_sha = || {
        admin.get("/api/v1/status").unwrap().json()["model"]["sha256"]
            .as_str()
            .map(str::to_string)
    };

    // A read key may not reload.
    let created = std::process::Command::new(common::bin())
        .arg("keys")
        .arg("--config")
        .arg(&d.config)
        .args(["create", "--name", "reader", "--scope", "read"])
        .output()
        .unwrap();
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let read_key = String::from_utf8_lossy(&created.stdout).trim().to_string();
    let reader = Client::new(&cert, d.port).with_key(Some(read_key));
    assert_eq!(
        reader.send("POST", "/api/v1/reload", b"").unwrap().status,
        403
    );

    // A broken file: refused with its line, nothing changes.
    let good = filled(&d, &config(&photos, &model_b, &cert, &key));
    let broken = good.replace("[store]\n", "[store]\nmax_recrods = 5\n");
    std::fs::write(&d.config, broken).unwrap();
    let r = admin.send("POST", "/api/v1/reload", b"").unwrap();
    assert_eq!(r.status, 422, "{}", r.body);
    let p = r.json();
    assert_eq!(p["code"], "config_invalid", "{p}");
    let detail = p["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("max_recrods") && detail.contains(&d.config.display().to_string()),
        "{detail}"
    );
    assert_eq!(
        running_sha().as_deref(),
        Some(sha_a.as_str()),
        "a refused configuration changed the model"
    );

    // A good file with another model and a setting that needs a restart.
    std::fs::write(&d.config, good.replace("fps = 20.0", "fps = 10.0")).unwrap();
    let r = admin.send("POST", "/api/v1/reload", b"").unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let body = r.json();
    assert_eq!(body["running"]["sha256"], sha_b.as_str(), "{body}");
    assert_eq!(
        body["restart_needed"],
        // The stall timeout, unset, follows the frame rate (issue 19).
        serde_json::json!(["source.fps", "source.stall_timeout_ms"]),
        "{body}"
    );
    assert!(
        body["model_error"].is_null() && body["tls"]["sha256"].is_string(),
        "{body}"
    );
    admin.wait_for("/api/v1/results/latest", 60, |r| {
        r.status == 200 && r.json()["model_sha256"] == sha_b.as_str()
    });

    // A model that does not load: reported, and the previous one keeps serving.
    let junk = tmp.path().join("junk.tflite");
    std::fs::write(&junk, b"not a flatbuffer").unwrap();
    std::fs::write(&d.config, filled(&d, &config(&photos, &junk, &cert, &key))).unwrap();
    let r = admin.send("POST", "/api/v1/reload", b"").unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let body = r.json();
    assert!(
        body["model_error"].as_str().is_some_and(|e| !e.is_empty()),
        "{body}"
    );
    assert_eq!(body["running"]["sha256"], sha_b.as_str(), "{body}");
    assert_eq!(admin.get("/readyz").unwrap().status, 200);
    // Issue 23: each reload is audited with its outcome (the refused one
    // with the reason), and the key the command line created meanwhile is
    // taken into the trail on a reload.
    let audit = admin.wait_for("/api/v1/audit", 10, |r| {
        r.status == 200 && r.json()["records"].as_array().is_some_and(|a| a.len() >= 4)
    });
    let v = audit.json();
    let recs = v["records"].as_array().unwrap();
    let count = |action: &str, outcome: &str, client: &str| {
        recs.iter()
            .filter(|r| r["action"] == action && r["outcome"] == outcome && r["client"] == client)
            .count()
    };
    assert_eq!(count("config_reloaded", "ok", "127.0.0.1"), 2, "{v}");
    assert_eq!(count("config_reloaded", "refused", "127.0.0.1"), 1, "{v}");
    assert_eq!(count("key_created", "ok", "cli"), 1, "{v}");
    assert!(
        recs.iter().any(|r| r["reason"]
            .as_str()
            .is_some_and(|s| s.contains("max_recrods"))),
        "{v}"
    );
    d.assert_running();
    assert!(d.terminate().0.success());
}
