//! Capture format negotiation, independent of any device.
//!
//! This module owns the decision of which pixel format, frame size and frame
//! interval to request from a camera, given a plain description of what the
//! device offers ([`DeviceFormat`]) and what the configuration wants
//! ([`Wanted`]). It performs no I/O, so every rule is unit-tested against fake
//! device descriptions; `v4l2.rs` fills the description from the driver and
//! applies the result.
//!
//! Rules:
//! - Format: `Auto` prefers MJPEG (fourcc `MJPG`, or `JPEG` which some
//!   drivers use for the same thing), then YUYV; `Mjpeg`/`Yuyv` force one.
//! - Size: the exact size if offered; otherwise, among the offered sizes at
//!   least as wide and as tall as wanted, the one with the smallest area
//!   difference; if none is that large, the one with the smallest area
//!   difference overall. A stepwise range contributes the in-range size
//!   nearest to the wanted one (rounded up to the step grid).
//!   A format whose sizes the driver does not enumerate (empty list) gets the
//!   wanted size; the driver adjusts it when the format is set.
//! - Frame rate: the offered interval whose rate is closest to the wanted fps
//!   (ties go to the faster rate); for a stepwise interval range, the wanted
//!   rate clamped into the range.
//!
//! Over 600 lines only with its tests (about 420 lines of code).

use std::fmt;

/// Which capture format the configuration asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FormatPreference {
    /// MJPEG if the device offers it, else YUYV.
    #[default]
    Auto,
    /// MJPEG only.
    Mjpeg,
    /// YUYV only.
    Yuyv,
}

impl fmt::Display for FormatPreference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FormatPreference::Auto => "auto",
            FormatPreference::Mjpeg => "mjpeg",
            FormatPreference::Yuyv => "yuyv",
        })
    }
}

impl std::str::FromStr for FormatPreference {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(FormatPreference::Auto),
            "mjpeg" | "mjpg" | "jpeg" => Ok(FormatPreference::Mjpeg),
            "yuyv" | "yuy2" => Ok(FormatPreference::Yuyv),
            other => Err(format!(
                "unknown capture format {other:?} (expected auto, mjpeg or yuyv)"
            )),
        }
    }
}

/// The two capture formats Spotter can consume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaptureFormat {
    /// Motion JPEG: every buffer is a complete JPEG image.
    Mjpeg,
    /// Packed YUV 4:2:2.
    Yuyv,
}

impl CaptureFormat {
    /// Classify a V4L2 fourcc, `None` for formats Spotter does not consume.
    pub(crate) fn from_fourcc(fourcc: [u8; 4]) -> Option<CaptureFormat> {
        match &fourcc {
            b"MJPG" | b"JPEG" => Some(CaptureFormat::Mjpeg),
            b"YUYV" => Some(CaptureFormat::Yuyv),
            _ => None,
        }
    }
}

/// A frame interval in seconds, `numerator / denominator` (1/30 = 30 fps).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Interval {
    pub numerator: u32,
    pub denominator: u32,
}

impl Interval {
    pub(crate) fn new(numerator: u32, denominator: u32) -> Interval {
        Interval {
            numerator,
            denominator,
        }
    }

    /// The interval of `fps` frames per second.
    pub(crate) fn from_fps(fps: u32) -> Interval {
        Interval {
            numerator: 1,
            denominator: fps,
        }
    }

    /// Frames per second, `None` for a degenerate interval with a zero term.
    pub(crate) fn fps(&self) -> Option<f64> {
        if self.numerator == 0 || self.denominator == 0 {
            None
        } else {
            Some(f64::from(self.denominator) / f64::from(self.numerator))
        }
    }
}

impl fmt::Display for Interval {
    /// Formats as a rate: `30`, `29.97`, or `?` when degenerate.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.fps() {
            None => f.write_str("?"),
            Some(fps) if (fps - fps.round()).abs() < 0.005 => write!(f, "{}", fps.round() as u64),
            Some(fps) => write!(f, "{fps:.2}"),
        }
    }
}

/// The frame intervals a device offers for one format and size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Intervals {
    /// A list of discrete intervals.
    Discrete(Vec<Interval>),
    /// Any interval from `min` (fastest) to `max` (slowest).
    Stepwise {
        min: Interval,
        max: Interval,
        step: Interval,
    },
    /// The driver does not enumerate intervals; the wanted rate is requested as is.
    Unknown,
}

