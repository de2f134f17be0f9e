//! LiteRT runtime: runs a model through `libLiteRt.so` (LiteRT 2.x, XNNPACK on
//! the CPU), loaded at run time.
//!
//! This module owns loading the shared library (once per path per process,
//! with `edgefirst-tflite`'s [`Library`]), the LiteRT environment, and for
//! each model: the parsed model, the compilation options (CPU accelerator and
//! XNNPACK thread count), the compiled model, its input and output tensor
//! buffers, and the host-side copies of those tensors. The tensor metadata
//! the LiteRT C API does not expose (names and quantization) comes from the
//! model's flatbuffer, read by [`super::flatbuf`]; this module checks it
//! against what LiteRT reports. Models are loaded from a [`ModelFile`], which
//! read the file once.
//!
//! It calls the LiteRT C API directly, through the function table
//! `edgefirst-tflite` resolves ([`Library::litert`]) plus a few symbols that
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

use std::collections::HashMap;
use std::ffi::{c_char, c_void, CStr, CString};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use edgefirst_tflite::Library;
use edgefirst_tflite_sys::litert::{
    self as sys, kLiteRtHwAcceleratorCpu, kLiteRtStatusOk, kLiteRtTensorBufferLockModeRead,
    kLiteRtTensorBufferLockModeWrite, kLiteRtTensorBufferTypeHostMemory, LiteRtFunctions,
    LiteRtLayout, RankedTensorType,
};

use super::flatbuf;
use super::modelfile::ModelFile;
use super::{DType, InferenceError, Quant, Runtime, RuntimeKind, TensorSpec};

/// `LiteRtOpaqueOptions` (an opaque pointer; the bindings do not re-export
/// the type).
type OpaqueOptions = *mut c_void;

/// `LiteRtCreateOpaqueOptions` (litert/c/litert_opaque_options.h).
type CreateOpaqueOptionsFn = unsafe extern "C" fn(
    payload_identifier: *const c_char,
    payload_data: *mut c_void,
    payload_destructor: Option<unsafe extern "C" fn(payload_data: *mut c_void)>,
    options: *mut OpaqueOptions,
) -> sys::Status;
/// `LiteRtDestroyOpaqueOptions`.
type DestroyOpaqueOptionsFn = unsafe extern "C" fn(options: OpaqueOptions);
/// `LiteRtAddOpaqueOptions` (litert/c/litert_options.h): takes ownership of
/// `opaque_options` on success.
type AddOpaqueOptionsFn =
    unsafe extern "C" fn(options: sys::Options, opaque_options: OpaqueOptions) -> sys::Status;
/// `LiteRtGetCompiledModelOutputTensorLayouts` (litert/c/litert_compiled_model.h).
type OutputLayoutsFn = unsafe extern "C" fn(
    compiled_model: sys::CompiledModel,
    signature_index: sys::ParamIndex,
    num_layouts: usize,
    layouts: *mut LiteRtLayout,
    update_allocation: bool,
) -> sys::Status;

/// Identifier LiteRT's CPU accelerator looks its options up by.
const CPU_OPTIONS_IDENTIFIER: &CStr = c"xnnpack";

/// LiteRT entry points that `edgefirst-tflite`'s table does not include.
#[derive(Clone, Copy)]
struct ExtraFns {
    create_opaque_options: CreateOpaqueOptionsFn,
    destroy_opaque_options: DestroyOpaqueOptionsFn,
    add_opaque_options: AddOpaqueOptionsFn,
    output_layouts: OutputLayoutsFn,
}

/// A loaded `libLiteRt.so`, its function pointers and its LiteRT environment.
struct SharedLib {
    fns: LiteRtFunctions,
    extra: ExtraFns,
    env: sys::Environment,
    /// Declared last: dropped after `Drop::drop` destroyed the environment,
    /// and it keeps every function pointer above valid while it lives.
    _library: Library,
}

// SAFETY: the function pointers are plain code addresses, valid while
// `_library` (owned here) stays loaded. The LiteRT environment is created once
// and only passed by handle to LiteRT calls that are safe to make from any
// thread (model creation, compilation, buffer allocation); edgefirst-tflite
// asserts the same (`Send + Sync`) for its `Environment` wrapper.
unsafe impl Send for SharedLib {}
// SAFETY: see `Send`; nothing here is mutated after construction.
unsafe impl Sync for SharedLib {}

