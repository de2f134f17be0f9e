//! Pre-processing: from a captured [`Frame`] to the bytes of a model's input tensor.
//!
//! This module owns the [`Preprocessor`]: for one model input it decodes a
//! frame (JPEG/PNG/BMP sniffed by magic bytes, YUYV, YUV 4:2:0, RGB8; the
//! format-level work is [`crate::image`]'s), resizes it to the model's input size and
//! quantizes it into the input tensor. The functions are pure; a
//! [`Preprocessor`] only carries buffers reused from frame to frame and
//! tables computed once per model.
//!
//! Files: `geometry.rs` fits a source to the input size ([`FitMode`],
//! [`Mapping`], the bilinear resize, the JPEG scaling denominator);
//! `quantize.rs` maps pixel values to tensor elements ([`Normalization`],
//! [`InputLut`]); `yuyv.rs` converts YUYV and YUV 4:2:0 (I420, NV12) frames
//! of the input's own size straight into the tensor; `resample.rs` tests the
//! resampler (the `spotter-resample` crate); this file chains them per frame.
//!
//! # JPEG decoding and DCT-domain downscaling
//! JPEG frames are decoded with libjpeg-turbo. [`JpegScaling::Auto`] (the
//! daemon's default) lets its IDCT scale by 1/2, 1/4 or 1/8: the largest
//! factor whose output still covers the model input without upscaling on
//! either axis ([`jpeg_scale_denom`]). The bilinear resize then finishes the
//! job from the smaller image, and the reported [`Mapping`] still refers to
//! the full frame. [`JpegScaling::Off`] is the reference path: a full-size
//! decode, then bilinear; it reproduces the Pillow-made reference input
//! tensors byte for byte (libjpeg-turbo is Pillow's decoder too, and the
//! resampler, `spotter-resample`, is Pillow's arithmetic) and is what
//! [`Preprocessor::new`] uses unless told otherwise. Why libjpeg-turbo, with
//! measurements: [`crate::image::decode`].
//!
//! # Region of interest
//! With `model.roi` (a classifier's, issue 18) only that rectangle of each
//! frame is pre-processed: the frame is decoded (a JPEG scaled in the DCT
//! by the largest factor that keeps the *ROI* covering the input), cropped,
//! then fitted to the input as a whole frame would be. YUV frames of the
//! input's own size then take the RGB path (the crop is not the input's
//! size). The [`Mapping`] still refers to the full frame. `roi_tests.rs`
//! holds its tests.
//!
//! # Letterbox
//! The content is resized on its own and quantized straight into its rows
//! of the tensor; the padding is one quantized pixel repeated. When the
//! decoded frame already has the content's size (a 1280×720 JPEG decoded at
//! 1/2 for a 640×640 input), nothing is resized at all.
//!
//! Privacy masks (issue 23): [`Preprocessor::prepare_masked`] fills a
//! source's masks in the decoded pixels, so with `privacy.mask_inference`
//! (the default) the model never sees what is masked.
//!
//! Why one file over 600 lines: some 300 of them are the tests of the
//! per-frame chain (decode, fit, quantize, buffer release), kept beside it.

mod geometry;
mod quantize;
mod resample;
#[cfg(test)]
mod roi_tests;
mod yuyv;

use std::time::Instant;

use super::{InferenceError, TensorSpec};
use crate::config::{JpegScaling, Roi};
use crate::core::frame::{Frame, PixelFormat};
use crate::image::decode::{check_budget, decode_rgb, JpegDecoder};
use geometry::{letterbox_content, resize_rgb};
use quantize::{quantize_with, FastPath};
use resample::Resampler;
use yuyv::{yuv420_into_tensor_with, yuyv_into_tensor_with};

/// Sniffing belongs to [`crate::image::decode`]; re-exported for the callers
/// that name this path (`api::classify`).
pub use crate::image::decode::{sniff, ImageKind};
use crate::image::mask::SourceMasks;
pub use geometry::{jpeg_scale_denom, FitMode, Mapping};
pub use quantize::{effective_quant, quantize_into, InputLut, Normalization};
pub use yuyv::yuyv_into_tensor;

