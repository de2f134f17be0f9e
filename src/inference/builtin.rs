//! The built-in runtime: TF Lite 1.15 linked statically through the `tflite` crate.
//!
//! This module owns one TF Lite interpreter with the built-in op resolver, and
//! the mapping of its tensors to [`TensorSpec`]s. The `tflite` crate does not
//! expose tensor quantization, so scale and zero point come from the model's
//! flatbuffer as read and verified by [`ModelFile`] (the interpreter's input and
//! output lists are the subgraph's, in the same order).
//!
//! The model is always verified before TF Lite sees it: `FlatBufferModel::
//! BuildFromBuffer` in TF Lite 1.15 trusts its input, so a truncated file would
//! be read out of bounds.

use std::path::Path;

use tflite::context::ElementKind;
use tflite::ops::builtin::BuiltinOpResolver;
use tflite::{FlatBufferModel, Interpreter, InterpreterBuilder, TensorIndex};

use super::modelfile::{DeclaredQuant, ModelFile};
use super::stderr::{relog_stderr, RuntimeLog};
use super::{DType, InferenceError, Quant, Runtime, RuntimeKind, TensorSpec};

/// TF Lite 1.15 with built-in kernels.
pub struct BuiltinRuntime {
    interpreter: Interpreter<'static, BuiltinOpResolver>,
    input: TensorIndex,
    outputs: Vec<TensorIndex>,
    input_spec: TensorSpec,
    output_specs: Vec<TensorSpec>,
    path: String,
}

// SAFETY: `Interpreter` holds raw pointers to C++ objects (the interpreter, its
// builder, the flatbuffer model it reads from and the op resolver), all owned by
// this value and freed only when it drops. None of them is shared with another
// Rust value or bound to the creating thread (TF Lite uses no thread-local state
// for an interpreter; its own worker threads are owned by the interpreter's
// context). Moving the whole value to another thread therefore moves sole
// ownership, which is sound. It is deliberately not `Sync`: TF Lite
// interpreters must not be used from two threads at once, and `&mut self` on
// `invoke`/`input_mut` enforces one user at a time.
unsafe impl Send for BuiltinRuntime {}

impl std::fmt::Debug for BuiltinRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuiltinRuntime")
            .field("path", &self.path)
            .field("input", &self.input_spec)
            .field("outputs", &self.output_specs)
            .finish_non_exhaustive()
    }
}

impl BuiltinRuntime {
    /// Read, verify and load the model at `path` with `threads` CPU threads
    /// (0 lets TF Lite decide).
    pub fn load(path: &Path, threads: usize) -> Result<Self, InferenceError> {
        let file = ModelFile::read(path)?;
        Self::from_model_file(&file, threads)
    }

