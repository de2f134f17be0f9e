//! Small luma images for motion detection (issue 18): one byte of
//! brightness per 8×8 block of a frame, whatever its pixel format, as cheap
//! as the format allows, so a frame the motion gate skips costs next to
//! nothing.
//!
//! This module owns [`LumaSampler`] and the sampling rule:
//! - **JPEG**: libjpeg-turbo decodes at 1/8 scale straight to greyscale:
//!   only the luma's DC coefficients are turned into pixels (no colour
//!   conversion, no chroma IDCT); each pixel is its 8×8 block's mean. A
//!   lossless JPEG (no DCT) or a CMYK/YCCK one is decoded at full size and
//!   sampled as a raw frame;
//! - **YUYV, I420, NV12**: the luma plane, read in place;
//! - **RGB8** and PNG/BMP (decoded to RGB first; a file source's rare case,
//!   it costs a full decode): the ITU-R 601 luma of the sampled pixels,
//!   Pillow's weights as in pre-processing.
//!
//! Raw formats are sampled, not averaged: each output pixel is the mean of
//! four pixels of its block, at offsets 2 and 6 on each axis (clamped to the
//! frame at its right and bottom edges), which halves sensor noise for four
//! reads instead of sixty-four. The image is `ceil(w/8)`×`ceil(h/8)`, as the
//! JPEG's 1/8 scale.

use super::decode::{check_budget, decode_rgb, DecodeError, JpegDecoder};
use crate::core::frame::{Frame, PixelFormat};

/// The scale of the luma image: one pixel per `SCALE`×`SCALE` block.
pub(crate) const SCALE: u32 = 8;
/// The offsets in a block of the pixels sampled on each axis.
const TAPS: [u32; 2] = [2, 6];

/// Why a frame gave no luma image.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LumaError {
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("{format:?} frame {width}x{height} with stride {stride}: {len} bytes, need {need} and a stride of at least {row}")]
    Geometry {
        format: PixelFormat,
        width: u32,
        height: u32,
        stride: u32,
        len: usize,
        need: u64,
        row: u64,
    },
}

/// Reusable buffers and a JPEG decompressor (created on the first JPEG).
#[derive(Default)]
pub(crate) struct LumaSampler {
    jpeg: JpegDecoder,
    /// A full-size decode when the JPEG could not be scaled to grey.
    scratch: Vec<u8>,
}

impl std::fmt::Debug for LumaSampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LumaSampler").finish_non_exhaustive()
    }
}

impl LumaSampler {
    /// Write the luma image of `frame` into `out` (rows of `w` bytes) and
    /// return its size (`w`, `h`). `max_pixels` bounds a decode as in
    /// pre-processing.
    pub(crate) fn sample(
        &mut self,
        frame: &Frame,
        max_pixels: u64,
        out: &mut Vec<u8>,
    ) -> Result<(u32, u32), LumaError> {
        let (w, h, stride) = (frame.width, frame.height, frame.stride);
        match frame.format {
            PixelFormat::Encoded => {
                let jpeg =
                    super::decode::sniff(&frame.data) == Some(super::decode::ImageKind::Jpeg);
                if jpeg {
                    let scaled = self.jpeg.decode_gray_scaled(
                        &frame.data,
                        max_pixels,
                        &mut self.scratch,
                        |_, _| SCALE,
                    )?;
                    if let Some(d) = scaled {
                        if d.denom == SCALE {
                            out.clear();
                            out.extend_from_slice(&self.scratch);
                            return Ok((d.width, d.height));
                        }
                        // Lossless: full-size grey.
                        return sample_raw(
                            (PixelFormat::Encoded, Layout::Gray),
                            &self.scratch,
                            d.width,
                            d.height,
                            d.width,
                            out,
                        );
                    }
                }
                let (fw, fh) = decode_rgb(&frame.data, max_pixels, &mut self.scratch)?;
                sample_raw(
                    (PixelFormat::Encoded, Layout::Rgb),
                    &self.scratch,
                    fw,
                    fh,
                    fw * 3,
                    out,
                )
            }
            PixelFormat::Yuyv => {
                check_budget(w, h, max_pixels)?;
                sample_raw((frame.format, Layout::Yuyv), &frame.data, w, h, stride, out)
            }
            PixelFormat::I420 | PixelFormat::Nv12 => {
                check_budget(w, h, max_pixels)?;
                sample_raw((frame.format, Layout::Gray), &frame.data, w, h, stride, out)
            }
            PixelFormat::Rgb8 => {
                check_budget(w, h, max_pixels)?;
                sample_raw((frame.format, Layout::Rgb), &frame.data, w, h, stride, out)
            }
        }
    }
}

