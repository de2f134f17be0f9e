//! The daemon end to end: a real process on the `files` source, a real model,
//! and a real TLS client; plus the failure modes a technician meets first
//! (bad config, missing or corrupt model).

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{bin, photo_dir, reference_clear_top1, testdata, Daemon};

const MODEL: &str = "mobilenet_v2_1.0_224_quant";

fn model_path() -> PathBuf {
    testdata().join(format!("models/classification/{MODEL}.tflite"))
}

fn labels_path() -> PathBuf {
    testdata().join("labels/labels_mobilenet_quant_v1_224.txt")
}

fn config(photos: &Path, model: &Path, labels: Option<&Path>, runtime: &str) -> String {
    let labels = labels
        .map(|l| format!("labels = \"{}\"\n", l.display()))
        .unwrap_or_default();
    format!(
        "[daemon]\nstate_dir = \"@STATE@\"\nlog_level = \"info\"\n\n\
         [source]\nkind = \"files\"\ndir = \"{}\"\nfps = 20.0\nloop = true\n\n\
         [model]\npath = \"{}\"\n{labels}runtime = \"{runtime}\"\nthreads = 1\nretry_ms = 500\n\n\
         [api]\nlisten = \"127.0.0.1:@PORT@\"\n",
        photos.display(),
        model.display()
    )
}

fn sha256_hex(path: &Path) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(std::fs::read(path).unwrap()))
}

/// `spotter classify --json` on each file: path → (top-1 index, label, score).
fn classify_cli(
    model: &Path,
    labels: &Path,
    files: &[PathBuf],
) -> BTreeMap<String, (u64, String, f64)> {
    let out = Command::new(bin())
        .args(["classify", "--json", "--threads", "1", "--model"])
        .arg(model)
        .arg("--labels")
        .arg(labels)
        .args(files)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "classify failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let mut map = BTreeMap::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let top = &v["results"][0];
        map.insert(
            v["path"].as_str().unwrap().to_string(),
            (
                top["index"].as_u64().unwrap(),
                top["label"].as_str().unwrap().to_string(),
                top["score"].as_f64().unwrap(),
            ),
        );
    }
    assert_eq!(map.len(), files.len(), "one JSON object per image:\n{text}");
    map
}

