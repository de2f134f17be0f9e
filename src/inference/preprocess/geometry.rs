//! Geometry: how a source image is fitted to a model's input size.
//!
//! This module owns [`FitMode`] and the [`Mapping`] each mode gives from
//! model-input pixels back to source pixels (used to place detection boxes
//! on the frame), the bilinear resize that applies a mapping
//! ([`resize_rgb`]), and the choice of the JPEG DCT scaling denominator
//! ([`jpeg_scale_denom`]), which depends on the same fitting.
//!
//! Resizing is [`super::resample`]'s, byte for byte Pillow's
//! `Image.resize(..., BILINEAR)` (the reference outputs were made that way).
//! `Stretch` (default, what the reference does) scales each axis,
//! `Crop` centre-crops to the model's aspect, `Letterbox` fits inside and
//! pads with a given pixel (by default the neutral one, which maps to 0.0).

use serde::{Deserialize, Serialize};

use super::resample::Resampler;

/// How a source image of another aspect ratio is fitted to the model input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FitMode {
    /// Scale each axis independently (distorts; matches the reference outputs).
    #[default]
    Stretch,
    /// Centre-crop the source to the model's aspect ratio, then scale.
    Crop,
    /// Scale to fit inside, centre, and pad with the neutral pixel.
    Letterbox,
}

/// The JPEG DCT scaling denominator (1, 2, 4 or 8) for a `src_w`×`src_h`
/// image fitted into `dst_w`×`dst_h` with `fit`: the largest one for which
/// the scaled image (each side rounded up, as libjpeg does) still covers the
/// model input without upscaling on either axis, i.e. the [`Mapping`] from
/// the scaled image has a scale of at least 1 both ways. 1 when no factor
/// qualifies (a small source, or sizes of 0).
pub fn jpeg_scale_denom(src_w: u32, src_h: u32, dst_w: u32, dst_h: u32, fit: FitMode) -> u32 {
    if src_w == 0 || src_h == 0 || dst_w == 0 || dst_h == 0 {
        return 1;
    }
    for d in [8u32, 4, 2] {
        let m = Mapping::new(fit, src_w.div_ceil(d), src_h.div_ceil(d), dst_w, dst_h);
        if m.scale_x >= 1.0 && m.scale_y >= 1.0 {
            return d;
        }
    }
    1
}

/// Maps model-input pixel coordinates back to source-image pixel coordinates:
/// `src = dst * scale + offset` on each axis.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Mapping {
    pub fit: FitMode,
    pub src_width: u32,
    pub src_height: u32,
    pub dst_width: u32,
    pub dst_height: u32,
    pub scale_x: f64,
    pub scale_y: f64,
    pub offset_x: f64,
    pub offset_y: f64,
}

impl Mapping {
    /// The mapping for fitting `src` into `dst` with `fit`. All sizes must be non-zero.
    pub(crate) fn new(
        fit: FitMode,
        src_width: u32,
        src_height: u32,
        dst_width: u32,
        dst_height: u32,
    ) -> Mapping {
        let (sw, sh, dw, dh) = (
            f64::from(src_width),
            f64::from(src_height),
            f64::from(dst_width),
            f64::from(dst_height),
        );
        let (scale_x, scale_y, offset_x, offset_y) = match fit {
            FitMode::Stretch => (sw / dw, sh / dh, 0.0, 0.0),
            FitMode::Crop => {
                let (left, top, cw, ch) = crop_box(sw, sh, dw, dh);
                (cw / dw, ch / dh, left, top)
            }
            FitMode::Letterbox => {
                let (x, y, w, h) = letterbox_rect(src_width, src_height, dst_width, dst_height);
                let (sx, sy) = (sw / f64::from(w), sh / f64::from(h));
                (sx, sy, -f64::from(x) * sx, -f64::from(y) * sy)
            }
        };
        Mapping {
            fit,
            src_width,
            src_height,
            dst_width,
            dst_height,
            scale_x,
            scale_y,
            offset_x,
            offset_y,
        }
    }

