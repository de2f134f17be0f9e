//! The result of one inference, as stored, served and published, and the one
//! builder that makes it ([`ResultRecord::build`]).

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::core::clock::{boottime_ns, unix_ns};
use crate::core::frame::Frame;

/// One ranked class of a classification result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassScore {
    /// Index into the model's output vector.
    pub index: usize,
    pub label: String,
    /// The raw output value (quantized integer, or the float for float models).
    pub raw: f32,
    /// The dequantized score.
    pub score: f32,
}

/// One detected object, in source-image pixel coordinates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Detection {
    pub class_index: usize,
    pub label: String,
    pub score: f32,
    pub x: f32,
    pub y: f32,
    pub width: f32,
    pub height: f32,
}

/// Per-stage latencies in microseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StageLatency {
    pub decode_us: u64,
    pub resize_us: u64,
    pub quantize_us: u64,
    pub invoke_us: u64,
    pub post_us: u64,
    pub store_us: u64,
}

/// What a model produced for one frame.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InferenceOutput {
    pub classes: Vec<ClassScore>,
    pub detections: Vec<Detection>,
    pub image_width: u32,
    pub image_height: u32,
    pub latency: StageLatency,
}

/// A stored result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultRecord {
    /// Stable id: 32 hex digits of the big-endian (timestamp_ns, seq) store key.
    pub id: String,
    /// Wall-clock time of capture, nanoseconds since the Unix epoch.
    pub ts_ns: u64,
    /// The source description, e.g. `files:/srv/demo` or `v4l2:/dev/video0`.
    pub source: String,
    /// The frame's origin: the device path or the replayed file.
    pub origin: String,
    pub frame_seq: u64,
    /// SHA-256 of the model file that produced this result.
    pub model_sha256: String,
    pub runtime: String,
    pub classes: Vec<ClassScore>,
    pub detections: Vec<Detection>,
    pub image_width: u32,
    pub image_height: u32,
    pub latency: StageLatency,
    /// Whether the system clock was synchronized when the frame was
    /// captured; `false` means `ts_ns` may be far off (board without RTC
    /// before NTP). Records written before this field existed read as `true`.
    #[serde(default = "default_true")]
    pub clock_synchronized: bool,
    /// `CLOCK_BOOTTIME` at capture in nanoseconds (orders results within one
    /// boot even when the wall clock was wrong); 0 when unknown.
    #[serde(default)]
    pub boottime_ns: u64,
    /// The name of the source whose frame this is (`[[source]] name`,
    /// `default` for a single `[source]`), `upload` for an image sent to the
    /// API; `GET /api/v1/results?source=NAME` filters by it. Records written
    /// before several sources existed read as empty.
    #[serde(default)]
    pub source_name: String,
}

impl ResultRecord {
    /// The one way a record is made: `output` of the model `model_sha256`
    /// (run on `runtime`) for `frame`, not stored yet (`id` is empty). The
    /// frame gives the capture time, source, origin and sequence number;
    /// `boottime_ns` is `CLOCK_BOOTTIME` at capture, from the frame's
    /// wall-clock age.
    pub(crate) fn build(
        output: InferenceOutput,
        frame: &Frame,
        model_sha256: &str,
        runtime: &str,
        clock_synchronized: bool,
    ) -> ResultRecord {
        let age = SystemTime::now()
            .duration_since(frame.captured_at)
            .unwrap_or_default();
        ResultRecord {
            id: String::new(),
            ts_ns: unix_ns(frame.captured_at),
            source: frame.source.clone(),
            origin: frame.origin.clone(),
            frame_seq: frame.seq,
            model_sha256: model_sha256.to_string(),
            runtime: runtime.to_string(),
            classes: output.classes,
            detections: output.detections,
            image_width: output.image_width,
            image_height: output.image_height,
            latency: output.latency,
            clock_synchronized,
            boottime_ns: boottime_ns().saturating_sub(age.as_nanos() as u64),
            // Set by the inference thread, which knows the frame's source.
            source_name: String::new(),
        }
    }
}

fn default_true() -> bool {
    true
}
