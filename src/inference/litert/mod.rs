//! LiteRT runtime: runs a model through `libLiteRt.so` (LiteRT 2.x, XNNPACK on
//! the CPU), loaded at run time.
//!
//! This module owns loading the shared library (once per path per process,
//! with `edgefirst-tflite`'s [`Library`](edgefirst_tflite::Library)), the LiteRT environment, and for
//! each model: the parsed model, the compilation options (CPU accelerator and
//! XNNPACK thread count), the compiled model, its input and output tensor
//! buffers, and the host-side copies of those tensors. The tensor metadata
//! the LiteRT C API does not expose (names and quantization) comes from the
//! model's flatbuffer, read by `inference::flatbuf`; this module checks it
//! against what LiteRT reports. Models are loaded from a [`ModelFile`], which
//! read the file once.
//!
//! It calls the LiteRT C API directly, through the function table
//! `edgefirst-tflite` resolves
//! ([`Library::litert`](edgefirst_tflite::Library::litert)) plus a few symbols that
//! table does not cover (opaque CPU options, compiled output layouts), which
//! are resolved from the same loaded library. The crate's safe wrappers keep
//! their raw handles private, and two things Spotter needs go through those
//! handles:
//!
//! - the XNNPACK thread count: CPU options are an opaque-options entry with
//!   the identifier `xnnpack` whose payload is a NUL-terminated TOML string
//!   (`num_threads = N`), added to the compilation options;
//! - outputs without a static shape (rank 0 in the model, e.g. the
//!   `TFLite_Detection_PostProcess` outputs of SSD detectors): their shapes
//!   are only known once the model is compiled, so they are read back with
//!   `LiteRtGetCompiledModelOutputTensorLayouts` and their buffers are sized
//!   from those layouts.
//!
//! Files: `library.rs` loads the library and its environment, `handles.rs`
//! owns one model's LiteRT handles and the unsafe calls on them, and this
//! file is the [`Runtime`]: loading a model step by step, running it, and
//! checking LiteRT's tensor types against the flatbuffer's.

mod handles;
mod library;

use std::ffi::c_void;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use edgefirst_tflite_sys::litert::{
    self as sys, kLiteRtHwAcceleratorCpu, kLiteRtStatusOk, RankedTensorType,
};

use super::flatbuf;
use super::modelfile::ModelFile;
use super::stderr::{relog_stderr, RuntimeLog};
use super::{DType, InferenceError, Quant, Runtime, RuntimeKind, TensorSpec};
use handles::Handles;
use library::{check, shared_lib, SharedLib};

pub use library::{loaded_libraries, preload};

/// A model compiled by LiteRT for the CPU (XNNPACK), with host buffers.
pub struct LiteRtRuntime {
    handles: Handles,
    model_path: String,
    library: PathBuf,
    input_spec: TensorSpec,
    output_specs: Vec<TensorSpec>,
    input: Vec<u8>,
    outputs: Vec<Vec<u8>>,
    threads_requested: usize,
    threads_applied: Option<usize>,
    fully_accelerated: bool,
}

// `LiteRtRuntime` is `Send` (see `Handles`) and deliberately not `Sync`.
const _: () = {
    const fn assert_send<T: Send>() {}
    assert_send::<LiteRtRuntime>();
};

impl std::fmt::Debug for LiteRtRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiteRtRuntime")
            .field("model", &self.model_path)
            .field("library", &self.library)
            .field("input", &self.input_spec)
            .field("outputs", &self.output_specs)
            .field("threads", &self.threads_applied)
            .finish_non_exhaustive()
    }
}

