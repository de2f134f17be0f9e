//! Post-processing: from raw output tensors to ranked classes or boxes.
//!
//! This module owns the interpretation of a model's outputs: recognising the
//! model kind from its output signature ([`ModelKind::from_outputs`]),
//! dequantizing, classification top-k, and decoding the four outputs of
//! TensorFlow's `TFLite_Detection_PostProcess` op into boxes in source-image
//! pixels. Everything here is a pure function of its arguments.

use super::labels::{ClassifierLabelMap, DetectorLabelMap, Labels};
use super::preprocess::Mapping;
use super::{DType, InferenceError, TensorSpec};
use crate::core::result::{ClassScore, Detection};

/// What a model produces, recognised from its outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelKind {
    /// One output `[1, classes]` (or `[classes]`) of class scores.
    Classifier { classes: usize },
    /// The four float outputs of `TFLite_Detection_PostProcess`:
    /// boxes `[1, N, 4]`, classes `[1, N]`, scores `[1, N]`, count `[1]`.
    Detector { max_detections: usize },
}

impl ModelKind {
    /// Recognise the model kind from its output tensors; `path` names the model in errors.
    pub(crate) fn from_outputs(
        outputs: &[TensorSpec],
        path: &str,
    ) -> Result<ModelKind, InferenceError> {
        let describe = || {
            outputs
                .iter()
                .map(|o| format!("{:?} {:?} {:?}", o.name, o.dtype, o.shape))
                .collect::<Vec<_>>()
                .join(", ")
        };
        match outputs {
            [o] => match o.shape.as_slice() {
                [1, n] | [n] if *n >= 2 => Ok(ModelKind::Classifier { classes: *n }),
                _ => Err(InferenceError::Unsupported {
                    path: path.to_string(),
                    reason: format!(
                        "one output {} that is not a [1, classes] score vector (classifiers need at least 2 classes)",
                        describe()
                    ),
                }),
            },
            [b, c, s, n] => {
                let all_float = outputs.iter().all(|o| o.dtype == DType::F32);
                let shapes_ok = matches!(b.shape.as_slice(), [1, _, 4])
                    && c.shape.len() == 2
                    && c.shape[0] == 1
                    && c.shape[1] == b.shape[1]
                    && s.shape == c.shape
                    && n.shape.iter().product::<usize>() == 1;
                if all_float && shapes_ok && b.shape[1] > 0 {
                    Ok(ModelKind::Detector { max_detections: b.shape[1] })
                } else {
                    Err(InferenceError::Unsupported {
                        path: path.to_string(),
                        reason: format!(
                            "four outputs that are not TFLite_Detection_PostProcess's float32 boxes [1,N,4], classes [1,N], scores [1,N], count [1] in that order: {}",
                            describe()
                        ),
                    })
                }
            }
            _ => Err(InferenceError::Unsupported {
                path: path.to_string(),
                reason: format!(
                    "{} outputs ({}); supported are classifiers (one [1, classes] output) and SSD detectors (TFLite_Detection_PostProcess)",
                    outputs.len(),
                    describe()
                ),
            }),
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            ModelKind::Classifier { .. } => "classification",
            ModelKind::Detector { .. } => "detection",
        }
    }
}

/// One output element: raw value as stored (integer or float) and dequantized score.
fn element(raw: &[u8], spec: &TensorSpec, i: usize) -> (f32, f32) {
    let q = super::preprocess::effective_quant(spec);
    match spec.dtype {
        DType::U8 => {
            let v = f32::from(raw[i]);
            (v, (v - q.zero_point as f32) * q.scale)
        }
        DType::I8 => {
            let v = f32::from(raw[i] as i8);
            (v, (v - q.zero_point as f32) * q.scale)
        }
        DType::F32 => {
            let v =
                f32::from_ne_bytes([raw[4 * i], raw[4 * i + 1], raw[4 * i + 2], raw[4 * i + 3]]);
            (v, v)
        }
    }
}

/// All dequantized values of an output tensor.
pub(crate) fn dequantize(raw: &[u8], spec: &TensorSpec) -> Result<Vec<f32>, InferenceError> {
    let n = check_len(raw, spec)?;
    Ok((0..n).map(|i| element(raw, spec, i).1).collect())
}

fn check_len(raw: &[u8], spec: &TensorSpec) -> Result<usize, InferenceError> {
    if raw.len() != spec.byte_len() {
        return Err(InferenceError::Invoke {
            path: String::new(),
            reason: format!(
                "output {:?} has {} bytes, its shape {:?} needs {}",
                spec.name,
                raw.len(),
                spec.shape,
                spec.byte_len()
            ),
        });
    }
    Ok(spec.elements())
}

