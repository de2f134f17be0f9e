//! Recognising what a model produces from its output tensors.
//!
//! This module owns [`ModelKind`]: the layout of a model's outputs, told by
//! shape (and name), never by position or by hard-coded sizes:
//! - **classifier**: one output `[1, classes]` (or `[classes]`).
//! - **SSD post-processing** (`TFLite_Detection_PostProcess`): four float32
//!   outputs in any order. Boxes are the `[1, N, 4]` one and the count the
//!   single-element one. Classes and scores (both `[1, N]`) are told apart by
//!   name when the names say it: a name containing `class` or `score`; TF1's
//!   `TFLite_Detection_PostProcess:1`/`:2` (classes, scores); TF2 OD API and
//!   Model Maker's `StatefulPartitionedCall:N` (0 count, 1 scores, 2 classes,
//!   3 boxes). Otherwise by the values of one run at load ([`ModelKind::settle`]):
//!   classes are whole numbers, scores lie in [0, 1].
//! - **YOLOv8 / YOLO11** (Ultralytics): one output `[1, 4 + C, A]` (cx, cy, w,
//!   h, C class scores; no objectness), or its transpose `[1, A, 4 + C]`.
//! - **YOLOv5**: one output `[1, A, 5 + C]` (cx, cy, w, h, objectness, C scores).
//!
//! The anchor axis is the longer of the two (anchors outnumber channels in
//! every real export; equal lengths are refused as ambiguous). The rule for
//! `[1, A, K]`, which fits both YOLOv5 and a transposed YOLOv8: it is YOLOv5
//! unless the file carries Ultralytics metadata (written by the `ultralytics`
//! package, whose heads have no objectness) with a version of 8 or later or
//! none. `[1, K, A]` is always the YOLOv8 head. Ultralytics metadata naming
//! another task than `detect` (segment, pose, obb, classify) is refused.
//!
//! Whether YOLO boxes are normalized (0..1) or in input pixels is decided once
//! at load from one run's raw output ([`ModelKind::settle`]: the largest
//! centre x over all anchors is at most 1.5 when normalized), never per frame.
//!
//! Anything else is refused with a message naming each output's name, dtype
//! and shape and listing the supported layouts.
//!
//! Why a file over 600 lines: half of it is the tests of every layout and
//! refusal, kept beside the rules they check.

use super::super::modelfile::UltralyticsMeta;
use super::super::{DType, InferenceError, TensorSpec};

/// The layouts Spotter decodes, for refusal messages.
pub(crate) const SUPPORTED_LAYOUTS: &str = "classifier (one [1, classes] output), \
SSD post-processing (TFLite_Detection_PostProcess: float32 boxes [1, N, 4], classes [1, N], scores [1, N] and count [1], in any order), \
YOLOv8/YOLO11 (one [1, 4 + classes, anchors] output, or [1, anchors, 4 + classes] with Ultralytics metadata), \
YOLOv5 (one [1, anchors, 5 + classes] output)";

/// Largest normalized centre coordinate: a model whose centres go beyond it
/// writes boxes in input pixels.
const MAX_NORMALIZED_CENTRE: f32 = 1.5;

/// What a model produces, recognised from its outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelKind {
    /// One output `[1, classes]` (or `[classes]`) of class scores.
    Classifier { classes: usize },
    /// The four float outputs of `TFLite_Detection_PostProcess`, by index.
    Ssd(SsdLayout),
    /// One YOLO head output.
    Yolo(YoloLayout),
}

/// Which output of an SSD post-processing model is which.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SsdLayout {
    pub boxes: usize,
    pub classes: usize,
    pub scores: usize,
    pub count: usize,
    /// N, the length of the boxes, classes and scores outputs.
    pub max_detections: usize,
    /// False while classes vs scores is a guess (the names did not say) that
    /// one run at load settles.
    pub settled: bool,
}

/// The YOLO head variants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum YoloVersion {
    /// Ultralytics YOLOv8/YOLO11: cx, cy, w, h, class scores.
    V8,
    /// YOLOv5: cx, cy, w, h, objectness, class scores (score = obj × cls).
    V5,
}