// Would catch: results not served over TLS, readiness never flipping, the
// daemon's pipeline disagreeing with `spotter classify` or the reference on
// clear cases, results lost across a restart, or a slow/unclean shutdown.
#[test]
fn serves_correct_results_over_https_and_keeps_them_across_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let (photos, names) = photo_dir(tmp.path());
    let mut d = Daemon::start(
        tmp.path(),
        &config(&photos, &model_path(), Some(&labels_path()), "auto"),
    );
    let c = d.client();

    assert_eq!(c.wait_for("/healthz", 60, |r| r.status == 200).status, 200);
    let ready = c.wait_for("/readyz", 120, |r| r.status == 200);
    assert_eq!(ready.json()["ready"], true, "{}", ready.body);

    // Wait until every photo has at least one stored result.
    let want: BTreeSet<String> = names
        .iter()
        .map(|n| photos.join(n).display().to_string())
        .collect();
    let results = c.wait_for("/api/v1/results?limit=1000", 120, |r| {
        r.status == 200
            && r.json()["results"]
                .as_array()
                .map(|a| {
                    want.iter()
                        .all(|w| a.iter().any(|x| x["origin"] == w.as_str()))
                })
                .unwrap_or(false)
    });
    let list = results.json()["results"].as_array().unwrap().clone();

    // Newest first.
    let ts: Vec<u64> = list.iter().map(|r| r["ts_ns"].as_u64().unwrap()).collect();
    assert!(
        ts.windows(2).all(|w| w[0] >= w[1]),
        "not newest first: {ts:?}"
    );

    // Every result names the model by its sha256 and the source.
    let sha = sha256_hex(&model_path());
    for r in &list {
        assert_eq!(r["model_sha256"], sha.as_str());
        assert!(r["source"].as_str().unwrap().starts_with("files:"), "{r}");
        assert!(!r["classes"].as_array().unwrap().is_empty(), "{r}");
    }

    // The daemon's top-1 equals the CLI's for the same photo and model, and
    // the reference's on clear cases.
    let files: Vec<PathBuf> = names.iter().map(|n| photos.join(n)).collect();
    let cli = classify_cli(&model_path(), &labels_path(), &files);
    let mut clear_checked = 0;
    for (path, (index, label, score)) in &cli {
        let r = list.iter().find(|r| r["origin"] == path.as_str()).unwrap();
        let top = &r["classes"][0];
        assert_eq!(
            top["index"].as_u64().unwrap(),
            *index,
            "daemon vs classify on {path}: {r}"
        );
        assert!(
            (top["score"].as_f64().unwrap() - score).abs() < 0.02,
            "daemon vs classify score on {path}"
        );
        let name = Path::new(path)
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        if let Some(reference) = reference_clear_top1(MODEL, &name) {
            assert_eq!(label, &reference, "top-1 on clear case {name}");
            clear_checked += 1;
        }
    }
    assert!(
        clear_checked > 0,
        "the reference has no clear case among the photos; the check proves nothing"
    );

    // Single result and latest.
    let id = list[0]["id"].as_str().unwrap().to_string();
    let one = c.get(&format!("/api/v1/results/{id}")).unwrap();
    assert_eq!(one.status, 200);
    assert_eq!(one.json()["id"], id.as_str());
    assert_eq!(c.get("/api/v1/results/latest").unwrap().status, 200);

    // Status reports the model, the runtime choice and its reason.
    let st = c.get("/api/v1/status").unwrap().json();
    assert_eq!(st["model"]["sha256"], sha.as_str());
    assert!(
        !st["model"]["runtime_reason"]
            .as_str()
            .unwrap_or("")
            .is_empty(),
        "{st}"
    );
    assert!(st["counters"]["results_stored"].as_u64().unwrap() >= names.len() as u64);

    // Without a key: probes answer (readiness with no detail), data does not.
    let anon = d.anonymous_client();
    assert_eq!(
        anon.get("/readyz").unwrap().json(),
        serde_json::json!({"ready": true})
    );
    for path in [
        "/api/v1/status",
        "/api/v1/results",
        "/api/v1/results/latest",
        "/metrics",
    ] {
        assert_eq!(
            anon.get(path).unwrap().status,
            401,
            "{path} answered without a key"
        );
    }

    // Metrics: counters, per-stage histograms and the runtime choice.
    let m = c.get("/metrics").unwrap();
    assert_eq!(m.status, 200);
    for needle in [
        "spotter_frames_captured_total",
        "spotter_stage_latency_seconds_count{stage=\"invoke\"}",
        "spotter_runtime_info{runtime=",
        "spotter_ready 1",
    ] {
        assert!(
            m.body.contains(needle),
            "metrics lack {needle}:\n{}",
            m.body
        );
    }

    // Clean shutdown within 5 s, exit 0.
    let (status, took) = d.terminate();
    assert!(
        status.success(),
        "exit status {status:?}; log:\n{}",
        d.log()
    );
    assert!(took.as_secs_f64() < 5.0, "shutdown took {took:?}");

    // Restart: earlier results are still there, with the same content.
    let fingerprint_before = std::fs::read(d.cert()).unwrap();
    d.spawn();
    let c = d.client();
    let again = c.wait_for(&format!("/api/v1/results/{id}"), 60, |r| r.status == 200);
    assert_eq!(again.json(), one.json());
    assert_eq!(
        std::fs::read(d.cert()).unwrap(),
        fingerprint_before,
        "certificate regenerated on restart"
    );
    let (status, _) = d.terminate();
    assert!(status.success());
}

fn assert_not_ready_because(d: &Daemon, needle: &str) {
    let c = d.client();
    assert_eq!(c.wait_for("/healthz", 60, |r| r.status == 200).status, 200);
    let r = c.wait_for("/readyz", 60, |r| {
        r.status == 503
            && r.json()["checks"]["model"]["detail"]
                .as_str()
                .unwrap_or("")
                .contains(needle)
    });
    assert_eq!(r.json()["checks"]["model"]["ok"], false, "{}", r.body);
    // Still alive and still not making anything up.
    std::thread::sleep(std::time::Duration::from_millis(700));
    d.assert_running();
    let res = c.get("/api/v1/results").unwrap();
    assert_eq!(
        res.json()["results"].as_array().map(|a| a.len()),
        Some(0),
        "results without a model: {}",
        res.body
    );
}

// Would catch a missing model crashing the daemon, or readiness hiding why.
#[test]
fn missing_model_is_not_ready_with_the_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let (photos, _) = photo_dir(tmp.path());
    let missing = tmp.path().join("no-such-model.tflite");
    let mut d = Daemon::start(tmp.path(), &config(&photos, &missing, None, "builtin"));
    assert_not_ready_because(&d, "no-such-model.tflite");
    assert!(d.terminate().0.success());
}