    /// The same mapping, expressed for the `full_w`×`full_h` image this
    /// mapping's source was cropped from at (`x`, `y`) (`model.roi`).
    pub(crate) fn with_crop(&self, x: u32, y: u32, full_w: u32, full_h: u32) -> Mapping {
        Mapping {
            src_width: full_w,
            src_height: full_h,
            offset_x: self.offset_x + f64::from(x),
            offset_y: self.offset_y + f64::from(y),
            ..*self
        }
    }

    /// True when no resampling is needed (same size; every fit mode is then the identity).
    pub(crate) fn is_identity(&self) -> bool {
        self.src_width == self.dst_width && self.src_height == self.dst_height
    }

    /// The same mapping, expressed for the full-size source `full_w`×`full_h`
    /// of which this mapping's source is a uniformly scaled copy (a JPEG
    /// decoded at 1/2, 1/4 or 1/8).
    pub(crate) fn with_source_size(&self, full_w: u32, full_h: u32) -> Mapping {
        let kx = f64::from(full_w) / f64::from(self.src_width);
        let ky = f64::from(full_h) / f64::from(self.src_height);
        Mapping {
            src_width: full_w,
            src_height: full_h,
            scale_x: self.scale_x * kx,
            scale_y: self.scale_y * ky,
            offset_x: self.offset_x * kx,
            offset_y: self.offset_y * ky,
            ..*self
        }
    }

    /// Source-image coordinates of model-input point `(x, y)` (pixels).
    pub(crate) fn to_source(self, x: f64, y: f64) -> (f64, f64) {
        (
            x * self.scale_x + self.offset_x,
            y * self.scale_y + self.offset_y,
        )
    }

    /// A box in normalized model-input coordinates (`ymin, xmin, ymax, xmax`,
    /// as SSD emits them) as `(x, y, width, height)` in source pixels, clipped
    /// to the image. `None` if nothing of it lies inside the image.
    pub(crate) fn norm_box_to_source(
        &self,
        ymin: f32,
        xmin: f32,
        ymax: f32,
        xmax: f32,
    ) -> Option<(f32, f32, f32, f32)> {
        let (dw, dh) = (f64::from(self.dst_width), f64::from(self.dst_height));
        self.input_box_to_source(
            f64::from(xmin) * dw,
            f64::from(ymin) * dh,
            f64::from(xmax) * dw,
            f64::from(ymax) * dh,
        )
    }

    /// A box in model-input pixels (corners `x0, y0` and `x1, y1`, in either
    /// order; YOLO's pixel-unit outputs) as `(x, y, width, height)` in source
    /// pixels, clipped to the image: the part lying in letterbox padding or
    /// outside the crop is cut off. `None` if nothing of it lies inside the
    /// image.
    pub(crate) fn input_box_to_source(
        &self,
        x0: f64,
        y0: f64,
        x1: f64,
        y1: f64,
    ) -> Option<(f32, f32, f32, f32)> {
        let (x0, y0, x1, y1) = (x0.min(x1), y0.min(y1), x0.max(x1), y0.max(y1));
        let (x0, y0) = self.to_source(x0, y0);
        let (x1, y1) = self.to_source(x1, y1);
        let (w, h) = (f64::from(self.src_width), f64::from(self.src_height));
        let (x0, x1) = (x0.clamp(0.0, w), x1.clamp(0.0, w));
        let (y0, y1) = (y0.clamp(0.0, h), y1.clamp(0.0, h));
        // Also false for NaN coordinates.
        if !(x1 > x0 && y1 > y0) {
            return None;
        }
        Some((x0 as f32, y0 as f32, (x1 - x0) as f32, (y1 - y0) as f32))
    }
}

/// Centre crop of a `sw`×`sh` source with the aspect ratio of `dw`×`dh`: (left, top, width, height).
fn crop_box(sw: f64, sh: f64, dw: f64, dh: f64) -> (f64, f64, f64, f64) {
    if sw * dh > sh * dw {
        let cw = sh * dw / dh;
        ((sw - cw) / 2.0, 0.0, cw, sh)
    } else {
        let ch = sw * dh / dw;
        (0.0, (sh - ch) / 2.0, sw, ch)
    }
}

