//! The daemon end to end with an Ultralytics YOLO detector (issue 17): the
//! `files` source replaying the test photos into a YOLOv8n export on LiteRT,
//! results read back over HTTPS; then the same photos under per-label rules.
//!
//! Needs `models/detection/yolov8n/` in the test data and a LiteRT library
//! (`$SPOTTER_LITERT_LIB` or the copy `scripts/setup-litert.sh` makes); without
//! either the tests print a SKIP line and pass, unless
//! `SPOTTER_REQUIRE_LITERT=1` (CI), which makes a missing library a failure.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use common::{photo_dir, testdata, Daemon};

/// The int8-in/int8-out export: no float pre-processing hides a wrong quantization.
const MODEL: &str = "yolov8n_full_integer_quant.tflite";

/// The score the reference pipeline keeps (testdata README).
const MIN_SCORE: f32 = 0.25;

/// Detections per photo: origin → [(label, score, x, y, width, height)].
type Seen = BTreeMap<String, Vec<(String, f64, [f64; 4])>>;

fn skip(test: &str, why: &str) {
    // The stderr handle, so the line shows although the harness captures output.
    let _ = writeln!(std::io::stderr(), "SKIP {test}: {why}");
}

/// The YOLO model and a LiteRT library, or `None` after saying why the test is skipped.
pub(crate) fn yolo_setup(test: &str) -> Option<(PathBuf, PathBuf)> {
    let model = testdata().join("models/detection/yolov8n").join(MODEL);
    if !model.is_file() {
        skip(
            test,
            &format!(
                "no YOLO test model at {} (see the testdata README)",
                model.display()
            ),
        );
        return None;
    }
    match spotter::inference::select::resolve_litert_lib(None).filter(|p| p.is_file()) {
        Some(lib) => Some((model, lib)),
        None if std::env::var("SPOTTER_REQUIRE_LITERT").as_deref() == Ok("1") => {
            panic!("SPOTTER_REQUIRE_LITERT=1 but no LiteRT library; run scripts/setup-litert.sh")
        }
        None => {
            skip(
                test,
                "no LiteRT library; run scripts/setup-litert.sh to enable",
            );
            None
        }
    }
}

/// A files-source config for `model` on `photos`, no labels file (the names
/// come from the model), with `rules` appended to `[model]`.
fn config(photos: &Path, model: &Path, lib: &Path, rules: &str) -> String {
    format!(
        "[daemon]\nstate_dir = \"@STATE@\"\nlog_level = \"info\"\n\n\
         [source]\nkind = \"files\"\ndir = \"{}\"\nfps = 20.0\nloop = true\n\n\
         [model]\npath = \"{}\"\nruntime = \"litert\"\nlitert_lib = \"{}\"\nthreads = 1\n\
         retry_ms = 500\nmin_score = {MIN_SCORE}\n{rules}\n\
         [api]\nlisten = \"127.0.0.1:@PORT@\"\n",
        photos.display(),
        model.display(),
        lib.display()
    )
}

/// Start the daemon, wait until every photo has a result over HTTPS, and
/// return the newest result's detections per photo (then stop it).
fn run(dir: &Path, photos: &Path, names: &[String], config: &str) -> Seen {
    let mut d = Daemon::start(dir, config);
    let c = d.client();
    let ready = c.wait_for("/readyz", 180, |r| r.status == 200);
    assert_eq!(ready.json()["ready"], true, "{}\n{}", ready.body, d.log());
    let st = c.get("/api/v1/status").unwrap().json();
    assert_eq!(st["model"]["kind"], "detection", "{st}");
    let want: BTreeSet<String> = names
        .iter()
        .map(|n| photos.join(n).display().to_string())
        .collect();
    let reply = c.wait_for("/api/v1/results?limit=1000", 180, |r| {
        r.status == 200
            && r.json()["results"].as_array().is_some_and(|a| {
                want.iter()
                    .all(|w| a.iter().any(|x| x["origin"] == w.as_str()))
            })
    });
    let mut seen = Seen::new();
    // Newest first: keep each photo's first (newest) result.
    for r in reply.json()["results"].as_array().unwrap() {
        let origin = r["origin"].as_str().unwrap().to_string();
        if seen.contains_key(&origin) {
            continue;
        }
        assert!(
            r["classes"].as_array().is_some_and(|a| a.is_empty()),
            "a detector reports no classes: {r}"
        );
        let (w, h) = (
            r["image_width"].as_f64().unwrap(),
            r["image_height"].as_f64().unwrap(),
        );
        let mut dets = Vec::new();
        for det in r["detections"].as_array().unwrap() {
            let b = ["x", "y", "width", "height"].map(|k| det[k].as_f64().unwrap());
            // Source-image pixels, inside the frame (mapped back through the letterbox).
            assert!(
                b[0] >= -0.5 && b[1] >= -0.5 && b[0] + b[2] <= w + 0.5 && b[1] + b[3] <= h + 0.5,
                "box outside the {w}x{h} frame: {det}"
            );
            let score = det["score"].as_f64().unwrap();
            assert!(score >= MIN_SCORE as f64 - 1e-6, "below min_score: {det}");
            dets.push((det["label"].as_str().unwrap().to_string(), score, b));
        }
        seen.insert(origin, dets);
    }
    let (status, took) = d.terminate();
    assert!(status.success(), "daemon exit {status:?} after {took:?}");
    seen
}