    /// Load a model already read and verified by [`ModelFile::read`].
    pub fn from_model_file(file: &ModelFile, threads: usize) -> Result<Self, InferenceError> {
        let path = file.path().display().to_string();
        let refused = |reason: String| InferenceError::Load {
            path: path.clone(),
            reason,
        };
        if let Some(reason) = miscomputed_by_tflite_1_15(file.bytes()) {
            return Err(refused(reason));
        }
        let threads = if threads == 0 {
            -1
        } else {
            i32::try_from(threads).unwrap_or(i32::MAX)
        };
        // `build_with_threads` also allocates tensors. It fails (null
        // interpreter) for unknown ops, op versions or invalid tensors; TF
        // Lite prints the detail to stderr, which is captured, re-logged and
        // named in the refusal.
        let (built, printed) = relog_stderr(RuntimeLog::TfLite, || {
            let model = FlatBufferModel::build_from_buffer(file.bytes().to_vec())
                .map_err(|e| format!("flatbuffer model: {e}"))?;
            let builder = InterpreterBuilder::new(model, BuiltinOpResolver::default())
                .map_err(|e| format!("interpreter builder: {e}"))?;
            builder
                .build_with_threads(threads)
                .map_err(|e| format!("TF Lite 1.15 could not build an interpreter ({e})"))
        });
        let interpreter = built.map_err(|reason| match printed.as_slice() {
            [] => refused(reason),
            lines => refused(format!("{reason}: {}", lines.join("; "))),
        })?;

        let inputs = interpreter.inputs().to_vec();
        let outputs = interpreter.outputs().to_vec();
        let [input] = inputs.as_slice() else {
            return Err(InferenceError::Unsupported {
                path,
                reason: format!(
                    "model has {} inputs; exactly one image input is supported",
                    inputs.len()
                ),
            });
        };
        let spec = |index: TensorIndex,
                    declared: Option<&DeclaredQuant>,
                    what: &str|
         -> Result<TensorSpec, InferenceError> {
            let info = interpreter
                .tensor_info(index)
                .ok_or_else(|| InferenceError::Load {
                    path: path.clone(),
                    reason: format!("{what} tensor {index} missing"),
                })?;
            let dtype = match info.element_kind {
                ElementKind::kTfLiteUInt8 => DType::U8,
                ElementKind::kTfLiteInt8 => DType::I8,
                ElementKind::kTfLiteFloat32 => DType::F32,
                other => {
                    return Err(InferenceError::Unsupported {
                        path: path.clone(),
                        reason: format!("{what} {:?} has element type {other:?}; only uint8, int8 and float32 are supported", info.name),
                    })
                }
            };
            let quant =
                quant_of(declared, dtype).map_err(|reason| InferenceError::Unsupported {
                    path: path.clone(),
                    reason: format!("{what} {:?}: {reason}", info.name),
                })?;
            Ok(TensorSpec {
                name: info.name,
                shape: info.dims,
                dtype,
                quant,
            })
        };
        let input_spec = spec(*input, file.input_quant(0), "input")?;
        let output_specs = outputs
            .iter()
            .enumerate()
            .map(|(i, &o)| spec(o, file.output_quant(i), "output"))
            .collect::<Result<Vec<_>, _>>()?;
        // The tensors are allocated; check the buffers have the sizes the specs promise.
        let check = |index: TensorIndex, s: &TensorSpec| match interpreter.tensor_buffer(index) {
            Some(b) if b.len() == s.byte_len() => Ok(()),
            other => Err(InferenceError::Load {
                path: path.clone(),
                reason: format!(
                    "tensor {:?} buffer is {:?} bytes, expected {}",
                    s.name,
                    other.map(<[u8]>::len),
                    s.byte_len()
                ),
            }),
        };
        check(*input, &input_spec)?;
        for (&o, s) in outputs.iter().zip(&output_specs) {
            check(o, s)?;
        }
        Ok(BuiltinRuntime {
            input: *input,
            outputs,
            input_spec,
            output_specs,
            path,
            interpreter,
        })
    }
}

/// A reason to refuse a model TF Lite 1.15 would load but compute wrongly,
/// naming the operator: an int8 `CONV_2D` or `DEPTHWISE_CONV_2D` whose filter
/// has one (per-tensor) scale for several output channels. TF Lite 1.15's
/// int8 kernels always take one multiplier per output channel, and
/// `PopulateConvolutionQuantizationParams` fills only as many as the filter
/// has scales, so every channel but the first runs with an uninitialised
/// multiplier (measured: the first convolution of an Ultralytics YOLOv8n
/// full-integer export off by up to 172 quantized steps against LiteRT, and
/// detections that are pure noise). Later TF Lite versions broadcast the one
/// scale. `bytes` was verified by [`ModelFile`].
fn miscomputed_by_tflite_1_15(bytes: &[u8]) -> Option<String> {
    use tflite::model::stl::vector::VectorSlice;
    use tflite::model::{BuiltinOperator, Model, TensorType};
    let model = Model::from_buffer(bytes)?;
    for subgraph in model.subgraphs.iter() {
        for (i, op) in subgraph.operators.iter().enumerate() {
            let Some(code) = model.operator_codes.get(op.opcode_index as usize) else {
                continue;
            };
            let (name, channel_axis) = match code.builtin_code {
                BuiltinOperator::BuiltinOperator_CONV_2D => ("CONV_2D", 0),
                BuiltinOperator::BuiltinOperator_DEPTHWISE_CONV_2D => ("DEPTHWISE_CONV_2D", 3),
                _ => continue,
            };
            let tensor = |k: usize| {
                let index = *op.inputs.as_slice().get(k)?;
                subgraph.tensors.get(usize::try_from(index).ok()?)
            };
            let (Some(input), Some(filter)) = (tensor(0), tensor(1)) else {
                continue;
            };
            if input.typ != TensorType::TensorType_INT8 || !filter.quantization.is_valid() {
                continue;
            }
            let scales = filter.quantization.scale.as_slice().len();
            let channels = filter
                .shape
                .as_slice()
                .get(channel_axis)
                .copied()
                .unwrap_or(1);
            if scales == 1 && channels > 1 {
                return Some(format!(
                    "operator {i} {name} (version {}) has an int8 filter {:?} quantized per tensor ({channels} output channels, one scale), which TF Lite 1.15's int8 kernels compute wrongly; use runtime = litert",
                    code.version,
                    filter.name.c_str().to_string_lossy()
                ));
            }
        }
    }
    None
}

