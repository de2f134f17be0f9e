//! YOLO decoding: one head output to detections in source-image pixels.
//!
//! This module owns decoding the YOLOv8/YOLO11 (`cx, cy, w, h, C scores`)
//! and YOLOv5 (`cx, cy, w, h, obj, C scores`, score = obj × cls) heads laid
//! out as [`YoloLayout`] says: best class per anchor, score floor, class-aware
//! NMS ([`super::nms`]), boxes from normalized or input-pixel units mapped back
//! through the letterbox ([`Mapping`]) to the source and clipped.
//!
//! Speed: an int8/uint8 output is scanned in its raw quantized values (the
//! scale is positive, so raw order is score order) and compared against the
//! floor converted once to the raw domain; only the few anchors above it are
//! dequantized. YOLOv8's `[1, 4 + C, A]` is scanned class row by class row
//! (contiguous memory), keeping the best raw value per anchor. Candidates are
//! sorted once; NMS runs on the survivors only. Pure functions.

use super::super::labels::unlabelled;
use super::super::preprocess::{effective_quant, Mapping};
use super::super::{DType, InferenceError, TensorSpec};
use super::kind::{BoxUnits, YoloLayout, YoloVersion};
use super::nms::{self, Candidate};
use super::{check_len, DetectionParams};
use crate::core::result::Detection;

/// Most candidates that enter NMS (the best-scoring ones), bounding its
/// quadratic cost when the floor is very low (Ultralytics caps at 30000).
pub(crate) const MAX_NMS_CANDIDATES: usize = 4096;

/// Decode one YOLO head output (`raw` bytes described by `spec`) into
/// detections in source pixels, after class-aware NMS at `iou_threshold`.
/// Box units still [`BoxUnits::Unknown`] are taken as normalized.
pub(crate) fn detections(
    raw: &[u8],
    spec: &TensorSpec,
    layout: &YoloLayout,
    mapping: &Mapping,
    iou_threshold: f32,
    params: &DetectionParams<'_>,
) -> Result<Vec<Detection>, InferenceError> {
    let n = check_len(raw, spec)?;
    if n != layout.anchors * layout.channels() {
        return Err(InferenceError::Invoke {
            path: String::new(),
            reason: format!(
                "output {:?} has {n} elements, the YOLO layout {} anchors × {} channels",
                spec.name,
                layout.anchors,
                layout.channels()
            ),
        });
    }
    let q = effective_quant(spec);
    let (scale, zp) = match spec.dtype {
        DType::F32 => (1.0, 0.0),
        _ => (q.scale, q.zero_point as f32),
    };
    let (dw, dh) = (mapping.dst_width as f32, mapping.dst_height as f32);
    let floor = params.min_score;
    let q = Dequant { scale, zp, floor };
    let mut cands = match spec.dtype {
        DType::I8 => candidates(
            |i| f32::from(raw[i] as i8),
            raw,
            spec.dtype,
            layout,
            q,
            (dw, dh),
        ),
        DType::U8 => candidates(|i| f32::from(raw[i]), raw, spec.dtype, layout, q, (dw, dh)),
        DType::F32 => candidates(
            |i| f32::from_ne_bytes([raw[4 * i], raw[4 * i + 1], raw[4 * i + 2], raw[4 * i + 3]]),
            raw,
            spec.dtype,
            layout,
            q,
            (dw, dh),
        ),
    };
    nms::sort(&mut cands);
    cands.truncate(MAX_NMS_CANDIDATES);
    let kept = nms::suppress(&cands, iou_threshold);
    let mut out = Vec::with_capacity(kept.len());
    for c in kept {
        let [x0, y0, x1, y1] = c.rect;
        let Some((x, y, width, height)) =
            mapping.norm_box_to_source(y0 / dh, x0 / dw, y1 / dh, x1 / dw)
        else {
            continue;
        };
        let label = match params.labels {
            Some((l, map)) => map.label(l, c.class),
            None => unlabelled(c.class),
        };
        out.push(Detection {
            class_index: c.class,
            label,
            score: c.score,
            x,
            y,
            width,
            height,
        });
    }
    Ok(out)
}

/// `real = (raw - zp) * scale` (`scale > 0`) and the score floor.
#[derive(Clone, Copy)]
struct Dequant {
    scale: f32,
    zp: f32,
    floor: f32,
}

