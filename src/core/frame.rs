//! A captured frame and its pixel layout: what every source produces and
//! every consumer (inference, snapshots, the page) reads.

use std::time::SystemTime;

/// How the bytes in a [`Frame`] are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PixelFormat {
    /// A compressed image (JPEG/MJPEG, PNG or BMP); the decoder sniffs the magic bytes.
    Encoded,
    /// Packed YUV 4:2:2 (Y0 U Y1 V), `stride` bytes per row.
    Yuyv,
    /// Packed 8-bit RGB, `stride` bytes per row.
    Rgb8,
    /// Planar YUV 4:2:0 (I420, `yuv420p`): the Y plane (`height` rows of
    /// `stride` bytes), then the U and V planes, each of `(height + 1) / 2`
    /// rows of `(stride + 1) / 2` bytes. This is what `rpicam-vid --codec
    /// yuv420` and `ffmpeg -pix_fmt yuv420p -f rawvideo` write.
    I420,
    /// Semi-planar YUV 4:2:0 (NV12): the Y plane (`height` rows of `stride`
    /// bytes), then one plane of `(height + 1) / 2` rows holding U and V
    /// interleaved (U0 V0 U1 V1 …), each row `stride` bytes rounded up to
    /// even (an odd width's last pixel has a U/V pair of its own).
    Nv12,
}

impl PixelFormat {
    /// Bytes a raw frame of this format occupies with rows of `stride`
    /// bytes (the luma stride for the YUV 4:2:0 formats); `None` for
    /// `Encoded`, whose size is not known from its dimensions.
    pub fn raw_len(self, stride: u32, height: u32) -> Option<usize> {
        let (s, h) = (stride as usize, height as usize);
        let half = h.div_ceil(2);
        match self {
            PixelFormat::Encoded => None,
            PixelFormat::Yuyv | PixelFormat::Rgb8 => Some(s * h),
            PixelFormat::I420 => Some(s * h + 2 * s.div_ceil(2) * half),
            PixelFormat::Nv12 => Some(s * h + s.div_ceil(2) * 2 * half),
        }
    }
}

/// One captured frame, owned.
#[derive(Debug, Clone)]
pub struct Frame {
    pub data: Vec<u8>,
    pub format: PixelFormat,
    /// Pixel width; 0 for `Encoded` frames whose size is only known after decoding.
    pub width: u32,
    /// Pixel height; 0 for `Encoded` frames whose size is only known after decoding.
    pub height: u32,
    /// Bytes per row for raw formats; 0 for `Encoded`.
    pub stride: u32,
    /// Sequence number assigned by the source, starting at 0.
    pub seq: u64,
    /// Wall-clock time at which the frame was captured.
    pub captured_at: SystemTime,
    /// Where the frame came from: the device path, or the file path for replay.
    pub origin: String,
    /// What produced it, as results record it: the source's description
    /// (e.g. `v4l2:/dev/video0 640x480 MJPG@30`), `upload` for an image sent
    /// to the API; empty when nothing set it.
    pub source: String,
}

impl Frame {
    /// A compressed image (JPEG/PNG/BMP bytes) captured now, e.g. a replayed
    /// file or an image given on the command line.
    pub fn encoded(data: Vec<u8>, seq: u64, origin: String) -> Frame {
        Frame {
            data,
            format: PixelFormat::Encoded,
            width: 0,
            height: 0,
            stride: 0,
            seq,
            captured_at: SystemTime::now(),
            origin,
            source: String::new(),
        }
    }

    /// Packed RGB pixels (`w`×`h`, e.g. this frame decoded or masked) with
    /// this frame's sequence number, capture time, origin and source.
    pub(crate) fn rgb_like(&self, rgb: Vec<u8>, w: u32, h: u32) -> Frame {
        Frame {
            data: rgb,
            format: PixelFormat::Rgb8,
            width: w,
            height: h,
            stride: w * 3,
            seq: self.seq,
            captured_at: self.captured_at,
            origin: self.origin.clone(),
            source: self.source.clone(),
        }
    }

    /// This frame, described as coming from `source` (see [`Frame::source`]).
    pub(crate) fn with_source(self, source: impl Into<String>) -> Frame {
        Frame {
            source: source.into(),
            ..self
        }
    }
}