/// A stepwise (or continuous) range of frame sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SizeRange {
    pub min_width: u32,
    pub max_width: u32,
    pub step_width: u32,
    pub min_height: u32,
    pub max_height: u32,
    pub step_height: u32,
}

impl SizeRange {
    /// The size in this range nearest to `width` x `height`: each dimension is
    /// clamped into the range and rounded up to the step grid (down only if
    /// rounding up would leave the range).
    pub(crate) fn nearest(&self, width: u32, height: u32) -> (u32, u32) {
        (
            snap(width, self.min_width, self.max_width, self.step_width),
            snap(height, self.min_height, self.max_height, self.step_height),
        )
    }
}

fn snap(value: u32, min: u32, max: u32, step: u32) -> u32 {
    let (min, max) = (min.min(max), min.max(max));
    let v = value.clamp(min, max);
    let step = step.max(1);
    let over = (v - min) % step;
    if over == 0 {
        return v;
    }
    let up = u64::from(v) + u64::from(step - over);
    if up <= u64::from(max) {
        up as u32
    } else {
        v - over
    }
}

/// One frame size a device offers for a format, with its intervals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FrameSize {
    Discrete {
        width: u32,
        height: u32,
        intervals: Intervals,
    },
    /// A range of sizes. `intervals` are those the device reports at the
    /// size `range.nearest(wanted)` (intervals depend on the size in V4L2).
    Stepwise {
        range: SizeRange,
        intervals: Intervals,
    },
}

/// One pixel format a device offers, with its sizes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DeviceFormat {
    pub fourcc: [u8; 4],
    /// Empty when the driver does not enumerate sizes for this format.
    pub sizes: Vec<FrameSize>,
}

/// What the configuration asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Wanted {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub preference: FormatPreference,
}

/// The negotiated request to make of the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Chosen {
    /// The fourcc exactly as the device offered it (`MJPG`, `JPEG` or `YUYV`).
    pub fourcc: [u8; 4],
    pub format: CaptureFormat,
    pub width: u32,
    pub height: u32,
    /// The interval to request; `None` when the device does not enumerate
    /// intervals, in which case the wanted fps is requested as is.
    pub interval: Option<Interval>,
}

/// Why no usable format could be chosen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum NegotiationError {
    #[error("no {preference} capture format offered; device offers: {offered}")]
    NoSupportedFormat {
        preference: FormatPreference,
        offered: String,
    },
    #[error("invalid capture request {width}x{height}@{fps}: width, height and fps must be > 0")]
    InvalidRequest { width: u32, height: u32, fps: u32 },
}

/// Pick the format, size and interval to request. See the module doc for the rules.
pub(crate) fn negotiate(
    offered: &[DeviceFormat],
    want: &Wanted,
) -> Result<Chosen, NegotiationError> {
    if want.width == 0 || want.height == 0 || want.fps == 0 {
        return Err(NegotiationError::InvalidRequest {
            width: want.width,
            height: want.height,
            fps: want.fps,
        });
    }
    let order: &[CaptureFormat] = match want.preference {
        FormatPreference::Auto => &[CaptureFormat::Mjpeg, CaptureFormat::Yuyv],
        FormatPreference::Mjpeg => &[CaptureFormat::Mjpeg],
        FormatPreference::Yuyv => &[CaptureFormat::Yuyv],
    };
    let format = order.iter().find_map(|&kind| {
        offered
            .iter()
            .find(|f| CaptureFormat::from_fourcc(f.fourcc) == Some(kind))
            .map(|f| (kind, f))
    });
    let Some((kind, format)) = format else {
        return Err(NegotiationError::NoSupportedFormat {
            preference: want.preference,
            offered: describe_offered(offered),
        });
    };

    let (width, height, intervals) = match pick_size(&format.sizes, want) {
        Some(picked) => picked,
        None => (want.width, want.height, &Intervals::Unknown),
    };
    Ok(Chosen {
        fourcc: format.fourcc,
        format: kind,
        width,
        height,
        interval: pick_interval(intervals, want.fps),
    })
}

