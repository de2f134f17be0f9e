//! Privacy masks (issue 23): filling the pixels of `[[privacy_mask]]`
//! polygons and obscuring (pixelating or filling) label boxes, in packed
//! RGB8 images, and the frame-to-masked-JPEG step every consumer that keeps
//! or shows a picture goes through.
//!
//! This module owns the pixels only; which masks a source has and which
//! boxes are obscured is configuration ([`crate::config::privacy`]), where
//! they are applied is the pipeline's (snapshots, the inference input) and
//! the API's (the page's frame endpoint).
//!
//! Geometry: a pixel is masked when its centre (`(x + 0.5) / width`,
//! `(y + 0.5) / height`) is inside the polygon by
//! [`Polygon::contains`]'s rule (even-odd; left and top edges inside). The
//! polygon is filled a row at a time (its edge crossings, sorted), so the
//! cost is the masked pixels plus one pass over the edges per row, at any
//! frame size, also on a decoded copy scaled in the DCT.
//!
//! Cost: a JPEG frame is decoded, masked and re-encoded only where a
//! picture leaves the pipeline (a stored snapshot, a few per minute; a
//! viewer's frame, once per frame however many watch). The model's input is
//! masked on the decoded pixels inside the pre-processor instead, which
//! costs no extra decode or encode.

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::{PrivacyMaskSettings, PrivacySettings};
use crate::core::frame::{Frame, PixelFormat};
use crate::core::zone::Polygon;

/// Why a frame could not be masked.
#[derive(Debug, thiserror::Error)]
pub enum MaskError {
    #[error("frame {origin}: masking: {reason}")]
    Frame { origin: String, reason: String },
}

/// One polygon and its fill colour.
#[derive(Debug, Clone, PartialEq)]
struct Shape {
    polygon: Polygon,
    fill: [u8; 3],
}

/// The masks of one source.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SourceMasks {
    shapes: Vec<Shape>,
}

impl SourceMasks {
    /// Masks filling each polygon with its colour.
    pub fn new(shapes: impl IntoIterator<Item = (Polygon, [u8; 3])>) -> SourceMasks {
        SourceMasks {
            shapes: shapes
                .into_iter()
                .map(|(polygon, fill)| Shape { polygon, fill })
                .collect(),
        }
    }

    /// Fill every mask in the packed RGB8 image `rgb` (`w`×`h`, rows of
    /// `w * 3` bytes). A buffer shorter than that is left alone.
    pub fn fill_rgb(&self, rgb: &mut [u8], w: u32, h: u32) {
        let (wu, hu) = (w as usize, h as usize);
        if wu == 0 || hu == 0 || rgb.len() < wu * hu * 3 {
            return;
        }
        let mut xs: Vec<f64> = Vec::new();
        for shape in &self.shapes {
            let pts = shape.polygon.points();
            let n = pts.len();
            let (ymin, ymax) = pts
                .iter()
                .fold((1.0f64, 0.0f64), |(lo, hi), p| (lo.min(p[1]), hi.max(p[1])));
            // Rows whose centre can be inside.
            let r0 = ((ymin * f64::from(h) - 0.5).floor().max(0.0)) as usize;
            let r1 = ((ymax * f64::from(h) + 0.5).ceil() as usize).min(hu);
            for y in r0..r1 {
                let yc = (y as f64 + 0.5) / f64::from(h);
                xs.clear();
                for i in 0..n {
                    let ([xi, yi], [xj, yj]) = (pts[i], pts[(i + n - 1) % n]);
                    if (yi > yc) != (yj > yc) {
                        xs.push((xj - xi) * (yc - yi) / (yj - yi) + xi);
                    }
                }
                xs.sort_by(f64::total_cmp);
                let row = &mut rgb[y * wu * 3..(y + 1) * wu * 3];
                for pair in xs.chunks_exact(2) {
                    // Pixels whose centre is in [a, b).
                    let first = (pair[0] * f64::from(w) - 0.5).ceil().clamp(0.0, w as f64) as usize;
                    let end = (pair[1] * f64::from(w) - 0.5).ceil().clamp(0.0, w as f64) as usize;
                    if first < end {
                        for px in row[first * 3..end * 3].chunks_exact_mut(3) {
                            px.copy_from_slice(&shape.fill);
                        }
                    }
                }
            }
        }
    }
}

/// How label boxes are obscured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Obscure {
    /// Pixelated: blocks of about 1/8 of the box's longer side, each the
    /// average of its pixels (no detail of a face or a plate survives).
    Blur,
    /// Filled with one colour.
    Fill([u8; 3]),
}

