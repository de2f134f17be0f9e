//! Fuzz target: uploaded and captured images. Every input goes through the
//! upload check (`check_upload`), both decoders (the `image` crate and
//! libjpeg-turbo with DCT scaling) and the whole pre-processing of a frame
//! into a model input, under a small pixel budget.

use std::io::Cursor;

use rand::rngs::StdRng;
use rand::Rng;

use super::{mutate_bytes, mutated_seed, testdata, Fuzz, Verdict};
use crate::api::classify::check_upload;
use crate::core::frame::Frame;
use crate::image::decode::{decode_rgb, JpegDecoder};
use crate::inference::preprocess::{FitMode, Normalization, Preprocessor};
use crate::inference::{DType, Quant, TensorSpec};

/// The pixel budget the fuzzed decoders run under (small, so dimension
/// bombs are told from honest images quickly).
const MAX_PIXELS: u64 = 1 << 20;
/// Decoders may hold the RGB output, the decoder's own buffers and a
/// conversion copy: 64 bytes a pixel of the budget is far above honest use.
const MAX_ALLOC: usize = 64 << 20;

fn encode(img: ::image::DynamicImage, format: ::image::ImageFormat) -> Vec<u8> {
    let mut out = Vec::new();
    img.write_to(&mut Cursor::new(&mut out), format)
        .expect("encoding a small test image");
    out
}

/// Small images of each kind and colour type, real photos, and headers
/// that declare huge sizes.
fn seeds() -> Vec<Vec<u8>> {
    use ::image::{DynamicImage, ImageFormat, Rgb, RgbImage};
    let rgb = RgbImage::from_fn(24, 16, |x, y| Rgb([(x * 10) as u8, (y * 15) as u8, 128]));
    let mut seeds = vec![
        encode(DynamicImage::ImageRgb8(rgb.clone()), ImageFormat::Jpeg),
        encode(DynamicImage::ImageRgb8(rgb.clone()), ImageFormat::Png),
        encode(DynamicImage::ImageRgb8(rgb.clone()), ImageFormat::Bmp),
        encode(
            DynamicImage::ImageLuma8(DynamicImage::ImageRgb8(rgb.clone()).to_luma8()),
            ImageFormat::Jpeg,
        ),
        encode(
            DynamicImage::ImageRgba16(DynamicImage::ImageRgb8(rgb.clone()).to_rgba16()),
            ImageFormat::Png,
        ),
        encode(
            DynamicImage::ImageLumaA8(DynamicImage::ImageRgb8(rgb).to_luma_alpha8()),
            ImageFormat::Png,
        ),
    ];
    // A PNG whose IHDR declares 100000 x 100000 (the chunk CRC is left wrong too).
    let mut bomb = seeds[1].clone();
    bomb[16..20].copy_from_slice(&100_000u32.to_be_bytes());
    bomb[20..24].copy_from_slice(&100_000u32.to_be_bytes());
    seeds.push(bomb);
    // A BMP declaring 60000 x -60000 (top-down).
    let mut bomb = seeds[2].clone();
    bomb[18..22].copy_from_slice(&60_000i32.to_le_bytes());
    bomb[22..26].copy_from_slice(&(-60_000i32).to_le_bytes());
    seeds.push(bomb);
    // A JPEG whose SOF0 declares 65535 x 65535.
    let mut bomb = seeds[0].clone();
    if let Some(sof) = bomb.windows(2).position(|w| w == [0xFF, 0xC0]) {
        bomb[sof + 5..sof + 9].copy_from_slice(&[0xFF, 0xFF, 0xFF, 0xFF]);
        seeds.push(bomb);
    }
    for name in ["table.jpg", "mnist_nine.bmp"] {
        if let Ok(b) = std::fs::read(testdata().join("images").join(name)) {
            seeds.push(b);
        }
    }
    seeds
}

/// JPEG-aware mutations: marker segments duplicated, dropped or retyped
/// (SOF0 to progressive, lossless or arithmetic), besides byte mutations.
fn mutate_jpeg(rng: &mut StdRng, data: &mut Vec<u8>) {
    let markers: Vec<usize> = data
        .windows(2)
        .enumerate()
        .filter(|(_, w)| w[0] == 0xFF && w[1] != 0 && w[1] != 0xFF)
        .map(|(i, _)| i)
        .collect();
    if markers.is_empty() {
        return;
    }
    let at = markers[rng.gen_range(0..markers.len())];
    match rng.gen_range(0..3) {
        0 => {
            const KINDS: [u8; 12] = [
                0xC0, 0xC1, 0xC2, 0xC3, 0xC9, 0xCA, 0xCB, 0xC4, 0xDB, 0xDD, 0xDA, 0xD9,
            ];
            data[at + 1] = KINDS[rng.gen_range(0..KINDS.len())];
        }
        1 => {
            let end = markers
                .iter()
                .find(|&&m| m > at)
                .copied()
                .unwrap_or(data.len());
            let segment = data[at..end].to_vec();
            let to = markers[rng.gen_range(0..markers.len())];
            data.splice(to..to, segment);
        }
        _ => {
            let end = markers
                .iter()
                .find(|&&m| m > at)
                .copied()
                .unwrap_or(data.len());
            data.drain(at..end);
        }
    }
}

