//! Pre-processing: from a captured [`Frame`] to the bytes of a model's input tensor.
//!
//! This module owns decoding (JPEG/PNG/BMP sniffed by magic bytes, YUYV, RGB8),
//! resizing to the model's input size, and quantizing into the input tensor.
//! The functions are pure; a [`Preprocessor`] only carries buffers reused from
//! frame to frame and tables computed once per model.
//!
//! # Geometry
//! Resizing uses `fast_image_resize`'s bilinear convolution, the same filter as
//! Pillow's `Image.resize(..., BILINEAR)` (the reference outputs were made that
//! way). [`FitMode`] chooses how the source aspect ratio meets the model's:
//! `Stretch` (default, what the reference does), `Crop` (centre crop to the
//! model's aspect) or `Letterbox` (fit inside, pad with the neutral pixel, the
//! one that maps to 0.0). Every mode reports a [`Mapping`] from model-input
//! pixels back to source pixels, used to place detection boxes on the frame.
//!
//! # Normalization and quantization
//! A pixel value `p ∈ [0, 255]` becomes a real value and then a tensor element:
//!
//! ```text
//! real = (p - mean[c]) / std[c]                      (Normalization, per channel)
//! q    = clamp(round(real / scale) + zero_point)     (the tensor's own quantization)
//! ```
//!
//! For float32 inputs `real` is stored as is. [`Normalization`] is explicit and
//! can be set per model. Its default ([`Normalization::default_for`]) is derived
//! from the input tensor: for a quantized input `mean` is the zero point
//! expressed in the uint8 pixel domain (`zp` for uint8, `zp + 128` for int8) and
//! `std = 1 / scale`, so raw pixels map onto the tensor's range exactly (uint8
//! models take raw pixels, as TFLite image models expect; int8 models take
//! `p - 128`). Float inputs default to the model metadata's
//! `NormalizationOptions`, else `mean = std = 127.5` (range [-1, 1]). Nothing is
//! hard-coded to 1/128 and 128.
//!
//! Because the mapping depends only on `(channel, p)`, it is precomputed as a
//! 256-entry table per channel, and when the table is the identity (uint8) or a
//! sign flip (int8) the copy takes a fast path. `round` is half away from zero.
//!
//! # JPEG decoding and DCT-domain downscaling
//! [`JpegScaling::Auto`] (the daemon's default) decodes JPEG frames with
//! libjpeg-turbo (the `turbojpeg` crate, which builds its vendored
//! libjpeg-turbo with cmake; SIMD via nasm on x86_64, NEON on aarch64) and lets
//! its IDCT scale by 1/2, 1/4 or 1/8: the largest factor whose output still
//! covers the model input without upscaling on either axis
//! ([`jpeg_scale_denom`]). The bilinear resize then finishes the job from the
//! smaller image, and the reported [`Mapping`] still refers to the full frame.
//! [`JpegScaling::Off`] is the reference path: a full-size decode with the
//! `image` crate, then bilinear; it reproduces the Pillow-made reference input
//! tensors (max 1–3 levels off) and is what [`Preprocessor::new`] uses unless
//! told otherwise.
//!
//! Why libjpeg-turbo: decode dominates pre-processing. Measured on this 2-core
//! x86 build machine (median of 60, camera-like JPEGs at quality 85, 4:2:2;
//! the machine was shared with other builds, load average ~18, so read the
//! figures relative to each other):
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
//! crate, so the vendored copy is linked statically.

use std::io::Cursor;
use std::time::Instant;

use fast_image_resize as fir;
use serde::{Deserialize, Serialize};

use super::{DType, InferenceError, Quant, TensorSpec};
use crate::config::JpegScaling;
use crate::core::frame::{Frame, PixelFormat};

/// Default pixel budget for a decoded frame (width × height).
pub const DEFAULT_MAX_PIXELS: u64 = 40_000_000;

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

/// Per-channel `real = (p - mean) / std` applied to pixel values in [0, 255].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Normalization {
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl Normalization {
    /// The same mean and std for every channel.
    pub fn uniform(mean: f32, std: f32) -> Normalization {
        Normalization {
            mean: [mean; 3],
            std: [std; 3],
        }
    }

    /// From metadata lists of length 1 (all channels) or 3; `None` otherwise or
    /// when a std is zero or a value is not finite.
    pub fn from_lists(mean: &[f32], std: &[f32]) -> Option<Normalization> {
        let pick = |v: &[f32]| -> Option<[f32; 3]> {
            match v {
                [a] => Some([*a; 3]),
                [a, b, c] => Some([*a, *b, *c]),
                _ => None,
            }
        };
        let n = Normalization {
            mean: pick(mean)?,
            std: pick(std)?,
        };
        n.validate().ok().map(|()| n)
    }

    /// Check that every std is non-zero and every value finite.
    pub fn validate(&self) -> Result<(), String> {
        if self.mean.iter().chain(&self.std).any(|v| !v.is_finite()) || self.std.contains(&0.0) {
            return Err(format!(
                "invalid normalization {self:?}: values must be finite and std non-zero"
            ));
        }
        Ok(())
    }

    /// The default for an input tensor (see the module documentation).
    pub fn default_for(spec: &TensorSpec, metadata: Option<Normalization>) -> Normalization {
        match spec.dtype {
            DType::F32 => metadata.unwrap_or_else(|| Normalization::uniform(127.5, 127.5)),
            DType::U8 | DType::I8 => {
                let q = effective_quant(spec);
                let shift = if spec.dtype == DType::I8 { 128.0 } else { 0.0 };
                Normalization::uniform(q.zero_point as f32 + shift, 1.0 / q.scale)
            }
        }
    }
}

