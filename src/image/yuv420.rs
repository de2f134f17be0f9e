//! YUV 4:2:0 (I420 and NV12) → packed RGB8 conversion.
//!
//! This module owns the geometry and colour conversion of the raw frames
//! that `rpicam-vid --codec yuv420` and `ffmpeg -pix_fmt yuv420p|nv12 -f
//! rawvideo` write: a full-resolution luma plane, then chroma at half
//! resolution on both axes, planar (I420: a U plane, then a V plane) or
//! interleaved (NV12: one plane of U/V pairs). The plane layout is
//! [`PixelFormat`]'s (`I420`, `Nv12`). Each chroma sample covers a 2×2
//! block of pixels and is used as is (no chroma interpolation), the
//! conversion libcamera's and V4L2's consumers apply; the colour math is
//! BT.601 limited range, shared with [`super::yuyv`]. Every length is
//! checked up front, so a short or malformed frame is an error, not a panic.

use crate::core::frame::PixelFormat;

use super::yuyv::{chroma, pixel};

/// Errors from a YUV 4:2:0 conversion: the geometry or a buffer length is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Yuv420Error {
    #[error("{format}: empty image {width}x{height}")]
    Empty {
        format: &'static str,
        width: u32,
        height: u32,
    },
    #[error("{format}: stride {stride} is smaller than the width {width}")]
    StrideTooSmall {
        format: &'static str,
        stride: u32,
        width: u32,
    },
    #[error("{format}: frame holds {len} bytes, a {width}x{height} frame with stride {stride} needs {need}")]
    SourceTooShort {
        format: &'static str,
        len: usize,
        need: u64,
        width: u32,
        height: u32,
        stride: u32,
    },
    #[error("{format}: destination holds {len} bytes, {width}x{height} RGB8 needs exactly {need}")]
    DestinationSize {
        format: &'static str,
        len: usize,
        need: u64,
        width: u32,
        height: u32,
    },
    #[error("{format:?} is not a YUV 4:2:0 format")]
    NotYuv420 { format: PixelFormat },
}

/// Where the planes of a checked YUV 4:2:0 frame are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Yuv420 {
    interleaved: bool,
    width: usize,
    stride: usize,
    /// Offset of the U plane (I420) or the U/V plane (NV12).
    chroma: usize,
    /// Bytes per chroma row (per plane for I420).
    chroma_stride: usize,
    /// Offset of the V plane (I420 only).
    v: usize,
}

impl Yuv420 {
    /// Check that `src_len` bytes hold a `width`×`height` frame of `format`
    /// with luma rows of `stride` bytes (layout: [`PixelFormat`]).
    pub(crate) fn check(
        format: PixelFormat,
        src_len: usize,
        width: u32,
        height: u32,
        stride: u32,
    ) -> Result<Yuv420, Yuv420Error> {
        let (name, interleaved) = match format {
            PixelFormat::I420 => ("I420", false),
            PixelFormat::Nv12 => ("NV12", true),
            other => return Err(Yuv420Error::NotYuv420 { format: other }),
        };
        if width == 0 || height == 0 {
            return Err(Yuv420Error::Empty {
                format: name,
                width,
                height,
            });
        }
        if stride < width {
            return Err(Yuv420Error::StrideTooSmall {
                format: name,
                stride,
                width,
            });
        }
        // u64 products: a huge size cannot wrap.
        let (s, h) = (u64::from(stride), u64::from(height));
        let chroma_stride = if interleaved {
            s.div_ceil(2) * 2
        } else {
            s.div_ceil(2)
        };
        let planes = if interleaved { 1 } else { 2 };
        let need = s * h + planes * chroma_stride * h.div_ceil(2);
        if (src_len as u64) < need {
            return Err(Yuv420Error::SourceTooShort {
                format: name,
                len: src_len,
                need,
                width,
                height,
                stride,
            });
        }
        // Within `src_len`, so these fit in usize.
        let chroma = (s * h) as usize;
        let chroma_stride = chroma_stride as usize;
        Ok(Yuv420 {
            interleaved,
            width: width as usize,
            stride: stride as usize,
            chroma,
            chroma_stride,
            v: chroma + chroma_stride * (height as usize).div_ceil(2),
        })
    }

