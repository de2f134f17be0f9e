//! Runtime selection: which engine runs a model, and why.
//!
//! This module owns the choice between LiteRT (`libLiteRt.so`, XNNPACK) and
//! the built-in TF Lite: where the LiteRT library is looked for, and the
//! `auto` policy (LiteRT when it loads and compiles the model, else the
//! built-in runtime). Every decision comes back as a human-readable reason and
//! a fallback is logged as a warning; nothing falls back silently.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::builtin::BuiltinRuntime;
use super::litert::{preload, LiteRtRuntime};
use super::modelfile::ModelFile;
use super::{InferenceError, Runtime};

/// Environment variable naming the LiteRT library; below an explicit path.
pub(crate) const LITERT_LIB_ENV: &str = "SPOTTER_LITERT_LIB";

/// Which runtime to use, from the configuration or the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeChoice {
    /// LiteRT if its library loads and compiles the model, else built-in.
    #[default]
    Auto,
    /// LiteRT only; an error if it is unavailable.
    Litert,
    /// The built-in TF Lite only; LiteRT is never touched.
    Builtin,
}

impl RuntimeChoice {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            RuntimeChoice::Auto => "auto",
            RuntimeChoice::Litert => "litert",
            RuntimeChoice::Builtin => "builtin",
        }
    }
}

impl fmt::Display for RuntimeChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error for an unknown runtime name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown runtime {0:?} (expected auto, litert or builtin)")]
pub struct ParseRuntimeChoiceError(pub String);

impl FromStr for RuntimeChoice {
    type Err = ParseRuntimeChoiceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(RuntimeChoice::Auto),
            "litert" => Ok(RuntimeChoice::Litert),
            "builtin" => Ok(RuntimeChoice::Builtin),
            _ => Err(ParseRuntimeChoiceError(s.to_string())),
        }
    }
}

/// Where LiteRT is looked for when no path is given, in order: the system
/// install location, then the copy `scripts/setup-litert.sh` puts in this
/// checkout's `.cache` for the architecture this binary was built for.
pub fn default_litert_paths() -> Vec<PathBuf> {
    #[cfg(target_arch = "aarch64")]
    const DEV_COPY: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/.cache/litert/aarch64/libLiteRt.so"
    );
    #[cfg(target_arch = "x86_64")]
    const DEV_COPY: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/.cache/litert/x86_64/libLiteRt.so"
    );
    let mut paths = vec![PathBuf::from("/usr/lib/spotter/libLiteRt.so")];
    #[cfg(any(target_arch = "aarch64", target_arch = "x86_64"))]
    paths.push(PathBuf::from(DEV_COPY));
    paths
}

/// The LiteRT library to use: `explicit` (configuration or command line) if
/// given, else `$SPOTTER_LITERT_LIB` if set and non-empty (both returned even
/// if the file is missing, so the error names what was asked for), else the
/// first of [`default_litert_paths`] that exists.
pub fn resolve_litert_lib(explicit: Option<&Path>) -> Option<PathBuf> {
    resolve_from(
        explicit,
        std::env::var_os(LITERT_LIB_ENV),
        &default_litert_paths(),
    )
}

fn resolve_from(
    explicit: Option<&Path>,
    env: Option<OsString>,
    defaults: &[PathBuf],
) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return Some(p.to_path_buf());
    }
    if let Some(p) = env.filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    defaults.iter().find(|p| p.is_file()).cloned()
}

fn not_found_error() -> InferenceError {
    let searched: Vec<String> = default_litert_paths()
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    InferenceError::LiteRtUnavailable {
        path: searched.join(", "),
        reason: format!(
            "not found (set {LITERT_LIB_ENV} or the configured library path, or run scripts/setup-litert.sh)"
        ),
    }
}

/// Read `model` once ([`ModelFile::read`]) and open it with the runtime
/// `choice` asks for, as [`open_runtime_for`] does. Returns the runtime and
/// the reason (see there).
///
/// `litert` looks for its library before it reads the model, so a missing or
/// unusable library is reported as such whatever the model file is; `auto`
/// and `builtin` report an unreadable or non-TFLite model file first, since
/// no runtime could load it.
pub fn open_runtime(
    choice: RuntimeChoice,
    lib: Option<&Path>,
    model: &Path,
    threads: usize,
) -> Result<(Box<dyn Runtime>, String), InferenceError> {
    read_and_open(choice, lib, model, threads).map(|(rt, reason, _)| (rt, reason))
}

/// [`open_runtime`], also returning the [`ModelFile`] it read, for
/// [`Engine::load`](super::engine::Engine::load), so the file is read once.
pub(crate) fn read_and_open(
    choice: RuntimeChoice,
    lib: Option<&Path>,
    model: &Path,
    threads: usize,
) -> Result<(Box<dyn Runtime>, String, ModelFile), InferenceError> {
    if choice == RuntimeChoice::Litert {
        let path = resolve_litert_lib(lib).ok_or_else(not_found_error)?;
        preload(&path)?;
    }
    let file = ModelFile::read(model)?;
    let (rt, reason) = open_runtime_for(choice, lib, &file, threads)?;
    Ok((rt, reason, file))
}

