//! The Debian package: its control data, file list, maintainer scripts and
//! lintian verdict.
//!
//! The package under test is `$SPOTTER_DEB` when set (scripts/test.sh builds
//! it once with scripts/build-deb.sh), otherwise this test builds it with
//! that script. Outside CI a failed build (no network for cargo-deb, no
//! apt) skips with a message; in CI (`CI` set) it fails.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// The .deb under test, built once per test process; `None` means skip.
fn deb() -> Option<&'static PathBuf> {
    static DEB: OnceLock<Option<PathBuf>> = OnceLock::new();
    DEB.get_or_init(|| {
        if let Some(p) = std::env::var_os("SPOTTER_DEB") {
            let p = PathBuf::from(p);
            assert!(p.is_file(), "SPOTTER_DEB={} is not a file", p.display());
            return Some(p);
        }
        let out = Command::new("bash")
            .arg(repo().join("scripts/build-deb.sh"))
            .current_dir(repo())
            .output()
            .expect("running bash scripts/build-deb.sh");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let last = stdout.lines().last().unwrap_or_default().trim().to_string();
        if out.status.success() && Path::new(&last).is_file() {
            return Some(PathBuf::from(last));
        }
        let why = format!(
            "scripts/build-deb.sh failed ({}); last stdout line {last:?}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        if in_ci() {
            panic!("{why}");
        }
        eprintln!("SKIP package tests (not in CI): {why}");
        None
    })
    .as_ref()
}

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One control field's value (single-line fields).
fn field<'a>(control: &'a str, name: &str) -> Option<&'a str> {
    // `dpkg-deb -I` indents the control fields by one space.
    control.lines().find_map(|l| {
        l.trim_start()
            .strip_prefix(name)?
            .strip_prefix(':')
            .map(str::trim)
    })
}

/// The package unpacked: (`dpkg-deb -x` tree, `dpkg-deb -e` control dir).
fn unpacked(deb: &Path) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let control = tmp.path().join("DEBIAN");
    run(
        "dpkg-deb",
        &["-x", deb.to_str().unwrap(), root.to_str().unwrap()],
    );
    run(
        "dpkg-deb",
        &["-e", deb.to_str().unwrap(), control.to_str().unwrap()],
    );
    (tmp, root, control)
}

/// The Debian architecture and the ELF e_machine of its binaries.
fn arch_and_machine(control: &str) -> (String, u16) {
    let arch = field(control, "Architecture")
        .expect("Architecture field")
        .to_string();
    let machine = match arch.as_str() {
        "amd64" => 62,
        "arm64" => 183,
        other => panic!("unexpected architecture {other}"),
    };
    (arch, machine)
}

/// e_machine of a 64-bit little-endian ELF file, or a panic naming why not.
fn elf_machine(path: &Path) -> u16 {
    let b = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        b.len() > 20 && &b[..4] == b"\x7fELF",
        "{} is not ELF",
        path.display()
    );
    assert_eq!(
        (b[4], b[5]),
        (2, 1),
        "{} is not 64-bit little-endian ELF",
        path.display()
    );
    u16::from_le_bytes([b[18], b[19]])
}

// Would catch a package named, versioned or built for the wrong
// architecture, one missing its library dependencies (dpkg-shlibdeps not
// run) or the sysusers tool its postinst calls, or a config dpkg would
// overwrite on upgrade (not a conffile).
#[test]
fn control_fields_name_version_arch_deps_and_conffile() {
    let Some(deb) = deb() else { return };
    let info = run("dpkg-deb", &["-I", deb.to_str().unwrap()]);
    assert_eq!(field(&info, "Package"), Some("spotter"), "{info}");
    let version = format!("{}-1", env!("CARGO_PKG_VERSION"));
    assert_eq!(field(&info, "Version"), Some(version.as_str()), "{info}");
    let (arch, _) = arch_and_machine(&info);
    let name = deb.file_name().unwrap().to_string_lossy();
    assert_eq!(name, format!("spotter_{version}_{arch}.deb"));
    let depends = field(&info, "Depends").unwrap_or_else(|| panic!("no Depends:\n{info}"));
    for needed in [
        "libc6",
        "libstdc++6",
        "systemd | systemd-standalone-sysusers",
    ] {
        assert!(
            depends.contains(needed),
            "Depends lacks {needed}: {depends}"
        );
    }
    let (_tmp, _root, control) = unpacked(deb);
    let conffiles =
        std::fs::read_to_string(control.join("conffiles")).expect("no conffiles in the package");
    assert_eq!(
        conffiles.lines().collect::<Vec<_>>(),
        ["/etc/spotter/spotter.toml"]
    );
}