impl Drop for SharedLib {
    fn drop(&mut self) {
        // SAFETY: `env` came from `LiteRtCreateEnvironment`, is non-null, and
        // every model handle holds an `Arc` to this, so none is alive now.
        unsafe { (self.fns.destroy_environment)(self.env) }
    }
}

/// Resolve the symbols `ExtraFns` needs from `library`, or name the first
/// missing one.
fn extra_fns(library: &Library) -> Result<ExtraFns, &'static str> {
    let lib = library.as_sys().library();
    macro_rules! resolve {
        ($ty:ty, $name:literal) => {
            // SAFETY: the symbol is looked up in the loaded LiteRT library and
            // copied out as a function pointer of the C signature declared by
            // the LiteRT header for that name (see the type aliases above).
            // It is only called while `SharedLib::_library` keeps it loaded.
            unsafe { lib.get::<$ty>(concat!($name, "\0").as_bytes()) }
                .map(|s| *s)
                .map_err(|_| $name)?
        };
    }
    Ok(ExtraFns {
        create_opaque_options: resolve!(CreateOpaqueOptionsFn, "LiteRtCreateOpaqueOptions"),
        destroy_opaque_options: resolve!(DestroyOpaqueOptionsFn, "LiteRtDestroyOpaqueOptions"),
        add_opaque_options: resolve!(AddOpaqueOptionsFn, "LiteRtAddOpaqueOptions"),
        output_layouts: resolve!(OutputLayoutsFn, "LiteRtGetCompiledModelOutputTensorLayouts"),
    })
}

/// `Ok` for `kLiteRtStatusOk`, else the call and the status code.
fn check(status: sys::Status, call: &str) -> Result<(), String> {
    if status == kLiteRtStatusOk {
        Ok(())
    } else {
        Err(format!("{call} failed (LiteRT status {status})"))
    }
}

/// Load `lib` (and create its LiteRT environment) for the rest of the
/// process, as model loads will; used to check `runtime = "litert"` at start.
///
/// The library is never unloaded: `libLiteRt.so` registers exit handlers
/// when it is first loaded, and a `dlclose` before exit leaves those handlers
/// pointing at unmapped code (the process then crashes in `exit`, after a
/// clean shutdown). Probing with a temporary handle did exactly that.
pub fn preload(lib: &Path) -> Result<(), InferenceError> {
    shared_lib(lib).map(|_| ())
}

/// One library and environment per canonical library path, for the life of
/// the process. Models are swapped at run time many times; reopening the
/// library and re-running LiteRT's accelerator discovery for each would be
/// wasted work, and unloading a C++ runtime that started XNNPACK threads is
/// not something to do casually. The map grows only with distinct library
/// paths that loaded successfully (in practice one).
fn shared_lib(lib: &Path) -> Result<Arc<SharedLib>, InferenceError> {
    static LIBS: OnceLock<Mutex<HashMap<PathBuf, Arc<SharedLib>>>> = OnceLock::new();
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
    let mut libs = LIBS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(shared) = libs.get(&key) {
        return Ok(Arc::clone(shared));
    }

    let library = Library::from_path(&key).map_err(|e| unavailable(format!("cannot load: {e}")))?;
    if let Some(symbol) = library.litert_missing_symbol() {
        return Err(unavailable(format!(
            "not a LiteRT runtime (does not export {symbol})"
        )));
    }
    let fns = *library.litert().ok_or_else(|| {
        unavailable("not a LiteRT runtime (LiteRT function table unavailable)".into())
    })?;
    let extra = extra_fns(&library).map_err(|symbol| {
        unavailable(format!(
            "LiteRT runtime too old or too new (does not export {symbol})"
        ))
    })?;
    let mut env: sys::Environment = std::ptr::null_mut();
    // SAFETY: `fns` was resolved from `library`, which is loaded; zero options
    // with a null option array is the documented default environment.
    let status = unsafe { (fns.create_environment)(0, std::ptr::null(), &mut env) };
    check(status, "LiteRtCreateEnvironment")
        .and_then(|()| {
            if env.is_null() {
                Err("LiteRtCreateEnvironment returned null".into())
            } else {
                Ok(())
            }
        })
        .map_err(|e| unavailable(format!("cannot create a LiteRT environment: {e}")))?;
    let shared = Arc::new(SharedLib {
        fns,
        extra,
        env,
        _library: library,
    });
    libs.insert(key, Arc::clone(&shared));
    log::info!(library = lib.display().to_string().as_str(); "LiteRT runtime loaded");
    Ok(shared)
}