/// Candidate sizes (with their intervals) and the best one by the size rules.
fn pick_size<'a>(sizes: &'a [FrameSize], want: &Wanted) -> Option<(u32, u32, &'a Intervals)> {
    let candidates = sizes.iter().map(|s| match s {
        FrameSize::Discrete {
            width,
            height,
            intervals,
        } => (*width, *height, intervals),
        FrameSize::Stepwise { range, intervals } => {
            let (w, h) = range.nearest(want.width, want.height);
            (w, h, intervals)
        }
    });
    let wanted_area = u64::from(want.width) * u64::from(want.height);
    // Key: (smaller than wanted?, area difference, dimension distance). The
    // first candidate wins ties, so the device's own order is kept.
    candidates.min_by_key(|&(w, h, _)| {
        let smaller = w < want.width || h < want.height;
        let area = u64::from(w) * u64::from(h);
        let dim = u64::from(w.abs_diff(want.width)) + u64::from(h.abs_diff(want.height));
        (smaller, area.abs_diff(wanted_area), dim)
    })
}

fn pick_interval(intervals: &Intervals, fps: u32) -> Option<Interval> {
    let wanted = f64::from(fps);
    match intervals {
        Intervals::Unknown => None,
        Intervals::Discrete(list) => {
            let mut best: Option<(Interval, f64)> = None;
            for &iv in list {
                let Some(rate) = iv.fps() else { continue };
                let better = match best {
                    None => true,
                    Some((_, best_rate)) => {
                        let (d, bd) = ((rate - wanted).abs(), (best_rate - wanted).abs());
                        d < bd || (d == bd && rate > best_rate)
                    }
                };
                if better {
                    best = Some((iv, rate));
                }
            }
            best.map(|(iv, _)| iv)
        }
        Intervals::Stepwise { min, max, .. } => {
            // `min` is the shortest interval (fastest rate).
            let (Some(fastest), Some(slowest)) = (min.fps(), max.fps()) else {
                return Some(Interval::from_fps(fps));
            };
            if wanted > fastest {
                Some(*min)
            } else if wanted < slowest {
                Some(*max)
            } else {
                // Inside the range; the driver rounds to its step when set.
                Some(Interval::from_fps(fps))
            }
        }
    }
}

/// A compact human-readable summary of what a device offers, for errors and logs,
/// e.g. `YUYV 640x480@30/15, 1280x720@10; RGB3 16x16-1920x1080`.
pub(crate) fn describe_offered(offered: &[DeviceFormat]) -> String {
    if offered.is_empty() {
        return "no capture formats".to_string();
    }
    let mut out = String::new();
    for (i, f) in offered.iter().enumerate() {
        if i > 0 {
            out.push_str("; ");
        }
        out.push_str(&fourcc_str(f.fourcc));
        if f.sizes.is_empty() {
            out.push_str(" (sizes not enumerated)");
            continue;
        }
        const MAX_SIZES: usize = 8;
        for (j, s) in f.sizes.iter().take(MAX_SIZES).enumerate() {
            out.push_str(if j == 0 { " " } else { ", " });
            match s {
                FrameSize::Discrete {
                    width,
                    height,
                    intervals,
                } => {
                    out.push_str(&format!("{width}x{height}"));
                    push_intervals(&mut out, intervals);
                }
                FrameSize::Stepwise { range, intervals } => {
                    out.push_str(&format!(
                        "{}x{}-{}x{}",
                        range.min_width, range.min_height, range.max_width, range.max_height
                    ));
                    push_intervals(&mut out, intervals);
                }
            }
        }
        if f.sizes.len() > MAX_SIZES {
            out.push_str(&format!(", … ({} sizes)", f.sizes.len()));
        }
    }
    out
}

fn push_intervals(out: &mut String, intervals: &Intervals) {
    match intervals {
        Intervals::Unknown => {}
        Intervals::Discrete(list) if list.is_empty() => {}
        Intervals::Discrete(list) => {
            out.push('@');
            let rates: Vec<String> = list.iter().map(|iv| iv.to_string()).collect();
            out.push_str(&rates.join("/"));
        }
        Intervals::Stepwise { min, max, .. } => out.push_str(&format!("@{max}-{min}")),
    }
}