impl LiteRtRuntime {
    /// Load `libLiteRt.so` from `lib` (once per process per path), then read
    /// `model` ([`ModelFile::read`]) and load it as [`Self::from_model_file`]
    /// does. The library comes first, so a missing or unusable one is
    /// reported as such whatever the model file is.
    ///
    /// Errors: [`InferenceError::LiteRtUnavailable`] naming `lib` when the
    /// library is missing, cannot be loaded, or does not export the LiteRT C
    /// API; [`InferenceError::Io`] / [`InferenceError::NotTflite`] when the
    /// model file cannot be read or is not a TFLite flatbuffer; otherwise
    /// those of [`Self::from_model_file`].
    pub fn load(lib: &Path, model: &Path, threads: usize) -> Result<LiteRtRuntime, InferenceError> {
        let shared = shared_lib(lib)?;
        let file = ModelFile::read(model)?;
        Self::load_with(shared, lib, &file, threads)
    }

    /// Load `libLiteRt.so` from `lib` (once per process per path), then load
    /// and compile the model `file` (already read and verified) for the CPU
    /// accelerator with `threads` XNNPACK threads.
    ///
    /// Errors: [`InferenceError::LiteRtUnavailable`] naming `lib` as for
    /// [`Self::load`]; [`InferenceError::NotTflite`] when the flatbuffer does
    /// not describe the signature's tensors; [`InferenceError::Load`] naming
    /// the model when LiteRT refuses it; [`InferenceError::Unsupported`] for
    /// tensor layouts Spotter cannot feed (not exactly one input, element
    /// types other than u8/i8/f32, shapes still unknown after compilation,
    /// per-channel quantized inputs or outputs).
    pub(crate) fn from_model_file(
        lib: &Path,
        file: &ModelFile,
        threads: usize,
    ) -> Result<LiteRtRuntime, InferenceError> {
        Self::load_with(shared_lib(lib)?, lib, file, threads)
    }

    /// Load and compile, with LiteRT's log lines re-logged ([`stderr`]).
    fn load_with(
        shared: Arc<SharedLib>,
        lib: &Path,
        file: &ModelFile,
        threads: usize,
    ) -> Result<LiteRtRuntime, InferenceError> {
        relog_stderr(RuntimeLog::LiteRt, || {
            Self::compile(shared, lib, file, threads)
        })
        .0
    }

