//! YOLO detectors against the shared test data.
//!
//! Every `.tflite` in `models/detection/yolov8n/` that `golden/detection/
//! yolo_reference.json` describes is checked twice on LiteRT: from the
//! reference's own letterboxed input tensors (so decoding is checked apart
//! from resizing), and end to end from the photos through Spotter's decode,
//! letterbox and quantization. Sizes (input, anchors, classes) are read from
//! the model and the files, never assumed, so other YOLO exports added to the
//! folder and the reference are covered too.
//!
//! Criteria (issue 17): every reference detection with score >= 0.3 is
//! matched by a same-label detection with IoU >= 0.85 and a score within
//! 0.05; no detection above 0.5 is left without a reference match.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::Value;
use spotter::core::frame::{Frame, PixelFormat};
use spotter::core::result::Detection;
use spotter::inference::builtin::BuiltinRuntime;
use spotter::inference::engine::{Engine, ModelOptions};
use spotter::inference::litert::LiteRtRuntime;
use spotter::inference::modelfile::ModelFile;
use spotter::inference::preprocess::FitMode;
use spotter::inference::{DType, InferenceError, TensorSpec};

use crate::common;

fn td() -> PathBuf {
    common::testdata()
}

fn yolo_dir() -> PathBuf {
    td().join("models/detection/yolov8n")
}

fn coco80() -> PathBuf {
    td().join("labels/coco80_labels.txt")
}

fn reference() -> Value {
    let text = std::fs::read_to_string(td().join("golden/detection/yolo_reference.json"))
        .expect("yolo_reference.json");
    serde_json::from_str(&text).expect("yolo_reference.json is JSON")
}

/// The LiteRT library, or `None` after printing why the test is skipped
/// (a panic when `SPOTTER_REQUIRE_LITERT=1`, as in CI).
fn litert_lib(test: &str) -> Option<PathBuf> {
    if let Some(p) = spotter::inference::select::resolve_litert_lib(None).filter(|p| p.is_file()) {
        return Some(p);
    }
    if std::env::var("SPOTTER_REQUIRE_LITERT").as_deref() == Ok("1") {
        panic!("SPOTTER_REQUIRE_LITERT=1 but no LiteRT library; run scripts/setup-litert.sh");
    }
    let _ = writeln!(
        std::io::stderr(),
        "SKIP {test}: no LiteRT library; run scripts/setup-litert.sh to enable"
    );
    None
}

/// The YOLO models here that the reference describes, with their entries.
fn models(reference: &Value) -> Vec<(PathBuf, Value)> {
    let mut out = Vec::new();
    let mut names: Vec<PathBuf> = std::fs::read_dir(yolo_dir())
        .expect("yolov8n folder")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "tflite"))
        .collect();
    names.sort();
    for p in names {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if let Some(entry) = reference["models"].get(&name) {
            out.push((p, entry.clone()));
        }
    }
    assert!(!out.is_empty(), "no YOLO model with a reference entry");
    out
}

fn litert_engine(lib: &Path, opts: &ModelOptions) -> Result<Engine, InferenceError> {
    let file = ModelFile::read(&opts.path)?;
    let rt = LiteRtRuntime::load(lib, &opts.path, opts.threads)?;
    Engine::load(opts, Box::new(rt), &file)
}

fn yolo_opts(model: &Path) -> ModelOptions {
    let mut opts = ModelOptions::new(model);
    opts.labels = Some(coco80());
    // Below the 0.3 the criteria start at, so a borderline score within the
    // 0.05 tolerance is still reported.
    opts.min_score = Some(0.2);
    opts.jpeg_scaling = spotter::config::JpegScaling::Off;
    opts
}

fn encoded_frame(path: &Path) -> Frame {
    Frame {
        data: std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
        format: PixelFormat::Encoded,
        width: 0,
        height: 0,
        stride: 0,
        seq: 0,
        captured_at: std::time::SystemTime::UNIX_EPOCH,
        origin: "test".into(),
        source: String::new(),
    }
}