/// The `k` highest scores (ties: lower index first) at or above `min_score`.
pub fn top_k(
    raw: &[u8],
    spec: &TensorSpec,
    k: usize,
    min_score: f32,
    labels: Option<(&Labels, ClassifierLabelMap)>,
) -> Result<Vec<ClassScore>, InferenceError> {
    let n = check_len(raw, spec)?;
    // Scale is positive, so ordering raw values orders scores; keep (raw, score, index).
    let mut best: Vec<(f32, f32, usize)> = Vec::with_capacity(k + 1);
    for i in 0..n {
        let (r, s) = element(raw, spec, i);
        if s.is_nan() || s < min_score {
            continue;
        }
        // Insert keeping descending score, ascending index among equals.
        let pos = best.partition_point(|&(_, bs, _)| bs >= s);
        if pos < k {
            best.insert(pos, (r, s, i));
            best.truncate(k);
        }
    }
    Ok(best
        .into_iter()
        .map(|(raw, score, index)| ClassScore {
            index,
            label: match labels {
                Some((l, map)) => map.label(l, index),
                None => super::labels::unlabelled(index),
            },
            raw,
            score,
        })
        .collect())
}

/// Options for decoding detections.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DetectionParams<'a> {
    /// Candidates below this are dropped (see [`super::rules::decode_floor`]).
    pub min_score: f32,
    pub labels: Option<(&'a Labels, DetectorLabelMap)>,
}