/// Every LiteRT handle one loaded model owns. Null handles have not been
/// created (yet); `Drop` destroys the others, dependents first, so a load
/// that fails halfway releases what it created.
struct Handles {
    shared: Arc<SharedLib>,
    /// The flatbuffer LiteRT parsed in place: must outlive `model`.
    bytes: Vec<u8>,
    model: sys::Model,
    options: sys::Options,
    compiled: sys::CompiledModel,
    inputs: Vec<sys::TensorBuffer>,
    outputs: Vec<sys::TensorBuffer>,
}

// SAFETY: the handles are owned exclusively by this value and LiteRT does not
// tie models, compiled models or tensor buffers to the thread that created
// them (edgefirst-tflite asserts `Send` for its wrappers of all of them).
// `Handles` is not `Sync` (raw pointers), matching `CompiledModel`'s
// single-caller run contract.
unsafe impl Send for Handles {}

impl Drop for Handles {
    fn drop(&mut self) {
        let fns = &self.shared.fns;
        // SAFETY: every non-null handle was created by the matching LiteRT
        // call with this library's environment and is destroyed exactly once,
        // buffers and compiled model before the options and model they were
        // created from. `bytes` and the library (via `shared`) are dropped
        // after this body.
        unsafe {
            for &buf in self.outputs.iter().chain(self.inputs.iter()) {
                if !buf.is_null() {
                    (fns.destroy_tensor_buffer)(buf);
                }
            }
            if !self.compiled.is_null() {
                (fns.destroy_compiled_model)(self.compiled);
            }
            if !self.options.is_null() {
                (fns.destroy_options)(self.options);
            }
            if !self.model.is_null() {
                (fns.destroy_model)(self.model);
            }
        }
    }
}

/// Frees a TOML payload handed to `LiteRtCreateOpaqueOptions`.
unsafe extern "C" fn free_toml_payload(payload: *mut c_void) {
    if !payload.is_null() {
        // SAFETY: LiteRT calls this once, with the pointer given to
        // `LiteRtCreateOpaqueOptions`, which came from `CString::into_raw`.
        drop(unsafe { CString::from_raw(payload.cast::<c_char>()) });
    }
}

impl Handles {
    fn fns(&self) -> &LiteRtFunctions {
        &self.shared.fns
    }

    /// The model's signature 0 (borrowed from the model).
    fn signature(&self) -> Result<sys::Signature, String> {
        let mut sig: sys::Signature = std::ptr::null_mut();
        // SAFETY: `model` is a live model handle; `sig` is valid storage.
        let status = unsafe { (self.fns().get_model_signature)(self.model, 0, &mut sig) };
        check(status, "LiteRtGetModelSignature")?;
        if sig.is_null() {
            return Err("LiteRtGetModelSignature returned null".into());
        }
        Ok(sig)
    }

    /// Element type and layout of signature input (`output == false`) or
    /// output `index`, as stored in the model.
    fn tensor_type(
        &self,
        sig: sys::Signature,
        output: bool,
        index: usize,
    ) -> Result<RankedTensorType, String> {
        let fns = self.fns();
        let mut tensor: sys::Tensor = std::ptr::null_mut();
        let (get, call) = if output {
            (
                fns.get_signature_output_tensor_by_index,
                "LiteRtGetSignatureOutputTensorByIndex",
            )
        } else {
            (
                fns.get_signature_input_tensor_by_index,
                "LiteRtGetSignatureInputTensorByIndex",
            )
        };
        // SAFETY: `sig` is borrowed from the live model; `tensor` is valid
        // storage; the index was checked against the signature's count.
        check(unsafe { get(sig, index, &mut tensor) }, call)?;
        if tensor.is_null() {
            return Err(format!("{call} returned null"));
        }
        // SAFETY: an all-zero `LiteRtRankedTensorType` is a valid value (plain
        // integers); LiteRT overwrites it.
        let mut ty: RankedTensorType = unsafe { std::mem::zeroed() };
        // SAFETY: `tensor` is borrowed from the live model; `ty` is valid storage.
        let status = unsafe { (fns.get_ranked_tensor_type)(tensor, &mut ty) };
        check(status, "LiteRtGetRankedTensorType")?;
        Ok(ty)
    }