/// The unit of YOLO box coordinates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BoxUnits {
    /// Not decided yet ([`ModelKind::settle`] decides at load).
    Unknown,
    /// Fractions of the input width and height.
    Normalized,
    /// Pixels of the model input.
    Pixels,
}

/// The shape of one YOLO output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct YoloLayout {
    pub version: YoloVersion,
    pub classes: usize,
    pub anchors: usize,
    /// `[1, channels, anchors]` (true) or `[1, anchors, channels]` (false).
    pub channels_first: bool,
    pub units: BoxUnits,
}

impl YoloLayout {
    /// Channels per anchor: the box, objectness (YOLOv5), the class scores.
    pub(crate) fn channels(&self) -> usize {
        self.first_class() + self.classes
    }

    /// The channel of the first class score.
    pub(crate) fn first_class(&self) -> usize {
        match self.version {
            YoloVersion::V8 => 4,
            YoloVersion::V5 => 5,
        }
    }

    /// Element index of channel `ch` of anchor `a`.
    #[inline]
    pub(crate) fn index(&self, a: usize, ch: usize) -> usize {
        if self.channels_first {
            ch * self.anchors + a
        } else {
            a * self.channels() + ch
        }
    }
}

fn dtype_name(d: DType) -> &'static str {
    match d {
        DType::U8 => "uint8",
        DType::I8 => "int8",
        DType::F32 => "float32",
    }
}

/// Each output's name, dtype and shape, for messages.
pub(crate) fn describe(outputs: &[TensorSpec]) -> String {
    outputs
        .iter()
        .map(|o| format!("{:?} {} {:?}", o.name, dtype_name(o.dtype), o.shape))
        .collect::<Vec<_>>()
        .join(", ")
}

impl ModelKind {
    /// Recognise the model kind from its output tensors and, when the file
    /// has it, its Ultralytics metadata; `path` names the model in errors.
    pub(crate) fn from_outputs(
        outputs: &[TensorSpec],
        ultralytics: Option<&UltralyticsMeta>,
        path: &str,
    ) -> Result<ModelKind, InferenceError> {
        let refuse = |why: String| InferenceError::Unsupported {
            path: path.to_string(),
            reason: format!(
                "{why}; outputs: {}; supported layouts: {SUPPORTED_LAYOUTS}",
                describe(outputs)
            ),
        };
        if let Some(task) = ultralytics.and_then(|u| u.task.as_deref()) {
            if task != "detect" {
                return Err(refuse(format!(
                    "Ultralytics task {task:?} (only \"detect\" models are supported)"
                )));
            }
        }
        match outputs {
            [o] => one_output(o, ultralytics).map_err(refuse),
            [_, _, _, _] => ssd(outputs).map_err(refuse),
            _ => Err(refuse(format!("{} outputs", outputs.len()))),
        }
    }

    /// Whether [`Self::settle`] needs one run's outputs to finish the layout.
    pub(crate) fn needs_probe(&self) -> bool {
        match self {
            ModelKind::Classifier { .. } => false,
            ModelKind::Ssd(s) => !s.settled,
            ModelKind::Yolo(y) => y.units == BoxUnits::Unknown,
        }
    }