// Would catch a file left out of the package or installed where nothing
// looks for it (binary, LiteRT, unit, sysusers, config, demo model, docs),
// or an executable mode/owner dpkg would install wrongly.
#[test]
fn contents_list_every_installed_file_with_owner_and_mode() {
    let Some(deb) = deb() else { return };
    let list = run("dpkg-deb", &["-c", deb.to_str().unwrap()]);
    // "-rwxr-xr-x 0/0  123 2026-11-22 00:00 ./usr/bin/spotter"
    let entries: Vec<(&str, &str, &str)> = list
        .lines()
        .filter_map(|l| {
            let parts: Vec<&str> = l.split_whitespace().collect();
            Some((parts[0], parts[1], parts.last()?.strip_prefix('.')?))
        })
        .collect();
    let expect = [
        ("/usr/bin/spotter", "-rwxr-xr-x"),
        ("/usr/lib/spotter/libLiteRt.so", "-rw-r--r--"),
        ("/usr/lib/systemd/system/spotter.service", "-rw-r--r--"),
        ("/usr/lib/sysusers.d/spotter.conf", "-rw-r--r--"),
        ("/usr/lib/modules-load.d/spotter.conf", "-rw-r--r--"),
        (
            "/usr/lib/systemd/system-generators/spotter-generator",
            "-rwxr-xr-x",
        ),
        ("/etc/spotter/spotter.toml", "-rw-r--r--"),
        (
            "/usr/share/spotter/models/efficientnet_lite0.tflite",
            "-rw-r--r--",
        ),
        ("/usr/share/doc/spotter/copyright", "-rw-r--r--"),
        ("/usr/share/doc/spotter/changelog.Debian.gz", "-rw-r--r--"),
        ("/usr/share/doc/spotter/README.md", "-rw-r--r--"),
        ("/usr/share/doc/spotter/field-guide.md", "-rw-r--r--"),
        ("/usr/share/doc/spotter/spotter.example.toml", "-rw-r--r--"),
        ("/usr/share/lintian/overrides/spotter", "-rw-r--r--"),
    ];
    for (path, mode) in expect {
        let found = entries
            .iter()
            .find(|(_, _, p)| *p == path)
            .unwrap_or_else(|| panic!("{path} missing from:\n{list}"));
        assert_eq!(
            (found.0, found.1),
            (mode, "0/0"),
            "{path}: mode and uid/gid"
        );
    }
    let files: Vec<&str> = entries
        .iter()
        .filter(|(m, _, _)| m.starts_with('-'))
        .map(|(_, _, p)| *p)
        .collect();
    let extra: Vec<&&str> = files
        .iter()
        .filter(|p| !expect.iter().any(|(e, _)| e == *p))
        .collect();
    assert!(
        extra.is_empty(),
        "unexpected files in the package: {extra:?}"
    );
}

// Would catch the package shipping a stale or hand-edited copy of the unit
// or sysusers file, binaries for another architecture, a truncated model,
// or a default config pointing at a model the package doesn't contain.
#[test]
fn payload_matches_the_repository_and_the_config_points_at_the_shipped_model() {
    let Some(deb) = deb() else { return };
    let (_tmp, root, _control) = unpacked(deb);
    let same = |packaged: &str, source: &str| {
        let a = std::fs::read(root.join(packaged)).unwrap();
        let b = std::fs::read(repo().join(source)).unwrap();
        assert!(a == b, "{packaged} differs from {source}");
    };
    same(
        "usr/lib/systemd/system/spotter.service",
        "systemd/spotter.service",
    );
    same(
        "usr/lib/sysusers.d/spotter.conf",
        "systemd/spotter.sysusers",
    );
    same(
        "usr/lib/systemd/system-generators/spotter-generator",
        "systemd/spotter-generator",
    );
    same("etc/spotter/spotter.toml", "packaging/spotter.toml");

    let info = run("dpkg-deb", &["-I", deb.to_str().unwrap()]);
    let (_, machine) = arch_and_machine(&info);
    assert_eq!(
        elf_machine(&root.join("usr/bin/spotter")),
        machine,
        "spotter binary"
    );
    let litert = root.join("usr/lib/spotter/libLiteRt.so");
    assert_eq!(elf_machine(&litert), machine, "libLiteRt.so");
    let lib = std::fs::read(&litert).unwrap();
    assert!(
        lib.windows(23).any(|w| w == b"LiteRtCreateEnvironment"),
        "libLiteRt.so lacks the LiteRT C API"
    );

    // The shipped config is valid and its model is in the package (its
    // paths are the target's, not this machine's: --syntax-only).
    let out = Command::new(env!("CARGO_BIN_EXE_spotter"))
        .args(["check-config", "--syntax-only"])
        .arg(root.join("etc/spotter/spotter.toml"))
        .output()
        .unwrap();
    let effective = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "packaged config invalid: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let model_line = effective
        .lines()
        .skip_while(|l| l.trim() != "[model]")
        .find(|l| l.trim_start().starts_with("path ="))
        .unwrap_or_else(|| panic!("no model path in:\n{effective}"));
    let model_path = model_line.split('"').nth(1).unwrap();
    let model = std::fs::read(root.join(model_path.trim_start_matches('/')))
        .unwrap_or_else(|e| panic!("config's model {model_path} is not in the package: {e}"));
    assert!(
        model.len() > 1_000_000 && &model[4..8] == b"TFL3",
        "{model_path} is not a TFLite model"
    );
    let unit =
        std::fs::read_to_string(root.join("usr/lib/systemd/system/spotter.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/bin/spotter run --config /etc/spotter/spotter.toml"));
}

