//! Sightings end to end (issue 18): photo sequences composited at test time
//! (a background, the same background with another photo pasted over most
//! of it for N frames, the background again, with camera noise), replayed
//! through the `files` source into a real daemon and a real classifier, and
//! read back over the API.
//!
//! Which photos make the background and the "object" is decided at run
//! time with `spotter classify` (a pair whose composite's top-1 label is
//! not the background's), so the test holds for other photos and models.
//!
//! Over 600 lines: the frame compositing and run-time photo choice that the
//! tests share take some 250 of them; each test replays its own sequence.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{bin, testdata, Daemon};
use image::{imageops, RgbImage};

const MODEL: &str = "mobilenet_v2_1.0_224_quant";
const FPS: f64 = 10.0;
const INTERVAL_NS: i64 = (1e9 / FPS) as i64;
const END_AFTER_MS: u64 = 600;
const W: u32 = 320;
const H: u32 = 240;

fn model_path() -> PathBuf {
    testdata().join(format!("models/classification/{MODEL}.tflite"))
}

fn labels_path() -> PathBuf {
    testdata().join("labels/labels_mobilenet_quant_v1_224.txt")
}

/// The test photos (not MNIST), resized to the frame size, by file stem.
fn photos() -> Vec<(String, RgbImage)> {
    photos_full()
        .into_iter()
        .map(|(p, img)| {
            let name = p.file_stem().unwrap().to_string_lossy().into_owned();
            (
                name,
                imageops::resize(&img, W, H, imageops::FilterType::Triangle),
            )
        })
        .collect()
}

/// `bg` with `obj` pasted over its middle 80 %.
fn composite(bg: &RgbImage, obj: &RgbImage) -> RgbImage {
    let (ow, oh) = (W * 4 / 5, H * 4 / 5);
    let small = imageops::resize(obj, ow, oh, imageops::FilterType::Triangle);
    let mut out = bg.clone();
    imageops::overlay(
        &mut out,
        &small,
        i64::from((W - ow) / 2),
        i64::from((H - oh) / 2),
    );
    out
}

/// `img` with deterministic sensor noise of ±3 levels (frame `seed`).
fn noisy(img: &RgbImage, seed: u64) -> RgbImage {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = img.clone();
    for p in out.pixels_mut() {
        for c in p.0.iter_mut() {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            *c = (i32::from(*c) + (s % 7) as i32 - 3).clamp(0, 255) as u8;
        }
    }
    out
}

fn save_jpeg(img: &RgbImage, path: &Path) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut f, 92)
        .encode_image(img)
        .unwrap();
}

/// `spotter classify --json` on each file with `model` (and `labels`):
/// one JSON object per file.
fn classify_json(model: &Path, labels: Option<&Path>, files: &[PathBuf]) -> Vec<serde_json::Value> {
    let mut cmd = Command::new(bin());
    cmd.args(["classify", "--json", "--threads", "1", "--model"])
        .arg(model);
    if let Some(l) = labels {
        cmd.arg("--labels").arg(l);
    }
    let out = cmd.args(files).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(v.len(), files.len(), "one JSON object per image");
    v
}

/// Top-1 (label, score) of each file by the classifier.
fn top1(files: &[PathBuf]) -> Vec<(String, f64)> {
    classify_json(&model_path(), Some(&labels_path()), files)
        .iter()
        .map(|v| {
            let t = &v["results"][0];
            (
                t["label"].as_str().unwrap().to_string(),
                t["score"].as_f64().unwrap(),
            )
        })
        .collect()
}

/// A background and an object whose composite (with noise) is classified
/// as `label`, clearly, and whose background never is.
struct Scene {
    bg: RgbImage,
    with: RgbImage,
    label: String,
}