/// Where a pixel's luma is in a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// One byte per pixel (a grey image, the Y plane of I420/NV12).
    Gray,
    /// Y0 U Y1 V: the luma of pixel x at byte 2x.
    Yuyv,
    /// R G B: luma computed from the three.
    Rgb,
}

impl Layout {
    fn bytes_per_pixel(self) -> u64 {
        match self {
            Layout::Gray => 1,
            Layout::Yuyv => 2,
            Layout::Rgb => 3,
        }
    }
}

/// The sampled luma image of a `w`×`h` raw image with rows of `stride` bytes.
fn sample_raw(
    (format, layout): (PixelFormat, Layout),
    data: &[u8],
    w: u32,
    h: u32,
    stride: u32,
    out: &mut Vec<u8>,
) -> Result<(u32, u32), LumaError> {
    let row = u64::from(w) * layout.bytes_per_pixel();
    let need = u64::from(stride) * u64::from(h.saturating_sub(1)) + row;
    if w == 0 || h == 0 || u64::from(stride) < row || (data.len() as u64) < need {
        return Err(LumaError::Geometry {
            format,
            width: w,
            height: h,
            stride,
            len: data.len(),
            need,
            row,
        });
    }
    let (ow, oh) = (w.div_ceil(SCALE), h.div_ceil(SCALE));
    let stride = stride as usize;
    // The columns sampled in every block, as byte offsets in a row: the same
    // for each row, computed once.
    let cols: Vec<[usize; 2]> = (0..ow)
        .map(|bx| TAPS.map(|t| (bx * SCALE + t).min(w - 1) as usize))
        .collect();
    out.clear();
    out.reserve(ow as usize * oh as usize);
    for by in 0..oh {
        let rows = TAPS.map(|t| &data[(by * SCALE + t).min(h - 1) as usize * stride..]);
        for c in &cols {
            let mut sum = 0u32;
            for r in rows {
                for &x in c {
                    sum += u32::from(match layout {
                        Layout::Gray => r[x],
                        Layout::Yuyv => r[2 * x],
                        Layout::Rgb => luma601(r[3 * x], r[3 * x + 1], r[3 * x + 2]),
                    });
                }
            }
            out.push(((sum + 2) / 4) as u8);
        }
    }
    Ok((ow, oh))
}

