//! The inference engine: one loaded model behind one runtime, frame in, result out.
//!
//! This module owns the assembly of a runnable model: it takes a [`Runtime`]
//! chosen by the caller and the [`ModelFile`] it was loaded from, recognises the
//! model kind, resolves labels (explicit file, else labels embedded in the
//! model) and checks them against the outputs, sets up pre-processing, and
//! exposes `run` (frame → [`InferenceOutput`] with per-stage latency),
//! `run_tensor` (raw input → raw output, for golden tests) and `canary` (a
//! self-test run at load time). An `Engine` is used by one thread at a time
//! and may be moved between threads.
//!
//! Just over 600 lines: loading (family defaults for fit, pad, normalization
//! and score floor, the one probe run that settles a layout), the two run
//! paths and the canary share the engine's private state; the decoders
//! themselves live in `postprocess`, the tests in `tests/inference`.

use std::path::PathBuf;
use std::time::{Instant, SystemTime};

use serde::Serialize;

use super::labels::{ClassifierLabelMap, DetectorLabelMap, Labels};
use super::modelfile::ModelFile;
use super::postprocess::{self, ssd, yolo, DetectionParams, ModelKind, YoloVersion};
use super::preprocess::{FitMode, Normalization, Prepared, Preprocessor, DEFAULT_MAX_PIXELS};
use super::rules;
use super::{DType, InferenceError, Runtime, RuntimeKind, TensorSpec};
use crate::config::{DetectionRules, JpegScaling};
use crate::core::frame::{Frame, PixelFormat};
use crate::core::result::{InferenceOutput, StageLatency};

/// How to load and run one model.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelOptions {
    pub path: PathBuf,
    /// Labels file; when `None`, labels embedded in the model are used if any.
    pub labels: Option<PathBuf>,
    /// CPU threads for the runtime (0: let the runtime decide).
    pub threads: usize,
    /// Classifier: number of classes reported.
    pub top_k: usize,
    /// Minimum dequantized score for a class or a detection to be reported;
    /// `None`: the family's default ([`YOLO_MIN_SCORE`] for YOLO, else 0).
    pub min_score: Option<f32>,
    /// `None`: the model family's default (letterbox for YOLO, else stretch).
    pub fit: Option<FitMode>,
    /// Letterbox padding value; `None`: the model family's default.
    pub pad_value: Option<u8>,
    /// Overrides the default normalization (see [`Normalization::default_for`]).
    pub normalization: Option<Normalization>,
    /// Detector: which detections are reported (see [`DetectionRules`]).
    pub rules: DetectionRules,
    /// Largest decoded frame accepted, in pixels.
    pub max_pixels: u64,
    /// How JPEG frames are decoded (DCT-domain downscaling or the reference path).
    pub jpeg_scaling: JpegScaling,
    /// `model.roi` (issue 18): a classifier sees only this part of the frame;
    /// a detector ignores it (with a warning at load).
    pub roi: Option<crate::config::Roi>,
}

impl ModelOptions {
    /// Options with defaults: 1 thread, top-5, no score floor, stretch, 40 Mpx
    /// budget, JPEG scaling `auto` (as the daemon's config defaults).
    pub fn new(path: impl Into<PathBuf>) -> ModelOptions {
        ModelOptions {
            path: path.into(),
            labels: None,
            threads: 1,
            top_k: 5,
            min_score: None,
            fit: None,
            pad_value: None,
            normalization: None,
            rules: DetectionRules::default(),
            max_pixels: DEFAULT_MAX_PIXELS,
            jpeg_scaling: JpegScaling::Auto,
            roi: None,
        }
    }
}

