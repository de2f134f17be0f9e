//! Model versions kept under `<state_dir>/models/`: install, list, activate,
//! roll back.
//!
//! Layout: `versions/<sha256>/model.tflite`, an optional `labels.txt` and a
//! `meta.json`; `active.json` names the active version and the history of
//! earlier ones. Every file is written to a temporary name, synced and renamed,
//! so a power cut leaves either the old or the new state, never half of one.
//! The daemon reads `active.json` when it (re)loads its model (start, SIGHUP);
//! when it names a version, that version overrides `model.path`/`model.labels`.
//! Swapping is atomic for frames: the inference thread loads and canary-checks
//! the new model completely before it replaces the old one between two frames.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Errors managing model versions; each names the path or version.
#[derive(Debug, thiserror::Error)]
pub enum ModelStoreError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: unreadable model index: {reason}")]
    Corrupt { path: String, reason: String },
    #[error("no installed model version matches `{0}`")]
    UnknownVersion(String),
    #[error("`{0}` matches more than one installed version; give more digits")]
    Ambiguous(String),
    #[error("no earlier version to roll back to")]
    NoHistory,
    #[error("model {path} refused: {reason}")]
    Refused { path: String, reason: String },
}

/// What is recorded about one installed version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionMeta {
    pub sha256: String,
    /// The file name it was installed from.
    pub original_name: String,
    pub installed_unix_s: u64,
    pub has_labels: bool,
    /// "classification" or "detection", as found by validation.
    pub kind: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct ActiveFile {
    version: u32,
    active: Option<String>,
    /// Earlier active versions, most recent last.
    history: Vec<String>,
}

/// The model file and labels of the active version.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ActiveModel {
    pub sha256: String,
    pub model: PathBuf,
    pub labels: Option<PathBuf>,
}

const HISTORY_MAX: usize = 16;

/// The model versions of one state directory.
#[derive(Debug, Clone)]
pub struct ModelStore {
    dir: PathBuf,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ModelStoreError + '_ {
    move |source| ModelStoreError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Write `bytes` to `path` atomically (see [`crate::core::fsutil::write_atomic`]).
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ModelStoreError> {
    crate::core::fsutil::write_atomic(path, bytes, 0o644).map_err(io_err(path))
}

impl ModelStore {
    pub fn new(state_dir: &Path) -> ModelStore {
        ModelStore {
            dir: state_dir.join("models"),
        }
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    fn versions(&self) -> PathBuf {
        self.dir.join("versions")
    }

    fn active_path(&self) -> PathBuf {
        self.dir.join("active.json")
    }

    fn read_active(&self) -> Result<ActiveFile, ModelStoreError> {
        let p = self.active_path();
        match std::fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| ModelStoreError::Corrupt {
                path: p.display().to_string(),
                reason: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ActiveFile {
                version: 1,
                ..Default::default()
            }),
            Err(e) => Err(ModelStoreError::Io {
                path: p.display().to_string(),
                source: e,
            }),
        }
    }

    fn write_active(&self, a: &ActiveFile) -> Result<(), ModelStoreError> {
        std::fs::create_dir_all(&self.dir).map_err(io_err(&self.dir))?;
        // Plain structs of strings serialize infallibly.
        let bytes = serde_json::to_vec_pretty(a).unwrap_or_default();
        write_atomic(&self.active_path(), &bytes)
    }

