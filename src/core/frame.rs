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

    /// This frame, described as coming from `source` (see [`Frame::source`]).
    pub(crate) fn with_source(self, source: impl Into<String>) -> Frame {
        Frame {
            source: source.into(),
            ..self
        }
    }
}
