//! Inference: runtimes behind one trait, pre-processing and post-processing.
//!
//! This module owns everything from a captured [`crate::core::frame::Frame`] to a
//! ranked list of classes or a list of boxes: decoding and resizing frames,
//! quantizing them into the model's input tensor with the tensor's own scale
//! and zero point, running a [`Runtime`], and turning raw output tensors into
//! labelled results. Pre- and post-processing are pure functions.

pub mod builtin;
pub mod engine;
pub(crate) mod flatbuf;
pub(crate) mod labels;
pub mod litert;
pub mod modelfile;
pub mod postprocess;
pub mod preprocess;
pub(crate) mod rules;
pub mod select;
mod stderr;

use serde::Serialize;

/// Element type of a tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    U8,
    I8,
    F32,
}

impl DType {
    pub(crate) fn size(self) -> usize {
        match self {
            DType::U8 | DType::I8 => 1,
            DType::F32 => 4,
        }
    }
}

/// Affine quantization: `real = scale * (q - zero_point)`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Quant {
    pub scale: f32,
    pub zero_point: i32,
}

/// Name, shape, element type and quantization of one tensor.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TensorSpec {
    pub name: String,
    pub shape: Vec<usize>,
    pub dtype: DType,
    /// `None` when the tensor is not quantized (float) or has scale 0.
    pub quant: Option<Quant>,
}

impl TensorSpec {
    pub(crate) fn elements(&self) -> usize {
        self.shape.iter().product()
    }
    pub(crate) fn byte_len(&self) -> usize {
        self.elements() * self.dtype.size()
    }
}

/// Which engine executes the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeKind {
    /// TF Lite 1.15, statically linked through the `tflite` crate.
    Builtin,
    /// LiteRT (`libLiteRt.so`) with XNNPACK, loaded at run time.
    Litert,
}

impl std::fmt::Display for RuntimeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RuntimeKind::Builtin => "builtin",
            RuntimeKind::Litert => "litert",
        })
    }
}

/// An engine that runs one loaded model. A runtime is used by one thread at a
/// time; it may be moved between threads (model swap), hence `Send`.
pub trait Runtime: Send {
    fn kind(&self) -> RuntimeKind;
    fn input_spec(&self) -> &TensorSpec;
    fn output_specs(&self) -> &[TensorSpec];
    /// The raw bytes of the input tensor, for pre-processing to fill in place.
    fn input_mut(&mut self) -> &mut [u8];
    /// Run the model on the current input.
    fn invoke(&mut self) -> Result<(), InferenceError>;
    /// The raw bytes of output tensor `i` after the last `invoke`.
    fn output(&self, i: usize) -> &[u8];
}

/// Errors from loading or running a model, with the model path where known.
#[derive(Debug, thiserror::Error)]
pub enum InferenceError {
    #[error("model {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("model {path}: not a TFLite model: {reason}")]
    NotTflite { path: String, reason: String },
    #[error("model {path}: runtime refused it: {reason}")]
    Load { path: String, reason: String },
    #[error("model {path}: unsupported: {reason}")]
    Unsupported { path: String, reason: String },
    #[error("labels {path}: {reason}")]
    Labels { path: String, reason: String },
    #[error("model {path}: invoke failed: {reason}")]
    Invoke { path: String, reason: String },
    #[error("model {path}: canary inference failed: {reason}")]
    Canary { path: String, reason: String },
    #[error("LiteRT library {path}: {reason}")]
    LiteRtUnavailable { path: String, reason: String },
    #[error("image: {0}")]
    Image(String),
}

impl From<crate::image::decode::DecodeError> for InferenceError {
    fn from(e: crate::image::decode::DecodeError) -> Self {
        InferenceError::Image(e.0)
    }
}