/// A fourcc as text; non-printable bytes are shown as `?`.
pub(crate) fn fourcc_str(fourcc: [u8; 4]) -> String {
    fourcc
        .iter()
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                b as char
            } else {
                '?'
            }
        })
        .collect::<String>()
        .trim_end()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn discrete(width: u32, height: u32, fps: &[u32]) -> FrameSize {
        FrameSize::Discrete {
            width,
            height,
            intervals: Intervals::Discrete(fps.iter().map(|&f| Interval::from_fps(f)).collect()),
        }
    }

    fn want(width: u32, height: u32, fps: u32, preference: FormatPreference) -> Wanted {
        Wanted {
            width,
            height,
            fps,
            preference,
        }
    }

    /// A typical UVC webcam: YUYV listed first (as uvcvideo does), MJPEG second.
    fn uvc_webcam() -> Vec<DeviceFormat> {
        vec![
            DeviceFormat {
                fourcc: *b"YUYV",
                sizes: vec![discrete(640, 480, &[30, 15]), discrete(1280, 720, &[10, 5])],
            },
            DeviceFormat {
                fourcc: *b"MJPG",
                sizes: vec![
                    discrete(640, 480, &[30, 15]),
                    discrete(1280, 720, &[30, 15]),
                    discrete(1920, 1080, &[30]),
                ],
            },
        ]
    }

    /// The kernel's vivid test driver (webcam input): YUYV among raw formats, no MJPEG.
    fn vivid_like() -> Vec<DeviceFormat> {
        vec![
            DeviceFormat {
                fourcc: *b"RGB3",
                sizes: vec![discrete(320, 180, &[25]), discrete(640, 360, &[25])],
            },
            DeviceFormat {
                fourcc: *b"YUYV",
                sizes: vec![
                    discrete(320, 180, &[25, 50]),
                    discrete(640, 360, &[25, 50]),
                    discrete(1280, 720, &[25]),
                ],
            },
        ]
    }

    // Catches taking the device's first-listed format instead of preferring MJPEG in Auto.
    #[test]
    fn auto_prefers_mjpeg_over_yuyv() {
        let c = negotiate(&uvc_webcam(), &want(1280, 720, 30, FormatPreference::Auto)).unwrap();
        assert_eq!(c.format, CaptureFormat::Mjpeg);
        assert_eq!(c.fourcc, *b"MJPG");
        assert_eq!((c.width, c.height), (1280, 720));
        assert_eq!(c.interval, Some(Interval::from_fps(30)));
    }

    // Catches Auto failing (or picking an unsupported raw format) on a YUYV-only device.
    #[test]
    fn yuyv_only_device_falls_back_to_yuyv() {
        let c = negotiate(&vivid_like(), &want(640, 360, 30, FormatPreference::Auto)).unwrap();
        assert_eq!(c.format, CaptureFormat::Yuyv);
        assert_eq!(c.fourcc, *b"YUYV");
        assert_eq!((c.width, c.height), (640, 360));
        // 25 is closer to 30 than 50 is.
        assert_eq!(c.interval, Some(Interval::from_fps(25)));
    }

    // Catches a size rule that picks a smaller frame when a larger one exists, or a far one.
    #[test]
    fn closest_size_prefers_not_smaller() {
        let dev = uvc_webcam();
        // 800x600 is not offered: 1280x720 (larger) beats 640x480 (smaller, closer in area).
        let c = negotiate(&dev, &want(800, 600, 30, FormatPreference::Mjpeg)).unwrap();
        assert_eq!((c.width, c.height), (1280, 720));
        // Among larger sizes the smallest area difference wins: 1280x720 over 1920x1080.
        let c = negotiate(&dev, &want(700, 500, 30, FormatPreference::Mjpeg)).unwrap();
        assert_eq!((c.width, c.height), (1280, 720));
        // Nothing large enough: the closest smaller size by area.
        let c = negotiate(&dev, &want(4000, 3000, 30, FormatPreference::Mjpeg)).unwrap();
        assert_eq!((c.width, c.height), (1920, 1080));
        // Exact size offered: taken even though others exist.
        let c = negotiate(&dev, &want(640, 480, 15, FormatPreference::Mjpeg)).unwrap();
        assert_eq!((c.width, c.height), (640, 480));
        assert_eq!(c.interval, Some(Interval::from_fps(15)));
    }

    // Catches mishandled stepwise ranges: clamping, step rounding, interval ranges.
    #[test]
    fn stepwise_sizes_and_intervals() {
        let range = SizeRange {
            min_width: 16,
            max_width: 1920,
            step_width: 16,
            min_height: 16,
            max_height: 1080,
            step_height: 8,
        };
        let dev = vec![DeviceFormat {
            fourcc: *b"YUYV",
            sizes: vec![FrameSize::Stepwise {
                range,
                intervals: Intervals::Stepwise {
                    min: Interval::new(1, 60),
                    max: Interval::new(1, 1),
                    step: Interval::new(1, 60),
                },
            }],
        }];
        let c = negotiate(&dev, &want(640, 480, 30, FormatPreference::Auto)).unwrap();
        assert_eq!((c.width, c.height), (640, 480));
        assert_eq!(c.interval, Some(Interval::from_fps(30)));
        // Off-grid width is rounded up to the step; out-of-range is clamped.
        let c = negotiate(&dev, &want(650, 2000, 120, FormatPreference::Auto)).unwrap();
        assert_eq!((c.width, c.height), (656, 1080));
        assert_eq!(c.interval, Some(Interval::new(1, 60)));
        assert_eq!(range.nearest(1919, 1079), (1920, 1080));
        let off_grid = SizeRange {
            max_width: 1910,
            ..range
        };
        assert_eq!(
            off_grid.nearest(1905, 1079),
            (1904, 1080),
            "rounding up would leave the range"
        );
        assert_eq!(range.nearest(1, 1), (16, 16));
    }

    // Catches Yuyv preference being ignored when MJPEG is also offered.
    #[test]
    fn forced_yuyv() {
        let c = negotiate(&uvc_webcam(), &want(1280, 720, 30, FormatPreference::Yuyv)).unwrap();
        assert_eq!(c.format, CaptureFormat::Yuyv);
        assert_eq!((c.width, c.height), (1280, 720));
        // Only 10 and 5 fps at 720p in YUYV: the closest is 10.
        assert_eq!(c.interval, Some(Interval::from_fps(10)));
    }

    // Catches a silent fallback or an uninformative error when nothing usable is offered.
    #[test]
    fn no_supported_format_lists_offer() {
        let dev = vec![
            DeviceFormat {
                fourcc: *b"GREY",
                sizes: vec![discrete(640, 480, &[30])],
            },
            DeviceFormat {
                fourcc: *b"NV12",
                sizes: vec![],
            },
        ];
        let err = negotiate(&dev, &want(640, 480, 30, FormatPreference::Auto)).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("GREY 640x480@30"), "{msg}");
        assert!(msg.contains("NV12"), "{msg}");
        // Forcing MJPEG on a YUYV-only device is an error too, not a fallback.
        let err =
            negotiate(&vivid_like(), &want(640, 360, 25, FormatPreference::Mjpeg)).unwrap_err();
        assert!(matches!(
            err,
            NegotiationError::NoSupportedFormat {
                preference: FormatPreference::Mjpeg,
                ..
            }
        ));
        assert!(err.to_string().contains("YUYV"), "{err}");
        assert!(matches!(
            negotiate(&[], &want(640, 480, 30, FormatPreference::Auto)),
            Err(NegotiationError::NoSupportedFormat { .. })
        ));
    }

    // Catches a panic or wrong answer when the driver enumerates no sizes/intervals, and
    // accepts JPEG as MJPEG.
    #[test]
    fn unenumerated_sizes_and_jpeg_fourcc() {
        let dev = vec![DeviceFormat {
            fourcc: *b"JPEG",
            sizes: vec![],
        }];
        let c = negotiate(&dev, &want(1024, 768, 20, FormatPreference::Auto)).unwrap();
        assert_eq!(c.format, CaptureFormat::Mjpeg);
        assert_eq!(c.fourcc, *b"JPEG");
        assert_eq!((c.width, c.height), (1024, 768));
        assert_eq!(c.interval, None);
        assert!(matches!(
            negotiate(&dev, &want(0, 768, 20, FormatPreference::Auto)),
            Err(NegotiationError::InvalidRequest { .. })
        ));
    }

    // Catches wrong rate rounding in descriptions and ties going to the slower rate.
    #[test]
    fn interval_display_and_ties() {
        assert_eq!(Interval::new(1001, 30000).to_string(), "29.97");
        assert_eq!(Interval::new(1, 30).to_string(), "30");
        assert_eq!(Interval::new(0, 30).to_string(), "?");
        let iv = pick_interval(
            &Intervals::Discrete(vec![Interval::from_fps(15), Interval::from_fps(25)]),
            20,
        );
        assert_eq!(iv, Some(Interval::from_fps(25)));
        assert_eq!(
            "MJPEG".parse::<FormatPreference>(),
            Ok(FormatPreference::Mjpeg)
        );
        assert!("h264".parse::<FormatPreference>().is_err());
    }
}
