//! V4L2 camera source.
//!
//! This module owns talking to a Video4Linux2 capture device through the `v4l`
//! crate: opening and checking the device, describing its formats, sizes and
//! frame intervals for [`negotiate`](super::negotiate::negotiate), applying the
//! choice (and reading back what the driver actually set, since drivers
//! adjust), and streaming with memory-mapped buffers. Every frame is copied
//! out of the mapped buffer into an owned [`Frame`] before the buffer is given
//! back to the driver, so no frame refers to device memory.
//!
//! Streaming is on a poll timeout: a camera that stops delivering (unplugged,
//! stalled) produces an error instead of blocking forever. After an error the
//! stream is torn down and set up again on the next call, so a transient stall
//! recovers; a vanished device keeps failing until the caller reopens it.
//!
//! The `v4l` crate panics in a few places on unexpected driver data (non-UTF-8
//! card names, unknown enum values) and when tearing down buffers fails; those
//! calls are guarded here and turned into errors or log lines.
//!
//! MJPEG frames without Huffman tables are repaired as they are copied out
//! ([`crate::image::mjpeg`]).
//!
//! Why one file of some 870 lines: about 610 are code and the rest tests
//! (one of them against a real device). Opening, describing, applying and
//! streaming are the steps of one device's lifecycle on one `Device` handle,
//! sharing the panic guards and error helpers at the end of the file; split
//! apart, each piece would be a thin layer over the others.

use std::io;

use nix::errno::Errno;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use v4l::buffer::{Flags as BufferFlags, Type as BufferType};
use v4l::capability::Flags as CapFlags;
use v4l::frameinterval::FrameIntervalEnum;
use v4l::framesize::FrameSizeEnum;
use v4l::io::mmap::Stream as MmapStream;
use v4l::io::traits::{CaptureStream, Stream as _};
use v4l::video::capture::Parameters;
use v4l::video::Capture;
use v4l::{Device, Format, FourCC, Fraction};

use super::negotiate::{
    describe_offered, fourcc_str, negotiate, CaptureFormat, DeviceFormat, FormatPreference,
    FrameSize, Interval, Intervals, NegotiationError, SizeRange, Wanted,
};
use super::{CaptureError, FrameSource};
use crate::core::frame::{Frame, PixelFormat};
use crate::image::mjpeg::with_huffman_tables;

/// Most mmap buffers a source may request.
pub(crate) const MAX_BUFFERS: u32 = 32;
/// Consecutive corrupt buffers (error flag, empty, truncated) tolerated before
/// `next_frame` reports an error.
const MAX_BAD_FRAMES: u32 = 16;

/// Options for [`V4l2Source::open`].
#[derive(Debug, Clone, PartialEq)]
pub struct V4l2Options {
    /// Device node, e.g. `/dev/video0`.
    pub device: PathBuf,
    /// Wanted frame width in pixels (the closest offered size is used).
    pub width: u32,
    /// Wanted frame height in pixels.
    pub height: u32,
    /// Wanted frames per second (the closest offered rate is used).
    pub fps: u32,
    pub format: FormatPreference,
    /// Number of mmap buffers to request, 1..=[`MAX_BUFFERS`] (drivers may adjust).
    pub buffers: u32,
    /// Longest wait for one frame, in milliseconds (1..=`i32::MAX`).
    pub timeout_ms: u64,
}

/// A streaming V4L2 camera. See the module documentation.
pub struct V4l2Source {
    path: String,
    device: Device,
    /// `None` before the first frame, after [`V4l2Source::stop`] and after a
    /// streaming error; the next `next_frame` sets it up again.
    stream: Option<MmapStream<'static>>,
    buffers: u32,
    timeout: Duration,
    fourcc: [u8; 4],
    format: CaptureFormat,
    width: u32,
    height: u32,
    /// Bytes per row for YUYV; 0 for MJPEG.
    stride: u32,
    /// Frame interval the driver reports, if it reports one.
    interval: Option<Interval>,
    requested_fps: u32,
    seq: u64,
}