/// Decode `TFLite_Detection_PostProcess` outputs (`boxes, classes, scores, count`
/// raw bytes with their specs) into detections in source-image pixels.
pub(crate) fn detections(
    outputs: [(&[u8], &TensorSpec); 4],
    mapping: &Mapping,
    params: &DetectionParams<'_>,
) -> Result<Vec<Detection>, InferenceError> {
    let [boxes, classes, scores, count] = outputs.map(|(raw, spec)| dequantize(raw, spec));
    let (boxes, classes, scores, count) = (boxes?, classes?, scores?, count?);
    let n = scores.len().min(classes.len()).min(boxes.len() / 4);
    let valid = match count.first() {
        Some(c) if c.is_finite() && *c >= 0.0 => (*c as usize).min(n),
        _ => 0,
    };
    let mut out = Vec::with_capacity(valid);
    for i in 0..valid {
        let score = scores[i];
        if !(score.is_finite() && score >= params.min_score) {
            continue;
        }
        let class = classes[i];
        if !(class.is_finite() && class >= 0.0) {
            continue;
        }
        let class_index = class.round() as usize;
        let label = match params.labels {
            Some((l, map)) => map.label(l, class_index),
            None => super::labels::unlabelled(class_index),
        };
        let b = &boxes[4 * i..4 * i + 4];
        if b.iter().any(|v| !v.is_finite()) {
            continue;
        }
        let Some((x, y, width, height)) = mapping.norm_box_to_source(b[0], b[1], b[2], b[3]) else {
            continue;
        };
        out.push(Detection {
            class_index,
            label,
            score,
            x,
            y,
            width,
            height,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inference::preprocess::FitMode;
    use crate::inference::Quant;

    fn spec(dtype: DType, shape: &[usize], quant: Option<Quant>) -> TensorSpec {
        TensorSpec {
            name: "o".into(),
            shape: shape.to_vec(),
            dtype,
            quant,
        }
    }

    fn f32s(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_ne_bytes()).collect()
    }

    #[test]
    fn kind_from_signature() {
        // Catches detectors being treated as classifiers (or the reverse) and odd models slipping through.
        let cls = [spec(DType::U8, &[1, 1001], None)];
        assert_eq!(
            ModelKind::from_outputs(&cls, "m").unwrap(),
            ModelKind::Classifier { classes: 1001 }
        );
        let det = [
            spec(DType::F32, &[1, 10, 4], None),
            spec(DType::F32, &[1, 10], None),
            spec(DType::F32, &[1, 10], None),
            spec(DType::F32, &[1], None),
        ];
        assert_eq!(
            ModelKind::from_outputs(&det, "m").unwrap(),
            ModelKind::Detector { max_detections: 10 }
        );
        let mut bad = det.clone();
        bad.swap(0, 2);
        assert!(ModelKind::from_outputs(&bad, "m")
            .unwrap_err()
            .to_string()
            .contains("TFLite_Detection_PostProcess"));
        let seg = [spec(DType::F32, &[1, 32, 32, 21], None)];
        assert!(matches!(
            ModelKind::from_outputs(&seg, "m"),
            Err(InferenceError::Unsupported { .. })
        ));
        assert!(ModelKind::from_outputs(&det[..2], "m").is_err());
    }

    #[test]
    fn top_k_dequantizes_and_breaks_ties_by_index() {
        // Catches unstable tie order and raw values reported as scores.
        let s = spec(
            DType::U8,
            &[1, 5],
            Some(Quant {
                scale: 1.0 / 256.0,
                zero_point: 0,
            }),
        );
        let raw = [10u8, 200, 50, 200, 7];
        let top = top_k(&raw, &s, 3, 0.0, None).unwrap();
        let idx: Vec<usize> = top.iter().map(|c| c.index).collect();
        assert_eq!(idx, [1, 3, 2]);
        assert_eq!(top[0].raw, 200.0);
        assert_eq!(top[0].score, 200.0 / 256.0);
        assert_eq!(top[0].label, "#1");
    }

    #[test]
    fn top_k_int8_and_float() {
        // Catches int8 outputs read as unsigned (-128 ranked above 127).
        let s = spec(
            DType::I8,
            &[1, 3],
            Some(Quant {
                scale: 0.5,
                zero_point: -128,
            }),
        );
        let raw = [(-128i8) as u8, 127u8, 0u8];
        let top = top_k(&raw, &s, 1, 0.0, None).unwrap();
        assert_eq!((top[0].index, top[0].raw, top[0].score), (1, 127.0, 127.5));
        let f = spec(DType::F32, &[1, 3], None);
        let top = top_k(&f32s(&[0.1, -2.0, 0.7]), &f, 2, -10.0, None).unwrap();
        assert_eq!(top.iter().map(|c| c.index).collect::<Vec<_>>(), [2, 0]);
        // min_score filters
        assert_eq!(
            top_k(&f32s(&[0.1, -2.0, 0.7]), &f, 3, 0.5, None)
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn top_k_labels_with_background() {
        // Catches label shift when the model has a background output.
        let labels = Labels::from_names(vec!["tench".into(), "goldfish".into()], "t");
        let s = spec(
            DType::U8,
            &[1, 3],
            Some(Quant {
                scale: 1.0 / 256.0,
                zero_point: 0,
            }),
        );
        let map = ClassifierLabelMap::new(&labels, 3, "m").unwrap();
        let top = top_k(&[0, 1, 250], &s, 1, 0.0, Some((&labels, map))).unwrap();
        assert_eq!(top[0].label, "goldfish");
    }

    #[test]
    fn detections_map_to_source_pixels() {
        // Catches boxes left in model coordinates, x/y swapped, or count ignored.
        let labels = Labels::from_names(vec!["???".into(), "person".into(), "cup".into()], "t");
        let boxes = f32s(&[0.25, 0.5, 0.75, 1.0, 0.0, 0.0, 0.1, 0.1, 0.0, 0.0, 1.0, 1.0]);
        let classes = f32s(&[1.0, 0.0, 0.0]);
        let scores = f32s(&[0.9, 0.8, 0.2]);
        let count = f32s(&[2.0]);
        let (sb, sc, ss, sn) = (
            spec(DType::F32, &[1, 3, 4], None),
            spec(DType::F32, &[1, 3], None),
            spec(DType::F32, &[1, 3], None),
            spec(DType::F32, &[1], None),
        );
        let mapping = Mapping::new(FitMode::Stretch, 640, 480, 300, 300);
        let params = DetectionParams {
            min_score: 0.5,
            labels: Some((&labels, DetectorLabelMap::new(&labels))),
        };
        let d = detections(
            [
                (&boxes, &sb),
                (&classes, &sc),
                (&scores, &ss),
                (&count, &sn),
            ],
            &mapping,
            &params,
        )
        .unwrap();
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].label, "cup");
        assert_eq!(
            (d[0].x, d[0].y, d[0].width, d[0].height),
            (320.0, 120.0, 320.0, 240.0)
        );
        assert_eq!(d[1].label, "person");
    }

    #[test]
    fn wrong_output_length_is_an_error() {
        // Catches reading past a short output buffer.
        let s = spec(DType::F32, &[1, 3], None);
        assert!(top_k(&[0u8; 8], &s, 1, 0.0, None).is_err());
    }
}
