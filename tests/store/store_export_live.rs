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
