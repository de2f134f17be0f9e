//! journald output: the daemon, started as systemd would (JOURNAL_STREAM
//! naming its stderr), sends native-protocol datagrams to
//! /run/systemd/journal/socket. The test runs it in a private mount
//! namespace (`unshare -m`, needs root) whose /run/systemd/journal is a
//! folder holding the test's own datagram socket, so the real logger code
//! path is exercised with no test hook in the daemon. Outside CI, a machine
//! where `unshare -m` is not permitted skips with a message.
//!
//! Also checks the MESSAGE_ID catalogue: every id in src/core/ids.rs is a unique
//! 128-bit id and appears in docs/field-guide.md with a journalctl line.

use crate::common;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use spotter::core::ids;

/// One journal entry: field name → values (a field may repeat).
type Entry = BTreeMap<String, Vec<String>>;

/// Parse one datagram of the journal's native protocol: `KEY=value\n`, or
/// `KEY\n` + 64-bit little-endian length + value + `\n` for values that
/// contain newlines.
fn parse(mut b: &[u8]) -> Entry {
    let mut e = Entry::new();
    while !b.is_empty() {
        let nl = b
            .iter()
            .position(|&c| c == b'\n')
            .expect("field without newline");
        let line = &b[..nl];
        let (key, value, rest) = if let Some(eq) = line.iter().position(|&c| c == b'=') {
            (&line[..eq], line[eq + 1..].to_vec(), &b[nl + 1..])
        } else {
            let after = &b[nl + 1..];
            let len = u64::from_le_bytes(after[..8].try_into().unwrap()) as usize;
            let value = after[8..8 + len].to_vec();
            assert_eq!(
                after[8 + len],
                b'\n',
                "length-encoded field not newline-terminated"
            );
            (line, value, &after[8 + len + 1..])
        };
        e.entry(String::from_utf8_lossy(key).into_owned())
            .or_default()
            .push(String::from_utf8_lossy(&value).into_owned());
        b = rest;
    }
    e
}

fn field<'a>(e: &'a Entry, k: &str) -> Option<&'a str> {
    e.get(k).and_then(|v| v.first()).map(String::as_str)
}

