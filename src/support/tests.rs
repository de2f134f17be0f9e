use std::io::Read;

use super::*;

/// A journal that answers fixed text.
struct Fake(&'static str);
impl Journal for Fake {
    fn tail(&self, _: usize) -> String {
        self.0.to_string()
    }
}

/// The entries of a tar.gz: (path, bytes).
fn entries(gz: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(gz));
    let mut out = Vec::new();
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let path = e.path().unwrap().to_string_lossy().into_owned();
        let mut v = Vec::new();
        e.read_to_end(&mut v).unwrap();
        out.push((path, v));
    }
    out
}

// Catches: a password, token or secret-named value kept in config.json, PEM
// text or URL credentials under an innocent key kept, or file paths (which
// support needs) redacted along with them.
#[test]
fn redacts_secrets_keeps_paths() {
    let v = serde_json::json!({
        "mqtt": {
            "password": "hunter2",
            "password_file": "/etc/spotter/mqtt.pass",
            "client_key": "/etc/spotter/client.key",
            "username": "cam",
        },
        "x": {"session_secret": "s3", "api_token": "t0k", "private_key_pem": "p"},
        "y": ["-----BEGIN PRIVATE KEY-----\nAAAA", "https://u:pw@host/x", "https://host/x@y"],
        "absent_password": null,
    });
    let r = redact(v);
    let text = r.to_string();
    for secret in ["hunter2", "s3\"", "t0k", "AAAA", "u:pw"] {
        assert!(!text.contains(secret), "{secret} in {text}");
    }
    assert_eq!(r["mqtt"]["password"], REDACTED);
    assert_eq!(r["mqtt"]["password_file"], "/etc/spotter/mqtt.pass");
    assert_eq!(r["mqtt"]["client_key"], "/etc/spotter/client.key");
    assert_eq!(r["mqtt"]["username"], "cam");
    assert_eq!(r["y"][2], "https://host/x@y");
    assert!(r["absent_password"].is_null());
}

// Catches: an entry missing from the archive, entries outside the bundle's
// directory, JSON sections that do not parse, or the journal's text lost.
#[test]
fn bundle_has_every_common_section() {
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "[daemon]\nstate_dir = \"{0}/state\"\n[store]\ndir = \"{0}/store\"\n[source]\nkind = \"files\"\ndir = \"{0}\"\n[model]\npath = \"{0}/m.tflite\"\n[power]\nsysfs_root = \"{0}/sys\"\n",
        dir.path().display()
    );
    std::fs::create_dir_all(dir.path().join("state")).unwrap();
    let cfg = dir.path().join("spotter.toml");
    std::fs::write(&cfg, toml).unwrap();
    let settings = crate::config::load(&cfg).unwrap();
    let mut b = Bundle::new(SystemTime::now());
    b.common(&settings, None, None, &Fake("journal line one\n"), 10)
        .unwrap();
    let root = b.root().to_string();
    let got = entries(&b.finish().unwrap());
    let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
    for want in [
        "README.txt",
        "version.json",
        "config.json",
        "disk.json",
        "model.json",
        "power.json",
        "journal.txt",
    ] {
        assert!(
            names.contains(&format!("{root}/{want}").as_str()),
            "{want}: {names:?}"
        );
    }
    for (name, bytes) in &got {
        assert!(name.starts_with(&format!("{root}/")), "{name}");
        assert!(!bytes.is_empty(), "{name} empty");
        if name.ends_with(".json") {
            serde_json::from_slice::<Value>(bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
    let journal = &got
        .iter()
        .find(|(n, _)| n.ends_with("journal.txt"))
        .unwrap()
        .1;
    assert_eq!(journal, b"journal line one\n");
    let version: Value = serde_json::from_slice(
        &got.iter()
            .find(|(n, _)| n.ends_with("version.json"))
            .unwrap()
            .1,
    )
    .unwrap();
    assert_eq!(version["version"], env!("CARGO_PKG_VERSION"));
}

// Catches: an absent journalctl failing the bundle (or hanging) instead of
// a line saying so.
#[test]
fn absent_journalctl_is_a_line() {
    let j = Journalctl {
        program: PathBuf::from("/nonexistent/journalctl"),
        ..Journalctl::default()
    };
    let text = j.tail(5);
    assert!(text.contains("not available"), "{text}");
    // A bare name is looked up in PATH.
    let j = Journalctl {
        program: PathBuf::from("journalctl-not-installed-anywhere"),
        ..Journalctl::default()
    };
    let text = j.tail(5);
    assert!(text.contains("not available"), "{text}");
}

// Catches: a journalctl that never ends holding the bundle (and an API
// request) forever: it is killed at the timeout and what it wrote is kept.
#[test]
fn slow_journalctl_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("journalctl");
    std::fs::write(&script, "#!/bin/sh\necho started\nexec sleep 30\n").unwrap();
    let mut perms = std::fs::metadata(&script).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&script, perms).unwrap();
    let j = Journalctl {
        program: script,
        unit: UNIT.into(),
        timeout: Duration::from_millis(500),
    };
    let started = Instant::now();
    let text = j.tail(5);
    assert!(started.elapsed() < Duration::from_secs(20), "not killed");
    assert!(text.contains("was killed"), "{text}");
    assert!(text.contains("started"), "{text}");
}

