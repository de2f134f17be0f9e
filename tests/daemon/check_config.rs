//! `spotter check-config` checks the model and labels the config names the
//! way the daemon loads them (flatbuffer, runtime, labels, canary) and exits
//! 2 naming the key and the reason; `--syntax-only` skips those files.

use std::path::Path;
use std::process::{Command, Output};

use crate::common::{bin, testdata};

const MODEL: &str = "models/classification/mobilenet_v1_0.25_128_quant.tflite";
const LABELS: &str = "labels/labels_mobilenet_quant_v1_224.txt";

fn check(dir: &Path, model: &Path, labels: Option<&Path>, extra: &[&str]) -> Output {
    let mut text = format!(
        "[source]\nkind = \"files\"\ndir = \"{}\"\n\n[model]\npath = \"{}\"\n",
        dir.display(),
        model.display()
    );
    if let Some(l) = labels {
        text.push_str(&format!("labels = \"{}\"\n", l.display()));
    }
    let cfg = dir.join("spotter.toml");
    std::fs::write(&cfg, text).unwrap();
    Command::new(bin())
        .arg("check-config")
        .args(extra)
        .arg(&cfg)
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

// Would catch check-config exiting 0 for a model the daemon cannot load
// (missing, a directory, text, an image, truncated, empty) or a labels file
// that is not text, or failing without naming the key to fix; and, as the
// control, refusing the good model with its labels.
#[test]
fn check_config_refuses_models_and_labels_the_daemon_cannot_load() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let model = testdata().join(MODEL);
    let labels = testdata().join(LABELS);
    let jpeg = testdata().join("images/table.jpg");

    let ok = check(d, &model, Some(&labels), &[]);
    assert!(ok.status.success(), "good model refused: {}", stderr(&ok));
    assert!(String::from_utf8_lossy(&ok.stdout).starts_with("# valid"));

    let bytes = std::fs::read(&model).unwrap();
    let truncated = d.join("truncated.tflite");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let empty = d.join("empty.tflite");
    std::fs::write(&empty, b"").unwrap();
    let text = d.join("text.tflite");
    std::fs::write(&text, "this is a model, honest\n".repeat(100)).unwrap();
    let image = d.join("image.tflite");
    std::fs::copy(&jpeg, &image).unwrap();
    let directory = d.join("dir.tflite");
    std::fs::create_dir(&directory).unwrap();
    let missing = d.join("missing.tflite");
    for bad in [&missing, &directory, &text, &image, &truncated, &empty] {
        let out = check(d, bad, None, &[]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{}: {err}", bad.display());
        assert!(
            err.contains("`model.path`") && err.contains(&bad.display().to_string()),
            "{}: the error does not name the key and file: {err}",
            bad.display()
        );
    }

    for bad_labels in [jpeg.clone(), model.clone()] {
        let out = check(d, &model, Some(&bad_labels), &[]);
        let err = stderr(&out);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{}: {err}",
            bad_labels.display()
        );
        assert!(
            err.contains("`model.labels`") && err.contains(&bad_labels.display().to_string()),
            "{err}"
        );
    }

    // --syntax-only checks the file alone (a config for another machine).
    let out = check(d, &missing, None, &["--syntax-only"]);
    assert!(out.status.success(), "{}", stderr(&out));
}