    /// Add CPU options asking XNNPACK for `threads` threads to `options`.
    fn set_threads(&self, threads: usize) -> Result<(), String> {
        let extra = self.shared.extra;
        let payload = CString::new(format!("num_threads = {threads}\n"))
            .map_err(|e| format!("CPU options payload: {e}"))?
            .into_raw();
        let mut opaque: OpaqueOptions = std::ptr::null_mut();
        // SAFETY: identifier and payload are valid NUL-terminated strings;
        // LiteRT copies the identifier and takes ownership of the payload,
        // releasing it with `free_toml_payload`. It only rejects null
        // arguments, before taking ownership; in that (unreachable) case the
        // few payload bytes are leaked rather than risk a double free.
        let status = unsafe {
            (extra.create_opaque_options)(
                CPU_OPTIONS_IDENTIFIER.as_ptr(),
                payload.cast::<c_void>(),
                Some(free_toml_payload),
                &mut opaque,
            )
        };
        check(status, "LiteRtCreateOpaqueOptions")?;
        if opaque.is_null() {
            return Err("LiteRtCreateOpaqueOptions returned null".into());
        }
        // SAFETY: `options` and `opaque` are live handles; on success
        // `options` owns `opaque` and destroys it with itself.
        let status = unsafe { (extra.add_opaque_options)(self.options, opaque) };
        if let Err(e) = check(status, "LiteRtAddOpaqueOptions") {
            // SAFETY: not added, so still ours to destroy (frees the payload).
            unsafe { (extra.destroy_opaque_options)(opaque) };
            return Err(e);
        }
        Ok(())
    }

    /// Layouts of all `n` outputs of the compiled model. `update_allocation`
    /// makes LiteRT (re)allocate the graph's tensors first, which runs the
    /// ops' prepare step and so computes the shapes the model leaves open
    /// (without it LiteRT 2.3 reports rank 0 for those outputs).
    fn compiled_output_layouts(&self, n: usize) -> Result<Vec<LiteRtLayout>, String> {
        // SAFETY: an all-zero `LiteRtLayout` is valid (integers and bitfields).
        let mut layouts = vec![unsafe { std::mem::zeroed::<LiteRtLayout>() }; n];
        // SAFETY: `compiled` is live; `layouts` has room for exactly `n`
        // layouts, `n` being the signature's output count.
        let status = unsafe {
            (self.shared.extra.output_layouts)(self.compiled, 0, n, layouts.as_mut_ptr(), true)
        };
        check(status, "LiteRtGetCompiledModelOutputTensorLayouts")?;
        Ok(layouts)
    }

    /// Allocate a host buffer for input (`output == false`) or output `index`
    /// of `ty`, at least `min_size` bytes, sized from the compiled model's
    /// requirements when `from_requirements`, else exactly `min_size`.
    fn create_buffer(
        &self,
        output: bool,
        index: usize,
        ty: &RankedTensorType,
        from_requirements: bool,
        min_size: usize,
    ) -> Result<sys::TensorBuffer, String> {
        let fns = self.fns();
        let env = self.shared.env;
        let mut buf: sys::TensorBuffer = std::ptr::null_mut();
        if from_requirements {
            let mut reqs: sys::TensorBufferRequirements = std::ptr::null_mut();
            let (get, call) = if output {
                (
                    fns.get_compiled_model_output_buffer_requirements,
                    "LiteRtGetCompiledModelOutputBufferRequirements",
                )
            } else {
                (
                    fns.get_compiled_model_input_buffer_requirements,
                    "LiteRtGetCompiledModelInputBufferRequirements",
                )
            };
            // SAFETY: `compiled` is live, the index is in range, `reqs` is
            // valid storage; the requirements are borrowed from `compiled`.
            check(unsafe { get(self.compiled, 0, index, &mut reqs) }, call)?;
            if reqs.is_null() {
                return Err(format!("{call} returned null"));
            }
            // SAFETY: live environment, `ty` points to a valid tensor type,
            // `reqs` is live, `buf` is valid storage.
            let status = unsafe {
                (fns.create_managed_tensor_buffer_from_requirements)(env, ty, reqs, &mut buf)
            };
            check(status, "LiteRtCreateManagedTensorBufferFromRequirements")?;
        } else {
            // SAFETY: live environment, host memory type, `ty` points to a
            // valid tensor type, `buf` is valid storage.
            let status = unsafe {
                (fns.create_managed_tensor_buffer)(
                    env,
                    kLiteRtTensorBufferTypeHostMemory,
                    ty,
                    min_size,
                    &mut buf,
                )
            };
            check(status, "LiteRtCreateManagedTensorBuffer")?;
        }
        if buf.is_null() {
            return Err("LiteRT returned a null tensor buffer".into());
        }
        let mut size = 0usize;
        // SAFETY: `buf` is a live buffer we own; `size` is valid storage.
        let status = unsafe { (fns.get_tensor_buffer_size)(buf, &mut size) };
        if let Err(e) = check(status, "LiteRtGetTensorBufferSize").and_then(|()| {
            if size < min_size {
                Err(format!(
                    "LiteRT buffer for {} {index} holds {size} bytes, tensor needs {min_size}",
                    if output { "output" } else { "input" }
                ))
            } else {
                Ok(())
            }
        }) {
            // SAFETY: `buf` is ours and not stored anywhere else.
            unsafe { (fns.destroy_tensor_buffer)(buf) };
            return Err(e);
        }
        Ok(buf)
    }