/// ITU-R 601 luma with Pillow's fixed-point weights (`convert("L")`).
fn luma601(r: u8, g: u8, b: u8) -> u8 {
    ((u32::from(r) * 19595 + u32::from(g) * 38470 + u32::from(b) * 7471 + 0x8000) >> 16) as u8
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    /// A smooth, textured test picture: (R, G, B) at (x, y).
    fn rgb_at(x: u32, y: u32) -> [u8; 3] {
        [
            (x * 255 / 100).min(255) as u8,
            ((x + 2 * y) % 256) as u8,
            (y * 3 % 256) as u8,
        ]
    }

    /// The reference: each output pixel the mean of the four tap pixels'
    /// luma (per the rule in the module doc), written plainly, pixel by pixel.
    fn reference(w: u32, h: u32, luma: impl Fn(u32, u32) -> u8) -> Vec<u8> {
        let mut out = Vec::new();
        for by in 0..h.div_ceil(8) {
            for bx in 0..w.div_ceil(8) {
                let mut s = 0u32;
                for ty in [2, 6] {
                    for tx in [2, 6] {
                        let (x, y) = ((bx * 8 + tx).min(w - 1), (by * 8 + ty).min(h - 1));
                        s += u32::from(luma(x, y));
                    }
                }
                out.push(((s + 2) / 4) as u8);
            }
        }
        out
    }

    fn raw(format: PixelFormat, data: Vec<u8>, w: u32, h: u32, stride: u32) -> Frame {
        Frame {
            data,
            format,
            width: w,
            height: h,
            stride,
            ..Frame::encoded(Vec::new(), 0, "test".into())
        }
    }

    fn y_at(x: u32, y: u32) -> u8 {
        let [r, g, b] = rgb_at(x, y);
        luma601(r, g, b)
    }

    // Would catch a raw format's luma read from the wrong bytes (a chroma
    // byte of YUYV, the padding of a stride, the chroma plane of I420/NV12),
    // the edge blocks of a size not divisible by 8 read out of bounds, or
    // RGB converted with the wrong weights: each format's luma image equals
    // the plain reference.
    #[test]
    fn raw_formats_match_the_reference_subsample() {
        let (w, h) = (100u32, 61u32);
        let want = reference(w, h, y_at);
        assert_eq!(want.len(), 13 * 8);
        let mut s = LumaSampler::default();
        let mut out = Vec::new();
        // RGB8 with 5 bytes of row padding.
        let stride = w * 3 + 5;
        let mut rgb = vec![0xEE; (stride * h) as usize];
        for y in 0..h {
            for x in 0..w {
                let o = (y * stride + 3 * x) as usize;
                rgb[o..o + 3].copy_from_slice(&rgb_at(x, y));
            }
        }
        let f = raw(PixelFormat::Rgb8, rgb, w, h, stride);
        assert_eq!(s.sample(&f, u64::MAX, &mut out).unwrap(), (13, 8));
        assert_eq!(out, want, "rgb8");
        // YUYV: Y at even bytes, chroma 0xAA at odd ones, 4 bytes padding.
        let stride = w * 2 + 4;
        let mut yuyv = vec![0x55; (stride * h) as usize];
        for y in 0..h {
            for x in 0..w {
                let o = (y * stride + 2 * x) as usize;
                yuyv[o] = y_at(x, y);
                yuyv[o + 1] = 0xAA;
            }
        }
        let f = raw(PixelFormat::Yuyv, yuyv, w, h, stride);
        assert_eq!(s.sample(&f, u64::MAX, &mut out).unwrap(), (13, 8));
        assert_eq!(out, want, "yuyv");
        // I420 and NV12: a Y plane with 3 bytes padding, then chroma.
        for format in [PixelFormat::I420, PixelFormat::Nv12] {
            let stride = w + 3;
            let mut yuv = vec![0xAA; (stride * h + stride * h.div_ceil(2)) as usize];
            for y in 0..h {
                for x in 0..w {
                    yuv[(y * stride + x) as usize] = y_at(x, y);
                }
            }
            let f = raw(format, yuv, w, h, stride);
            assert_eq!(s.sample(&f, u64::MAX, &mut out).unwrap(), (13, 8));
            assert_eq!(out, want, "{format:?}");
        }
        // A frame shorter than its geometry is refused, not read past.
        let f = raw(PixelFormat::Yuyv, vec![0; 100], w, h, w * 2);
        let e = s.sample(&f, u64::MAX, &mut out).unwrap_err().to_string();
        assert!(e.contains("Yuyv") && e.contains("need"), "{e}");
    }

    // Would catch the JPEG path decoding at another scale or in colour (the
    // image would be 8× too large, or 3 bytes a pixel), or its pixels not
    // being the blocks' brightness: each 1/8-scale pixel is within a few
    // levels of the mean luma of its 8×8 block of the full-size decode, and
    // a PNG of the same picture gives the reference subsample.
    #[test]
    fn jpeg_is_decoded_at_one_eighth_in_grey_and_png_is_sampled() {
        let (w, h) = (160u32, 120u32);
        let img = ::image::RgbImage::from_fn(w, h, |x, y| ::image::Rgb(rgb_at(x, y)));
        let mut jpeg = Vec::new();
        ::image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 95)
            .encode_image(&img)
            .unwrap();
        let mut s = LumaSampler::default();
        let mut out = Vec::new();
        let f = Frame::encoded(jpeg.clone(), 0, "t".into());
        assert_eq!(s.sample(&f, u64::MAX, &mut out).unwrap(), (20, 15));
        assert_eq!(out.len(), 20 * 15);
        // The full-size decode's block means.
        let mut full = Vec::new();
        let (fw, _) = decode_rgb(&jpeg, u64::MAX, &mut full).unwrap();
        for by in 0..15u32 {
            for bx in 0..20u32 {
                let mut sum = 0u32;
                for y in by * 8..by * 8 + 8 {
                    for x in bx * 8..bx * 8 + 8 {
                        let o = ((y * fw + x) * 3) as usize;
                        sum += u32::from(luma601(full[o], full[o + 1], full[o + 2]));
                    }
                }
                let mean = (sum + 32) / 64;
                let got = u32::from(out[(by * 20 + bx) as usize]);
                assert!(
                    got.abs_diff(mean) <= 3,
                    "block ({bx}, {by}): {got} vs mean {mean}"
                );
            }
        }
        // The budget is checked before decoding.
        assert!(s.sample(&f, 100, &mut out).is_err());
        let mut png = Vec::new();
        img.write_to(&mut Cursor::new(&mut png), ::image::ImageFormat::Png)
            .unwrap();
        let f = Frame::encoded(png, 0, "t".into());
        assert_eq!(s.sample(&f, u64::MAX, &mut out).unwrap(), (20, 15));
        assert_eq!(out, reference(w, h, y_at));
    }
}
