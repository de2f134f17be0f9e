//! The `[model]` section: [`ModelSettings`] and the [`DetectionRules`] it
//! carries, with their defaults and validation ([`build_model`]).
//!
//! The detection rules are `label_filter` (allow-list) or `label_deny`
//! (deny-list; not both), `min_box_area`, `max_detections`, `iou_threshold`
//! and the `[model.min_score_by_label]` table, which merges key by key across
//! drop-ins (later files win) and matches labels ignoring case. `fit` and
//! `pad_value` are optional: unset, the detected model family chooses
//! (see `inference::engine`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Serialize, Serializer};

use super::raw::Layers;
use super::{in_range, invalid, val, ConfigError, Fit, JpegScaling, RuntimeSetting};

/// Which detections a detector reports, after decoding: the `[model]` keys
/// `label_filter` (allow-list), `label_deny`, `min_box_area`,
/// `max_detections`, `iou_threshold` and the `[model.min_score_by_label]`
/// table. The global `model.min_score` applies to labels without their own
/// score. Label names are kept lower-case (matching is case-insensitive).
///
/// Serialized (for `check-config`) under the keys the parser reads, so the
/// printed settings load back: flattened into `[model]`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DetectionRules {
    /// Per-label minimum score, overriding `model.min_score` for that label.
    #[serde(serialize_with = "short_floats")]
    pub min_score_by_label: BTreeMap<String, f32>,
    /// Report only these labels (empty: all).
    #[serde(rename = "label_filter")]
    pub allow: Vec<String>,
    /// Never report these labels.
    #[serde(rename = "label_deny")]
    pub deny: Vec<String>,
    /// Smallest box reported, as a fraction of the frame's area (0: any).
    #[serde(serialize_with = "short_float")]
    pub min_box_area: f32,
    /// At most this many detections per frame, highest scores first.
    pub max_detections: usize,
    /// Non-maximum suppression: boxes of one class overlapping a
    /// higher-scoring one by more than this IoU are dropped.
    #[serde(serialize_with = "short_float")]
    pub iou_threshold: f32,
}

/// Default `model.max_detections`.
pub const DEFAULT_MAX_DETECTIONS: usize = 100;
/// Default `model.iou_threshold` (Ultralytics' own default).
pub const DEFAULT_IOU_THRESHOLD: f32 = 0.45;

impl Default for DetectionRules {
    /// No filtering beyond `model.min_score`: every label, any area, up to
    /// [`DEFAULT_MAX_DETECTIONS`], NMS at [`DEFAULT_IOU_THRESHOLD`].
    fn default() -> Self {
        DetectionRules {
            min_score_by_label: Default::default(),
            allow: Vec::new(),
            deny: Vec::new(),
            min_box_area: 0.0,
            max_detections: DEFAULT_MAX_DETECTIONS,
            iou_threshold: DEFAULT_IOU_THRESHOLD,
        }
    }
}

/// `[model]`, validated.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ModelSettings {
    pub path: PathBuf,
    pub labels: Option<PathBuf>,
    pub runtime: RuntimeSetting,
    pub litert_lib: Option<PathBuf>,
    pub threads: usize,
    pub top_k: usize,
    /// `None`: the model family's default (0.25 for YOLO, Ultralytics' own
    /// default; 0 otherwise).
    #[serde(serialize_with = "short_opt_float")]
    pub min_score: Option<f32>,
    /// `None`: the detected model family's default (letterbox for YOLO,
    /// stretch otherwise).
    pub fit: Option<Fit>,
    /// Letterbox padding value; `None`: the family's default (114 for
    /// Ultralytics YOLO, the pixel that normalizes to 0.0 otherwise).
    pub pad_value: Option<u8>,
    /// What detections are reported (per-label scores, allow/deny lists,
    /// minimum area, cap, NMS IoU), under their own `[model]` keys.
    #[serde(flatten)]
    pub rules: DetectionRules,
    pub max_pixels: u64,
    pub jpeg_scaling: JpegScaling,
    pub input_mean: Option<f32>,
    pub input_std: Option<f32>,
    pub retry_ms: u64,
    /// Classifiers only: the part of the frame inferred (issue 18).
    pub roi: Option<super::sightings::Roi>,
}