impl V4l2Source {
    /// Open `opts.device`, negotiate and set the format and frame rate, and
    /// start streaming. The first frame is waited for and discarded (cameras
    /// often deliver a bad first frame), so a device that is busy or does not
    /// deliver fails here rather than later.
    pub(crate) fn open(opts: V4l2Options) -> Result<V4l2Source, CaptureError> {
        let path = opts.device.display().to_string();
        validate(&opts, &path)?;

        let device = Device::with_path(&opts.device).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                CaptureError::DeviceMissing {
                    device: path.clone(),
                }
            } else if e.kind() == io::ErrorKind::PermissionDenied {
                dev_err(&path, "open (is the service user in the 'video' group?)", e)
            } else {
                dev_err(&path, "open", e)
            }
        })?;

        let caps = guarded(|| device.query_caps()).map_err(|e| {
            // ENOTTY: the node's driver has no V4L2 ioctls. ENOSYS: the
            // ioctl is not implemented at all, as under qemu-user, which
            // does not translate V4L2 requests; either way it cannot stream.
            let errno = e.raw_os_error();
            if errno == Some(Errno::ENOTTY as i32) || errno == Some(Errno::ENOSYS as i32) {
                dev_err(&path, "VIDIOC_QUERYCAP (not a V4L2 device)", e)
            } else {
                dev_err(&path, "VIDIOC_QUERYCAP", e)
            }
        })?;
        let flags = caps.capabilities;
        if !flags.contains(CapFlags::VIDEO_CAPTURE) || !flags.contains(CapFlags::STREAMING) {
            let why = if flags.contains(CapFlags::VIDEO_CAPTURE_MPLANE) {
                "is a multi-planar capture device, which is not supported"
            } else if !flags.contains(CapFlags::VIDEO_CAPTURE) {
                "is not a video capture node (a metadata or output node of the camera?)"
            } else {
                "does not support streaming I/O"
            };
            return Err(dev_err(
                &path,
                "check capabilities",
                io::Error::new(
                    io::ErrorKind::Unsupported,
                    format!(
                        "{} ({}) {why}; capabilities: {flags}",
                        caps.card, caps.driver
                    ),
                ),
            ));
        }

        let want = Wanted {
            width: opts.width,
            height: opts.height,
            fps: opts.fps,
            preference: opts.format,
        };
        let offered =
            describe_device(&device, &want).map_err(|e| dev_err(&path, "VIDIOC_ENUM_FMT", e))?;
        let chosen = negotiate(&offered, &want).map_err(|e| match e {
            NegotiationError::NoSupportedFormat { offered, .. } => {
                CaptureError::NoSupportedFormat {
                    device: path.clone(),
                    offered,
                }
            }
            e @ NegotiationError::InvalidRequest { .. } => dev_err(
                &path,
                "configure",
                io::Error::new(io::ErrorKind::InvalidInput, e.to_string()),
            ),
        })?;

        let request = Format::new(chosen.width, chosen.height, FourCC::new(&chosen.fourcc));
        let actual = guarded(|| device.set_format(&request))
            .map_err(|e| dev_err(&path, busy_hint(&e, "VIDIOC_S_FMT"), e))?;
        let fourcc = actual.fourcc.repr;
        let Some(format) = CaptureFormat::from_fourcc(fourcc) else {
            return Err(CaptureError::NoSupportedFormat {
                device: path,
                offered: format!(
                    "driver switched to {} when asked for {}; offered: {}",
                    fourcc_str(fourcc),
                    fourcc_str(chosen.fourcc),
                    describe_offered(&offered)
                ),
            });
        };
        if fourcc != chosen.fourcc {
            log::info!(device = path, asked = fourcc_str(chosen.fourcc), got = fourcc_str(fourcc);
                "driver changed the pixel format");
        }
        if (actual.width, actual.height) != (chosen.width, chosen.height) {
            log::info!(device = path, asked = format!("{}x{}", chosen.width, chosen.height),
                got = format!("{}x{}", actual.width, actual.height); "driver adjusted frame size");
        }
        if actual.width == 0 || actual.height == 0 {
            return Err(dev_err(
                &path,
                "VIDIOC_S_FMT",
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "driver set an empty size {}x{}",
                        actual.width, actual.height
                    ),
                ),
            ));
        }
        let stride = match format {
            CaptureFormat::Mjpeg => 0,
            CaptureFormat::Yuyv => {
                let min = actual.width.checked_mul(2).ok_or_else(|| {
                    dev_err(
                        &path,
                        "VIDIOC_S_FMT",
                        io::Error::new(io::ErrorKind::InvalidData, "frame width overflows"),
                    )
                })?;
                if actual.width % 2 != 0 {
                    return Err(dev_err(
                        &path,
                        "VIDIOC_S_FMT",
                        io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("driver set an odd YUYV width {}", actual.width),
                        ),
                    ));
                }
                if actual.stride < min {
                    log::warn!(device = path, stride = actual.stride, min = min;
                        "driver reports a YUYV stride below width*2; using width*2");
                    min
                } else {
                    actual.stride
                }
            }
        };

        let wanted_interval = chosen.interval.unwrap_or(Interval::from_fps(opts.fps));
        let params = Parameters::new(Fraction::new(
            wanted_interval.numerator,
            wanted_interval.denominator,
        ));
        let interval = match guarded(|| device.set_params(&params)) {
            Ok(p) => {
                let got = Interval::new(p.interval.numerator, p.interval.denominator);
                Some(got).filter(|iv| iv.fps().is_some())
            }
            Err(e) => {
                // Some drivers have a fixed rate and no VIDIOC_S_PARM; they still stream.
                log::warn!(device = path, error = e.to_string(); "cannot set the frame rate; using the driver's");
                guarded(|| device.params())
                    .ok()
                    .map(|p| Interval::new(p.interval.numerator, p.interval.denominator))
                    .filter(|iv| iv.fps().is_some())
            }
        };

        let mut source = V4l2Source {
            path,
            device,
            stream: None,
            buffers: opts.buffers,
            timeout: Duration::from_millis(opts.timeout_ms),
            fourcc,
            format,
            width: actual.width,
            height: actual.height,
            stride,
            interval,
            requested_fps: opts.fps,
            seq: 0,
        };
        log::info!(device = source.path, source = source.describe(), card = caps.card, driver = caps.driver;
            "camera configured");
        // Warm-up frame: proves the stream works; its content is not used.
        source.capture()?;
        source.seq = 0;
        Ok(source)
    }

    /// Stop streaming and release the mmap buffers. Errors are logged, not
    /// returned: there is nothing a caller could do about them. A later
    /// `next_frame` starts streaming again.
    pub(crate) fn stop(&mut self) {
        if let Some(mut stream) = self.stream.take() {
            if let Err(e) = stream.stop() {
                if e.raw_os_error() != Some(Errno::ENODEV as i32) {
                    log::warn!(device = self.path, error = e.to_string(); "VIDIOC_STREAMOFF failed");
                }
            }
            release(&self.path, stream);
        }
    }

    /// The pixel format frames are delivered in.
    pub(crate) fn pixel_format(&self) -> PixelFormat {
        match self.format {
            CaptureFormat::Mjpeg => PixelFormat::Encoded,
            CaptureFormat::Yuyv => PixelFormat::Yuyv,
        }
    }

    fn start_stream(&mut self) -> Result<(), CaptureError> {
        let mut stream = guarded(|| {
            MmapStream::with_buffers(&self.device, BufferType::VideoCapture, self.buffers)
        })
        .map_err(|e| dev_err(&self.path, busy_hint(&e, "VIDIOC_REQBUFS"), e))?;
        stream.set_timeout(self.timeout);
        self.stream = Some(stream);
        Ok(())
    }

    /// Dequeue buffers until a usable one arrives and copy it out.
    fn capture(&mut self) -> Result<Frame, CaptureError> {
        if self.stream.is_none() {
            self.start_stream()?;
        }
        let mut bad = 0u32;
        loop {
            let result = match self.stream.as_mut() {
                Some(stream) => match stream.next() {
                    Ok((buf, meta)) => Ok(copy_buffer(
                        self.format,
                        self.width,
                        self.height,
                        self.stride,
                        buf,
                        meta.bytesused,
                        meta.flags,
                    )),
                    Err(e) => Err(e),
                },
                // start_stream() set it above; kept as an error rather than a panic.
                None => Err(io::Error::new(
                    io::ErrorKind::NotConnected,
                    "stream not started",
                )),
            };
            match result {
                Ok(Ok(data)) => {
                    let raw = self.format == CaptureFormat::Yuyv;
                    let frame = Frame {
                        data,
                        format: self.pixel_format(),
                        width: if raw { self.width } else { 0 },
                        height: if raw { self.height } else { 0 },
                        stride: self.stride,
                        seq: self.seq,
                        captured_at: SystemTime::now(),
                        origin: self.path.clone(),
                        source: self.describe(),
                    };
                    self.seq += 1;
                    return Ok(frame);
                }
                Ok(Err(why)) => {
                    bad += 1;
                    log::debug!(device = self.path, reason = why; "dropping corrupt buffer");
                    if bad >= MAX_BAD_FRAMES {
                        return Err(dev_err(
                            &self.path,
                            "VIDIOC_DQBUF",
                            io::Error::new(
                                io::ErrorKind::InvalidData,
                                format!("{bad} corrupt buffers in a row (last: {why})"),
                            ),
                        ));
                    }
                }
                Err(e) => {
                    // The v4l stream cannot resume after a failed dequeue (the
                    // buffer it would requeue is still queued): tear it down so
                    // the next call starts a fresh one.
                    self.stop();
                    let op = if e.kind() == io::ErrorKind::TimedOut {
                        "VIDIOC_DQBUF (timed out waiting for a frame)"
                    } else if e.raw_os_error() == Some(Errno::ENODEV as i32) {
                        "VIDIOC_DQBUF (device disconnected)"
                    } else {
                        "VIDIOC_DQBUF"
                    };
                    return Err(dev_err(&self.path, op, e));
                }
            }
        }
    }
}