/// The per-tensor quantization of an I/O tensor. Float tensors have none;
/// per-channel quantized I/O tensors are not supported.
fn quant_of(declared: Option<&DeclaredQuant>, dtype: DType) -> Result<Option<Quant>, String> {
    let Some(d) = declared else { return Ok(None) };
    if dtype == DType::F32 {
        return Ok(None);
    }
    match (d.scale.as_slice(), d.zero_point.as_slice()) {
        ([], _) => Ok(None),
        ([s], zp) if zp.len() <= 1 => {
            if *s == 0.0 {
                return Ok(None);
            }
            if !(s.is_finite() && *s > 0.0) {
                return Err(format!("invalid quantization scale {s}"));
            }
            let zp = zp.first().copied().unwrap_or(0);
            let zero_point =
                i32::try_from(zp).map_err(|_| format!("zero point {zp} out of range"))?;
            Ok(Some(Quant {
                scale: *s,
                zero_point,
            }))
        }
        (s, _) => Err(format!(
            "per-channel quantization ({} scales) on an input/output tensor",
            s.len()
        )),
    }
}

impl Runtime for BuiltinRuntime {
    fn kind(&self) -> RuntimeKind {
        RuntimeKind::Builtin
    }

    fn input_spec(&self) -> &TensorSpec {
        &self.input_spec
    }

    fn output_specs(&self) -> &[TensorSpec] {
        &self.output_specs
    }

    fn input_mut(&mut self) -> &mut [u8] {
        // Tensors were allocated and their sizes checked in `from_model_file`,
        // and nothing resizes them afterwards, so the buffer exists.
        self.interpreter
            .tensor_buffer_mut(self.input)
            .unwrap_or(&mut [])
    }

    fn invoke(&mut self) -> Result<(), InferenceError> {
        self.interpreter
            .invoke()
            .map_err(|e| InferenceError::Invoke {
                path: self.path.clone(),
                reason: e.to_string(),
            })
    }

    fn output(&self, i: usize) -> &[u8] {
        // Out-of-range `i` yields an empty slice, which callers reject by length.
        self.outputs
            .get(i)
            .and_then(|&o| self.interpreter.tensor_buffer(o))
            .unwrap_or(&[])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quant_rules() {
        // Catches per-channel I/O quantization being silently reduced to its first channel.
        let d = |s: &[f32], z: &[i64]| DeclaredQuant {
            scale: s.to_vec(),
            zero_point: z.to_vec(),
        };
        assert_eq!(
            quant_of(Some(&d(&[0.5], &[3])), DType::U8),
            Ok(Some(Quant {
                scale: 0.5,
                zero_point: 3
            }))
        );
        assert_eq!(quant_of(Some(&d(&[0.0], &[0])), DType::U8), Ok(None));
        assert_eq!(quant_of(Some(&d(&[0.5], &[3])), DType::F32), Ok(None));
        assert!(quant_of(Some(&d(&[0.5, 0.25], &[0, 0])), DType::I8).is_err());
        assert!(quant_of(Some(&d(&[f32::NAN], &[0])), DType::I8).is_err());
    }
}