fn pick_scene(dir: &Path) -> Scene {
    let photos = photos();
    let probe = dir.join("probe");
    std::fs::create_dir_all(&probe).unwrap();
    for (i, (bg_name, bg)) in photos.iter().enumerate() {
        for (obj_name, obj) in photos.iter().filter(|(n, _)| n != bg_name) {
            let with = composite(bg, obj);
            let files: Vec<PathBuf> = (0..3)
                .flat_map(|k| {
                    let a = probe.join(format!("{i}-{obj_name}-bg{k}.jpg"));
                    let b = probe.join(format!("{i}-{obj_name}-with{k}.jpg"));
                    save_jpeg(&noisy(bg, k), &a);
                    save_jpeg(&noisy(&with, k + 10), &b);
                    [a, b]
                })
                .collect();
            let t = top1(&files);
            let (bgs, withs): (Vec<_>, Vec<_>) =
                t.chunks(2).map(|c| (c[0].clone(), c[1].clone())).unzip();
            let label = &withs[0].0;
            let clear = withs.iter().all(|(l, s)| l == label && *s >= 0.6)
                && bgs.iter().all(|(l, _)| l != label);
            if clear {
                return Scene {
                    bg: bg.clone(),
                    with,
                    label: label.clone(),
                };
            }
        }
    }
    panic!("no pair of test photos gives a composite with a clear top-1 of its own");
}

/// The replayed sequence: which frames show the object.
#[derive(Clone, Copy)]
enum Part {
    Bg(u32),
    With(u32),
}

/// Write the frames of `parts` into `dir` (sorted names): returns, per
/// frame, whether it shows the object.
fn write_sequence(scene: &Scene, parts: &[Part], dir: &Path) -> Vec<(String, bool)> {
    let parts: Vec<(u32, &RgbImage, bool)> = parts
        .iter()
        .map(|p| match *p {
            Part::Bg(c) => (c, &scene.bg, false),
            Part::With(c) => (c, &scene.with, true),
        })
        .collect();
    write_frames(&parts, dir)
}

/// Write `count` noisy copies of each part's image into `dir`, named in
/// replay order: returns, per frame, its name and the part's flag.
fn write_frames(parts: &[(u32, &RgbImage, bool)], dir: &Path) -> Vec<(String, bool)> {
    std::fs::create_dir_all(dir).unwrap();
    let mut frames = Vec::new();
    let mut n = 0u64;
    for &(count, img, flag) in parts {
        for _ in 0..count {
            let name = format!("f{n:04}.jpg");
            save_jpeg(&noisy(img, n), &dir.join(&name));
            frames.push((name, flag));
            n += 1;
        }
    }
    frames
}

/// The `[source]` section for [`start_when_loaded`]: `dir` replayed once at
/// FPS, retried every 200 ms at most while the folder is missing.
fn replay_source(dir: &Path) -> String {
    format!(
        "[source]\nkind = \"files\"\ndir = \"{}\"\nfps = {FPS}\nloop = false\n\
         retry_initial_ms = 100\nretry_max_ms = 200\n",
        dir.display()
    )
}

fn config(frames: &Path, label: &str, extra: &str) -> String {
    format!(
        "[daemon]\nstate_dir = \"@STATE@\"\nlog_level = \"info\"\n\n{}\n\
         [model]\npath = \"{}\"\nlabels = \"{}\"\nruntime = \"auto\"\nthreads = 1\n\n\
         [api]\nlisten = \"127.0.0.1:@PORT@\"\n\n\
         [sightings]\nlabels = [\"{label}\"]\nmin_score = 0.3\nend_after_ms = {END_AFTER_MS}\n\n{extra}",
        replay_source(frames),
        model_path().display(),
        labels_path().display(),
    )
}

/// Start the daemon on `text`, whose source replays `dir`, and give it the
/// frames of `staged` only once its model is loaded: frames that arrive
/// while the model loads are dropped (the source is live), and how long
/// loading takes is this machine's, not the test's. Until the folder
/// appears the source retries (`retry_max_ms` keeps that short); the rename
/// makes the whole sequence appear at once.
fn start_when_loaded(tmp: &Path, text: &str, staged: &Path, dir: &Path) -> Daemon {
    let d = Daemon::start(tmp, text);
    d.client().wait_for("/readyz", 120, |r| {
        r.json()["checks"]["model"]["ok"] == true
    });
    std::fs::rename(staged, dir).unwrap();
    d
}

/// Every stored result as the API gives it, newest first.
fn results_json(d: &Daemon) -> Vec<serde_json::Value> {
    let c = d.client();
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/results?limit=500&cursor={c}"),
            None => "/api/v1/results?limit=500".to_string(),
        };
        let v = c.get(&path).unwrap().json();
        out.extend(v["results"].as_array().unwrap().iter().cloned());
        match v["next_cursor"].as_str() {
            Some(n) => cursor = Some(n.to_string()),
            None => break,
        }
    }
    out
}