// Catches: journalctl's arguments (unit, line count, format) wrong, or its
// output cut at the byte bound without saying so.
#[test]
fn journalctl_arguments_and_bound() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("journalctl");
    std::fs::write(
        &script,
        "#!/bin/sh\necho \"$@\"\nhead -c 5000000 /dev/zero\n",
    )
    .unwrap();
    let mut perms = std::fs::metadata(&script).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&script, perms).unwrap();
    let j = Journalctl {
        program: script,
        ..Journalctl::default()
    };
    let text = j.tail(7);
    assert!(
        text.starts_with("-u spotter -n 7 -o short-iso --no-pager\n"),
        "{}",
        &text[..80]
    );
    assert!(text.len() < MAX_JOURNAL_BYTES + 100);
    assert!(text.ends_with(&format!("[cut at {MAX_JOURNAL_BYTES} bytes]\n")));
}

// Catches: a bundle growing without bound (entries beyond the limit kept).
#[test]
fn bundle_is_bounded() {
    let mut b = Bundle::new(SystemTime::now());
    assert!(b.bytes("big", vec![0; MAX_BUNDLE_BYTES]).is_err());
    assert!(b.bytes("small", vec![0; 10]).is_ok());
}

// Catches: the daemon's bundle losing entries when the CLI adds doctor's
// report to it, or a garbage / hostile archive (entries outside the
// bundle's directory) taken as a bundle.
#[test]
fn read_back_and_refuse_garbage() {
    let mut b = Bundle::new(SystemTime::now());
    b.text("journal.txt", "x\n").unwrap();
    let root = b.root().to_string();
    let gz = b.finish().unwrap();
    let mut again = Bundle::read(&gz).unwrap();
    assert_eq!(again.root(), root);
    again.text("doctor.txt", "ok\n").unwrap();
    let names: Vec<String> = entries(&again.finish().unwrap())
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    for want in ["README.txt", "version.json", "journal.txt", "doctor.txt"] {
        assert!(
            names.contains(&format!("{root}/{want}")),
            "{want}: {names:?}"
        );
    }
    assert!(Bundle::read(b"not a gzip").is_err());
    assert!(Bundle::read(&gz[..gz.len() / 2]).is_err());
    // An entry outside the top directory.
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::default(),
    ));
    let mut h = tar::Header::new_gnu();
    h.set_size(1);
    h.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut h, "loose.txt", &b"x"[..]).unwrap();
    let gz = tar.into_inner().unwrap().finish().unwrap();
    assert!(Bundle::read(&gz).is_err());
}