/// The reference's letterboxed RGB input quantized as the reference did:
/// `/255`, then the input tensor's own scale and zero point (or float).
fn reference_tensor(image: &str, input: &TensorSpec) -> Vec<u8> {
    let (h, w) = (input.shape[1], input.shape[2]);
    let stem = image.rsplit_once('.').map_or(image, |(s, _)| s);
    let p = td().join(format!("golden/inputs/{stem}.{w}x{h}.letterbox.rgb"));
    let rgb = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    assert_eq!(rgb.len(), w * h * 3, "{}", p.display());
    let q = input.quant;
    rgb.iter()
        .flat_map(|&v| {
            let x = f32::from(v) / 255.0;
            match (input.dtype, q) {
                (DType::F32, _) => x.to_ne_bytes().to_vec(),
                (DType::I8, Some(q)) => {
                    let r = ((x / q.scale).round() as i32 + q.zero_point).clamp(-128, 127);
                    vec![r as i8 as u8]
                }
                (DType::U8, Some(q)) => {
                    vec![((x / q.scale).round() as i32 + q.zero_point).clamp(0, 255) as u8]
                }
                (dtype, None) => panic!("quantized input {dtype:?} without parameters"),
            }
        })
        .collect()
}

/// Largest difference between two input tensors (quantized steps, or
/// pixel levels for float inputs).
fn step_diff(a: &[u8], b: &[u8], dtype: DType) -> f32 {
    let values = |t: &[u8]| -> Vec<f32> {
        match dtype {
            DType::F32 => t
                .chunks_exact(4)
                .map(|c| 255.0 * f32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            DType::I8 => t.iter().map(|&v| f32::from(v as i8)).collect(),
            DType::U8 => t.iter().map(|&v| f32::from(v)).collect(),
        }
    };
    let (a, b) = (values(a), values(b));
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(&b)
        .fold(0.0f32, |max, (x, y)| max.max((x - y).abs()))
}

fn iou(a: [f64; 4], b: [f64; 4]) -> f64 {
    let w = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let h = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = w * h;
    let area = |r: [f64; 4]| (r[2] - r[0]).max(0.0) * (r[3] - r[1]).max(0.0);
    inter / (area(a) + area(b) - inter)
}

fn ltrb(d: &Detection) -> [f64; 4] {
    let (x, y, w, h) = (
        f64::from(d.x),
        f64::from(d.y),
        f64::from(d.width),
        f64::from(d.height),
    );
    [x, y, x + w, y + h]
}

/// How closely detections must match the reference.
#[derive(Clone, Copy)]
struct Criteria {
    /// Reference detections from this score up must be matched.
    min_score: f64,
    min_iou: f64,
    max_score_diff: f64,
}

/// Issue 17's criteria, for decoding the reference's own input tensors.
const EXACT_INPUT: Criteria = Criteria {
    min_score: 0.3,
    min_iou: 0.85,
    max_score_diff: 0.05,
};

/// The built-in TF Lite 1.15 kernels differ from LiteRT's (XNNPACK) by a few
/// quantized steps on the same input (testdata README, "Known tolerances"),
/// which moves borderline detections of a quantized detector by more than
/// issue 17's bounds; the clear detections (reference score >= 0.5) are held
/// to IoU >= 0.8 and a score within 0.1.
const OTHER_KERNELS: Criteria = Criteria {
    min_score: 0.5,
    min_iou: 0.8,
    max_score_diff: 0.1,
};

/// Largest difference allowed between Spotter's letterboxed input and the
/// reference's: none for integer inputs (Spotter decodes JPEGs with
/// libjpeg-turbo and resamples with Pillow's arithmetic, as the reference
/// did), and float rounding for float inputs (pixel levels).
const MAX_INPUT_STEPS: [f32; 2] = [0.0, 0.001];

/// Check `ours` against the reference detections of one image; each failure
/// is added to `failures`. Detections above 0.5 must match a reference
/// detection (same label, IoU >= `c.min_iou`).
fn check(what: &str, entry: &Value, ours: &[Detection], c: Criteria, failures: &mut Vec<String>) {
    let size = &entry["image_size"];
    let (iw, ih) = (size[0].as_f64().unwrap(), size[1].as_f64().unwrap());
    // The reference boxes are not clipped to the image; Spotter's are.
    let refs: Vec<(String, f64, [f64; 4])> = entry["detections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            let b: Vec<f64> = d["box_px_ltrb"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            (
                d["label"].as_str().unwrap().to_string(),
                d["score"].as_f64().unwrap(),
                [
                    b[0].clamp(0.0, iw),
                    b[1].clamp(0.0, ih),
                    b[2].clamp(0.0, iw),
                    b[3].clamp(0.0, ih),
                ],
            )
        })
        .collect();
    let show = || {
        ours.iter()
            .map(|d| {
                format!(
                    "{} {:.3} {:?}",
                    d.label,
                    d.score,
                    ltrb(d).map(|v| v.round())
                )
            })
            .collect::<Vec<_>>()
    };
    for (label, score, b) in refs.iter().filter(|r| r.1 >= c.min_score) {
        let hit = ours.iter().any(|d| {
            d.label == *label
                && iou(ltrb(d), *b) >= c.min_iou
                && (f64::from(d.score) - score).abs() <= c.max_score_diff
        });
        if !hit {
            failures.push(format!(
                "{what}: reference {label} {score:.3} {b:?} not matched; got {:?}",
                show()
            ));
        }
    }
    for d in ours.iter().filter(|d| d.score > 0.5) {
        let hit = refs
            .iter()
            .any(|(label, _, b)| d.label == *label && iou(ltrb(d), *b) >= c.min_iou);
        if !hit {
            failures.push(format!(
                "{what}: {} {:.3} {:?} has no reference detection; got {:?}",
                d.label,
                d.score,
                ltrb(d),
                show()
            ));
        }
    }
}