    /// Finish the layout from the dequantized outputs of one run at load
    /// (`values[i]` for output `i`): SSD classes vs scores when the names did
    /// not tell, YOLO box units. Returns the kind and, when the values could
    /// not decide (kept the positional guess), why.
    pub(crate) fn settle(self, values: &[Vec<f32>]) -> (ModelKind, Option<String>) {
        match self {
            ModelKind::Ssd(mut s) if !s.settled => {
                let (a, b) = (&values[s.classes], &values[s.scores]);
                let whole = |v: &[f32]| v.iter().all(|x| x.is_finite() && x.fract() == 0.0);
                let unit = |v: &[f32]| v.iter().all(|x| (0.0..=1.0).contains(x));
                let a_is_classes = match (whole(a), whole(b)) {
                    (true, false) => Some(true),
                    (false, true) => Some(false),
                    (true, true) if !unit(a) && unit(b) => Some(true),
                    (true, true) if unit(a) && !unit(b) => Some(false),
                    _ => None,
                };
                s.settled = true;
                let note = match a_is_classes {
                    Some(true) => None,
                    Some(false) => {
                        std::mem::swap(&mut s.classes, &mut s.scores);
                        None
                    }
                    None => Some(format!(
                        "cannot tell classes from scores by name or by the values of one run; taking output {} as classes and {} as scores (TF1 order)",
                        s.classes, s.scores
                    )),
                };
                (ModelKind::Ssd(s), note)
            }
            ModelKind::Yolo(mut y) if y.units == BoxUnits::Unknown => {
                let v = &values[0];
                let max_cx = (0..y.anchors)
                    .map(|a| v.get(y.index(a, 0)).copied().unwrap_or(0.0).abs())
                    .filter(|x| x.is_finite())
                    .fold(0.0f32, f32::max);
                y.units = if max_cx <= MAX_NORMALIZED_CENTRE {
                    BoxUnits::Normalized
                } else {
                    BoxUnits::Pixels
                };
                (ModelKind::Yolo(y), None)
            }
            other => (other, None),
        }
    }

    /// The API's `kind`: `"classification"` or `"detection"`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            ModelKind::Classifier { .. } => "classification",
            ModelKind::Ssd(_) | ModelKind::Yolo(_) => "detection",
        }
    }

    /// The model family: `"classifier"`, `"ssd"`, `"yolov8"` or `"yolov5"`.
    pub fn family(self) -> &'static str {
        match self {
            ModelKind::Classifier { .. } => "classifier",
            ModelKind::Ssd(_) => "ssd",
            ModelKind::Yolo(YoloLayout {
                version: YoloVersion::V8,
                ..
            }) => "yolov8",
            ModelKind::Yolo(YoloLayout {
                version: YoloVersion::V5,
                ..
            }) => "yolov5",
        }
    }

    /// Whether this is a YOLO family (letterbox, pad 114, no background label).
    pub fn is_yolo(self) -> bool {
        matches!(self, ModelKind::Yolo(_))
    }
}

/// True when Ultralytics metadata says the head has no objectness (v8 or later).
fn ultralytics_v8_head(meta: Option<&UltralyticsMeta>) -> bool {
    let Some(meta) = meta else { return false };
    let major = meta
        .version
        .as_deref()
        .and_then(|v| v.split('.').next())
        .and_then(|m| m.trim().parse::<u32>().ok());
    major.is_none_or(|m| m >= 8)
}

fn one_output(o: &TensorSpec, meta: Option<&UltralyticsMeta>) -> Result<ModelKind, String> {
    match o.shape.as_slice() {
        [1, n] | [n] if *n >= 2 => Ok(ModelKind::Classifier { classes: *n }),
        [1, a, b] if *a > 0 && *b > 0 => {
            if a == b {
                return Err(format!(
                    "one output [1, {a}, {b}]: cannot tell the anchor axis from the channel axis"
                ));
            }
            let (anchors, channels, channels_first) = if a > b {
                (*a, *b, false)
            } else {
                (*b, *a, true)
            };
            let version = if channels_first || ultralytics_v8_head(meta) {
                YoloVersion::V8
            } else {
                YoloVersion::V5
            };
            let first_class = match version {
                YoloVersion::V8 => 4,
                YoloVersion::V5 => 5,
            };
            if channels <= first_class {
                return Err(format!(
                    "one output of {channels} channels per anchor, too few for a {} head ({first_class} + classes)",
                    if version == YoloVersion::V8 { "YOLOv8" } else { "YOLOv5" }
                ));
            }
            Ok(ModelKind::Yolo(YoloLayout {
                version,
                classes: channels - first_class,
                anchors,
                channels_first,
                units: BoxUnits::Unknown,
            }))
        }
        _ => Err("one output that is neither a [1, classes] score vector nor a YOLO head".into()),
    }
}