/// Copy the used part of a dequeued buffer, or say why it is unusable.
fn copy_buffer(
    format: CaptureFormat,
    width: u32,
    height: u32,
    stride: u32,
    buf: &[u8],
    bytesused: u32,
    flags: BufferFlags,
) -> Result<Vec<u8>, String> {
    if flags.contains(BufferFlags::ERROR) {
        return Err("driver flagged the buffer as corrupt".into());
    }
    let used = bytesused as usize;
    if used == 0 || used > buf.len() {
        return Err(format!(
            "bytesused {used} outside a buffer of {} bytes",
            buf.len()
        ));
    }
    match format {
        CaptureFormat::Mjpeg => {
            let data = &buf[..used];
            if !data.starts_with(&[0xFF, 0xD8]) {
                return Err("MJPEG buffer does not start with a JPEG SOI marker".into());
            }
            Ok(with_huffman_tables(data))
        }
        CaptureFormat::Yuyv => {
            // u64: no overflow on 32-bit boards whatever the driver reports.
            let need =
                u64::from(stride) * u64::from(height.saturating_sub(1)) + u64::from(width) * 2;
            let full = u64::from(stride) * u64::from(height);
            if (used as u64) < need {
                return Err(format!("YUYV buffer holds {used} bytes, {need} needed"));
            }
            // `full` >= `need` and `used` >= `need`; min is <= used <= buf.len().
            let take = (used as u64).min(full) as usize;
            Ok(buf[..take].to_vec())
        }
    }
}

