//! The daemon on a `command` source: ffmpeg (Debian's, installed by
//! scripts/setup.sh) writes an MJPEG test stream on its stdout, a real model
//! classifies it, results come back over HTTPS; the program exits and is
//! started again; after shutdown none of its process groups remains. Raw
//! I420 and NV12 frames from ffmpeg classify like the photo they show.

use crate::common;

use std::time::{Duration, Instant};

use common::{testdata, Daemon};

/// Whether ffmpeg is installed; under CI its absence fails the test.
fn have_ffmpeg() -> bool {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join("ffmpeg").is_file()))
        .unwrap_or(false);
    if !found {
        assert!(
            !common::in_ci(),
            "ffmpeg is not installed: scripts/setup.sh installs it (Debian package ffmpeg)"
        );
        eprintln!("skipping: ffmpeg is not installed (scripts/setup.sh installs it)");
    }
    found
}

/// The process group ids (the programs' pids) the daemon logged starting.
fn started_pgids(log: &str) -> Vec<i32> {
    log.lines()
        .filter(|l| l.contains("started the source command"))
        .filter_map(|l| {
            let v = l.split("spotter_child_pid=").nth(1)?;
            v.split_whitespace().next()?.parse().ok()
        })
        .collect()
}

// Would catch: a command source not producing results (frames not read,
// misframed, or not handed to the model), results not naming the command
// source, a program that exits not being started again, or a program (or
// its process group) left running after the daemon stops.
#[test]
fn command_source_feeds_the_model_restarts_its_program_and_leaves_nothing_behind() {
    if !have_ffmpeg() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let model = testdata().join("models/classification/mobilenet_v2_1.0_224_quant.tflite");
    let labels = testdata().join("labels/labels_mobilenet_quant_v1_224.txt");
    // 15 frames at 10 fps, then ffmpeg exits (status 0): every run ends.
    let config = format!(
        "[daemon]\nstate_dir = \"@STATE@\"\nlog_level = \"info\"\n\n\
         [source]\nkind = \"command\"\n\
         command = [\"ffmpeg\", \"-nostdin\", \"-hide_banner\", \"-loglevel\", \"error\", \"-re\", \
         \"-f\", \"lavfi\", \"-i\", \"testsrc=size=320x240:rate=10\", \"-frames:v\", \"15\", \
         \"-f\", \"mjpeg\", \"-q:v\", \"5\", \"-\"]\n\
         format = \"mjpeg\"\nretry_initial_ms = 100\nretry_max_ms = 500\nstall_timeout_ms = 5000\n\n\
         [model]\npath = \"{}\"\nlabels = \"{}\"\nruntime = \"auto\"\nthreads = 1\n\n\
         [api]\nlisten = \"127.0.0.1:@PORT@\"\n",
        model.display(),
        labels.display()
    );
    let mut d = Daemon::start(tmp.path(), &config);
    let c = d.client();
    let ready = c.wait_for("/readyz", 120, |r| r.status == 200);
    assert_eq!(ready.json()["ready"], true, "{}", ready.body);

    let results = c.wait_for("/api/v1/results?limit=5", 60, |r| {
        r.status == 200 && r.json()["results"].as_array().is_some_and(|a| a.len() >= 3)
    });
    for r in results.json()["results"].as_array().unwrap() {
        assert_eq!(r["source"], "command:ffmpeg mjpeg", "{r}");
        assert!(!r["classes"].as_array().unwrap().is_empty(), "{r}");
    }

    // The program ends after 1.5 s; the capture loop starts it again.
    let deadline = Instant::now() + Duration::from_secs(60);
    while started_pgids(&d.log()).len() < 3 {
        assert!(
            Instant::now() < deadline,
            "ffmpeg was not started again after it exited; log:\n{}",
            d.log()
        );
        d.assert_running();
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = d.log();
    assert!(
        log.contains("source command ffmpeg ended: exit status: 0"),
        "{log}"
    );

    let (status, _) = d.terminate();
    assert!(status.success(), "{status:?}");
    let pgids = started_pgids(&d.log());
    for pgid in pgids {
        let alive = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid), None);
        assert_eq!(
            alive,
            Err(nix::errno::Errno::ESRCH),
            "process group {pgid} survived the daemon"
        );
    }
}

// Would catch raw YUV 4:2:0 frames from a program being misread (a wrong
// plane size or order, chroma rows of an odd width, NV12 pairs swapped) or
// converted with the wrong colour matrix: ffmpeg writes a clear photo as
// raw I420 at its own size (odd sizes included) and as NV12 scaled, and the
// daemon's top-1 must be the reference label of that photo.
#[test]
fn raw_yuv420_and_nv12_from_a_program_classify_like_the_photo() {
    if !have_ffmpeg() {
        return;
    }
    let model_name = "mobilenet_v2_1.0_224_quant";
    let (photo, label) = std::fs::read_dir(testdata().join("images"))
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| !p.to_string_lossy().contains("mnist"))
        .filter_map(|p| {
            let name = p.file_name()?.to_str()?.to_owned();
            common::reference_clear_top1(model_name, &name).map(|l| (p, l))
        })
        .min()
        .expect("a photo with a clear reference top-1");
    let (w, h) = image::image_dimensions(&photo).unwrap();
    let model = testdata().join(format!("models/classification/{model_name}.tflite"));
    let labels = testdata().join("labels/labels_mobilenet_quant_v1_224.txt");
    for (pix_fmt, format, (fw, fh)) in [
        ("yuv420p", "yuv420", (w, h)),
        ("nv12", "nv12", (w / 2 * 2, h / 2 * 2)),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let config = format!(
            "[daemon]\nstate_dir = \"@STATE@\"\nlog_level = \"info\"\n\n\
             [source]\nkind = \"command\"\n\
             command = [\"ffmpeg\", \"-nostdin\", \"-hide_banner\", \"-loglevel\", \"error\", \"-re\", \
             \"-loop\", \"1\", \"-framerate\", \"5\", \"-i\", \"{}\", \"-vf\", \"scale={fw}:{fh}\", \
             \"-frames:v\", \"20\", \"-f\", \"rawvideo\", \"-pix_fmt\", \"{pix_fmt}\", \"-\"]\n\
             format = \"{format}\"\nwidth = {fw}\nheight = {fh}\n\
             retry_initial_ms = 100\nretry_max_ms = 500\n\n\
             [model]\npath = \"{}\"\nlabels = \"{}\"\nruntime = \"auto\"\nthreads = 1\n\n\
             [api]\nlisten = \"127.0.0.1:@PORT@\"\n",
            photo.display(),
            model.display(),
            labels.display()
        );
        let d = Daemon::start(tmp.path(), &config);
        let c = d.client();
        let results = c.wait_for("/api/v1/results?limit=3", 120, |r| {
            r.status == 200 && r.json()["results"].as_array().is_some_and(|a| a.len() >= 3)
        });
        for r in results.json()["results"].as_array().unwrap() {
            assert_eq!(
                (r["image_width"].as_u64(), r["image_height"].as_u64()),
                (Some(u64::from(fw)), Some(u64::from(fh))),
                "{format}: {r}"
            );
            assert_eq!(
                r["classes"][0]["label"],
                label,
                "{format} {}: {r}",
                photo.display()
            );
        }
    }
}