// Would catch a truncated model being loaded (crash, or garbage results).
#[test]
fn truncated_model_is_not_ready_with_the_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let (photos, _) = photo_dir(tmp.path());
    let bytes = std::fs::read(model_path()).unwrap();
    let bad = tmp.path().join("truncated.tflite");
    std::fs::write(&bad, &bytes[..bytes.len() / 3]).unwrap();
    let mut d = Daemon::start(
        tmp.path(),
        &config(&photos, &bad, Some(&labels_path()), "builtin"),
    );
    assert_not_ready_because(&d, "truncated.tflite");
    assert!(d.terminate().0.success());
}

// Would catch the TFLM-only model (refused by full TF Lite) crashing the daemon.
#[test]
fn tflm_only_model_is_not_ready_with_the_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let (photos, _) = photo_dir(tmp.path());
    let bad = testdata().join("models/invalid/person_detect_tflm_only.tflite");
    let mut d = Daemon::start(tmp.path(), &config(&photos, &bad, None, "builtin"));
    assert_not_ready_because(&d, "person_detect_tflm_only.tflite");
    assert!(d.terminate().0.success());
}

// Would catch a bad config starting the daemon anyway, or an error that does
// not say where the problem is.
#[test]
fn bad_config_exits_2_naming_file_line_and_key() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("bad.toml");
    std::fs::write(
        &path,
        "[source]\nkind = \"files\"\ndir = \"/tmp\"\nfps = -1\n",
    )
    .unwrap();
    let out = Command::new(bin())
        .args(["run", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml:4:") && err.contains("source.fps"),
        "{err}"
    );

    std::fs::write(
        &path,
        "[source]\nkind = \"files\"\ndir = \"/tmp\"\nframerate = 3\n",
    )
    .unwrap();
    let out = Command::new(bin())
        .arg("check-config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml:4:") && err.contains("framerate"),
        "{err}"
    );
}

// Would catch check-config accepting a valid file without printing the
// effective (defaulted) settings.
#[test]
fn check_config_prints_effective_settings() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("ok.toml");
    std::fs::write(&path, "[source]\nkind = \"files\"\ndir = \"/srv/photos\"\n").unwrap();
    // --syntax-only: the default model path is not installed here.
    let out = Command::new(bin())
        .args(["check-config", "--syntax-only"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("dir = \"/srv/photos\""), "{text}");
    assert!(
        text.contains("flush_every_ms = 1000"),
        "defaults not shown: {text}"
    );
}

// Would catch `classify` silently skipping an unreadable image or exiting 0.
#[test]
fn classify_reports_unreadable_images_and_fails() {
    let tmp = tempfile::tempdir().unwrap();
    let txt = tmp.path().join("notes.jpg");
    std::fs::write(&txt, "this is text, not a JPEG").unwrap();
    let good = testdata().join("images/grace_hopper.bmp");
    let out = Command::new(bin())
        .args(["classify", "--json", "--runtime", "builtin", "--model"])
        .arg(model_path())
        .arg("--labels")
        .arg(labels_path())
        .arg(&good)
        .arg(&txt)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.lines().count(),
        1,
        "the good image is still reported: {stdout}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("notes.jpg"));
}

/// `spotter classify --json [--raw SPEC] FILE` → the first result's (index, score).
fn classify_one(file: &Path, raw: Option<&str>) -> Result<(u64, f64), String> {
    let mut cmd = Command::new(bin());
    cmd.args([
        "classify",
        "--json",
        "--runtime",
        "builtin",
        "--threads",
        "1",
        "--model",
    ])
    .arg(model_path())
    .arg("--labels")
    .arg(labels_path());
    if let Some(spec) = raw {
        cmd.args(["--raw", spec]);
    }
    let out = cmd.arg(file).output().unwrap();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    Ok((
        v["results"][0]["index"].as_u64().unwrap(),
        v["results"][0]["score"].as_f64().unwrap(),
    ))
}

