//! The LiteRT handles one loaded model owns (model, options, compiled model,
//! tensor buffers) and the unsafe calls made on them: signature and tensor
//! types, XNNPACK thread options, compiled output layouts, buffer creation,
//! and copies in and out of locked buffers.

use std::ffi::{c_char, c_void, CString};
use std::sync::Arc;

use edgefirst_tflite_sys::litert::{
    self as sys, kLiteRtTensorBufferLockModeRead, kLiteRtTensorBufferLockModeWrite,
    kLiteRtTensorBufferTypeHostMemory, LiteRtFunctions, LiteRtLayout, RankedTensorType,
};

use super::library::{check, OpaqueOptions, SharedLib, CPU_OPTIONS_IDENTIFIER};

/// Every LiteRT handle one loaded model owns. Null handles have not been
/// created (yet); `Drop` destroys the others, dependents first, so a load
/// that fails halfway releases what it created.
pub(super) struct Handles {
    pub(super) shared: Arc<SharedLib>,
    /// The flatbuffer LiteRT parsed in place (the model file's mapping,
    /// shared, not copied): must outlive `model`.
    pub(super) bytes: Arc<crate::inference::modelfile::ModelBytes>,
    pub(super) model: sys::Model,
    pub(super) options: sys::Options,
    pub(super) compiled: sys::CompiledModel,
    pub(super) inputs: Vec<sys::TensorBuffer>,
    pub(super) outputs: Vec<sys::TensorBuffer>,
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
    pub(super) fn signature(&self) -> Result<sys::Signature, String> {
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
    pub(super) fn tensor_type(
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
    pub(super) fn set_threads(&self, threads: usize) -> Result<(), String> {
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
    pub(super) fn compiled_output_layouts(&self, n: usize) -> Result<Vec<LiteRtLayout>, String> {
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
    pub(super) fn create_buffer(
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
    pub(super) fn write(&self, buf: sys::TensorBuffer, src: &[u8]) -> Result<(), String> {
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
    pub(super) fn read(&self, buf: sys::TensorBuffer, dst: &mut [u8]) -> Result<(), String> {
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
