//! LiteRT runtime: runs a model through `libLiteRt.so` (LiteRT 2.x, XNNPACK on
//! the CPU), loaded at run time with `edgefirst-tflite`'s `litert` API.
//!
//! This module owns loading the shared library (once per path per process),
//! compiling one model for the CPU accelerator, the host-side copies of its
//! input and output tensors, and the tensor metadata the LiteRT C API wrapper
//! does not expose (names and quantization), which it reads from the model's
//! flatbuffer and checks against what LiteRT reports.
//!
//! Known limit: `edgefirst-tflite` 0.10.3 exposes no way to pass CPU options
//! (the XNNPACK thread count) to `LiteRtCreateCompiledModel`: its `Options`
//! keeps the raw `LiteRtOptions` handle private, and the only setter is the
//! accelerator set. LiteRT therefore runs with XNNPACK's default, which is a
//! single thread. The `threads` argument is recorded and reported, see
//! [`LiteRtRuntime::threads_applied`].
//!
//! Second limit: outputs without a static shape (rank 0 in LiteRT, e.g. the
//! `TFLite_Detection_PostProcess` outputs of SSD detectors) are refused with
//! [`InferenceError::Unsupported`]. LiteRT sizes their buffers as scalars and
//! the wrapper gives no access to `LiteRtGetCompiledModelOutputTensorLayouts`,
//! which would report the shapes after compilation. `auto` selection then
//! falls back to the built-in runtime and says so.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use edgefirst_tflite::{litert, Library};
use self_cell::self_cell;

use super::modelfile::MAX_MODEL_BYTES;
use super::{DType, InferenceError, Quant, Runtime, RuntimeKind, TensorSpec};

type Env<'a> = litert::Environment<'a>;
type LrtModel<'a> = litert::Model<'a>;

self_cell!(
    /// A loaded `libLiteRt.so` and its LiteRT environment (which borrows it).
    struct SharedEnv {
        owner: Library,
        #[covariant]
        dependent: Env,
    }
);

self_cell!(
    /// A parsed model, borrowing the shared environment it was loaded into.
    struct LoadedModel {
        owner: Arc<SharedEnv>,
        #[covariant]
        dependent: LrtModel,
    }
);

/// The compiled model and the runtime-allocated buffers it runs on. All of
/// them borrow the environment and the model held by the owning cell.
struct Compiled<'a> {
    compiled: litert::CompiledModel<'a>,
    inputs: Vec<litert::TensorBuffer<'a>>,
    outputs: Vec<litert::TensorBuffer<'a>>,
}

self_cell!(
    struct CompiledCell {
        owner: LoadedModel,
        #[covariant]
        dependent: Compiled,
    }
);

/// One library and environment per canonical library path, for the life of
/// the process. Models are swapped at run time many times; reopening the
/// library and re-running LiteRT's accelerator discovery for each would be
/// wasted work, and unloading a C++ runtime that started XNNPACK threads is
/// not something to do casually. The map grows only with distinct library
/// paths that loaded successfully (in practice one).
fn shared_env(lib: &Path) -> Result<Arc<SharedEnv>, InferenceError> {
    static ENVS: OnceLock<Mutex<HashMap<PathBuf, Arc<SharedEnv>>>> = OnceLock::new();
    let unavailable = |reason: String| InferenceError::LiteRtUnavailable {
        path: lib.display().to_string(),
        reason,
    };

    let key = match std::fs::canonicalize(lib) {
        Ok(p) => p,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(unavailable("not found".into()))
        }
        Err(e) => return Err(unavailable(e.to_string())),
    };
    if !key.is_file() {
        return Err(unavailable("not a regular file".into()));
    }

    // A poisoned lock only means another thread panicked while loading; the
    // map itself is always in a consistent state (insert is the last step).
    let mut envs = ENVS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(env) = envs.get(&key) {
        return Ok(Arc::clone(env));
    }

    let library = Library::from_path(&key).map_err(|e| unavailable(format!("cannot load: {e}")))?;
    if let Some(symbol) = library.litert_missing_symbol() {
        return Err(unavailable(format!(
            "not a LiteRT runtime (does not export {symbol})"
        )));
    }
    let env = SharedEnv::try_new(library, |lib| litert::Environment::new(lib))
        .map_err(|e| unavailable(format!("cannot create a LiteRT environment: {e}")))?;
    let env = Arc::new(env);
    envs.insert(key, Arc::clone(&env));
    log::info!(library = lib.display().to_string().as_str(); "LiteRT runtime loaded");
    Ok(env)
}

