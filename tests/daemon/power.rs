//! Power and heat (issue 22) against a fake sysfs tree: the daemon reads the
//! SoC temperature and the firmware's throttling flags, shows them in status
//! and `/metrics`, and logs when throttling starts and ends.

use std::path::Path;

use crate::common::{testdata, Daemon};

fn write(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    // Replace, not truncate in place: the monitor may read at any moment.
    let tmp = p.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(tmp, p).unwrap();
}

/// A daemon replaying one photo at `fps` with the fake sysfs tree `sys`,
/// polled every second, and `power` keys added to `[power]`.
fn daemon_config(dir: &Path, sys: &Path, fps: f64, power: &str) -> String {
    let photos = dir.join("photos");
    std::fs::create_dir_all(&photos).unwrap();
    std::fs::copy(
        testdata().join("images/grace_hopper.bmp"),
        photos.join("a.bmp"),
    )
    .unwrap();
    format!(
        "[daemon]\nstate_dir = \"@STATE@\"\nlog_level = \"info\"\n\n\
         [source]\nkind = \"files\"\ndir = \"{}\"\nfps = {fps:.1}\nloop = true\n\n\
         [model]\npath = \"{}\"\nruntime = \"builtin\"\nthreads = 1\n\n\
         [api]\nlisten = \"127.0.0.1:@PORT@\"\n\n\
         [power]\nsysfs_root = \"{}\"\npoll_s = 1\n{power}",
        photos.display(),
        testdata()
            .join("models/classification/mobilenet_v1_0.25_128_quant.tflite")
            .display(),
        sys.display()
    )
}

