//! The support bundle (issue 22) from the real daemon and the command line:
//! `GET /api/v1/support-bundle`, `spotter support-bundle` while the daemon
//! runs (through its API, doctor's report added) and after it stopped
//! (from the files). Each bundle has its sections and none of the secrets
//! planted: the MQTT password (in its password file), the API keys and
//! their hashes, the TLS private key.

use std::path::Path;
use std::process::Command;

use crate::common::{bin, free_port, photo_dir, testdata, unpack_support_bundle as unpack, Daemon};

const MQTT_PASSWORD: &str = "mqtt-password-planted-5b9e2c71";

fn entry<'a>(entries: &'a [(String, Vec<u8>)], name: &str) -> &'a [u8] {
    &entries
        .iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("{name} missing"))
        .1
}

/// Each of `names` present and non-empty, JSON entries parse, no secret in
/// any byte (compressed or not); the effective config keeps the password
/// file's path.
fn check(gz: &[u8], names: &[&str], secrets: &[String], password_file: &Path) {
    let (raw, entries) = unpack(gz);
    for want in names {
        assert!(!entry(&entries, want).is_empty(), "{want} is empty");
    }
    for (name, bytes) in &entries {
        if name.ends_with(".json") {
            serde_json::from_slice::<serde_json::Value>(bytes)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
    let config: serde_json::Value = serde_json::from_slice(entry(&entries, "config.json")).unwrap();
    assert_eq!(
        config["settings"]["mqtt"]["password_file"],
        password_file.display().to_string(),
        "{config}"
    );
    let (raw, gz) = (String::from_utf8_lossy(&raw), String::from_utf8_lossy(gz));
    for s in secrets {
        assert!(!raw.contains(s.as_str()), "secret in the bundle: {s}");
        assert!(!gz.contains(s.as_str()), "secret in the bundle: {s}");
    }
}

/// The secrets that exist now: the MQTT password, every API key secret
/// given, every stored key hash, the TLS private key's base64 lines.
fn secrets(state: &Path, keys: &[String]) -> Vec<String> {
    let mut out = vec![MQTT_PASSWORD.to_string()];
    out.extend(keys.iter().cloned());
    let file: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state.join("keys.json")).unwrap()).unwrap();
    for k in file["keys"].as_array().unwrap() {
        out.push(k["sha256"].as_str().unwrap().to_string());
    }
    let pem = std::fs::read_to_string(state.join("tls/key.pem")).unwrap();
    let lines: Vec<String> = pem
        .lines()
        .filter(|l| !l.starts_with("-----") && l.len() >= 16)
        .map(str::to_string)
        .collect();
    assert!(!lines.is_empty(), "no TLS key material to look for");
    out.extend(lines);
    out
}

fn run_cli(config: &Path, out: &Path) {
    let o = Command::new(bin())
        .args(["support-bundle", "--journal-lines", "50", "--config"])
        .arg(config)
        .arg("--out")
        .arg(out)
        .env_remove("SPOTTER_API_KEY")
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "support-bundle failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

// Would catch: the route or the command missing a section, the MQTT
// password, an API key, a key hash or the TLS private key reaching the
// bundle (through the config, status, the journal or anywhere), the CLI
// not going through the running daemon (or failing without it), and the
// bundle not audited.
#[test]
fn bundles_from_api_and_cli_hold_no_secret() {
    let tmp = tempfile::tempdir().unwrap();
    let password_file = tmp.path().join("mqtt-password");
    std::fs::write(&password_file, format!("{MQTT_PASSWORD}\n")).unwrap();
    let mut perms = std::fs::metadata(&password_file).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o600);
    std::fs::set_permissions(&password_file, perms).unwrap();
    let config = format!(
        "[daemon]\nstate_dir = \"@STATE@\"\n\n\
         [source]\nkind = \"files\"\ndir = \"{}\"\nfps = 2.0\nloop = true\n\n\
         [model]\npath = \"{}\"\nruntime = \"builtin\"\nthreads = 1\n\n\
         [api]\nlisten = \"127.0.0.1:@PORT@\"\n\n\
         [mqtt]\nenabled = true\nhost = \"127.0.0.1\"\nport = {}\ndevice_id = \"cam-1\"\n\
         username = \"spotter\"\npassword_file = \"{}\"\n",
        photo_dir(tmp.path()).0.display(),
        testdata()
            .join("models/classification/mobilenet_v1_0.25_128_quant.tflite")
            .display(),
        free_port(),
        password_file.display(),
    );
    let mut d = Daemon::start(tmp.path(), &config);
    let c = d.client();
    c.wait_for("/api/v1/status", 60, |r| r.status == 200);
    let state = tmp.path().join("state");
    let admin = std::fs::read_to_string(state.join("initial-admin-key"))
        .unwrap()
        .trim()
        .to_string();
    let made = Command::new(bin())
        .args(["keys", "--config"])
        .arg(&d.config)
        .args(["create", "--name", "reader", "--scope", "read"])
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let read_key = String::from_utf8(made.stdout).unwrap().trim().to_string();
    assert!(read_key.len() >= 16, "{read_key}");
    let keys = [admin, read_key.clone()];

    // A read key may not have it.
    let reader = d.client().with_key(Some(read_key));
    let (status, _, _) = reader.get_bytes("/api/v1/support-bundle").unwrap();
    assert_eq!(status, 403);

    let api_names = [
        "README.txt",
        "version.json",
        "config.json",
        "checks.json",
        "status.json",
        "metrics.txt",
        "store.json",
        "model.json",
        "disk.json",
        "power.json",
        "journal.txt",
    ];
    let (status, ctype, gz) = c.get_bytes("/api/v1/support-bundle").unwrap();
    assert_eq!(status, 200);
    assert_eq!(ctype, "application/gzip");
    check(&gz, &api_names, &secrets(&state, &keys), &password_file);
    let (_, entries) = unpack(&gz);
    let status: serde_json::Value = serde_json::from_slice(entry(&entries, "status.json")).unwrap();
    assert!(status["model"].is_object(), "{status}");

    // The command line, through the daemon: the daemon's bundle plus doctor.
    let through = tmp.path().join("through.tar.gz");
    run_cli(&d.config, &through);
    let mut with_doctor = api_names.to_vec();
    with_doctor.push("doctor.txt");
    check(
        &std::fs::read(&through).unwrap(),
        &with_doctor,
        &secrets(&state, &keys),
        &password_file,
    );

    let audit = c.get("/api/v1/audit").unwrap().json();
    let bundles = audit["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["action"] == "support_bundle" && r["outcome"] == "ok")
        .count();
    assert_eq!(bundles, 2, "{audit}");

    // Without the daemon: from the files.
    d.terminate();
    let offline = tmp.path().join("offline.tar.gz");
    run_cli(&d.config, &offline);
    let gz = std::fs::read(&offline).unwrap();
    check(
        &gz,
        &[
            "README.txt",
            "version.json",
            "config.json",
            "doctor.txt",
            "status.json",
            "store.json",
            "model.json",
            "disk.json",
            "power.json",
            "journal.txt",
        ],
        &secrets(&state, &keys),
        &password_file,
    );
    let (_, entries) = unpack(&gz);
    let store: serde_json::Value = serde_json::from_slice(entry(&entries, "store.json")).unwrap();
    assert!(store["stats"]["records"].as_u64().is_some(), "{store}");
}