/// A description of the loaded model, for status and logs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EngineInfo {
    pub path: String,
    pub sha256: String,
    /// `"classification"` or `"detection"`.
    pub kind: &'static str,
    /// `"classifier"`, `"ssd"`, `"yolov8"` or `"yolov5"` ([`ModelKind::family`]).
    pub family: &'static str,
    pub runtime: RuntimeKind,
    pub input: TensorSpec,
    pub outputs: Vec<TensorSpec>,
    pub labels: usize,
    /// Where the labels came from (a path or `embedded:NAME`), if any.
    pub labels_source: Option<String>,
    pub normalization: Normalization,
    pub fit: FitMode,
    pub jpeg_scaling: JpegScaling,
}

#[derive(Debug)]
enum LabelMap {
    None,
    Classifier(Labels, ClassifierLabelMap),
    Detector(Labels, DetectorLabelMap),
}

/// What another thread needs to pre-process frames for one engine ahead of
/// its invoke ([`Engine::prepare_spec`]): its own [`Preprocessor`] (same
/// input, fit, normalization and JPEG scaling), the pixel budget and the
/// input tensor's length in bytes.
#[derive(Debug)]
pub struct PrepareSpec {
    pub prep: Preprocessor,
    pub max_pixels: u64,
    pub tensor_len: usize,
    /// The model is a detector (motion gating's default follows it, issue 18).
    pub detector: bool,
}

impl PrepareSpec {
    /// Pre-process `frame` into `tensor` (resized to the input's length).
    pub fn prepare(
        &mut self,
        frame: &Frame,
        tensor: &mut Vec<u8>,
    ) -> Result<Prepared, InferenceError> {
        self.prepare_masked(frame, tensor, None)
    }

    /// [`prepare`](Self::prepare) with the source's privacy masks (issue 23).
    pub(crate) fn prepare_masked(
        &mut self,
        frame: &Frame,
        tensor: &mut Vec<u8>,
        masks: Option<&crate::image::mask::SourceMasks>,
    ) -> Result<Prepared, InferenceError> {
        tensor.resize(self.tensor_len, 0);
        self.prep
            .prepare_masked(frame, self.max_pixels, tensor, masks)
    }
}

/// One loaded, runnable model.
pub struct Engine {
    runtime: Box<dyn Runtime>,
    kind: ModelKind,
    labels: LabelMap,
    path: String,
    sha256: String,
    prep: Preprocessor,
    top_k: usize,
    min_score: f32,
    rules: DetectionRules,
    max_pixels: u64,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("path", &self.path)
            .field("kind", &self.kind)
            .field("runtime", &self.runtime.kind())
            .field("labels", &self.labels)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Assemble an engine from a runtime the caller loaded from `file`.
    ///
    /// Family defaults: YOLO models get a letterbox padded with
    /// [`YOLO_PAD_VALUE`] (what Ultralytics trains and exports with) and the
    /// input normalization `pixel / 255`, others a stretch, the neutral pad
    /// and [`Normalization::default_for`], unless `opts.fit` /
    /// `opts.pad_value` / `opts.normalization` (or the model's TFLite
    /// metadata, for the normalization) say otherwise. When the outputs
    /// alone do not settle the layout (YOLO box units, unnamed SSD classes vs
    /// scores), one run on the canary image does, here, once.
    pub fn load(
        opts: &ModelOptions,
        mut runtime: Box<dyn Runtime>,
        file: &ModelFile,
    ) -> Result<Engine, InferenceError> {
        let path = file.path().display().to_string();
        let input = runtime.input_spec().clone();
        let meta = file.metadata();
        let mut kind =
            ModelKind::from_outputs(runtime.output_specs(), meta.ultralytics.as_ref(), &path)?;
        let yolo_family = kind.is_yolo();
        // YOLO exports take pixel / 255 whatever their input quantization
        // (Ultralytics' pre-processing); the tensor's own scale and zero point
        // then quantize that.
        let normalization = match opts.normalization {
            Some(n) => n,
            None if yolo_family => meta
                .input_normalization
                .unwrap_or(Normalization::uniform(0.0, 255.0)),
            None => Normalization::default_for(&input, meta.input_normalization),
        };
        let fit = opts.fit.unwrap_or(if yolo_family {
            FitMode::Letterbox
        } else {
            FitMode::Stretch
        });
        let mut prep = Preprocessor::new(&input, fit, normalization)
            .map_err(|e| with_path(e, &path))?
            .with_jpeg_scaling(opts.jpeg_scaling);
        let pad = match opts.pad_value {
            Some(v) => [v; 3],
            None if yolo_family => [YOLO_PAD_VALUE; 3],
            None => prep.pad(),
        };
        prep = prep.with_pad(pad);
        if let Some(roi) = opts.roi {
            if matches!(kind, ModelKind::Classifier { .. }) {
                prep = prep.with_roi(Some(roi));
            } else {
                log::warn!(
                    message_id = crate::core::ids::ROI_IGNORED, model = path.as_str();
                    "model.roi is ignored: {path} is a detector, which sees the whole frame (use [[zone]] to place detections)"
                );
            }
        }
        if kind.needs_probe() {
            let frame = canary_frame(prep.input_size());
            prep.prepare(&frame, opts.max_pixels, runtime.input_mut())
                .map_err(|e| with_path(e, &path))?;
            runtime.invoke()?;
            let specs = runtime.output_specs();
            let values = (0..specs.len())
                .map(|i| postprocess::dequantize(runtime.output(i), &specs[i]))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| with_path(e, &path))?;
            let (settled, note) = kind.settle(&values);
            if let Some(note) = note {
                log::warn!(model = path.as_str(); "{note}");
            }
            kind = settled;
        }

