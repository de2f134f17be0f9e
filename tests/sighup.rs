//! SIGHUP on the running daemon, as `systemctl reload spotter` sends it:
//! a re-read configuration that names another model and another certificate
//! takes effect without a restart. tests/reload.rs covers the reload logic
//! piece by piece; this drives the real signal end to end.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{photo_dir, testdata, Client, Daemon};

/// A self-signed certificate for 127.0.0.1 and localhost: (cert, key) paths.
fn pair(dir: &Path, stem: &str) -> (PathBuf, PathBuf) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap().self_signed(&key).unwrap();
    let (c, k) = (dir.join(format!("{stem}.crt")), dir.join(format!("{stem}.key")));
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    (c, k)
}

fn sha256_hex(path: &Path) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(std::fs::read(path).unwrap()))
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
    let (model_a, model_b) = (models.join("mobilenet_v1_0.25_128_quant.tflite"), models.join("mobilenet_v1_0.5_160_quant.tflite"));
    let (sha_a, sha_b) = (sha256_hex(&model_a), sha256_hex(&model_b));
    let (cert_a, key_a) = pair(tmp.path(), "a");
    let (cert_b, key_b) = pair(tmp.path(), "b");
    let mut d = Daemon::start(tmp.path(), &config(&photos, &model_a, &cert_a, &key_a));
    let pid = nix::unistd::Pid::from_raw(d.child.as_ref().unwrap().id() as i32);

    let key_file = d.dir.join("state/initial-admin-key");
    let t = Instant::now();
    while !key_file.exists() {
        assert!(t.elapsed() < Duration::from_secs(60), "no admin key; log:\n{}", d.log());
        d.assert_running();
        std::thread::sleep(Duration::from_millis(50));
    }
    let key = Some(std::fs::read_to_string(&key_file).unwrap().trim().to_string());
    let (trust_a, trust_b) = (Client::new(&cert_a, d.port).with_key(key.clone()), Client::new(&cert_b, d.port).with_key(key));
    let latest = trust_a.wait_for("/api/v1/results/latest", 60, |r| r.status == 200 && r.json()["model_sha256"] == sha_a.as_str());
    assert_eq!(latest.json()["model_sha256"], sha_a.as_str());
    assert!(trust_b.get("/healthz").is_err(), "certificate B served before the reload");

    // The new configuration, then the signal systemctl reload sends.
    let text = config(&photos, &model_b, &cert_b, &key_b)
        .replace("@STATE@", &d.dir.join("state").display().to_string())
        .replace("@PORT@", &d.port.to_string());
    std::fs::write(&d.config, text).unwrap();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();

    let r = trust_b.wait_for("/api/v1/results/latest", 60, |r| r.status == 200 && r.json()["model_sha256"] == sha_b.as_str());
    assert_eq!(r.json()["model_sha256"], sha_b.as_str());
    // A fresh client: the old one's pooled keep-alive connection rightly
    // keeps certificate A.
    assert!(trust_a.get("/healthz").is_ok(), "an established connection was dropped by the reload");
    let fresh_a = Client::new(&cert_a, d.port);
    assert!(fresh_a.get("/healthz").is_err(), "certificate A still handed to new connections after the reload");
    assert_eq!(trust_b.get("/readyz").unwrap().status, 200);
    let status = trust_b.get("/api/v1/status").unwrap().json();
    assert_eq!(status["model"]["sha256"], sha_b.as_str(), "{status}");
    d.assert_running();
    let log = d.log();
    assert_eq!(log.matches("5e5100a56e644a9d9273547877394e52").count(), 1, "the daemon restarted instead of reloading:\n{log}");
    assert!(d.terminate().0.success());
}
