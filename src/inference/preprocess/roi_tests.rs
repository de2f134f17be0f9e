//! Tests of `model.roi` (issue 18): the crop happens after decoding and
//! before the fit, for every pixel format, and the mapping still refers to
//! the full frame; and of privacy masks on the model's input (issue 23),
//! filled at the same point. Kept apart from `mod.rs`, which is long
//! already.

use super::tests::{rgb_frame, spec};
use super::*;
use crate::image::decode::JpegDecoder;
use crate::image::mask::SourceMasks;
use crate::inference::DType;

const W: u32 = 64;
const H: u32 = 48;

/// 1/4 in from the left and top, half the frame each way: pixels
/// (16, 12, 32, 24) of a 64×48 frame; even, so 4:2:0 chroma stays aligned.
const ROI: Roi = Roi {
    x: 0.25,
    y: 0.25,
    width: 0.5,
    height: 0.5,
};

fn prep(w: u32, h: u32, roi: Option<Roi>) -> Preprocessor {
    let s = spec(DType::U8, None, h as usize, w as usize, 3);
    Preprocessor::new(&s, FitMode::Stretch, Normalization::default_for(&s, None))
        .unwrap()
        .with_roi(roi)
}

fn run(p: &mut Preprocessor, f: &Frame) -> (Vec<u8>, Prepared) {
    let mut t = vec![0u8; (p.width * p.height * 3) as usize];
    let prepared = p.prepare(f, u64::MAX, &mut t).unwrap();
    (t, prepared)
}

/// Packed RGB8 `src` of `sw` columns, cropped to (x, y, w, h), written
/// plainly pixel by pixel.
fn crop(src: &[u8], sw: u32, (x, y, w, h): (u32, u32, u32, u32)) -> Vec<u8> {
    let mut out = Vec::new();
    for r in y..y + h {
        for c in x..x + w {
            let o = ((r * sw + c) * 3) as usize;
            out.extend_from_slice(&src[o..o + 3]);
        }
    }
    out
}

fn raw(format: PixelFormat, data: Vec<u8>, stride: u32) -> Frame {
    Frame {
        data,
        format,
        width: W,
        height: H,
        stride,
        ..rgb_frame(1, 1, Vec::new())
    }
}

/// Deterministic bytes that vary across the frame.
fn bytes(n: usize, seed: u32) -> Vec<u8> {
    (0..n as u32)
        .map(|i| ((i.wrapping_mul(2654435761) ^ seed) >> 7) as u8)
        .collect()
}

// Would catch a ROI ignored for some pixel format (the YUV fast path of a
// frame of the input's own size skips the decoded image the crop is taken
// from), a crop off by its offset or stride, or a mapping that no longer
// refers to the full frame (a classifier's reported image size): for RGB8
// (with row padding), YUYV, I420 and NV12 of the input's own size, the
// tensor with the ROI equals the tensor of the cropped RGB image without
// one.
#[test]
fn roi_crops_every_raw_format_before_the_fit() {
    let px = ROI.pixels(W, H);
    assert_eq!(px, (16, 12, 32, 24));
    let rgb_of = |f: &Frame| -> Vec<u8> {
        let mut rgb = vec![0u8; (W * H * 3) as usize];
        match f.format {
            PixelFormat::Rgb8 => {
                for r in 0..H as usize {
                    let s = r * f.stride as usize;
                    rgb[r * W as usize * 3..(r + 1) * W as usize * 3]
                        .copy_from_slice(&f.data[s..s + W as usize * 3]);
                }
            }
            PixelFormat::Yuyv => {
                crate::image::yuyv::yuyv_to_rgb(&f.data, W, H, f.stride, &mut rgb).unwrap()
            }
            fmt => {
                crate::image::yuv420::yuv420_to_rgb(fmt, &f.data, W, H, f.stride, &mut rgb).unwrap()
            }
        }
        rgb
    };
    let frames = [
        raw(
            PixelFormat::Rgb8,
            bytes(((W * 3 + 6) * H) as usize, 1),
            W * 3 + 6,
        ),
        raw(PixelFormat::Yuyv, bytes((W * 2 * H) as usize, 2), W * 2),
        raw(PixelFormat::I420, bytes((W * H * 3 / 2) as usize, 3), W),
        raw(PixelFormat::Nv12, bytes((W * H * 3 / 2) as usize, 4), W),
    ];
    for f in &frames {
        let mut with_roi = prep(W, H, Some(ROI));
        let (got, prepared) = run(&mut with_roi, f);
        let cropped = rgb_frame(32, 24, crop(&rgb_of(f), W, px));
        let (want, _) = run(&mut prep(W, H, None), &cropped);
        assert_eq!(got, want, "{:?}", f.format);
        let (whole, _) = run(&mut prep(W, H, None), f);
        assert_ne!(got, whole, "{:?}: the ROI changed nothing", f.format);
        let m = prepared.mapping;
        assert_eq!((m.src_width, m.src_height), (W, H), "{:?}", f.format);
        assert_eq!(m.to_source(0.0, 0.0), (16.0, 12.0), "{:?}", f.format);
        assert_eq!(m.to_source(64.0, 48.0), (48.0, 36.0), "{:?}", f.format);
        // The buffers stay reusable frame after frame.
        assert_eq!(run(&mut with_roi, f).0, got);
    }
}