// Would catch `classify --raw` (used by the VM system test to compare the
// daemon with a frame captured from /dev/video0) reading raw frames with the
// wrong stride, channel order or chroma layout, or accepting a file whose
// size does not match the stated frame.
#[test]
fn classify_raw_frames_match_the_encoded_image() {
    let tmp = tempfile::tempdir().unwrap();
    let photo = testdata().join("images/grace_hopper.bmp");
    let rgb = image::open(&photo).unwrap().to_rgb8();
    let (w, h) = (rgb.width() & !1, rgb.height());
    let rgb = image::imageops::crop_imm(&rgb, 0, 0, w, h).to_image();
    let png = tmp.path().join("photo.png");
    rgb.save(&png).unwrap();
    let raw_rgb = tmp.path().join("frame.rgb");
    std::fs::write(&raw_rgb, rgb.as_raw()).unwrap();
    // Full-range BT.601 YUYV, one U/V pair per two pixels (averaged).
    let mut yuyv = Vec::with_capacity((w * h * 2) as usize);
    let yuv = |p: &image::Rgb<u8>| {
        let [r, g, b] = p.0.map(f32::from);
        (
            0.299 * r + 0.587 * g + 0.114 * b,
            -0.169 * r - 0.331 * g + 0.5 * b + 128.0,
            0.5 * r - 0.419 * g - 0.081 * b + 128.0,
        )
    };
    for y in 0..h {
        for x in (0..w).step_by(2) {
            let (y0, u0, v0) = yuv(rgb.get_pixel(x, y));
            let (y1, u1, v1) = yuv(rgb.get_pixel(x + 1, y));
            let q = |v: f32| v.round().clamp(0.0, 255.0) as u8;
            yuyv.extend([q(y0), q((u0 + u1) / 2.0), q(y1), q((v0 + v1) / 2.0)]);
        }
    }
    let raw_yuyv = tmp.path().join("frame.yuv");
    std::fs::write(&raw_yuyv, &yuyv).unwrap();

    let encoded = classify_one(&png, None).unwrap();
    let from_rgb = classify_one(&raw_rgb, Some(&format!("rgb24:{w}x{h}"))).unwrap();
    assert_eq!(
        from_rgb, encoded,
        "the same pixels as raw RGB must classify identically"
    );
    let from_yuyv = classify_one(&raw_yuyv, Some(&format!("yuyv:{w}x{h}"))).unwrap();
    assert_eq!(
        from_yuyv.0, encoded.0,
        "top-1 of the YUYV frame differs from the image's"
    );
    assert!(
        (from_yuyv.1 - encoded.1).abs() < 0.15,
        "YUYV {from_yuyv:?} vs image {encoded:?}"
    );

    let err = classify_one(&raw_yuyv, Some(&format!("yuyv:{w}x{}", h - 1))).unwrap_err();
    assert!(
        err.contains("frame.yuv") && err.contains("bytes"),
        "size mismatch not reported: {err}"
    );
}

// Would catch READY=1 being sent before the daemon is actually ready (systemd
// would start dependants too early), no STATUS line, or no STOPPING=1.
#[test]
fn notifies_systemd_ready_only_when_ready_and_stopping_on_sigterm() {
    use std::os::unix::net::UnixDatagram;
    let tmp = tempfile::tempdir().unwrap();
    let (photos, _) = photo_dir(tmp.path());
    let sock_path = tmp.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(std::time::Duration::from_secs(120)))
        .unwrap();
    let mut d = Daemon::start_with_env(
        tmp.path(),
        &config(&photos, &model_path(), Some(&labels_path()), "auto"),
        vec![
            ("NOTIFY_SOCKET".into(), sock_path.display().to_string()),
            ("WATCHDOG_USEC".into(), "2000000".into()),
        ],
    );
    let mut buf = vec![0u8; 4096];
    let ready_msg = loop {
        let n = sock.recv(&mut buf).expect("no READY=1 within 120 s");
        let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
        if msg.contains("READY=1") {
            break msg;
        }
        assert!(!msg.contains("STOPPING=1"), "stopping before ready: {msg}");
    };
    assert!(ready_msg.contains("STATUS=ready"), "{ready_msg}");
    // At the moment READY=1 was sent, /readyz must already answer 200.
    let c = d.client();
    assert_eq!(c.get("/readyz").unwrap().status, 200);
    // While frames flow, the watchdog is fed.
    let mut pings = 0;
    let until = std::time::Instant::now() + std::time::Duration::from_secs(3);
    while std::time::Instant::now() < until {
        if let Ok(n) = sock.recv(&mut buf) {
            pings += String::from_utf8_lossy(&buf[..n]).contains("WATCHDOG=1") as u32;
        }
    }
    assert!(
        pings >= 2,
        "only {pings} WATCHDOG=1 in 3 s with a 2 s watchdog"
    );
    let (status, _) = d.terminate();
    assert!(status.success());
    let mut saw_stopping = false;
    sock.set_read_timeout(Some(std::time::Duration::from_millis(500)))
        .unwrap();
    while let Ok(n) = sock.recv(&mut buf) {
        saw_stopping |= String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1");
    }
    assert!(saw_stopping, "no STOPPING=1 on SIGTERM");
}

