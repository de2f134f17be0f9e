//! `spotter classify` through the real binary with `--config`: the `[model]`
//! section of a config file (detection rules, thresholds, top-k) applies as in
//! the daemon, and the command's own flags take precedence over it.

use crate::common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{bin, photo_dir, testdata};

fn ssd() -> (PathBuf, PathBuf) {
    let dir = testdata().join("models/detection/coco_ssd_mobilenet_v1_1.0_quant_2018_06_29");
    (dir.join("detect.tflite"), dir.join("labelmap.txt"))
}

fn classify(args: &[&str], config: Option<&Path>, files: &[PathBuf]) -> Output {
    let mut cmd = Command::new(bin());
    cmd.arg("classify").args(args);
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    cmd.args(files)
        .env_remove("SPOTTER_LITERT_LIB")
        .output()
        .unwrap()
}

/// Detections per image path: [(label, score)] in the order printed.
fn detections(out: &Output) -> BTreeMap<String, Vec<(String, f64)>> {
    full(out)
        .into_iter()
        .map(|(path, (dets, _))| (path, dets.into_iter().map(|(l, s, _)| (l, s)).collect()))
        .collect()
}

fn write_config(dir: &Path, name: &str, model_section: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("[model]\n{model_section}")).unwrap();
    path
}

// Would catch `classify --config` ignoring the file's `[model]` rules (a
// label outside `label_filter` or inside `label_deny` printed, more than
// `max_detections`, the file's min_score not applied),
// the rules changing the detections they allow, the model path not taken from
// the file, or a flag (--min-score) losing to the file.
#[test]
fn config_rules_apply_and_flags_take_precedence() {
    let tmp = tempfile::tempdir().unwrap();
    let (photos, names) = photo_dir(tmp.path());
    let files: Vec<PathBuf> = names.iter().map(|n| photos.join(n)).collect();
    let (model, labels) = ssd();
    let common_args = ["--json", "--runtime", "builtin", "--threads", "1"];

    let mut args = common_args.to_vec();
    let (m, l) = (model.display().to_string(), labels.display().to_string());
    args.extend(["--model", &m, "--labels", &l, "--min-score", "0.3"]);
    let plain = detections(&classify(&args, None, &files));
    assert_eq!(plain.len(), files.len());
    let mut count: BTreeMap<&str, usize> = BTreeMap::new();
    for (label, _) in plain.values().flatten() {
        *count.entry(label).or_default() += 1;
    }
    let keep = count
        .iter()
        .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
        .map(|(l, _)| l.to_string())
        .expect("the SSD model detects something on the test photos");

    // The model, labels, runtime, threshold and allow-list from the file.
    let cfg = write_config(
        tmp.path(),
        "allow.toml",
        &format!(
            "path = \"{m}\"\nlabels = \"{l}\"\nruntime = \"builtin\"\nthreads = 1\n\
             min_score = 0.3\nlabel_filter = [\"{}\"]\n",
            keep.to_uppercase()
        ),
    );
    let filtered = detections(&classify(&["--json"], Some(&cfg), &files));
    assert_eq!(filtered.len(), files.len());
    for (path, dets) in &filtered {
        let want: Vec<&(String, f64)> = plain[path].iter().filter(|(l, _)| *l == keep).collect();
        assert_eq!(
            dets.iter().collect::<Vec<_>>(),
            want,
            "{path}: only {keep}, exactly as without the rules"
        );
    }

    // The deny-list and the cap: the best detection that is not `keep`.
    let deny = write_config(
        tmp.path(),
        "deny.toml",
        &format!(
            "path = \"{m}\"\nlabels = \"{l}\"\nruntime = \"builtin\"\nthreads = 1\n\
             min_score = 0.3\nlabel_deny = [\"{keep}\"]\nmax_detections = 1\n"
        ),
    );
    let denied = detections(&classify(&["--json"], Some(&deny), &files));
    for (path, dets) in &denied {
        let want: Vec<&(String, f64)> = plain[path]
            .iter()
            .filter(|(l, _)| *l != keep)
            .take(1)
            .collect();
        assert_eq!(dets.iter().collect::<Vec<_>>(), want, "{path}");
    }

    // A flag beats the file's key: a higher --min-score.
    let higher = detections(&classify(
        &["--json", "--min-score", "0.6"],
        Some(&cfg),
        &files,
    ));
    for (path, dets) in &higher {
        let want: Vec<&(String, f64)> = filtered[path].iter().filter(|(_, s)| *s >= 0.6).collect();
        assert_eq!(dets.iter().collect::<Vec<_>>(), want, "{path}");
    }
}