    /// Convert luma row `y` of `src` (the frame [`check`](Self::check) was
    /// given) into `dst`, `width * 3` bytes of RGB8.
    pub(crate) fn row_to_rgb(&self, src: &[u8], y: usize, dst: &mut [u8]) {
        let w = self.width;
        let luma = &src[y * self.stride..y * self.stride + w];
        let c = self.chroma + (y / 2) * self.chroma_stride;
        let dst = &mut dst[..w * 3];
        if self.interleaved {
            let uv = &src[c..c + w.div_ceil(2) * 2];
            for ((l, rgb), uv) in luma
                .chunks(2)
                .zip(dst.chunks_mut(6))
                .zip(uv.chunks_exact(2))
            {
                let k = chroma(uv[0], uv[1]);
                for (&l, px) in l.iter().zip(rgb.chunks_exact_mut(3)) {
                    pixel(l, k, px);
                }
            }
        } else {
            let half = w.div_ceil(2);
            let v0 = self.v + (y / 2) * self.chroma_stride;
            let (u, v) = (&src[c..c + half], &src[v0..v0 + half]);
            for (((l, rgb), &u), &v) in luma.chunks(2).zip(dst.chunks_mut(6)).zip(u).zip(v) {
                let k = chroma(u, v);
                for (&l, px) in l.iter().zip(rgb.chunks_exact_mut(3)) {
                    pixel(l, k, px);
                }
            }
        }
    }
}