// Would catch a bad model replacing a good one on reload (outage), or being
// rejected silently: for a truncated file, a non-TFLite file, the TFLM-only
// model and a labels file that doesn't match the outputs, the daemon logs a
// clear rejection and keeps serving results from the previous model.
#[test]
fn sighup_with_bad_models_keeps_the_previous_model_serving() {
    let tmp = tempfile::tempdir().unwrap();
    let (photos, _) = photo_dir(tmp.path());
    let good = config(&photos, &model_path(), Some(&labels_path()), "auto");
    let mut d = Daemon::start(tmp.path(), &good);
    let c = d.client();
    c.wait_for("/readyz", 120, |r| r.status == 200);
    let sha = sha256_hex(&model_path());

    let bytes = std::fs::read(model_path()).unwrap();
    let truncated = tmp.path().join("truncated.tflite");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let text = tmp.path().join("text.tflite");
    std::fs::write(&text, "not a model at all\n").unwrap();
    let tflm = testdata().join("models/invalid/person_detect_tflm_only.tflite");
    let coco_labels =
        testdata().join("models/detection/coco_ssd_mobilenet_v1_1.0_quant_2018_06_29/labelmap.txt");
    let cases: Vec<(PathBuf, Option<PathBuf>, &str)> = vec![
        (truncated.clone(), Some(labels_path()), "truncated.tflite"),
        (text.clone(), None, "text.tflite"),
        (tflm.clone(), None, "person_detect_tflm_only.tflite"),
        (model_path(), Some(coco_labels.clone()), "labelmap.txt"),
    ];
    let pid = nix::unistd::Pid::from_raw(d.child.as_ref().unwrap().id() as i32);
    for (i, (model, labels, needle)) in cases.iter().enumerate() {
        std::fs::write(
            &d.config,
            common::pre_sightings_defaults(
                &config(&photos, model, labels.as_deref(), "auto")
                    .replace("@STATE@", &tmp.path().join("state").display().to_string())
                    .replace("@PORT@", &d.port.to_string()),
            ),
        )
        .unwrap();
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let log = d.log();
            let rejections: Vec<&str> = log
                .lines()
                .filter(|l| l.contains("model rejected"))
                .collect();
            if rejections.len() > i {
                assert!(
                    rejections[i].contains(needle),
                    "rejection does not name {needle}: {}",
                    rejections[i]
                );
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no rejection logged for {needle}; log:\n{log}"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        // Still ready, still the previous model, and new results keep coming from it.
        assert_eq!(c.get("/readyz").unwrap().status, 200, "{needle}");
        let st = c.get("/api/v1/status").unwrap().json();
        assert_eq!(st["model"]["sha256"], sha.as_str(), "{needle}");
        let before = st["counters"]["results_stored"].as_u64().unwrap();
        c.wait_for("/api/v1/status", 30, |r| {
            r.json()["counters"]["results_stored"].as_u64().unwrap() > before + 2
        });
        let latest = c.get("/api/v1/results/latest").unwrap().json();
        assert_eq!(latest["model_sha256"], sha.as_str());
    }
    assert!(d.terminate().0.success());
}

// Would catch `runtime = "litert"` starting a daemon that can never become
// ready, or an error that doesn't say which library was looked for.
#[test]
fn litert_runtime_without_library_is_a_startup_error() {
    let tmp = tempfile::tempdir().unwrap();
    let (photos, _) = photo_dir(tmp.path());
    let missing = tmp.path().join("nowhere/libLiteRt.so");
    let cfg = config(&photos, &model_path(), Some(&labels_path()), "litert")
        .replace(
            "threads = 1\n",
            &format!("threads = 1\nlitert_lib = \"{}\"\n", missing.display()),
        )
        .replace("@STATE@", &tmp.path().join("state").display().to_string())
        .replace("@PORT@", &common::free_port().to_string());
    let path = tmp.path().join("spotter.toml");
    std::fs::write(&path, cfg).unwrap();
    let out = Command::new(bin())
        .args(["run", "--config"])
        .arg(&path)
        .env_remove("SPOTTER_LITERT_LIB")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nowhere/libLiteRt.so"), "{err}");
}

// Would catch the daemon crashing at exit after a clean shutdown when
// `runtime = "litert"`: the start-up check used to load and unload
// libLiteRt.so, leaving its exit handler pointing at unmapped code (SIGSEGV,
// exit 139, so systemd logged every stop as a failure).
#[test]
fn litert_runtime_daemon_exits_zero_on_sigterm() {
    let Some(lib) = spotter::inference::select::resolve_litert_lib(None).filter(|p| p.is_file())
    else {
        assert_ne!(
            std::env::var("SPOTTER_REQUIRE_LITERT").as_deref(),
            Ok("1"),
            "SPOTTER_REQUIRE_LITERT=1 but no libLiteRt.so"
        );
        eprintln!("SKIP: no libLiteRt.so (run scripts/setup-litert.sh)");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (photos, _) = photo_dir(tmp.path());
    let cfg = config(&photos, &model_path(), Some(&labels_path()), "litert").replace(
        "threads = 1\n",
        &format!("threads = 1\nlitert_lib = \"{}\"\n", lib.display()),
    );
    let mut d = Daemon::start(tmp.path(), &cfg);
    let c = d.client();
    c.wait_for("/readyz", 120, |r| r.status == 200);
    assert_eq!(
        c.get("/api/v1/status").unwrap().json()["model"]["runtime"],
        "litert"
    );
    let (status, _) = d.terminate();
    assert_eq!(
        status.code(),
        Some(0),
        "exit status {status:?}; log:\n{}",
        d.log()
    );
}

// Would catch `auto` failing instead of falling back, or falling back silently
// (the status must say why the built-in runtime runs).
#[test]
fn auto_runtime_falls_back_to_builtin_and_says_why() {
    let tmp = tempfile::tempdir().unwrap();
    let (photos, _) = photo_dir(tmp.path());
    let missing = tmp.path().join("nowhere/libLiteRt.so");
    let cfg = config(&photos, &model_path(), Some(&labels_path()), "auto").replace(
        "threads = 1\n",
        &format!("threads = 1\nlitert_lib = \"{}\"\n", missing.display()),
    );
    let mut d = Daemon::start(tmp.path(), &cfg);
    let c = d.client();
    c.wait_for("/readyz", 120, |r| r.status == 200);
    let st = c.get("/api/v1/status").unwrap().json();
    assert_eq!(st["model"]["runtime"], "builtin", "{st}");
    let reason = st["model"]["runtime_reason"].as_str().unwrap();
    assert!(
        reason.contains("fell back") && reason.contains("nowhere/libLiteRt.so"),
        "{reason}"
    );
    assert!(
        d.log().contains("nowhere/libLiteRt.so"),
        "fallback not logged"
    );
    assert!(d.terminate().0.success());
}

// Would catch an empty replay folder crashing the daemon or leaving it stuck:
// it must stay up, report why it is not ready, and recover by itself once an
// image appears (retry with backoff).
#[test]
fn empty_folder_is_not_ready_then_recovers_when_images_appear() {
    let tmp = tempfile::tempdir().unwrap();
    let photos = tmp.path().join("photos");
    std::fs::create_dir_all(&photos).unwrap();
    let cfg = config(&photos, &model_path(), Some(&labels_path()), "auto").replace(
        "[source]\n",
        "[source]\nretry_initial_ms = 50\nretry_max_ms = 200\n",
    );
    let mut d = Daemon::start(tmp.path(), &cfg);
    let c = d.client();
    let r = c.wait_for("/readyz", 60, |r| {
        r.status == 503
            && r.json()["checks"]["source"]["detail"]
                .as_str()
                .unwrap_or("")
                .contains("no JPEG, PNG or BMP")
    });
    assert_eq!(r.json()["checks"]["source"]["ok"], false);
    std::fs::copy(
        testdata().join("images/grace_hopper.bmp"),
        photos.join("grace_hopper.bmp"),
    )
    .unwrap();
    c.wait_for("/readyz", 60, |r| r.status == 200);
    c.wait_for("/api/v1/results/latest", 30, |r| r.status == 200);
    assert!(d.terminate().0.success());
}

// Would catch a missing camera starving the watchdog (systemd would restart a
// daemon that is correctly waiting for its camera, in a loop).
#[test]
fn watchdog_is_fed_while_the_source_is_missing() {
    use std::os::unix::net::UnixDatagram;
    let tmp = tempfile::tempdir().unwrap();
    let photos = tmp.path().join("empty");
    std::fs::create_dir_all(&photos).unwrap();
    let sock_path = tmp.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(std::time::Duration::from_millis(200)))
        .unwrap();
    let mut d = Daemon::start_with_env(
        tmp.path(),
        &config(&photos, &model_path(), Some(&labels_path()), "auto"),
        vec![
            ("NOTIFY_SOCKET".into(), sock_path.display().to_string()),
            ("WATCHDOG_USEC".into(), "2000000".into()),
        ],
    );
    let c = d.client();
    c.wait_for("/readyz", 60, |r| r.status == 503);
    let (mut pings, mut ready) = (0, false);
    let until = std::time::Instant::now() + std::time::Duration::from_secs(4);
    let mut buf = vec![0u8; 4096];
    while std::time::Instant::now() < until {
        if let Ok(n) = sock.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]);
            pings += msg.contains("WATCHDOG=1") as u32;
            ready |= msg.contains("READY=1");
        }
    }
    assert!(!ready, "READY=1 without a source");
    assert!(
        pings >= 3,
        "only {pings} WATCHDOG=1 in 4 s while waiting for the source"
    );
    assert!(d.terminate().0.success());
}