/// A model compiled by LiteRT for the CPU (XNNPACK), with host buffers.
pub struct LiteRtRuntime {
    cell: CompiledCell,
    model_path: String,
    library: PathBuf,
    input_spec: TensorSpec,
    output_specs: Vec<TensorSpec>,
    input: Vec<u8>,
    outputs: Vec<Vec<u8>>,
    threads_requested: usize,
    fully_accelerated: bool,
}

// `LiteRtRuntime` is `Send` without an `unsafe impl`: every handle in it is
// `Send` (edgefirst-tflite asserts this for `Library`, `Environment`, `Model`,
// `CompiledModel` and `TensorBuffer`; `self_cell` forwards `Send` from owner
// and dependent). It is deliberately not `Sync`: `CompiledModel` is not.
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
            .finish_non_exhaustive()
    }
}

impl LiteRtRuntime {
    /// Load `libLiteRt.so` from `lib` (once per process per path), then load
    /// and compile `model` for the CPU accelerator.
    ///
    /// Errors: [`InferenceError::LiteRtUnavailable`] naming `lib` when the
    /// library is missing, cannot be loaded, or does not export the LiteRT C
    /// API; [`InferenceError::Io`] / [`InferenceError::NotTflite`] when the
    /// model file cannot be read or is not a TFLite flatbuffer;
    /// [`InferenceError::Load`] naming `model` when LiteRT refuses it;
    /// [`InferenceError::Unsupported`] for tensor layouts Spotter cannot feed
    /// (not exactly one input, element types other than u8/i8/f32, dynamic
    /// shapes, per-channel quantized inputs or outputs).
    ///
    /// `threads` is the requested XNNPACK thread count; see the module docs
    /// for why it cannot be applied with this binding.
    pub fn load(lib: &Path, model: &Path, threads: usize) -> Result<LiteRtRuntime, InferenceError> {
        let model_path = model.display().to_string();
        let env = shared_env(lib)?;

        let io_err = |source| InferenceError::Io {
            path: model_path.clone(),
            source,
        };
        let size = std::fs::metadata(model).map_err(io_err)?.len();
        if size > MAX_MODEL_BYTES {
            return Err(InferenceError::Unsupported {
                path: model_path,
                reason: format!("{size} bytes, larger than the {MAX_MODEL_BYTES}-byte limit"),
            });
        }
        let bytes = std::fs::read(model).map_err(io_err)?;
        let meta = fb::read_io(&bytes).map_err(|reason| InferenceError::NotTflite {
            path: model_path.clone(),
            reason,
        })?;

        let refused = |what: &str, e: edgefirst_tflite::Error| InferenceError::Load {
            path: model_path.clone(),
            reason: format!("{what}: {e}"),
        };
        // The model owns `bytes`: LiteRT parses the buffer in place.
        let loaded = LoadedModel::try_new(env, |env| {
            litert::Model::from_buffer(env.borrow_dependent(), bytes)
        })
        .map_err(|e| refused("LiteRT could not parse the model", e))?;

        let (input_spec, output_specs) = tensor_specs(&model_path, &loaded, &meta)?;

        let cell = CompiledCell::try_new(loaded, |loaded| {
            let library = loaded.borrow_owner().borrow_owner();
            let env = loaded.borrow_owner().borrow_dependent();
            let model = loaded.borrow_dependent();
            let options = litert::Options::new(library)
                .and_then(|o| o.hardware_accelerators(litert::HwAccelerators::CPU))
                .map_err(|e| refused("LiteRT options", e))?;
            let compiled = litert::CompiledModel::create(env, model, &options)
                .map_err(|e| refused("LiteRT could not compile the model for the CPU", e))?;
            let inputs = (0..1)
                .map(|i| compiled.create_input_buffer(0, i))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| refused("input buffer", e))?;
            let outputs = (0..output_specs.len())
                .map(|i| compiled.create_output_buffer(0, i))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| refused("output buffer", e))?;
            Ok::<_, InferenceError>(Compiled {
                compiled,
                inputs,
                outputs,
            })
        })?;

        // LiteRT may pad buffers but never make them smaller than the tensor;
        // check anyway, since `invoke` relies on it.
        let too_small = cell.with_dependent(|_, c| {
            std::iter::once((&c.inputs[0], &input_spec))
                .chain(c.outputs.iter().zip(output_specs.iter()))
                .find(|(buf, spec)| buf.size() < spec.byte_len())
                .map(|(buf, spec)| {
                    format!(
                        "LiteRT buffer for {} holds {} bytes, tensor needs {}",
                        spec.name,
                        buf.size(),
                        spec.byte_len()
                    )
                })
        });
        if let Some(reason) = too_small {
            return Err(InferenceError::Load {
                path: model_path,
                reason,
            });
        }

        let fully_accelerated = cell
            .borrow_dependent()
            .compiled
            .is_fully_accelerated()
            .unwrap_or(false);
        if !fully_accelerated {
            log::info!(model = model_path.as_str(); "LiteRT: part of the model runs on LiteRT's own CPU kernels, not XNNPACK");
        }
        if threads > 1 {
            log::info!(
                model = model_path.as_str(), threads = threads;
                "LiteRT: thread count cannot be set through edgefirst-tflite 0.10.3; XNNPACK runs single-threaded"
            );
        }

        Ok(LiteRtRuntime {
            input: vec![0; input_spec.byte_len()],
            outputs: output_specs.iter().map(|s| vec![0; s.byte_len()]).collect(),
            cell,
            model_path,
            library: lib.to_path_buf(),
            input_spec,
            output_specs,
            threads_requested: threads,
            fully_accelerated,
        })
    }

    /// The library path this runtime was loaded from, as given to [`Self::load`].
    pub fn library(&self) -> &Path {
        &self.library
    }

    /// Whether LiteRT reported every operator as delegated to XNNPACK.
    pub fn fully_accelerated(&self) -> bool {
        self.fully_accelerated
    }

    /// The thread count LiteRT actually uses, if it could be set: always
    /// `None` with edgefirst-tflite 0.10.3 (see the module docs). The value
    /// requested at load time is [`Self::threads_requested`].
    pub fn threads_applied(&self) -> Option<usize> {
        None
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
        let input = &self.input;
        let outputs = &mut self.outputs;
        self.cell
            .with_dependent_mut(|_, c| -> Result<(), edgefirst_tflite::Error> {
                c.inputs[0].write_bytes(input)?;
                c.compiled.run(0, &mut c.inputs, &mut c.outputs)?;
                for (buf, out) in c.outputs.iter_mut().zip(outputs.iter_mut()) {
                    buf.read_bytes_into(out)?;
                }
                Ok(())
            })
            .map_err(|e| InferenceError::Invoke {
                path: self.model_path.clone(),
                reason: e.to_string(),
            })
    }

    fn output(&self, i: usize) -> &[u8] {
        &self.outputs[i]
    }
}