/// Validate `[model]` across the layered files.
pub(super) fn build_model(l: &Layers) -> Result<ModelSettings, ConfigError> {
    let path = l.get(|r| r.model.as_ref()?.path.as_ref());
    let labels = l.get(|r| r.model.as_ref()?.labels.as_ref());
    let runtime = l.get(|r| r.model.as_ref()?.runtime.as_ref());
    let litert_lib = l.get(|r| r.model.as_ref()?.litert_lib.as_ref());
    let threads = l.get(|r| r.model.as_ref()?.threads.as_ref());
    let top_k = l.get(|r| r.model.as_ref()?.top_k.as_ref());
    let min_score = l.get(|r| r.model.as_ref()?.min_score.as_ref());
    let fit = l.get(|r| r.model.as_ref()?.fit.as_ref());
    let label_filter = l.get(|r| r.model.as_ref()?.label_filter.as_ref());
    let max_pixels = l.get(|r| r.model.as_ref()?.max_pixels.as_ref());
    let jpeg_scaling = l.get(|r| r.model.as_ref()?.jpeg_scaling.as_ref());
    let mean = l.get(|r| r.model.as_ref()?.input_mean.as_ref());
    let std = l.get(|r| r.model.as_ref()?.input_std.as_ref());
    let retry_ms = l.get(|r| r.model.as_ref()?.retry_ms.as_ref());
    in_range(
        &threads,
        "model.threads",
        |v| (1..=64).contains(v),
        "must be between 1 and 64",
    )?;
    in_range(
        &top_k,
        "model.top_k",
        |v| (1..=100).contains(v),
        "must be between 1 and 100",
    )?;
    in_range(
        &min_score,
        "model.min_score",
        |v: &f32| (0.0..=1.0).contains(v),
        "must be between 0.0 and 1.0",
    )?;
    in_range(
        &max_pixels,
        "model.max_pixels",
        |v| (1..=1_000_000_000).contains(v),
        "must be between 1 and 1000000000",
    )?;
    in_range(
        &mean,
        "model.input_mean",
        |v: &f32| v.is_finite(),
        "must be a finite number",
    )?;
    in_range(
        &std,
        "model.input_std",
        |v: &f32| v.is_finite() && *v > 0.0,
        "must be a finite number > 0",
    )?;
    in_range(
        &retry_ms,
        "model.retry_ms",
        |v| (100..=3_600_000).contains(v),
        "must be between 100 and 3600000",
    )?;
    if mean.is_some() != std.is_some() {
        let (o, key) = match (&mean, &std) {
            (Some(o), None) => (o.as_pos(), "model.input_mean"),
            (None, Some(o)) => (o.as_pos(), "model.input_std"),
            _ => unreachable!("checked above that exactly one is set"),
        };
        return Err(invalid(
            &o,
            key,
            "input_mean and input_std must be set together",
        ));
    }
    let pad_value = l.get(|r| r.model.as_ref()?.pad_value.as_ref());
    let label_deny = l.get(|r| r.model.as_ref()?.label_deny.as_ref());
    let min_box_area = l.get(|r| r.model.as_ref()?.min_box_area.as_ref());
    let max_detections = l.get(|r| r.model.as_ref()?.max_detections.as_ref());
    let iou = l.get(|r| r.model.as_ref()?.iou_threshold.as_ref());
    in_range(
        &pad_value,
        "model.pad_value",
        |v| (0..=255).contains(v),
        "must be between 0 and 255",
    )?;
    in_range(
        &min_box_area,
        "model.min_box_area",
        |v: &f32| (0.0..=1.0).contains(v),
        "must be between 0.0 and 1.0 (a fraction of the frame's area)",
    )?;
    in_range(
        &max_detections,
        "model.max_detections",
        |v| (1..=MAX_MAX_DETECTIONS).contains(v),
        &format!("must be between 1 and {MAX_MAX_DETECTIONS}"),
    )?;
    in_range(
        &iou,
        "model.iou_threshold",
        |v: &f32| *v > 0.0 && *v <= 1.0,
        "must be > 0.0 and at most 1.0",
    )?;
    let allow = label_list(&label_filter, "model.label_filter")?;
    let deny = label_list(&label_deny, "model.label_deny")?;
    if let (Some(f), Some(d)) = (&label_filter, &label_deny) {
        if !allow.is_empty() && !deny.is_empty() {
            // Blame the key set later (a later file, else a later line).
            let files = l.paths();
            let rank = |p: &PathBuf| files.iter().position(|x| x == p);
            let (o, key) = if (rank(&d.path), d.line) >= (rank(&f.path), f.line) {
                (d.as_pos(), "model.label_deny")
            } else {
                (f.as_pos(), "model.label_filter")
            };
            return Err(invalid(
                &o,
                key,
                "model.label_filter (report only these labels) and model.label_deny (never report these labels) cannot both be set; use one",
            ));
        }
    }
    let min_score_by_label = min_score_by_label(l)?;
    Ok(ModelSettings {
        path: val(
            &path,
            PathBuf::from("/usr/share/spotter/models/efficientnet_lite0.tflite"),
        ),
        labels: labels.map(|o| o.value),
        runtime: val(&runtime, RuntimeSetting::Auto),
        litert_lib: litert_lib.map(|o| o.value),
        threads: val(&threads, 2),
        top_k: val(&top_k, 5),
        min_score: min_score.map(|o| o.value),
        fit: fit.map(|o| o.value),
        pad_value: pad_value.map(|o| o.value as u8), // checked 0..=255 above
        rules: DetectionRules {
            min_score_by_label,
            allow,
            deny,
            min_box_area: val(&min_box_area, 0.0),
            max_detections: val(&max_detections, DEFAULT_MAX_DETECTIONS),
            iou_threshold: val(&iou, DEFAULT_IOU_THRESHOLD),
        },
        max_pixels: val(&max_pixels, 40_000_000),
        jpeg_scaling: val(&jpeg_scaling, JpegScaling::Auto),
        input_mean: mean.map(|o| o.value),
        input_std: std.map(|o| o.value),
        retry_ms: val(&retry_ms, 10_000),
        roi: super::sightings::build_roi(l)?,
    })
}