/// Where the scaled image sits inside the letterboxed destination: (x, y, width, height).
pub(super) fn letterbox_rect(sw: u32, sh: u32, dw: u32, dh: u32) -> (u32, u32, u32, u32) {
    let s = (f64::from(dw) / f64::from(sw)).min(f64::from(dh) / f64::from(sh));
    let w = ((f64::from(sw) * s).round() as u32).clamp(1, dw);
    let h = ((f64::from(sh) * s).round() as u32).clamp(1, dh);
    ((dw - w) / 2, (dh - h) / 2, w, h)
}

/// The letterboxed content of the `sw`×`sh` packed RGB8 image `src`: the
/// image scaled to fit `dw`×`dh` (without the padding), resampled into `buf`
/// (reused), or `src` itself when it already has that size (a JPEG decoded
/// at a DCT scale that fits exactly). Returns the content and where it sits:
/// (x, y, width, height).
pub(super) fn letterbox_content<'a>(
    resampler: &mut Resampler,
    src: &'a [u8],
    (sw, sh): (u32, u32),
    (dw, dh): (u32, u32),
    buf: &'a mut Vec<u8>,
) -> (&'a [u8], (u32, u32, u32, u32)) {
    let rect @ (_, _, w, h) = letterbox_rect(sw, sh, dw, dh);
    if (w, h) == (sw, sh) {
        return (src, rect);
    }
    buf.clear();
    buf.resize(w as usize * h as usize * 3, 0);
    let full = [0.0, 0.0, sw as f32, sh as f32];
    resampler.resize(src, (sw, sh), full, (w, h), buf);
    (buf, rect)
}