/// Build the input and output specs from LiteRT's signature (authoritative for
/// order, element type and shape) and the flatbuffer (names, quantization),
/// refusing the model if the two disagree.
fn tensor_specs(
    model_path: &str,
    loaded: &LoadedModel,
    meta: &fb::IoTensors,
) -> Result<(TensorSpec, Vec<TensorSpec>), InferenceError> {
    let model = loaded.borrow_dependent();
    let load_err = |what: &str, e: edgefirst_tflite::Error| InferenceError::Load {
        path: model_path.to_string(),
        reason: format!("{what}: {e}"),
    };
    let unsupported = |reason: String| InferenceError::Unsupported {
        path: model_path.to_string(),
        reason,
    };

    let n_in = model
        .num_inputs(0)
        .map_err(|e| load_err("signature inputs", e))?;
    let n_out = model
        .num_outputs(0)
        .map_err(|e| load_err("signature outputs", e))?;
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

    let spec = |ty: litert::RankedTensorType, t: &fb::TensorInfo, role: &str| {
        let dtype = dtype_of(ty.element_type).ok_or_else(|| {
            unsupported(format!(
                "{role} tensor {:?} has LiteRT element type {}, only uint8, int8 and float32 are supported",
                t.name, ty.element_type
            ))
        })?;
        let rank = ty.layout.rank() as usize;
        if rank == 0 {
            // Tensors whose shape is only known after the runtime prepares
            // the graph (e.g. TFLite_Detection_PostProcess outputs) come back
            // as rank 0 with a 4-byte buffer requirement; LiteRT 2.3 then
            // writes the real tensor past the end of that buffer (observed:
            // abort). Refuse rather than guess a size.
            return Err(unsupported(format!(
                "{role} tensor {:?} has no static shape (LiteRT reports rank 0), \
                 so LiteRT's CompiledModel cannot size its buffer",
                t.name
            )));
        }
        let dims =
            ty.layout.dimensions.get(..rank).ok_or_else(|| {
                unsupported(format!("{role} tensor {:?} has rank {rank}", t.name))
            })?;
        let shape = dims
            .iter()
            .map(|&d| usize::try_from(d))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| {
                unsupported(format!(
                    "{role} tensor {:?} has a dynamic shape {dims:?}",
                    t.name
                ))
            })?;
        if shape != t.shape || Some(dtype) != t.dtype {
            return Err(unsupported(format!(
                "{role} tensor {:?}: LiteRT reports {dtype:?} {shape:?}, the flatbuffer {:?} {:?}; \
                 cannot match quantization to tensors",
                t.name, t.dtype, t.shape
            )));
        }
        let quant = match t.scales.as_slice() {
            [] => None,
            [scale] if *scale == 0.0 => None,
            [scale] => Some(Quant {
                scale: *scale,
                zero_point: t.zero_point,
            }),
            many => {
                return Err(unsupported(format!(
                    "{role} tensor {:?} is per-channel quantized ({} scales)",
                    t.name,
                    many.len()
                )))
            }
        };
        Ok(TensorSpec {
            name: t.name.clone(),
            shape,
            dtype,
            quant,
        })
    };

    let input = spec(
        model
            .input_tensor_type(0, 0)
            .map_err(|e| load_err("input tensor type", e))?,
        &meta.inputs[0],
        "input",
    )?;
    let outputs = (0..n_out)
        .map(|i| {
            let ty = model
                .output_tensor_type(0, i)
                .map_err(|e| load_err("output tensor type", e))?;
            spec(ty, &meta.outputs[i], "output")
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((input, outputs))
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

/// Minimal, verified reader for the parts of the TFLite flatbuffer schema
/// (tensorflow/compiler/mlir/lite/schema/schema.fbs) LiteRT's C API wrapper
/// does not expose: the signature's (or subgraph 0's) input and output
/// tensors with their names and quantization.
mod fb {
    use flatbuffers::{
        Follow, ForwardsUOffset, InvalidFlatbuffer, Table, VOffsetT, Vector, Verifiable, Verifier,
    };

    use crate::inference::DType;

    /// What the flatbuffer says about one input or output tensor.
    #[derive(Debug, Clone, PartialEq)]
    pub struct TensorInfo {
        pub name: String,
        pub shape: Vec<usize>,
        /// `None` for element types Spotter does not handle.
        pub dtype: Option<DType>,
        pub scales: Vec<f32>,
        pub zero_point: i32,
    }

    #[derive(Debug, Clone, PartialEq)]
    pub struct IoTensors {
        pub inputs: Vec<TensorInfo>,
        pub outputs: Vec<TensorInfo>,
    }

    /// Field slot of the `index`-th field of a table.
    const fn slot(index: u16) -> VOffsetT {
        4 + 2 * index
    }

    /// Declares a typed view over a flatbuffer table.
    macro_rules! table {
        ($name:ident) => {
            #[derive(Clone, Copy)]
            struct $name<'a>(Table<'a>);
            impl<'a> Follow<'a> for $name<'a> {
                type Inner = Self;
                unsafe fn follow(buf: &'a [u8], loc: usize) -> Self {
                    // SAFETY: forwarded contract of `Follow::follow`.
                    Self(unsafe { Table::new(buf, loc) })
                }
            }
        };
    }

    table!(Model);
    table!(SubGraph);
    table!(Tensor);
    table!(QuantParams);
    table!(SignatureDef);
    table!(TensorMap);

    type Tables<'a, T> = Vector<'a, ForwardsUOffset<T>>;

    /// A little-endian `i64` vector element read bytewise. Quantization zero
    /// points are `[long]`, and older converters did not always 8-byte align
    /// that vector (MNISTnet_uint8_quant.tflite has one at an offset of 4
    /// mod 8), which the `flatbuffers` verifier rejects for `Vector<i64>`.
    /// TF Lite itself accepts such files, so read them without the alignment
    /// requirement; bounds are still verified.
    #[repr(transparent)]
    struct UnalignedI64([u8; 8]);
    impl flatbuffers::SimpleToVerifyInSlice for UnalignedI64 {}
    impl<'a> Follow<'a> for UnalignedI64 {
        type Inner = i64;
        unsafe fn follow(buf: &'a [u8], loc: usize) -> i64 {
            // `Vector::get` only calls this for verified, in-range elements;
            // fall back to 0 rather than panic if that ever did not hold.
            buf.get(loc..loc + 8)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map_or(0, i64::from_le_bytes)
        }
    }

    // Field indices from schema.fbs.
    const MODEL_SUBGRAPHS: VOffsetT = slot(2);
    const MODEL_SIGNATURE_DEFS: VOffsetT = slot(7);
    const SUBGRAPH_TENSORS: VOffsetT = slot(0);
    const SUBGRAPH_INPUTS: VOffsetT = slot(1);
    const SUBGRAPH_OUTPUTS: VOffsetT = slot(2);
    const TENSOR_SHAPE: VOffsetT = slot(0);
    const TENSOR_TYPE: VOffsetT = slot(1);
    const TENSOR_NAME: VOffsetT = slot(3);
    const TENSOR_QUANTIZATION: VOffsetT = slot(4);
    const QUANT_SCALE: VOffsetT = slot(2);
    const QUANT_ZERO_POINT: VOffsetT = slot(3);
    const SIGDEF_INPUTS: VOffsetT = slot(0);
    const SIGDEF_OUTPUTS: VOffsetT = slot(1);
    const SIGDEF_SUBGRAPH_INDEX: VOffsetT = slot(4);
    const TENSORMAP_TENSOR_INDEX: VOffsetT = slot(1);

    impl Verifiable for Model<'_> {
        fn run_verifier(v: &mut Verifier, pos: usize) -> Result<(), InvalidFlatbuffer> {
            v.visit_table(pos)?
                .visit_field::<ForwardsUOffset<Tables<SubGraph>>>(
                    "subgraphs",
                    MODEL_SUBGRAPHS,
                    false,
                )?
                .visit_field::<ForwardsUOffset<Tables<SignatureDef>>>(
                    "signature_defs",
                    MODEL_SIGNATURE_DEFS,
                    false,
                )?
                .finish();
            Ok(())
        }
    }
    impl Verifiable for SubGraph<'_> {
        fn run_verifier(v: &mut Verifier, pos: usize) -> Result<(), InvalidFlatbuffer> {
            v.visit_table(pos)?
                .visit_field::<ForwardsUOffset<Tables<Tensor>>>("tensors", SUBGRAPH_TENSORS, false)?
                .visit_field::<ForwardsUOffset<Vector<i32>>>("inputs", SUBGRAPH_INPUTS, false)?
                .visit_field::<ForwardsUOffset<Vector<i32>>>("outputs", SUBGRAPH_OUTPUTS, false)?
                .finish();
            Ok(())
        }
    }
    impl Verifiable for Tensor<'_> {
        fn run_verifier(v: &mut Verifier, pos: usize) -> Result<(), InvalidFlatbuffer> {
            v.visit_table(pos)?
                .visit_field::<ForwardsUOffset<Vector<i32>>>("shape", TENSOR_SHAPE, false)?
                .visit_field::<i8>("type", TENSOR_TYPE, false)?
                .visit_field::<ForwardsUOffset<&str>>("name", TENSOR_NAME, false)?
                .visit_field::<ForwardsUOffset<QuantParams>>(
                    "quantization",
                    TENSOR_QUANTIZATION,
                    false,
                )?
                .finish();
            Ok(())
        }
    }
    impl Verifiable for QuantParams<'_> {
        fn run_verifier(v: &mut Verifier, pos: usize) -> Result<(), InvalidFlatbuffer> {
            v.visit_table(pos)?
                .visit_field::<ForwardsUOffset<Vector<f32>>>("scale", QUANT_SCALE, false)?
                .visit_field::<ForwardsUOffset<Vector<UnalignedI64>>>(
                    "zero_point",
                    QUANT_ZERO_POINT,
                    false,
                )?
                .finish();
            Ok(())
        }
    }
    impl Verifiable for SignatureDef<'_> {
        fn run_verifier(v: &mut Verifier, pos: usize) -> Result<(), InvalidFlatbuffer> {
            v.visit_table(pos)?
                .visit_field::<ForwardsUOffset<Tables<TensorMap>>>("inputs", SIGDEF_INPUTS, false)?
                .visit_field::<ForwardsUOffset<Tables<TensorMap>>>(
                    "outputs",
                    SIGDEF_OUTPUTS,
                    false,
                )?
                .visit_field::<u32>("subgraph_index", SIGDEF_SUBGRAPH_INDEX, false)?
                .finish();
            Ok(())
        }
    }
    impl Verifiable for TensorMap<'_> {
        fn run_verifier(v: &mut Verifier, pos: usize) -> Result<(), InvalidFlatbuffer> {
            v.visit_table(pos)?
                .visit_field::<u32>("tensor_index", TENSORMAP_TENSOR_INDEX, false)?
                .finish();
            Ok(())
        }
    }

    // SAFETY (for every `Table::get` below): the buffer was verified by
    // `flatbuffers::root` with the `Verifiable` impls above, which check
    // exactly these fields with exactly these types.
    impl<'a> Model<'a> {
        fn subgraphs(&self) -> Option<Tables<'a, SubGraph<'a>>> {
            unsafe {
                self.0
                    .get::<ForwardsUOffset<Tables<SubGraph>>>(MODEL_SUBGRAPHS, None)
            }
        }
        fn signature_defs(&self) -> Option<Tables<'a, SignatureDef<'a>>> {
            unsafe {
                self.0
                    .get::<ForwardsUOffset<Tables<SignatureDef>>>(MODEL_SIGNATURE_DEFS, None)
            }
        }
    }
    impl<'a> SubGraph<'a> {
        fn tensors(&self) -> Option<Tables<'a, Tensor<'a>>> {
            unsafe {
                self.0
                    .get::<ForwardsUOffset<Tables<Tensor>>>(SUBGRAPH_TENSORS, None)
            }
        }
        fn inputs(&self) -> Option<Vector<'a, i32>> {
            unsafe {
                self.0
                    .get::<ForwardsUOffset<Vector<i32>>>(SUBGRAPH_INPUTS, None)
            }
        }
        fn outputs(&self) -> Option<Vector<'a, i32>> {
            unsafe {
                self.0
                    .get::<ForwardsUOffset<Vector<i32>>>(SUBGRAPH_OUTPUTS, None)
            }
        }
    }
    impl<'a> Tensor<'a> {
        fn shape(&self) -> Option<Vector<'a, i32>> {
            unsafe {
                self.0
                    .get::<ForwardsUOffset<Vector<i32>>>(TENSOR_SHAPE, None)
            }
        }
        fn type_(&self) -> i8 {
            unsafe { self.0.get::<i8>(TENSOR_TYPE, Some(0)) }.unwrap_or(0)
        }
        fn name(&self) -> Option<&'a str> {
            unsafe { self.0.get::<ForwardsUOffset<&str>>(TENSOR_NAME, None) }
        }
        fn quantization(&self) -> Option<QuantParams<'a>> {
            unsafe {
                self.0
                    .get::<ForwardsUOffset<QuantParams>>(TENSOR_QUANTIZATION, None)
            }
        }
    }
    impl<'a> QuantParams<'a> {
        fn scale(&self) -> Option<Vector<'a, f32>> {
            unsafe {
                self.0
                    .get::<ForwardsUOffset<Vector<f32>>>(QUANT_SCALE, None)
            }
        }
        fn zero_point(&self) -> Option<Vector<'a, UnalignedI64>> {
            unsafe {
                self.0
                    .get::<ForwardsUOffset<Vector<UnalignedI64>>>(QUANT_ZERO_POINT, None)
            }
        }
    }
    impl<'a> SignatureDef<'a> {
        fn inputs(&self) -> Option<Tables<'a, TensorMap<'a>>> {
            unsafe {
                self.0
                    .get::<ForwardsUOffset<Tables<TensorMap>>>(SIGDEF_INPUTS, None)
            }
        }
        fn outputs(&self) -> Option<Tables<'a, TensorMap<'a>>> {
            unsafe {
                self.0
                    .get::<ForwardsUOffset<Tables<TensorMap>>>(SIGDEF_OUTPUTS, None)
            }
        }
        fn subgraph_index(&self) -> u32 {
            unsafe { self.0.get::<u32>(SIGDEF_SUBGRAPH_INDEX, Some(0)) }.unwrap_or(0)
        }
    }
    impl TensorMap<'_> {
        fn tensor_index(&self) -> u32 {
            unsafe { self.0.get::<u32>(TENSORMAP_TENSOR_INDEX, Some(0)) }.unwrap_or(0)
        }
    }

    /// Schema `TensorType` → Spotter's element types.
    fn dtype(t: i8) -> Option<DType> {
        match t {
            0 => Some(DType::F32),
            3 => Some(DType::U8),
            9 => Some(DType::I8),
            _ => None,
        }
    }

    fn tensor_info(tensors: &Tables<'_, Tensor<'_>>, index: i64) -> Result<TensorInfo, String> {
        let i = usize::try_from(index)
            .ok()
            .filter(|&i| i < tensors.len())
            .ok_or_else(|| {
                format!(
                    "tensor index {index} out of range ({} tensors)",
                    tensors.len()
                )
            })?;
        let t = tensors.get(i);
        let shape = t
            .shape()
            .map(|s| {
                s.iter()
                    .map(|d| usize::try_from(d).map_err(|_| d))
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()
            .map_err(|d| format!("tensor {i} has a negative dimension {d}"))?
            .unwrap_or_default();
        let q = t.quantization();
        let scales: Vec<f32> = q
            .and_then(|q| q.scale())
            .map(|s| s.iter().collect())
            .unwrap_or_default();
        let zero_point = q
            .and_then(|q| q.zero_point())
            .filter(|z| !z.is_empty())
            .map(|z| z.get(0))
            .unwrap_or(0);
        let zero_point = i32::try_from(zero_point)
            .map_err(|_| format!("tensor {i} zero point {zero_point} out of range"))?;
        Ok(TensorInfo {
            name: t.name().unwrap_or_default().to_string(),
            shape,
            dtype: dtype(t.type_()),
            scales,
            zero_point,
        })
    }

    /// The input and output tensors LiteRT's default signature exposes, in
    /// its order: the first SignatureDef's tensor maps when the model has
    /// one, else subgraph 0's inputs and outputs.
    pub fn read_io(buf: &[u8]) -> Result<IoTensors, String> {
        if buf.get(4..8) != Some(b"TFL3".as_slice()) {
            return Err("missing the TFL3 file identifier".into());
        }
        let model =
            flatbuffers::root::<Model>(buf).map_err(|e| format!("invalid flatbuffer: {e}"))?;
        let subgraphs = model
            .subgraphs()
            .filter(|s| !s.is_empty())
            .ok_or("model has no subgraphs")?;

        if let Some(sig) = model
            .signature_defs()
            .filter(|s| !s.is_empty())
            .map(|s| s.get(0))
        {
            let sg_index = sig.subgraph_index() as usize;
            if sg_index >= subgraphs.len() {
                return Err(format!(
                    "signature refers to subgraph {sg_index} of {}",
                    subgraphs.len()
                ));
            }
            let tensors = subgraphs
                .get(sg_index)
                .tensors()
                .ok_or("subgraph has no tensors")?;
            let map = |maps: Option<Tables<'_, TensorMap<'_>>>| -> Result<Vec<TensorInfo>, String> {
                maps.map(|m| {
                    m.iter()
                        .map(|tm| tensor_info(&tensors, i64::from(tm.tensor_index())))
                        .collect()
                })
                .unwrap_or_else(|| Ok(Vec::new()))
            };
            return Ok(IoTensors {
                inputs: map(sig.inputs())?,
                outputs: map(sig.outputs())?,
            });
        }

        let sg = subgraphs.get(0);
        let tensors = sg.tensors().ok_or("subgraph 0 has no tensors")?;
        let list = |idx: Option<Vector<'_, i32>>| -> Result<Vec<TensorInfo>, String> {
            idx.map(|v| {
                v.iter()
                    .map(|i| tensor_info(&tensors, i64::from(i)))
                    .collect()
            })
            .unwrap_or_else(|| Ok(Vec::new()))
        };
        Ok(IoTensors {
            inputs: list(sg.inputs())?,
            outputs: list(sg.outputs())?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn testdata() -> PathBuf {
        std::env::var_os("SPOTTER_TESTDATA")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/testdata"))
            })
    }

    // Catches wrong field slots or type codes in the hand-written flatbuffer
    // reader (wrong quantization would skew every score).
    #[test]
    fn flatbuffer_reader_matches_model_details() {
        let td = testdata();
        let details: serde_json::Value = serde_json::from_slice(
            &std::fs::read(td.join("golden/model_details.json")).expect("model_details.json"),
        )
        .expect("valid json");
        let models = details.as_object().expect("object of models");
        assert!(models.len() >= 4, "expected the classifiers at least");
        for (rel, d) in models {
            if d.get("error").is_some() {
                continue; // a model TF Lite refuses (models/invalid): no tensor list
            }
            let bytes = std::fs::read(td.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
            let io = fb::read_io(&bytes).unwrap_or_else(|e| panic!("{rel}: {e}"));
            for (role, got, want) in [
                ("inputs", &io.inputs, &d["inputs"]),
                ("outputs", &io.outputs, &d["outputs"]),
            ] {
                let want = want.as_array().expect("tensor list");
                assert_eq!(got.len(), want.len(), "{rel} {role}");
                for (g, w) in got.iter().zip(want) {
                    assert_eq!(g.name, w["name"].as_str().unwrap(), "{rel} {role} name");
                    let shape: Vec<usize> = w["shape"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|x| x.as_u64().unwrap() as usize)
                        .collect();
                    if g.shape.is_empty() && role == "outputs" {
                        // Shape computed by the op at prepare time (SSD
                        // post-processing); the flatbuffer has none.
                        assert!(!shape.is_empty(), "{rel} {role} {}: scalar", g.name);
                    } else {
                        assert_eq!(g.shape, shape, "{rel} {role} {} shape", g.name);
                    }
                    let dtype = match w["dtype"].as_str().unwrap() {
                        "uint8" => Some(DType::U8),
                        "int8" => Some(DType::I8),
                        "float32" => Some(DType::F32),
                        _ => None,
                    };
                    assert_eq!(g.dtype, dtype, "{rel} {role} {} dtype", g.name);
                    let scale = w["scale"].as_f64().unwrap_or(0.0) as f32;
                    let got_scale = g.scales.first().copied().unwrap_or(0.0);
                    assert_eq!(got_scale, scale, "{rel} {role} {} scale", g.name);
                    assert_eq!(
                        i64::from(g.zero_point),
                        w["zero_point"].as_i64().unwrap_or(0),
                        "{rel} {role} {} zp",
                        g.name
                    );
                }
            }
        }
    }

    // Catches the reader accepting arbitrary bytes (or panicking on them)
    // instead of reporting "not a TFLite model".
    #[test]
    fn flatbuffer_reader_rejects_garbage() {
        assert!(fb::read_io(b"").is_err());
        assert!(fb::read_io(b"hello, this is not a model at all").is_err());
        let mut fake = vec![0u8; 64];
        fake[4..8].copy_from_slice(b"TFL3");
        fake[0] = 60; // root offset pointing near the end: no valid table there
        assert!(fb::read_io(&fake).is_err());
        // A real model truncated in the middle must fail verification, not panic.
        let bytes = std::fs::read(
            testdata().join("models/classification/mobilenet_v1_0.25_128_quant.tflite"),
        )
        .expect("mobilenet v1 0.25");
        assert!(fb::read_io(&bytes[..bytes.len() / 3]).is_err());
    }
}