/// The `:N` suffix of a tensor name and the name before it.
fn suffix(name: &str) -> (&str, Option<u32>) {
    match name.rsplit_once(':') {
        Some((base, n)) => match n.parse() {
            Ok(n) => (base, Some(n)),
            Err(_) => (name, None),
        },
        None => (name, None),
    }
}

fn ssd(outputs: &[TensorSpec]) -> Result<ModelKind, String> {
    let not = || {
        "four outputs that are not TFLite_Detection_PostProcess's float32 boxes [1, N, 4], classes [1, N], scores [1, N] and count [1]".to_string()
    };
    if outputs.iter().any(|o| o.dtype != DType::F32) {
        return Err(not());
    }
    let find = |pred: &dyn Fn(&TensorSpec) -> bool| -> Vec<usize> {
        (0..outputs.len()).filter(|&i| pred(&outputs[i])).collect()
    };
    let boxes = find(&|o| matches!(o.shape.as_slice(), [1, n, 4] if *n > 0));
    let count = find(&|o| o.shape.len() <= 1 && o.elements() == 1);
    let ([boxes], [count]) = (boxes.as_slice(), count.as_slice()) else {
        return Err(not());
    };
    let n = outputs[*boxes].shape[1];
    let pair = find(&|o| o.shape == [1, n]);
    let [a, b] = pair.as_slice() else {
        return Err(not());
    };
    let (a, b, boxes, count) = (*a, *b, *boxes, *count);
    let name = |i: usize| outputs[i].name.to_ascii_lowercase();
    let says = |i: usize, w: &str| name(i).contains(w);
    // Some(true): a is classes; Some(false): b is classes.
    let mut a_is_classes = match (says(a, "class"), says(b, "class")) {
        (true, false) => Some(true),
        (false, true) => Some(false),
        _ => match (says(a, "score"), says(b, "score")) {
            (true, false) => Some(false),
            (false, true) => Some(true),
            _ => None,
        },
    };
    if a_is_classes.is_none() {
        let names: Vec<(&str, Option<u32>)> = outputs.iter().map(|o| suffix(&o.name)).collect();
        let same_base = names.iter().all(|(base, _)| *base == names[0].0);
        let s = |i: usize| names[i].1.unwrap_or(0);
        if same_base {
            // TF1: boxes 0, classes 1, scores 2, count 3. TF2: count 0, scores 1, classes 2, boxes 3.
            let classes_suffix = match (s(boxes), s(count)) {
                (0, 3) => Some(1),
                (3, 0) => Some(2),
                _ => None,
            };
            a_is_classes = match classes_suffix {
                Some(c) if s(a) == c && s(b) == 3 - c => Some(true),
                Some(c) if s(b) == c && s(a) == 3 - c => Some(false),
                _ => None,
            };
        }
    }
    let (classes, scores) = match a_is_classes {
        Some(false) => (b, a),
        _ => (a, b),
    };
    Ok(ModelKind::Ssd(SsdLayout {
        boxes,
        classes,
        scores,
        count,
        max_detections: n,
        settled: a_is_classes.is_some(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, dtype: DType, shape: &[usize]) -> TensorSpec {
        TensorSpec {
            name: name.into(),
            shape: shape.to_vec(),
            dtype,
            quant: None,
        }
    }

    fn ssd_outputs(names: [&str; 4], order: [usize; 4]) -> Vec<TensorSpec> {
        // order: positions of boxes, classes, scores, count
        let shapes: [&[usize]; 4] = [&[1, 10, 4], &[1, 10], &[1, 10], &[1]];
        let mut out = vec![spec("", DType::F32, &[]); 4];
        for (what, &pos) in order.iter().enumerate() {
            out[pos] = spec(names[what], DType::F32, shapes[what]);
        }
        out
    }

    fn meta(version: Option<&str>, task: Option<&str>) -> UltralyticsMeta {
        UltralyticsMeta {
            version: version.map(Into::into),
            task: task.map(Into::into),
            ..UltralyticsMeta::default()
        }
    }

    fn yolo(k: ModelKind) -> YoloLayout {
        match k {
            ModelKind::Yolo(y) => y,
            other => panic!("not YOLO: {other:?}"),
        }
    }

    // Would catch detectors taken for classifiers (or the reverse), and
    // odd models slipping through.
    #[test]
    fn classifier_and_tf1_ssd() {
        let cls = [spec("o", DType::U8, &[1, 1001])];
        assert_eq!(
            ModelKind::from_outputs(&cls, None, "m").unwrap(),
            ModelKind::Classifier { classes: 1001 }
        );
        let tf1 = ssd_outputs(
            [
                "TFLite_Detection_PostProcess",
                "TFLite_Detection_PostProcess:1",
                "TFLite_Detection_PostProcess:2",
                "TFLite_Detection_PostProcess:3",
            ],
            [0, 1, 2, 3],
        );
        let k = ModelKind::from_outputs(&tf1, None, "m").unwrap();
        assert_eq!(
            k,
            ModelKind::Ssd(SsdLayout {
                boxes: 0,
                classes: 1,
                scores: 2,
                count: 3,
                max_detections: 10,
                settled: true
            })
        );
        assert_eq!((k.name(), k.family()), ("detection", "ssd"));
    }

    // Would catch the TF2 / Model Maker order (scores first) read as TF1's:
    // classes used as scores and the reverse.
    #[test]
    fn ssd_outputs_in_tf2_order_by_name() {
        // What TF2 OD API and EfficientDet-Lite exports write: positions 0..3
        // hold StatefulPartitionedCall:1 (scores), :3 (boxes), :0 (count), :2 (classes).
        let names = [
            "StatefulPartitionedCall:3",
            "StatefulPartitionedCall:2",
            "StatefulPartitionedCall:1",
            "StatefulPartitionedCall:0",
        ];
        let tf2 = ssd_outputs(names, [1, 3, 0, 2]);
        let k = ModelKind::from_outputs(&tf2, None, "m").unwrap();
        assert_eq!(
            k,
            ModelKind::Ssd(SsdLayout {
                boxes: 1,
                classes: 3,
                scores: 0,
                count: 2,
                max_detections: 10,
                settled: true
            })
        );
        // Plain names say it too.
        let named = ssd_outputs(
            [
                "detection_boxes",
                "detection_classes",
                "detection_scores",
                "num_detections",
            ],
            [3, 0, 1, 2],
        );
        let ModelKind::Ssd(s) = ModelKind::from_outputs(&named, None, "m").unwrap() else {
            panic!()
        };
        assert_eq!((s.boxes, s.classes, s.scores, s.count), (3, 0, 1, 2));
        assert!(s.settled);
    }

    // Would catch unnamed classes/scores guessed by position for good: the
    // values of one run decide (whole numbers vs fractions).
    #[test]
    fn ssd_classes_and_scores_by_values_when_names_are_silent() {
        let o = ssd_outputs(["a", "b", "c", "d"], [2, 1, 0, 3]); // scores first, unnamed
        let k = ModelKind::from_outputs(&o, None, "m").unwrap();
        assert!(k.needs_probe());
        let mut values = vec![Vec::new(); 4];
        values[0] = vec![0.9, 0.4, 0.0]; // scores
        values[1] = vec![17.0, 3.0, 0.0]; // classes
        let (k, note) = k.settle(&values);
        let ModelKind::Ssd(s) = k else { panic!() };
        assert_eq!((s.classes, s.scores, s.settled), (1, 0, true));
        assert!(note.is_none());
        // All zeros: no way to tell; the guess is kept and said.
        let k = ModelKind::from_outputs(&o, None, "m").unwrap();
        values[0] = vec![0.0; 3];
        values[1] = vec![0.0; 3];
        let (_, note) = k.settle(&values);
        assert!(note.unwrap().contains("cannot tell"));
    }

    // Would catch YOLO heads refused, anchors/channels swapped, or a
    // transposed v8 head decoded as v5 (objectness) when the metadata says v8.
    #[test]
    fn yolo_layouts_by_shape_and_metadata() {
        let v8 = [spec("PartitionedCall:0", DType::I8, &[1, 7, 30])];
        let y = yolo(ModelKind::from_outputs(&v8, None, "m").unwrap());
        assert_eq!(
            (y.version, y.classes, y.anchors, y.channels_first),
            (YoloVersion::V8, 3, 30, true)
        );
        let t = [spec("o", DType::F32, &[1, 30, 7])];
        let y = yolo(ModelKind::from_outputs(&t, None, "m").unwrap());
        assert_eq!(
            (y.version, y.classes, y.channels_first),
            (YoloVersion::V5, 2, false)
        );
        let m = meta(Some("8.1.42"), Some("detect"));
        let k = ModelKind::from_outputs(&t, Some(&m), "m").unwrap();
        let y = yolo(k);
        assert_eq!((y.version, y.classes), (YoloVersion::V8, 3));
        assert_eq!((k.family(), k.name()), ("yolov8", "detection"));
        let old = meta(Some("5.0"), None);
        assert_eq!(
            ModelKind::from_outputs(&t, Some(&old), "m")
                .unwrap()
                .family(),
            "yolov5"
        );
    }

    // Would catch box units guessed per frame or the wrong way round.
    #[test]
    fn yolo_box_units_from_one_run() {
        let v8 = [spec("o", DType::F32, &[1, 6, 10])];
        let k = ModelKind::from_outputs(&v8, None, "m").unwrap();
        assert!(k.needs_probe());
        let mut v = vec![0.0f32; 60];
        v[3] = 0.97; // cx of anchor 3
        let (n, _) = k.settle(std::slice::from_ref(&v));
        assert_eq!(yolo(n).units, BoxUnits::Normalized);
        assert!(!n.needs_probe());
        v[5] = 310.0;
        let (p, _) = k.settle(&[v]);
        assert_eq!(yolo(p).units, BoxUnits::Pixels);
    }

    // Would catch unknown layouts accepted, or refusals that do not say what
    // the model has and what is supported.
    #[test]
    fn refusals_name_outputs_and_supported_layouts() {
        let cases: Vec<(Vec<TensorSpec>, Option<UltralyticsMeta>, &str)> = vec![
            (
                vec![spec("seg", DType::F32, &[1, 32, 32, 21])],
                None,
                "neither",
            ),
            (
                vec![spec("sq", DType::F32, &[1, 40, 40])],
                None,
                "anchor axis",
            ),
            (
                vec![spec("thin", DType::F32, &[1, 4, 100])],
                None,
                "too few",
            ),
            (
                vec![
                    spec("a", DType::F32, &[1, 8]),
                    spec("b", DType::F32, &[1, 8]),
                ],
                None,
                "2 outputs",
            ),
            (
                ssd_outputs(["a", "b", "c", "d"], [0, 1, 2, 3])
                    .into_iter()
                    .map(|mut o| {
                        o.dtype = DType::U8;
                        o
                    })
                    .collect(),
                None,
                "TFLite_Detection_PostProcess",
            ),
            (
                vec![spec("pose", DType::F32, &[1, 56, 8400])],
                Some(meta(Some("8.2.0"), Some("pose"))),
                "task \"pose\"",
            ),
        ];
        for (outputs, m, want) in cases {
            let e = ModelKind::from_outputs(&outputs, m.as_ref(), "model.tflite")
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{e}");
            assert!(e.contains("model.tflite"), "{e}");
            assert!(e.contains(&format!("{:?}", outputs[0].name)), "{e}");
            assert!(e.contains(&format!("{:?}", outputs[0].shape)), "{e}");
            for family in ["classifier", "SSD post-processing", "YOLOv8", "YOLOv5"] {
                assert!(e.contains(family), "{e}");
            }
        }
    }
}