    /// Install a model (and labels) after `validate` accepted it; returns its
    /// metadata. `validate` loads the file and runs the canary, returning the
    /// model kind. Installing a version twice is harmless.
    pub fn install(
        &self,
        model: &Path,
        labels: Option<&Path>,
        validate: impl FnOnce(&Path, Option<&Path>) -> Result<String, String>,
    ) -> Result<VersionMeta, ModelStoreError> {
        let bytes = std::fs::read(model).map_err(io_err(model))?;
        let kind = validate(model, labels).map_err(|reason| ModelStoreError::Refused {
            path: model.display().to_string(),
            reason,
        })?;
        let sha = hex::encode(Sha256::digest(&bytes));
        let vdir = self.versions().join(&sha);
        std::fs::create_dir_all(&vdir).map_err(io_err(&vdir))?;
        write_atomic(&vdir.join("model.tflite"), &bytes)?;
        if let Some(l) = labels {
            let lb = std::fs::read(l).map_err(io_err(l))?;
            write_atomic(&vdir.join("labels.txt"), &lb)?;
        }
        let meta = VersionMeta {
            sha256: sha,
            original_name: model
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            installed_unix_s: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            has_labels: labels.is_some(),
            kind,
        };
        write_atomic(
            &vdir.join("meta.json"),
            &serde_json::to_vec_pretty(&meta).unwrap_or_default(),
        )?;
        Ok(meta)
    }

    /// Installed versions (oldest first) and whether each is active.
    pub(crate) fn list(&self) -> Result<Vec<(VersionMeta, bool)>, ModelStoreError> {
        let active = self.read_active()?.active;
        let vdir = self.versions();
        let entries = match std::fs::read_dir(&vdir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
            Err(e) => {
                return Err(ModelStoreError::Io {
                    path: vdir.display().to_string(),
                    source: e,
                })
            }
        };
        let mut out = Vec::new();
        for e in entries.flatten() {
            let meta_path = e.path().join("meta.json");
            // A version without metadata was interrupted mid-install: skip it.
            let Ok(b) = std::fs::read(&meta_path) else {
                continue;
            };
            let meta: VersionMeta =
                serde_json::from_slice(&b).map_err(|err| ModelStoreError::Corrupt {
                    path: meta_path.display().to_string(),
                    reason: err.to_string(),
                })?;
            let is_active = active.as_deref() == Some(meta.sha256.as_str());
            out.push((meta, is_active));
        }
        out.sort_by(|a, b| {
            a.0.installed_unix_s
                .cmp(&b.0.installed_unix_s)
                .then(a.0.sha256.cmp(&b.0.sha256))
        });
        Ok(out)
    }

    fn resolve(&self, prefix: &str) -> Result<VersionMeta, ModelStoreError> {
        let p = prefix.to_ascii_lowercase();
        let matches: Vec<VersionMeta> = self
            .list()?
            .into_iter()
            .map(|(m, _)| m)
            .filter(|m| !p.is_empty() && m.sha256.starts_with(&p))
            .collect();
        match matches.len() {
            0 => Err(ModelStoreError::UnknownVersion(prefix.to_string())),
            1 => Ok(matches.into_iter().next().expect("one match")),
            _ => Err(ModelStoreError::Ambiguous(prefix.to_string())),
        }
    }

    /// Make a version (by sha256 or a unique prefix) the active one.
    pub fn activate(&self, prefix: &str) -> Result<VersionMeta, ModelStoreError> {
        let meta = self.resolve(prefix)?;
        let mut a = self.read_active()?;
        if a.active.as_deref() == Some(meta.sha256.as_str()) {
            return Ok(meta);
        }
        if let Some(prev) = a.active.take() {
            a.history.push(prev);
            if a.history.len() > HISTORY_MAX {
                a.history.remove(0);
            }
        }
        a.active = Some(meta.sha256.clone());
        a.version = 1;
        self.write_active(&a)?;
        Ok(meta)
    }

    /// Return to the previously active version.
    pub(crate) fn rollback(&self) -> Result<VersionMeta, ModelStoreError> {
        let mut a = self.read_active()?;
        let prev = a.history.pop().ok_or(ModelStoreError::NoHistory)?;
        let meta = self.resolve(&prev)?;
        let from = a.active.replace(prev).unwrap_or_default();
        self.write_active(&a)?;
        log::info!(
            message_id = crate::core::ids::MODEL_ROLLED_BACK, spotter_model_sha256 = meta.sha256.as_str(), spotter_previous_model_sha256 = from.as_str();
            "model rolled back from {} to {} ({}); it serves once it passes its canary",
            if from.is_empty() { "none" } else { &from }, meta.sha256, meta.original_name
        );
        Ok(meta)
    }