/// The quantization used for an integer tensor: its own, or scale 1 / zero
/// point 0 when the model declares none (the tensor then holds raw values).
pub fn effective_quant(spec: &TensorSpec) -> Quant {
    match spec.quant {
        Some(q) if q.scale > 0.0 && q.scale.is_finite() => q,
        _ => Quant {
            scale: 1.0,
            zero_point: 0,
        },
    }
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
    pub fn new(
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

    /// True when no resampling is needed (same size; every fit mode is then the identity).
    pub fn is_identity(&self) -> bool {
        self.src_width == self.dst_width && self.src_height == self.dst_height
    }

    /// The same mapping, expressed for the full-size source `full_w`×`full_h`
    /// of which this mapping's source is a uniformly scaled copy (a JPEG
    /// decoded at 1/2, 1/4 or 1/8).
    pub fn with_source_size(&self, full_w: u32, full_h: u32) -> Mapping {
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
    pub fn to_source(&self, x: f64, y: f64) -> (f64, f64) {
        (
            x * self.scale_x + self.offset_x,
            y * self.scale_y + self.offset_y,
        )
    }

    /// A box in normalized model-input coordinates (`ymin, xmin, ymax, xmax`,
    /// as SSD emits them) as `(x, y, width, height)` in source pixels, clipped
    /// to the image. `None` if nothing of it lies inside the image.
    pub fn norm_box_to_source(
        &self,
        ymin: f32,
        xmin: f32,
        ymax: f32,
        xmax: f32,
    ) -> Option<(f32, f32, f32, f32)> {
        let (dw, dh) = (f64::from(self.dst_width), f64::from(self.dst_height));
        let (x0, y0) = self.to_source(
            f64::from(xmin.min(xmax)) * dw,
            f64::from(ymin.min(ymax)) * dh,
        );
        let (x1, y1) = self.to_source(
            f64::from(xmin.max(xmax)) * dw,
            f64::from(ymin.max(ymax)) * dh,
        );
        let (w, h) = (f64::from(self.src_width), f64::from(self.src_height));
        let (x0, x1) = (x0.clamp(0.0, w), x1.clamp(0.0, w));
        let (y0, y1) = (y0.clamp(0.0, h), y1.clamp(0.0, h));
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
fn letterbox_rect(sw: u32, sh: u32, dw: u32, dh: u32) -> (u32, u32, u32, u32) {
    let s = (f64::from(dw) / f64::from(sw)).min(f64::from(dh) / f64::from(sh));
    let w = ((f64::from(sw) * s).round() as u32).clamp(1, dw);
    let h = ((f64::from(sh) * s).round() as u32).clamp(1, dh);
    ((dw - w) / 2, (dh - h) / 2, w, h)
}

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
pub fn decode_rgb(
    bytes: &[u8],
    max_pixels: u64,
    out: &mut Vec<u8>,
) -> Result<(u32, u32), InferenceError> {
    let kind = sniff(bytes).ok_or_else(|| {
        InferenceError::Image(format!(
            "unrecognised encoded image (first bytes {:02x?}); expected JPEG, PNG or BMP",
            &bytes[..bytes.len().min(8)]
        ))
    })?;
    let format = match kind {
        ImageKind::Jpeg => image::ImageFormat::Jpeg,
        ImageKind::Png => image::ImageFormat::Png,
        ImageKind::Bmp => image::ImageFormat::Bmp,
    };
    let err = |e: image::ImageError| InferenceError::Image(format!("{kind:?} decode failed: {e}"));
    let mut reader = image::ImageReader::with_format(Cursor::new(bytes), format);
    let mut limits = image::Limits::default();
    // Decoders may allocate the output plus working buffers; 8 bytes/pixel covers RGBA16.
    limits.max_alloc = Some(max_pixels.saturating_mul(8).max(1 << 20));
    reader.limits(limits);
    let decoder = reader.into_decoder().map_err(err)?;
    let (w, h) = image::ImageDecoder::dimensions(&decoder);
    check_budget(w, h, max_pixels)?;
    if image::ImageDecoder::color_type(&decoder) == image::ColorType::Rgb8 {
        out.clear();
        out.resize(w as usize * h as usize * 3, 0);
        image::ImageDecoder::read_image(decoder, out).map_err(err)?;
    } else {
        // Grey, alpha or 16-bit images: convert (alpha is dropped, as Pillow's convert("RGB")).
        let rgb = image::DynamicImage::from_decoder(decoder)
            .map_err(err)?
            .into_rgb8();
        out.clear();
        out.extend_from_slice(rgb.as_raw());
    }
    Ok((w, h))
}

fn check_budget(w: u32, h: u32, max_pixels: u64) -> Result<(), InferenceError> {
    if w == 0 || h == 0 {
        return Err(InferenceError::Image(format!("empty image {w}x{h}")));
    }
    let pixels = u64::from(w) * u64::from(h);
    if pixels > max_pixels {
        return Err(InferenceError::Image(format!(
            "image {w}x{h} has {pixels} pixels, over the budget of {max_pixels}"
        )));
    }
    Ok(())
}

/// Per-channel lookup table from pixel value to tensor element.
#[derive(Clone)]
pub enum InputLut {
    /// uint8/int8 elements (int8 stored as its two's-complement byte).
    Bytes(Box<[[u8; 256]; 3]>),
    Floats(Box<[[f32; 256]; 3]>),
}

impl std::fmt::Debug for InputLut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            InputLut::Bytes(_) => "InputLut::Bytes",
            InputLut::Floats(_) => "InputLut::Floats",
        })
    }
}

/// Which shortcut applies to a byte table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FastPath {
    None,
    /// q == p for every channel: copy.
    Copy,
    /// q == p - 128 as int8 for every channel: flip the top bit.
    FlipSign,
}