/// The reference's labels scoring at least `min` per photo file name.
fn reference_labels(min: f64) -> BTreeMap<String, BTreeSet<String>> {
    let path = testdata().join("golden/detection/yolo_reference.json");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return BTreeMap::new();
    };
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut out = BTreeMap::new();
    if let Some(images) = v["models"][MODEL]["images"].as_object() {
        for (name, img) in images {
            let labels: BTreeSet<String> = img["detections"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|d| d["score"].as_f64().unwrap_or(0.0) >= min)
                .filter_map(|d| d["label"].as_str().map(str::to_string))
                .collect();
            out.insert(name.clone(), labels);
        }
    }
    out
}

// Would catch: a YOLO model refused or running without labels in the daemon
// (labels not taken from the names Ultralytics embeds), detections not
// reaching the stored results served over HTTPS, boxes left in the model's
// letterboxed coordinates, clear reference objects missing; and then the
// per-label rules of `[model]` not applied in the daemon's path (an
// allow-listed label's detections changed, other labels still reported, a
// per-label score ignored).
#[test]
fn yolo_detections_over_https_and_filtered_by_label_rules() {
    let test = "yolo_detections_over_https_and_filtered_by_label_rules";
    let Some((model, lib)) = yolo_setup(test) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (photos, names) = photo_dir(tmp.path());

    let first_dir = tmp.path().join("all");
    std::fs::create_dir_all(&first_dir).unwrap();
    let all = run(
        &first_dir,
        &photos,
        &names,
        &config(&photos, &model, &lib, ""),
    );

    // Labels are names (from the model), and the clear reference objects are found.
    let mut count: BTreeMap<String, usize> = BTreeMap::new();
    for dets in all.values() {
        for (label, _, _) in dets {
            assert!(
                !label.is_empty() && label.parse::<u64>().is_err(),
                "label {label:?} is not a name"
            );
            *count.entry(label.clone()).or_default() += 1;
        }
    }
    assert!(!count.is_empty(), "no detections on any photo: {all:?}");
    let mut checked = 0;
    for (name, labels) in reference_labels(0.6) {
        let Some(dets) = all.get(&photos.join(&name).display().to_string()) else {
            continue;
        };
        for l in labels {
            assert!(
                dets.iter().any(|(d, _, _)| *d == l),
                "{name}: the reference's {l} is missing: {dets:?}"
            );
            checked += 1;
        }
    }
    if checked == 0 {
        skip(
            test,
            "no clear reference detection among the photos (reference check)",
        );
    }

    // The most frequent label is allowed; a second allowed label gets a
    // per-label score above its best one, so none of it may remain.
    let mut by_count: Vec<(&String, &usize)> = count.iter().collect();
    by_count.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let keep = by_count[0].0.clone();
    let best = |label: &str| {
        all.values()
            .flatten()
            .filter(|(l, _, _)| l == label)
            .map(|(_, s, _)| *s)
            .fold(0.0, f64::max)
    };
    let raised = by_count[1..]
        .iter()
        .map(|(l, _)| (*l).clone())
        .find(|l| best(l) < 0.98);
    let mut rules = String::new();
    match &raised {
        Some(r) => {
            rules.push_str(&format!("label_filter = [\"{keep}\", \"{r}\"]\n\n"));
            rules.push_str(&format!(
                "[model.min_score_by_label]\n\"{r}\" = {:.3}\n",
                (best(r) + 0.01).min(1.0)
            ));
        }
        None => rules.push_str(&format!("label_filter = [\"{keep}\"]\n")),
    }
    let second_dir = tmp.path().join("filtered");
    std::fs::create_dir_all(&second_dir).unwrap();
    let filtered = run(
        &second_dir,
        &photos,
        &names,
        &config(&photos, &model, &lib, &rules),
    );
    for (origin, dets) in &filtered {
        assert!(
            dets.iter().all(|(l, _, _)| *l == keep),
            "{origin}: only {keep} allowed ({rules}): {dets:?}"
        );
        let before: Vec<f64> = all[origin]
            .iter()
            .filter(|(l, _, _)| *l == keep)
            .map(|(_, s, _)| *s)
            .collect();
        let after: Vec<f64> = dets.iter().map(|(_, s, _)| *s).collect();
        assert_eq!(
            before.len(),
            after.len(),
            "{origin}: the rules changed the allowed label's detections: {before:?} vs {after:?}"
        );
        for (b, a) in before.iter().zip(&after) {
            assert!((a - b).abs() < 1e-3, "{origin}: {before:?} vs {after:?}");
        }
    }
}