/// The file name a stored result of the files source came from.
fn origin_name(r: &serde_json::Value) -> String {
    Path::new(r["origin"].as_str().unwrap())
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

/// Every stored result, oldest first: (ts_ns, origin file name).
fn all_results(d: &Daemon) -> Vec<(i64, String)> {
    let mut out: Vec<(i64, String)> = results_json(d)
        .iter()
        .map(|r| (r["ts_ns"].as_i64().unwrap(), origin_name(r)))
        .collect();
    out.reverse();
    out
}

fn sightings(d: &Daemon, query: &str) -> Vec<serde_json::Value> {
    let v = d
        .client()
        .get(&format!("/api/v1/sightings?limit=1000{query}"))
        .unwrap()
        .json();
    let mut list = v["sightings"].as_array().unwrap().clone();
    list.reverse();
    list
}

/// Wait until the daemon has inferred every frame the source will deliver
/// (the source ran dry and the counters stopped) and nothing is open.
fn wait_replayed(d: &Daemon, frames: usize, label: &str, end_after_ms: u64) {
    let c = d.client();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut last = (u64::MAX, Instant::now());
    loop {
        let s = c.get("/api/v1/status").unwrap().json();
        let seen = s["counters"]["frames_captured"].as_u64().unwrap_or(0);
        let open = sightings(d, &format!("&label={label}&open=true"));
        if seen != last.0 {
            last = (seen, Instant::now());
        } else if seen as usize >= frames
            && open.is_empty()
            && last.1.elapsed() > Duration::from_millis(end_after_ms * 3)
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "sequence not replayed in time: {seen} of {frames} frames, {} open\n{}",
            open.len(),
            d.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The appearances of the object: (first, last) frame index of each run of
/// object frames at least `min` long.
fn appearances(frames: &[(String, bool)], min: usize, bridge: usize) -> Vec<(usize, usize)> {
    let mut runs: Vec<(usize, usize)> = Vec::new();
    for (i, (_, obj)) in frames.iter().enumerate() {
        if !obj {
            continue;
        }
        match runs.last_mut() {
            Some((_, end)) if i - *end <= bridge + 1 => *end = i,
            _ => runs.push((i, i)),
        }
    }
    runs.retain(|(a, b)| b - a + 1 >= min);
    runs
}

const SEQUENCE: &[Part] = &[
    Part::Bg(8),
    Part::With(8), // appearance 1
    Part::Bg(10),  // 1 s: longer than end_after_ms, so it ends
    Part::With(1), // a one-frame flicker: no sighting
    Part::Bg(10),
    Part::With(5), // appearance 2 ...
    Part::Bg(2),   // ... with a 200 ms gap, shorter than end_after_ms
    Part::With(5), // ... that does not split it
    Part::Bg(12),
];

/// Run SEQUENCE with `extra` config; returns the daemon (stopped? no:
/// running, for more queries), the frames and the scene's label.
fn replay(name: &str, extra: &str) -> (tempfile::TempDir, Daemon, Vec<(String, bool)>, String) {
    let tmp = tempfile::Builder::new().prefix(name).tempdir().unwrap();
    let scene = pick_scene(tmp.path());
    let dir = tmp.path().join("frames");
    let staged = tmp.path().join("frames.staged");
    let frames = write_sequence(&scene, SEQUENCE, &staged);
    let d = start_when_loaded(
        tmp.path(),
        &config(&dir, &scene.label, extra),
        &staged,
        &dir,
    );
    wait_replayed(&d, frames.len(), &scene.label, END_AFTER_MS);
    (tmp, d, frames, scene.label)
}

/// Check the sightings of `label` against the truth: one per appearance,
/// start and end within one frame interval of the appearance's first and
/// last frames' capture times (from the stored results: `results` must
/// hold every inferred object frame).
fn check_against_truth(
    d: &Daemon,
    frames: &[(String, bool)],
    label: &str,
    results: &[(i64, String)],
) -> Vec<serde_json::Value> {
    let ts_of = |i: usize| -> i64 {
        results
            .iter()
            .find(|(_, n)| *n == frames[i].0)
            .unwrap_or_else(|| panic!("frame {} was not inferred", frames[i].0))
            .0
    };
    let bridge = ((END_AFTER_MS as i64 * 1_000_000) / INTERVAL_NS) as usize - 1;
    let truth = appearances(frames, 2, bridge);
    assert_eq!(truth.len(), 2, "the sequence has two appearances");
    let got = sightings(d, &format!("&label={label}"));
    assert_eq!(
        got.len(),
        truth.len(),
        "one sighting per appearance, none for the flicker, the gap not splitting one: {got:#?}"
    );
    for (s, (a, b)) in got.iter().zip(&truth) {
        let (start, end) = (
            s["start_ns"].as_i64().unwrap(),
            s["end_ns"].as_i64().unwrap(),
        );
        let (ta, tb) = (ts_of(*a), ts_of(*b));
        assert!(
            (start - ta).abs() <= INTERVAL_NS,
            "start {start} vs truth {ta} (frame {}): {s}",
            frames[*a].0
        );
        assert!(
            (end - tb).abs() <= INTERVAL_NS,
            "end {end} vs truth {tb} (frame {}): {s}",
            frames[*b].0
        );
        assert_eq!(s["source"], "default");
        assert!(s["zone"].is_null());
        assert!(s["frames"].as_u64().unwrap() >= 2);
        assert!(s["peak_score"].as_f64().unwrap() >= 0.3);
    }
    got
}

// Would catch: a one-frame flicker opening a sighting, a short gap splitting
// one, a sighting starting or ending away from the frames that showed the
// object, one left open after the scene emptied, the summary's counts
// disagreeing with the list, or a sighting without its best-frame snapshot.
#[test]
fn one_sighting_per_appearance_at_the_right_times() {
    let (_tmp, d, frames, label) = replay(
        "sightings-all",
        "[store]\nkeep_frames = \"all\"\n\n[motion]\nenabled = false\n",
    );
    let results = all_results(&d);
    assert_eq!(
        results.len(),
        frames.len(),
        "keep_frames = all stores every frame (10 fps is slow enough for no drop)"
    );
    let got = check_against_truth(&d, &frames, &label, &results);

    // The summary's counts and seconds equal the listed sightings.
    let c = d.client();
    let first = got[0]["start_ns"].as_i64().unwrap();
    let since = first - first.rem_euclid(86_400_000_000_000);
    let until = since + 2 * 86_400_000_000_000;
    let sum = c
        .get(&format!(
            "/api/v1/sightings/summary?bucket=day&since={since}&until={until}"
        ))
        .unwrap()
        .json();
    let rows: Vec<&serde_json::Value> = sum["rows"]
        .as_array()
        .unwrap_or_else(|| panic!("summary has no rows: {sum}"))
        .iter()
        .filter(|r| r["label"] == label.as_str())
        .collect();
    let count: u64 = rows.iter().map(|r| r["count"].as_u64().unwrap()).sum();
    let secs: f64 = rows.iter().map(|r| r["seconds"].as_f64().unwrap()).sum();
    assert_eq!(count, got.len() as u64, "{sum}");
    let listed: f64 = got
        .iter()
        .map(|s| (s["end_ns"].as_i64().unwrap() - s["start_ns"].as_i64().unwrap()) as f64 / 1e9)
        .sum();
    assert!(
        (secs - listed).abs() < 1e-3,
        "summary {secs} s, listed {listed} s"
    );

    // Each sighting has its best frame as a JPEG.
    for s in &got {
        let (status, ctype, body) = c
            .get_bytes(&format!("/api/v1/sightings/{}/snapshot", s["id"]))
            .unwrap();
        assert_eq!(status, 200, "{s}");
        assert_eq!(ctype, "image/jpeg");
        let img = image::load_from_memory(&body).unwrap();
        assert_eq!((img.width(), img.height()), (W, H), "the frame as captured");
    }
}

// Would catch: motion gating inferring static frames anyway, or skipping
// the frame where the object appears (a sighting starting late), or
// skipping frames while a sighting is open (a gap splitting it).
#[test]
fn motion_gating_skips_the_static_scene_without_delaying_sightings() {
    let (_tmp, d, frames, label) = replay(
        "sightings-motion",
        "[store]\nkeep_frames = \"all\"\n\n[motion]\nenabled = true\nmax_idle_s = 10\n",
    );
    let results = all_results(&d);
    let status = d.client().get("/api/v1/status").unwrap().json();
    let skipped = status["counters"]["frames_static"].as_u64().unwrap();
    assert!(
        skipped >= 20 && results.len() + (skipped as usize) <= frames.len(),
        "most background frames are skipped: {skipped} skipped, {} inferred of {}",
        results.len(),
        frames.len()
    );
    check_against_truth(&d, &frames, &label, &results);
}

// Would catch: keep_frames = sightings storing every frame (the SD card
// wear it exists to avoid), or dropping frames of an open sighting, or the
// sample not being taken.
#[test]
fn keep_frames_sightings_stores_open_sightings_and_samples() {
    let (_tmp, d, frames, label) = replay(
        "sightings-keep",
        "[store]\nkeep_frames = \"sightings\"\nframe_sample_s = 2\n\n[motion]\nenabled = false\n",
    );
    let results = all_results(&d);
    let got = sightings(&d, &format!("&label={label}"));
    assert_eq!(got.len(), 2, "{got:#?}");
    // A sighting is open from its start until end_after_ms past its end.
    let within = |t: i64| {
        got.iter().any(|s| {
            t >= s["start_ns"].as_i64().unwrap()
                && t <= s["end_ns"].as_i64().unwrap() + END_AFTER_MS as i64 * 1_000_000
        })
    };
    let (mut inside, mut samples) = (0, Vec::new());
    for (t, _) in &results {
        if within(*t) {
            inside += 1;
        } else {
            samples.push(*t);
        }
    }
    // Every frame of an open sighting after the opening one is stored.
    let open_frames: u64 = got.iter().map(|s| s["frames"].as_u64().unwrap()).sum();
    assert!(
        inside as u64 + 2 >= open_frames,
        "{inside} stored inside sightings, {open_frames} frames passed"
    );
    // Outside sightings, at most one frame per 2 s (and at least the first).
    assert!(!samples.is_empty(), "the first frame is a sample");
    for w in samples.windows(2) {
        assert!(w[1] - w[0] >= 2_000_000_000 - INTERVAL_NS, "samples {w:?}");
    }
    assert!(
        results.len() < frames.len() * 2 / 3,
        "{} of {} frames stored",
        results.len(),
        frames.len()
    );
}

// Would catch: a sighting left open forever by a crash (the next start
// must close it at the last time it was seen), or a clean stop leaving one
// open.
#[test]
fn a_restart_closes_the_sightings_left_open() {
    let tmp = tempfile::Builder::new()
        .prefix("sightings-restart")
        .tempdir()
        .unwrap();
    let scene = pick_scene(tmp.path());
    let dir = tmp.path().join("frames");
    // The object stays in view (looping), so the sighting stays open.
    write_sequence(&scene, &[Part::With(6)], &dir);
    let text = config(&dir, &scene.label, "[store]\nkeep_frames = \"all\"\n")
        .replace("loop = false", "loop = true");
    let mut d = Daemon::start(tmp.path(), &text);
    let c = d.client();
    c.wait_for(
        &format!("/api/v1/sightings?open=true&label={}", scene.label),
        60,
        |r| r.status == 200 && !r.json()["sightings"].as_array().unwrap().is_empty(),
    );
    std::thread::sleep(Duration::from_millis(6_000)); // past PERSIST_EVERY
    d.child.as_mut().unwrap().kill().unwrap(); // SIGKILL: no clean close
    d.child.as_mut().unwrap().wait().unwrap();
    // Restart on a source without the object: nothing reopens it.
    let empty = tmp.path().join("empty");
    write_sequence(&scene, &[Part::Bg(3)], &empty);
    std::fs::write(
        &d.config,
        std::fs::read_to_string(&d.config)
            .unwrap()
            .replace(&dir.display().to_string(), &empty.display().to_string()),
    )
    .unwrap();
    d.spawn();
    let r = d
        .client()
        .wait_for("/api/v1/sightings?limit=10", 60, |r| r.status == 200);
    let list = r.json()["sightings"].as_array().unwrap().clone();
    assert_eq!(list.len(), 1, "{list:#?}");
    let s = &list[0];
    assert_eq!(
        s["end_ns"], s["last_seen_ns"],
        "closed at the last time seen: {s}"
    );
    assert!(
        s["last_seen_ns"].as_i64().unwrap() - s["start_ns"].as_i64().unwrap() >= 4_000_000_000,
        "its progress was persisted while open: {s}"
    );
    assert!(
        d.log().contains("left open by the previous run"),
        "{}",
        d.log()
    );
    let (status, _) = d.terminate();
    assert!(status.success());
}

const YOLO: &str = "models/detection/yolov8n/yolov8n_full_integer_quant.tflite";

/// Detections of each file by `spotter classify` with the YOLO detector:
/// (label, score, [x, y, w, h] in pixels).
fn detect(files: &[PathBuf]) -> Vec<Vec<(String, f64, [f64; 4])>> {
    classify_json(&testdata().join(YOLO), None, files)
        .iter()
        .map(|v| {
            v["detections"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| {
                    let f = |k: &str| d[k].as_f64().unwrap();
                    (
                        d["label"].as_str().unwrap().to_string(),
                        f("score"),
                        [f("x"), f("y"), f("width"), f("height")],
                    )
                })
                .collect()
        })
        .collect()
}

/// An empty room: a wall-to-floor gradient with some texture, nothing a
/// COCO detector names.
fn empty_room(w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        let v = 90 + (y * 80 / h) as u8;
        let t = if (x / 40 + y / 40) % 2 == 0 { 6 } else { 0 };
        image::Rgb([v + t, v - 10 + t, v - 25])
    })
}

// Would catch zones deciding by the wrong point or not at all: a person
// standing in the left half (the zone) must make one sighting in that
// zone, the same person standing in the right half none; and motion
// gating, on by default for a detector, must not delay the sighting (it
// must start at the first inferred frame that passed the person in the
// zone and end at the last), however many frames this machine drops.
#[test]
fn zones_take_a_person_by_where_they_stand() {
    let tmp = tempfile::Builder::new()
        .prefix("sightings-zone")
        .tempdir()
        .unwrap();
    let probe = tmp.path().join("probe");
    std::fs::create_dir_all(&probe).unwrap();
    // A person: the clearest person box of the test photos, cut out.
    let photos = photos_full();
    let files: Vec<PathBuf> = photos.iter().map(|(p, _)| p.clone()).collect();
    let dets = detect(&files);
    let (img, bx) = photos
        .iter()
        .zip(&dets)
        .flat_map(|((_, img), d)| {
            d.iter()
                .filter(|(l, s, _)| l == "person" && *s >= 0.6)
                .map(move |(_, s, b)| (*s, img, *b))
        })
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, img, b)| (img, b))
        .expect("a test photo with a person the detector sees clearly");
    let crop = imageops::crop_imm(
        img,
        bx[0].max(0.0) as u32,
        bx[1].max(0.0) as u32,
        bx[2] as u32,
        bx[3] as u32,
    )
    .to_image();
    let (fw, fh) = (640u32, 480u32);
    let ph = fh / 2;
    let pw = (crop.width() * ph / crop.height()).clamp(8, fw / 3);
    let person = imageops::resize(&crop, pw, ph, imageops::FilterType::Triangle);
    let bg = empty_room(fw, fh);
    let standing_at = |cx: f64| {
        let mut f = bg.clone();
        let x = (cx * f64::from(fw)) as i64 - i64::from(pw / 2);
        imageops::overlay(&mut f, &person, x, i64::from(fh - ph - fh / 20));
        f
    };
    let (left, right) = (standing_at(0.25), standing_at(0.75));
    // The detector must see the person on both sides and nobody in the room.
    let check: Vec<PathBuf> = [("bg", &bg), ("left", &left), ("right", &right)]
        .iter()
        .map(|(n, img)| {
            let p = probe.join(format!("{n}.jpg"));
            save_jpeg(&noisy(img, 1), &p);
            p
        })
        .collect();
    let seen = detect(&check);
    let persons = |i: usize| seen[i].iter().filter(|d| d.0 == "person").count();
    assert_eq!(persons(0), 0, "the empty room has a person: {:?}", seen[0]);
    assert!(persons(1) >= 1 && persons(2) >= 1, "{seen:?}");

    // How fast this machine runs the detector decides which frames are
    // inferred (the source drops what the pipeline cannot keep up with), so
    // the sequence and the checks do not depend on it: the replay starts
    // only once the model is loaded (the lead-in's static frames then reach
    // the motion gate), each part lasts 2 s, `end_after_ms` is 2 s (two
    // passes within it open a sighting even at one inference per second),
    // and the sighting is checked against the frames that were inferred.
    const ZONE_END_AFTER_MS: u64 = 2000;
    const MIN_SCORE: f64 = 0.5;
    let staged = tmp.path().join("frames.staged");
    let frames = write_frames(
        &[
            (20, &bg, false),
            (20, &left, true),
            (20, &bg, false),
            (20, &right, false),
            (20, &bg, false),
        ],
        &staged,
    );
    let dir = tmp.path().join("frames");
    let text = format!(
        "[daemon]\nstate_dir = \"@STATE@\"\nlog_level = \"info\"\n\n{}\n\
         [model]\npath = \"{}\"\nruntime = \"auto\"\nthreads = 1\n\n\
         [api]\nlisten = \"127.0.0.1:@PORT@\"\n\n\
         [store]\nkeep_frames = \"all\"\n\n\
         [motion]\nmax_idle_s = 10\n\n\
         [sightings]\nlabels = [\"person\"]\nmin_score = {MIN_SCORE}\n\
         end_after_ms = {ZONE_END_AFTER_MS}\n\n\
         [[zone]]\nname = \"left\"\npolygon = [[0.0, 0.0], [0.5, 0.0], [0.5, 1.0], [0.0, 1.0]]\n",
        replay_source(&dir),
        testdata().join(YOLO).display(),
    );
    let d = start_when_loaded(tmp.path(), &text, &staged, &dir);
    wait_replayed(&d, frames.len(), "person", ZONE_END_AFTER_MS);

    // Per inferred frame of the sequence: its capture time, whether it shows
    // the person in the zone, and whether the detector passed them there.
    let mut inferred: Vec<(i64, bool, bool)> = results_json(&d)
        .iter()
        .filter_map(|r| {
            let name = origin_name(r);
            let (_, in_zone) = frames.iter().find(|f| f.0 == name)?;
            let passed = r["detections"]
                .as_array()
                .unwrap()
                .iter()
                .any(|d| d["label"] == "person" && d["score"].as_f64().unwrap() >= MIN_SCORE);
            Some((r["ts_ns"].as_i64().unwrap(), *in_zone, passed))
        })
        .collect();
    inferred.sort();
    let passes: Vec<i64> = inferred
        .iter()
        .filter(|f| f.1 && f.2)
        .map(|f| f.0)
        .collect();
    assert!(
        passes.len() >= 2,
        "the detector passed the person in fewer than 2 inferred zone frames: {inferred:?}"
    );
    let got = sightings(&d, "&label=person");
    assert_eq!(got.len(), 1, "one sighting, in the zone: {got:#?}");
    let s = &got[0];
    assert_eq!(s["zone"], "left", "{s}");
    let (start, end) = (
        s["start_ns"].as_i64().unwrap(),
        s["end_ns"].as_i64().unwrap(),
    );
    assert_eq!(
        (start, end),
        (passes[0], passes[passes.len() - 1]),
        "the sighting spans the first to the last inferred frame passing the person in the zone: {s}"
    );
    let status = d.client().get("/api/v1/status").unwrap().json();
    assert!(
        status["counters"]["frames_static"].as_u64().unwrap() > 0,
        "motion gating is on by default for a detector: {}",
        status["counters"]
    );
}

/// The test photos at their own size: (path, image).
fn photos_full() -> Vec<(PathBuf, RgbImage)> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(testdata().join("images"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy().to_lowercase();
            (n.ends_with(".jpg") || n.ends_with(".png") || n.ends_with(".bmp"))
                && !n.starts_with("mnist")
        })
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|p| {
            let img = image::open(&p).unwrap().to_rgb8();
            (p, img)
        })
        .collect()
}
