//! The loaded `libLiteRt.so`: its function table, the entry points that
//! table lacks, and its LiteRT environment, one per library path for the
//! life of the process.

use std::collections::HashMap;
use std::ffi::{c_char, c_void, CStr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use edgefirst_tflite::Library;
use edgefirst_tflite_sys::litert::{self as sys, kLiteRtStatusOk, LiteRtFunctions, LiteRtLayout};

use crate::inference::stderr::{relog_stderr, RuntimeLog};
use crate::inference::InferenceError;

/// `LiteRtOpaqueOptions` (an opaque pointer; the bindings do not re-export
/// the type).
pub(super) type OpaqueOptions = *mut c_void;

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
pub(super) const CPU_OPTIONS_IDENTIFIER: &CStr = c"xnnpack";

/// LiteRT entry points that `edgefirst-tflite`'s table does not include.
#[derive(Clone, Copy)]
pub(super) struct ExtraFns {
    pub(super) create_opaque_options: CreateOpaqueOptionsFn,
    pub(super) destroy_opaque_options: DestroyOpaqueOptionsFn,
    pub(super) add_opaque_options: AddOpaqueOptionsFn,
    pub(super) output_layouts: OutputLayoutsFn,
}

/// A loaded `libLiteRt.so`, its function pointers and its LiteRT environment.
pub(super) struct SharedLib {
    pub(super) fns: LiteRtFunctions,
    pub(super) extra: ExtraFns,
    pub(super) env: sys::Environment,
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
pub(super) fn check(status: sys::Status, call: &str) -> Result<(), String> {
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
///
/// LiteRT logs its accelerator discovery while the environment is created:
/// that goes through Spotter's logging ([`crate::inference::stderr`]).
pub(super) fn shared_lib(lib: &Path) -> Result<Arc<SharedLib>, InferenceError> {
    relog_stderr(RuntimeLog::LiteRt, || open_shared_lib(lib)).0
}

/// The loaded libraries by canonical path ([`shared_lib`]); an entry is
/// never removed.
static LIBS: OnceLock<Mutex<HashMap<PathBuf, Arc<SharedLib>>>> = OnceLock::new();

/// The canonical paths of the LiteRT libraries loaded so far. Each stays
/// mapped until the process exits (see [`preload`]); a library that failed
/// its checks was unloaded and is not listed.
pub fn loaded_libraries() -> Vec<PathBuf> {
    let Some(libs) = LIBS.get() else {
        return Vec::new();
    };
    // Poisoned: see open_shared_lib; the map is consistent.
    let libs = libs.lock().unwrap_or_else(|p| p.into_inner());
    libs.keys().cloned().collect()
}

fn open_shared_lib(lib: &Path) -> Result<Arc<SharedLib>, InferenceError> {
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
