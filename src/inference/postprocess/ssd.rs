//! SSD post-processing outputs: `TFLite_Detection_PostProcess` to detections.
//!
//! This module owns decoding the four float outputs of TensorFlow's
//! detection post-processing op (boxes `[1, N, 4]` as ymin, xmin, ymax, xmax
//! normalized; classes and scores `[1, N]`; count `[1]`) in whatever order the
//! exporter wrote them ([`SsdLayout`] holds the indices) into detections in
//! source-image pixels. The op has already run NMS. Pure functions.

use super::super::labels::unlabelled;
use super::super::preprocess::Mapping;
use super::super::{InferenceError, TensorSpec};
use super::kind::SsdLayout;
use super::{dequantize, DetectionParams};
use crate::core::result::Detection;

/// Decode `TFLite_Detection_PostProcess` outputs (every output's raw bytes
/// with its spec, in the model's order; `layout` says which is which) into
/// detections in source-image pixels.
pub(crate) fn detections(
    outputs: &[(&[u8], &TensorSpec)],
    layout: &SsdLayout,
    mapping: &Mapping,
    params: &DetectionParams<'_>,
) -> Result<Vec<Detection>, InferenceError> {
    let get = |i: usize| match outputs.get(i) {
        Some((raw, spec)) => dequantize(raw, spec),
        None => Err(InferenceError::Invoke {
            path: String::new(),
            reason: format!("output {i} missing ({} outputs)", outputs.len()),
        }),
    };
    let [boxes, classes, scores, count] =
        [layout.boxes, layout.classes, layout.scores, layout.count].map(get);
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
            None => unlabelled(class_index),
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
    use crate::inference::labels::{DetectorLabelMap, Labels};
    use crate::inference::preprocess::FitMode;
    use crate::inference::DType;

    fn spec(dtype: DType, shape: &[usize], _q: Option<()>) -> TensorSpec {
        TensorSpec {
            name: "o".into(),
            shape: shape.to_vec(),
            dtype,
            quant: None,
        }
    }

    fn f32s(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_ne_bytes()).collect()
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
        let layout = SsdLayout {
            boxes: 0,
            classes: 1,
            scores: 2,
            count: 3,
            max_detections: 3,
            settled: true,
        };
        let outputs = [
            (&boxes[..], &sb),
            (&classes[..], &sc),
            (&scores[..], &ss),
            (&count[..], &sn),
        ];
        let d = detections(&outputs, &layout, &mapping, &params).unwrap();
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].label, "cup");
        assert_eq!(
            (d[0].x, d[0].y, d[0].width, d[0].height),
            (320.0, 120.0, 320.0, 240.0)
        );
        assert_eq!(d[1].label, "person");
    }

    // Would catch the TF2 / Model Maker order (scores, boxes, count, classes)
    // decoded by position: scores read as classes, boxes from the wrong tensor.
    #[test]
    fn tf2_order_decodes_the_same_detections() {
        let labels = Labels::from_names(vec!["person".into(), "cup".into()], "t");
        let boxes = f32s(&[0.25, 0.5, 0.75, 1.0, 0.0, 0.0, 0.1, 0.1]);
        let classes = f32s(&[1.0, 0.0]);
        let scores = f32s(&[0.9, 0.8]);
        let count = f32s(&[2.0]);
        let (sb, sc, ss, sn) = (
            spec(DType::F32, &[1, 2, 4], None),
            spec(DType::F32, &[1, 2], None),
            spec(DType::F32, &[1, 2], None),
            spec(DType::F32, &[1], None),
        );
        // Positions: scores 0, boxes 1, count 2, classes 3.
        let outputs = [
            (&scores[..], &ss),
            (&boxes[..], &sb),
            (&count[..], &sn),
            (&classes[..], &sc),
        ];
        let layout = SsdLayout {
            boxes: 1,
            classes: 3,
            scores: 0,
            count: 2,
            max_detections: 2,
            settled: true,
        };
        let mapping = Mapping::new(FitMode::Stretch, 640, 480, 300, 300);
        let params = DetectionParams {
            min_score: 0.0,
            labels: Some((&labels, DetectorLabelMap::new(&labels))),
        };
        let d = detections(&outputs, &layout, &mapping, &params).unwrap();
        let got: Vec<(&str, f32)> = d.iter().map(|d| (d.label.as_str(), d.score)).collect();
        assert_eq!(got, [("cup", 0.9), ("person", 0.8)]);
        assert_eq!(
            (d[0].x, d[0].y, d[0].width, d[0].height),
            (320.0, 120.0, 320.0, 240.0)
        );
    }
}