/// An `f32` written as the shortest decimal that reads back as the same
/// `f32` (`0.6`, not `0.6000000238418579`), so `check-config` prints what the
/// user wrote.
fn short(v: f32) -> f64 {
    v.to_string().parse().unwrap_or(f64::from(v))
}

fn short_opt_float<S: Serializer>(v: &Option<f32>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => s.serialize_some(&short(*v)),
        None => s.serialize_none(),
    }
}

fn short_float<S: Serializer>(v: &f32, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(short(*v))
}

fn short_floats<S: Serializer>(m: &BTreeMap<String, f32>, s: S) -> Result<S::Ok, S::Error> {
    s.collect_map(m.iter().map(|(k, v)| (k, short(*v))))
}

/// Largest `model.max_detections`.
const MAX_MAX_DETECTIONS: usize = 10_000;

/// A list of labels as the rules keep it: lower-case, each non-empty.
fn label_list(
    o: &Option<super::raw::Origin<Vec<String>>>,
    key: &str,
) -> Result<Vec<String>, ConfigError> {
    in_range(
        o,
        key,
        |v: &Vec<String>| v.iter().all(|l| !l.trim().is_empty()),
        "labels must not be empty",
    )?;
    Ok(val(o, Vec::new())
        .into_iter()
        .map(|l| l.to_lowercase())
        .collect())
}

/// `[model.min_score_by_label]` of every file, merged key by key (later
/// files win), keys lower-case. Within one file, two keys equal ignoring
/// case are an error (which one was meant?).
fn min_score_by_label(l: &Layers) -> Result<BTreeMap<String, f32>, ConfigError> {
    let mut merged = BTreeMap::new();
    for (table, placer) in l.all(|r| r.model.as_ref()?.min_score_by_label.as_ref()) {
        let mut seen: BTreeMap<String, &str> = BTreeMap::new();
        for (label, score) in table {
            let o = placer.place(score);
            let key = format!("model.min_score_by_label.{label}");
            if label.trim().is_empty() {
                return Err(invalid(&o, &key, "a label must not be empty"));
            }
            if !(0.0..=1.0).contains(&o.value) {
                return Err(invalid(&o, &key, "must be between 0.0 and 1.0"));
            }
            let lower = label.to_lowercase();
            if let Some(other) = seen.insert(lower.clone(), label) {
                return Err(invalid(
                    &o,
                    &key,
                    format!("`{other}` and `{label}` are the same label (labels match ignoring case); keep one"),
                ));
            }
            merged.insert(lower, o.value);
        }
    }
    Ok(merged)
}
