//! `spotter bench`: per-stage latency of the daemon's per-frame path.
//!
//! This module owns the benchmark command: it loads a model with each
//! requested runtime exactly as the daemon does (runtime selection, engine
//! assembly, canary), feeds it one encoded image (a file, or a synthetic
//! 640×480 JPEG made in memory) as the camera would, and times every stage of
//! the path — decode, resize, quantize, invoke, post-process, and the insert of
//! the result into a throw-away sled store, through the daemon's result sink
//! (with a throw-away state and no GPIO). It reports the median and p99
//! (nearest-rank) of each stage, of the engine's whole frame (`e2e`: encoded
//! bytes in, results out) and of the whole iteration, and the ratio of pre- and
//! post-processing to the model's own invoke time. For detectors it reports
//! pre-processing (decode + resize + quantize) and post-processing (decode +
//! NMS + rules, the `post` stage) each as a fraction of invoke, beside the
//! issue-17 targets ([`PRE_TARGET`], [`POST_TARGET`]), and for every model
//! motion detection (the prepare thread's 1/8 luma image and background
//! compare, issue 18) as a fraction of invoke beside [`MOTION_TARGET`]. The statistics are
//! small pure functions, tested on known vectors.
//!
//! Why one file of some 900 lines: about 640 are code (runtimes, stages,
//! statistics, the report) and the rest tests.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{json, Map, Value};

use crate::config::JpegScaling;
use crate::core::frame::Frame;
use crate::core::result::StageLatency;
use crate::inference::engine::{Engine, ModelOptions};
use crate::inference::select::{read_and_open, RuntimeChoice};
use crate::inference::InferenceError;
use crate::pipeline::{Keep, ResultSink};
use crate::state::AppState;
use crate::store::{Store, StoreError};

/// Width of the synthetic frame used when no image is given (a VGA camera frame).
pub(crate) const SYNTHETIC_WIDTH: u32 = 640;
/// Height of the synthetic frame used when no image is given.
pub(crate) const SYNTHETIC_HEIGHT: u32 = 480;
/// JPEG quality of the synthetic frame, typical of a webcam's MJPEG stream.
const SYNTHETIC_QUALITY: u8 = 85;
/// Largest number of measured runs (each keeps seven `u64` samples).
pub(crate) const MAX_RUNS: usize = 1_000_000;
/// Largest image file read with `--image`.
const MAX_IMAGE_BYTES: u64 = 64 * 1024 * 1024;
/// sled's background flush interval for the temporary store, as the daemon uses.
const STORE_FLUSH_MS: u64 = 1000;
/// Target for a detector's pre-processing (JPEG decode + resize/letterbox +
/// quantize) over invoke: a 1280×720 MJPEG frame into a 640×640 YOLOv8n.
pub(crate) const PRE_TARGET: f64 = 0.15;
/// Target for a detector's post-processing (output decode + NMS + rules) over
/// invoke: YOLOv8n 640, one thread.
pub(crate) const POST_TARGET: f64 = 0.02;
/// What the targets were set for (printed beside them).
const PRE_TARGET_CASE: &str = "1280x720 JPEG into a 640x640 detector";
/// Target for motion detection (the small luma image and its comparison
/// with the background, issue 18) over invoke.
pub(crate) const MOTION_TARGET: f64 = 0.03;
const MOTION_TARGET_CASE: &str = "640x480 MJPEG, EfficientNet-Lite0";
const POST_TARGET_CASE: &str = "YOLOv8n 640, one thread";

/// Which runtimes to benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum BenchRuntime {
    /// What the daemon would pick: LiteRT if it loads the model, else built-in.
    #[default]
    Auto,
    /// LiteRT only; an error if it cannot be loaded.
    Litert,
    /// The built-in TF Lite only.
    Builtin,
    /// Built-in, and LiteRT too unless its library is missing (then reported as skipped).
    All,
}

/// Arguments of `spotter bench`.
#[derive(Debug, Clone, PartialEq, clap::Args)]
pub struct BenchArgs {
    /// The .tflite model to benchmark.
    #[arg(long)]
    pub model: PathBuf,
    /// A JPEG, PNG or BMP image fed as an encoded camera frame; default: a synthetic 640x480 JPEG.
    #[arg(long)]
    pub image: Option<PathBuf>,
    /// Measured runs per runtime.
    #[arg(long, default_value_t = 50)]
    pub runs: usize,
    /// Unmeasured warm-up runs per runtime, before the measured ones.
    #[arg(long, default_value_t = 5)]
    pub warmup: usize,
    /// CPU threads for the runtime.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    #[arg(long, value_enum, default_value = "auto")]
    pub runtime: BenchRuntime,
    /// Labels file; optional when the model embeds its labels.
    #[arg(long)]
    pub labels: Option<PathBuf>,
    /// Print one JSON object instead of a table (and no progress bar).
    #[arg(long)]
    pub json: bool,
    /// Path of libLiteRt.so.
    #[arg(long, env = "SPOTTER_LITERT_LIB")]
    pub litert_lib: Option<PathBuf>,
    /// JPEG decoding: auto (libjpeg-turbo with DCT-domain downscaling, the
    /// daemon's default) or off (full-size reference decode).
    #[arg(long, value_enum, default_value = "auto")]
    pub jpeg_scaling: JpegScaling,
    /// Lowest score a detection or class needs (`model.min_score`; detectors
    /// drop candidates below it before NMS, so it sets the post stage's work).
    /// Default: the model family's (0.25 for YOLO, 0 otherwise).
    #[arg(long)]
    pub min_score: Option<f32>,
    /// Also measure the daemon's pipeline (files source → prepare →
    /// inference → store) for this many seconds per variant: frames
    /// prepared before each invoke, then prepared during the previous
    /// invoke; 0: off.
    #[arg(long, default_value_t = 0)]
    pub pipeline_seconds: u64,
    /// Rate of the files source in the pipeline measurement (high enough
    /// to be unbounded for the model).
    #[arg(long, default_value_t = 1000.0)]
    pub pipeline_fps: f64,
}

impl BenchArgs {
    #[cfg(test)]
    /// Arguments with the command-line defaults for `model`.
    pub(crate) fn new(model: impl Into<PathBuf>) -> BenchArgs {
        BenchArgs {
            model: model.into(),
            image: None,
            runs: 50,
            warmup: 5,
            threads: 2,
            runtime: BenchRuntime::Auto,
            labels: None,
            json: false,
            litert_lib: None,
            jpeg_scaling: JpegScaling::Auto,
            min_score: None,
            pipeline_seconds: 0,
            pipeline_fps: 1000.0,
        }
    }
}

