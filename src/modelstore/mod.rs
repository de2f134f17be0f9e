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
//!
//! Signed bundles (issue 22, [`bundle`]): [`ModelStore::install_bundle`]
//! verifies a bundle against a [`Trust`] before anything is written, then
//! keeps its `manifest.json` and `manifest.sig` beside the model and records
//! the manifest ([`BundleInfo`]) in `meta.json`; the manifest's settings apply
//! while that version is active ([`ActiveModel::settings`]). A refused bundle
//! leaves the store as it was and logs `MODEL_BUNDLE_REFUSED`.

pub mod bundle;

pub use bundle::{BundleError, BundleInfo, BundleSettings, Trust};

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
    /// A model bundle was refused before anything was installed: unsigned,
    /// wrongly signed, SHA-256 mismatch, for a newer Spotter, malformed.
    #[error("model bundle {path} refused: {reason}")]
    BundleRefused { path: String, reason: String },
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
    /// The manifest, when it was installed from a bundle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundle: Option<BundleInfo>,
}

impl VersionMeta {
    /// A version `sha256` installed now from the file `from`.
    fn now(
        sha256: String,
        from: &Path,
        has_labels: bool,
        kind: String,
        bundle: Option<BundleInfo>,
    ) -> VersionMeta {
        VersionMeta {
            sha256,
            original_name: from
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            installed_unix_s: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            has_labels,
            kind,
            bundle,
        }
    }
}