/// The thread of process `pid` named `name` (its `comm`), as a kernel tid.
fn thread_named(pid: u32, name: &str) -> Option<i32> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
        .find_map(|t| {
            let comm = std::fs::read_to_string(t.path().join("comm")).ok()?;
            (comm.trim() == name)
                .then(|| t.file_name().to_str()?.parse().ok())
                .flatten()
        })
}

// Would catch WATCHDOG=1 pings continuing while the capture thread hangs (a
// V4L2 ioctl that never returns: systemd would never restart the wedged
// daemon), no WATCHDOG_STALL entry naming the thread, or pings not resuming
// once the thread runs again. The hang is real: the test stops the daemon's
// `capture` thread alone with ptrace (PTRACE_SEIZE + PTRACE_INTERRUPT stop one
// thread, not the process), the way a blocked ioctl would leave it.
#[test]
fn watchdog_pings_stop_while_the_capture_thread_hangs_and_resume_after() {
    use nix::libc;
    use std::os::unix::net::UnixDatagram;
    use std::time::{Duration, Instant};
    let tmp = tempfile::tempdir().unwrap();
    let (photos, _) = photo_dir(tmp.path());
    let sock_path = tmp.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut d = Daemon::start_with_env(
        tmp.path(),
        &config(&photos, &model_path(), Some(&labels_path()), "auto"),
        vec![
            ("NOTIFY_SOCKET".into(), sock_path.display().to_string()),
            ("WATCHDOG_USEC".into(), "2000000".into()),
        ],
    );
    let mut buf = vec![0u8; 4096];
    // Count WATCHDOG=1 datagrams for `secs` seconds.
    let mut pings_for = |secs: u64, ready: &mut bool| {
        let until = Instant::now() + Duration::from_secs(secs);
        let mut pings = 0;
        while Instant::now() < until {
            if let Ok(n) = sock.recv(&mut buf) {
                let msg = String::from_utf8_lossy(&buf[..n]);
                pings += msg.contains("WATCHDOG=1") as u32;
                *ready |= msg.contains("READY=1");
            }
        }
        pings
    };
    let mut ready = false;
    let t = Instant::now();
    while !ready {
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "no READY=1 within 120 s:\n{}",
            d.log()
        );
        pings_for(1, &mut ready);
    }
    assert!(pings_for(3, &mut ready) >= 2, "not fed while frames flow");

    let pid = d.child.as_ref().unwrap().id();
    let tid = thread_named(pid, "capture").expect("no thread named capture");
    // SAFETY: plain ptrace calls on a thread of our own child process; the
    // tracee is detached below (and on exit of this process at the latest).
    let seized = unsafe {
        libc::ptrace(libc::PTRACE_SEIZE, tid, 0, 0) == 0
            && libc::ptrace(libc::PTRACE_INTERRUPT, tid, 0, 0) == 0
    };
    assert!(
        seized,
        "ptrace of the capture thread failed: {}",
        std::io::Error::last_os_error()
    );
    // The supervisor notices after half the 2 s interval; give it that and a
    // margin, then no ping may come while the thread stays stopped.
    pings_for(2, &mut ready);
    let during = pings_for(3, &mut ready);
    let log = d.log();
    // Resume the thread (the tracee is in a group-stop; waitpid then detach).
    unsafe {
        let mut status = 0;
        libc::waitpid(tid, &mut status, libc::__WALL);
        libc::ptrace(libc::PTRACE_DETACH, tid, 0, 0);
    }
    assert_eq!(
        during, 0,
        "{during} WATCHDOG=1 while the capture thread was stopped"
    );
    let stall = log
        .lines()
        .find(|l| l.contains("22a9e86d6f004d7c8459820cbebd7fd3"))
        .unwrap_or_else(|| panic!("no WATCHDOG_STALL entry:\n{log}"));
    assert!(
        stall.contains("capture"),
        "the stall entry names the thread: {stall}"
    );
    d.assert_running();
    // Once the thread runs again the pings come back.
    pings_for(2, &mut ready);
    assert!(
        pings_for(3, &mut ready) >= 2,
        "pings did not resume after the thread ran again:\n{}",
        d.log()
    );
    assert!(d.terminate().0.success());
}

