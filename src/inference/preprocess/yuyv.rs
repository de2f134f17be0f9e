//! Raw YUV frames (YUYV, and YUV 4:2:0 as I420 or NV12) of the model
//! input's own size, converted straight into the input tensor with
//! quantization fused in (no full-frame RGB buffer).
//!
//! The colour conversions themselves are [`crate::image::yuyv`]'s and
//! [`crate::image::yuv420`]'s; this module owns only writing their rows into
//! a tensor through an [`InputLut`].

use super::quantize::{quantize_bytes_in_place, quantize_with, FastPath, InputLut};
use crate::core::frame::PixelFormat;
use crate::image::yuv420::Yuv420;
use crate::inference::InferenceError;

/// Convert a YUYV frame whose size is the model input's straight into the
/// 3-channel input tensor `dst`, fused with quantization. Byte tensors: each
/// row is converted into its own place in `dst` and mapped through the table
/// there. Float tensors: each row goes through `row` (reused, one row long).
/// Gives exactly the bytes of [`yuyv_to_rgb`](crate::image::yuyv::yuyv_to_rgb)
/// followed by [`quantize_into`](super::quantize_into).
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
        (lut, lut.fast_path(3)),
        row,
        dst,
    )
}

pub(super) fn yuyv_into_tensor_with(
    src: &[u8],
    (width, height, stride): (u32, u32, u32),
    (lut, fast): (&InputLut, FastPath),
    row: &mut Vec<u8>,
    dst: &mut [u8],
) -> Result<(), InferenceError> {
    use crate::image::yuyv;
    let img_err = |e: yuyv::YuyvError| InferenceError::Image(e.to_string());
    yuyv::check_geometry(src.len(), width, height, stride).map_err(img_err)?;
    let stride = stride as usize;
    // check_geometry proved every row's `width * 2` bytes lie inside `src`.
    let src_row = |y: usize| &src[y * stride..y * stride + width as usize * 2];
    rows_into_tensor("YUYV", (width, height), (lut, fast), row, dst, |y, out| {
        yuyv::yuyv_to_rgb_row(src_row(y), out).map_err(img_err)
    })
}

/// A YUV 4:2:0 frame (I420 or NV12, [`PixelFormat`]'s layout) of the model
/// input's size, converted straight into the tensor like
/// [`yuyv_into_tensor`]: exactly the bytes of
/// [`yuv420_to_rgb`](crate::image::yuv420::yuv420_to_rgb) followed by
/// [`quantize_into`](super::quantize_into).
pub(super) fn yuv420_into_tensor_with(
    format: PixelFormat,
    src: &[u8],
    (width, height, stride): (u32, u32, u32),
    (lut, fast): (&InputLut, FastPath),
    row: &mut Vec<u8>,
    dst: &mut [u8],
) -> Result<(), InferenceError> {
    let frame = Yuv420::check(format, src.len(), width, height, stride)
        .map_err(|e| InferenceError::Image(e.to_string()))?;
    rows_into_tensor(
        "YUV 4:2:0",
        (width, height),
        (lut, fast),
        row,
        dst,
        |y, out| {
            frame.row_to_rgb(src, y, out);
            Ok(())
        },
    )
}