impl FrameSource for V4l2Source {
    fn describe(&self) -> String {
        let rate = match self.interval {
            Some(iv) => iv.to_string(),
            None => format!("{}?", self.requested_fps),
        };
        format!(
            "v4l2:{} {}x{} {}@{}",
            self.path,
            self.width,
            self.height,
            fourcc_str(self.fourcc),
            rate
        )
    }

    fn next_frame(&mut self) -> Result<Frame, CaptureError> {
        self.capture()
    }
}

impl Drop for V4l2Source {
    fn drop(&mut self) {
        self.stop();
    }
}

fn validate(opts: &V4l2Options, path: &str) -> Result<(), CaptureError> {
    let problem = if opts.width == 0 || opts.height == 0 || opts.fps == 0 {
        Some(format!(
            "width, height and fps must be > 0, got {}x{}@{}",
            opts.width, opts.height, opts.fps
        ))
    } else if opts.buffers == 0 || opts.buffers > MAX_BUFFERS {
        Some(format!(
            "buffers must be 1..={MAX_BUFFERS}, got {}",
            opts.buffers
        ))
    } else if opts.timeout_ms == 0 || opts.timeout_ms > i32::MAX as u64 {
        Some(format!(
            "timeout_ms must be 1..={}, got {}",
            i32::MAX,
            opts.timeout_ms
        ))
    } else {
        None
    };
    match problem {
        Some(msg) => Err(dev_err(
            path,
            "configure",
            io::Error::new(io::ErrorKind::InvalidInput, msg),
        )),
        None => Ok(()),
    }
}

