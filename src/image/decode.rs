//! Encoded images: recognising them by their magic bytes and decoding them
//! into packed RGB8, whatever model the pixels are for.
//!
//! This module owns:
//! - [`sniff`]: JPEG, PNG or BMP by magic bytes (an upload or a frame of
//!   another kind is refused before any decoder sees it);
//! - `check_budget`: the pixel budget, checked against the header before
//!   any pixel is decoded (decompression bombs);
//! - [`decode_rgb`]: a full-size decode with the `image` crate (PNG, BMP,
//!   and the CMYK/YCCK JPEGs libjpeg-turbo cannot turn into RGB);
//! - `JpegDecoder`: libjpeg-turbo (the `turbojpeg` crate) for every other
//!   JPEG (into RGB, or grey for motion detection's small luma images), at
//!   full size or scaled in the DCT domain by 1/2, 1/4 or 1/8, the
//!   factor chosen by the caller from the full size (pre-processing picks the
//!   largest one that still covers the model input). At full size its pixels
//!   are Pillow's, which links libjpeg-turbo too (islow IDCT, fancy
//!   upsampling): the reference inputs are reproduced byte for byte.
//!
//! # Why libjpeg-turbo
//! Decode dominates pre-processing. Measured on this 2-core x86 build machine
//! (median of 60, camera-like JPEGs at quality 85, 4:2:2; the machine was
//! shared with other builds, load average ~18, so read the figures relative
//! to each other):
//!
//! | frame → input | `image` (zune-jpeg) full + resize | `jpeg-decoder` `scale()` + resize | libjpeg-turbo full | libjpeg-turbo scaled |
//! |---|---|---|---|---|
//! | 640×480 → 224 (1/2) | 6.1 + 0.37 ms | 9.4 + 0.31 ms | 1.7 ms | 1.4 ms |
//! | 1280×720 → 224 (1/2) | 21.6 + 0.73 ms | 26.2 + 0.38 ms | 16.4 ms | 13.9 ms |
//! | 1280×720 → 128 (1/4) | 19.4 + 0.46 ms | 16.7 + 0.14 ms | 16.2 ms | 11.0 ms |
//!
//! The pure-Rust `jpeg-decoder` scales in the IDCT too but decodes slower
//! than zune-jpeg even at 1/2 (no SIMD on aarch64 without nightly), so it
//! would not pay. libjpeg-turbo is 3–4× faster at full size and scaling
//! saves a further 15–30 % plus most of the resize. The cost is a C build
//! (cmake, nasm) like the `tflite` crate's, which also has to cross-compile
//! for the aarch64 .deb; the Debian `libturbojpeg` (2.1) is too old for the
//! crate, so the vendored copy is linked statically (SIMD via nasm on x86_64,
//! NEON on aarch64).

use std::io::Cursor;

/// Why an image could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct DecodeError(pub String);

/// The encoded image formats the decoder accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageKind {
    Jpeg,
    Png,
    Bmp,
}

/// Identify an encoded image by its magic bytes.
pub fn sniff(bytes: &[u8]) -> Option<ImageKind> {
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some(ImageKind::Jpeg)
    } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some(ImageKind::Png)
    } else if bytes.starts_with(b"BM") {
        Some(ImageKind::Bmp)
    } else {
        None
    }
}

/// Decode a JPEG/PNG/BMP into packed RGB8 in `out` (reused), returning its size.
/// The pixel budget is checked against the header before any pixel is decoded.
pub(crate) fn decode_rgb(
    bytes: &[u8],
    max_pixels: u64,
    out: &mut Vec<u8>,
) -> Result<(u32, u32), DecodeError> {
    let kind = sniff(bytes).ok_or_else(|| {
        DecodeError(format!(
            "unrecognised encoded image (first bytes {:02x?}); expected JPEG, PNG or BMP",
            &bytes[..bytes.len().min(8)]
        ))
    })?;
    let format = match kind {
        ImageKind::Jpeg => ::image::ImageFormat::Jpeg,
        ImageKind::Png => ::image::ImageFormat::Png,
        ImageKind::Bmp => ::image::ImageFormat::Bmp,
    };
    let err = |e: ::image::ImageError| DecodeError(format!("{kind:?} decode failed: {e}"));
    let mut reader = ::image::ImageReader::with_format(Cursor::new(bytes), format);
    let mut limits = ::image::Limits::default();
    // Decoders may allocate the output plus working buffers; 8 bytes/pixel covers RGBA16.
    limits.max_alloc = Some(max_pixels.saturating_mul(8).max(1 << 20));
    reader.limits(limits);
    let decoder = reader.into_decoder().map_err(err)?;
    let (w, h) = ::image::ImageDecoder::dimensions(&decoder);
    check_budget(w, h, max_pixels)?;
    if ::image::ImageDecoder::color_type(&decoder) == ::image::ColorType::Rgb8 {
        out.clear();
        out.resize(w as usize * h as usize * 3, 0);
        ::image::ImageDecoder::read_image(decoder, out).map_err(err)?;
    } else {
        // Grey, alpha or 16-bit images: convert (alpha is dropped, as Pillow's convert("RGB")).
        let rgb = ::image::DynamicImage::from_decoder(decoder)
            .map_err(err)?
            .into_rgb8();
        out.clear();
        out.extend_from_slice(rgb.as_raw());
    }
    Ok((w, h))
}