// Would catch the JPEG DCT scale chosen from the whole frame instead of the
// ROI (the crop would then be upscaled into the input, blurring it), or a
// JPEG crop taken in the wrong coordinates: on the reference path the
// tensor equals the cropped full-size decode's; scaled, a 640×480 frame
// whose 320×240 ROI feeds a 100×100 input is decoded at 1/2 (1/4 would
// leave 80×60 of ROI), and the mapping is in full-frame pixels.
#[test]
fn roi_on_jpeg_crops_the_decode_and_picks_the_scale_from_the_roi() {
    let (fw, fh) = (640u32, 480u32);
    let img = ::image::RgbImage::from_fn(fw, fh, |x, y| {
        ::image::Rgb([(x % 256) as u8, (y % 256) as u8, ((x * y) % 251) as u8])
    });
    let mut jpeg = Vec::new();
    ::image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 90)
        .encode_image(&img)
        .unwrap();
    let frame = Frame::encoded(jpeg.clone(), 0, "t".into());
    let px = ROI.pixels(fw, fh);
    assert_eq!(px, (160, 120, 320, 240));
    // Reference path: the full-size decode, cropped.
    let mut full = Vec::new();
    JpegDecoder::default()
        .decode_scaled(&jpeg, u64::MAX, &mut full, |_, _| 1)
        .unwrap()
        .unwrap();
    let cropped = rgb_frame(320, 240, crop(&full, fw, px));
    let mut off = prep(100, 100, Some(ROI)).with_jpeg_scaling(JpegScaling::Off);
    let (got, prepared) = run(&mut off, &frame);
    let (want, _) = run(&mut prep(100, 100, None), &cropped);
    assert_eq!(got, want);
    assert_eq!(prepared.jpeg_scale, 1);
    // Scaled in the DCT, by the ROI's size.
    let mut auto = prep(100, 100, Some(ROI)).with_jpeg_scaling(JpegScaling::Auto);
    let (_, prepared) = run(&mut auto, &frame);
    assert_eq!(prepared.jpeg_scale, 2);
    let m = prepared.mapping;
    assert_eq!((m.src_width, m.src_height), (fw, fh));
    let (x0, y0) = m.to_source(0.0, 0.0);
    let (x1, y1) = m.to_source(100.0, 100.0);
    assert!(
        (x0 - 160.0).abs() < 1e-9 && (y0 - 120.0).abs() < 1e-9,
        "{x0},{y0}"
    );
    assert!(
        (x1 - 480.0).abs() < 1e-9 && (y1 - 360.0).abs() < 1e-9,
        "{x1},{y1}"
    );
}

/// A privacy mask over the left half of the frame, filled with `FILL`.
const FILL: [u8; 3] = [250, 5, 130];

fn left_half() -> SourceMasks {
    let p = crate::core::zone::Polygon::new(vec![[0.0, 0.0], [0.5, 0.0], [0.5, 1.0], [0.0, 1.0]])
        .unwrap();
    SourceMasks::new([(p, FILL)])
}

fn run_masked(p: &mut Preprocessor, f: &Frame, m: &SourceMasks) -> Vec<u8> {
    let mut t = vec![0u8; (p.width * p.height * 3) as usize];
    p.prepare_masked(f, u64::MAX, &mut t, Some(m)).unwrap();
    t
}

// Issue 23. Would catch a privacy mask skipped by a path of the
// pre-processor (the YUV fast path of a frame of the input's own size, the
// zero-copy RGB path, the DCT-scaled JPEG) so the model sees what is
// masked, a mask in pixel instead of normalized coordinates on a scaled
// decode, or buffers that keep a mask for the next, unmasked frame.
#[test]
fn privacy_masks_reach_the_model_input_on_every_path() {
    let frames = [
        raw(PixelFormat::Rgb8, bytes((W * 3 * H) as usize, 5), W * 3),
        raw(PixelFormat::Yuyv, bytes((W * 2 * H) as usize, 6), W * 2),
        raw(PixelFormat::I420, bytes((W * H * 3 / 2) as usize, 7), W),
        raw(PixelFormat::Nv12, bytes((W * H * 3 / 2) as usize, 8), W),
    ];
    let mask = left_half();
    for f in &frames {
        let mut p = prep(W, H, None);
        let (plain, _) = run(&mut p, f);
        let got = run_masked(&mut p, f, &mask);
        for (i, (g, u)) in got.chunks_exact(3).zip(plain.chunks_exact(3)).enumerate() {
            let x = i as u32 % W;
            if x < W / 2 {
                assert_eq!(g, FILL, "{:?}: pixel {i} not masked", f.format);
            } else {
                assert_eq!(g, u, "{:?}: pixel {i} outside the mask changed", f.format);
            }
        }
        // The next frame without masks is the plain one again.
        assert_eq!(run(&mut p, f).0, plain, "{:?}", f.format);
    }
    // A 640x480 JPEG decoded at 1/8 straight into an 80x60 input.
    let img = ::image::RgbImage::from_fn(640, 480, |x, y| {
        ::image::Rgb([(x % 256) as u8, (y % 256) as u8, ((x * y) % 251) as u8])
    });
    let mut jpeg = Vec::new();
    ::image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 90)
        .encode_image(&img)
        .unwrap();
    let frame = Frame::encoded(jpeg, 0, "t".into());
    let mut p = prep(80, 60, None).with_jpeg_scaling(JpegScaling::Auto);
    let (plain, prepared) = run(&mut p, &frame);
    assert_eq!(prepared.jpeg_scale, 8);
    let got = run_masked(&mut p, &frame, &mask);
    for (i, (g, u)) in got.chunks_exact(3).zip(plain.chunks_exact(3)).enumerate() {
        let want: &[u8] = if i % 80 < 40 { &FILL } else { u };
        assert_eq!(g, want, "JPEG: pixel {i}");
    }
}