/// Errors from `spotter bench`, with the file or runtime they concern.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BenchError {
    #[error("invalid arguments: {0}")]
    Args(String),
    // The cause is part of the message and deliberately not a `source`, so
    // error reports that print the chain do not repeat it.
    #[error("image {path}: {error}")]
    ImageRead { path: String, error: std::io::Error },
    #[error("image {path}: {reason}")]
    ImageInvalid { path: String, reason: String },
    #[error("synthetic image: {0}")]
    Synthetic(String),
    #[error("temporary result store: {0}")]
    TempDir(std::io::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{runtime}: {error}")]
    Load {
        runtime: String,
        error: InferenceError,
    },
    #[error("{runtime}: pipeline: {reason}")]
    Pipeline { runtime: String, reason: String },
    #[error("{runtime}: run {run}: {error}")]
    Run {
        runtime: String,
        run: usize,
        error: InferenceError,
    },
}

/// Median and 99th percentile of one stage, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct StageStats {
    pub median_ms: f64,
    pub p99_ms: f64,
}

/// Statistics of every stage for one runtime.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StageSummary {
    pub decode: StageStats,
    pub resize: StageStats,
    pub quantize: StageStats,
    pub invoke: StageStats,
    pub post: StageStats,
    pub store: StageStats,
    /// Wall-clock time of the engine's whole frame: encoded bytes in,
    /// classes or detections out (decode through post, and what lies
    /// between them) — the figure to set beside another pipeline's.
    pub e2e: StageStats,
    /// Wall-clock time of the whole per-frame iteration (run, record, sink).
    pub total: StageStats,
}

impl StageSummary {
    /// `(name, stats)` in pipeline order, then the engine's frame and the total.
    pub(crate) fn stages(&self) -> [(&'static str, StageStats); 8] {
        [
            ("decode", self.decode),
            ("resize", self.resize),
            ("quantize", self.quantize),
            ("invoke", self.invoke),
            ("post", self.post),
            ("store", self.store),
            ("e2e", self.e2e),
            ("total", self.total),
        ]
    }
}

/// The measurements of one runtime.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RuntimeResult {
    pub stages: StageSummary,
    /// `(decode + resize + quantize + post) / invoke`, on medians; `None` if invoke's median is 0.
    pub overhead_ratio: Option<f64>,
    /// `(decode + resize + quantize) / invoke`, on medians.
    pub pre_ratio: Option<f64>,
    /// `post / invoke` (output decode + NMS + rules), on medians.
    pub post_ratio: Option<f64>,
    /// The model's kind as the API names it (`classification`, `detection`).
    pub kind: &'static str,
    /// The model family (`classifier`, `ssd`, `yolov8`, `yolov5`).
    pub family: &'static str,
    /// Why this runtime runs the model (from runtime selection).
    pub reason: String,
    /// Input tensor shape of the model as loaded.
    pub input_shape: Vec<usize>,
    /// Source image size, as decoded by the engine.
    pub image_width: u32,
    pub image_height: u32,
    /// The daemon pipeline's sustained rate, when `--pipeline-seconds` asks.
    pub pipeline: Option<Box<PipelineRates>>,
    /// Motion detection per frame (issue 18): the luma image at 1/8 and its
    /// comparison with a running background, as the prepare thread does it
    /// before deciding whether to prepare the frame at all.
    pub motion: StageStats,
    /// `motion / invoke`, on medians.
    pub motion_ratio: Option<f64>,
}

/// Sustained rates of the daemon's pipeline on the bench frame, against the
/// rate the model's invoke alone allows (1 / the median invoke above).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PipelineRates {
    /// 1 / median invoke of the measured runs, per second.
    pub invoke_rate: f64,
    /// Results per second with each frame prepared before its invoke.
    pub serial_rate: f64,
    /// Results per second with the next frame prepared during the invoke.
    pub ahead_rate: f64,
    /// Mean invoke in the pipelined run, ms (contention shows here).
    pub ahead_invoke_ms: f64,
    /// Prepared frames superseded before their invoke in the pipelined run.
    pub superseded: u64,
    pub seconds: u64,
    pub fps: f64,
}

impl PipelineRates {
    fn ratio(&self, rate: f64) -> f64 {
        if self.invoke_rate > 0.0 {
            rate / self.invoke_rate
        } else {
            0.0
        }
    }
}

/// What happened for one runtime.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum RuntimeOutcome {
    Measured(Box<RuntimeResult>),
    /// Not measured (only in `all`, when the LiteRT library is missing).
    Skipped {
        reason: String,
    },
}

/// The result of `spotter bench`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct BenchReport {
    pub model: String,
    /// The image path, or a description of the synthetic frame.
    pub image: String,
    pub image_bytes: usize,
    pub runs: usize,
    pub warmup: usize,
    pub threads: usize,
    pub jpeg_scaling: JpegScaling,
    /// `None`: the model family's default.
    pub min_score: Option<f32>,
    /// Runtime name (`litert`, `builtin`) → outcome, in the order run.
    pub runtimes: Vec<(String, RuntimeOutcome)>,
}

