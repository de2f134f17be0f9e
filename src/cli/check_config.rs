//! `spotter check-config`: validate a configuration (with its drop-ins),
//! check that the model and labels it names load, and print the effective
//! settings.
//!
//! The model check is the daemon's own loader ([`crate::pipeline::load_model`]:
//! the flatbuffer read, the runtime chosen as `model.runtime` says, with
//! `auto` falling back to the built-in runtime, the labels decoded and
//! matched to the outputs, one canary inference), so check-config accepts
//! exactly the models the daemon would serve. The daemon itself stays up and
//! not ready on a bad model; check-config exits [`EXIT_CONFIG`] naming the
//! key. `--syntax-only` skips the files (a config checked on another machine,
//! or in a package's staging tree).

use std::io::Write;
use std::path::Path;

use super::{load_settings, Failure, EXIT_CONFIG};
use crate::config::ModelSettings;
use crate::inference::InferenceError;
use crate::logging;

pub(super) fn check_config(file: &Path, syntax_only: bool) -> Result<(), Failure> {
    let _ = logging::init(log::LevelFilter::Warn);
    let s = load_settings(file)?;
    if !syntax_only {
        check_model(&s.model).map_err(|reason| Failure {
            error: anyhow::anyhow!("invalid configuration: {reason}"),
            code: EXIT_CONFIG,
        })?;
    }
    let mut out = std::io::stdout().lock();
    let files: Vec<String> = s.files.iter().map(|p| p.display().to_string()).collect();
    let _ = writeln!(out, "# valid; read: {}", files.join(", "));
    let _ = write!(out, "{}", s.to_toml());
    Ok(())
}

/// Load `m` as the daemon would; Err: which key is wrong and why.
pub(crate) fn check_model(m: &ModelSettings) -> Result<(), String> {
    match crate::pipeline::load_model(m) {
        Ok(_) => Ok(()),
        Err(e) => Err(format!("`{}`: {e}", model_key(&e))),
    }
}

/// The configuration key a model-loading error is about.
fn model_key(e: &InferenceError) -> &'static str {
    match e {
        InferenceError::Labels { .. } => "model.labels",
        InferenceError::LiteRtUnavailable { .. } => "model.litert_lib",
        _ => "model.path",
    }
}
