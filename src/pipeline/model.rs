//! Model loading: it owns turning model settings into a loaded,
//! canary-checked [`LoadedModel`] ([`load_model`]), the choice of which
//! settings to load when managed versions exist ([`effective_model`]), and
//! the mapping of configured runtime and fit onto the inference types.

use crate::config::{Fit, ModelSettings, RuntimeSetting};
use crate::inference::engine::{Engine, ModelOptions};
use crate::inference::modelfile::ModelFile;
use crate::inference::preprocess::{FitMode, Normalization};
use crate::inference::select::{open_runtime_for, RuntimeChoice};
use crate::inference::InferenceError;
use crate::modelstore::ModelStore;
use crate::state::ModelStatus;

/// A loaded, canary-checked model and its description.
pub struct LoadedModel {
    pub engine: Engine,
    pub status: ModelStatus,
}

fn fit_mode(f: Fit) -> FitMode {
    match f {
        Fit::Stretch => FitMode::Stretch,
        Fit::Crop => FitMode::Crop,
        Fit::Letterbox => FitMode::Letterbox,
    }
}

fn runtime_choice(r: RuntimeSetting) -> RuntimeChoice {
    match r {
        RuntimeSetting::Auto => RuntimeChoice::Auto,
        RuntimeSetting::Litert => RuntimeChoice::Litert,
        RuntimeSetting::Builtin => RuntimeChoice::Builtin,
    }
}

/// Read, load and canary-check the configured model.
pub fn load_model(m: &ModelSettings) -> Result<LoadedModel, InferenceError> {
    let file = ModelFile::read(&m.path)?;
    let (runtime, reason) = open_runtime_for(
        runtime_choice(m.runtime),
        m.litert_lib.as_deref(),
        &file,
        m.threads,
    )?;
    let opts = ModelOptions {
        path: m.path.clone(),
        labels: m.labels.clone(),
        threads: m.threads,
        top_k: m.top_k,
        min_score: m.min_score,
        fit: m.fit.map(fit_mode),
        pad_value: m.pad_value,
        normalization: match (m.input_mean, m.input_std) {
            (Some(mean), Some(std)) => Some(Normalization::uniform(mean, std)),
            _ => None,
        },
        rules: m.rules.clone(),
        max_pixels: m.max_pixels,
        jpeg_scaling: m.jpeg_scaling,
        roi: m.roi,
    };
    let mut engine = Engine::load(&opts, runtime, &file)?;
    engine.canary()?;
    // The runtime has packed the weights and run once: the file's pages
    // (mapped, and LiteRT's flatbuffer) can leave RSS; what it still reads
    // faults back in from the page cache (issue 21, peak RSS).
    file.release_pages();
    let info = engine.info();
    let status = ModelStatus {
        path: m.path.display().to_string(),
        sha256: info.sha256.clone(),
        kind: info.kind.to_string(),
        runtime: info.runtime.to_string(),
        runtime_reason: reason,
        input_shape: info.input.shape.clone(),
        input_dtype: format!("{:?}", info.input.dtype).to_lowercase(),
        labels: info.labels,
    };
    Ok(LoadedModel { engine, status })
}

/// The model settings to load: the active managed version (see
/// [`crate::modelstore`]) overrides the configured path and labels, and a
/// version installed from a signed bundle also its manifest's settings
/// (`min_score`, `top_k`, the detection rules; see
/// [`crate::modelstore::BundleSettings::apply`]).
pub fn effective_model(settings: &ModelSettings, models: Option<&ModelStore>) -> ModelSettings {
    let mut m = settings.clone();
    match models.map(|ms| ms.active()) {
        Some(Ok(Some(active))) => {
            m.path = active.model;
            m.labels = active.labels;
            if let Some(s) = &active.settings {
                s.apply(&mut m);
            }
        }
        Some(Err(e)) => {
            log::error!(spotter_error_kind = "model_store"; "ignoring managed model versions: {e}")
        }
        _ => {}
    }
    m
}