impl BenchReport {
    /// A human-readable table.
    pub(crate) fn to_text(&self) -> String {
        let mut s = String::new();
        s.push_str(&format!("model    {}\n", self.model));
        s.push_str(&format!(
            "image    {} ({} bytes)\n",
            self.image, self.image_bytes
        ));
        s.push_str(&format!(
            "runs     {} measured after {} warm-up, threads {}, jpeg_scaling {:?}\n",
            self.runs, self.warmup, self.threads, self.jpeg_scaling
        ));
        for (name, outcome) in &self.runtimes {
            s.push('\n');
            match outcome {
                RuntimeOutcome::Skipped { reason } => {
                    s.push_str(&format!("{name}: skipped: {reason}\n"));
                }
                RuntimeOutcome::Measured(r) => {
                    s.push_str(&format!("{name} ({})\n", r.reason));
                    s.push_str(&format!(
                        "  {} model, input {:?}, frame {}x{}\n",
                        r.family, r.input_shape, r.image_width, r.image_height
                    ));
                    s.push_str(&format!(
                        "  {:<10} {:>10} {:>10}\n",
                        "stage", "median ms", "p99 ms"
                    ));
                    for (stage, st) in r.stages.stages() {
                        s.push_str(&format!(
                            "  {:<10} {:>10.3} {:>10.3}\n",
                            stage, st.median_ms, st.p99_ms
                        ));
                    }
                    let ratio = match r.overhead_ratio {
                        Some(x) => format!("{x:.3}"),
                        None => "n/a (invoke median is 0)".to_string(),
                    };
                    s.push_str(&format!("  overhead/invoke {ratio}  (decode+resize+quantize+post over invoke, medians)\n"));
                    if r.kind == "detection" {
                        s.push_str(&target_line(
                            "pre/invoke ",
                            r.pre_ratio,
                            PRE_TARGET,
                            "decode+resize+quantize",
                            PRE_TARGET_CASE,
                        ));
                        s.push_str(&target_line(
                            "post/invoke",
                            r.post_ratio,
                            POST_TARGET,
                            "decode+NMS+rules",
                            POST_TARGET_CASE,
                        ));
                    }
                    s.push_str(&format!(
                        "  motion     {:>10.3} {:>10.3}\n",
                        r.motion.median_ms, r.motion.p99_ms
                    ));
                    s.push_str(&target_line(
                        "motion/invoke",
                        r.motion_ratio,
                        MOTION_TARGET,
                        "1/8 grey image + background compare",
                        MOTION_TARGET_CASE,
                    ));
                    if let Some(p) = &r.pipeline {
                        s.push_str(&format!(
                            "  pipeline (files source at {} fps, {} s each, results stored):\n",
                            p.fps, p.seconds
                        ));
                        s.push_str(&format!(
                            "    1/invoke (median above)        {:>8.1} /s\n",
                            p.invoke_rate
                        ));
                        s.push_str(&format!(
                            "    prepared before each invoke    {:>8.1} /s  {:.3} of 1/invoke\n",
                            p.serial_rate,
                            p.ratio(p.serial_rate)
                        ));
                        s.push_str(&format!(
                            "    prepared during the invoke     {:>8.1} /s  {:.3} of 1/invoke  (mean invoke {:.3} ms, {} superseded)\n",
                            p.ahead_rate,
                            p.ratio(p.ahead_rate),
                            p.ahead_invoke_ms,
                            p.superseded
                        ));
                    }
                }
            }
        }
        s
    }

    /// One JSON object: model, image, runs, threads, and per runtime the stage
    /// statistics (`median_ms`, `p99_ms`), `overhead_ratio` and `reason`, or
    /// `skipped: true` with the reason.
    pub(crate) fn to_json(&self) -> Value {
        let mut runtimes = Map::new();
        for (name, outcome) in &self.runtimes {
            let v = match outcome {
                RuntimeOutcome::Skipped { reason } => json!({ "skipped": true, "reason": reason }),
                RuntimeOutcome::Measured(r) => {
                    let mut stages = Map::new();
                    for (stage, st) in r.stages.stages() {
                        stages.insert(
                            stage.to_string(),
                            json!({ "median_ms": st.median_ms, "p99_ms": st.p99_ms }),
                        );
                    }
                    json!({
                        "skipped": false,
                        "stages": stages,
                        "overhead_ratio": r.overhead_ratio,
                        "pre_ratio": r.pre_ratio,
                        "post_ratio": r.post_ratio,
                        "kind": r.kind,
                        "family": r.family,
                        "targets": (r.kind == "detection").then(|| json!({
                            "pre_ratio": { "max": PRE_TARGET, "case": PRE_TARGET_CASE,
                                           "met": r.pre_ratio.map(|x| x <= PRE_TARGET) },
                            "post_ratio": { "max": POST_TARGET, "case": POST_TARGET_CASE,
                                            "met": r.post_ratio.map(|x| x <= POST_TARGET) },
                        })),
                        "motion": { "median_ms": r.motion.median_ms, "p99_ms": r.motion.p99_ms },
                        "motion_ratio": r.motion_ratio,
                        "motion_target": { "max": MOTION_TARGET, "case": MOTION_TARGET_CASE,
                                           "met": r.motion_ratio.map(|x| x <= MOTION_TARGET) },
                        "reason": r.reason,
                        "input_shape": r.input_shape,
                        "image_width": r.image_width,
                        "image_height": r.image_height,
                        "pipeline": r.pipeline.as_ref().map(|p| json!({
                            "seconds": p.seconds,
                            "source_fps": p.fps,
                            "invoke_rate": p.invoke_rate,
                            "serial_rate": p.serial_rate,
                            "serial_ratio": p.ratio(p.serial_rate),
                            "ahead_rate": p.ahead_rate,
                            "ahead_ratio": p.ratio(p.ahead_rate),
                            "ahead_invoke_ms": p.ahead_invoke_ms,
                            "superseded": p.superseded,
                        })),
                    })
                }
            };
            runtimes.insert(name.clone(), v);
        }
        json!({
            "model": self.model,
            "image": self.image,
            "image_bytes": self.image_bytes,
            "runs": self.runs,
            "warmup": self.warmup,
            "threads": self.threads,
            "jpeg_scaling": self.jpeg_scaling,
            "min_score": self.min_score,
            "runtimes": runtimes,
        })
    }
}

/// The nearest-rank `p`-th percentile (0 < p ≤ 100) of `sorted` (ascending):
/// the smallest value such that at least `p`% of the samples are ≤ it.
/// `None` for an empty slice.
pub(crate) fn percentile_nearest_rank(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let n = sorted.len();
    let rank = ((p / 100.0) * n as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, n) - 1])
}

/// Median and p99 (nearest rank) of samples in microseconds, in milliseconds.
/// All zeros for no samples.
pub(crate) fn stage_stats(samples_us: &[u64]) -> StageStats {
    let mut ms: Vec<f64> = samples_us.iter().map(|&us| us as f64 / 1000.0).collect();
    ms.sort_by(f64::total_cmp);
    StageStats {
        median_ms: percentile_nearest_rank(&ms, 50.0).unwrap_or(0.0),
        p99_ms: percentile_nearest_rank(&ms, 99.0).unwrap_or(0.0),
    }
}

/// Pre- and post-processing time over invoke time:
/// `(decode + resize + quantize + post) / invoke`. `None` when invoke is not
/// positive (the ratio would be meaningless).
pub(crate) fn overhead_ratio(
    decode: f64,
    resize: f64,
    quantize: f64,
    post: f64,
    invoke: f64,
) -> Option<f64> {
    (invoke > 0.0).then(|| (decode + resize + quantize + post) / invoke)
}

/// `part / invoke`, or `None` when invoke is not positive.
pub(crate) fn fraction_of_invoke(part: f64, invoke: f64) -> Option<f64> {
    (invoke > 0.0).then(|| part / invoke)
}