/// Describe what the device offers. Sizes and intervals the driver cannot
/// enumerate are left empty/unknown; stepwise size ranges get the intervals
/// reported at the in-range size nearest to the wanted one.
fn describe_device(device: &Device, want: &Wanted) -> io::Result<Vec<DeviceFormat>> {
    let formats = guarded(|| device.enum_formats())?;
    let mut out = Vec::with_capacity(formats.len());
    for f in formats {
        let sizes = guarded(|| device.enum_framesizes(f.fourcc)).unwrap_or_default();
        let mut described = Vec::with_capacity(sizes.len());
        for s in sizes {
            match s.size {
                FrameSizeEnum::Discrete(d) => described.push(FrameSize::Discrete {
                    width: d.width,
                    height: d.height,
                    intervals: intervals(device, f.fourcc, d.width, d.height),
                }),
                FrameSizeEnum::Stepwise(s) => {
                    let range = SizeRange {
                        min_width: s.min_width,
                        max_width: s.max_width,
                        step_width: s.step_width,
                        min_height: s.min_height,
                        max_height: s.max_height,
                        step_height: s.step_height,
                    };
                    let (w, h) = range.nearest(want.width, want.height);
                    described.push(FrameSize::Stepwise {
                        range,
                        intervals: intervals(device, f.fourcc, w, h),
                    });
                }
            }
        }
        out.push(DeviceFormat {
            fourcc: f.fourcc.repr,
            sizes: described,
        });
    }
    Ok(out)
}

fn intervals(device: &Device, fourcc: FourCC, width: u32, height: u32) -> Intervals {
    let Ok(list) = guarded(|| device.enum_frameintervals(fourcc, width, height)) else {
        return Intervals::Unknown;
    };
    let mut discrete = Vec::new();
    for iv in list {
        match iv.interval {
            FrameIntervalEnum::Discrete(fr) => {
                discrete.push(Interval::new(fr.numerator, fr.denominator))
            }
            FrameIntervalEnum::Stepwise(s) => {
                return Intervals::Stepwise {
                    min: Interval::new(s.min.numerator, s.min.denominator),
                    max: Interval::new(s.max.numerator, s.max.denominator),
                    step: Interval::new(s.step.numerator, s.step.denominator),
                }
            }
        }
    }
    if discrete.is_empty() {
        Intervals::Unknown
    } else {
        Intervals::Discrete(discrete)
    }
}

/// Tear down a stream: unmap and free its buffers. The `v4l` crate panics if
/// that fails for any reason but a vanished device; catch and log it so this
/// never panics (it runs in `Drop`).
fn release(path: &str, stream: MmapStream<'static>) {
    if catch_unwind(AssertUnwindSafe(move || drop(stream))).is_err() {
        log::error!(device = path; "releasing capture buffers failed (see the panic message above)");
    }
}

/// Run a `v4l` call, turning a panic inside the crate into an error.
fn guarded<T>(f: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("unknown panic");
            Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("unexpected data from the driver: {msg}"),
            ))
        }
    }
}