// Would catch any decoding fault on real YOLOv8n exports (int8 and float
// outputs): wrong channel/anchor axis, dequantization with the wrong
// parameters, box units, letterbox offsets or scale when mapping back,
// label offsets, NMS keeping duplicates or dropping neighbours. The input
// tensors are the reference's own, so resizing differences cannot hide or
// cause a failure.
#[test]
fn yolo_decode_matches_reference_from_its_input_tensors() {
    let Some(lib) = litert_lib("yolo_decode_matches_reference_from_its_input_tensors") else {
        return;
    };
    let reference = reference();
    let mut failures = Vec::new();
    for (model, entry) in models(&reference) {
        let mut e = litert_engine(&lib, &yolo_opts(&model)).unwrap();
        let info = e.info();
        assert_eq!(info.family, "yolov8", "{}", model.display());
        assert_eq!(info.kind, "detection");
        assert_eq!(info.fit, FitMode::Letterbox);
        let mut spec = e.prepare_spec();
        let mut scratch = Vec::new();
        for (image, img_entry) in entry["images"].as_object().unwrap() {
            let tensor = reference_tensor(image, &info.input);
            // Spotter's own mapping for this photo (its letterbox geometry).
            let prepared = spec
                .prepare(
                    &encoded_frame(&td().join("images").join(image)),
                    &mut scratch,
                )
                .unwrap();
            let out = e.run_prepared(&tensor, &prepared).unwrap();
            let size = &img_entry["image_size"];
            assert_eq!(
                (u64::from(out.image_width), u64::from(out.image_height)),
                (size[0].as_u64().unwrap(), size[1].as_u64().unwrap())
            );
            let what = format!("{} {image} (reference tensor)", model.display());
            check(
                &what,
                img_entry,
                &out.detections,
                EXACT_INPUT,
                &mut failures,
            );
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// Would catch the YOLO family not getting its letterbox and pad 114 by
// default, boxes placed on the letterboxed input instead of the photo,
// quantization of the input with the wrong parameters, or a resampler or
// JPEG decoder that is not the reference's (the input must be the
// reference's byte for byte): the photos go through Spotter's whole
// pipeline and must give the reference detections within issue 17's bounds.
#[test]
fn yolo_end_to_end_from_photos_matches_reference() {
    let Some(lib) = litert_lib("yolo_end_to_end_from_photos_matches_reference") else {
        return;
    };
    let reference = reference();
    let mut failures = Vec::new();
    for (model, entry) in models(&reference) {
        let mut e = litert_engine(&lib, &yolo_opts(&model)).unwrap();
        e.canary().unwrap();
        let input = e.info().input;
        let mut spec = e.prepare_spec();
        for (image, img_entry) in entry["images"].as_object().unwrap() {
            let frame = encoded_frame(&td().join("images").join(image));
            let mut ours = Vec::new();
            spec.prepare(&frame, &mut ours).unwrap();
            let theirs = reference_tensor(image, &input);
            let max = step_diff(&ours, &theirs, input.dtype);
            let limit = MAX_INPUT_STEPS[usize::from(input.dtype == DType::F32)];
            if max > limit {
                failures.push(format!(
                    "{} {image}: letterboxed input {max} steps from the reference's (limit {limit})",
                    model.display()
                ));
            }
            let out = e.run(&frame).unwrap();
            let what = format!("{} {image} (end to end)", model.display());
            check(
                &what,
                img_entry,
                &out.detections,
                EXACT_INPUT,
                &mut failures,
            );
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// Would catch a YOLO label list of the wrong length accepted (every label
// shifted or some classes unnamed): the refusal names both counts and the
// file.
#[test]
fn yolo_label_count_mismatch_is_refused_with_both_numbers() {
    let Some(lib) = litert_lib("yolo_label_count_mismatch_is_refused_with_both_numbers") else {
        return;
    };
    let reference = reference();
    let (model, _) = models(&reference).remove(0);
    let ssd_labels =
        td().join("models/detection/coco_ssd_mobilenet_v1_1.0_quant_2018_06_29/labelmap.txt");
    let n = std::fs::read_to_string(&ssd_labels)
        .unwrap()
        .lines()
        .count();
    let mut opts = yolo_opts(&model);
    opts.labels = Some(ssd_labels.clone());
    let e = litert_engine(&lib, &opts).unwrap_err();
    let msg = e.to_string();
    let classes = {
        let ok = litert_engine(&lib, &yolo_opts(&model)).unwrap();
        ok.info().labels
    };
    assert!(matches!(e, InferenceError::Labels { .. }), "{msg}");
    assert!(msg.contains(&format!("{n} labels")), "{msg}");
    assert!(msg.contains(&format!("{classes} classes")), "{msg}");
    assert!(msg.contains("labelmap.txt"), "{msg}");
}

// Would catch a fit or pad override ignored for YOLO (the family default
// winning over the user's setting).
#[test]
fn yolo_fit_override_is_kept() {
    let Some(lib) = litert_lib("yolo_fit_override_is_kept") else {
        return;
    };
    let reference = reference();
    let (model, _) = models(&reference).remove(0);
    let mut opts = yolo_opts(&model);
    opts.fit = Some(FitMode::Stretch);
    let e = litert_engine(&lib, &opts).unwrap();
    assert_eq!(e.info().fit, FitMode::Stretch);
    assert_eq!(e.prepare_spec().prep.pad(), [114; 3]);
    opts.pad_value = Some(0);
    let e = litert_engine(&lib, &opts).unwrap();
    assert_eq!(e.prepare_spec().prep.pad(), [0; 3]);
}

// Would catch a YOLO model without `min_score` reporting its near-zero
// anchors (every frame full of `max_detections` junk boxes), or the embedded
// Ultralytics names not being used when no labels file is given.
#[test]
fn yolo_defaults_to_ultralytics_score_floor_and_embedded_names() {
    let Some(lib) = litert_lib("yolo_defaults_to_ultralytics_score_floor_and_embedded_names")
    else {
        return;
    };
    let reference = reference();
    let mut photos = std::fs::read_dir(td().join("images"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "jpg"))
        .collect::<Vec<_>>();
    photos.sort();
    for (model, _) in models(&reference) {
        let mut opts = ModelOptions::new(&model);
        opts.jpeg_scaling = spotter::config::JpegScaling::Off;
        let mut e = litert_engine(&lib, &opts).unwrap();
        assert!(e
            .info()
            .labels_source
            .unwrap_or_default()
            .starts_with("embedded:"));
        for photo in &photos {
            let out = e.run(&encoded_frame(photo)).unwrap();
            assert!(
                out.detections
                    .iter()
                    .all(|d| d.score >= spotter::inference::engine::YOLO_MIN_SCORE),
                "{}: {:?}",
                photo.display(),
                out.detections
            );
            // Labels are COCO names from the file, not indices.
            assert!(out.detections.iter().all(|d| !d.label.starts_with('#')));
        }
    }
}

// Would catch the built-in TF Lite 1.15 crashing on, or silently
// mis-running, the YOLO exports: it either refuses them at load naming the
// op and pointing at `runtime = litert` (the full-integer export: its
// per-tensor int8 convolution filters are computed wrongly by TF Lite 1.15),
// or loads them and then gives the reference detections (end-to-end criteria).
#[test]
fn builtin_runtime_refuses_or_runs_yolo_correctly() {
    let reference = reference();
    let mut failures = Vec::new();
    for (model, entry) in models(&reference) {
        let file = ModelFile::read(&model).unwrap();
        let loaded = BuiltinRuntime::from_model_file(&file, 1)
            .and_then(|rt| Engine::load(&yolo_opts(&model), Box::new(rt), &file));
        match loaded {
            Err(InferenceError::Load { reason, .. }) => {
                assert!(reason.contains("use runtime = litert"), "{reason}");
                assert!(reason.contains("CONV_2D"), "{reason}");
            }
            Err(other) => panic!("{}: {other}", model.display()),
            Ok(mut e) => {
                e.canary().unwrap();
                for (image, img_entry) in entry["images"].as_object().unwrap() {
                    let out = e
                        .run(&encoded_frame(&td().join("images").join(image)))
                        .unwrap();
                    let what = format!("builtin {} {image}", model.display());
                    check(
                        &what,
                        img_entry,
                        &out.detections,
                        OTHER_KERNELS,
                        &mut failures,
                    );
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Timing, not a test (no assertions): the decode + NMS + rules stage
/// (`post_us`) against `invoke_us` for each YOLO model here, one thread,
/// median of 20 runs on one photo. Issue 17's target: post ≤ 2 % of invoke.
/// `cargo test --test inference -- --ignored --nocapture yolo_decode_share`.
#[test]
#[ignore]
fn yolo_decode_share_of_invoke() {
    let Some(lib) = litert_lib("yolo_decode_share_of_invoke") else {
        return;
    };
    let reference = reference();
    for (model, _) in models(&reference) {
        let mut opts = yolo_opts(&model);
        opts.min_score = Some(0.25);
        let mut e = litert_engine(&lib, &opts).unwrap();
        let frame = encoded_frame(&td().join("images/grace_hopper.bmp"));
        let (mut post, mut invoke) = (Vec::new(), Vec::new());
        for _ in 0..20 {
            let out = e.run(&frame).unwrap();
            post.push(out.latency.post_us);
            invoke.push(out.latency.invoke_us);
        }
        post.sort_unstable();
        invoke.sort_unstable();
        let (p, i) = (post[10], invoke[10]);
        eprintln!(
            "{}: invoke {i} µs, decode+NMS+rules {p} µs = {:.2} % of invoke",
            model.display(),
            100.0 * p as f64 / i as f64
        );
    }
}
