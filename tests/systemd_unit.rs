//! The shipped systemd unit: it must verify cleanly and keep its hardening.

use std::path::PathBuf;
use std::process::Command;

fn unit() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/spotter.service"))
}

fn analyze(args: &[&str], unit: &std::path::Path) -> (bool, String) {
    let out = Command::new("systemd-analyze")
        .args(args)
        .arg(unit)
        .output()
        .expect("systemd-analyze not found (scripts/setup.sh installs systemd)");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
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
    let relevant: Vec<&str> = text.lines().filter(|l| l.contains("spotter.service")).collect();
    assert!(ok && relevant.is_empty(), "systemd-analyze verify complained:\n{text}");
}

// Would catch hardening being weakened: the offline exposure score must stay
// at or below 2.0 ("OK").
#[test]
fn unit_exposure_is_at_most_2() {
    let (_, text) = analyze(&["security", "--offline=yes"], &unit());
    let line = text.lines().find(|l| l.contains("Overall exposure level")).unwrap_or_else(|| panic!("no score in:\n{text}"));
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
    for directive in ["Type=notify", "Restart=on-failure", "DevicePolicy=closed", "ProtectSystem=strict", "NoNewPrivileges=yes"] {
        assert!(text.lines().any(|l| l.trim() == directive), "missing {directive}");
    }
}