/// One class row of a `[1, 4 + C, A]` head (`row`: its raw bytes) folded
/// into the best raw value and class per anchor. Slices and no index
/// arithmetic, so the loop has no bounds checks and vectorizes.
fn fold_row(row: &[u8], dtype: DType, class: u32, best: &mut [f32], best_class: &mut [u32]) {
    #[inline(always)]
    fn fold(values: impl Iterator<Item = f32>, class: u32, best: &mut [f32], bc: &mut [u32]) {
        for ((v, b), c) in values.zip(best.iter_mut()).zip(bc.iter_mut()) {
            if v > *b {
                *b = v;
                *c = class;
            }
        }
    }
    match dtype {
        DType::I8 => fold(
            row.iter().map(|&v| f32::from(v as i8)),
            class,
            best,
            best_class,
        ),
        DType::U8 => fold(row.iter().map(|&v| f32::from(v)), class, best, best_class),
        DType::F32 => fold(
            row.chunks_exact(4)
                .map(|b| f32::from_ne_bytes([b[0], b[1], b[2], b[3]])),
            class,
            best,
            best_class,
        ),
    }
}

/// The anchors whose score reaches the floor, with their best class and box
/// in input pixels. `key(i)` is element `i`'s raw value (quantized integer
/// or float) of `raw`, whose elements are `dtype`.
fn candidates<K: Fn(usize) -> f32>(
    key: K,
    raw: &[u8],
    dtype: DType,
    layout: &YoloLayout,
    q: Dequant,
    input: (f32, f32),
) -> Vec<Candidate> {
    let Dequant { scale, zp, floor } = q;
    let deq = |k: f32| (k - zp) * scale;
    // The floor in raw units: raw >= floor_key  <=>  score >= floor (up to rounding,
    // re-checked on the dequantized score).
    let floor_key = floor / scale + zp - 1e-3;
    let (anchors, first) = (layout.anchors, layout.first_class());
    let mut out = Vec::new();
    let mut push = |a: usize, class: usize, score: f32| {
        if !(score.is_finite() && score >= floor) {
            return;
        }
        let b = [0, 1, 2, 3].map(|ch| deq(key(layout.index(a, ch))));
        if b.iter().any(|v| !v.is_finite()) {
            return;
        }
        let (sx, sy) = match layout.units {
            BoxUnits::Pixels => (1.0, 1.0),
            BoxUnits::Normalized | BoxUnits::Unknown => input,
        };
        let (cx, cy, w, h) = (b[0] * sx, b[1] * sy, b[2].abs() * sx, b[3].abs() * sy);
        out.push(Candidate {
            class,
            score,
            index: a,
            rect: [cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0],
        });
    };
    match layout.version {
        YoloVersion::V8 if layout.channels_first => {
            // Row by row: contiguous memory, best raw value per anchor.
            let mut best = vec![f32::NEG_INFINITY; anchors];
            let mut best_class = vec![0u32; anchors];
            let width = anchors * dtype.size();
            for c in 0..layout.classes {
                let start = (first + c) * width;
                let Some(row) = raw.get(start..start + width) else {
                    break; // the length was checked against the layout
                };
                let class = u32::try_from(c).unwrap_or(u32::MAX);
                fold_row(row, dtype, class, &mut best, &mut best_class);
            }
            for (a, (&b, &c)) in best.iter().zip(&best_class).enumerate() {
                if b >= floor_key {
                    push(a, c as usize, deq(b));
                }
            }
        }
        version => {
            for a in 0..anchors {
                let obj = match version {
                    YoloVersion::V5 => {
                        // Class scores are at most 1, so obj × cls >= floor needs obj >= floor.
                        let o = key(layout.index(a, 4));
                        if o.is_nan() || o < floor_key {
                            continue;
                        }
                        Some(deq(o))
                    }
                    YoloVersion::V8 => None,
                };
                let (mut best, mut best_class) = (f32::NEG_INFINITY, 0);
                for c in 0..layout.classes {
                    let k = key(layout.index(a, first + c));
                    if k > best {
                        best = k;
                        best_class = c;
                    }
                }
                // `best` is never NaN (NaN never compares greater).
                if obj.is_none() && best < floor_key {
                    continue;
                }
                let score = deq(best) * obj.unwrap_or(1.0);
                push(a, best_class, score);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inference::labels::{DetectorLabelMap, Labels};
    use crate::inference::preprocess::FitMode;
    use crate::inference::Quant;

    /// One anchor's content: box (cx, cy, w, h) in the layout's units, class, score.
    type Obj = (usize, [f32; 4], usize, f32);

    fn layout(version: YoloVersion, channels_first: bool, units: BoxUnits) -> YoloLayout {
        YoloLayout {
            version,
            classes: 3,
            anchors: 9,
            channels_first,
            units,
        }
    }

    /// A float head with `objs` on their anchors (YOLOv5: objectness 0.8 and
    /// class score `score / 0.8`, so obj × cls = score) and zeros elsewhere.
    fn head(l: &YoloLayout, objs: &[Obj]) -> Vec<f32> {
        let mut v = vec![0.0f32; l.anchors * l.channels()];
        for &(a, b, class, score) in objs {
            for (ch, x) in b.iter().enumerate() {
                v[l.index(a, ch)] = *x;
            }
            match l.version {
                YoloVersion::V8 => v[l.index(a, 4 + class)] = score,
                YoloVersion::V5 => {
                    v[l.index(a, 4)] = 0.8;
                    v[l.index(a, 5 + class)] = score / 0.8;
                }
            }
        }
        v
    }

    fn f32_spec(l: &YoloLayout) -> TensorSpec {
        let shape = if l.channels_first {
            vec![1, l.channels(), l.anchors]
        } else {
            vec![1, l.anchors, l.channels()]
        };
        TensorSpec {
            name: "yolo".into(),
            shape,
            dtype: DType::F32,
            quant: None,
        }
    }

    fn bytes(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_ne_bytes()).collect()
    }

    fn decode(
        l: &YoloLayout,
        raw: &[u8],
        spec: &TensorSpec,
        m: &Mapping,
        floor: f32,
    ) -> Vec<Detection> {
        let labels = Labels::from_names(vec!["person".into(), "dog".into(), "cup".into()], "t");
        let params = DetectionParams {
            min_score: floor,
            labels: Some((&labels, DetectorLabelMap { offset: 0 })),
        };
        detections(raw, spec, l, m, 0.45, &params).unwrap()
    }

    fn summary(d: &[Detection]) -> Vec<(String, i32, [i32; 4])> {
        d.iter()
            .map(|d| {
                (
                    d.label.clone(),
                    (d.score * 100.0).round() as i32,
                    [d.x, d.y, d.width, d.height].map(|v| v.round() as i32),
                )
            })
            .collect()
    }

    /// Two overlapping dogs (the weaker one suppressed), a person under the
    /// first dog (kept: other class), a cup below the floor.
    fn scene(norm: bool) -> Vec<Obj> {
        let (sx, sy) = if norm { (320.0, 256.0) } else { (1.0, 1.0) };
        let b = |cx: f32, cy: f32, w: f32, h: f32| [cx / sx, cy / sy, w / sx, h / sy];
        vec![
            (2, b(160.0, 128.0, 80.0, 128.0), 1, 0.9),
            (5, b(164.0, 130.0, 80.0, 128.0), 1, 0.7),
            (7, b(160.0, 128.0, 80.0, 128.0), 0, 0.6),
            (8, b(40.0, 40.0, 20.0, 20.0), 2, 0.2),
        ]
    }

    fn expected() -> Vec<(String, i32, [i32; 4])> {
        vec![
            ("dog".into(), 90, [120, 64, 80, 128]),
            ("person".into(), 60, [120, 64, 80, 128]),
        ]
    }

    // Would catch YOLOv5's objectness ignored or applied to v8, channels
    // and anchors swapped, a hard-coded class count or input size, boxes read
    // as corners instead of centre/size, NMS across classes, or the floor
    // ignored: the same scene on odd sizes (3 classes, 9 anchors, a 320×256
    // input) decodes the same from every layout.
    #[test]
    fn v8_and_v5_layouts_decode_the_same_scene() {
        let m = Mapping::new(FitMode::Stretch, 320, 256, 320, 256);
        for (version, cf) in [
            (YoloVersion::V8, true),
            (YoloVersion::V8, false),
            (YoloVersion::V5, false),
            (YoloVersion::V5, true),
        ] {
            let l = layout(version, cf, BoxUnits::Normalized);
            let raw = bytes(&head(&l, &scene(true)));
            let d = decode(&l, &raw, &f32_spec(&l), &m, 0.3);
            assert_eq!(summary(&d), expected(), "{version:?} channels_first={cf}");
        }
    }

    // Would catch pixel-unit boxes scaled by the input size again (or
    // normalized ones not scaled).
    #[test]
    fn pixel_and_normalized_units() {
        let m = Mapping::new(FitMode::Stretch, 320, 256, 320, 256);
        let l = layout(YoloVersion::V8, true, BoxUnits::Pixels);
        let raw = bytes(&head(&l, &scene(false)));
        assert_eq!(
            summary(&decode(&l, &raw, &f32_spec(&l), &m, 0.3)),
            expected()
        );
    }

    // Would catch int8 outputs read as unsigned, dequantized with another
    // tensor's parameters, or the raw-domain floor off by the zero point.
    #[test]
    fn int8_quantized_output() {
        let m = Mapping::new(FitMode::Stretch, 320, 256, 320, 256);
        let l = layout(YoloVersion::V8, true, BoxUnits::Normalized);
        let q = Quant {
            scale: 1.0 / 250.0,
            zero_point: -120,
        };
        let raw: Vec<u8> = head(&l, &scene(true))
            .iter()
            .map(|v| ((v / q.scale).round() as i32 + q.zero_point).clamp(-128, 127) as i8 as u8)
            .collect();
        let spec = TensorSpec {
            dtype: DType::I8,
            quant: Some(q),
            ..f32_spec(&l)
        };
        let got = summary(&decode(&l, &raw, &spec, &m, 0.3));
        assert_eq!(got.len(), 2, "{got:?}");
        for (g, e) in got.iter().zip(expected()) {
            assert_eq!((&g.0, g.1), (&e.0, e.1));
            // One quantization step is 1/250 of the input: 1.3 px.
            for (gv, ev) in g.2.iter().zip(e.2) {
                assert!((gv - ev).abs() <= 2, "{got:?}");
            }
        }
        // The floor converted to the raw domain keeps what reaches it, no more.
        assert_eq!(decode(&l, &raw, &spec, &m, 0.59).len(), 2);
        assert_eq!(decode(&l, &raw, &spec, &m, 0.61).len(), 1);
    }

    // Would catch letterboxed boxes mapped without removing the padding or
    // with the wrong scale, for landscape and portrait frames, and boxes
    // reaching into the padding left unclipped.
    #[test]
    fn letterbox_boxes_land_on_source_pixels() {
        let l = layout(YoloVersion::V8, true, BoxUnits::Pixels);
        // Landscape 640×480 into 320×320: content 320×240 at y = 40, scale 2.
        // Portrait 480×640: content 240×320 at x = 40.
        for (sw, sh, ox, oy) in [(640u32, 480u32, 0.0f32, 40.0f32), (480, 640, 40.0, 0.0)] {
            let m = Mapping::new(FitMode::Letterbox, sw, sh, 320, 320);
            // Source box (100, 50)-(300, 250) -> input (50 + ox, 25 + oy)-(150 + ox, 125 + oy).
            let (cx, cy) = (100.0 + ox, 75.0 + oy);
            let objs = [
                (0, [cx, cy, 100.0, 100.0], 0, 0.9),
                // Reaches 20 px into the top/left padding: clipped at 0.
                (1, [ox + 10.0, oy + 10.0, 60.0, 60.0], 2, 0.8),
            ];
            let raw = bytes(&head(&l, &objs));
            let d = decode(&l, &raw, &f32_spec(&l), &m, 0.3);
            assert_eq!(
                summary(&d),
                [
                    ("person".to_string(), 90, [100, 50, 200, 200]),
                    ("cup".to_string(), 80, [0, 0, 80, 80]),
                ],
                "{sw}x{sh}"
            );
        }
    }

    // Would catch equal class scores resolved by the last class (or
    // unstably), and a tensor of the wrong length decoded.
    #[test]
    fn class_ties_take_the_lower_class_and_lengths_are_checked() {
        let m = Mapping::new(FitMode::Stretch, 320, 256, 320, 256);
        let l = layout(YoloVersion::V8, true, BoxUnits::Normalized);
        let mut v = head(&l, &[(4, [0.5, 0.5, 0.2, 0.2], 2, 0.7)]);
        v[l.index(4, 5)] = 0.7; // class 1 as high as class 2
        let d = decode(&l, &bytes(&v), &f32_spec(&l), &m, 0.3);
        assert_eq!(d[0].class_index, 1);
        let labels = Labels::from_names(vec!["a".into()], "t");
        let params = DetectionParams {
            min_score: 0.3,
            labels: Some((&labels, DetectorLabelMap { offset: 0 })),
        };
        let short = bytes(&v[1..]);
        assert!(detections(&short, &f32_spec(&l), &l, &m, 0.45, &params).is_err());
    }
}
