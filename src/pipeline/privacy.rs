//! The inference thread's privacy hook (issue 23): [`PrivateFrame`], the
//! one picture of a frame that may be stored, made at most once per frame
//! and only when something is stored (a result snapshot, a sighting's best
//! frame): the source's `[[privacy_mask]]` polygons filled and the boxes of
//! `privacy.blur_labels` obscured ([`crate::image::mask`]). A frame that
//! cannot be masked is stored without a picture, never unmasked.

use std::cell::OnceCell;
use std::sync::Arc;

use crate::core::frame::{Frame, PixelFormat};
use crate::core::result::ResultRecord;
use crate::image::mask::Privacy;
use crate::store::Snapshot;

/// A frame and what may be kept of it.
pub(crate) struct PrivateFrame<'a> {
    frame: &'a Frame,
    privacy: Arc<Privacy>,
    source: &'a str,
    /// Boxes to obscure, normalized `[x, y, width, height]`.
    boxes: Vec<[f64; 4]>,
    max_pixels: u64,
    picture: OnceCell<Option<Vec<u8>>>,
}

impl<'a> PrivateFrame<'a> {
    /// `frame` of the source `source`, whose result is `rec`.
    pub(crate) fn new(
        privacy: Arc<Privacy>,
        frame: &'a Frame,
        source: &'a str,
        rec: &ResultRecord,
        max_pixels: u64,
    ) -> PrivateFrame<'a> {
        let (iw, ih) = (f64::from(rec.image_width), f64::from(rec.image_height));
        let boxes = if iw > 0.0 && ih > 0.0 {
            rec.detections
                .iter()
                .filter(|d| privacy.obscures_label(&d.label))
                .map(|d| {
                    [
                        f64::from(d.x) / iw,
                        f64::from(d.y) / ih,
                        f64::from(d.width) / iw,
                        f64::from(d.height) / ih,
                    ]
                })
                .collect()
        } else {
            Vec::new()
        };
        PrivateFrame {
            frame,
            privacy,
            source,
            boxes,
            max_pixels,
            picture: OnceCell::new(),
        }
    }

    /// The frame's picture as it may be kept: the captured image as is when
    /// no mask or box applies (raw frames encoded as JPEG), else the masked
    /// JPEG; `None` when it cannot be made (logged).
    fn picture(&self) -> Option<Vec<u8>> {
        self.picture
            .get_or_init(|| {
                let made = match self.privacy.masked_jpeg(
                    self.source,
                    self.frame,
                    &self.boxes,
                    self.max_pixels,
                ) {
                    Ok(Some(masked)) => Ok(masked),
                    Ok(None) => {
                        crate::image::encode::frame_to_jpeg(self.frame).map_err(|e| e.to_string())
                    }
                    Err(e) => Err(e.to_string()),
                };
                made.map_err(|e| log::warn!(spotter_error_kind = "snapshot"; "snapshot: {e}"))
                    .ok()
            })
            .clone()
    }

    /// The result snapshot: only of frames the source delivered encoded
    /// (re-encoding raw ones would cost the inference thread a JPEG encode
    /// per snapshot; masking one costs a decode and an encode, a few per
    /// minute).
    pub(crate) fn result_snapshot(&self) -> Option<Snapshot> {
        if self.frame.format != PixelFormat::Encoded {
            return None;
        }
        self.picture().map(|bytes| Snapshot { bytes })
    }

    /// A sighting's snapshot (any frame format).
    pub(crate) fn sighting_snapshot(&self) -> Option<Snapshot> {
        self.picture().map(|bytes| Snapshot { bytes })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{PrivacyMaskSettings, PrivacySettings};
    use crate::core::result::{Detection, InferenceOutput};
    use crate::core::zone::Polygon;

    const W: u32 = 160;
    const H: u32 = 120;

    fn jpeg_frame() -> Frame {
        // Smooth waves (a JPEG re-encode keeps them) of a period several
        // times the pixelation's block (which flattens them).
        let wave = |v: u32, period: f64| (128.0 + 100.0 * (f64::from(v) / period).sin()) as u8;
        let img = ::image::RgbImage::from_fn(W, H, |x, y| {
            ::image::Rgb([wave(x, 3.0), wave(y, 4.0), wave(x + y, 5.0)])
        });
        let mut jpeg = Vec::new();
        ::image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 95)
            .encode_image(&img)
            .unwrap();
        Frame::encoded(jpeg, 1, "t".into())
    }

    fn det(label: &str, [x, y, w, h]: [f32; 4]) -> Detection {
        Detection {
            class_index: 0,
            label: label.into(),
            score: 0.9,
            x,
            y,
            width: w,
            height: h,
        }
    }

    fn record(frame: &Frame, detections: Vec<Detection>) -> ResultRecord {
        let out = InferenceOutput {
            classes: Vec::new(),
            detections,
            image_width: W,
            image_height: H,
            latency: Default::default(),
        };
        ResultRecord::build(out, frame, "sha", "test", true)
    }

    fn decode(b: &[u8]) -> ::image::RgbImage {
        ::image::load_from_memory(b).unwrap().to_rgb8()
    }

    /// Mean absolute difference of `a` and `b` over the pixels `pick` selects.
    fn mean_diff(
        a: &::image::RgbImage,
        b: &::image::RgbImage,
        pick: impl Fn(u32, u32) -> bool,
    ) -> f64 {
        let (mut sum, mut n) = (0u64, 0u64);
        for (x, y, p) in a.enumerate_pixels() {
            if pick(x, y) {
                let q = b.get_pixel(x, y);
                sum += (0..3).map(|c| u64::from(p[c].abs_diff(q[c]))).sum::<u64>();
                n += 3;
            }
        }
        sum as f64 / n as f64
    }

    // Would catch label boxes obscured outside their box, boxes of labels
    // not listed obscured too, the listed label's box left as captured, the
    // box taken in the wrong coordinates (normalized twice, or model-input
    // pixels), or the result losing its box.
    #[test]
    fn only_the_listed_labels_boxes_are_obscured() {
        let frame = jpeg_frame();
        let person = [40.0, 32.0, 48.0, 40.0];
        let rec = record(
            &frame,
            vec![det("person", person), det("car", [100.0, 60.0, 40.0, 40.0])],
        );
        let settings = PrivacySettings {
            blur_labels: vec!["person".into()],
            ..PrivacySettings::default()
        };
        let privacy = Arc::new(Privacy::from_settings(&[], &settings));
        let private = PrivateFrame::new(privacy, &frame, "cam", &rec, 1 << 24);
        let got = decode(&private.result_snapshot().unwrap().bytes);
        // The same frame re-encoded without obscuring anything: outside the
        // JPEG blocks the box touches (16×16 with 4:2:0, plus the chroma
        // upsampling's reach) it must be identical.
        let orig = decode(&frame.data);
        let plain = crate::image::encode::frame_to_jpeg(&Frame {
            data: orig.as_raw().clone(),
            format: crate::core::frame::PixelFormat::Rgb8,
            width: W,
            height: H,
            stride: W * 3,
            ..frame.clone()
        })
        .unwrap();
        let plain = decode(&plain);
        let near_box = |x: u32, y: u32| (16..112).contains(&x) && (16..96).contains(&y);
        let outside = mean_diff(&got, &plain, |x, y| !near_box(x, y));
        let inside = mean_diff(&got, &orig, |x, y| {
            (40..88).contains(&x) && (32..72).contains(&y)
        });
        assert!(outside < 0.5, "outside the person's box: {outside:.2}");
        assert!(inside > 15.0, "inside the person's box: {inside:.2}");
        // The car's box is outside and unchanged; the record keeps both boxes.
        assert_eq!(rec.detections.len(), 2);
        assert_eq!(rec.detections[0].x, person[0]);
        // The sighting's snapshot is the same picture, made once.
        assert_eq!(
            private.sighting_snapshot().unwrap(),
            private.result_snapshot().unwrap()
        );
    }

    // Would catch a frame of a source without masks (or boxes) re-encoded
    // for nothing, or masks of another source applied to it; and a masked
    // snapshot that is not masked.
    #[test]
    fn unmasked_sources_keep_the_frame_as_captured() {
        let frame = jpeg_frame();
        let rec = record(&frame, vec![det("person", [0.0, 0.0, 10.0, 10.0])]);
        let mask = PrivacyMaskSettings {
            source: "door".into(),
            polygon: Polygon::new(vec![[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]).unwrap(),
            fill: [255, 255, 255],
        };
        let privacy = Arc::new(Privacy::from_settings(
            std::slice::from_ref(&mask),
            &PrivacySettings::default(),
        ));
        let yard = PrivateFrame::new(privacy.clone(), &frame, "yard", &rec, 1 << 24);
        assert_eq!(yard.result_snapshot().unwrap().bytes, frame.data);
        let door = PrivateFrame::new(privacy, &frame, "door", &rec, 1 << 24);
        let got = decode(&door.result_snapshot().unwrap().bytes);
        assert!(got.pixels().all(|p| p.0.iter().all(|&c| c >= 245)));
    }
}