impl InputLut {
    /// Build the table for a tensor of `dtype`/`quant` under `norm`.
    pub fn new(dtype: DType, quant: Quant, norm: &Normalization) -> InputLut {
        let real =
            |c: usize, p: usize| (p as f64 - f64::from(norm.mean[c])) / f64::from(norm.std[c]);
        match dtype {
            DType::F32 => {
                let mut t = Box::new([[0f32; 256]; 3]);
                for (c, row) in t.iter_mut().enumerate() {
                    for (p, v) in row.iter_mut().enumerate() {
                        *v = real(c, p) as f32;
                    }
                }
                InputLut::Floats(t)
            }
            DType::U8 | DType::I8 => {
                let (lo, hi) = if dtype == DType::U8 {
                    (0.0, 255.0)
                } else {
                    (-128.0, 127.0)
                };
                let mut t = Box::new([[0u8; 256]; 3]);
                for (c, row) in t.iter_mut().enumerate() {
                    for (p, v) in row.iter_mut().enumerate() {
                        let q = (real(c, p) / f64::from(quant.scale)).round()
                            + f64::from(quant.zero_point);
                        *v = (q.clamp(lo, hi) as i32) as u8;
                    }
                }
                InputLut::Bytes(t)
            }
        }
    }

    fn fast_path(&self, channels: usize) -> FastPath {
        let InputLut::Bytes(t) = self else {
            return FastPath::None;
        };
        let rows = &t[..channels];
        if rows
            .iter()
            .all(|r| r.iter().enumerate().all(|(p, &q)| q as usize == p))
        {
            FastPath::Copy
        } else if rows
            .iter()
            .all(|r| r.iter().enumerate().all(|(p, &q)| q == (p as u8) ^ 0x80))
        {
            FastPath::FlipSign
        } else {
            FastPath::None
        }
    }

    /// Element value of pixel `p` in channel `c`, dequantized for byte tables.
    pub fn lookup(&self, c: usize, p: u8) -> f32 {
        match self {
            InputLut::Bytes(t) => f32::from(t[c][p as usize]),
            InputLut::Floats(t) => t[c][p as usize],
        }
    }
}

/// Quantize interleaved pixels `src` (`channels` per pixel) into tensor bytes `dst`.
/// `dst` must hold exactly `src.len()` elements of the table's type.
pub fn quantize_into(
    src: &[u8],
    channels: usize,
    lut: &InputLut,
    dst: &mut [u8],
) -> Result<(), InferenceError> {
    quantize_with(src, channels, lut, lut.fast_path(channels.min(3)), dst)
}

/// [`quantize_into`] with the table's [`FastPath`] computed once by the caller.
fn quantize_with(
    src: &[u8],
    channels: usize,
    lut: &InputLut,
    fast: FastPath,
    dst: &mut [u8],
) -> Result<(), InferenceError> {
    let elem = if matches!(lut, InputLut::Floats(_)) {
        4
    } else {
        1
    };
    if dst.len() != src.len() * elem || channels == 0 || channels > 3 {
        return Err(InferenceError::Image(format!(
            "quantize: {} pixel bytes with {channels} channels do not fill a {}-byte tensor",
            src.len(),
            dst.len()
        )));
    }
    match (lut, fast) {
        (_, FastPath::Copy) => dst.copy_from_slice(src),
        (_, FastPath::FlipSign) => {
            for (d, s) in dst.iter_mut().zip(src) {
                *d = s ^ 0x80;
            }
        }
        (InputLut::Bytes(t), FastPath::None) => {
            for (d, s) in dst
                .chunks_exact_mut(channels)
                .zip(src.chunks_exact(channels))
            {
                for c in 0..channels {
                    d[c] = t[c][s[c] as usize];
                }
            }
        }
        (InputLut::Floats(t), FastPath::None) => {
            for (i, (d, s)) in dst.chunks_exact_mut(4).zip(src).enumerate() {
                d.copy_from_slice(&t[i % channels][*s as usize].to_ne_bytes());
            }
        }
    }
    Ok(())
}

/// Map RGB pixels through a byte table in place (the pixels already sit in the tensor).
fn quantize_bytes_in_place(rgb: &mut [u8], table: &[[u8; 256]; 3], fast: FastPath) {
    match fast {
        FastPath::Copy => {}
        FastPath::FlipSign => rgb.iter_mut().for_each(|v| *v ^= 0x80),
        FastPath::None => {
            for px in rgb.chunks_exact_mut(3) {
                for c in 0..3 {
                    px[c] = table[c][px[c] as usize];
                }
            }
        }
    }
}

/// Convert a YUYV frame whose size is the model input's straight into the
/// 3-channel input tensor `dst`, fused with quantization. Byte tensors: each
/// row is converted into its own place in `dst` and mapped through the table
/// there. Float tensors: each row goes through `row` (reused, one row long).
/// Gives exactly the bytes of [`yuyv_to_rgb`](crate::image::yuyv::yuyv_to_rgb)
/// followed by [`quantize_into`].
pub fn yuyv_into_tensor(
    src: &[u8],
    width: u32,
    height: u32,
    stride: u32,
    lut: &InputLut,
    row: &mut Vec<u8>,
    dst: &mut [u8],
) -> Result<(), InferenceError> {
    yuyv_into_tensor_with(
        src,
        (width, height, stride),
        lut,
        lut.fast_path(3),
        row,
        dst,
    )
}

fn yuyv_into_tensor_with(
    src: &[u8],
    (width, height, stride): (u32, u32, u32),
    lut: &InputLut,
    fast: FastPath,
    row: &mut Vec<u8>,
    dst: &mut [u8],
) -> Result<(), InferenceError> {
    use crate::image::yuyv;
    let img_err = |e: yuyv::YuyvError| InferenceError::Image(e.to_string());
    yuyv::check_geometry(src.len(), width, height, stride).map_err(img_err)?;
    let elem = if matches!(lut, InputLut::Floats(_)) {
        4
    } else {
        1
    };
    let rgb_row = width as usize * 3;
    let need = rgb_row * height as usize * elem;
    if dst.len() != need {
        return Err(InferenceError::Image(format!(
            "YUYV {width}x{height} into a {}-byte tensor: needs {need} bytes",
            dst.len()
        )));
    }
    let stride = stride as usize;
    // check_geometry proved every row's `width * 2` bytes lie inside `src`.
    let src_row = |y: usize| &src[y * stride..y * stride + width as usize * 2];
    match lut {
        InputLut::Bytes(t) => {
            for (y, out) in dst.chunks_exact_mut(rgb_row).enumerate() {
                yuyv::yuyv_to_rgb_row(src_row(y), out).map_err(img_err)?;
                quantize_bytes_in_place(out, t, fast);
            }
        }
        InputLut::Floats(_) => {
            row.clear();
            row.resize(rgb_row, 0);
            for (y, out) in dst.chunks_exact_mut(rgb_row * 4).enumerate() {
                yuyv::yuyv_to_rgb_row(src_row(y), row).map_err(img_err)?;
                quantize_with(row, 3, lut, fast, out)?;
            }
        }
    }
    Ok(())
}