// Issue 23. Would catch: `spotter keys create` leaving no audit record (or
// its secret in its log line or the pending file), the daemon not taking
// the command line's records, an API revocation not recorded with its key
// and client, records lost across a restart, a secret in the daemon's log;
// and a key store readable by others not stopping the start, or stopping it
// without naming the file and the chmod that fixes it.
#[test]
fn audit_records_survive_a_restart_and_an_exposed_key_file_stops_the_start() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let (photos, _) = photo_dir(tmp.path());
    let template = config(&photos, &model_path(), Some(&labels_path()), "auto");
    let state = tmp.path().join("state");
    let cli_cfg = tmp.path().join("cli.toml");
    std::fs::write(
        &cli_cfg,
        template
            .replace("@STATE@", &state.display().to_string())
            .replace("@PORT@", "1"),
    )
    .unwrap();
    let create = |name: &str, scope: &str| {
        let out = Command::new(bin())
            .args(["keys", "--config"])
            .arg(&cli_cfg)
            .args(["create", "--name", name, "--scope", scope])
            .env_remove("JOURNAL_STREAM")
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let secret = String::from_utf8(out.stdout).unwrap().trim().to_string();
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(err.contains("audit: key_created ok"), "{err}");
        assert!(!err.contains(&secret[4..]), "secret in the log: {err}");
        secret
    };
    let ops = create("ops", "admin");
    let tablet = create("tablet", "read");
    let pending = state.join("audit-pending.ndjson");
    let text = std::fs::read_to_string(&pending).unwrap();
    assert_eq!(text.lines().count(), 2);
    assert!(!text.contains(&ops[4..]) && !text.contains(&tablet[4..]));
    assert_eq!(
        std::fs::metadata(&pending).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let mut d = Daemon::start(tmp.path(), &template);
    let c = d.client().with_key(Some(ops.clone()));
    assert_eq!(c.wait_for("/healthz", 60, |r| r.status == 200).status, 200);
    let keys = c.get("/api/v1/keys").unwrap().json();
    let id_of = |name: &str| {
        keys["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["name"] == name)
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (ops_id, tablet_id) = (id_of("ops"), id_of("tablet"));
    let r = c
        .send("DELETE", &format!("/api/v1/keys/{tablet_id}"), b"")
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let check = |c: &common::Client| {
        let r = c.get("/api/v1/audit").unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        let v = r.json();
        let recs = v["records"].as_array().unwrap();
        let got: Vec<(String, String, String)> = recs
            .iter()
            .map(|r| {
                (
                    r["action"].as_str().unwrap().to_string(),
                    r["client"].as_str().unwrap().to_string(),
                    r["target"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect();
        let want = |a: &str, c: &str, t: &str| (a.to_string(), c.to_string(), t.to_string());
        assert_eq!(
            got,
            [
                want("key_revoked", "127.0.0.1", &tablet_id),
                want("key_created", "cli", &tablet_id),
                want("key_created", "cli", &ops_id),
            ],
            "{}",
            r.body
        );
        assert_eq!(recs[0]["key_id"], ops_id.as_str());
        for s in [&ops, &tablet] {
            assert!(!r.body.contains(&s[4..]));
        }
    };
    check(&c);
    assert!(!pending.exists(), "the pending records were taken");
    d.terminate();
    d.spawn();
    let c = d.client().with_key(Some(ops.clone()));
    assert_eq!(c.wait_for("/healthz", 60, |r| r.status == 200).status, 200);
    check(&c);
    // `spotter retention` while the daemon holds the store: its status's
    // statement (the pruner passes at start), the three records counted.
    let retention = |cfg: &Path| {
        let out = Command::new(bin())
            .args(["retention", "--json", "--config"])
            .arg(cfg)
            .env("SPOTTER_API_KEY", &ops)
            .env_remove("JOURNAL_STREAM")
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let live = retention(&d.config);
    assert_eq!(live["audit"]["stored"], 3, "{live}");
    assert_eq!(live["audit"]["max_count"], 10_000, "{live}");
    assert!(live["results"]["stored"].is_u64(), "{live}");
    d.terminate();
    // ... and from the store itself when it is stopped.
    let stopped = retention(&d.config);
    assert_eq!(stopped["audit"]["stored"], 3, "{stopped}");
    let log = d.log();
    assert!(log.contains("audit: key_revoked ok"), "{log}");
    for s in [&ops, &tablet] {
        assert!(!log.contains(&s[4..]), "secret in the daemon's log");
    }

    // A key store others can read: no start, the file and the fix named.
    let keys_file = state.join("keys.json");
    std::fs::set_permissions(&keys_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = Command::new(bin())
        .args(["run", "--config"])
        .arg(&d.config)
        .env_remove("NOTIFY_SOCKET")
        .env_remove("JOURNAL_STREAM")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("chmod 600 {}", keys_file.display())),
        "{err}"
    );
}