/// Fill the 3-channel tensor `dst` of `width`×`height` row by row: `convert`
/// writes RGB row `y` into the buffer it is given, which is the row's own
/// place in `dst` for byte tensors (then mapped through the table there) or
/// `row` (reused) for float tensors (then quantized into `dst`).
fn rows_into_tensor(
    what: &str,
    (width, height): (u32, u32),
    (lut, fast): (&InputLut, FastPath),
    row: &mut Vec<u8>,
    dst: &mut [u8],
    mut convert: impl FnMut(usize, &mut [u8]) -> Result<(), InferenceError>,
) -> Result<(), InferenceError> {
    let elem = if matches!(lut, InputLut::Floats(_)) {
        4
    } else {
        1
    };
    let rgb_row = width as usize * 3;
    let need = rgb_row * height as usize * elem;
    if dst.len() != need {
        return Err(InferenceError::Image(format!(
            "{what} {width}x{height} into a {}-byte tensor: needs {need} bytes",
            dst.len()
        )));
    }
    match lut {
        InputLut::Bytes(t) => {
            for (y, out) in dst.chunks_exact_mut(rgb_row).enumerate() {
                convert(y, out)?;
                quantize_bytes_in_place(out, t, fast);
            }
        }
        InputLut::Floats(_) => {
            row.clear();
            row.resize(rgb_row, 0);
            for (y, out) in dst.chunks_exact_mut(rgb_row * 4).enumerate() {
                convert(y, row)?;
                quantize_with(row, 3, lut, fast, out)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::tests::{q, rgb_frame, spec};
    use super::super::{FitMode, Preprocessor};
    use super::*;
    use crate::core::frame::PixelFormat;
    use crate::inference::preprocess::{effective_quant, quantize_into, Normalization};
    use crate::inference::DType;

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

    // Would catch the YUV 4:2:0 frames (I420 and NV12, with row padding and
    // odd sizes) taking a path that differs from "convert to RGB, then the
    // RGB pipeline": the fused path for a frame of the input's size (every
    // table kind) and the convert-then-resize path for another size must
    // give the bytes of the reference two-step path.
    #[test]
    fn yuv420_frames_match_convert_then_prepare() {
        use crate::image::yuv420::tests::frame_from_rgb;
        use crate::image::yuv420::yuv420_to_rgb;
        let (w, h, pad) = (7u32, 5u32, 3u32);
        let stride = w + pad;
        let rgb: Vec<u8> = (0..w * h * 3).map(|i| (i * 53 % 256) as u8).collect();
        for format in [PixelFormat::I420, PixelFormat::Nv12] {
            let src = frame_from_rgb(format, &rgb, w as usize, h as usize, stride as usize);
            let mut converted = vec![0u8; (w * h * 3) as usize];
            yuv420_to_rgb(format, &src, w, h, stride, &mut converted).unwrap();
            let yuv = |data: Vec<u8>| {
                let mut f = rgb_frame(w, h, data);
                f.format = format;
                f.stride = stride;
                f
            };
            for (dtype, quant) in [
                (DType::U8, q(1.0 / 255.0, 0)),
                (DType::I8, q(1.0 / 255.0, -128)),
                (DType::U8, q(0.02, 100)),
                (DType::F32, None),
            ] {
                for (mh, mw) in [(h as usize, w as usize), (3, 4)] {
                    let s = spec(dtype, quant, mh, mw, 3);
                    let n = Normalization::default_for(&s, None);
                    let elem = if dtype == DType::F32 { 4 } else { 1 };
                    let mut want = vec![0u8; mw * mh * 3 * elem];
                    Preprocessor::new(&s, FitMode::Letterbox, n)
                        .unwrap()
                        .prepare(&rgb_frame(w, h, converted.clone()), 1000, &mut want)
                        .unwrap();
                    let mut p = Preprocessor::new(&s, FitMode::Letterbox, n).unwrap();
                    let mut got = vec![0xA5u8; want.len()];
                    let prep = p.prepare(&yuv(src.clone()), 1000, &mut got).unwrap();
                    assert_eq!(got, want, "{format:?} {dtype:?} {mw}x{mh}");
                    assert_eq!((prep.mapping.src_width, prep.mapping.src_height), (w, h));
                    if (mw, mh) == (w as usize, h as usize) {
                        assert_eq!(p.decoded.capacity(), 0, "{format:?}: fused path decoded");
                    }
                }
            }
            // A truncated frame is an error naming the format, not a panic.
            let s = spec(DType::U8, q(1.0 / 255.0, 0), h as usize, w as usize, 3);
            let mut p =
                Preprocessor::new(&s, FitMode::Stretch, Normalization::default_for(&s, None))
                    .unwrap();
            let mut out = vec![0u8; (w * h * 3) as usize];
            let err = p
                .prepare(&yuv(src[..src.len() - 1].to_vec()), 1000, &mut out)
                .unwrap_err();
            assert!(
                err.to_string().contains(if format == PixelFormat::I420 {
                    "I420"
                } else {
                    "NV12"
                }),
                "{err}"
            );
        }
    }
}
