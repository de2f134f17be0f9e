//! Post-processing: from raw output tensors to ranked classes or boxes.
//!
//! This module owns the interpretation of a model's outputs: dequantizing
//! and classification top-k (this file); recognising the model kind from its
//! outputs (`kind.rs`, [`ModelKind::from_outputs`]); decoding the four outputs
//! of TensorFlow's `TFLite_Detection_PostProcess` op in any order
//! (`ssd.rs`); decoding YOLOv8/YOLO11 and YOLOv5 heads (`yolo.rs`) with
//! class-aware non-maximum suppression (`nms.rs`). Everything here is a pure
//! function of its arguments.

mod kind;
mod nms;
pub(crate) mod ssd;
pub(crate) mod yolo;

pub use kind::{BoxUnits, ModelKind, SsdLayout, YoloLayout, YoloVersion};

use super::labels::{ClassifierLabelMap, DetectorLabelMap, Labels};
use super::{DType, InferenceError, TensorSpec};
use crate::core::result::ClassScore;

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

pub(crate) fn check_len(raw: &[u8], spec: &TensorSpec) -> Result<usize, InferenceError> {
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

#[cfg(test)]
mod tests {
    use super::*;
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
    fn wrong_output_length_is_an_error() {
        // Catches reading past a short output buffer.
        let s = spec(DType::F32, &[1, 3], None);
        assert!(top_k(&[0u8; 8], &s, 1, 0.0, None).is_err());
    }
}
