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

use std::io::Cursor;
use std::time::Instant;

use fast_image_resize as fir;
use serde::{Deserialize, Serialize};

use super::{DType, InferenceError, Quant, TensorSpec};
use crate::capture::{Frame, PixelFormat};

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

/// Per-channel `real = (p - mean) / std` applied to pixel values in [0, 255].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Normalization {
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl Normalization {
    /// The same mean and std for every channel.
    pub fn uniform(mean: f32, std: f32) -> Normalization {
        Normalization { mean: [mean; 3], std: [std; 3] }
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
        let n = Normalization { mean: pick(mean)?, std: pick(std)? };
        n.validate().ok().map(|()| n)
    }

    /// Check that every std is non-zero and every value finite.
    pub fn validate(&self) -> Result<(), String> {
        if self.mean.iter().chain(&self.std).any(|v| !v.is_finite()) || self.std.contains(&0.0) {
            return Err(format!("invalid normalization {self:?}: values must be finite and std non-zero"));
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
        _ => Quant { scale: 1.0, zero_point: 0 },
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
    pub fn new(fit: FitMode, src_width: u32, src_height: u32, dst_width: u32, dst_height: u32) -> Mapping {
        let (sw, sh, dw, dh) = (f64::from(src_width), f64::from(src_height), f64::from(dst_width), f64::from(dst_height));
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
        Mapping { fit, src_width, src_height, dst_width, dst_height, scale_x, scale_y, offset_x, offset_y }
    }

    /// True when no resampling is needed (same size; every fit mode is then the identity).
    pub fn is_identity(&self) -> bool {
        self.src_width == self.dst_width && self.src_height == self.dst_height
    }

    /// Source-image coordinates of model-input point `(x, y)` (pixels).
    pub fn to_source(&self, x: f64, y: f64) -> (f64, f64) {
        (x * self.scale_x + self.offset_x, y * self.scale_y + self.offset_y)
    }

    /// A box in normalized model-input coordinates (`ymin, xmin, ymax, xmax`,
    /// as SSD emits them) as `(x, y, width, height)` in source pixels, clipped
    /// to the image. `None` if nothing of it lies inside the image.
    pub fn norm_box_to_source(&self, ymin: f32, xmin: f32, ymax: f32, xmax: f32) -> Option<(f32, f32, f32, f32)> {
        let (dw, dh) = (f64::from(self.dst_width), f64::from(self.dst_height));
        let (x0, y0) = self.to_source(f64::from(xmin.min(xmax)) * dw, f64::from(ymin.min(ymax)) * dh);
        let (x1, y1) = self.to_source(f64::from(xmin.max(xmax)) * dw, f64::from(ymin.max(ymax)) * dh);
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
pub fn decode_rgb(bytes: &[u8], max_pixels: u64, out: &mut Vec<u8>) -> Result<(u32, u32), InferenceError> {
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
        let rgb = image::DynamicImage::from_decoder(decoder).map_err(err)?.into_rgb8();
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
        let real = |c: usize, p: usize| (p as f64 - f64::from(norm.mean[c])) / f64::from(norm.std[c]);
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
                let (lo, hi) = if dtype == DType::U8 { (0.0, 255.0) } else { (-128.0, 127.0) };
                let mut t = Box::new([[0u8; 256]; 3]);
                for (c, row) in t.iter_mut().enumerate() {
                    for (p, v) in row.iter_mut().enumerate() {
                        let q = (real(c, p) / f64::from(quant.scale)).round() + f64::from(quant.zero_point);
                        *v = (q.clamp(lo, hi) as i32) as u8;
                    }
                }
                InputLut::Bytes(t)
            }
        }
    }

    fn fast_path(&self, channels: usize) -> FastPath {
        let InputLut::Bytes(t) = self else { return FastPath::None };
        let rows = &t[..channels];
        if rows.iter().all(|r| r.iter().enumerate().all(|(p, &q)| q as usize == p)) {
            FastPath::Copy
        } else if rows.iter().all(|r| r.iter().enumerate().all(|(p, &q)| q == (p as u8) ^ 0x80)) {
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
pub fn quantize_into(src: &[u8], channels: usize, lut: &InputLut, dst: &mut [u8]) -> Result<(), InferenceError> {
    let elem = if matches!(lut, InputLut::Floats(_)) { 4 } else { 1 };
    if dst.len() != src.len() * elem || channels == 0 || channels > 3 {
        return Err(InferenceError::Image(format!(
            "quantize: {} pixel bytes with {channels} channels do not fill a {}-byte tensor",
            src.len(),
            dst.len()
        )));
    }
    match (lut, lut.fast_path(channels)) {
        (_, FastPath::Copy) => dst.copy_from_slice(src),
        (_, FastPath::FlipSign) => {
            for (d, s) in dst.iter_mut().zip(src) {
                *d = s ^ 0x80;
            }
        }
        (InputLut::Bytes(t), FastPath::None) => {
            for (d, s) in dst.chunks_exact_mut(channels).zip(src.chunks_exact(channels)) {
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

/// Timings and geometry of one pre-processed frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Prepared {
    pub mapping: Mapping,
    pub decode_us: u64,
    pub resize_us: u64,
    pub quantize_us: u64,
}

/// Pre-processing state for one model input: tables and reusable buffers.
pub struct Preprocessor {
    width: u32,
    height: u32,
    channels: usize,
    fit: FitMode,
    normalization: Normalization,
    lut: InputLut,
    /// The source pixel that maps closest to 0.0, used for letterbox padding.
    pad: [u8; 3],
    decoded: Vec<u8>,
    resized: Vec<u8>,
    boxed: Vec<u8>,
    gray: Vec<u8>,
    resizer: fir::Resizer,
}

impl std::fmt::Debug for Preprocessor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Preprocessor")
            .field("width", &self.width)
            .field("height", &self.height)
            .field("channels", &self.channels)
            .field("fit", &self.fit)
            .field("normalization", &self.normalization)
            .finish_non_exhaustive()
    }
}

impl Preprocessor {
    /// Prepare for an NHWC input tensor `[1, H, W, C]` with C = 1 (grey) or 3 (RGB).
    pub fn new(spec: &TensorSpec, fit: FitMode, normalization: Normalization) -> Result<Preprocessor, InferenceError> {
        let unsupported = |reason: String| InferenceError::Unsupported { path: String::new(), reason };
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
        let pad = std::array::from_fn(|c| normalization.mean[c].round().clamp(0.0, 255.0) as u8);
        Ok(Preprocessor {
            width,
            height,
            channels,
            fit,
            normalization,
            lut,
            pad,
            decoded: Vec::new(),
            resized: Vec::new(),
            boxed: Vec::new(),
            gray: Vec::new(),
            resizer: fir::Resizer::new(),
        })
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

    /// Decode `frame`, resize it and quantize it into `dst` (the input tensor).
    pub fn prepare(&mut self, frame: &Frame, max_pixels: u64, dst: &mut [u8]) -> Result<Prepared, InferenceError> {
        let t0 = Instant::now();
        let (w, h) = (frame.width, frame.height);
        let contiguous_rgb = frame.format == PixelFormat::Rgb8 && frame.stride as u64 == u64::from(w) * 3;
        let (sw, sh) = match frame.format {
            PixelFormat::Encoded => decode_rgb(&frame.data, max_pixels, &mut self.decoded)?,
            PixelFormat::Yuyv => {
                check_budget(w, h, max_pixels)?;
                self.decoded.clear();
                self.decoded.resize(w as usize * h as usize * 3, 0);
                crate::capture::yuyv::yuyv_to_rgb(&frame.data, w, h, frame.stride, &mut self.decoded)
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
                        self.decoded.extend_from_slice(&frame.data[r * stride..r * stride + row]);
                    }
                }
                (w, h)
            }
        };
        let decode_us = t0.elapsed().as_micros() as u64;
        let src: &[u8] = if contiguous_rgb { &frame.data[..sw as usize * sh as usize * 3] } else { &self.decoded };
        let (mapping, resize_us, quantize_us) = prepare_pixels(
            src,
            sw,
            sh,
            (self.width, self.height, self.channels),
            self.fit,
            self.pad,
            &self.lut,
            &mut Scratch { resizer: &mut self.resizer, resized: &mut self.resized, boxed: &mut self.boxed, gray: &mut self.gray },
            dst,
        )?;
        Ok(Prepared { mapping, decode_us, resize_us, quantize_us })
    }
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
    lut: &InputLut,
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
            ((u32::from(p[0]) * 19595 + u32::from(p[1]) * 38470 + u32::from(p[2]) * 7471 + 0x8000) >> 16) as u8
        }));
        s.gray
    } else {
        resized
    };
    let resize_us = t0.elapsed().as_micros() as u64;
    let t1 = Instant::now();
    quantize_into(pixels, channels, lut, dst)?;
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
    let (sw, sh, dw, dh) = (mapping.src_width, mapping.src_height, mapping.dst_width, mapping.dst_height);
    let src_img = fir::images::ImageRef::new(sw, sh, src, fir::PixelType::U8x3).map_err(|e| err(&e))?;
    let alg = fir::ResizeOptions::new().resize_alg(fir::ResizeAlg::Convolution(fir::FilterType::Bilinear));
    out.clear();
    out.resize(dw as usize * dh as usize * 3, 0);
    match mapping.fit {
        FitMode::Stretch | FitMode::Crop => {
            let opts = if mapping.fit == FitMode::Crop {
                let (l, t, w, h) = crop_box(f64::from(sw), f64::from(sh), f64::from(dw), f64::from(dh));
                alg.crop(l, t, w, h)
            } else {
                alg
            };
            let mut dst_img = fir::images::Image::from_slice_u8(dw, dh, out, fir::PixelType::U8x3).map_err(|e| err(&e))?;
            resizer.resize(&src_img, &mut dst_img, &opts).map_err(|e| err(&e))?;
        }
        FitMode::Letterbox => {
            let (x, y, w, h) = letterbox_rect(sw, sh, dw, dh);
            tmp.clear();
            tmp.resize(w as usize * h as usize * 3, 0);
            let mut dst_img = fir::images::Image::from_slice_u8(w, h, tmp, fir::PixelType::U8x3).map_err(|e| err(&e))?;
            resizer.resize(&src_img, &mut dst_img, &alg).map_err(|e| err(&e))?;
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
        TensorSpec { name: "input".into(), shape: vec![1, h, w, c], dtype, quant }
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
                assert_eq!(lut.lookup(1, p), f32::from(p), "scale {scale} zp {zp} p {p}");
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
        assert_eq!(lut.lookup(0, 64), ((64.0f64 - 127.5) / 127.5 * 128.0).round() as f32 + 128.0);
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
        let meta = Normalization { mean: [0.0; 3], std: [255.0; 3] };
        assert_eq!(Normalization::default_for(&s, Some(meta)), meta);
        let mut dst = [0u8; 12];
        quantize_into(&[0, 255, 0], 3, &lut, &mut dst).unwrap();
        assert_eq!(f32::from_ne_bytes(dst[4..8].try_into().unwrap()), 1.0);
    }

    #[test]
    fn per_channel_normalization() {
        // Catches channel order mix-ups (R mean applied to B).
        let n = Normalization::from_lists(&[10.0, 20.0, 30.0], &[1.0, 1.0, 1.0]).unwrap();
        let lut = InputLut::new(DType::U8, Quant { scale: 1.0, zero_point: 0 }, &n);
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
        assert_eq!(l.norm_box_to_source(0.0, 0.0, 1.0, 1.0), Some((0.0, 0.0, 640.0, 480.0)));
        assert_eq!(l.norm_box_to_source(0.0, 0.0, 0.1, 1.0), None); // entirely in the padding
    }

    #[test]
    fn letterbox_pads_with_neutral_pixel_and_keeps_content() {
        // Catches letterbox content misplaced or padding with a non-neutral value.
        let s = spec(DType::U8, q(1.0 / 128.0, 128), 4, 4, 3);
        let mut p = Preprocessor::new(&s, FitMode::Letterbox, Normalization::default_for(&s, None)).unwrap();
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
        let mut p = Preprocessor::new(&s, FitMode::Stretch, Normalization::default_for(&s, None)).unwrap();
        let data: Vec<u8> = (0..18).map(|i| i * 13).collect();
        let mut dst = vec![0u8; 18];
        p.prepare(&rgb_frame(3, 2, data.clone()), 1000, &mut dst).unwrap();
        assert_eq!(dst, data);
    }

    #[test]
    fn strided_rgb_and_grey_input() {
        // Catches row padding leaking into pixels and wrong luma for 1-channel models.
        let s = spec(DType::U8, None, 1, 2, 1);
        let mut p = Preprocessor::new(&s, FitMode::Stretch, Normalization::default_for(&s, None)).unwrap();
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
        let mut p = Preprocessor::new(&s, FitMode::Stretch, Normalization::default_for(&s, None)).unwrap();
        // 2x2 white (Y=235, U=V=128 in studio range) with 2 padding bytes per row of garbage.
        let row = [235u8, 128, 235, 128, 0, 0];
        let mut f = rgb_frame(2, 2, [row, row].concat());
        f.format = PixelFormat::Yuyv;
        f.stride = 6;
        let mut dst = vec![0u8; 12];
        p.prepare(&f, 1000, &mut dst).unwrap();
        assert!(dst.iter().all(|&v| v >= 250), "{dst:?}");
        f.width = 3;
        assert!(matches!(p.prepare(&f, 1000, &mut dst), Err(InferenceError::Image(_))));
    }

    #[test]
    fn decoder_rejects_unknown_and_oversized_images() {
        // Catches decompression bombs being decoded and garbage reaching the decoder.
        let mut out = Vec::new();
        let e = decode_rgb(b"GIF89a....", 100, &mut out).unwrap_err().to_string();
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
        let s = TensorSpec { name: "x".into(), shape: vec![1, 10], dtype: DType::F32, quant: None };
        assert!(Preprocessor::new(&s, FitMode::Stretch, Normalization::uniform(0.0, 1.0)).is_err());
    }
}