fn unshare_works() -> bool {
    Command::new("unshare")
        .args(["-m", "true"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

// Would catch the ready, camera-lost and model-rejected events reaching
// journald without their MESSAGE_ID or structured fields (technicians' saved
// `journalctl MESSAGE_ID=…` queries would find nothing, `SPOTTER_*` filters
// would miss them), events going to stderr instead of the journal under
// systemd, or key material (the initial admin key, the TLS private key)
// appearing in any journal field. The daemon becomes ready on a real model,
// loses its source (the photo folder is emptied, as when a camera is
// unplugged), then is sent SIGHUP after its model file was replaced by junk.
#[test]
fn ready_camera_lost_and_model_rejected_reach_the_journal_with_ids_and_fields_and_no_secrets() {
    if !unshare_works() {
        assert!(
            !common::in_ci(),
            "`unshare -m` failed: the journald test needs root and mount namespaces"
        );
        eprintln!("SKIP journald test: `unshare -m` not permitted here");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let jdir = tmp.path().join("journal");
    std::fs::create_dir(&jdir).unwrap();
    let sock = UnixDatagram::bind(jdir.join("socket")).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();

    let photos = tmp.path().join("photos");
    std::fs::create_dir(&photos).unwrap();
    let photo = photos.join("a.png");
    image::RgbImage::from_pixel(32, 32, image::Rgb([200, 30, 30]))
        .save(&photo)
        .unwrap();
    let port = common::free_port();
    let state = tmp.path().join("state");
    let model = tmp.path().join("model.tflite");
    std::fs::copy(
        common::testdata().join("models/classification/mobilenet_v1_0.25_128_quant.tflite"),
        &model,
    )
    .unwrap();
    let model_sha = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(std::fs::read(&model).unwrap()))
    };
    let config = tmp.path().join("spotter.toml");
    std::fs::write(
        &config,
        format!(
            "[daemon]\nstate_dir = {state:?}\n\
             [source]\nkind = \"files\"\ndir = {photos:?}\nfps = 20.0\nretry_initial_ms = 200\nretry_max_ms = 400\n\
             [model]\npath = {model:?}\nruntime = \"builtin\"\nretry_ms = 60000\n\
             [api]\nlisten = \"127.0.0.1:{port}\"\n"
        ),
    )
    .unwrap();
    let log_path = tmp.path().join("stderr.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let meta = log.metadata().unwrap();
    // systemd sets JOURNAL_STREAM to the dev:ino of the stream it connects to
    // stderr; the logger uses journald only when they match.
    let journal_stream = format!("{}:{}", meta.dev(), meta.ino());
    let child = Command::new("unshare")
        .args([
            "-m",
            "sh",
            "-c",
            "mount -t tmpfs tmpfs /run && mkdir -p /run/systemd/journal && \
             mount --bind \"$1\" /run/systemd/journal && exec \"$2\" run --config \"$3\"",
            "sh",
        ])
        .arg(&jdir)
        .arg(common::bin())
        .arg(&config)
        .env("JOURNAL_STREAM", &journal_stream)
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child_guard = Kill(child);
    let pid = nix::unistd::Pid::from_raw(child_guard.0.id() as i32);

    let mut entries: Vec<Entry> = Vec::new();
    let mut buf = vec![0u8; 256 * 1024];
    let (mut removed_photo, mut sent_hup) = (false, false);
    let deadline = Instant::now() + Duration::from_secs(90);
    let has =
        |entries: &[Entry], id: &str| entries.iter().any(|e| field(e, "MESSAGE_ID") == Some(id));
    while !(has(&entries, ids::READY)
        && has(&entries, ids::SOURCE_LOST)
        && has(&entries, ids::MODEL_REJECTED))
    {
        if let Ok(Some(st)) = child_guard.0.try_wait() {
            panic!(
                "daemon exited ({st}); stderr:\n{}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            );
        }
        assert!(
            Instant::now() < deadline,
            "timed out; journal entries so far: {:#?}\nstderr:\n{}",
            entries
                .iter()
                .map(|e| field(e, "MESSAGE").unwrap_or("").to_string())
                .collect::<Vec<_>>(),
            std::fs::read_to_string(&log_path).unwrap_or_default()
        );
        if let Ok(n) = sock.recv(&mut buf) {
            if n > 0 {
                entries.push(parse(&buf[..n]));
            }
        }
        // Once ready, empty the folder: the next rescan finds no image and
        // the source is lost, as when a camera is unplugged.
        if !removed_photo && has(&entries, ids::READY) {
            std::fs::remove_file(&photo).unwrap();
            removed_photo = true;
        }
        // Once lost, replace the model file by junk and reload.
        if !sent_hup && has(&entries, ids::SOURCE_LOST) {
            std::fs::write(&model, b"this is not a TFLite model").unwrap();
            nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
            sent_hup = true;
        }
    }

    let stderr_text = std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(
        !stderr_text.contains("model rejected"),
        "under systemd, events go to the journal, not stderr:\n{stderr_text}"
    );

    let ready = entries
        .iter()
        .find(|e| field(e, "MESSAGE_ID") == Some(ids::READY))
        .unwrap();
    assert_eq!(
        field(ready, "PRIORITY"),
        Some("5"),
        "ready is a notice (log info): {ready:?}"
    );
    assert!(
        field(ready, "SPOTTER_SOURCE").is_some_and(|s| s.contains(photos.to_str().unwrap())),
        "{ready:?}"
    );
    assert_eq!(
        field(ready, "SPOTTER_MODEL_SHA256"),
        Some(model_sha.as_str()),
        "{ready:?}"
    );
    assert_eq!(
        field(ready, "SPOTTER_RUNTIME"),
        Some("builtin"),
        "{ready:?}"
    );
    // Readiness does not wait for a first result; when one exists the event
    // carries its top label and score.
    if let Some(label) = field(ready, "SPOTTER_LABEL") {
        assert!(!label.is_empty(), "{ready:?}");
        let score: f64 = field(ready, "SPOTTER_SCORE")
            .expect("label without score")
            .parse()
            .unwrap();
        assert!((0.0..=1.0).contains(&score), "{ready:?}");
    }

    let lost = entries
        .iter()
        .find(|e| field(e, "MESSAGE_ID") == Some(ids::SOURCE_LOST))
        .unwrap();
    assert_eq!(
        field(lost, "PRIORITY"),
        Some("4"),
        "camera lost is a warning: {lost:?}"
    );
    assert_eq!(
        field(lost, "SPOTTER_ERROR_KIND"),
        Some("source_lost"),
        "{lost:?}"
    );
    let source =
        field(lost, "SPOTTER_SOURCE").unwrap_or_else(|| panic!("no SPOTTER_SOURCE: {lost:?}"));
    assert!(
        source.contains(photos.to_str().unwrap()),
        "SPOTTER_SOURCE names the source: {source}"
    );
    assert!(
        field(lost, "MESSAGE")
            .unwrap()
            .contains("no JPEG, PNG or BMP images"),
        "{lost:?}"
    );
    assert_eq!(field(lost, "SYSLOG_IDENTIFIER"), Some("spotter"));

    let rejected = entries
        .iter()
        .find(|e| field(e, "MESSAGE_ID") == Some(ids::MODEL_REJECTED))
        .unwrap();
    assert_eq!(
        field(rejected, "PRIORITY"),
        Some("3"),
        "model rejected is an error: {rejected:?}"
    );
    assert_eq!(
        field(rejected, "SPOTTER_ERROR_KIND"),
        Some("model_load"),
        "{rejected:?}"
    );
    assert_eq!(
        field(rejected, "SPOTTER_MODEL_PATH"),
        Some(model.to_str().unwrap()),
        "{rejected:?}"
    );
    assert!(
        field(rejected, "MESSAGE").unwrap().contains("model.tflite"),
        "{rejected:?}"
    );

    // Start-up events a technician needs are there too.
    for id in [
        ids::STARTED,
        ids::MODEL_ACTIVATED,
        ids::CERT_GENERATED,
        ids::INITIAL_ADMIN_KEY_CREATED,
    ] {
        assert!(has(&entries, id), "no entry with MESSAGE_ID={id}");
    }

    // No secrets: neither the admin key nor the TLS private key, in any field.
    let admin_key = std::fs::read_to_string(state.join("initial-admin-key")).unwrap();
    let admin_key = admin_key.trim();
    assert!(admin_key.len() >= 32, "unexpected key file content");
    let tls_key = std::fs::read_to_string(state.join("tls/key.pem")).unwrap();
    let tls_body: String = tls_key
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    for e in &entries {
        for (k, values) in e {
            for v in values {
                assert!(!v.contains(admin_key), "admin key in journal field {k}");
                let flat: String = v.lines().collect();
                assert!(
                    tls_body.len() < 40 || !flat.contains(&tls_body[..40]),
                    "TLS private key in journal field {k}"
                );
                assert!(
                    !v.contains("PRIVATE KEY"),
                    "private key material in journal field {k}"
                );
            }
        }
    }
    let _ = child_guard.0.kill();
}

/// `(NAME, id)` for every `pub const NAME: &str = "…";` in src/core/ids.rs.
fn catalogue() -> Vec<(String, String)> {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/core/ids.rs"))
            .unwrap();
    text.lines()
        .filter_map(|l| {
            let rest = l.trim().strip_prefix("pub const ")?;
            let (name, rest) = rest.split_once(':')?;
            Some((name.trim().to_string(), rest.split('"').nth(1)?.to_string()))
        })
        .collect()
}

// Would catch a MESSAGE_ID that is not a 128-bit id, two events sharing an
// id, or an event the field guide does not explain (a technician filtering
// by it would not know what it means or what to do).
#[test]
fn every_message_id_is_unique_128_bit_and_in_the_field_guide() {
    let ids = catalogue();
    assert!(ids.len() >= 13, "src/core/ids.rs parsed to {ids:?}");
    let guide =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/field-guide.md"))
            .unwrap();
    let mut seen = std::collections::HashSet::new();
    for (name, id) in &ids {
        assert!(
            id.len() == 32
                && id
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
            "{name}: {id}"
        );
        assert!(seen.insert(id.clone()), "{name} reuses {id}");
        let row = guide
            .lines()
            .find(|l| l.starts_with('|') && l.contains(id.as_str()))
            .unwrap_or_else(|| panic!("docs/field-guide.md has no table row for {name} ({id})"));
        assert!(
            row.split('|').filter(|c| !c.trim().is_empty()).count() >= 4,
            "{name}: row lacks meaning or action: {row}"
        );
    }
    // The events the issue requires a stable id for.
    for name in [
        "STARTED",
        "READY",
        "SOURCE_LOST",
        "SOURCE_RECOVERED",
        "MODEL_ACTIVATED",
        "MODEL_REJECTED",
        "CLOCK_UNSYNCHRONIZED",
        "AUTH_FAILURE_BURST",
        "CERT_GENERATED",
        "WATCHDOG_STALL",
        "MODEL_ROLLED_BACK",
        "DISK_LOW",
        "DISK_FULL",
    ] {
        assert!(
            ids.iter().any(|(n, _)| n == name),
            "src/core/ids.rs lacks {name}"
        );
    }
    // A copy-paste journalctl one-liner for every id.
    for (name, id) in &ids {
        let line = format!("journalctl -u spotter MESSAGE_ID={id}");
        assert!(
            guide.lines().any(|l| l.trim_start().starts_with(&line)),
            "docs/field-guide.md has no `{line}` one-liner for {name}"
        );
    }
}
