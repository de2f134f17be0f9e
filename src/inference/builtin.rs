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
