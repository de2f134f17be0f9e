//! Frame capture: the `FrameSource` trait and its sources.
//!
//! This module owns everything between a camera (or a folder of images) and an
//! owned [`Frame`]: device negotiation, streaming and replay timing (pixel
//! conversions live in [`crate::image`]).
//! Sources: `v4l2` (a camera), `files` (a folder), `http_mjpeg` (an HTTP(S)
//! MJPEG stream).
//! Frames are owned buffers; no source hands out memory it still maps.

use crate::core::frame::Frame;

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
    // --- kind = "http_mjpeg" (issue 19) ---
    /// The stream could not be opened or ended (network, HTTP status, not multipart).
    #[error("{url}: {reason}")]
    Http { url: String, reason: String },
    /// The camera refused the request (401/403); retried with the capture backoff.
    #[error("{url}: HTTP {status}: the camera refused access: {hint}")]
    HttpAuth {
        url: String,
        status: u16,
        hint: String,
    },
    /// A file the source needs (credentials, CA) is unusable; `path` may be
    /// empty when the problem is not a file (no system roots).
    #[error("{key} {path}: {reason}")]
    HttpSetup {
        key: &'static str,
        path: String,
        reason: String,
    },
    // kind = "command"
    #[error("command {program}: cannot start: {source}")]
    CommandStart {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("command {program} ended ({status}); last stderr line: {stderr}")]
    CommandExited {
        program: String,
        status: String,
        stderr: String,
    },
    #[error("command {program} stalled: no frame for {waited_ms} ms (stopped it); last stderr line: {stderr}")]
    CommandStalled {
        program: String,
        waited_ms: u64,
        stderr: String,
    },
    #[error("command {program}: reading its output: {source}")]
    CommandRead {
        program: String,
        #[source]
        source: std::io::Error,
    },
    /// Shutdown started while the source waited for a frame.
    #[error("command {program}: stopped for shutdown")]
    CommandStopped { program: String },
}

/// A source of frames. Implementations block in `next_frame` (ioctls, pacing
/// sleeps) and therefore run on their own thread, never on the async runtime.
/// The shortest time any source waits for a frame before it gives up and
/// is reopened (a V4L2 read, a command's program, an HTTP stream's connect
/// and read): a slow camera is not reopened in a loop. Readiness reports a
/// stall earlier, at `source.stall_timeout_ms`.
pub(crate) const MIN_REOPEN_AFTER: std::time::Duration = std::time::Duration::from_secs(2);

pub trait FrameSource: Send {
    /// Human-readable description for logs and status, e.g. `v4l2:/dev/video0 640x480 MJPG@30`.
    fn describe(&self) -> String;
    /// Block until the next frame is available and return it.
    fn next_frame(&mut self) -> Result<Frame, CaptureError>;
}

pub(crate) mod command;
pub(crate) mod files;
pub(crate) mod http_auth;
pub(crate) mod http_mjpeg;
pub(crate) mod negotiate;
pub(crate) mod stream;
pub(crate) mod v4l2;