    fn compile(
        shared: Arc<SharedLib>,
        lib: &Path,
        file: &ModelFile,
        threads: usize,
    ) -> Result<LiteRtRuntime, InferenceError> {
        let model_path = file.path().display().to_string();
        let meta = flatbuf::signature_io(file.bytes())
            .and_then(DeclaredIo::from_flatbuffer)
            .map_err(|reason| InferenceError::NotTflite {
                path: model_path.clone(),
                reason,
            })?;

        let refused = |reason: String| InferenceError::Load {
            path: model_path.clone(),
            reason,
        };
        let unsupported = |reason: String| InferenceError::Unsupported {
            path: model_path.clone(),
            reason,
        };

        let mut h = Handles {
            shared,
            // LiteRT parses the flatbuffer in place: it keeps the file's
            // bytes (a read-only mapping) alive for as long as the model.
            bytes: file.shared_bytes(),
            model: std::ptr::null_mut(),
            options: std::ptr::null_mut(),
            compiled: std::ptr::null_mut(),
            inputs: Vec::new(),
            outputs: Vec::new(),
        };
        let env = h.shared.env;
        let fns = h.shared.fns;

        // The model parses `h.bytes` in place; `Handles` drops them after it.
        let mut raw_model: sys::Model = std::ptr::null_mut();
        // SAFETY: live environment; the buffer pointer and length describe
        // `h.bytes` (the file's read-only mapping, or a heap buffer), which
        // `Handles` holds through an `Arc` until after the model is
        // destroyed, so it is neither moved nor freed before; LiteRT only
        // reads it; `raw_model` is valid storage.
        let status = unsafe {
            (fns.create_model_from_buffer)(
                env,
                h.bytes.as_ptr().cast::<c_void>(),
                h.bytes.len(),
                &mut raw_model,
            )
        };
        h.model = raw_model;
        check(status, "LiteRtCreateModelFromBuffer")
            .and_then(|()| {
                if h.model.is_null() {
                    Err("LiteRtCreateModelFromBuffer returned null".into())
                } else {
                    Ok(())
                }
            })
            .map_err(|e| refused(format!("LiteRT could not parse the model: {e}")))?;

        let sig = h.signature().map_err(&refused)?;
        let (mut n_in, mut n_out) = (0usize, 0usize);
        // SAFETY: `sig` is borrowed from the live model; outputs are valid storage.
        let status = unsafe { (fns.get_num_signature_inputs)(sig, &mut n_in) };
        check(status, "LiteRtGetNumSignatureInputs").map_err(&refused)?;
        // SAFETY: as above.
        let status = unsafe { (fns.get_num_signature_outputs)(sig, &mut n_out) };
        check(status, "LiteRtGetNumSignatureOutputs").map_err(&refused)?;
        if n_in != 1 {
            return Err(unsupported(format!(
                "expected exactly one input tensor, model has {n_in}"
            )));
        }
        if n_out == 0 {
            return Err(unsupported("model has no output tensors".into()));
        }
        if meta.inputs.len() != n_in || meta.outputs.len() != n_out {
            return Err(unsupported(format!(
                "LiteRT reports {n_in} inputs and {n_out} outputs, the flatbuffer {} and {}",
                meta.inputs.len(),
                meta.outputs.len()
            )));
        }
        let in_type = h.tensor_type(sig, false, 0).map_err(&refused)?;
        let mut out_types = (0..n_out)
            .map(|i| h.tensor_type(sig, true, i))
            .collect::<Result<Vec<_>, _>>()
            .map_err(&refused)?;

        let mut raw_options: sys::Options = std::ptr::null_mut();
        // SAFETY: `raw_options` is valid storage.
        let status = unsafe { (fns.create_options)(&mut raw_options) };
        h.options = raw_options;
        check(status, "LiteRtCreateOptions")
            .and_then(|()| {
                if h.options.is_null() {
                    Err("LiteRtCreateOptions returned null".into())
                } else {
                    Ok(())
                }
            })
            .map_err(|e| refused(format!("LiteRT options: {e}")))?;
        // SAFETY: `options` is a live options handle.
        let status =
            unsafe { (fns.set_options_hardware_accelerators)(h.options, kLiteRtHwAcceleratorCpu) };
        check(status, "LiteRtSetOptionsHardwareAccelerators")
            .map_err(|e| refused(format!("LiteRT options: {e}")))?;
        let threads_applied = if threads >= 1 {
            h.set_threads(threads)
                .map_err(|e| refused(format!("LiteRT CPU options: {e}")))?;
            Some(threads)
        } else {
            None // 0: XNNPACK's default
        };

        let mut raw_compiled: sys::CompiledModel = std::ptr::null_mut();
        // SAFETY: live environment, model and options; the model and options
        // outlive the compiled model (`Handles::drop` order).
        let status =
            unsafe { (fns.create_compiled_model)(env, h.model, h.options, &mut raw_compiled) };
        h.compiled = raw_compiled;
        check(status, "LiteRtCreateCompiledModel")
            .and_then(|()| {
                if h.compiled.is_null() {
                    Err("LiteRtCreateCompiledModel returned null".into())
                } else {
                    Ok(())
                }
            })
            .map_err(|e| {
                refused(format!(
                    "LiteRT could not compile the model for the CPU: {e}"
                ))
            })?;

        // Outputs whose shape the model leaves to the runtime (rank 0 in the
        // model): take the shape LiteRT computed while compiling.
        let dynamic: Vec<bool> = out_types.iter().map(|t| t.layout.rank() == 0).collect();
        if dynamic.iter().any(|&d| d) {
            let layouts = h.compiled_output_layouts(n_out).map_err(&refused)?;
            for ((ty, layout), &d) in out_types.iter_mut().zip(layouts).zip(&dynamic) {
                if d {
                    ty.layout = layout;
                }
            }
        }

        let input_spec = tensor_spec(&in_type, &meta.inputs[0], "input").map_err(&unsupported)?;
        let output_specs = out_types
            .iter()
            .zip(&meta.outputs)
            .map(|(ty, t)| tensor_spec(ty, t, "output"))
            .collect::<Result<Vec<_>, _>>()
            .map_err(&unsupported)?;

        let buf = h
            .create_buffer(false, 0, &in_type, true, input_spec.byte_len())
            .map_err(|e| refused(format!("input buffer: {e}")))?;
        h.inputs.push(buf);
        for (i, spec) in output_specs.iter().enumerate() {
            let buf = h
                .create_buffer(true, i, &out_types[i], !dynamic[i], spec.byte_len())
                .map_err(|e| refused(format!("output buffer {}: {e}", spec.name)))?;
            h.outputs.push(buf);
        }

        let mut fully_accelerated = false;
        // SAFETY: live compiled model; valid storage.
        let status = unsafe {
            (fns.compiled_model_is_fully_accelerated)(h.compiled, &mut fully_accelerated)
        };
        if status != kLiteRtStatusOk {
            fully_accelerated = false;
        }
        if !fully_accelerated {
            log::info!(model = model_path.as_str(); "LiteRT: part of the model runs on LiteRT's own CPU kernels, not XNNPACK");
        }

        Ok(LiteRtRuntime {
            input: vec![0; input_spec.byte_len()],
            outputs: output_specs.iter().map(|s| vec![0; s.byte_len()]).collect(),
            handles: h,
            model_path,
            library: lib.to_path_buf(),
            input_spec,
            output_specs,
            threads_requested: threads,
            threads_applied,
            fully_accelerated,
        })
    }