// Would catch the file's top_k being overridden by the flag's old fixed
// default (5), or an explicit --top-k losing to the file.
#[test]
fn config_top_k_applies_unless_the_flag_is_given() {
    let tmp = tempfile::tempdir().unwrap();
    let model = testdata().join("models/classification/mobilenet_v1_0.25_128_quant.tflite");
    let labels = testdata().join("labels/labels_mobilenet_quant_v1_224.txt");
    let image = vec![testdata().join("images/grace_hopper.bmp")];
    let cfg = write_config(
        tmp.path(),
        "k.toml",
        &format!(
            "path = \"{}\"\nlabels = \"{}\"\nruntime = \"builtin\"\nthreads = 1\ntop_k = 2\n",
            model.display(),
            labels.display()
        ),
    );
    let top = |args: &[&str]| {
        let out = classify(args, Some(&cfg), &image);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value =
            serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).unwrap();
        v["results"].as_array().unwrap().len()
    };
    assert_eq!(top(&["--json"]), 2);
    assert_eq!(top(&["--json", "--top-k", "3"]), 3);
}

// Would catch an invalid config being ignored (classify running with
// defaults) or failing without naming the file and key, or with the exit
// code of a runtime failure instead of a configuration error (2).
#[test]
fn invalid_config_is_refused_naming_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write_config(tmp.path(), "bad.toml", "min_score = 1.5\n");
    let out = classify(
        &["--json"],
        Some(&cfg),
        &[testdata().join("images/cat.bmp")],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bad.toml") && stderr.contains("model.min_score"),
        "{stderr}"
    );
}

/// `classify --json` output per image: detections as (label, score, box) and the image size.
type Full = BTreeMap<String, (Vec<(String, f64, [f64; 4])>, (u64, u64))>;

fn full(out: &Output) -> Full {
    assert!(
        out.status.success(),
        "classify failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut map = Full::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let dets = v["detections"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| {
                (
                    d["label"].as_str().unwrap().to_string(),
                    d["score"].as_f64().unwrap(),
                    ["x", "y", "width", "height"].map(|k| d[k].as_f64().unwrap()),
                )
            })
            .collect();
        let size = (
            v["image_width"].as_u64().unwrap(),
            v["image_height"].as_u64().unwrap(),
        );
        map.insert(v["path"].as_str().unwrap().to_string(), (dets, size));
    }
    map
}

// Would catch, for a YOLO model: `classify` not printing its detections or
// printing them without the names the model embeds (no labels file given),
// `--config`'s deny-list and cap not applied on this decoder's path, or the
// config's `pad_value` not reaching the letterbox (the padded border of every
// non-square photo is part of the model's input, so its output moves).
#[test]
fn yolo_detections_follow_the_config() {
    let Some((model, lib)) = crate::yolo::yolo_setup("classify::yolo_detections_follow_the_config")
    else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (photos, names) = photo_dir(tmp.path());
    let files: Vec<PathBuf> = names.iter().map(|n| photos.join(n)).collect();
    let section = |extra: &str| {
        format!(
            "path = \"{}\"\nruntime = \"litert\"\nlitert_lib = \"{}\"\nthreads = 1\n\
             min_score = 0.25\n{extra}",
            model.display(),
            lib.display()
        )
    };
    let plain = full(&classify(
        &["--json"],
        Some(&write_config(tmp.path(), "plain.toml", &section(""))),
        &files,
    ));
    assert_eq!(plain.len(), files.len());
    let mut count: BTreeMap<&str, usize> = BTreeMap::new();
    for (label, _, _) in plain.values().flat_map(|(d, _)| d) {
        assert!(
            !label.is_empty() && label.parse::<u64>().is_err(),
            "label {label:?} is not a name"
        );
        *count.entry(label).or_default() += 1;
    }
    let top = count
        .iter()
        .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
        .map(|(l, _)| l.to_string())
        .expect("YOLOv8n detects something on the test photos");

    let denied = full(&classify(
        &["--json"],
        Some(&write_config(
            tmp.path(),
            "deny.toml",
            &section(&format!("label_deny = [\"{top}\"]\nmax_detections = 2\n")),
        )),
        &files,
    ));
    for (path, (dets, _)) in &denied {
        let want: Vec<_> = plain[path]
            .0
            .iter()
            .filter(|(l, _, _)| *l != top)
            .take(2)
            .collect();
        assert_eq!(dets.iter().collect::<Vec<_>>(), want, "{path}");
    }

    let padded = full(&classify(
        &["--json"],
        Some(&write_config(
            tmp.path(),
            "pad.toml",
            &section("pad_value = 0\n"),
        )),
        &files,
    ));
    let non_square: Vec<&String> = plain
        .iter()
        .filter(|(_, (_, (w, h)))| w != h)
        .map(|(p, _)| p)
        .collect();
    if !non_square.is_empty() {
        assert!(
            non_square.iter().any(|p| padded[*p].0 != plain[*p].0),
            "pad_value = 0 changed nothing on any non-square photo: {non_square:?}"
        );
    }
}