/// One text line: a fraction of invoke beside its target, and whether it is met.
fn target_line(name: &str, ratio: Option<f64>, target: f64, what: &str, case: &str) -> String {
    let (figure, verdict) = match ratio {
        Some(x) => (
            format!("{x:.3}"),
            if x <= target { "ok" } else { "above target" },
        ),
        None => ("n/a".to_string(), "invoke median is 0"),
    };
    format!("  {name} {figure}  target <= {target} for {case}: {verdict}  ({what} over invoke, medians)\n")
}

/// Per-run samples of every stage, in microseconds.
#[derive(Debug, Default)]
struct Samples {
    decode: Vec<u64>,
    resize: Vec<u64>,
    quantize: Vec<u64>,
    invoke: Vec<u64>,
    post: Vec<u64>,
    store: Vec<u64>,
    e2e: Vec<u64>,
    total: Vec<u64>,
}

impl Samples {
    fn with_capacity(n: usize) -> Samples {
        let v = || Vec::with_capacity(n);
        Samples {
            decode: v(),
            resize: v(),
            quantize: v(),
            invoke: v(),
            post: v(),
            store: v(),
            e2e: v(),
            total: v(),
        }
    }

    fn push(&mut self, l: &StageLatency, e2e_us: u64, total_us: u64) {
        self.decode.push(l.decode_us);
        self.resize.push(l.resize_us);
        self.quantize.push(l.quantize_us);
        self.invoke.push(l.invoke_us);
        self.post.push(l.post_us);
        self.store.push(l.store_us);
        self.e2e.push(e2e_us);
        self.total.push(total_us);
    }

    fn summarize(&self) -> StageSummary {
        StageSummary {
            decode: stage_stats(&self.decode),
            resize: stage_stats(&self.resize),
            quantize: stage_stats(&self.quantize),
            invoke: stage_stats(&self.invoke),
            post: stage_stats(&self.post),
            store: stage_stats(&self.store),
            e2e: stage_stats(&self.e2e),
            total: stage_stats(&self.total),
        }
    }
}

/// A deterministic 640×480 JPEG with colour gradients and fine texture (so
/// the decoder does real work, unlike a flat image), encoded in memory.
pub(crate) fn synthetic_jpeg() -> Result<Vec<u8>, BenchError> {
    let (w, h) = (SYNTHETIC_WIDTH, SYNTHETIC_HEIGHT);
    let mut rgb = Vec::with_capacity(w as usize * h as usize * 3);
    for y in 0..h {
        for x in 0..w {
            // A cheap integer hash gives per-pixel noise without a RNG.
            let n = (x.wrapping_mul(73_856_093) ^ y.wrapping_mul(19_349_663)) % 48;
            let r = (255 * x / w) as u8;
            let g = (255 * y / h) as u8;
            let b = ((x / 40 + y / 40) % 2 * 160) as u8;
            rgb.extend_from_slice(&[
                r.saturating_add(n as u8),
                g.saturating_add(n as u8 / 2),
                b.saturating_add(n as u8),
            ]);
        }
    }
    let mut out = Vec::with_capacity(64 * 1024);
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, SYNTHETIC_QUALITY)
        .encode(&rgb, w, h, image::ExtendedColorType::Rgb8)
        .map_err(|e| BenchError::Synthetic(e.to_string()))?;
    Ok(out)
}

