//! `spotter export` and `spotter doctor` while the daemon runs: sled's lock
//! keeps a second process out of the store, so the CLI asks the daemon's own
//! API instead (`GET /api/v1/backup`, `/api/v1/results/latest`; pinned
//! certificate, admin key).

use crate::common;

use std::process::Command;

use common::{photo_dir, testdata, Daemon};

fn config(photos: &std::path::Path) -> String {
    let model = testdata().join("models/classification/mobilenet_v1_0.25_128_quant.tflite");
    format!(
        "[daemon]\nstate_dir = \"@STATE@\"\n\n\
         [source]\nkind = \"files\"\ndir = \"{}\"\nfps = 20.0\nloop = true\n\n\
         [model]\npath = \"{}\"\nruntime = \"builtin\"\nthreads = 1\n\n\
         [api]\nlisten = \"0.0.0.0:@PORT@\"\n",
        photos.display(),
        model.display()
    )
}

fn export(d: &Daemon, extra: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    Command::new(common::bin())
        .arg("export")
        .arg("--config")
        .arg(&d.config)
        .args(extra)
        .env_remove(spotter::tools::localapi::KEY_ENV)
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

// Would catch `spotter export` failing (or hanging) while the daemon holds
// the store, which is when a technician wants a backup; an export that is
// not the documented format (header, then one record per line, each id
// once); a stored result missing from it; a bad key reported without the
// HTTP refusal or, worse, echoed; and --since being ignored on this path.
#[test]
fn export_while_the_daemon_runs_streams_its_backup_and_refuses_a_bad_key() {
    let tmp = tempfile::tempdir().unwrap();
    let (photos, _) = photo_dir(tmp.path());
    let mut d = Daemon::start(tmp.path(), &config(&photos));
    let client = d.client();
    let first = client
        .wait_for("/api/v1/results/latest", 60, |r| r.status == 200)
        .json();
    let first_id = first["id"].as_str().unwrap().to_string();

    let out = export(&d, &[], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "export failed: {stderr}\nlog:\n{}",
        d.log()
    );
    assert!(stderr.contains("through its API"), "{stderr}");
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines();
    let header: serde_json::Value =
        serde_json::from_str(lines.next().expect("a header line")).unwrap();
    assert_eq!(header["spotter_export"], 1, "{header}");
    let lines: Vec<serde_json::Value> = lines.map(|l| serde_json::from_str(l).unwrap()).collect();
    // Issue 23: audit records (an earlier backup's, say) as `{"audit": …}`.
    let audits = lines.iter().filter(|l| l.get("audit").is_some()).count();
    // Issue 18: sightings follow the results as `{"sighting": …}` lines.
    let (sightings, records): (Vec<_>, Vec<_>) = lines
        .into_iter()
        .filter(|l| l.get("audit").is_none())
        .partition(|l| l.get("sighting").is_some());
    let ids: std::collections::BTreeSet<&str> =
        records.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), records.len(), "an id exported twice");
    assert!(
        ids.contains(first_id.as_str()),
        "a stored result is missing from the export"
    );
    assert!(
        stderr.contains(&format!(
            "exported {} records",
            records.len() + sightings.len() + audits
        )),
        "{stderr}"
    );

    // --since on this path: only results at or after the bound.
    let newest = records
        .iter()
        .map(|r| r["ts_ns"].as_u64().unwrap())
        .max()
        .unwrap();
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(newest as i128).unwrap();
    let since = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:09}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.nanosecond()
    );
    let out = export(&d, &["--since", &since], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let recent: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|l| l.get("sighting").is_none() && l.get("audit").is_none())
        .collect();
    assert!(
        !recent.is_empty() && recent.len() < records.len() + 40,
        "{} of {}",
        recent.len(),
        records.len()
    );
    assert!(
        recent
            .iter()
            .all(|r| r["ts_ns"].as_u64().unwrap() >= newest),
        "--since ignored"
    );

    // A wrong key: refused with the HTTP status, and not echoed.
    let bad = "spk_".to_string() + &"0".repeat(64);
    let out = export(&d, &[], &[(spotter::tools::localapi::KEY_ENV, &bad)]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a wrong key exported");
    assert!(
        stderr.contains("HTTP 401") && !stderr.contains(&bad),
        "{stderr}"
    );
    assert!(out.stdout.is_empty(), "output written for a refused export");
    d.assert_running();
    assert!(d.terminate().0.success());
}

// Would catch `spotter doctor` skipping its newest-result check whenever the
// daemon runs (the usual case on a device), or reporting the age of a result
// it did not read.
#[test]
fn doctor_asks_the_running_daemon_for_the_newest_result() {
    let tmp = tempfile::tempdir().unwrap();
    let (photos, _) = photo_dir(tmp.path());
    let mut d = Daemon::start(tmp.path(), &config(&photos));
    d.client()
        .wait_for("/api/v1/results/latest", 60, |r| r.status == 200);
    let out = Command::new(common::bin())
        .arg("doctor")
        .arg("--config")
        .arg(&d.config)
        .env_remove(spotter::tools::localapi::KEY_ENV)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("results"))
        .unwrap_or_else(|| panic!("no results line:\n{text}"));
    assert!(
        line.contains("asked the running daemon") && line.contains(" s old"),
        "{line}\n{text}"
    );
    d.assert_running();
    assert!(d.terminate().0.success());
}