    /// Whether LiteRT reported every operator as delegated to XNNPACK.
    pub fn fully_accelerated(&self) -> bool {
        self.fully_accelerated
    }

    /// The XNNPACK thread count passed to LiteRT in the compilation options
    /// (`None` only when 0 was requested, leaving XNNPACK's default).
    pub fn threads_applied(&self) -> Option<usize> {
        self.threads_applied
    }

    /// The thread count passed to [`Self::load`].
    pub fn threads_requested(&self) -> usize {
        self.threads_requested
    }
}

impl Runtime for LiteRtRuntime {
    fn kind(&self) -> RuntimeKind {
        RuntimeKind::Litert
    }

    fn input_spec(&self) -> &TensorSpec {
        &self.input_spec
    }

    fn output_specs(&self) -> &[TensorSpec] {
        &self.output_specs
    }

    fn input_mut(&mut self) -> &mut [u8] {
        &mut self.input
    }

    fn invoke(&mut self) -> Result<(), InferenceError> {
        let h = &mut self.handles;
        let result = (|| -> Result<(), String> {
            h.write(h.inputs[0], &self.input)?;
            let run = h.shared.fns.run_compiled_model;
            // SAFETY: live compiled model; the buffer arrays hold exactly the
            // signature's input and output count of live buffers sized for
            // their tensors; LiteRT does not keep the array pointers.
            let status = unsafe {
                run(
                    h.compiled,
                    0,
                    h.inputs.len(),
                    h.inputs.as_mut_ptr(),
                    h.outputs.len(),
                    h.outputs.as_mut_ptr(),
                )
            };
            check(status, "LiteRtRunCompiledModel")?;
            for (&buf, out) in h.outputs.iter().zip(self.outputs.iter_mut()) {
                h.read(buf, out)?;
            }
            Ok(())
        })();
        result.map_err(|reason| InferenceError::Invoke {
            path: self.model_path.clone(),
            reason,
        })
    }

    fn output(&self, i: usize) -> &[u8] {
        &self.outputs[i]
    }
}

/// What the flatbuffer says about one signature input or output, in the
/// terms LiteRT's tensor types are checked against.
struct Declared {
    name: String,
    shape: Vec<usize>,
    /// `None` for element types Spotter does not handle.
    dtype: Option<DType>,
    scales: Vec<f32>,
    zero_point: i32,
}