/// Read `--image`, bounded, and check that it is a JPEG, PNG or BMP.
fn read_image(path: &Path) -> Result<Vec<u8>, BenchError> {
    use std::io::Read;
    let p = path.display().to_string();
    let io = |error| BenchError::ImageRead {
        path: p.clone(),
        error,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut data = Vec::new();
    file.take(MAX_IMAGE_BYTES + 1)
        .read_to_end(&mut data)
        .map_err(io)?;
    if data.len() as u64 > MAX_IMAGE_BYTES {
        return Err(BenchError::ImageInvalid {
            path: p,
            reason: format!("larger than {MAX_IMAGE_BYTES} bytes"),
        });
    }
    match image::guess_format(&data) {
        Ok(image::ImageFormat::Jpeg | image::ImageFormat::Png | image::ImageFormat::Bmp) => {
            Ok(data)
        }
        Ok(other) => Err(BenchError::ImageInvalid {
            path: p,
            reason: format!("{other:?} is not supported (JPEG, PNG or BMP)"),
        }),
        Err(_) => Err(BenchError::ImageInvalid {
            path: p,
            reason: "not a JPEG, PNG or BMP image".into(),
        }),
    }
}

/// One runtime to load: what to ask `open_runtime` for, and whether a missing
/// LiteRT library means "skip" rather than "fail".
#[derive(Debug, Clone, Copy)]
struct Plan {
    choice: RuntimeChoice,
    skip_if_missing: bool,
}

fn plans(runtime: BenchRuntime) -> Vec<Plan> {
    let p = |choice, skip_if_missing| Plan {
        choice,
        skip_if_missing,
    };
    match runtime {
        BenchRuntime::Auto => vec![p(RuntimeChoice::Auto, false)],
        BenchRuntime::Litert => vec![p(RuntimeChoice::Litert, false)],
        BenchRuntime::Builtin => vec![p(RuntimeChoice::Builtin, false)],
        BenchRuntime::All => vec![
            p(RuntimeChoice::Litert, true),
            p(RuntimeChoice::Builtin, false),
        ],
    }
}

/// Run the benchmark described by `args` and return the measurements.
/// Shows a progress bar on stderr when it is a terminal and `args.json` is off.
pub(crate) fn run_bench(args: &BenchArgs) -> Result<BenchReport, BenchError> {
    if args.runs == 0 || args.runs > MAX_RUNS {
        return Err(BenchError::Args(format!(
            "--runs must be between 1 and {MAX_RUNS}"
        )));
    }
    if args.warmup > MAX_RUNS {
        return Err(BenchError::Args(format!(
            "--warmup must be at most {MAX_RUNS}"
        )));
    }
    if args.min_score.is_some_and(|s| !(0.0..=1.0).contains(&s)) {
        return Err(BenchError::Args(
            "--min-score must be between 0.0 and 1.0".into(),
        ));
    }
    if !(1..=64).contains(&args.threads) {
        return Err(BenchError::Args(
            "--threads must be between 1 and 64".into(),
        ));
    }
    let (data, image) = match &args.image {
        Some(p) => (read_image(p)?, p.display().to_string()),
        None => (
            synthetic_jpeg()?,
            format!("synthetic {SYNTHETIC_WIDTH}x{SYNTHETIC_HEIGHT} JPEG"),
        ),
    };
    let image_bytes = data.len();
    let frame = Frame::encoded(data, 0, image.clone()).with_source("bench");

    let mut runtimes = Vec::new();
    for plan in plans(args.runtime) {
        let label = plan.choice.as_str().to_string();
        let opened = read_and_open(
            plan.choice,
            args.litert_lib.as_deref(),
            &args.model,
            args.threads,
        );
        let (runtime, reason, file) = match opened {
            Ok(r) => r,
            Err(e @ InferenceError::LiteRtUnavailable { .. }) if plan.skip_if_missing => {
                log::warn!(model:display = args.model.display(); "LiteRT skipped: {e}");
                runtimes.push((
                    "litert".to_string(),
                    RuntimeOutcome::Skipped {
                        reason: e.to_string(),
                    },
                ));
                continue;
            }
            Err(error) => {
                return Err(BenchError::Load {
                    runtime: label,
                    error,
                })
            }
        };
        let name = runtime.kind().to_string();
        let load_err = |error| BenchError::Load {
            runtime: name.clone(),
            error,
        };
        let mut opts = ModelOptions::new(&args.model);
        opts.labels = args.labels.clone();
        opts.threads = args.threads;
        opts.jpeg_scaling = args.jpeg_scaling;
        opts.min_score = args.min_score;
        let mut engine = Engine::load(&opts, runtime, &file).map_err(load_err)?;
        engine.canary().map_err(load_err)?;
        let mut result = measure(&mut engine, &name, reason, &frame, file.sha256(), args)?;
        if args.pipeline_seconds > 0 {
            drop(engine);
            let invoke_ms = result.stages.invoke.median_ms;
            result.pipeline = Some(Box::new(measure_pipeline(&name, &frame, invoke_ms, args)?));
        }
        runtimes.push((name, RuntimeOutcome::Measured(Box::new(result))));
    }

    Ok(BenchReport {
        model: args.model.display().to_string(),
        image,
        image_bytes,
        runs: args.runs,
        warmup: args.warmup,
        threads: args.threads,
        jpeg_scaling: args.jpeg_scaling,
        min_score: args.min_score,
        runtimes,
    })
}

fn progress_bar(len: u64, name: &str, json: bool) -> ProgressBar {
    // `stderr()` hides itself when stderr is not a terminal.
    let target = if json {
        ProgressDrawTarget::hidden()
    } else {
        ProgressDrawTarget::stderr()
    };
    let bar = ProgressBar::with_draw_target(Some(len), target);
    if let Ok(style) = ProgressStyle::with_template("{msg:>8} [{bar:40}] {pos}/{len} {elapsed}") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(name.to_string());
    bar
}

/// Warm up, then time `args.runs` iterations of run → record → sink (store
/// insert, state, metrics).
fn measure(
    engine: &mut Engine,
    name: &str,
    reason: String,
    frame: &Frame,
    sha256: &str,
    args: &BenchArgs,
) -> Result<RuntimeResult, BenchError> {
    let dir = tempfile::Builder::new()
        .prefix("spotter-bench-")
        .tempdir()
        .map_err(BenchError::TempDir)?;
    let store = Arc::new(Store::open_with(dir.path(), STORE_FLUSH_MS)?);
    let state = Arc::new(AppState::new());
    let clock_ok = crate::core::clock::clock_synchronized();
    state.clock_synchronized.store(clock_ok, Ordering::Relaxed);
    let mut sink = ResultSink::new(store, state, None);
    // Each run is a new capture of the same image.
    let mut frame = frame.clone();
    let bar = progress_bar((args.warmup + args.runs) as u64, name, args.json);
    let mut samples = Samples::with_capacity(args.runs);
    let mut last_size = (0, 0);
    // Motion detection as the prepare thread runs it (issue 18).
    let mut luma = crate::image::luma::LumaSampler::default();
    let mut detector = crate::sightings::motion::MotionDetector::new(Default::default());
    let (mut small, mut motion_us) = (Vec::new(), Vec::with_capacity(args.runs));
    for i in 0..args.warmup + args.runs {
        let t = Instant::now();
        if let Ok((w, h)) = luma.sample(
            &frame,
            crate::inference::preprocess::DEFAULT_MAX_PIXELS,
            &mut small,
        ) {
            detector.feed(&small, w, h);
        }
        if i >= args.warmup {
            motion_us.push(t.elapsed().as_micros() as u64);
        }
        let start = Instant::now();
        let run_err = |error| BenchError::Run {
            runtime: name.to_string(),
            run: i + 1,
            error,
        };
        (frame.seq, frame.captured_at) = (i as u64, SystemTime::now());
        let out = engine.run(&frame).map_err(run_err)?;
        let e2e_us = start.elapsed().as_micros() as u64;
        let mut rec = sink.record(out, &frame, sha256, name);
        let keep = Keep::Store {
            snapshot: None,
            trigger: None,
        };
        // This run's own insert, not the previous one the record carries.
        let wrote = sink.deliver(&mut rec, keep)?;
        rec.latency.store_us = wrote.map_or(0, |d| d.as_micros() as u64);
        let total_us = start.elapsed().as_micros() as u64;
        if i >= args.warmup {
            samples.push(&rec.latency, e2e_us, total_us);
        }
        last_size = (rec.image_width, rec.image_height);
        bar.inc(1);
    }
    bar.finish_and_clear();
    drop(sink);
    if let Err(e) = dir.close() {
        log::warn!("could not remove the temporary result store: {e}");
    }

    let stages = samples.summarize();
    let ratio = overhead_ratio(
        stages.decode.median_ms,
        stages.resize.median_ms,
        stages.quantize.median_ms,
        stages.post.median_ms,
        stages.invoke.median_ms,
    );
    let pre = stages.decode.median_ms + stages.resize.median_ms + stages.quantize.median_ms;
    let info = engine.info();
    let motion = stage_stats(&motion_us);
    Ok(RuntimeResult {
        motion_ratio: fraction_of_invoke(motion.median_ms, stages.invoke.median_ms),
        motion,
        pre_ratio: fraction_of_invoke(pre, stages.invoke.median_ms),
        post_ratio: fraction_of_invoke(stages.post.median_ms, stages.invoke.median_ms),
        kind: info.kind,
        family: info.family,
        input_shape: info.input.shape,
        stages,
        overhead_ratio: ratio,
        reason,
        image_width: last_size.0,
        image_height: last_size.1,
        pipeline: None,
    })
}

/// Run the daemon's pipeline on `frame` twice, each frame prepared before
/// its invoke and then during the previous invoke, and measure the results
/// stored per second (see [`PipelineRates`]).
fn measure_pipeline(
    runtime: &str,
    frame: &Frame,
    invoke_ms: f64,
    args: &BenchArgs,
) -> Result<PipelineRates, BenchError> {
    let fail = |reason: String| BenchError::Pipeline {
        runtime: runtime.to_string(),
        reason,
    };
    if !(args.pipeline_fps.is_finite() && args.pipeline_fps > 0.0) {
        return Err(BenchError::Args("--pipeline-fps must be > 0".into()));
    }
    let frames = tempfile::Builder::new()
        .prefix("spotter-bench-frames-")
        .tempdir()
        .map_err(BenchError::TempDir)?;
    std::fs::write(frames.path().join("frame"), &frame.data).map_err(BenchError::TempDir)?;
    let mut settings = crate::config::from_sources(vec![])
        .map_err(|e| fail(e.to_string()))?
        .model;
    settings.path = args.model.clone();
    settings.labels = args.labels.clone();
    settings.litert_lib = args.litert_lib.clone();
    settings.threads = args.threads;
    settings.jpeg_scaling = args.jpeg_scaling;
    settings.min_score = args.min_score;
    settings.runtime = if runtime == "litert" {
        crate::config::RuntimeSetting::Litert
    } else {
        crate::config::RuntimeSetting::Builtin
    };
    let run = |ahead: bool| -> Result<(f64, f64, u64), BenchError> {
        let dir = tempfile::Builder::new()
            .prefix("spotter-bench-")
            .tempdir()
            .map_err(BenchError::TempDir)?;
        let store = Arc::new(Store::open_with(dir.path(), STORE_FLUSH_MS)?);
        let state = Arc::new(AppState::new());
        let slot = Arc::new(crate::pipeline::FrameSlot::new());
        let stop = crate::core::shutdown::Shutdown::new();
        stop.on_trigger({
            let slot = slot.clone();
            move || slot.close()
        });
        let opts = crate::capture::files::FilesOptions {
            dir: frames.path().to_path_buf(),
            fps: args.pipeline_fps,
            looping: true,
        };
        let opener: crate::pipeline::SourceOpener = Box::new(move || {
            crate::capture::files::FilesSource::open(opts.clone())
                .map(|s| Box::new(s) as Box<dyn crate::capture::FrameSource>)
        });
        let capture = {
            let (slot, state, stop) = (slot.clone(), state.clone(), stop.clone());
            let backoff = crate::pipeline::Backoff::new(
                std::time::Duration::from_millis(100),
                std::time::Duration::from_secs(1),
            );
            let readiness = Arc::new(crate::pipeline::SourceReadiness::new(
                &state,
                crate::config::DEFAULT_SOURCE_NAME,
                0,
                std::time::Duration::from_secs(60),
            ));
            std::thread::spawn(move || {
                crate::pipeline::capture_loop(opener, slot, state, readiness, stop, backoff)
            })
        };
        let inference = crate::pipeline::spawn_inference(
            crate::pipeline::InferenceSetup {
                settings: settings.clone(),
                models: None,
                slot,
                store,
                state: state.clone(),
                control: Arc::new(crate::pipeline::InferenceControl::default()),
                ahead,
            },
            None,
        )
        .map_err(|e| fail(e.to_string()))?;
        let count = || state.counters.inferences.load(Ordering::Relaxed);
        // Model loaded, canary passed and a few frames through: then measure.
        let ready = Instant::now();
        while count() < 5 && ready.elapsed() < std::time::Duration::from_secs(60) {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let invokes = |state: &AppState| {
            let text = crate::state::render_metrics(state, &crate::metrics::StoreStats::default());
            let get = |name: &str| {
                text.lines()
                    .find_map(|l| l.strip_prefix(name))
                    .and_then(|v| v.trim().parse::<f64>().ok())
                    .unwrap_or(0.0)
            };
            (
                get("spotter_stage_latency_seconds_sum{stage=\"invoke\"}"),
                get("spotter_stage_latency_seconds_count{stage=\"invoke\"}"),
            )
        };
        let (c0, t0, (s0, n0)) = (count(), Instant::now(), invokes(&state));
        std::thread::sleep(std::time::Duration::from_secs(args.pipeline_seconds));
        let (c1, secs, (s1, n1)) = (count(), t0.elapsed().as_secs_f64(), invokes(&state));
        stop.trigger();
        let _ = capture.join();
        let _ = inference.join();
        if c0 < 5 {
            return Err(fail("no results within 60 s (see the log)".into()));
        }
        let mean_invoke_ms = if n1 > n0 {
            (s1 - s0) / (n1 - n0) * 1000.0
        } else {
            0.0
        };
        Ok((
            (c1 - c0) as f64 / secs,
            mean_invoke_ms,
            state.metrics.superseded_prepared(),
        ))
    };
    let (serial_rate, _, _) = run(false)?;
    let (ahead_rate, ahead_invoke_ms, superseded) = run(true)?;
    Ok(PipelineRates {
        invoke_rate: if invoke_ms > 0.0 {
            1000.0 / invoke_ms
        } else {
            0.0
        },
        serial_rate,
        ahead_rate,
        ahead_invoke_ms,
        superseded,
        seconds: args.pipeline_seconds,
        fps: args.pipeline_fps,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::testdata;

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(subcommand)]
        command: Cmd,
    }

    #[derive(Debug, clap::Subcommand)]
    enum Cmd {
        Bench(BenchArgs),
    }

    fn parse(argv: &[&str]) -> Result<BenchArgs, clap::Error> {
        use clap::Parser;
        let Cmd::Bench(a) = Cli::try_parse_from(argv)?.command;
        Ok(a)
    }

    // Catches flag names or defaults drifting from the documented command line
    // (--runs 50, --warmup 5, --runtime auto|litert|builtin|all, --litert-lib).
    #[test]
    fn command_line_flags_and_defaults() {
        let a = parse(&["spotter", "bench", "--model", "m.tflite"]).unwrap();
        assert_eq!(
            a,
            BenchArgs {
                litert_lib: a.litert_lib.clone(),
                ..BenchArgs::new("m.tflite")
            }
        );
        let a = parse(&[
            "spotter",
            "bench",
            "--model",
            "m.tflite",
            "--image",
            "i.jpg",
            "--runs",
            "7",
            "--warmup",
            "0",
            "--threads",
            "1",
            "--runtime",
            "all",
            "--labels",
            "l.txt",
            "--json",
            "--litert-lib",
            "/x/libLiteRt.so",
            "--jpeg-scaling",
            "off",
            "--min-score",
            "0.25",
        ])
        .unwrap();
        assert_eq!(a.min_score, Some(0.25));
        assert_eq!(a.image, Some(PathBuf::from("i.jpg")));
        assert_eq!((a.runs, a.warmup, a.threads), (7, 0, 1));
        assert_eq!(a.runtime, BenchRuntime::All);
        assert_eq!(a.labels, Some(PathBuf::from("l.txt")));
        assert!(a.json);
        assert_eq!(a.litert_lib, Some(PathBuf::from("/x/libLiteRt.so")));
        assert_eq!(a.jpeg_scaling, JpegScaling::Off);
        assert!(parse(&["spotter", "bench", "--model", "m", "--jpeg-scaling", "half"]).is_err());
        for (s, r) in [
            ("auto", BenchRuntime::Auto),
            ("litert", BenchRuntime::Litert),
            ("builtin", BenchRuntime::Builtin),
        ] {
            assert_eq!(
                parse(&["spotter", "bench", "--model", "m", "--runtime", s])
                    .unwrap()
                    .runtime,
                r
            );
        }
        assert!(parse(&["spotter", "bench", "--model", "m", "--runtime", "tflite"]).is_err());
        assert!(parse(&["spotter", "bench"]).is_err(), "--model is required");
    }

    // Catches an off-by-one in the nearest-rank formula (interpolating, or
    // indexing from 0 with the rank, which would return the max for p50).
    #[test]
    fn nearest_rank_percentiles_of_known_vectors() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile_nearest_rank(&v, 50.0), Some(50.0));
        assert_eq!(percentile_nearest_rank(&v, 99.0), Some(99.0));
        assert_eq!(percentile_nearest_rank(&v, 100.0), Some(100.0));
        let small = [15.0, 20.0, 35.0, 40.0, 50.0];
        // Wikipedia's nearest-rank example: p30 = 20, p40 = 20, p50 = 35, p100 = 50.
        assert_eq!(percentile_nearest_rank(&small, 30.0), Some(20.0));
        assert_eq!(percentile_nearest_rank(&small, 40.0), Some(20.0));
        assert_eq!(percentile_nearest_rank(&small, 50.0), Some(35.0));
        assert_eq!(percentile_nearest_rank(&small, 99.0), Some(50.0));
        assert_eq!(percentile_nearest_rank(&[7.0], 99.0), Some(7.0));
        assert_eq!(percentile_nearest_rank(&[7.0], 50.0), Some(7.0));
        assert_eq!(percentile_nearest_rank(&[], 50.0), None);
        // Even count: nearest rank takes the lower middle, never an average.
        assert_eq!(
            percentile_nearest_rank(&[1.0, 2.0, 3.0, 4.0], 50.0),
            Some(2.0)
        );
    }

    // Catches unsorted input being used as-is, or µs not converted to ms.
    #[test]
    fn stage_stats_sorts_and_converts_to_ms() {
        let us = [9000, 1000, 3000, 2000, 250_000];
        let s = stage_stats(&us);
        assert_eq!(s.median_ms, 3.0);
        assert_eq!(s.p99_ms, 250.0);
        assert_eq!(
            stage_stats(&[]),
            StageStats {
                median_ms: 0.0,
                p99_ms: 0.0
            }
        );
    }

    // Catches invoke counted in the overhead, or a division by zero giving inf/NaN.
    #[test]
    fn overhead_ratio_is_pre_and_post_over_invoke() {
        assert_eq!(overhead_ratio(1.0, 0.5, 0.25, 0.25, 4.0), Some(0.5));
        assert_eq!(overhead_ratio(0.1, 0.0, 0.0, 0.0, 1.0), Some(0.1));
        assert_eq!(overhead_ratio(1.0, 1.0, 1.0, 1.0, 0.0), None);
    }

    // Catches the pre/post fractions being swapped, summed with invoke, or
    // dividing by a zero invoke; and the text line hiding a missed target.
    #[test]
    fn pre_and_post_fractions_of_invoke_beside_targets() {
        assert_eq!(fraction_of_invoke(1.5, 10.0), Some(0.15));
        assert_eq!(fraction_of_invoke(1.0, 0.0), None);
        let ok = target_line("post/invoke", Some(0.01), POST_TARGET, "x", "y");
        assert!(
            ok.contains("0.010") && ok.contains("0.02") && ok.contains(": ok"),
            "{ok}"
        );
        let missed = target_line("post/invoke", Some(0.5), POST_TARGET, "x", "y");
        assert!(missed.contains("above target"), "{missed}");
        assert!(target_line("pre/invoke", None, PRE_TARGET, "x", "y").contains("n/a"));
    }

    // Catches a detector's report lacking the pre/post fractions or their
    // targets (text and JSON), or the post stage not being timed.
    #[test]
    fn detector_report_has_pre_and_post_beside_targets() {
        let mut a = BenchArgs::new(
            testdata()
                .join("models/detection/coco_ssd_mobilenet_v1_1.0_quant_2018_06_29/detect.tflite"),
        );
        a.runs = 2;
        a.warmup = 0;
        a.threads = 1;
        a.json = true;
        a.runtime = BenchRuntime::Builtin;
        a.min_score = Some(0.3);
        let report = run_bench(&a).unwrap();
        let RuntimeOutcome::Measured(r) = &report.runtimes[0].1 else {
            panic!("{:?}", report.runtimes)
        };
        assert_eq!((r.kind, r.family), ("detection", "ssd"));
        let (pre, post) = (r.pre_ratio.unwrap(), r.post_ratio.unwrap());
        let s = &r.stages;
        let want_pre =
            (s.decode.median_ms + s.resize.median_ms + s.quantize.median_ms) / s.invoke.median_ms;
        assert!((pre - want_pre).abs() < 1e-9, "{pre} vs {want_pre}");
        assert!((post - s.post.median_ms / s.invoke.median_ms).abs() < 1e-9);
        let v = report.to_json();
        assert_eq!(v["min_score"].as_f64(), Some(0.3f32 as f64));
        let b = &v["runtimes"]["builtin"];
        assert_eq!(b["targets"]["post_ratio"]["max"], POST_TARGET);
        assert_eq!(b["targets"]["pre_ratio"]["max"], PRE_TARGET);
        assert_eq!(b["targets"]["post_ratio"]["met"], post <= POST_TARGET);
        let text = report.to_text();
        assert!(
            text.contains("pre/invoke") && text.contains("post/invoke"),
            "{text}"
        );
        assert!(text.contains(&format!("target <= {POST_TARGET}")), "{text}");
    }

    // Catches the synthetic frame not being a decodable 640x480 JPEG (the
    // default input would then fail or measure a different frame size).
    #[test]
    fn synthetic_frame_is_a_vga_jpeg() {
        let data = synthetic_jpeg().unwrap();
        assert_eq!(
            image::guess_format(&data).unwrap(),
            image::ImageFormat::Jpeg
        );
        let img = image::load_from_memory(&data).unwrap();
        assert_eq!(
            (img.width(), img.height()),
            (SYNTHETIC_WIDTH, SYNTHETIC_HEIGHT)
        );
    }

    // Catches bad arguments being accepted (0 runs would report zeros as if measured).
    #[test]
    fn rejects_zero_runs_and_threads() {
        let mut a = BenchArgs::new("/nonexistent.tflite");
        a.runs = 0;
        assert!(matches!(run_bench(&a), Err(BenchError::Args(_))));
        let mut a = BenchArgs::new("/nonexistent.tflite");
        a.threads = 0;
        assert!(matches!(run_bench(&a), Err(BenchError::Args(_))));
        let mut a = BenchArgs::new("/nonexistent.tflite");
        a.min_score = Some(1.5);
        assert!(matches!(run_bench(&a), Err(BenchError::Args(_))));
    }

    // Catches a non-image --image being silently benchmarked as a decode failure later.
    #[test]
    fn rejects_non_image_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.jpg");
        std::fs::write(&p, b"definitely not an image").unwrap();
        let mut a = BenchArgs::new(
            testdata().join("models/classification/mobilenet_v1_0.25_128_quant.tflite"),
        );
        a.image = Some(p);
        assert!(
            matches!(run_bench(&a), Err(BenchError::ImageInvalid { .. })),
            "{:?}",
            run_bench(&a)
        );
    }

    // Catches stages not being measured or the store insert not being timed:
    // the real model must give a non-zero invoke and a frame of the synthetic size.
    #[test]
    fn builtin_run_measures_every_stage() {
        let mut a = BenchArgs::new(
            testdata().join("models/classification/mobilenet_v1_0.25_128_quant.tflite"),
        );
        a.runs = 3;
        a.warmup = 1;
        a.threads = 1;
        a.runtime = BenchRuntime::Builtin;
        a.json = true;
        let report = run_bench(&a).unwrap();
        assert_eq!(report.runs, 3);
        assert_eq!(report.runtimes.len(), 1);
        let (name, outcome) = &report.runtimes[0];
        assert_eq!(name, "builtin");
        let RuntimeOutcome::Measured(r) = outcome else {
            panic!("builtin skipped: {outcome:?}")
        };
        assert_eq!(
            (r.image_width, r.image_height),
            (SYNTHETIC_WIDTH, SYNTHETIC_HEIGHT)
        );
        assert_eq!(r.input_shape, vec![1, 128, 128, 3]);
        for (stage, st) in r.stages.stages() {
            assert!(
                st.median_ms.is_finite() && st.median_ms >= 0.0,
                "{stage}: {st:?}"
            );
            assert!(st.p99_ms >= st.median_ms, "{stage}: {st:?}");
        }
        assert!(r.stages.invoke.median_ms > 0.0);
        assert!(r.stages.total.median_ms >= r.stages.invoke.median_ms);
        assert!(r.stages.e2e.median_ms >= r.stages.invoke.median_ms);
        assert!(r.stages.e2e.p99_ms <= r.stages.total.p99_ms);
        assert!(r.overhead_ratio.is_some_and(|x| x.is_finite() && x >= 0.0));
        assert_eq!((r.kind, r.family), ("classification", "classifier"));
        // Motion detection (issue 18) is measured on the same frames: a JPEG
        // gives a luma image, so it is never the zero of a failed sample.
        assert!(r.motion.median_ms > 0.0 && r.motion.p99_ms >= r.motion.median_ms);
        assert!(r.motion_ratio.is_some_and(|x| x.is_finite() && x > 0.0));

        let v = report.to_json();
        assert!(v["runtimes"]["builtin"]["motion_ratio"].as_f64().is_some());
        assert_eq!(v["runs"], 3);
        assert_eq!(v["threads"], 1);
        let b = &v["runtimes"]["builtin"];
        assert_eq!(b["skipped"], false);
        for stage in [
            "decode", "resize", "quantize", "invoke", "post", "store", "e2e", "total",
        ] {
            assert!(
                b["stages"][stage]["median_ms"].as_f64().is_some(),
                "{stage} missing: {b}"
            );
            assert!(
                b["stages"][stage]["p99_ms"].as_f64().is_some(),
                "{stage} missing: {b}"
            );
        }
        assert!(b["overhead_ratio"].as_f64().is_some());
        assert!(b["pre_ratio"].as_f64().is_some() && b["post_ratio"].as_f64().is_some());
        assert!(b["targets"].is_null(), "targets are for detectors: {b}");
        assert!(b["reason"]
            .as_str()
            .is_some_and(|s| s.starts_with("builtin")));
        let text = report.to_text();
        assert!(
            text.contains("builtin") && text.contains("invoke") && text.contains("overhead/invoke"),
            "{text}"
        );
    }

    // Catches `all` failing when LiteRT is missing instead of reporting it as
    // skipped, and an explicit `litert` request being silently skipped.
    #[test]
    fn all_skips_missing_litert_but_litert_alone_fails() {
        let model = testdata().join("models/classification/mobilenet_v1_0.25_128_quant.tflite");
        let mut a = BenchArgs::new(&model);
        a.runs = 1;
        a.warmup = 0;
        a.threads = 1;
        a.json = true;
        a.runtime = BenchRuntime::All;
        a.litert_lib = Some(PathBuf::from("/nonexistent/libLiteRt.so"));
        let report = run_bench(&a).unwrap();
        let names: Vec<&str> = report.runtimes.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["litert", "builtin"]);
        assert!(
            matches!(&report.runtimes[0].1, RuntimeOutcome::Skipped { reason } if reason.contains("/nonexistent/libLiteRt.so"))
        );
        assert!(matches!(report.runtimes[1].1, RuntimeOutcome::Measured(_)));
        assert_eq!(report.to_json()["runtimes"]["litert"]["skipped"], true);

        a.runtime = BenchRuntime::Litert;
        assert!(matches!(run_bench(&a), Err(BenchError::Load { .. })));
    }
}