/// The plaintext of an age file, decrypted with `id`.
fn decrypt(file: &[u8], id: &age::x25519::Identity) -> String {
    use std::io::Read;
    let d = age::Decryptor::new(file).unwrap();
    let mut r = d
        .decrypt(std::iter::once(id as &dyn age::Identity))
        .unwrap();
    let mut text = String::new();
    r.read_to_string(&mut text).unwrap();
    text
}

/// `(result id, image bytes)` of every snapshot line.
fn snapshot_lines(text: &str) -> Vec<(String, Vec<u8>)> {
    use base64::Engine as _;
    text.lines()
        .filter(|l| l.starts_with("{\"snapshot\""))
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let img = base64::engine::general_purpose::STANDARD
                .decode(v["snapshot"]["data"].as_str().unwrap())
                .unwrap();
            (v["snapshot"]["result"].as_str().unwrap().to_string(), img)
        })
        .collect()
}

// Issue 23. Would catch `backup.require_encryption` not stopping a plain
// `spotter export`; `--recipient` not reaching the daemon (a plain or
// unreadable file); snapshots missing from the backup or changed on the
// way (compared with what the daemon serves as the result's image, then
// with what a restored store exports); `spotter import` taking an
// encrypted file without `--identity` (or importing part of it before
// refusing: the later import must still add every record); and a restore
// that does not bring the snapshots back byte for byte.
#[test]
fn encrypted_export_through_the_daemon_restores_snapshots_byte_identical() {
    use age::secrecy::ExposeSecret;
    let tmp = tempfile::tempdir().unwrap();
    let (photos, _) = photo_dir(tmp.path());
    let cfg = format!(
        "{}\n[store]\nsnapshots = true\nsnapshot_min_score = 0.0\n\n[backup]\nrequire_encryption = true\n",
        config(&photos)
    );
    let mut d = Daemon::start(tmp.path(), &cfg);
    let client = d.client();
    client.wait_for("/api/v1/results/latest", 60, |r| r.status == 200);

    let out = export(&d, &[], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("backup.require_encryption"), "{stderr}");
    assert!(out.stdout.is_empty());

    let id = age::x25519::Identity::generate();
    let key_file = tmp.path().join("backup-key.txt");
    std::fs::write(&key_file, id.to_string().expose_secret()).unwrap();
    let out = export(&d, &["--recipient", &id.to_public().to_string()], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}\nlog:\n{}", d.log());
    assert!(stderr.contains("encrypted backup"), "{stderr}");
    assert!(out.stdout.starts_with(spotter::store::backup::AGE_MAGIC));
    let backup = tmp.path().join("backup.age");
    std::fs::write(&backup, &out.stdout).unwrap();
    let text = decrypt(&out.stdout, &id);
    let records = text
        .lines()
        .skip(1)
        .filter(|l| l.starts_with("{\"id\""))
        .count();
    let snaps = snapshot_lines(&text);
    assert!(!snaps.is_empty(), "no snapshot in the backup");
    for (rid, img) in &snaps {
        let (status, _, served) = client
            .get_bytes(&format!("/api/v1/results/{rid}/image"))
            .unwrap();
        assert_eq!(status, 200);
        assert!(&served == img, "snapshot of {rid} changed in the backup");
    }
    assert!(d.terminate().0.success());

    // Restore into a fresh state directory with the CLI.
    let restored = tmp.path().join("restored.toml");
    let state = tmp.path().join("state").display().to_string();
    let fresh = tmp.path().join("fresh").display().to_string();
    std::fs::write(
        &restored,
        std::fs::read_to_string(&d.config)
            .unwrap()
            .replace(&state, &fresh),
    )
    .unwrap();
    let import = |extra: &[&std::ffi::OsStr]| {
        Command::new(common::bin())
            .arg("import")
            .arg("--config")
            .arg(&restored)
            .args(extra)
            .arg(&backup)
            .output()
            .unwrap()
    };
    let out = import(&[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("--identity"),
        "{stderr}"
    );
    let out = import(&["--identity".as_ref(), key_file.as_os_str()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.starts_with(&format!("added {records}, skipped 0"))
            && stdout.contains(&format!("snapshots: added {}, skipped 0", snaps.len())),
        "{stdout}"
    );
    let out = Command::new(common::bin())
        .args(["export", "--config"])
        .arg(&restored)
        .args(["--recipient", &id.to_public().to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(snapshot_lines(&decrypt(&out.stdout, &id)), snaps);
}
