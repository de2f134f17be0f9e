//! The shipped systemd unit: it must verify cleanly and keep its hardening.

use std::path::PathBuf;
use std::process::Command;

fn unit() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/systemd/spotter.service"
    ))
}

fn analyze(args: &[&str], unit: &std::path::Path) -> (bool, String) {
    let out = Command::new("systemd-analyze")
        .args(args)
        .arg(unit)
        .output()
        .expect("systemd-analyze not found (scripts/setup.sh installs systemd)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The unit with ExecStart pointed at the binary under test, so `verify` can
/// check the command exists.
fn unit_with_built_binary(dir: &std::path::Path) -> PathBuf {
    let text = std::fs::read_to_string(unit()).unwrap();
    let text = text.replace("/usr/bin/spotter", env!("CARGO_BIN_EXE_spotter"));
    let p = dir.join("spotter.service");
    std::fs::write(&p, text).unwrap();
    p
}

// Would catch a typo'd directive or section, which systemd ignores with only
// a warning, silently dropping hardening.
#[test]
fn unit_verifies_without_warnings() {
    let tmp = tempfile::tempdir().unwrap();
    let (ok, text) = analyze(&["verify"], &unit_with_built_binary(tmp.path()));
    let relevant: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("spotter.service"))
        .collect();
    assert!(
        ok && relevant.is_empty(),
        "systemd-analyze verify complained:\n{text}"
    );
}

// Would catch hardening being weakened: the offline exposure score must stay
// at or below 2.0 ("OK").
#[test]
fn unit_exposure_is_at_most_2() {
    let (_, text) = analyze(&["security", "--offline=yes"], &unit());
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no score in:\n{text}"));
    let score: f64 = line
        .split(':')
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("cannot parse {line}"));
    assert!(score <= 2.0, "exposure {score} > 2.0:\n{text}");
}

// Would catch the notify protocol being switched off in the unit (systemd
// would consider the daemon ready before it is).
#[test]
fn unit_is_type_notify_with_restart_on_failure() {
    let text = std::fs::read_to_string(unit()).unwrap();
    for directive in [
        "Type=notify",
        "Restart=on-failure",
        "DevicePolicy=closed",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
    ] {
        assert!(
            text.lines().any(|l| l.trim() == directive),
            "missing {directive}"
        );
    }
}

fn exposure(unit: &std::path::Path) -> f64 {
    let (_, text) = analyze(&["security", "--offline=yes"], unit);
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no score in:\n{text}"));
    line.split(':')
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("cannot parse {line}"))
}

/// Run `spotter systemd-generator` as systemd would, for a config listening
/// on `listen`; returns the generator's normal output directory.
fn run_generator(dir: &std::path::Path, listen: &str) -> PathBuf {
    let cfg = dir.join(format!(
        "spotter-{}.toml",
        listen.replace([':', '.', '[', ']'], "_")
    ));
    std::fs::write(
        &cfg,
        format!("[source]\nkind = \"files\"\ndir = \"/tmp\"\n[model]\npath = \"/tmp/m.tflite\"\n[api]\nlisten = \"{listen}\"\n"),
    )
    .unwrap();
    let out = dir.join(format!("gen-{}", listen.replace([':', '.', '[', ']'], "_")));
    let (early, late) = (dir.join("early"), dir.join("late"));
    for d in [&out, &early, &late] {
        std::fs::create_dir_all(d).unwrap();
    }
    let st = Command::new(env!("CARGO_BIN_EXE_spotter"))
        .args(["systemd-generator", "--config"])
        .arg(&cfg)
        .args([&out, &early, &late])
        .status()
        .unwrap();
    assert!(st.success(), "a generator must never fail");
    out
}

// Would catch the unit gaining CAP_NET_BIND_SERVICE for an unprivileged port,
// a privileged port left without it (the daemon could not bind), or the
// generated drop-in breaking the unit or its exposure score.
#[test]
fn generator_adds_net_bind_service_only_for_a_privileged_port_and_the_unit_stays_hardened() {
    let tmp = tempfile::tempdir().unwrap();
    let unprivileged = run_generator(tmp.path(), "0.0.0.0:8443");
    assert_eq!(
        std::fs::read_dir(&unprivileged).unwrap().count(),
        0,
        "drop-in written for port 8443"
    );

    let privileged = run_generator(tmp.path(), "0.0.0.0:443");
    let dropin = privileged.join("spotter.service.d/50-low-port.conf");
    let text = std::fs::read_to_string(&dropin).expect("no drop-in for port 443");
    assert!(
        text.lines()
            .any(|l| l == "CapabilityBoundingSet=CAP_NET_BIND_SERVICE"),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l == "AmbientCapabilities=CAP_NET_BIND_SERVICE"),
        "{text}"
    );

    // The unit plus that drop-in, as systemd would load them.
    let unit_path = unit_with_built_binary(&privileged);
    let (ok, out) = analyze(&["verify"], &unit_path);
    let relevant: Vec<&str> = out.lines().filter(|l| l.contains("spotter")).collect();
    assert!(
        ok && relevant.is_empty(),
        "systemd-analyze verify complained:\n{out}"
    );
    let (with, without) = (exposure(&unit_path), exposure(&unit()));
    assert!(
        with > without,
        "the drop-in was not applied (exposure {with} vs {without})"
    );
    assert!(
        with <= 2.0,
        "exposure with the low-port drop-in {with} > 2.0"
    );

    // A broken configuration writes nothing and still succeeds.
    let broken = tmp.path().join("broken.toml");
    std::fs::write(&broken, "[api]\nlisten = 443\n").unwrap();
    let out_dir = tmp.path().join("gen-broken");
    std::fs::create_dir_all(&out_dir).unwrap();
    let st = Command::new(env!("CARGO_BIN_EXE_spotter"))
        .args(["systemd-generator", "--config"])
        .arg(&broken)
        .arg(&out_dir)
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(std::fs::read_dir(&out_dir).unwrap().count(), 0);
}

// Would catch the unit losing what a `command` source reading a Pi camera
// module needs (rpicam-vid's libcamera opens /dev/media*, /dev/v4l-subdev*
// and /dev/dma_heap/*, as group video): under DevicePolicy=closed the
// camera would fail to open only on the device, never in tests.
#[test]
fn unit_allows_the_devices_libcamera_opens() {
    let text = std::fs::read_to_string(unit()).unwrap();
    for directive in [
        "DeviceAllow=char-video4linux rw",
        "DeviceAllow=char-media rw",
        "DeviceAllow=char-dma_heap rw",
    ] {
        assert!(
            text.lines().any(|l| l.trim() == directive),
            "missing {directive}"
        );
    }
    assert!(
        text.lines()
            .any(|l| l.starts_with("SupplementaryGroups=") && l.contains("video")),
        "the service user must be in group video"
    );
}