/// Timings and geometry of one pre-processed frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Prepared {
    /// From model-input pixels to the frame's full-size pixels.
    pub mapping: Mapping,
    /// Decoding (or colour conversion). For a YUYV frame of the model's own
    /// size it also includes quantization, which is fused into the conversion.
    pub decode_us: u64,
    pub resize_us: u64,
    pub quantize_us: u64,
    /// The JPEG DCT scaling denominator used (1: full size, or not a JPEG).
    pub jpeg_scale: u32,
}

/// Pre-processing state for one model input: tables and reusable buffers.
pub struct Preprocessor {
    width: u32,
    height: u32,
    channels: usize,
    fit: FitMode,
    normalization: Normalization,
    jpeg_scaling: JpegScaling,
    lut: InputLut,
    /// The table's shortcut, computed once.
    fast: FastPath,
    /// The source pixel that maps closest to 0.0, used for letterbox padding.
    pad: [u8; 3],
    decoded: Vec<u8>,
    resized: Vec<u8>,
    boxed: Vec<u8>,
    gray: Vec<u8>,
    row: Vec<u8>,
    resizer: fir::Resizer,
    /// libjpeg-turbo handle, created on the first JPEG frame in `Auto` mode.
    turbo: Option<turbojpeg::Decompressor>,
}

impl std::fmt::Debug for Preprocessor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Preprocessor")
            .field("width", &self.width)
            .field("height", &self.height)
            .field("channels", &self.channels)
            .field("fit", &self.fit)
            .field("normalization", &self.normalization)
            .field("jpeg_scaling", &self.jpeg_scaling)
            .finish_non_exhaustive()
    }
}

/// Most progressive-JPEG scans libjpeg-turbo decodes before refusing a frame
/// (a crafted file with thousands of scans is a CPU bomb; cameras send one).
const MAX_JPEG_SCANS: u32 = 500;

impl Preprocessor {
    /// Prepare for an NHWC input tensor `[1, H, W, C]` with C = 1 (grey) or 3 (RGB).
    /// JPEGs take the reference path ([`JpegScaling::Off`]) unless
    /// [`with_jpeg_scaling`](Self::with_jpeg_scaling) says otherwise.
    pub fn new(
        spec: &TensorSpec,
        fit: FitMode,
        normalization: Normalization,
    ) -> Result<Preprocessor, InferenceError> {
        let unsupported = |reason: String| InferenceError::Unsupported {
            path: String::new(),
            reason,
        };
        let (height, width, channels) = match spec.shape.as_slice() {
            [1, h, w, c] if *h > 0 && *w > 0 && (*c == 1 || *c == 3) => (*h, *w, *c),
            other => {
                return Err(unsupported(format!(
                "input {:?} has shape {other:?}; expected [1, height, width, 1 or 3] (NHWC image)",
                spec.name
            )))
            }
        };
        let (width, height) = (
            u32::try_from(width).map_err(|_| unsupported("input too wide".into()))?,
            u32::try_from(height).map_err(|_| unsupported("input too tall".into()))?,
        );
        normalization.validate().map_err(unsupported)?;
        let lut = InputLut::new(spec.dtype, effective_quant(spec), &normalization);
        let fast = lut.fast_path(channels);
        let pad = std::array::from_fn(|c| normalization.mean[c].round().clamp(0.0, 255.0) as u8);
        Ok(Preprocessor {
            width,
            height,
            channels,
            fit,
            normalization,
            jpeg_scaling: JpegScaling::Off,
            lut,
            fast,
            pad,
            decoded: Vec::new(),
            resized: Vec::new(),
            boxed: Vec::new(),
            gray: Vec::new(),
            row: Vec::new(),
            resizer: fir::Resizer::new(),
            turbo: None,
        })
    }

    /// Choose how JPEG frames are decoded.
    pub fn with_jpeg_scaling(mut self, jpeg_scaling: JpegScaling) -> Preprocessor {
        self.jpeg_scaling = jpeg_scaling;
        self
    }