        let labels = match &opts.labels {
            Some(p) => Some(Labels::load(p)?),
            None => file.embedded_labels().map(|names| {
                let source = format!(
                    "embedded:{}",
                    file.metadata().labels_file.as_deref().unwrap_or("archive")
                );
                Labels::from_names(names, source)
            }),
        };
        let labels = match (labels, kind) {
            (None, _) => {
                log::warn!(model = path.as_str(); "no labels: results are reported by index");
                LabelMap::None
            }
            (Some(l), ModelKind::Classifier { classes }) => {
                let map = ClassifierLabelMap::new(&l, classes, &path)?;
                LabelMap::Classifier(l, map)
            }
            (Some(l), ModelKind::Ssd(_)) => {
                let map = DetectorLabelMap::new(&l);
                LabelMap::Detector(l, map)
            }
            (Some(l), ModelKind::Yolo(y)) => {
                // YOLO class i is label i: no background line, and the count is known.
                if l.len() != y.classes {
                    return Err(InferenceError::Labels {
                        path: l.source().to_string(),
                        reason: format!(
                            "{} labels do not match the {} classes of model {path} (a YOLO model needs exactly one label per class, no background line)",
                            l.len(),
                            y.classes
                        ),
                    });
                }
                LabelMap::Detector(l, DetectorLabelMap { offset: 0 })
            }
        };
        let (sha256, runtime_kind) = (file.sha256().to_string(), runtime.kind());
        let engine = Engine {
            runtime,
            kind,
            labels,
            path,
            sha256,
            prep,
            top_k: opts.top_k,
            min_score: opts
                .min_score
                .unwrap_or(if yolo_family { YOLO_MIN_SCORE } else { 0.0 }),
            rules: opts.rules.clone(),
            max_pixels: opts.max_pixels,
        };
        let runtime_name = runtime_kind.to_string();
        log::info!(
            model = engine.path.as_str(), runtime = runtime_name.as_str(), kind = kind.name(), family = kind.family();
            "model loaded: input {:?} {:?}, normalization {:?}, fit {:?}, pad {:?}", input.dtype, input.shape, normalization, fit, pad
        );
        Ok(engine)
    }

    /// Whether the model is a detector (SSD or YOLO), not a classifier.
    pub fn is_detector(&self) -> bool {
        !matches!(self.kind, ModelKind::Classifier { .. })
    }

    /// Run one frame end to end.
    pub fn run(&mut self, frame: &Frame) -> Result<InferenceOutput, InferenceError> {
        self.run_masked(frame, None)
    }

    /// [`run`](Self::run) with the source's privacy masks (issue 23).
    pub(crate) fn run_masked(
        &mut self,
        frame: &Frame,
        masks: Option<&crate::image::mask::SourceMasks>,
    ) -> Result<InferenceOutput, InferenceError> {
        let prepared =
            self.prep
                .prepare_masked(frame, self.max_pixels, self.runtime.input_mut(), masks)?;
        self.invoke_prepared(&prepared)
    }

    /// A pre-processor for this engine's input, for a thread that prepares
    /// frames while this engine invokes ([`Self::run_prepared`]).
    pub fn prepare_spec(&self) -> PrepareSpec {
        PrepareSpec {
            prep: self.prep.with_own_buffers(),
            max_pixels: self.max_pixels,
            tensor_len: self.runtime.input_spec().byte_len(),
            detector: self.is_detector(),
        }
    }

    /// Run a frame another thread pre-processed with this engine's
    /// [`PrepareSpec`]: `tensor` is copied into the input and the model is
    /// invoked and post-processed as [`Self::run`] does. A tensor of another
    /// length (prepared for another model) is refused, never fed.
    pub fn run_prepared(
        &mut self,
        tensor: &[u8],
        prepared: &Prepared,
    ) -> Result<InferenceOutput, InferenceError> {
        let dst = self.runtime.input_mut();
        if dst.len() != tensor.len() {
            return Err(InferenceError::Invoke {
                path: self.path.clone(),
                reason: format!(
                    "prepared input has {} bytes, the input tensor needs {}",
                    tensor.len(),
                    dst.len()
                ),
            });
        }
        dst.copy_from_slice(tensor);
        self.invoke_prepared(prepared)
    }

    /// Invoke on the input in place and post-process for `prepared`'s frame.
    fn invoke_prepared(&mut self, prepared: &Prepared) -> Result<InferenceOutput, InferenceError> {
        let t = Instant::now();
        self.runtime.invoke()?;
        let invoke_us = t.elapsed().as_micros() as u64;
        let t = Instant::now();
        let specs = self.runtime.output_specs();
        let (classes, detections) = match self.kind {
            ModelKind::Classifier { .. } => {
                let labels = match &self.labels {
                    LabelMap::Classifier(l, m) => Some((l, *m)),
                    _ => None,
                };
                let top = postprocess::top_k(
                    self.runtime.output(0),
                    &specs[0],
                    self.top_k,
                    self.min_score,
                    labels,
                )
                .map_err(|e| with_path(e, &self.path))?;
                (top, Vec::new())
            }
            ModelKind::Ssd(_) | ModelKind::Yolo(_) => {
                let labels = match &self.labels {
                    LabelMap::Detector(l, m) => Some((l, *m)),
                    _ => None,
                };
                let params = DetectionParams {
                    min_score: rules::decode_floor(&self.rules, self.min_score),
                    labels,
                };
                let d = match self.kind {
                    ModelKind::Yolo(layout) => yolo::detections(
                        self.runtime.output(0),
                        &specs[0],
                        &layout,
                        &prepared.mapping,
                        self.rules.iou_threshold,
                        &params,
                    ),
                    ModelKind::Ssd(layout) => {
                        let outputs: Vec<(&[u8], &TensorSpec)> = (0..specs.len())
                            .map(|i| (self.runtime.output(i), &specs[i]))
                            .collect();
                        ssd::detections(&outputs, &layout, &prepared.mapping, &params)
                    }
                    ModelKind::Classifier { .. } => Ok(Vec::new()),
                }
                .map_err(|e| with_path(e, &self.path))?;
                let m = &prepared.mapping;
                let d = rules::apply(&self.rules, self.min_score, m.src_width, m.src_height, d);
                (Vec::new(), d)
            }
        };
        let post_us = t.elapsed().as_micros() as u64;
        Ok(InferenceOutput {
            classes,
            detections,
            image_width: prepared.mapping.src_width,
            image_height: prepared.mapping.src_height,
            latency: StageLatency {
                decode_us: prepared.decode_us,
                resize_us: prepared.resize_us,
                quantize_us: prepared.quantize_us,
                invoke_us,
                post_us,
                store_us: 0,
            },
        })
    }

    /// Run the model on raw input tensor bytes and return output 0's raw bytes.
    pub fn run_tensor(&mut self, input: &[u8]) -> Result<Vec<u8>, InferenceError> {
        let dst = self.runtime.input_mut();
        if dst.len() != input.len() {
            return Err(InferenceError::Invoke {
                path: self.path.clone(),
                reason: format!(
                    "input has {} bytes, the input tensor needs {}",
                    input.len(),
                    dst.len()
                ),
            });
        }
        dst.copy_from_slice(input);
        self.runtime.invoke()?;
        Ok(self.runtime.output(0).to_vec())
    }

    /// Self-test: run a synthetic image (mid-grey left half, colour gradients
    /// right half) twice and check the outputs are well-formed: right sizes,
    /// finite, identical on both runs (no uninitialised or racing memory), a
    /// classifier's scores not all equal (a dead graph gives a flat vector),
    /// a detector's count within bounds, scores in [0, 1] and boxes finite.
    pub fn canary(&mut self) -> Result<(), InferenceError> {
        let path = self.path.clone();
        let fail = |reason: String| InferenceError::Canary {
            path: path.clone(),
            reason,
        };
        let frame = canary_frame(self.prep.input_size());
        let mut runs = Vec::with_capacity(2);
        for _ in 0..2 {
            self.run(&frame).map_err(|e| fail(e.to_string()))?;
            let specs = self.runtime.output_specs();
            let mut outs = Vec::with_capacity(specs.len());
            for (i, s) in specs.iter().enumerate() {
                let raw = self.runtime.output(i);
                let values = postprocess::dequantize(raw, s).map_err(|e| fail(e.to_string()))?;
                if let Some(bad) = values.iter().position(|v| !v.is_finite()) {
                    return Err(fail(format!(
                        "output {:?} element {bad} is {}",
                        s.name, values[bad]
                    )));
                }
                outs.push(raw.to_vec());
            }
            runs.push(outs);
        }
        if runs[0] != runs[1] {
            return Err(fail(
                "two runs on the same input gave different outputs".into(),
            ));
        }
        let specs = self.runtime.output_specs();
        match self.kind {
            ModelKind::Classifier { .. } => {
                let values = postprocess::dequantize(self.runtime.output(0), &specs[0])
                    .map_err(|e| fail(e.to_string()))?;
                let first = values[0];
                if values.iter().all(|v| *v == first) {
                    return Err(fail(format!(
                        "all {} class scores are {first}",
                        values.len()
                    )));
                }
                if specs[0].dtype != DType::F32 && values.iter().any(|v| *v < -1e-3) {
                    log::warn!(model = self.path.as_str(); "quantized classifier produced negative scores; it may output logits");
                }
            }
            ModelKind::Ssd(layout) => {
                let max_detections = layout.max_detections;
                let count = postprocess::dequantize(
                    self.runtime.output(layout.count),
                    &specs[layout.count],
                )
                .map_err(|e| fail(e.to_string()))?;
                let scores = postprocess::dequantize(
                    self.runtime.output(layout.scores),
                    &specs[layout.scores],
                )
                .map_err(|e| fail(e.to_string()))?;
                let n = count[0];
                if !(0.0..=max_detections as f32).contains(&n) {
                    return Err(fail(format!(
                        "detection count {n} outside 0..={max_detections}"
                    )));
                }
                if let Some(s) = scores[..n as usize]
                    .iter()
                    .find(|s| !(0.0..=1.0).contains(*s))
                {
                    return Err(fail(format!("detection score {s} outside [0, 1]")));
                }
            }
            ModelKind::Yolo(layout) => {
                let values = postprocess::dequantize(self.runtime.output(0), &specs[0])
                    .map_err(|e| fail(e.to_string()))?;
                // Scores are sigmoid outputs: within [0, 1] up to one quantization step.
                let step = specs[0].quant.map_or(0.0, |q| q.scale);
                let range = -step - 1e-3..=1.0 + step + 1e-3;
                let first = match layout.version {
                    YoloVersion::V8 => layout.first_class(),
                    YoloVersion::V5 => 4, // objectness too
                };
                for a in 0..layout.anchors {
                    for ch in first..layout.channels() {
                        let v = values[layout.index(a, ch)];
                        if !range.contains(&v) {
                            return Err(fail(format!(
                                "anchor {a} channel {ch} score {v} outside [0, 1] (a head without sigmoid, or not a YOLO detect head)"
                            )));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    pub fn info(&self) -> EngineInfo {
        let (count, source) = match &self.labels {
            LabelMap::None => (0, None),
            LabelMap::Classifier(l, _) | LabelMap::Detector(l, _) => {
                (l.len(), Some(l.source().to_string()))
            }
        };
        EngineInfo {
            path: self.path.clone(),
            sha256: self.sha256.clone(),
            kind: self.kind.name(),
            family: self.kind.family(),
            runtime: self.runtime.kind(),
            input: self.runtime.input_spec().clone(),
            outputs: self.runtime.output_specs().to_vec(),
            labels: count,
            labels_source: source,
            normalization: self.prep.normalization(),
            fit: self.prep.fit(),
            jpeg_scaling: self.prep.jpeg_scaling(),
        }
    }

    pub fn kind(&self) -> ModelKind {
        self.kind
    }
}

// An engine is moved to the inference thread and swapped on model reload.
const _: () = {
    const fn assert_send<T: Send>() {}
    assert_send::<Engine>();
};

/// The letterbox pad of the YOLO family (Ultralytics' `LetterBox` fills with 114).
pub const YOLO_PAD_VALUE: u8 = 114;

/// The self-test image at the model's input size: mid-grey left half, colour
/// gradients right half.
fn canary_frame((w, h): (u32, u32)) -> Frame {
    let mut data = Vec::with_capacity(w as usize * h as usize * 3);
    for y in 0..h {
        for x in 0..w {
            if x < w / 2 {
                data.extend_from_slice(&[128, 128, 128]);
            } else {
                let gx = (255 * (x - w / 2) / (w - w / 2).max(1)) as u8;
                let gy = (255 * y / h.max(1)) as u8;
                data.extend_from_slice(&[gx, gy, 255 - gx]);
            }
        }
    }
    Frame {
        data,
        format: PixelFormat::Rgb8,
        width: w,
        height: h,
        stride: w * 3,
        seq: 0,
        captured_at: SystemTime::now(),
        origin: "canary".into(),
        source: String::new(),
    }
}

/// Fill in the model path of errors raised by path-agnostic helpers.
fn with_path(e: InferenceError, path: &str) -> InferenceError {
    match e {
        InferenceError::Unsupported { path: p, reason } if p.is_empty() => {
            InferenceError::Unsupported {
                path: path.into(),
                reason,
            }
        }
        InferenceError::Invoke { path: p, reason } if p.is_empty() => InferenceError::Invoke {
            path: path.into(),
            reason,
        },
        other => other,
    }
}

/// The YOLO family's default `min_score` (Ultralytics' own default `conf`):
/// a YOLO head scores every anchor, and without a floor every frame would
/// report its `max_detections` near-zero boxes.
pub const YOLO_MIN_SCORE: f32 = 0.25;
