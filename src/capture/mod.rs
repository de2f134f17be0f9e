//! Frame capture: the `FrameSource` trait and its sources.
//!
//! This module owns everything between a camera (or a folder of images) and an
//! owned [`Frame`]: device negotiation, streaming, replay timing and the raw
//! pixel conversions that belong to a capture format (YUYV → RGB).
//! Frames are owned buffers; no source hands out memory it still maps.

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
        }
    }
}

/// Errors from a frame source, with the device or path they concern.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("device {device}: not found")]
    DeviceMissing { device: String },
    #[error("device {device}: {op}: {source}")]
    Device {
        device: String,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "device {device}: no supported format (wanted MJPEG or YUYV); device offers: {offered}"
    )]
    NoSupportedFormat { device: String, offered: String },
    #[error("folder {path}: {source}")]
    Folder {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("folder {path}: contains no JPEG, PNG or BMP images")]
    EmptyFolder { path: String },
    #[error("file {path}: {source}")]
    File {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// A `files` source configured with `loop = false` has replayed every image.
    #[error("source finished: every image was replayed once")]
    Finished,
}

/// A source of frames. Implementations block in `next_frame` (ioctls, pacing
/// sleeps) and therefore run on their own thread, never on the async runtime.
pub trait FrameSource: Send {
    /// Human-readable description for logs and status, e.g. `v4l2:/dev/video0 640x480 MJPG@30`.
    fn describe(&self) -> String;
    /// Block until the next frame is available and return it.
    fn next_frame(&mut self) -> Result<Frame, CaptureError>;
}

pub mod files;
pub mod negotiate;
pub mod v4l2;
pub mod yuyv;

pub use files::{FilesOptions, FilesSource};
pub use negotiate::FormatPreference;
pub use v4l2::{V4l2Options, V4l2Source};
pub use yuyv::{yuyv_to_rgb, yuyv_to_rgb_row, YuyvError};