    /// The active version's files, if a version is active.
    pub(crate) fn active(&self) -> Result<Option<ActiveModel>, ModelStoreError> {
        let Some(sha) = self.read_active()?.active else {
            return Ok(None);
        };
        let vdir = self.versions().join(&sha);
        let model = vdir.join("model.tflite");
        if !model.exists() {
            return Err(ModelStoreError::Corrupt {
                path: self.active_path().display().to_string(),
                reason: format!("active version {sha} has no model file"),
            });
        }
        let labels = Some(vdir.join("labels.txt")).filter(|p| p.exists());
        Ok(Some(ActiveModel {
            sha256: sha,
            model,
            labels,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(dir: &Path, name: &str, content: &[u8]) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, content).unwrap();
        p
    }

    fn ok(_: &Path, _: Option<&Path>) -> Result<String, String> {
        Ok("classification".into())
    }

    // Would catch activate/rollback losing track of versions or of history.
    #[test]
    fn install_activate_rollback() {
        let tmp = tempfile::tempdir().unwrap();
        let ms = ModelStore::new(tmp.path());
        assert_eq!(ms.active().unwrap(), None);
        let a = ms
            .install(&file(tmp.path(), "a.tflite", b"model-a"), None, ok)
            .unwrap();
        let b = ms
            .install(
                &file(tmp.path(), "b.tflite", b"model-b"),
                Some(&file(tmp.path(), "l.txt", b"x\ny\n")),
                ok,
            )
            .unwrap();
        assert_eq!(ms.list().unwrap().len(), 2);
        ms.activate(&a.sha256[..8]).unwrap();
        ms.activate(&b.sha256).unwrap();
        let act = ms.active().unwrap().unwrap();
        assert_eq!(act.sha256, b.sha256);
        assert_eq!(std::fs::read(&act.model).unwrap(), b"model-b");
        assert_eq!(std::fs::read(act.labels.unwrap()).unwrap(), b"x\ny\n");
        assert_eq!(ms.rollback().unwrap().sha256, a.sha256);
        assert_eq!(ms.active().unwrap().unwrap().sha256, a.sha256);
        assert!(matches!(ms.rollback(), Err(ModelStoreError::NoHistory)));
    }

    // Would catch a model that failed validation being installed anyway.
    #[test]
    fn refused_model_is_not_installed() {
        let tmp = tempfile::tempdir().unwrap();
        let ms = ModelStore::new(tmp.path());
        let err = ms
            .install(&file(tmp.path(), "bad.tflite", b"junk"), None, |_, _| {
                Err("not a TFLite model".into())
            })
            .unwrap_err();
        assert!(
            err.to_string().contains("bad.tflite") && err.to_string().contains("not a TFLite"),
            "{err}"
        );
        assert!(ms.list().unwrap().is_empty());
    }

    // Would catch a prefix silently picking one of several versions.
    #[test]
    fn ambiguous_and_unknown_prefixes_are_errors() {
        let tmp = tempfile::tempdir().unwrap();
        let ms = ModelStore::new(tmp.path());
        ms.install(&file(tmp.path(), "a", b"1"), None, ok).unwrap();
        ms.install(&file(tmp.path(), "b", b"2"), None, ok).unwrap();
        assert!(matches!(
            ms.activate(""),
            Err(ModelStoreError::UnknownVersion(_))
        ));
        assert!(matches!(
            ms.activate("zz"),
            Err(ModelStoreError::UnknownVersion(_))
        ));
        // sha256("1") and sha256("2") start 6b86… and d4735e…: one digit each is unique.
        assert!(ms.activate("6").is_ok());
    }

    // Would catch an interrupted install (no meta.json) showing up as a version.
    #[test]
    fn half_installed_version_is_ignored() {
        let tmp = tempfile::tempdir().unwrap();
        let ms = ModelStore::new(tmp.path());
        std::fs::create_dir_all(ms.dir().join("versions/abc")).unwrap();
        std::fs::write(ms.dir().join("versions/abc/model.tflite"), b"partial").unwrap();
        assert!(ms.list().unwrap().is_empty());
    }
}