/// Default pixel budget for a decoded frame (width × height).
pub(crate) const DEFAULT_MAX_PIXELS: u64 = 40_000_000;

/// Scratch capacity a [`Preprocessor`] may keep between frames whatever the
/// frames need (8 MiB: a 1920×1440 RGB frame decoded at full size).
/// Beyond it, a buffer keeps its capacity only while consecutive frames need
/// that much (a steady camera size); one large image (an upload of tens of
/// megapixels) has its buffers freed as soon as it is done.
pub(crate) const RETAIN_FLOOR_BYTES: usize = 8 << 20;

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
    /// The source pixel letterbox padding is made of: by default the one
    /// that maps closest to 0.0 ([`Preprocessor::with_pad`]).
    pad: [u8; 3],
    decoded: Vec<u8>,
    resized: Vec<u8>,
    boxed: Vec<u8>,
    gray: Vec<u8>,
    row: Vec<u8>,
    resampler: Resampler,
    /// libjpeg-turbo, set up on the first JPEG frame in `Auto` mode.
    jpeg: JpegDecoder,
    /// Bytes of `decoded` the previous frame used (see [`RETAIN_FLOOR_BYTES`]).
    decoded_prev: usize,
    /// `model.roi` (issue 18): the part of each frame that is pre-processed.
    roi: Option<Roi>,
    /// The ROI's pixels, cropped out of the decoded frame.
    cropped: Vec<u8>,
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
            .field("pad", &self.pad)
            .finish_non_exhaustive()
    }
}

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
            resampler: Resampler::new(),
            jpeg: JpegDecoder::default(),
            decoded_prev: 0,
            roi: None,
            cropped: Vec::new(),
        })
    }

    /// Scratch bytes held between frames (the capacity of every reusable
    /// buffer), for the memory tests.
    #[cfg(test)]
    pub(crate) fn retained_bytes(&self) -> usize {
        [
            &self.decoded,
            &self.resized,
            &self.boxed,
            &self.gray,
            &self.row,
            &self.cropped,
        ]
        .iter()
        .map(|v| v.capacity())
        .sum::<usize>()
            + self.resampler.retained_bytes()
    }

    /// After a frame: free the decode buffer when it holds more than
    /// [`RETAIN_FLOOR_BYTES`] and more than twice what either this frame or
    /// the previous one needed at the smaller of the two, so a steady camera
    /// size keeps its buffer and one large image does not pin its pixels
    /// until the next model reload. The resampler's own buffers follow the
    /// source size; they are released with it.
    fn release_scratch(&mut self) {
        let now = self.decoded.len();
        let steady = now.min(self.decoded_prev);
        self.decoded_prev = now;
        if self.decoded.capacity() > RETAIN_FLOOR_BYTES.max(2 * steady) {
            self.decoded = Vec::new();
            self.resampler.release();
        }
        // The row buffer follows the frame width (YUYV); the others the model input.
        if self.row.capacity() > RETAIN_FLOOR_BYTES {
            self.row = Vec::new();
        }
        if self.cropped.capacity() > RETAIN_FLOOR_BYTES.max(2 * self.cropped.len()) {
            self.cropped = Vec::new();
        }
    }

    /// A pre-processor with the same settings and tables (input size, fit,
    /// normalization, JPEG scaling, pad) and buffers of its own, for another
    /// thread preparing frames for the same model.
    pub fn with_own_buffers(&self) -> Preprocessor {
        Preprocessor {
            width: self.width,
            height: self.height,
            channels: self.channels,
            fit: self.fit,
            normalization: self.normalization,
            jpeg_scaling: self.jpeg_scaling,
            lut: self.lut.clone(),
            fast: self.fast,
            pad: self.pad,
            decoded: Vec::new(),
            resized: Vec::new(),
            boxed: Vec::new(),
            gray: Vec::new(),
            row: Vec::new(),
            resampler: Resampler::new(),
            jpeg: JpegDecoder::default(),
            decoded_prev: 0,
            roi: self.roi,
            cropped: Vec::new(),
        }
    }

    /// Pad letterboxed frames with `pad` (a source pixel, R, G, B: it is
    /// normalized and quantized like the frame's own pixels). Ultralytics
    /// YOLO expects 114 grey; the default is the pixel that normalizes to
    /// 0.0 (the neutral pixel).
    pub fn with_pad(mut self, pad: [u8; 3]) -> Preprocessor {
        self.pad = pad;
        self
    }

    /// The source pixel letterboxed frames are padded with.
    pub fn pad(&self) -> [u8; 3] {
        self.pad
    }

    /// Pre-process only `roi` of each frame (`model.roi`, issue 18): the
    /// frame is cropped to it after decoding, before the fit to the input;
    /// the reported [`Mapping`] still refers to the full frame.
    pub fn with_roi(mut self, roi: Option<Roi>) -> Preprocessor {
        self.roi = roi;
        self
    }

    /// Choose how JPEG frames are decoded.
    pub fn with_jpeg_scaling(mut self, jpeg_scaling: JpegScaling) -> Preprocessor {
        self.jpeg_scaling = jpeg_scaling;
        self
    }

    /// Model input size (width, height).
    pub(crate) fn input_size(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    pub(crate) fn normalization(&self) -> Normalization {
        self.normalization
    }

    pub(crate) fn fit(&self) -> FitMode {
        self.fit
    }

    pub(crate) fn jpeg_scaling(&self) -> JpegScaling {
        self.jpeg_scaling
    }

    /// Decode `frame`, resize it and quantize it into `dst` (the input tensor).
    /// Scratch buffers are kept for the next frame within the bounds
    /// `release_scratch` sets, also when the frame fails.
    pub fn prepare(
        &mut self,
        frame: &Frame,
        max_pixels: u64,
        dst: &mut [u8],
    ) -> Result<Prepared, InferenceError> {
        self.prepare_masked(frame, max_pixels, dst, None)
    }

    /// [`prepare`](Self::prepare), with the source's privacy masks (issue
    /// 23) filled in the decoded pixels before they are cropped and resized
    /// (no extra decode or encode; the masks are normalized, so a copy
    /// scaled in the DCT is masked alike).
    pub(crate) fn prepare_masked(
        &mut self,
        frame: &Frame,
        max_pixels: u64,
        dst: &mut [u8],
        masks: Option<&SourceMasks>,
    ) -> Result<Prepared, InferenceError> {
        let r = self.prepare_frame(frame, max_pixels, dst, masks);
        self.release_scratch();
        r
    }

    fn prepare_frame(
        &mut self,
        frame: &Frame,
        max_pixels: u64,
        dst: &mut [u8],
        masks: Option<&SourceMasks>,
    ) -> Result<Prepared, InferenceError> {
        let t0 = Instant::now();
        // Its length is what this frame needs (`release_scratch`); paths that
        // decode nothing leave it empty.
        self.decoded.clear();
        let (w, h) = (frame.width, frame.height);
        // A masked frame is always copied into `decoded` (the fill needs a
        // buffer of its own).
        let contiguous_rgb = frame.format == PixelFormat::Rgb8
            && frame.stride as u64 == u64::from(w) * 3
            && masks.is_none();
        // Full-size source dimensions when the decoded image is a scaled copy.
        let mut full = None;
        let mut jpeg_scale = 1;
        let (sw, sh) = match frame.format {
            PixelFormat::Encoded => {
                // JPEGs always go to libjpeg-turbo (Pillow's decoder too);
                // `Off` only keeps it from scaling in the DCT.
                let turbo = sniff(&frame.data) == Some(ImageKind::Jpeg);
                let (dw, dh, fit) = (self.width, self.height, self.fit);
                let scaled = self.jpeg_scaling == JpegScaling::Auto;
                let roi = self.roi;
                match turbo
                    .then(|| {
                        self.jpeg.decode_scaled(
                            &frame.data,
                            max_pixels,
                            &mut self.decoded,
                            |fw, fh| {
                                if scaled {
                                    // The ROI must still cover the input.
                                    let (_, _, cw, ch) =
                                        roi.map_or((0, 0, fw, fh), |r| r.pixels(fw, fh));
                                    jpeg_scale_denom(cw, ch, dw, dh, fit)
                                } else {
                                    1
                                }
                            },
                        )
                    })
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
            // Raw YUV of the input's own size: converted straight into the
            // tensor, quantization fused in.
            PixelFormat::Yuyv | PixelFormat::I420 | PixelFormat::Nv12
                if w == self.width
                    && h == self.height
                    && self.channels == 3
                    && self.roi.is_none()
                    && masks.is_none() =>
            {
                check_budget(w, h, max_pixels)?;
                let dims = (w, h, frame.stride);
                let lut = (&self.lut, self.fast);
                if frame.format == PixelFormat::Yuyv {
                    yuyv_into_tensor_with(&frame.data, dims, lut, &mut self.row, dst)?;
                } else {
                    yuv420_into_tensor_with(
                        frame.format,
                        &frame.data,
                        dims,
                        lut,
                        &mut self.row,
                        dst,
                    )?;
                }
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
            PixelFormat::Yuyv | PixelFormat::I420 | PixelFormat::Nv12 => {
                check_budget(w, h, max_pixels)?;
                self.decoded.clear();
                self.decoded.resize(w as usize * h as usize * 3, 0);
                let (data, stride, rgb) = (&frame.data, frame.stride, &mut self.decoded);
                let converted = if frame.format == PixelFormat::Yuyv {
                    crate::image::yuyv::yuyv_to_rgb(data, w, h, stride, rgb)
                        .map_err(|e| e.to_string())
                } else {
                    crate::image::yuv420::yuv420_to_rgb(frame.format, data, w, h, stride, rgb)
                        .map_err(|e| e.to_string())
                };
                converted.map_err(InferenceError::Image)?;
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
        if let Some(m) = masks {
            m.fill_rgb(&mut self.decoded, sw, sh);
        }
        let decode_us = t0.elapsed().as_micros() as u64;
        let src: &[u8] = if contiguous_rgb {
            &frame.data[..sw as usize * sh as usize * 3]
        } else {
            &self.decoded
        };
        // `model.roi`: only that part of the decoded frame goes on.
        let (src, crop) = match self.roi {
            Some(roi) => {
                let (x, y, cw, ch) = roi.pixels(sw, sh);
                crop_rgb(src, sw, (x, y, cw, ch), &mut self.cropped);
                (&self.cropped[..], Some((x, y, cw, ch)))
            }
            None => (src, None),
        };
        let (cw, ch) = crop.map_or((sw, sh), |(_, _, cw, ch)| (cw, ch));
        let (mapping, resize_us, quantize_us) = prepare_pixels(
            src,
            cw,
            ch,
            (self.width, self.height, self.channels),
            self.fit,
            self.pad,
            (&self.lut, self.fast),
            &mut Scratch {
                resampler: &mut self.resampler,
                resized: &mut self.resized,
                boxed: &mut self.boxed,
                gray: &mut self.gray,
            },
            dst,
        )?;
        let mapping = match crop {
            Some((x, y, _, _)) => mapping.with_crop(x, y, sw, sh),
            None => mapping,
        };
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
}

/// Copy the `w`×`h` rectangle at (`x`, `y`) of packed RGB8 `src` (rows of
/// `sw` pixels) into `out`. The rectangle is inside `src` (`Roi::pixels`).
fn crop_rgb(src: &[u8], sw: u32, (x, y, w, h): (u32, u32, u32, u32), out: &mut Vec<u8>) {
    let (row, stride, x0) = (w as usize * 3, sw as usize * 3, x as usize * 3);
    out.clear();
    for r in y as usize..(y + h) as usize {
        out.extend_from_slice(&src[r * stride + x0..r * stride + x0 + row]);
    }
}

struct Scratch<'a> {
    resampler: &'a mut Resampler,
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
    if channels == 3 && fit == FitMode::Letterbox && !mapping.is_identity() {
        // The content is resized on its own (not at all when the source
        // already has the content's size, e.g. a JPEG scaled in the DCT) and
        // quantized straight into its rows of the tensor; the padding is
        // one quantized pixel repeated.
        let (content, rect) = letterbox_content(s.resampler, src, (sw, sh), (dw, dh), s.boxed);
        let resize_us = t0.elapsed().as_micros() as u64;
        let t1 = Instant::now();
        quantize_letterboxed(content, rect, (dw, dh), pad, (lut, fast), dst)?;
        return Ok((mapping, resize_us, t1.elapsed().as_micros() as u64));
    }
    let resized: &[u8] = if mapping.is_identity() {
        src
    } else {
        resize_rgb(s.resampler, src, &mapping, pad, s.resized, s.boxed);
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

/// Quantize `content` (`w`×`h` packed RGB8) into the RGB tensor `dst` of
/// `dw`×`dh` at (`x`, `y`), and `pad` everywhere else.
fn quantize_letterboxed(
    content: &[u8],
    (x, y, w, h): (u32, u32, u32, u32),
    (dw, dh): (u32, u32),
    pad: [u8; 3],
    (lut, fast): (&InputLut, FastPath),
    dst: &mut [u8],
) -> Result<(), InferenceError> {
    let elem = match lut {
        InputLut::Bytes(_) => 1,
        InputLut::Floats(_) => 4,
    };
    let px = 3 * elem;
    let row = dw as usize * px;
    if dst.len() != row * dh as usize || content.len() != w as usize * h as usize * 3 {
        return Err(InferenceError::Image(format!(
            "letterbox: {} content bytes for {w}x{h} into a {}-byte tensor of {dw}x{dh}",
            content.len(),
            dst.len()
        )));
    }
    let mut pad_q = [0u8; 12];
    quantize_with(&pad, 3, lut, fast, &mut pad_q[..px])?;
    let pad_q = &pad_q[..px];
    let (x, y, w, h) = (x as usize, y as usize, w as usize, h as usize);
    let pad = |px_run: &mut [u8]| {
        px_run
            .chunks_exact_mut(px)
            .for_each(|p| p.copy_from_slice(pad_q))
    };
    let (top, rest) = dst.split_at_mut(y * row);
    let (middle, bottom) = rest.split_at_mut(h * row);
    // Padding rows: the first one pixel by pixel, the others copied from it.
    for rows in [top, bottom] {
        if let Some((first, others)) = rows.split_at_mut_checked(row) {
            pad(first);
            others
                .chunks_exact_mut(row)
                .for_each(|r| r.copy_from_slice(first));
        }
    }
    for (line, src) in middle
        .chunks_exact_mut(row)
        .zip(content.chunks_exact(w * 3))
    {
        let (left, right) = line.split_at_mut(x * px);
        let (inside, right) = right.split_at_mut(w * px);
        pad(left);
        pad(right);
        quantize_with(src, 3, lut, fast, inside)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inference::{DType, Quant};

    pub(super) fn spec(
        dtype: DType,
        quant: Option<Quant>,
        h: usize,
        w: usize,
        c: usize,
    ) -> TensorSpec {
        TensorSpec {
            name: "input".into(),
            shape: vec![1, h, w, c],
            dtype,
            quant,
        }
    }

    pub(super) fn q(scale: f32, zero_point: i32) -> Option<Quant> {
        Some(Quant { scale, zero_point })
    }

    pub(super) fn rgb_frame(w: u32, h: u32, data: Vec<u8>) -> Frame {
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

    // Would catch `with_pad` ignored (YOLO fed the neutral grey instead of
    // 114, shifting every score), the pad applied after quantization
    // instead of before (a float input would get 114.0, not 114/255), the
    // content overwritten, or `pad()` reporting something else.
    #[test]
    fn letterbox_pads_with_the_value_set() {
        let s = spec(DType::U8, None, 6, 6, 3);
        let n = Normalization::default_for(&s, None);
        let p = Preprocessor::new(&s, FitMode::Letterbox, n).unwrap();
        let neutral = p.pad();
        let mut p = p.with_pad([114, 114, 114]);
        assert_eq!(p.pad(), [114, 114, 114]);
        assert_ne!(neutral, p.pad());
        // A 6x2 frame into 6x6: rows 0-1 and 4-5 are padding.
        let frame = rgb_frame(6, 2, [10u8, 20, 30].repeat(12));
        let mut dst = vec![0u8; 6 * 6 * 3];
        p.prepare(&frame, 1000, &mut dst).unwrap();
        let row = 6 * 3;
        assert!(dst[..2 * row].iter().all(|&v| v == 114), "{dst:?}");
        assert!(dst[4 * row..].iter().all(|&v| v == 114), "{dst:?}");
        assert_eq!(&dst[2 * row..4 * row], [10u8, 20, 30].repeat(12).as_slice());
        // Per channel, and through a float input's normalization (x / 255).
        let f = spec(DType::F32, None, 4, 4, 3);
        let mut p = Preprocessor::new(&f, FitMode::Letterbox, Normalization::uniform(0.0, 255.0))
            .unwrap()
            .with_pad([255, 0, 51]);
        let mut dst = vec![0u8; 4 * 4 * 3 * 4];
        p.prepare(&rgb_frame(4, 2, vec![0; 4 * 2 * 3]), 1000, &mut dst)
            .unwrap();
        let first: Vec<f32> = dst[..12]
            .chunks_exact(4)
            .map(|b| f32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        assert!(
            first
                .iter()
                .zip([1.0, 0.0, 0.2])
                .all(|(a, b)| (a - b).abs() < 1e-6),
            "{first:?}"
        );
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

    // Would catch a large upload pinning its decoded pixels until the next
    // model reload (one 36-megapixel upload left RSS at 157 MiB): after a
    // 20-megapixel image, with and without JPEG scaling, the scratch held is
    // back within the floor, while a steady camera size keeps its buffer.
    #[test]
    fn large_image_buffers_are_released_and_steady_ones_kept() {
        let s = spec(DType::U8, q(1.0 / 128.0, 128), 224, 224, 3);
        let n = Normalization::default_for(&s, None);
        let encode = |w: u32, h: u32, format: image::ImageFormat| {
            let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([x as u8, y as u8, 77]));
            let mut out = std::io::Cursor::new(Vec::new());
            img.write_to(&mut out, format).unwrap();
            Frame {
                format: PixelFormat::Encoded,
                ..rgb_frame(0, 0, out.into_inner())
            }
        };
        let big = encode(5000, 4000, image::ImageFormat::Png);
        let camera = encode(1280, 720, image::ImageFormat::Png);
        let mut dst = vec![0u8; 224 * 224 * 3];
        for scaling in [JpegScaling::Off, JpegScaling::Auto] {
            let mut p = Preprocessor::new(&s, FitMode::Stretch, n)
                .unwrap()
                .with_jpeg_scaling(scaling);
            p.prepare(&camera, 40_000_000, &mut dst).unwrap();
            p.prepare(&camera, 40_000_000, &mut dst).unwrap();
            let steady = p.retained_bytes();
            assert!(steady >= 1280 * 720 * 3, "camera buffer not kept: {steady}");
            p.prepare(&big, 40_000_000, &mut dst).unwrap();
            let after = p.retained_bytes();
            assert!(
                after <= RETAIN_FLOOR_BYTES + 4 * 224 * 224 * 3,
                "{scaling:?}: {after} bytes kept after a 20 Mpx image"
            );
            // A refused (over-budget) image does not pin anything either.
            assert!(p.prepare(&big, 1_000_000, &mut dst).is_err());
            assert!(p.retained_bytes() <= RETAIN_FLOOR_BYTES + 4 * 224 * 224 * 3);
        }
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