/// The signature's inputs and outputs as the flatbuffer declares them.
struct DeclaredIo {
    inputs: Vec<Declared>,
    outputs: Vec<Declared>,
}

impl DeclaredIo {
    /// Refuses negative dimensions and zero points outside `i32`.
    fn from_flatbuffer(io: flatbuf::IoTensors) -> Result<DeclaredIo, String> {
        let declared = |t: flatbuf::TensorInfo| -> Result<Declared, String> {
            let i = t.index;
            let shape = t
                .shape
                .iter()
                .map(|&d| usize::try_from(d).map_err(|_| d))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|d| format!("tensor {i} has a negative dimension {d}"))?;
            let (scales, zero_point) = match t.quant {
                Some(q) => (q.scale, q.zero_point.first().copied().unwrap_or(0)),
                None => (Vec::new(), 0),
            };
            let zero_point = i32::try_from(zero_point)
                .map_err(|_| format!("tensor {i} zero point {zero_point} out of range"))?;
            Ok(Declared {
                name: t.name,
                shape,
                dtype: t.dtype,
                scales,
                zero_point,
            })
        };
        let all = |v: Vec<flatbuf::TensorInfo>| -> Result<Vec<_>, String> {
            v.into_iter().map(declared).collect()
        };
        Ok(DeclaredIo {
            inputs: all(io.inputs)?,
            outputs: all(io.outputs)?,
        })
    }
}

/// One tensor's spec from LiteRT's type (authoritative for element type and,
/// after compilation, shape) and the flatbuffer (name, quantization),
/// refusing the tensor if the two disagree.
fn tensor_spec(ty: &RankedTensorType, t: &Declared, role: &str) -> Result<TensorSpec, String> {
    let dtype = dtype_of(ty.element_type).ok_or_else(|| {
        format!(
            "{role} tensor {:?} has LiteRT element type {}, only uint8, int8 and float32 are supported",
            t.name, ty.element_type
        )
    })?;
    let rank = ty.layout.rank() as usize;
    if rank == 0 {
        // Still rank 0 after compilation: LiteRT could not size it either.
        return Err(format!(
            "{role} tensor {:?} has no static shape (LiteRT reports rank 0 even after compiling)",
            t.name
        ));
    }
    let dims = ty
        .layout
        .dimensions
        .get(..rank)
        .ok_or_else(|| format!("{role} tensor {:?} has rank {rank}", t.name))?;
    let shape = dims
        .iter()
        .map(|&d| usize::try_from(d))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| format!("{role} tensor {:?} has a dynamic shape {dims:?}", t.name))?;
    // An empty flatbuffer shape means "computed at prepare time" (checked
    // against LiteRT's compiled layout instead).
    if (!t.shape.is_empty() && shape != t.shape) || Some(dtype) != t.dtype {
        return Err(format!(
            "{role} tensor {:?}: LiteRT reports {dtype:?} {shape:?}, the flatbuffer {:?} {:?}; \
             cannot match quantization to tensors",
            t.name, t.dtype, t.shape
        ));
    }
    let quant = match t.scales.as_slice() {
        [] => None,
        [scale] if *scale == 0.0 => None,
        [scale] => Some(Quant {
            scale: *scale,
            zero_point: t.zero_point,
        }),
        many => {
            return Err(format!(
                "{role} tensor {:?} is per-channel quantized ({} scales)",
                t.name,
                many.len()
            ))
        }
    };
    Ok(TensorSpec {
        name: t.name.clone(),
        shape,
        dtype,
        quant,
    })
}

/// `LiteRtElementType` values (litert/c/litert_model_types.h; they equal the
/// `TfLiteType` values).
fn dtype_of(element_type: u32) -> Option<DType> {
    const FLOAT32: u32 = 1;
    const UINT8: u32 = 3;
    const INT8: u32 = 9;
    match element_type {
        FLOAT32 => Some(DType::F32),
        UINT8 => Some(DType::U8),
        INT8 => Some(DType::I8),
        _ => None,
    }
}