    /// Model input size (width, height).
    pub fn input_size(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    pub fn normalization(&self) -> Normalization {
        self.normalization
    }

    pub fn fit(&self) -> FitMode {
        self.fit
    }

    pub fn jpeg_scaling(&self) -> JpegScaling {
        self.jpeg_scaling
    }

    /// Decode `frame`, resize it and quantize it into `dst` (the input tensor).
    pub fn prepare(
        &mut self,
        frame: &Frame,
        max_pixels: u64,
        dst: &mut [u8],
    ) -> Result<Prepared, InferenceError> {
        let t0 = Instant::now();
        let (w, h) = (frame.width, frame.height);
        let contiguous_rgb =
            frame.format == PixelFormat::Rgb8 && frame.stride as u64 == u64::from(w) * 3;
        // Full-size source dimensions when the decoded image is a scaled copy.
        let mut full = None;
        let mut jpeg_scale = 1;
        let (sw, sh) = match frame.format {
            PixelFormat::Encoded => {
                let turbo = self.jpeg_scaling == JpegScaling::Auto
                    && sniff(&frame.data) == Some(ImageKind::Jpeg);
                match turbo
                    .then(|| self.decode_jpeg_scaled(&frame.data, max_pixels))
                    .transpose()?
                    .flatten()
                {
                    Some(d) => {
                        full = Some((d.full_w, d.full_h));
                        jpeg_scale = d.denom;
                        (d.width, d.height)
                    }
                    None => decode_rgb(&frame.data, max_pixels, &mut self.decoded)?,
                }
            }
            PixelFormat::Yuyv if w == self.width && h == self.height && self.channels == 3 => {
                check_budget(w, h, max_pixels)?;
                yuyv_into_tensor_with(
                    &frame.data,
                    (w, h, frame.stride),
                    &self.lut,
                    self.fast,
                    &mut self.row,
                    dst,
                )?;
                let mapping = Mapping::new(self.fit, w, h, self.width, self.height);
                let decode_us = t0.elapsed().as_micros() as u64;
                return Ok(Prepared {
                    mapping,
                    decode_us,
                    resize_us: 0,
                    quantize_us: 0,
                    jpeg_scale: 1,
                });
            }
            PixelFormat::Yuyv => {
                check_budget(w, h, max_pixels)?;
                self.decoded.clear();
                self.decoded.resize(w as usize * h as usize * 3, 0);
                crate::image::yuyv::yuyv_to_rgb(&frame.data, w, h, frame.stride, &mut self.decoded)
                    .map_err(|e| InferenceError::Image(e.to_string()))?;
                (w, h)
            }
            PixelFormat::Rgb8 => {
                check_budget(w, h, max_pixels)?;
                let row = w as usize * 3;
                let stride = frame.stride as usize;
                let need = stride * (h as usize - 1) + row;
                if stride < row || frame.data.len() < need {
                    return Err(InferenceError::Image(format!(
                        "RGB8 frame {w}x{h} stride {stride}: {} bytes, need {need} and stride >= {row}",
                        frame.data.len()
                    )));
                }
                if !contiguous_rgb {
                    self.decoded.clear();
                    for r in 0..h as usize {
                        self.decoded
                            .extend_from_slice(&frame.data[r * stride..r * stride + row]);
                    }
                }
                (w, h)
            }
        };
        let decode_us = t0.elapsed().as_micros() as u64;
        let src: &[u8] = if contiguous_rgb {
            &frame.data[..sw as usize * sh as usize * 3]
        } else {
            &self.decoded
        };
        let (mapping, resize_us, quantize_us) = prepare_pixels(
            src,
            sw,
            sh,
            (self.width, self.height, self.channels),
            self.fit,
            self.pad,
            (&self.lut, self.fast),
            &mut Scratch {
                resizer: &mut self.resizer,
                resized: &mut self.resized,
                boxed: &mut self.boxed,
                gray: &mut self.gray,
            },
            dst,
        )?;
        let mapping = match full {
            Some((fw, fh)) => mapping.with_source_size(fw, fh),
            None => mapping,
        };
        Ok(Prepared {
            mapping,
            decode_us,
            resize_us,
            quantize_us,
            jpeg_scale,
        })
    }

    /// Decode a JPEG with libjpeg-turbo into `self.decoded`, scaled by
    /// [`jpeg_scale_denom`]. `None` for colour spaces it cannot turn into RGB
    /// (CMYK, YCCK): the caller then takes the reference path.
    fn decode_jpeg_scaled(
        &mut self,
        bytes: &[u8],
        max_pixels: u64,
    ) -> Result<Option<ScaledJpeg>, InferenceError> {
        let err = |e: turbojpeg::Error| InferenceError::Image(format!("JPEG decode failed: {e}"));
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
            InferenceError::Image(format!(
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
            jpeg_scale_denom(full_w, full_h, self.width, self.height, self.fit)
        };
        turbo
            .set_scaling_factor(turbojpeg::ScalingFactor::new(1, denom as usize))
            .map_err(err)?;
        let (width, height) = (full_w.div_ceil(denom), full_h.div_ceil(denom));
        self.decoded.clear();
        self.decoded.resize(width as usize * height as usize * 3, 0);
        let image = turbojpeg::Image {
            pixels: &mut self.decoded[..],
            width: width as usize,
            pitch: width as usize * 3,
            height: height as usize,
            format: turbojpeg::PixelFormat::RGB,
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

/// A JPEG decoded by libjpeg-turbo: its full size, the decoded size and the denominator.
struct ScaledJpeg {
    full_w: u32,
    full_h: u32,
    width: u32,
    height: u32,
    denom: u32,
}

struct Scratch<'a> {
    resizer: &'a mut fir::Resizer,
    resized: &'a mut Vec<u8>,
    boxed: &'a mut Vec<u8>,
    gray: &'a mut Vec<u8>,
}

/// Resize packed RGB8 `src` to the model size and quantize into `dst`.
#[allow(clippy::too_many_arguments)]
fn prepare_pixels(
    src: &[u8],
    sw: u32,
    sh: u32,
    (dw, dh, channels): (u32, u32, usize),
    fit: FitMode,
    pad: [u8; 3],
    (lut, fast): (&InputLut, FastPath),
    s: &mut Scratch<'_>,
    dst: &mut [u8],
) -> Result<(Mapping, u64, u64), InferenceError> {
    let t0 = Instant::now();
    let mapping = Mapping::new(fit, sw, sh, dw, dh);
    let resized: &[u8] = if mapping.is_identity() {
        src
    } else {
        resize_rgb(s.resizer, src, &mapping, pad, s.resized, s.boxed)?;
        s.resized
    };
    let pixels: &[u8] = if channels == 1 {
        s.gray.clear();
        // ITU-R 601 luma with Pillow's fixed-point weights (convert("L")).
        s.gray.extend(resized.chunks_exact(3).map(|p| {
            ((u32::from(p[0]) * 19595 + u32::from(p[1]) * 38470 + u32::from(p[2]) * 7471 + 0x8000)
                >> 16) as u8
        }));
        s.gray
    } else {
        resized
    };
    let resize_us = t0.elapsed().as_micros() as u64;
    let t1 = Instant::now();
    quantize_with(pixels, channels, lut, fast, dst)?;
    Ok((mapping, resize_us, t1.elapsed().as_micros() as u64))
}

/// Bilinear resize of packed RGB8 according to `mapping` into `out` (reused).
pub fn resize_rgb(
    resizer: &mut fir::Resizer,
    src: &[u8],
    mapping: &Mapping,
    pad: [u8; 3],
    out: &mut Vec<u8>,
    tmp: &mut Vec<u8>,
) -> Result<(), InferenceError> {
    let err = |e: &dyn std::fmt::Display| InferenceError::Image(format!("resize: {e}"));
    let (sw, sh, dw, dh) = (
        mapping.src_width,
        mapping.src_height,
        mapping.dst_width,
        mapping.dst_height,
    );
    let src_img =
        fir::images::ImageRef::new(sw, sh, src, fir::PixelType::U8x3).map_err(|e| err(&e))?;
    let alg = fir::ResizeOptions::new()
        .resize_alg(fir::ResizeAlg::Convolution(fir::FilterType::Bilinear));
    out.clear();
    out.resize(dw as usize * dh as usize * 3, 0);
    match mapping.fit {
        FitMode::Stretch | FitMode::Crop => {
            let opts = if mapping.fit == FitMode::Crop {
                let (l, t, w, h) =
                    crop_box(f64::from(sw), f64::from(sh), f64::from(dw), f64::from(dh));
                alg.crop(l, t, w, h)
            } else {
                alg
            };
            let mut dst_img = fir::images::Image::from_slice_u8(dw, dh, out, fir::PixelType::U8x3)
                .map_err(|e| err(&e))?;
            resizer
                .resize(&src_img, &mut dst_img, &opts)
                .map_err(|e| err(&e))?;
        }
        FitMode::Letterbox => {
            let (x, y, w, h) = letterbox_rect(sw, sh, dw, dh);
            tmp.clear();
            tmp.resize(w as usize * h as usize * 3, 0);
            let mut dst_img = fir::images::Image::from_slice_u8(w, h, tmp, fir::PixelType::U8x3)
                .map_err(|e| err(&e))?;
            resizer
                .resize(&src_img, &mut dst_img, &alg)
                .map_err(|e| err(&e))?;
            for px in out.chunks_exact_mut(3) {
                px.copy_from_slice(&pad);
            }
            let row = w as usize * 3;
            for r in 0..h as usize {
                let d = ((y as usize + r) * dw as usize + x as usize) * 3;
                out[d..d + row].copy_from_slice(&tmp[r * row..(r + 1) * row]);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(dtype: DType, quant: Option<Quant>, h: usize, w: usize, c: usize) -> TensorSpec {
        TensorSpec {
            name: "input".into(),
            shape: vec![1, h, w, c],
            dtype,
            quant,
        }
    }

    fn q(scale: f32, zero_point: i32) -> Option<Quant> {
        Some(Quant { scale, zero_point })
    }

    fn rgb_frame(w: u32, h: u32, data: Vec<u8>) -> Frame {
        Frame {
            data,
            format: PixelFormat::Rgb8,
            width: w,
            height: h,
            stride: w * 3,
            seq: 0,
            captured_at: std::time::SystemTime::UNIX_EPOCH,
            origin: "test".into(),
            source: String::new(),
        }
    }

    #[test]
    fn uint8_default_is_raw_pixels_for_any_quantization() {
        // Catches hard-coded 1/128, 128 normalization: uint8 models must receive raw pixels.
        for (scale, zp) in [(1.0 / 128.0, 128), (0.012_566_017, 131), (1.0 / 127.0, 128)] {
            let s = spec(DType::U8, q(scale, zp), 1, 1, 3);
            let n = Normalization::default_for(&s, None);
            let lut = InputLut::new(DType::U8, effective_quant(&s), &n);
            for p in 0..=255u8 {
                assert_eq!(
                    lut.lookup(1, p),
                    f32::from(p),
                    "scale {scale} zp {zp} p {p}"
                );
            }
            assert_eq!(lut.fast_path(3), FastPath::Copy);
        }
    }

    #[test]
    fn int8_default_is_pixel_minus_128() {
        // Catches int8 inputs fed raw uint8 bytes (wraps 200 to -56 instead of 72).
        let s = spec(DType::I8, q(0.0078, -3), 1, 1, 3);
        let n = Normalization::default_for(&s, None);
        let lut = InputLut::new(DType::I8, effective_quant(&s), &n);
        assert_eq!(lut.lookup(0, 200) as u8 as i8, 72);
        assert_eq!(lut.lookup(0, 0) as u8 as i8, -128);
        assert_eq!(lut.fast_path(3), FastPath::FlipSign);
        let mut dst = [0u8; 3];
        quantize_into(&[0, 128, 255], 3, &lut, &mut dst).unwrap();
        assert_eq!(dst.map(|b| b as i8), [-128, 0, 127]);
    }

    #[test]
    fn explicit_normalization_is_quantized_with_tensor_params() {
        // Catches normalization applied without the tensor's scale/zero point.
        // real = (p - 127.5) / 127.5; tensor scale 1/128, zp 128 -> q = round(real * 128) + 128.
        let s = spec(DType::U8, q(1.0 / 128.0, 128), 1, 1, 3);
        let n = Normalization::uniform(127.5, 127.5);
        let lut = InputLut::new(DType::U8, effective_quant(&s), &n);
        assert_eq!(lut.lookup(0, 0), 0.0);
        assert_eq!(lut.lookup(0, 255), 255.0); // 1.0 * 128 + 128 = 256, clamped
        assert_eq!(
            lut.lookup(0, 64),
            ((64.0f64 - 127.5) / 127.5 * 128.0).round() as f32 + 128.0
        );
        assert_eq!(lut.fast_path(3), FastPath::None);
    }

    #[test]
    fn float_input_default_and_metadata() {
        // Catches float models getting raw 0..255 instead of [-1, 1], or metadata being ignored.
        let s = spec(DType::F32, None, 1, 1, 3);
        let n = Normalization::default_for(&s, None);
        let lut = InputLut::new(DType::F32, effective_quant(&s), &n);
        assert_eq!(lut.lookup(0, 0), -1.0);
        assert_eq!(lut.lookup(0, 255), 1.0);
        let meta = Normalization {
            mean: [0.0; 3],
            std: [255.0; 3],
        };
        assert_eq!(Normalization::default_for(&s, Some(meta)), meta);
        let mut dst = [0u8; 12];
        quantize_into(&[0, 255, 0], 3, &lut, &mut dst).unwrap();
        assert_eq!(f32::from_ne_bytes(dst[4..8].try_into().unwrap()), 1.0);
    }

    #[test]
    fn per_channel_normalization() {
        // Catches channel order mix-ups (R mean applied to B).
        let n = Normalization::from_lists(&[10.0, 20.0, 30.0], &[1.0, 1.0, 1.0]).unwrap();
        let lut = InputLut::new(
            DType::U8,
            Quant {
                scale: 1.0,
                zero_point: 0,
            },
            &n,
        );
        let mut dst = [0u8; 3];
        quantize_into(&[40, 40, 40], 3, &lut, &mut dst).unwrap();
        assert_eq!(dst, [30, 20, 10]);
        assert!(Normalization::from_lists(&[1.0, 2.0], &[1.0]).is_none());
        assert!(Normalization::from_lists(&[1.0], &[0.0]).is_none());
    }

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

    #[test]
    fn letterbox_pads_with_neutral_pixel_and_keeps_content() {
        // Catches letterbox content misplaced or padding with a non-neutral value.
        let s = spec(DType::U8, q(1.0 / 128.0, 128), 4, 4, 3);
        let mut p = Preprocessor::new(&s, FitMode::Letterbox, Normalization::default_for(&s, None))
            .unwrap();
        let frame = rgb_frame(4, 2, vec![200; 4 * 2 * 3]);
        let mut dst = vec![0u8; 4 * 4 * 3];
        let prep = p.prepare(&frame, 1000, &mut dst).unwrap();
        assert_eq!(prep.mapping.fit, FitMode::Letterbox);
        assert_eq!(&dst[..12], &[128; 12]); // first row is padding
        assert_eq!(&dst[12..36], &[200; 24]); // rows 1..3 are content
        assert_eq!(&dst[36..], &[128; 12]);
    }

    #[test]
    fn identity_geometry_copies_pixels_exactly() {
        // Catches the resizer altering pixels when no resize is needed.
        let s = spec(DType::U8, q(1.0 / 128.0, 128), 2, 3, 3);
        let mut p =
            Preprocessor::new(&s, FitMode::Stretch, Normalization::default_for(&s, None)).unwrap();
        let data: Vec<u8> = (0..18).map(|i| i * 13).collect();
        let mut dst = vec![0u8; 18];
        p.prepare(&rgb_frame(3, 2, data.clone()), 1000, &mut dst)
            .unwrap();
        assert_eq!(dst, data);
    }

    #[test]
    fn strided_rgb_and_grey_input() {
        // Catches row padding leaking into pixels and wrong luma for 1-channel models.
        let s = spec(DType::U8, None, 1, 2, 1);
        let mut p =
            Preprocessor::new(&s, FitMode::Stretch, Normalization::default_for(&s, None)).unwrap();
        let mut f = rgb_frame(2, 1, vec![255, 0, 0, 0, 0, 255, 9, 9]);
        f.stride = 8;
        let mut dst = vec![0u8; 2];
        p.prepare(&f, 1000, &mut dst).unwrap();
        assert_eq!(dst, [76, 29]);
    }

    #[test]
    fn yuyv_frames_with_row_padding() {
        // Catches YUYV frames decoded with the wrong stride or width, and odd widths panicking.
        let s = spec(DType::U8, q(1.0 / 128.0, 128), 2, 2, 3);
        let mut p =
            Preprocessor::new(&s, FitMode::Stretch, Normalization::default_for(&s, None)).unwrap();
        // 2x2 white (Y=235, U=V=128 in studio range) with 2 padding bytes per row of garbage.
        let row = [235u8, 128, 235, 128, 0, 0];
        let mut f = rgb_frame(2, 2, [row, row].concat());
        f.format = PixelFormat::Yuyv;
        f.stride = 6;
        let mut dst = vec![0u8; 12];
        p.prepare(&f, 1000, &mut dst).unwrap();
        assert!(dst.iter().all(|&v| v >= 250), "{dst:?}");
        f.width = 3;
        assert!(matches!(
            p.prepare(&f, 1000, &mut dst),
            Err(InferenceError::Image(_))
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

    /// A deterministic YUYV image with `pad` garbage bytes after each row.
    fn yuyv_image(w: u32, h: u32, pad: u32) -> Vec<u8> {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let stride = (w * 2 + pad) as usize;
        (0..stride * h as usize).map(|_| rng.gen()).collect()
    }

    #[test]
    fn fused_yuyv_matches_convert_then_quantize() {
        // Catches the fused YUYV-to-tensor path drifting from the two-step path
        // (wrong table per channel, row offset, stride, or element width).
        let (w, h, pad) = (6u32, 4u32, 6u32);
        let src = yuyv_image(w, h, pad);
        let stride = w * 2 + pad;
        let mut rgb = vec![0u8; (w * h * 3) as usize];
        crate::image::yuyv::yuyv_to_rgb(&src, w, h, stride, &mut rgb).unwrap();
        let custom = Normalization::from_lists(&[10.0, 128.0, 200.0], &[50.0, 60.0, 70.0]).unwrap();
        let specs = [
            (
                spec(DType::U8, q(1.0 / 128.0, 128), 4, 6, 3),
                None,
                FastPath::Copy,
            ),
            (
                spec(DType::I8, q(1.0 / 128.0, 0), 4, 6, 3),
                None,
                FastPath::FlipSign,
            ),
            (
                spec(DType::U8, q(0.02, 100), 4, 6, 3),
                Some(custom),
                FastPath::None,
            ),
            (
                spec(DType::F32, None, 4, 6, 3),
                Some(custom),
                FastPath::None,
            ),
        ];
        for (s, norm, fast) in specs {
            let n = norm.unwrap_or_else(|| Normalization::default_for(&s, None));
            let lut = InputLut::new(s.dtype, effective_quant(&s), &n);
            assert_eq!(lut.fast_path(3), fast, "{:?}", s.dtype);
            let elem = if s.dtype == DType::F32 { 4 } else { 1 };
            let mut two_step = vec![0u8; rgb.len() * elem];
            quantize_into(&rgb, 3, &lut, &mut two_step).unwrap();
            let mut fused = vec![0xA5u8; rgb.len() * elem];
            yuyv_into_tensor(&src, w, h, stride, &lut, &mut Vec::new(), &mut fused).unwrap();
            assert_eq!(fused, two_step, "{:?} {fast:?}", s.dtype);

            // The Preprocessor takes the fused path for a frame of the input's
            // size, without a full-frame intermediate buffer.
            let mut p = Preprocessor::new(&s, FitMode::Stretch, n).unwrap();
            let mut f = rgb_frame(w, h, src.clone());
            f.format = PixelFormat::Yuyv;
            f.stride = stride;
            let mut via_prepare = vec![0u8; rgb.len() * elem];
            let prep = p.prepare(&f, 1000, &mut via_prepare).unwrap();
            assert_eq!(via_prepare, two_step, "{:?} via prepare", s.dtype);
            assert!(prep.mapping.is_identity());
            assert_eq!(
                p.decoded.capacity(),
                0,
                "fused path must not decode into a frame buffer"
            );
        }
        // A tensor of the wrong size is an error, not a panic or a partial write.
        let s = spec(DType::U8, q(1.0 / 128.0, 128), 4, 6, 3);
        let lut = InputLut::new(
            DType::U8,
            effective_quant(&s),
            &Normalization::default_for(&s, None),
        );
        let mut short = vec![0u8; rgb.len() - 1];
        assert!(matches!(
            yuyv_into_tensor(&src, w, h, stride, &lut, &mut Vec::new(), &mut short),
            Err(InferenceError::Image(_))
        ));
        assert!(matches!(
            yuyv_into_tensor(
                &src[..10],
                w,
                h,
                stride,
                &lut,
                &mut Vec::new(),
                &mut vec![0u8; rgb.len()]
            ),
            Err(InferenceError::Image(_))
        ));
    }

    #[test]
    fn scaled_jpeg_decode_reports_scale_and_full_size() {
        // Catches auto scaling being ignored, reported against the decoded
        // (smaller) size, or applied when `off` asks for the reference path.
        let (w, h) = (640u32, 480u32);
        let rgb: Vec<u8> = (0..w * h)
            .flat_map(|i| [(i % w) as u8, (i / w) as u8, 128])
            .collect();
        let mut jpeg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 90)
            .encode(&rgb, w, h, image::ExtendedColorType::Rgb8)
            .unwrap();
        let s = spec(DType::U8, q(1.0 / 128.0, 128), 224, 224, 3);
        let n = Normalization::default_for(&s, None);
        let frame = Frame {
            format: PixelFormat::Encoded,
            width: 0,
            height: 0,
            stride: 0,
            ..rgb_frame(0, 0, jpeg)
        };
        let mut dst = vec![0u8; 224 * 224 * 3];
        let mut auto = Preprocessor::new(&s, FitMode::Stretch, n)
            .unwrap()
            .with_jpeg_scaling(JpegScaling::Auto);
        let a = auto.prepare(&frame, 1_000_000, &mut dst).unwrap();
        assert_eq!(a.jpeg_scale, 2);
        assert_eq!((a.mapping.src_width, a.mapping.src_height), (w, h));
        let (x, y) = a.mapping.to_source(224.0, 224.0);
        assert!(
            (x - 640.0).abs() < 1e-9 && (y - 480.0).abs() < 1e-9,
            "({x}, {y})"
        );
        let mut off = Preprocessor::new(&s, FitMode::Stretch, n).unwrap();
        let o = off.prepare(&frame, 1_000_000, &mut dst).unwrap();
        assert_eq!(o.jpeg_scale, 1);
        assert_eq!((o.mapping.src_width, o.mapping.src_height), (w, h));
        // The pixel budget is checked on the full size, before decoding.
        let e = auto
            .prepare(&frame, 300_000, &mut dst)
            .unwrap_err()
            .to_string();
        assert!(e.contains("307200 pixels"), "{e}");
        // A truncated JPEG is an error from the scaled path too.
        let mut cut = frame.clone();
        cut.data.truncate(cut.data.len() / 3);
        let r = auto.prepare(&cut, 1_000_000, &mut dst);
        assert!(
            r.is_ok() || matches!(r, Err(InferenceError::Image(_))),
            "{r:?}"
        );
        cut.data.truncate(40);
        assert!(matches!(
            auto.prepare(&cut, 1_000_000, &mut dst),
            Err(InferenceError::Image(_))
        ));
    }

    #[test]
    fn decoder_rejects_unknown_and_oversized_images() {
        // Catches decompression bombs being decoded and garbage reaching the decoder.
        let mut out = Vec::new();
        let e = decode_rgb(b"GIF89a....", 100, &mut out)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unrecognised"), "{e}");
        let mut png = Vec::new();
        image::RgbImage::new(64, 64)
            .write_to(&mut Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        let e = decode_rgb(&png, 1000, &mut out).unwrap_err().to_string();
        assert!(e.contains("4096 pixels"), "{e}");
        assert_eq!(decode_rgb(&png, 5000, &mut out).unwrap(), (64, 64));
        assert_eq!(out.len(), 64 * 64 * 3);
    }

    #[test]
    fn rejects_non_image_input_shapes() {
        // Catches a model with a non-NHWC input being fed image bytes.
        let s = TensorSpec {
            name: "x".into(),
            shape: vec![1, 10],
            dtype: DType::F32,
            quant: None,
        };
        assert!(Preprocessor::new(&s, FitMode::Stretch, Normalization::uniform(0.0, 1.0)).is_err());
    }
}