    /// Copy `src` into `buf` (whose size was checked to be at least `src.len()`).
    fn write(&self, buf: sys::TensorBuffer, src: &[u8]) -> Result<(), String> {
        let fns = self.fns();
        let mut host: *mut c_void = std::ptr::null_mut();
        // SAFETY: `buf` is a live host buffer we own; `host` is valid storage.
        let status =
            unsafe { (fns.lock_tensor_buffer)(buf, &mut host, kLiteRtTensorBufferLockModeWrite) };
        check(status, "LiteRtLockTensorBuffer")?;
        if !host.is_null() {
            // SAFETY: the locked mapping is at least `src.len()` bytes (buffer
            // size checked at load) and does not overlap Rust memory.
            unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), host.cast::<u8>(), src.len()) };
        }
        // SAFETY: locked just above.
        let status = unsafe { (fns.unlock_tensor_buffer)(buf) };
        if host.is_null() {
            return Err("LiteRtLockTensorBuffer returned a null mapping".into());
        }
        check(status, "LiteRtUnlockTensorBuffer")
    }

    /// Copy the first `dst.len()` bytes of `buf` into `dst`.
    fn read(&self, buf: sys::TensorBuffer, dst: &mut [u8]) -> Result<(), String> {
        let fns = self.fns();
        let mut host: *mut c_void = std::ptr::null_mut();
        // SAFETY: `buf` is a live host buffer we own; `host` is valid storage.
        let status =
            unsafe { (fns.lock_tensor_buffer)(buf, &mut host, kLiteRtTensorBufferLockModeRead) };
        check(status, "LiteRtLockTensorBuffer")?;
        if !host.is_null() {
            // SAFETY: the locked mapping is at least `dst.len()` bytes (buffer
            // size checked at load) and does not overlap `dst`.
            unsafe {
                std::ptr::copy_nonoverlapping(host.cast::<u8>(), dst.as_mut_ptr(), dst.len())
            };
        }
        // SAFETY: locked just above.
        let status = unsafe { (fns.unlock_tensor_buffer)(buf) };
        if host.is_null() {
            return Err("LiteRtLockTensorBuffer returned a null mapping".into());
        }
        check(status, "LiteRtUnlockTensorBuffer")
    }
}

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
    pub fn from_model_file(
        lib: &Path,
        file: &ModelFile,
        threads: usize,
    ) -> Result<LiteRtRuntime, InferenceError> {
        Self::load_with(shared_lib(lib)?, lib, file, threads)
    }

    fn load_with(
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
            // LiteRT parses the flatbuffer in place, so it gets its own copy.
            bytes: file.bytes().to_vec(),
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
        // `h.bytes`, which is neither moved (heap allocation) nor freed before
        // the model is destroyed; `raw_model` is valid storage.
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

    /// The library path this runtime was loaded from, as given to [`Self::load`].
    pub fn library(&self) -> &Path {
        &self.library
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