// Would catch: the readings never reaching status or /metrics, the flags
// read from the wrong bits, a "throttling started" line per poll instead of
// per episode, or no line when it ends.
#[test]
fn throttling_and_temperature_from_a_fake_sysfs() {
    let tmp = tempfile::tempdir().unwrap();
    let sys = tmp.path().join("sys");
    write(&sys, "class/thermal/thermal_zone0/type", "cpu-thermal\n");
    write(&sys, "class/thermal/thermal_zone0/temp", "83500\n");
    // Under-voltage and throttled now, and both since boot.
    write(
        &sys,
        "devices/platform/soc/soc:firmware/get_throttled",
        "50005\n",
    );
    let config = daemon_config(tmp.path(), &sys, 2.0, "");
    let mut d = Daemon::start(tmp.path(), &config);
    let c = d.client();
    let status = c.wait_for("/api/v1/status", 60, |r| {
        r.status == 200 && !r.json()["power"].is_null()
    });
    let p = &status.json()["power"];
    assert_eq!(p["temp_c"], 83.5, "{p}");
    assert_eq!(p["temp_zone"], "cpu-thermal");
    assert_eq!(p["mask"], 0x50005);
    assert_eq!(p["now"]["under_voltage"], true);
    assert_eq!(p["now"]["throttled"], true);
    assert_eq!(p["now"]["freq_capped"], false);
    assert_eq!(p["since_boot"]["under_voltage"], true);
    let m = c.get("/metrics").unwrap();
    assert!(
        m.body.contains("spotter_soc_temperature_celsius 83.5"),
        "{}",
        m.body
    );
    assert!(
        m.body
            .contains("spotter_power_flag{flag=\"throttled\",when=\"now\"} 1"),
        "{}",
        m.body
    );

    // Several polls in the same episode, then it ends (the sticky bits stay).
    std::thread::sleep(std::time::Duration::from_millis(2500));
    write(
        &sys,
        "devices/platform/soc/soc:firmware/get_throttled",
        "50000\n",
    );
    write(&sys, "class/thermal/thermal_zone0/temp", "61000\n");
    let status = c.wait_for("/api/v1/status", 30, |r| {
        r.status == 200 && r.json()["power"]["now"]["throttled"] == false
    });
    assert_eq!(status.json()["power"]["temp_c"], 61.0);
    assert_eq!(status.json()["power"]["since_boot"]["throttled"], true);
    let log = d.log();
    let started: Vec<_> = log
        .lines()
        .filter(|l| l.contains("the board reports under-voltage, throttled"))
        .collect();
    assert_eq!(started.len(), 1, "one line per episode: {started:#?}");
    assert!(started[0].contains("83.5"), "{}", started[0]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !d.log().contains("throttling ended (SoC at 61.0") {
        assert!(
            std::time::Instant::now() < deadline,
            "no 'throttling ended' line: {}",
            d.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let (code, _) = d.terminate();
    assert!(code.success());
}

/// `[counters]` of one status document: (inferences, frames_skipped_hot).
fn counts(c: &crate::common::Client) -> (u64, u64) {
    let s = c.get("/api/v1/status").unwrap().json();
    let n = |k: &str| s["counters"][k].as_u64().unwrap();
    (n("inferences"), n("frames_skipped_hot"))
}

// Would catch: the heat limit never slowing inference (or only logging it),
// letting more than hot_max_fps frames through, skipped frames not counted,
// the cap missing from status and /metrics, or the slowdown never ending
// once the SoC has cooled below the resume point.
#[test]
fn inference_slows_down_while_the_soc_is_hot() {
    let tmp = tempfile::tempdir().unwrap();
    let sys = tmp.path().join("sys");
    write(&sys, "class/thermal/thermal_zone0/type", "cpu-thermal\n");
    write(&sys, "class/thermal/thermal_zone0/temp", "86000\n");
    let config = daemon_config(
        tmp.path(),
        &sys,
        20.0,
        "hot_above_c = 80.0\nhot_resume_below_c = 70.0\nhot_max_fps = 1.0\n",
    );
    let mut d = Daemon::start(tmp.path(), &config);
    let c = d.client();
    let status = c.wait_for("/api/v1/status", 60, |r| {
        r.status == 200 && r.json()["power"]["inference_max_fps"] == 1.0
    });
    assert_eq!(status.json()["power"]["temp_c"], 86.0);
    let m = c.get("/metrics").unwrap();
    assert!(m.body.contains("spotter_inference_max_fps 1"), "{}", m.body);

    // While hot: at most one inferred frame per second (plus the one at each
    // end of the window), the others skipped and counted.
    let (inf0, skip0) = counts(&c);
    let t0 = std::time::Instant::now();
    std::thread::sleep(std::time::Duration::from_secs(4));
    let (inf1, skip1) = counts(&c);
    let secs = t0.elapsed().as_secs_f64();
    assert!(
        (inf1 - inf0) as f64 <= secs.ceil() + 1.0,
        "{} frames inferred in {secs:.1} s at a 1 frame/s cap",
        inf1 - inf0
    );
    assert!(skip1 > skip0, "no frame skipped while hot");

    // Still above the resume point: the slowdown holds (hysteresis).
    write(&sys, "class/thermal/thermal_zone0/temp", "75000\n");
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let s = c.get("/api/v1/status").unwrap().json();
    assert_eq!(s["power"]["temp_c"], 75.0);
    assert_eq!(
        s["power"]["inference_max_fps"], 1.0,
        "ended above the resume point"
    );

    // Cooled: full rate again, nothing skipped any more.
    write(&sys, "class/thermal/thermal_zone0/temp", "65000\n");
    c.wait_for("/api/v1/status", 30, |r| {
        r.status == 200 && r.json()["power"]["inference_max_fps"].is_null()
    });
    let (_, skip2) = counts(&c);
    std::thread::sleep(std::time::Duration::from_secs(2));
    let (_, skip3) = counts(&c);
    assert_eq!(skip2, skip3, "frames still skipped after cooling down");
    let m = c.get("/metrics").unwrap();
    assert!(!m.body.contains("spotter_inference_max_fps"), "{}", m.body);
    let log = d.log();
    assert_eq!(
        log.matches("inference slowed to 1 frames/s").count(),
        1,
        "one 'slowed' line per episode: {log}"
    );
    assert!(log.contains("inference back to full rate"), "{log}");
    let (code, _) = d.terminate();
    assert!(code.success());
}