/// Open the model `file` (read once, by [`ModelFile::read`]) with the
/// runtime `choice` asks for. `lib` is an explicit LiteRT library path (see
/// [`resolve_litert_lib`]); `threads` is passed to the runtime. Returns the
/// runtime and a one-line reason saying which engine runs and why, e.g.
/// `auto: LiteRT loaded from /usr/lib/spotter/libLiteRt.so` or
/// `auto: fell back to builtin: LiteRT library /x: not found`.
///
/// `litert` with no usable library is an error; `auto` falls back to the
/// built-in runtime when LiteRT is missing, unloadable, or refuses the model
/// (logged as a warning), but not when LiteRT finds the model file not a
/// TFLite model, since no runtime could load it.
pub(crate) fn open_runtime_for(
    choice: RuntimeChoice,
    lib: Option<&Path>,
    file: &ModelFile,
    threads: usize,
) -> Result<(Box<dyn Runtime>, String), InferenceError> {
    match choice {
        RuntimeChoice::Builtin => {
            let rt = BuiltinRuntime::from_model_file(file, threads)?;
            Ok((
                Box::new(rt),
                "builtin: selected by configuration".to_string(),
            ))
        }
        RuntimeChoice::Litert => {
            let path = resolve_litert_lib(lib).ok_or_else(not_found_error)?;
            let rt = LiteRtRuntime::from_model_file(&path, file, threads)?;
            let reason = format!("litert: LiteRT loaded from {}", path.display());
            Ok((Box::new(rt), reason))
        }
        RuntimeChoice::Auto => {
            let why = match resolve_litert_lib(lib) {
                None => not_found_error(),
                Some(path) => match LiteRtRuntime::from_model_file(&path, file, threads) {
                    Ok(rt) => {
                        let reason = format!("auto: LiteRT loaded from {}", path.display());
                        return Ok((Box::new(rt), reason));
                    }
                    Err(e @ (InferenceError::Io { .. } | InferenceError::NotTflite { .. })) => {
                        return Err(e)
                    }
                    Err(e) => e,
                },
            };
            let reason = format!("auto: fell back to builtin: {why}");
            log::warn!(model = file.path().display().to_string().as_str(); "{reason}");
            let rt = BuiltinRuntime::from_model_file(file, threads)?;
            Ok((Box::new(rt), reason))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Catches a config file or CLI spelling ("litert", "Builtin") not parsing,
    // or serde and FromStr disagreeing on names.
    #[test]
    fn runtime_choice_parses_and_serializes_lowercase() {
        for (s, c) in [
            ("auto", RuntimeChoice::Auto),
            ("litert", RuntimeChoice::Litert),
            ("builtin", RuntimeChoice::Builtin),
        ] {
            assert_eq!(s.parse::<RuntimeChoice>().unwrap(), c);
            assert_eq!(s.to_uppercase().parse::<RuntimeChoice>().unwrap(), c);
            assert_eq!(c.to_string(), s);
            assert_eq!(serde_json::to_string(&c).unwrap(), format!("\"{s}\""));
            assert_eq!(
                serde_json::from_str::<RuntimeChoice>(&format!("\"{s}\"")).unwrap(),
                c
            );
        }
        let err = "tflite".parse::<RuntimeChoice>().unwrap_err();
        assert!(err.to_string().contains("tflite"), "{err}");
        assert!(serde_json::from_str::<RuntimeChoice>("\"xnnpack\"").is_err());
        assert_eq!(RuntimeChoice::default(), RuntimeChoice::Auto);
    }

    // Catches the precedence being wrong (env overriding the config file, a
    // missing explicit path being silently replaced by a default).
    #[test]
    fn resolve_prefers_explicit_then_env_then_existing_default() {
        let dir = tempfile::tempdir().unwrap();
        let present = dir.path().join("present.so");
        std::fs::write(&present, b"x").unwrap();
        let absent = dir.path().join("absent.so");
        let defaults = vec![absent.clone(), present.clone()];

        let explicit = Path::new("/nonexistent/explicit.so");
        assert_eq!(
            resolve_from(Some(explicit), Some("/env.so".into()), &defaults),
            Some(explicit.to_path_buf())
        );
        assert_eq!(
            resolve_from(None, Some("/env.so".into()), &defaults),
            Some(PathBuf::from("/env.so"))
        );
        assert_eq!(
            resolve_from(None, Some(OsString::new()), &defaults),
            Some(present.clone())
        );
        assert_eq!(resolve_from(None, None, &defaults), Some(present));
        assert_eq!(resolve_from(None, None, &[absent]), None);
    }

    // Catches the build-time default pointing at the wrong architecture's copy.
    #[test]
    fn default_paths_are_system_then_this_arch_cache() {
        let paths = default_litert_paths();
        assert_eq!(paths[0], PathBuf::from("/usr/lib/spotter/libLiteRt.so"));
        if cfg!(any(target_arch = "aarch64", target_arch = "x86_64")) {
            let dev = paths[1].to_str().unwrap();
            assert!(dev.starts_with(env!("CARGO_MANIFEST_DIR")), "{dev}");
            assert!(
                dev.ends_with(&format!(
                    "/.cache/litert/{}/libLiteRt.so",
                    std::env::consts::ARCH
                )),
                "{dev}"
            );
        }
    }
}
