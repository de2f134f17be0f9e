//! A frame as a JPEG, for the snapshots kept with sightings: an encoded
//! frame (JPEG, PNG, BMP as the source delivered it) is kept as is; raw
//! frames (YUYV, I420, NV12, RGB) are converted to RGB and compressed with
//! libjpeg-turbo.

use crate::core::frame::{Frame, PixelFormat};

/// JPEG quality of encoded snapshots: good enough to recognise someone,
/// some 60–120 kB for 1280×720.
pub(crate) const SNAPSHOT_QUALITY: i32 = 85;

/// Why a frame could not be encoded.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("frame {origin}: {format:?} {width}x{height}: {reason}")]
    Frame {
        origin: String,
        format: PixelFormat,
        width: u32,
        height: u32,
        reason: String,
    },
}

/// The frame's image as a JPEG (or its own encoded bytes).
pub(crate) fn frame_to_jpeg(frame: &Frame) -> Result<Vec<u8>, EncodeError> {
    let err = |reason: String| EncodeError::Frame {
        origin: frame.origin.clone(),
        format: frame.format,
        width: frame.width,
        height: frame.height,
        reason,
    };
    let (w, h) = (frame.width, frame.height);
    let rgb_len = super::yuyv::rgb_len(w, h);
    let rgb: std::borrow::Cow<'_, [u8]> = match frame.format {
        PixelFormat::Encoded => return Ok(frame.data.clone()),
        PixelFormat::Rgb8 => {
            let need = u64::from(frame.stride) * u64::from(h.saturating_sub(1)) + u64::from(w) * 3;
            if w == 0
                || h == 0
                || u64::from(frame.stride) < u64::from(w) * 3
                || (frame.data.len() as u64) < need
            {
                return Err(err("RGB frame shorter than its size".into()));
            }
            std::borrow::Cow::Borrowed(&frame.data)
        }
        PixelFormat::Yuyv => {
            let mut dst = vec![0u8; usize::try_from(rgb_len).map_err(|e| err(e.to_string()))?];
            super::yuyv::yuyv_to_rgb(&frame.data, w, h, frame.stride, &mut dst)
                .map_err(|e| err(e.to_string()))?;
            std::borrow::Cow::Owned(dst)
        }
        PixelFormat::I420 | PixelFormat::Nv12 => {
            let mut dst = vec![0u8; usize::try_from(rgb_len).map_err(|e| err(e.to_string()))?];
            super::yuv420::yuv420_to_rgb(frame.format, &frame.data, w, h, frame.stride, &mut dst)
                .map_err(|e| err(e.to_string()))?;
            std::borrow::Cow::Owned(dst)
        }
    };
    let pitch = match frame.format {
        PixelFormat::Rgb8 => frame.stride as usize,
        _ => w as usize * 3,
    };
    let image = turbojpeg::Image {
        pixels: &rgb[..],
        width: w as usize,
        pitch,
        height: h as usize,
        format: turbojpeg::PixelFormat::RGB,
    };
    turbojpeg::compress(image, SNAPSHOT_QUALITY, turbojpeg::Subsamp::Sub2x2)
        .map(|b| b.to_vec())
        .map_err(|e| err(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(format: PixelFormat, data: Vec<u8>, w: u32, h: u32, stride: u32) -> Frame {
        Frame {
            data,
            format,
            width: w,
            height: h,
            stride,
            seq: 1,
            captured_at: std::time::SystemTime::now(),
            origin: "test".into(),
            source: "test".into(),
        }
    }

    // Would catch a raw frame's snapshot being stored as raw bytes (which no
    // browser shows) or with the wrong geometry, or its colours swapped.
    #[test]
    fn raw_frames_become_jpegs_of_the_same_picture() {
        let (w, h) = (64u32, 48u32);
        // Left half red, right half blue, in YUYV (BT.601 limited range).
        let mut yuyv = Vec::new();
        for _ in 0..h {
            for x in (0..w).step_by(2) {
                let (y, u, v) = if x < w / 2 {
                    (82, 90, 240)
                } else {
                    (41, 240, 110)
                };
                yuyv.extend_from_slice(&[y, u, y, v]);
            }
        }
        let jpeg = frame_to_jpeg(&frame(PixelFormat::Yuyv, yuyv, w, h, w * 2)).unwrap();
        assert!(jpeg.starts_with(&[0xFF, 0xD8, 0xFF]));
        let img = ::image::load_from_memory(&jpeg).unwrap().to_rgb8();
        assert_eq!((img.width(), img.height()), (w, h));
        let left = img.get_pixel(8, 24);
        let right = img.get_pixel(56, 24);
        assert!(left[0] > 180 && left[2] < 80, "left {left:?}");
        assert!(right[2] > 180 && right[0] < 80, "right {right:?}");

        // An RGB frame with padding at the end of its rows.
        let stride = w * 3 + 5;
        let mut rgb = vec![0u8; (stride * h) as usize];
        for row in rgb.chunks_mut(stride as usize) {
            for px in row[..(w * 3) as usize].chunks_mut(3) {
                px.copy_from_slice(&[10, 200, 10]);
            }
        }
        let jpeg = frame_to_jpeg(&frame(PixelFormat::Rgb8, rgb, w, h, stride)).unwrap();
        let img = ::image::load_from_memory(&jpeg).unwrap().to_rgb8();
        let p = img.get_pixel(30, 30);
        assert!(p[1] > 180 && p[0] < 40, "{p:?}");
    }

    // Would catch a short frame reaching the encoder (a panic or garbage).
    #[test]
    fn a_short_frame_is_an_error_naming_it() {
        let e = frame_to_jpeg(&frame(PixelFormat::Yuyv, vec![0; 10], 64, 48, 128)).unwrap_err();
        assert!(e.to_string().contains("64x48"), "{e}");
    }
}