/// Obscure each box (normalized `[x, y, width, height]`) of the packed RGB8
/// image `rgb` (`w`×`h`); only pixels inside a box change.
pub fn obscure_boxes(rgb: &mut [u8], w: u32, h: u32, boxes: &[[f64; 4]], how: Obscure) {
    let (wu, hu) = (w as usize, h as usize);
    if wu == 0 || hu == 0 || rgb.len() < wu * hu * 3 {
        return;
    }
    for b in boxes {
        let px = |v: f64, n: usize| ((v * n as f64).round().max(0.0) as usize).min(n);
        let (x0, y0) = (px(b[0], wu), px(b[1], hu));
        let (x1, y1) = (px(b[0] + b[2], wu), px(b[1] + b[3], hu));
        if x1 <= x0 || y1 <= y0 {
            continue;
        }
        match how {
            Obscure::Fill(c) => {
                for y in y0..y1 {
                    for p in rgb[(y * wu + x0) * 3..(y * wu + x1) * 3].chunks_exact_mut(3) {
                        p.copy_from_slice(&c);
                    }
                }
            }
            Obscure::Blur => {
                let block = ((x1 - x0).max(y1 - y0) / 8).max(4);
                for by in (y0..y1).step_by(block) {
                    for bx in (x0..x1).step_by(block) {
                        let (ey, ex) = ((by + block).min(y1), (bx + block).min(x1));
                        let mut sum = [0u64; 3];
                        for y in by..ey {
                            for p in rgb[(y * wu + bx) * 3..(y * wu + ex) * 3].chunks_exact(3) {
                                (0..3).for_each(|c| sum[c] += u64::from(p[c]));
                            }
                        }
                        let count = ((ey - by) * (ex - bx)) as u64;
                        let avg = sum.map(|s| (s / count) as u8);
                        for y in by..ey {
                            for p in rgb[(y * wu + bx) * 3..(y * wu + ex) * 3].chunks_exact_mut(3) {
                                p.copy_from_slice(&avg);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The privacy settings of the running daemon, ready to apply.
#[derive(Debug, Clone, PartialEq)]
pub struct Privacy {
    masks: HashMap<String, Arc<SourceMasks>>,
    blur_labels: Vec<String>,
    obscure: Obscure,
    mask_inference: bool,
}

impl Default for Privacy {
    /// Nothing masked.
    fn default() -> Privacy {
        Privacy::from_settings(&[], &PrivacySettings::default())
    }
}

impl Privacy {
    /// From `[[privacy_mask]]` and `[privacy]`.
    pub fn from_settings(masks: &[PrivacyMaskSettings], p: &PrivacySettings) -> Privacy {
        let mut by_source: HashMap<String, Vec<(Polygon, [u8; 3])>> = HashMap::new();
        for m in masks {
            by_source
                .entry(m.source.clone())
                .or_default()
                .push((m.polygon.clone(), m.fill));
        }
        Privacy {
            masks: by_source
                .into_iter()
                .map(|(s, shapes)| (s, Arc::new(SourceMasks::new(shapes))))
                .collect(),
            blur_labels: p.blur_labels.clone(),
            obscure: p.label_fill.map_or(Obscure::Blur, Obscure::Fill),
            mask_inference: p.mask_inference,
        }
    }

    /// The masks of `source` (None: it has none).
    pub fn masks(&self, source: &str) -> Option<&SourceMasks> {
        self.masks.get(source).map(|m| &**m)
    }

    /// The masks the model's input of `source` gets (none with
    /// `privacy.mask_inference = false`).
    pub fn inference_masks(&self, source: &str) -> Option<&SourceMasks> {
        self.masks(source).filter(|_| self.mask_inference)
    }

    /// Whether boxes of `label` are obscured in stored snapshots.
    pub fn obscures_label(&self, label: &str) -> bool {
        self.blur_labels.iter().any(|l| l == label)
    }

    /// Whether a picture of `source` with `boxes` to obscure needs masking
    /// at all (false: it can be kept as captured).
    pub fn applies(&self, source: &str, boxes: &[[f64; 4]]) -> bool {
        self.masks.contains_key(source) || !boxes.is_empty()
    }

    /// The frame of `source` as a JPEG with its masks filled and `boxes`
    /// (normalized) obscured; `Ok(None)` when nothing applies, so the
    /// caller keeps the frame as it is.
    pub fn masked_jpeg(
        &self,
        source: &str,
        frame: &Frame,
        boxes: &[[f64; 4]],
        max_pixels: u64,
    ) -> Result<Option<Vec<u8>>, MaskError> {
        if !self.applies(source, boxes) {
            return Ok(None);
        }
        let (mut rgb, w, h) = frame_rgb(frame, max_pixels)?;
        if let Some(m) = self.masks(source) {
            m.fill_rgb(&mut rgb, w, h);
        }
        obscure_boxes(&mut rgb, w, h, boxes, self.obscure);
        let raw = frame.rgb_like(rgb, w, h);
        super::encode::frame_to_jpeg(&raw)
            .map(Some)
            .map_err(|e| MaskError::Frame {
                origin: frame.origin.clone(),
                reason: e.to_string(),
            })
    }
}

/// The frame as packed RGB8, full size.
fn frame_rgb(frame: &Frame, max_pixels: u64) -> Result<(Vec<u8>, u32, u32), MaskError> {
    let err = |reason: String| MaskError::Frame {
        origin: frame.origin.clone(),
        reason,
    };
    let (w, h, stride) = (frame.width, frame.height, frame.stride);
    let full = |w: u32, h: u32| vec![0u8; w as usize * h as usize * 3];
    match frame.format {
        PixelFormat::Encoded => {
            let mut rgb = Vec::new();
            // JPEGs with libjpeg-turbo at full size (3–4× the `image`
            // crate's speed); CMYK ones, PNG and BMP with `decode_rgb`.
            let turbo = match super::decode::sniff(&frame.data) {
                Some(super::decode::ImageKind::Jpeg) => super::decode::JpegDecoder::default()
                    .decode_scaled(&frame.data, max_pixels, &mut rgb, |_, _| 1)
                    .map_err(|e| err(e.to_string()))?
                    .map(|d| (d.width, d.height)),
                _ => None,
            };
            let (w, h) = match turbo {
                Some(size) => size,
                None => super::decode::decode_rgb(&frame.data, max_pixels, &mut rgb)
                    .map_err(|e| err(e.to_string()))?,
            };
            Ok((rgb, w, h))
        }
        PixelFormat::Rgb8 => {
            let row = w as usize * 3;
            let need = (stride as usize) * (h as usize).saturating_sub(1) + row;
            if w == 0 || h == 0 || (stride as usize) < row || frame.data.len() < need {
                return Err(err("RGB frame shorter than its size".into()));
            }
            let mut rgb = Vec::with_capacity(row * h as usize);
            for r in 0..h as usize {
                let at = r * stride as usize;
                rgb.extend_from_slice(&frame.data[at..at + row]);
            }
            Ok((rgb, w, h))
        }
        PixelFormat::Yuyv => {
            let mut rgb = full(w, h);
            super::yuyv::yuyv_to_rgb(&frame.data, w, h, stride, &mut rgb)
                .map_err(|e| err(e.to_string()))?;
            Ok((rgb, w, h))
        }
        PixelFormat::I420 | PixelFormat::Nv12 => {
            let mut rgb = full(w, h);
            super::yuv420::yuv420_to_rgb(frame.format, &frame.data, w, h, stride, &mut rgb)
                .map_err(|e| err(e.to_string()))?;
            Ok((rgb, w, h))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn poly(p: &[[f64; 2]]) -> Polygon {
        Polygon::new(p.to_vec()).unwrap()
    }

    // Would catch the row fill disagreeing with the zone geometry (a pixel
    // the polygon contains left unmasked, or one outside filled), e.g. an
    // off-by-one at the span ends or a concave polygon filled as its hull.
    #[test]
    fn filled_pixels_are_exactly_those_whose_centre_is_inside() {
        let (w, h) = (37u32, 23u32);
        // Concave (an arrow) and a triangle touching the frame's edges.
        let shapes = [
            poly(&[[0.1, 0.1], [0.6, 0.3], [0.1, 0.5], [0.3, 0.3]]),
            poly(&[[0.5, 0.0], [1.0, 1.0], [0.2, 1.0]]),
        ];
        for p in shapes {
            let m = SourceMasks::new([(p.clone(), [255, 0, 7])]);
            let mut rgb = vec![9u8; (w * h * 3) as usize];
            m.fill_rgb(&mut rgb, w, h);
            for y in 0..h {
                for x in 0..w {
                    let i = ((y * w + x) * 3) as usize;
                    let inside = p.contains(
                        (f64::from(x) + 0.5) / f64::from(w),
                        (f64::from(y) + 0.5) / f64::from(h),
                    );
                    let want: [u8; 3] = if inside { [255, 0, 7] } else { [9, 9, 9] };
                    assert_eq!(rgb[i..i + 3], want, "pixel {x},{y}");
                }
            }
        }
    }

    // Would catch obscuring that bleeds outside the box, or a "blur" that
    // leaves the box's detail (its pixels unchanged).
    #[test]
    fn obscuring_changes_only_the_box() {
        let (w, h) = (64u32, 48u32);
        let orig: Vec<u8> = (0..w * h * 3).map(|i| (i * 37 % 251) as u8).collect();
        let b = [0.25, 0.25, 0.5, 0.5];
        for how in [Obscure::Blur, Obscure::Fill([1, 2, 3])] {
            let mut rgb = orig.clone();
            obscure_boxes(&mut rgb, w, h, &[b], how);
            let mut changed = 0;
            for y in 0..h {
                for x in 0..w {
                    let i = ((y * w + x) * 3) as usize;
                    let inside = (16..48).contains(&x) && (12..36).contains(&y);
                    if !inside {
                        assert_eq!(rgb[i..i + 3], orig[i..i + 3], "{how:?} at {x},{y}");
                    } else if rgb[i..i + 3] != orig[i..i + 3] {
                        changed += 1;
                    }
                    if inside && how == Obscure::Fill([1, 2, 3]) {
                        assert_eq!(rgb[i..i + 3], [1, 2, 3]);
                    }
                }
            }
            assert!(changed > 32 * 24 * 9 / 10, "{how:?}: {changed} changed");
        }
    }

    // Would catch a masked JPEG of the wrong size, or masks of one source
    // applied to another (or a frame with nothing to mask re-encoded).
    #[test]
    fn masked_jpeg_only_for_sources_with_masks() {
        let mask = PrivacyMaskSettings {
            source: "door".into(),
            polygon: poly(&[[0.0, 0.0], [0.5, 0.0], [0.5, 1.0], [0.0, 1.0]]),
            fill: [255, 255, 255],
        };
        let p = Privacy::from_settings(std::slice::from_ref(&mask), &PrivacySettings::default());
        let (w, h) = (32u32, 16u32);
        let frame = Frame {
            data: vec![0; (w * h * 3) as usize],
            format: PixelFormat::Rgb8,
            width: w,
            height: h,
            stride: w * 3,
            seq: 1,
            captured_at: std::time::SystemTime::now(),
            origin: "t".into(),
            source: String::new(),
        };
        assert!(p
            .masked_jpeg("yard", &frame, &[], 1 << 20)
            .unwrap()
            .is_none());
        let jpeg = p
            .masked_jpeg("door", &frame, &[], 1 << 20)
            .unwrap()
            .unwrap();
        let img = ::image::load_from_memory(&jpeg).unwrap().to_rgb8();
        assert_eq!((img.width(), img.height()), (w, h));
        assert!(img.get_pixel(3, 8)[0] > 240, "{:?}", img.get_pixel(3, 8));
        assert!(img.get_pixel(28, 8)[0] < 15, "{:?}", img.get_pixel(28, 8));
        assert!(p.inference_masks("door").is_some());
        let off = PrivacySettings {
            mask_inference: false,
            ..PrivacySettings::default()
        };
        let p = Privacy::from_settings(&[mask], &off);
        assert!(p.masks("door").is_some());
        assert!(p.inference_masks("door").is_none());
    }

    // A measurement, not a check (no timing assertions): what masking a
    // 1280×720 JPEG costs against decoding it, for the README's figure.
    // `cargo test --lib image::mask::tests::print_mask_cost -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn print_mask_cost() {
        let (w, h) = (1280u32, 720u32);
        let wave = |v: u32, p: f64| (128.0 + 100.0 * (f64::from(v) / p).sin()) as u8;
        let img = ::image::RgbImage::from_fn(w, h, |x, y| {
            ::image::Rgb([wave(x, 7.0), wave(y, 9.0), wave(x + y, 5.0)])
        });
        let mut jpeg = Vec::new();
        ::image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 85)
            .encode_image(&img)
            .unwrap();
        let frame = Frame::encoded(jpeg, 1, "t".into());
        let mask = PrivacyMaskSettings {
            source: "cam".into(),
            polygon: poly(&[[0.0, 0.0], [0.5, 0.0], [0.4, 0.6], [0.0, 0.6]]),
            fill: [0, 0, 0],
        };
        let p = Privacy::from_settings(&[mask], &PrivacySettings::default());
        let n = 30;
        let time = |f: &mut dyn FnMut()| {
            f();
            let t = std::time::Instant::now();
            (0..n).for_each(|_| f());
            t.elapsed().as_secs_f64() * 1000.0 / f64::from(n)
        };
        let mut rgb = Vec::new();
        let decode = time(&mut || {
            frame_rgb(&frame, u64::MAX).unwrap();
        });
        super::super::decode::decode_rgb(&frame.data, u64::MAX, &mut rgb).unwrap();
        let m = p.masks("cam").unwrap();
        let fill = time(&mut || m.fill_rgb(&mut rgb, w, h));
        let masked = time(&mut || {
            p.masked_jpeg("cam", &frame, &[], u64::MAX)
                .unwrap()
                .unwrap();
        });
        eprintln!(
            "1280x720 JPEG ({} kB): decode {decode:.2} ms, fill {fill:.3} ms, decode+fill+encode {masked:.2} ms",
            frame.data.len() / 1000
        );
    }
}