/// Refuse an empty image or one of more than `max_pixels` pixels.
pub(crate) fn check_budget(w: u32, h: u32, max_pixels: u64) -> Result<(), DecodeError> {
    if w == 0 || h == 0 {
        return Err(DecodeError(format!("empty image {w}x{h}")));
    }
    let pixels = u64::from(w) * u64::from(h);
    if pixels > max_pixels {
        return Err(DecodeError(format!(
            "image {w}x{h} has {pixels} pixels, over the budget of {max_pixels}"
        )));
    }
    Ok(())
}

/// Most progressive-JPEG scans libjpeg-turbo decodes before refusing a frame
/// (a crafted file with thousands of scans is a CPU bomb; cameras send one).
const MAX_JPEG_SCANS: u32 = 500;

/// A JPEG decoded by libjpeg-turbo: its full size, the decoded size and the denominator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ScaledJpeg {
    pub full_w: u32,
    pub full_h: u32,
    pub width: u32,
    pub height: u32,
    pub denom: u32,
}

/// A libjpeg-turbo decompressor, created on the first JPEG and reused.
#[derive(Default)]
pub(crate) struct JpegDecoder {
    turbo: Option<turbojpeg::Decompressor>,
}

impl JpegDecoder {
    /// Decode a JPEG with libjpeg-turbo into `out` (reused) as packed RGB8,
    /// scaled by 1/`denom(full_w, full_h)` (1, 2, 4 or 8; lossless JPEGs,
    /// which have no DCT, are always decoded at full size). The pixel budget
    /// is checked on the full size before decoding. `None` for colour spaces
    /// it cannot turn into RGB (CMYK, YCCK): the caller then decodes it with
    /// [`decode_rgb`].
    pub(crate) fn decode_scaled(
        &mut self,
        bytes: &[u8],
        max_pixels: u64,
        out: &mut Vec<u8>,
        denom: impl FnOnce(u32, u32) -> u32,
    ) -> Result<Option<ScaledJpeg>, DecodeError> {
        self.decode_as(bytes, max_pixels, out, denom, turbojpeg::PixelFormat::RGB)
    }

    /// As [`Self::decode_scaled`], into one byte of luma per pixel (motion
    /// detection, issue 18): libjpeg-turbo then skips the colour conversion
    /// and the chroma's inverse DCT. `None` for CMYK/YCCK as there.
    pub(crate) fn decode_gray_scaled(
        &mut self,
        bytes: &[u8],
        max_pixels: u64,
        out: &mut Vec<u8>,
        denom: impl FnOnce(u32, u32) -> u32,
    ) -> Result<Option<ScaledJpeg>, DecodeError> {
        self.decode_as(bytes, max_pixels, out, denom, turbojpeg::PixelFormat::GRAY)
    }

    fn decode_as(
        &mut self,
        bytes: &[u8],
        max_pixels: u64,
        out: &mut Vec<u8>,
        denom: impl FnOnce(u32, u32) -> u32,
        format: turbojpeg::PixelFormat,
    ) -> Result<Option<ScaledJpeg>, DecodeError> {
        let err = |e: turbojpeg::Error| DecodeError(format!("JPEG decode failed: {e}"));
        let turbo = match &mut self.turbo {
            Some(t) => t,
            None => {
                let mut t = turbojpeg::Decompressor::new().map_err(err)?;
                t.set_scan_limit(MAX_JPEG_SCANS).map_err(err)?;
                self.turbo.insert(t)
            }
        };
        let header = turbo.read_header(bytes).map_err(err)?;
        if matches!(
            header.colorspace,
            turbojpeg::Colorspace::CMYK | turbojpeg::Colorspace::YCCK
        ) {
            return Ok(None);
        }
        let too_big = |_| {
            DecodeError(format!(
                "JPEG {}x{} is too large",
                header.width, header.height
            ))
        };
        let (full_w, full_h) = (
            u32::try_from(header.width).map_err(too_big)?,
            u32::try_from(header.height).map_err(too_big)?,
        );
        check_budget(full_w, full_h, max_pixels)?;
        // Lossless JPEGs cannot be scaled in the DCT domain (they have none).
        let denom = if header.is_lossless {
            1
        } else {
            denom(full_w, full_h)
        };
        turbo
            .set_scaling_factor(turbojpeg::ScalingFactor::new(1, denom as usize))
            .map_err(err)?;
        let (width, height) = (full_w.div_ceil(denom), full_h.div_ceil(denom));
        out.clear();
        let bpp = format.size();
        out.resize(width as usize * height as usize * bpp, 0);
        let image = turbojpeg::Image {
            pixels: &mut out[..],
            width: width as usize,
            pitch: width as usize * bpp,
            height: height as usize,
            format,
        };
        turbo.decompress(bytes, image).map_err(err)?;
        Ok(Some(ScaledJpeg {
            full_w,
            full_h,
            width,
            height,
            denom,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoder_rejects_unknown_and_oversized_images() {
        // Catches decompression bombs being decoded and garbage reaching the decoder.
        let mut out = Vec::new();
        let e = decode_rgb(b"GIF89a....", 100, &mut out)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unrecognised"), "{e}");
        let mut png = Vec::new();
        ::image::RgbImage::new(64, 64)
            .write_to(&mut Cursor::new(&mut png), ::image::ImageFormat::Png)
            .unwrap();
        let e = decode_rgb(&png, 1000, &mut out).unwrap_err().to_string();
        assert!(e.contains("4096 pixels"), "{e}");
        assert_eq!(decode_rgb(&png, 5000, &mut out).unwrap(), (64, 64));
        assert_eq!(out.len(), 64 * 64 * 3);
    }
}