fn generate(rng: &mut StdRng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut data = mutated_seed(rng, seeds);
    if data.starts_with(&[0xFF, 0xD8]) {
        for _ in 0..rng.gen_range(0..3) {
            mutate_jpeg(rng, &mut data);
        }
    }
    if rng.gen_range(0..8) == 0 {
        mutate_bytes(rng, &mut data, seeds);
    }
    data
}

/// A preprocessor for a small model input of random shape, fit and type.
fn preprocessor(bytes: &[u8]) -> Preprocessor {
    // Chosen from the input so one input always meets the same model.
    let h = bytes
        .iter()
        .fold(7usize, |a, &b| a.wrapping_mul(31) ^ b as usize);
    let (w, ht, c) = (
        1 + h % 40,
        1 + (h / 40) % 40,
        if h % 5 == 0 { 1 } else { 3 },
    );
    let (dtype, quant) = match (h / 1600) % 3 {
        0 => (
            DType::U8,
            Some(Quant {
                scale: 1.0 / 128.0,
                zero_point: 128,
            }),
        ),
        1 => (
            DType::I8,
            Some(Quant {
                scale: 1.0 / 255.0,
                zero_point: -128,
            }),
        ),
        _ => (DType::F32, None),
    };
    let spec = TensorSpec {
        name: "input".into(),
        shape: vec![1, ht, w, c],
        dtype,
        quant,
    };
    let fit = [FitMode::Stretch, FitMode::Crop, FitMode::Letterbox][(h / 4800) % 3];
    let scaling = if h % 2 == 0 {
        crate::config::JpegScaling::Auto
    } else {
        crate::config::JpegScaling::Off
    };
    Preprocessor::new(&spec, fit, Normalization::default_for(&spec, None))
        .expect("a valid NHWC spec")
        .with_jpeg_scaling(scaling)
}

/// The properties every image input must keep.
fn check(bytes: &[u8]) -> Verdict {
    let upload = check_upload(bytes, MAX_PIXELS);
    let mut out = Vec::new();
    let decoded = decode_rgb(bytes, MAX_PIXELS, &mut out);
    if let Ok((w, h)) = decoded {
        if u64::from(w) * u64::from(h) > MAX_PIXELS {
            return Err(format!("decode_rgb gave {w}x{h}, over the budget"));
        }
        if out.len() != w as usize * h as usize * 3 {
            return Err(format!("decode_rgb gave {} bytes for {w}x{h}", out.len()));
        }
    }
    let mut turbo = JpegDecoder::default();
    for denom in [1u32, 2, 8] {
        if let Ok(Some(s)) = turbo.decode_scaled(bytes, MAX_PIXELS, &mut out, |_, _| denom) {
            if u64::from(s.full_w) * u64::from(s.full_h) > MAX_PIXELS {
                return Err(format!("libjpeg-turbo decoded {}x{}", s.full_w, s.full_h));
            }
            if out.len() != s.width as usize * s.height as usize * 3 {
                return Err(format!(
                    "libjpeg-turbo gave {} bytes for {}x{}",
                    out.len(),
                    s.width,
                    s.height
                ));
            }
        }
    }
    let mut prep = preprocessor(bytes);
    let (w, h) = prep.input_size();
    // Room for 3 channels of the largest element type; the preprocessor writes a prefix.
    let mut dst = vec![0u8; w as usize * h as usize * 3 * 4];
    let frame = Frame::encoded(bytes.to_vec(), 0, "fuzz".into());
    let prepared = prep.prepare(&frame, MAX_PIXELS, &mut dst).is_ok();
    Ok(upload.is_ok() || decoded.is_ok() || prepared)
}

/// Catches a panic, a hang or an allocation beyond the pixel budget in the
/// upload check, either decoder or pre-processing, on mutated JPEG, PNG and
/// BMP files (truncated, with huge or zero dimensions, retyped markers).
#[test]
fn image() {
    let seeds = seeds();
    // The harness is useless if the seeds do not decode.
    for s in &seeds[..6] {
        assert!(check_upload(s, MAX_PIXELS).is_ok(), "seed refused");
    }
    let f = Fuzz::new("image", MAX_ALLOC);
    f.run(|rng| generate(rng, &seeds), check);
}