/// Bilinear resize of packed RGB8 according to `mapping` into `out` (reused):
/// the whole `dst_width`×`dst_height` canvas, letterbox padding included.
pub(crate) fn resize_rgb(
    resampler: &mut Resampler,
    src: &[u8],
    mapping: &Mapping,
    pad: [u8; 3],
    out: &mut Vec<u8>,
    content: &mut Vec<u8>,
) {
    let (sw, sh, dw, dh) = (
        mapping.src_width,
        mapping.src_height,
        mapping.dst_width,
        mapping.dst_height,
    );
    out.clear();
    out.resize(dw as usize * dh as usize * 3, 0);
    let full = [0.0, 0.0, sw as f32, sh as f32];
    match mapping.fit {
        FitMode::Stretch => resampler.resize(src, (sw, sh), full, (dw, dh), out),
        FitMode::Crop => {
            let (l, t, w, h) = crop_box(f64::from(sw), f64::from(sh), f64::from(dw), f64::from(dh));
            let area = [l as f32, t as f32, (l + w) as f32, (t + h) as f32];
            resampler.resize(src, (sw, sh), area, (dw, dh), out);
        }
        FitMode::Letterbox => {
            for px in out.chunks_exact_mut(3) {
                px.copy_from_slice(&pad);
            }
            let (content, (x, y, w, _)) =
                letterbox_content(resampler, src, (sw, sh), (dw, dh), content);
            let row = w as usize * 3;
            for (r, line) in content.chunks_exact(row).enumerate() {
                let d = ((y as usize + r) * dw as usize + x as usize) * 3;
                out[d..d + row].copy_from_slice(line);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mappings_round_trip_corners() {
        // Catches detection boxes placed with the wrong scale/offset for a fit mode.
        let m = Mapping::new(FitMode::Stretch, 640, 480, 300, 300);
        assert_eq!(m.to_source(300.0, 300.0), (640.0, 480.0));
        let c = Mapping::new(FitMode::Crop, 640, 480, 300, 300);
        assert_eq!(c.to_source(0.0, 0.0), (80.0, 0.0));
        assert_eq!(c.to_source(300.0, 300.0), (560.0, 480.0));
        let l = Mapping::new(FitMode::Letterbox, 640, 480, 300, 300);
        // content 300x225 at y = 37
        let (x0, y0) = l.to_source(0.0, 37.0);
        assert!((x0 - 0.0).abs() < 1e-9 && (y0 - 0.0).abs() < 1e-9);
        let (x1, y1) = l.to_source(300.0, 262.0);
        assert!((x1 - 640.0).abs() < 1e-6 && (y1 - 480.0).abs() < 1e-6);
        // A box covering the whole letterboxed input clips to the image.
        assert_eq!(
            l.norm_box_to_source(0.0, 0.0, 1.0, 1.0),
            Some((0.0, 0.0, 640.0, 480.0))
        );
        assert_eq!(l.norm_box_to_source(0.0, 0.0, 0.1, 1.0), None); // entirely in the padding
    }

    /// A box as `(x, y, width, height)`.
    type Rect = (f32, f32, f32, f32);

    fn close(a: Option<Rect>, b: Rect) -> bool {
        a.is_some_and(|a| {
            [(a.0, b.0), (a.1, b.1), (a.2, b.2), (a.3, b.3)]
                .iter()
                .all(|(x, y)| (x - y).abs() < 1e-3)
        })
    }

    // Would catch letterboxed detection boxes placed with the padding offset
    // on the wrong axis (portrait frames pad left/right, landscape ones
    // top/bottom), scaled by the input size instead of the content size (a
    // non-square input), or not clipped where they reach into the padding.
    // Expected values are worked by hand: scale = min(dw/sw, dh/sh), content
    // centred.
    #[test]
    fn letterbox_boxes_land_on_the_source_pixels() {
        // ([source w, h, input w, h], box in input pixels x0 y0 x1 y1, box
        // in source pixels x y w h).
        let cases: &[([u32; 4], [f64; 4], Rect)] = &[
            // 1280x720 -> 640x640: x0.5, content 640x360 at y = 140.
            (
                [1280, 720, 640, 640],
                [50.0, 240.0, 150.0, 340.0],
                (100.0, 200.0, 200.0, 200.0),
            ),
            // 720x1280 -> 640x640: x0.5, content 360x640 at x = 140.
            (
                [720, 1280, 640, 640],
                [190.0, 100.0, 290.0, 200.0],
                (100.0, 200.0, 200.0, 200.0),
            ),
            // 1280x720 -> 640x384 (w x h): x0.5, content 640x360 at y = 12.
            (
                [1280, 720, 640, 384],
                [50.0, 112.0, 150.0, 212.0],
                (100.0, 200.0, 200.0, 200.0),
            ),
            // 720x1280 -> 640x384: x0.3, content 216x384 at x = 212.
            (
                [720, 1280, 640, 384],
                [242.0, 60.0, 302.0, 120.0],
                (100.0, 200.0, 200.0, 200.0),
            ),
            // Partly in the top padding: clipped at the image's top edge.
            (
                [1280, 720, 640, 640],
                [10.0, 100.0, 200.0, 200.0],
                (20.0, 0.0, 380.0, 120.0),
            ),
            // Past the bottom-right corner (and corners given swapped).
            (
                [1280, 720, 640, 640],
                [660.0, 520.0, 600.0, 450.0],
                (1200.0, 620.0, 80.0, 100.0),
            ),
            // Partly in the left padding of a portrait frame.
            (
                [720, 1280, 640, 640],
                [100.0, 0.0, 200.0, 640.0],
                (0.0, 0.0, 120.0, 1280.0),
            ),
            // Partly in the right padding of a portrait frame into a non-square input.
            (
                [720, 1280, 640, 384],
                [398.0, 0.0, 500.0, 384.0],
                (620.0, 0.0, 100.0, 1280.0),
            ),
        ];
        for &([sw, sh, dw, dh], [x0, y0, x1, y1], want) in cases {
            let m = Mapping::new(FitMode::Letterbox, sw, sh, dw, dh);
            let got = m.input_box_to_source(x0, y0, x1, y1);
            assert!(
                close(got, want),
                "{sw}x{sh} -> {dw}x{dh} {:?}: {got:?}, want {want:?}",
                [x0, y0, x1, y1]
            );
            // The same box in normalized coordinates (ymin, xmin, ymax, xmax).
            let (fw, fh) = (f64::from(dw), f64::from(dh));
            let n = m.norm_box_to_source(
                (y0 / fh) as f32,
                (x0 / fw) as f32,
                (y1 / fh) as f32,
                (x1 / fw) as f32,
            );
            assert!(
                close(n, want),
                "normalized {sw}x{sh} -> {dw}x{dh}: {n:?}, want {want:?}"
            );
        }
        // Entirely in the padding (above the content; left of it): nothing.
        let l = Mapping::new(FitMode::Letterbox, 1280, 720, 640, 640);
        assert_eq!(l.input_box_to_source(0.0, 0.0, 640.0, 139.0), None);
        let p = Mapping::new(FitMode::Letterbox, 720, 1280, 640, 384);
        assert_eq!(p.input_box_to_source(0.0, 0.0, 211.0, 384.0), None);
        assert_eq!(p.input_box_to_source(f64::NAN, 0.0, 300.0, 300.0), None);
        // The content's corners are the image's corners.
        assert!(close(
            p.input_box_to_source(212.0, 0.0, 428.0, 384.0),
            (0.0, 0.0, 720.0, 1280.0)
        ));
    }

    #[test]
    fn jpeg_scale_denominator_table() {
        // Catches scaling that upscales afterwards (a factor one step too far),
        // that ignores the fit mode, or that never scales a large frame.
        use FitMode::{Crop, Letterbox, Stretch};
        let cases: &[(u32, u32, u32, u32, FitMode, u32)] = &[
            (640, 480, 224, 224, Stretch, 2), // 320x240 covers 224; 160x120 would not
            (1280, 720, 224, 224, Stretch, 2), // 1/4 gives 180 rows < 224
            (1280, 720, 128, 128, Stretch, 4), // 320x180; 1/8 gives 90 rows
            (640, 480, 300, 300, Stretch, 1), // 1/2 gives 240 rows < 300
            (1920, 1080, 300, 300, Stretch, 2), // 1/4 gives 270 rows
            (4000, 3000, 224, 224, Stretch, 8), // 500x375
            (448, 448, 224, 224, Stretch, 2), // exactly twice
            (447, 447, 224, 224, Stretch, 2), // rounded up to 224, as libjpeg does
            (446, 448, 224, 224, Stretch, 1), // 223 columns would need upscaling
            (100, 100, 224, 224, Stretch, 1), // smaller than the input
            (640, 480, 320, 240, Stretch, 2), // non-square input
            (1280, 720, 224, 224, Crop, 2),   // the 720x720 centre needs 1/2 at most
            (1280, 720, 224, 224, Letterbox, 4), // content is only 224x126
            (0, 480, 224, 224, Stretch, 1),
            (640, 480, 0, 224, Stretch, 1),
        ];
        for &(sw, sh, dw, dh, fit, want) in cases {
            let got = jpeg_scale_denom(sw, sh, dw, dh, fit);
            assert_eq!(got, want, "{sw}x{sh} -> {dw}x{dh} {fit:?}");
        }
    }

    #[test]
    fn mapping_of_a_scaled_decode_reaches_the_full_frame() {
        // Catches detection boxes placed on the half-size decode instead of the frame.
        for fit in [FitMode::Stretch, FitMode::Crop, FitMode::Letterbox] {
            let full = Mapping::new(fit, 1280, 720, 300, 300);
            let scaled = Mapping::new(fit, 640, 360, 300, 300).with_source_size(1280, 720);
            assert_eq!((scaled.src_width, scaled.src_height), (1280, 720));
            for (x, y) in [(0.0, 0.0), (150.0, 150.0), (300.0, 300.0)] {
                let (a, b) = (full.to_source(x, y), scaled.to_source(x, y));
                assert!(
                    (a.0 - b.0).abs() < 1e-6 && (a.1 - b.1).abs() < 1e-6,
                    "{fit:?} ({x}, {y}): {a:?} vs {b:?}"
                );
            }
        }
    }
}