/// Convert a YUV 4:2:0 frame into packed RGB8 `dst` (exactly
/// `width * height * 3` bytes).
pub(crate) fn yuv420_to_rgb(
    format: PixelFormat,
    src: &[u8],
    width: u32,
    height: u32,
    stride: u32,
    dst: &mut [u8],
) -> Result<(), Yuv420Error> {
    let frame = Yuv420::check(format, src.len(), width, height, stride)?;
    let need = u64::from(width) * u64::from(height) * 3;
    if dst.len() as u64 != need {
        return Err(Yuv420Error::DestinationSize {
            format: if frame.interleaved { "NV12" } else { "I420" },
            len: dst.len(),
            need,
            width,
            height,
        });
    }
    for (y, row) in dst.chunks_exact_mut(width as usize * 3).enumerate() {
        frame.row_to_rgb(src, y, row);
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Reference BT.601 limited-range encoder and decoder in floating point,
    /// independent of the fixed-point coefficients.
    pub(crate) fn encode(p: [u8; 3]) -> [f64; 3] {
        let [r, g, b] = p.map(f64::from);
        [
            16.0 + (65.481 * r + 128.553 * g + 24.966 * b) / 255.0,
            128.0 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255.0,
            128.0 + (112.0 * r - 93.786 * g - 18.214 * b) / 255.0,
        ]
    }

    pub(crate) fn decode(y: u8, u: u8, v: u8) -> [u8; 3] {
        let (y, u, v) = (
            (f64::from(y) - 16.0) * 255.0 / 219.0,
            (f64::from(u) - 128.0) * 255.0 / 224.0,
            (f64::from(v) - 128.0) * 255.0 / 224.0,
        );
        [
            y + 1.402 * v,
            y - 0.344_136 * u - 0.714_136 * v,
            y + 1.772 * u,
        ]
        .map(|c| c.round().clamp(0.0, 255.0) as u8)
    }

    /// Encode packed RGB `w`×`h` as a YUV 4:2:0 frame of `format` with luma
    /// rows of `stride` bytes (padding filled with garbage); chroma is the
    /// mean over each 2×2 block (clipped at odd edges).
    pub(crate) fn frame_from_rgb(
        format: PixelFormat,
        rgb: &[u8],
        w: usize,
        h: usize,
        stride: usize,
    ) -> Vec<u8> {
        let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
        let mut luma = vec![0xA5u8; stride * h];
        let mut u = vec![0u8; cw * ch];
        let mut v = vec![0u8; cw * ch];
        for y in 0..h {
            for x in 0..w {
                let e = encode([0, 1, 2].map(|c| rgb[(y * w + x) * 3 + c]));
                luma[y * stride + x] = e[0].round() as u8;
            }
        }
        for cy in 0..ch {
            for cx in 0..cw {
                let mut acc = [0.0; 3];
                let mut n = 0.0;
                for y in 2 * cy..(2 * cy + 2).min(h) {
                    for x in 2 * cx..(2 * cx + 2).min(w) {
                        let e = encode([0, 1, 2].map(|c| rgb[(y * w + x) * 3 + c]));
                        acc = [acc[0] + e[0], acc[1] + e[1], acc[2] + e[2]];
                        n += 1.0;
                    }
                }
                u[cy * cw + cx] = (acc[1] / n).round() as u8;
                v[cy * cw + cx] = (acc[2] / n).round() as u8;
            }
        }
        let mut out = luma;
        match format {
            PixelFormat::I420 => {
                let cs = stride.div_ceil(2);
                for plane in [&u, &v] {
                    for row in plane.chunks_exact(cw) {
                        out.extend_from_slice(row);
                        out.extend(std::iter::repeat_n(0x5A, cs - cw));
                    }
                }
            }
            PixelFormat::Nv12 => {
                for (ru, rv) in u.chunks_exact(cw).zip(v.chunks_exact(cw)) {
                    for (a, b) in ru.iter().zip(rv) {
                        out.extend_from_slice(&[*a, *b]);
                    }
                    out.extend(std::iter::repeat_n(0x5A, stride.div_ceil(2) * 2 - 2 * cw));
                }
            }
            other => panic!("{other:?}"),
        }
        out
    }

    /// The reference conversion of a YUV 4:2:0 frame: for every pixel, its
    /// luma and its 2×2 block's chroma through the floating-point decoder.
    pub(crate) fn reference_rgb(
        format: PixelFormat,
        src: &[u8],
        w: usize,
        h: usize,
        stride: usize,
    ) -> Vec<u8> {
        let ch = h.div_ceil(2);
        let base = stride * h;
        let mut out = Vec::with_capacity(w * h * 3);
        for y in 0..h {
            for x in 0..w {
                let (cx, cy) = (x / 2, y / 2);
                let (u, v) = match format {
                    PixelFormat::I420 => {
                        let cs = stride.div_ceil(2);
                        (src[base + cy * cs + cx], src[base + cs * ch + cy * cs + cx])
                    }
                    _ => {
                        let cs = stride.div_ceil(2) * 2;
                        (
                            src[base + cy * cs + 2 * cx],
                            src[base + cy * cs + 2 * cx + 1],
                        )
                    }
                };
                out.extend_from_slice(&decode(src[y * stride + x], u, v));
            }
        }
        out
    }

    fn photo_like(w: usize, h: usize) -> Vec<u8> {
        // Smooth gradients with sharp edges and saturated corners.
        (0..w * h)
            .flat_map(|i| {
                let (x, y) = (i % w, i / w);
                [
                    (x * 255 / w.max(1)) as u8,
                    (y * 255 / h.max(1)) as u8,
                    if (x / 3 + y / 2) % 2 == 0 { 250 } else { 5 },
                ]
            })
            .collect()
    }

    // Would catch swapped U/V planes, a wrong chroma row (y instead of y/2),
    // NV12 pairs read in the wrong order, strides ignored, or the odd last
    // column/row reading past its chroma: Spotter's conversion agrees with
    // the floating-point reference conversion of the same frame within one
    // level, for both formats, odd and even sizes, with row padding.
    #[test]
    fn matches_the_reference_conversion() {
        for format in [PixelFormat::I420, PixelFormat::Nv12] {
            for &(w, h, pad) in &[(16, 8, 0), (17, 9, 6), (1, 1, 0), (33, 2, 3)] {
                let stride = w + pad;
                let frame = frame_from_rgb(format, &photo_like(w, h), w, h, stride);
                assert_eq!(
                    Some(frame.len()),
                    format.raw_len(stride as u32, h as u32),
                    "{format:?} {w}x{h}"
                );
                let mut ours = vec![0; w * h * 3];
                yuv420_to_rgb(format, &frame, w as u32, h as u32, stride as u32, &mut ours)
                    .unwrap();
                let reference = reference_rgb(format, &frame, w, h, stride);
                let worst = ours
                    .iter()
                    .zip(&reference)
                    .map(|(a, b)| a.abs_diff(*b))
                    .max()
                    .unwrap();
                assert!(worst <= 1, "{format:?} {w}x{h}+{pad}: off by {worst}");
            }
        }
    }

    // Would catch a conversion that is not the inverse of the encoder used by
    // cameras (BT.601 limited range): flat colours survive the round trip
    // within the rounding of 8-bit YUV.
    #[test]
    fn flat_colours_round_trip() {
        for colour in [
            [0u8, 0, 0],
            [255, 255, 255],
            [255, 0, 0],
            [0, 128, 255],
            [90, 200, 30],
        ] {
            let rgb = colour.repeat(4 * 4);
            for format in [PixelFormat::I420, PixelFormat::Nv12] {
                let frame = frame_from_rgb(format, &rgb, 4, 4, 4);
                let mut out = vec![0; 4 * 4 * 3];
                yuv420_to_rgb(format, &frame, 4, 4, 4, &mut out).unwrap();
                for px in out.chunks_exact(3) {
                    for c in 0..3 {
                        assert!(
                            px[c].abs_diff(colour[c]) <= 3,
                            "{format:?} {colour:?} -> {px:?}"
                        );
                    }
                }
            }
        }
    }

    // Would catch missing validation: a short frame, a stride below the width
    // or a wrong destination is an error naming the format, never a panic.
    #[test]
    fn rejects_bad_geometry() {
        let src = vec![128u8; 4 * 4 + 2 * 2 * 2];
        let mut dst = vec![0u8; 4 * 4 * 3];
        assert!(yuv420_to_rgb(PixelFormat::I420, &src, 4, 4, 4, &mut dst).is_ok());
        let err = yuv420_to_rgb(PixelFormat::I420, &src[..23], 4, 4, 4, &mut dst).unwrap_err();
        assert!(
            matches!(err, Yuv420Error::SourceTooShort { need: 24, .. }),
            "{err}"
        );
        assert!(err.to_string().starts_with("I420: "), "{err}");
        assert!(matches!(
            yuv420_to_rgb(PixelFormat::Nv12, &src, 4, 4, 3, &mut dst),
            Err(Yuv420Error::StrideTooSmall { .. })
        ));
        assert!(matches!(
            yuv420_to_rgb(PixelFormat::Nv12, &src, 4, 4, 4, &mut dst[1..]),
            Err(Yuv420Error::DestinationSize { .. })
        ));
        assert!(matches!(
            yuv420_to_rgb(PixelFormat::Nv12, &src, 0, 4, 4, &mut dst),
            Err(Yuv420Error::Empty { .. })
        ));
        assert!(matches!(
            yuv420_to_rgb(PixelFormat::Yuyv, &src, 4, 4, 8, &mut dst),
            Err(Yuv420Error::NotYuv420 { .. })
        ));
    }

    // Golden on real photos (every JPEG/PNG/BMP in the test data, odd sizes
    // included): each photo encoded as an I420 and an NV12 frame, Spotter's
    // conversion within one level of the floating-point reference conversion
    // of the same frame. Would catch a fixed-point coefficient or a chroma
    // placement that only shows on natural images.
    #[test]
    fn photos_match_the_reference_conversion() {
        let dir = crate::core::testdata().join("images");
        let mut photos: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                matches!(
                    p.extension().and_then(|e| e.to_str()),
                    Some("jpg" | "png" | "bmp")
                )
            })
            .collect();
        photos.sort();
        assert!(!photos.is_empty(), "no photos in {}", dir.display());
        for photo in &photos {
            let img = image::open(photo).unwrap().to_rgb8();
            let (w, h) = (img.width() as usize, img.height() as usize);
            for format in [PixelFormat::I420, PixelFormat::Nv12] {
                let stride = w + 5;
                let frame = frame_from_rgb(format, img.as_raw(), w, h, stride);
                let mut ours = vec![0; w * h * 3];
                yuv420_to_rgb(format, &frame, w as u32, h as u32, stride as u32, &mut ours)
                    .unwrap();
                let reference = reference_rgb(format, &frame, w, h, stride);
                let off = ours
                    .iter()
                    .zip(&reference)
                    .filter(|(a, b)| a.abs_diff(**b) > 1)
                    .count();
                assert_eq!(
                    off,
                    0,
                    "{} {format:?}: {off} values off by more than 1",
                    photo.display()
                );
            }
        }
    }
}
