//! The result of one inference, as stored, served and published.

use serde::{Deserialize, Serialize};

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
}

fn default_true() -> bool {
    true
}