/// `op`, or a variant naming the likely cause when the device is busy.
fn busy_hint(e: &io::Error, op: &'static str) -> &'static str {
    if e.raw_os_error() != Some(Errno::EBUSY as i32) {
        return op;
    }
    match op {
        "VIDIOC_S_FMT" => "VIDIOC_S_FMT (camera in use by another process?)",
        "VIDIOC_REQBUFS" => "VIDIOC_REQBUFS (camera in use by another process?)",
        other => other,
    }
}

fn dev_err(path: &str, op: &'static str, source: io::Error) -> CaptureError {
    CaptureError::Device {
        device: path.to_string(),
        op,
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::mjpeg::tests::{strip_dht, test_jpeg};

    fn opts(device: impl Into<PathBuf>) -> V4l2Options {
        V4l2Options {
            device: device.into(),
            width: 640,
            height: 480,
            fps: 30,
            format: FormatPreference::Auto,
            buffers: 4,
            timeout_ms: 2000,
        }
    }

    // Catches a missing camera being reported as a generic I/O error (or a panic).
    #[test]
    fn missing_device_is_device_missing() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("video42");
        match V4l2Source::open(opts(&path)) {
            Err(CaptureError::DeviceMissing { device }) => {
                assert_eq!(device, path.display().to_string())
            }
            Err(e) => panic!("expected DeviceMissing, got {e:?}"),
            Ok(_) => panic!("opened a missing device"),
        }
    }

    // Catches a non-V4L2 node being accepted or failing with an unclear message.
    #[test]
    fn non_video_nodes_are_rejected_clearly() {
        let tmp = tempfile::NamedTempFile::new().unwrap();
        for path in [PathBuf::from("/dev/null"), tmp.path().to_path_buf()] {
            match V4l2Source::open(opts(&path)) {
                Err(e @ CaptureError::Device { .. }) => {
                    let msg = e.to_string();
                    assert!(msg.contains(&path.display().to_string()), "{msg}");
                    assert!(msg.contains("not a V4L2 device"), "{msg}");
                }
                Err(e) => panic!("{}: expected a Device error, got {e:?}", path.display()),
                Ok(_) => panic!("{} opened as a camera", path.display()),
            }
        }
    }

    // Catches bad options reaching the driver (e.g. 0 buffers, a timeout that overflows poll).
    #[test]
    fn invalid_options_are_rejected_before_opening() {
        let bad = [
            V4l2Options {
                buffers: 0,
                ..opts("/dev/null")
            },
            V4l2Options {
                buffers: MAX_BUFFERS + 1,
                ..opts("/dev/null")
            },
            V4l2Options {
                timeout_ms: 0,
                ..opts("/dev/null")
            },
            V4l2Options {
                timeout_ms: u64::from(u32::MAX),
                ..opts("/dev/null")
            },
            V4l2Options {
                fps: 0,
                ..opts("/dev/null")
            },
            V4l2Options {
                width: 0,
                ..opts("/dev/null")
            },
        ];
        for o in bad {
            match V4l2Source::open(o.clone()) {
                Err(CaptureError::Device {
                    op: "configure",
                    source,
                    ..
                }) => {
                    assert_eq!(source.kind(), io::ErrorKind::InvalidInput, "{o:?}")
                }
                Err(e) => panic!("{o:?}: expected a configure error, got {e:?}"),
                Ok(_) => panic!("{o:?} accepted"),
            }
        }
    }

    // Catches copy_buffer passing an MJPEG frame without Huffman tables on
    // unrepaired (the repair itself is tested in image::mjpeg).
    #[test]
    fn copy_buffer_repairs_mjpeg_without_dht() {
        let stripped = strip_dht(&test_jpeg().0);
        let fixed = copy_buffer(
            CaptureFormat::Mjpeg,
            64,
            48,
            0,
            &stripped,
            stripped.len() as u32,
            BufferFlags::empty(),
        )
        .unwrap();
        assert_eq!(fixed, with_huffman_tables(&stripped));
        assert_ne!(fixed, stripped);
    }

    // Catches corrupt buffers (error flag, bad bytesused, truncated YUYV, non-JPEG MJPEG)
    // reaching inference, and padding beyond the image being kept.
    #[test]
    fn copy_buffer_rejects_corrupt_buffers() {
        let (jpeg, _) = test_jpeg();
        let mut buf = jpeg.clone();
        buf.resize(jpeg.len() + 1000, 0); // mmap buffers are larger than the frame
        let ok = copy_buffer(
            CaptureFormat::Mjpeg,
            0,
            0,
            0,
            &buf,
            jpeg.len() as u32,
            BufferFlags::empty(),
        );
        assert_eq!(ok.unwrap(), jpeg, "only bytesused bytes are copied");
        assert!(copy_buffer(
            CaptureFormat::Mjpeg,
            0,
            0,
            0,
            &buf,
            jpeg.len() as u32,
            BufferFlags::ERROR
        )
        .is_err());
        assert!(copy_buffer(CaptureFormat::Mjpeg, 0, 0, 0, &buf, 0, BufferFlags::empty()).is_err());
        assert!(copy_buffer(
            CaptureFormat::Mjpeg,
            0,
            0,
            0,
            &buf,
            buf.len() as u32 + 1,
            BufferFlags::empty()
        )
        .is_err());
        assert!(copy_buffer(
            CaptureFormat::Mjpeg,
            0,
            0,
            0,
            &[0u8; 100],
            100,
            BufferFlags::empty()
        )
        .is_err());

        // YUYV 4x2, stride 12: needs 12 + 8 = 20 bytes, full frame is 24.
        let yuyv = vec![7u8; 64];
        assert!(copy_buffer(
            CaptureFormat::Yuyv,
            4,
            2,
            12,
            &yuyv,
            19,
            BufferFlags::empty()
        )
        .is_err());
        assert_eq!(
            copy_buffer(
                CaptureFormat::Yuyv,
                4,
                2,
                12,
                &yuyv,
                20,
                BufferFlags::empty()
            )
            .unwrap()
            .len(),
            20
        );
        assert_eq!(
            copy_buffer(
                CaptureFormat::Yuyv,
                4,
                2,
                12,
                &yuyv,
                64,
                BufferFlags::empty()
            )
            .unwrap()
            .len(),
            24
        );
    }

    // Real-device check (run in the VM with vivid or a webcam):
    // SPOTTER_V4L2_DEVICE=/dev/video0 cargo test --lib capture::v4l2 -- --ignored
    // Catches frames whose size/stride/format disagree with what was negotiated.
    #[test]
    #[ignore = "needs a V4L2 camera: set SPOTTER_V4L2_DEVICE"]
    fn streams_from_real_device() {
        let dev =
            std::env::var("SPOTTER_V4L2_DEVICE").expect("set SPOTTER_V4L2_DEVICE=/dev/videoN");
        for format in [
            FormatPreference::Auto,
            FormatPreference::Yuyv,
            FormatPreference::Mjpeg,
        ] {
            let mut src = match V4l2Source::open(V4l2Options {
                format,
                ..opts(&dev)
            }) {
                Ok(s) => s,
                Err(CaptureError::NoSupportedFormat { offered, .. })
                    if format != FormatPreference::Auto =>
                {
                    eprintln!("{format}: not offered ({offered})");
                    continue;
                }
                Err(e) => panic!("{format}: {e}"),
            };
            eprintln!("{format}: {}", src.describe());
            assert!(src.describe().starts_with(&format!("v4l2:{dev} ")));
            let mut last_seq = None;
            for _ in 0..10 {
                let f = src.next_frame().unwrap();
                assert_eq!(f.origin, dev);
                assert!(last_seq.is_none_or(|s| f.seq == s + 1));
                last_seq = Some(f.seq);
                match f.format {
                    PixelFormat::Encoded => {
                        assert!(f.data.starts_with(&[0xFF, 0xD8]));
                        image::load_from_memory(&f.data).unwrap();
                    }
                    PixelFormat::Yuyv => {
                        let mut rgb = vec![0; (f.width * f.height * 3) as usize];
                        crate::image::yuyv::yuyv_to_rgb(
                            &f.data, f.width, f.height, f.stride, &mut rgb,
                        )
                        .unwrap();
                    }
                    PixelFormat::Rgb8 | PixelFormat::I420 | PixelFormat::Nv12 => {
                        panic!("V4L2 source never produces {:?}", f.format)
                    }
                }
            }
            // Stop and resume: streaming restarts on the next call.
            src.stop();
            src.next_frame().unwrap();
        }
    }
}