/// Write `meta` as `<vdir>/meta.json` (the last step of an install) and
/// return it.
fn write_meta(vdir: &Path, meta: VersionMeta) -> Result<VersionMeta, ModelStoreError> {
    // Plain strings, numbers and a map: encoding cannot fail.
    let json = serde_json::to_vec_pretty(&meta).unwrap_or_default();
    write_atomic(&vdir.join("meta.json"), &json)?;
    Ok(meta)
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
    /// The bundle's settings, overriding `[model]`'s (see
    /// [`BundleSettings::apply`]); `None` for a bare model.
    pub settings: Option<BundleSettings>,
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
        write_meta(
            &vdir,
            VersionMeta::now(sha, model, labels.is_some(), kind, None),
        )
    }

    /// Install a model bundle (see [`bundle`]) after verifying it against
    /// `trust` and after `validate` (as for [`ModelStore::install`]) accepted
    /// its model; returns its metadata. A file that is not a bundle (a bare
    /// `.tflite`) is installed as [`ModelStore::install`] does only when
    /// `trust` allows unsigned models. Nothing is written before every
    /// check passed; a refusal is logged with `MODEL_BUNDLE_REFUSED`.
    pub fn install_bundle(
        &self,
        bundle: &Path,
        trust: &Trust,
        validate: impl FnOnce(&Path, Option<&Path>) -> Result<String, String>,
    ) -> Result<VersionMeta, ModelStoreError> {
        let r = self.install_bundle_checked(bundle, trust, validate);
        if let Err(ModelStoreError::BundleRefused { path, reason }) = &r {
            log::warn!(
                message_id = crate::core::ids::MODEL_BUNDLE_REFUSED, spotter_bundle_path = path.as_str(), spotter_reason = reason.as_str();
                "model bundle {path} refused: {reason}; nothing was installed"
            );
        }
        r
    }

    fn install_bundle_checked(
        &self,
        path: &Path,
        trust: &Trust,
        validate: impl FnOnce(&Path, Option<&Path>) -> Result<String, String>,
    ) -> Result<VersionMeta, ModelStoreError> {
        let refused = |reason: String| ModelStoreError::BundleRefused {
            path: path.display().to_string(),
            reason,
        };
        let mut f = std::fs::File::open(path).map_err(io_err(path))?;
        let mut head = [0u8; 4];
        let n = std::io::Read::read(&mut f, &mut head).map_err(io_err(path))?;
        if !bundle::is_bundle(&head[..n]) {
            if !trust.allows_unsigned() {
                return Err(refused(
                    "not a signed model bundle (a bare model is unsigned), and unsigned models are not accepted here".into(),
                ));
            }
            return self.install(path, None, validate);
        }
        std::io::Seek::rewind(&mut f).map_err(io_err(path))?;
        let opened = bundle::open(std::io::BufReader::new(f), trust).map_err(|e| match e {
            BundleError::Refused(r) => refused(r),
            other => refused(other.to_string()),
        })?;
        std::fs::create_dir_all(&self.dir).map_err(io_err(&self.dir))?;
        // The canary reads the model from a file: a temporary directory on
        // the store's filesystem, removed when dropped.
        let tmp = tempfile::Builder::new()
            .prefix(".bundle-")
            .tempdir_in(&self.dir)
            .map_err(io_err(&self.dir))?;
        let tmp_model = tmp.path().join(bundle::MODEL);
        std::fs::write(&tmp_model, &opened.model).map_err(io_err(&tmp_model))?;
        let tmp_labels = match &opened.labels {
            Some(l) => {
                let p = tmp.path().join(bundle::LABELS);
                std::fs::write(&p, l).map_err(io_err(&p))?;
                Some(p)
            }
            None => None,
        };
        let kind = validate(&tmp_model, tmp_labels.as_deref()).map_err(|reason| {
            ModelStoreError::Refused {
                path: path.display().to_string(),
                reason,
            }
        })?;
        let sha = hex::encode(Sha256::digest(&opened.model));
        let vdir = self.versions().join(&sha);
        std::fs::create_dir_all(&vdir).map_err(io_err(&vdir))?;
        // meta.json is removed first and written last: a cut in between
        // leaves a version `list` skips, never one with mixed files.
        let meta_path = vdir.join("meta.json");
        match std::fs::remove_file(&meta_path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(io_err(&meta_path)(e))
            }
            _ => {}
        }
        write_atomic(&vdir.join("model.tflite"), &opened.model)?;
        let labels_path = vdir.join("labels.txt");
        match &opened.labels {
            Some(l) => write_atomic(&labels_path, l)?,
            None => match std::fs::remove_file(&labels_path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(io_err(&labels_path)(e))
                }
                _ => {}
            },
        }
        write_atomic(&vdir.join(bundle::MANIFEST), &opened.manifest_bytes)?;
        let sig_path = vdir.join(bundle::SIGNATURE);
        match &opened.signature {
            Some(s) => write_atomic(&sig_path, s)?,
            None => {
                let _ = std::fs::remove_file(&sig_path);
            }
        }
        let meta = VersionMeta::now(
            sha,
            path,
            opened.labels.is_some(),
            kind,
            Some(opened.info()),
        );
        write_meta(&vdir, meta)
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
        match self.read_active()?.active {
            Some(sha) => self.version(&sha).map(Some),
            None => Ok(None),
        }
    }

    /// The files and bundle settings of the installed version `sha` (whole
    /// SHA-256), active or not: what loading it takes (the active model,
    /// or a shadow candidate).
    pub(crate) fn version(&self, sha: &str) -> Result<ActiveModel, ModelStoreError> {
        let vdir = self.versions().join(sha);
        let model = vdir.join("model.tflite");
        if !model.exists() {
            return Err(ModelStoreError::Corrupt {
                path: vdir.display().to_string(),
                reason: format!("version {sha} has no model file"),
            });
        }
        let labels = Some(vdir.join("labels.txt")).filter(|p| p.exists());
        let meta_path = vdir.join("meta.json");
        let settings = match std::fs::read(&meta_path) {
            Ok(b) => serde_json::from_slice::<VersionMeta>(&b)
                .map_err(|e| ModelStoreError::Corrupt {
                    path: meta_path.display().to_string(),
                    reason: e.to_string(),
                })?
                .bundle
                .map(|b| b.settings),
            Err(e) => return Err(io_err(&meta_path)(e)),
        };
        Ok(ActiveModel {
            sha256: sha.to_string(),
            model,
            labels,
            settings,
        })
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

    /// Every file under the store with its bytes: "unchanged" means equal.
    fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
        let mut out = Vec::new();
        let mut todo = vec![dir.to_path_buf()];
        while let Some(d) = todo.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                let p = e.path();
                if p.is_dir() {
                    todo.push(p.clone());
                    out.push((p, vec![]));
                } else {
                    out.push((p.clone(), std::fs::read(&p).unwrap()));
                }
            }
        }
        out.sort();
        out
    }

    // Would catch install_bundle writing anything (a version, a changed
    // active model, a leftover temporary) before every check passed, or a
    // refusal reported as another error kind.
    #[test]
    fn refused_bundles_leave_the_store_unchanged() {
        use bundle::tests::{bundle as make, key, members, spec, zip_of};
        let tmp = tempfile::tempdir().unwrap();
        let ms = ModelStore::new(tmp.path());
        let first = ms
            .install(&file(tmp.path(), "a.tflite", b"model-a"), None, ok)
            .unwrap();
        ms.activate(&first.sha256).unwrap();
        let k = key(1);
        let strict = Trust::new(vec![k.verifying_key()], false);
        let good = make(&spec(b"model-b", Some(b"l\n")), Some(&k));
        let m = members(&good);
        let mut model2 = m[2].1.clone();
        model2[0] ^= 1;
        let mut man2 = m[0].1.clone();
        man2[5] ^= 1;
        let mut newer = spec(b"model-b", None);
        newer.min_spotter_version = Some("999.0".into());
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            (
                "other key",
                make(&spec(b"model-b", None), Some(&key(2))),
                "bad signature",
            ),
            (
                "changed model",
                zip_of(&[
                    (bundle::MANIFEST, &m[0].1),
                    (bundle::SIGNATURE, &m[1].1),
                    (bundle::MODEL, &model2),
                    (bundle::LABELS, &m[3].1),
                ]),
                "SHA-256",
            ),
            (
                "changed manifest",
                zip_of(&[
                    (bundle::MANIFEST, &man2),
                    (bundle::SIGNATURE, &m[1].1),
                    (bundle::MODEL, &m[2].1),
                    (bundle::LABELS, &m[3].1),
                ]),
                "bad signature",
            ),
            ("newer spotter", make(&newer, Some(&k)), "999.0"),
            ("unsigned", make(&spec(b"model-b", None), None), "unsigned"),
            (
                "bare model",
                b"\x1c\0\0\0TFL3 bare".to_vec(),
                "not a signed model bundle",
            ),
            ("truncated", good[..good.len() - 30].to_vec(), "malformed"),
            (
                "garbage",
                b"PK\x03\x04 and then nothing a zip needs".to_vec(),
                "malformed",
            ),
        ];
        let before = snapshot(ms.dir());
        for (what, bytes, why) in cases {
            let p = file(tmp.path(), "b.spotter", &bytes);
            let err = ms
                .install_bundle(&p, &strict, |_, _| {
                    panic!("{what}: validated a refused bundle")
                })
                .unwrap_err();
            assert!(
                matches!(&err, ModelStoreError::BundleRefused { reason, .. } if reason.contains(why)),
                "{what}: {err}"
            );
            assert_eq!(snapshot(ms.dir()), before, "{what} changed the store");
        }
        assert_eq!(ms.active().unwrap().unwrap().sha256, first.sha256);
        // A canary failure of a well-signed bundle changes nothing either.
        let p = file(tmp.path(), "b.spotter", &good);
        let err = ms
            .install_bundle(&p, &strict, |_, _| Err("canary failed".into()))
            .unwrap_err();
        assert!(matches!(err, ModelStoreError::Refused { .. }), "{err}");
        assert_eq!(snapshot(ms.dir()), before);
    }

    // Would catch a bundle's manifest, labels or settings not reaching the
    // installed version, or a bare model bypassing the unsigned policy.
    #[test]
    fn install_bundle_records_manifest_and_settings() {
        use bundle::tests::{bundle as make, key, spec};
        let tmp = tempfile::tempdir().unwrap();
        let ms = ModelStore::new(tmp.path());
        let k = key(1);
        let trust = Trust::new(vec![k.verifying_key()], false);
        let p = file(
            tmp.path(),
            "birds.spotter",
            &make(&spec(b"model-b", Some(b"l\n")), Some(&k)),
        );
        let mut seen = None;
        let meta = ms
            .install_bundle(&p, &trust, |m, l| {
                seen = Some((
                    std::fs::read(m).unwrap(),
                    l.map(|l| std::fs::read(l).unwrap()),
                ));
                Ok("classification".into())
            })
            .unwrap();
        assert_eq!(seen, Some((b"model-b".to_vec(), Some(b"l\n".to_vec()))));
        let info = meta.bundle.clone().unwrap();
        assert_eq!(
            (info.name.as_str(), info.version.as_str()),
            ("birds", "1.2.0")
        );
        assert_eq!(info.signer, Some(bundle::fingerprint(&k.verifying_key())));
        assert!(meta.has_labels);
        ms.activate(&meta.sha256).unwrap();
        let act = ms.active().unwrap().unwrap();
        assert_eq!(std::fs::read(&act.model).unwrap(), b"model-b");
        assert_eq!(act.settings.unwrap().min_score, Some(0.5));
        assert_eq!(ms.list().unwrap()[0].0, meta);
        // No leftover temporary directory.
        assert!(std::fs::read_dir(ms.dir())
            .unwrap()
            .flatten()
            .all(|e| !e.file_name().to_string_lossy().starts_with('.')));
        // A bare model: only when unsigned models are allowed.
        let bare = file(tmp.path(), "c.tflite", b"bare-model");
        assert!(ms.install_bundle(&bare, &trust, ok).is_err());
        let lax = Trust::new(vec![], true);
        let m = ms.install_bundle(&bare, &lax, ok).unwrap();
        assert_eq!(m.bundle, None);
        ms.activate(&m.sha256).unwrap();
        assert_eq!(ms.active().unwrap().unwrap().settings, None);
    }
}