// Would catch maintainer scripts that don't parse, that enable or start the
// unit before its user exists, that block dpkg on READY=1, or that leave
// the state directory (TLS and API key material) behind on purge.
#[test]
fn maintainer_scripts_create_the_user_then_enable_and_clean_up_on_purge() {
    let Some(deb) = deb() else { return };
    let (_tmp, _root, control) = unpacked(deb);
    for script in ["postinst", "prerm", "postrm"] {
        let p = control.join(script);
        assert!(p.is_file(), "no {script}");
        run("sh", &["-n", p.to_str().unwrap()]);
    }
    let postinst = std::fs::read_to_string(control.join("postinst")).unwrap();
    let pos = |needle: &str| {
        postinst
            .find(needle)
            .unwrap_or_else(|| panic!("postinst lacks {needle:?}:\n{postinst}"))
    };
    assert!(
        pos("systemd-sysusers") < pos("deb-systemd-helper enable"),
        "the user must exist before the unit is enabled"
    );
    assert!(
        postinst.contains("spotter.conf"),
        "systemd-sysusers must be given spotter.conf:\n{postinst}"
    );
    assert!(pos("systemctl --no-block start spotter.service") > pos("systemd-sysusers"));
    assert!(!postinst.contains("#DEBHELPER#"), "token not replaced");
    assert!(
        !postinst.contains("deb-systemd-invoke start"),
        "a blocking start would wait for READY=1"
    );
    let prerm = std::fs::read_to_string(control.join("prerm")).unwrap();
    assert!(
        prerm.contains("deb-systemd-invoke stop"),
        "removal must stop the service:\n{prerm}"
    );
    let postrm = std::fs::read_to_string(control.join("postrm")).unwrap();
    assert!(
        postrm.contains("rm -rf /var/lib/spotter"),
        "purge must remove the state directory:\n{postrm}"
    );
    assert!(
        postrm.contains("deb-systemd-helper purge"),
        "purge must drop the enablement state:\n{postrm}"
    );
}

// Would catch the Debian changelog falling behind Cargo.toml's version
// (lintian and dpkg would report the wrong version history).
#[test]
fn changelog_names_the_package_version() {
    let text = std::fs::read_to_string(repo().join("packaging/changelog")).unwrap();
    let first = text.lines().next().unwrap_or_default();
    assert!(
        first.starts_with(&format!("spotter ({}-1) ", env!("CARGO_PKG_VERSION"))),
        "packaging/changelog starts with {first:?}; add an entry for {}",
        env!("CARGO_PKG_VERSION")
    );
}

// Would catch a packaging error or warning lintian reports (each tag we
// accept is overridden, with its reason, in packaging/lintian-overrides).
#[test]
fn lintian_reports_no_errors_or_warnings() {
    let Some(deb) = deb() else { return };
    let have = Command::new("lintian")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !have {
        assert!(
            !in_ci(),
            "lintian is not installed (scripts/setup.sh installs it)"
        );
        eprintln!("SKIP lintian (not installed; apt-get install lintian)");
        return;
    }
    let out = Command::new("lintian")
        .args(["--fail-on", "error,warning", "--tag-display-limit", "0"])
        .arg(deb)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("lintian:\n{text}");
    assert!(
        out.status.success(),
        "lintian failed ({}):\n{text}",
        out.status
    );
    let unexplained: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("E: ") || l.starts_with("W: "))
        .collect();
    assert!(
        unexplained.is_empty(),
        "lintian errors/warnings:\n{}",
        unexplained.join("\n")
    );
}
