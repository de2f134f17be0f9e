//! Signed model bundles (issue 22): the container, its manifest, the model's
//! own settings, Ed25519 signing and verification, and the [`Trust`] a device
//! checks a bundle against.
//!
//! A bundle is a ZIP archive (the `zip` crate the model metadata reader
//! already uses; a tar would need two more crates) with exactly these
//! members, in this order, stored uncompressed:
//!
//! | member | what |
//! |---|---|
//! | `manifest.json` | [`Manifest`]: name, version, SHA-256 of the model and of the labels, the model's settings, the minimum Spotter version |
//! | `manifest.sig` | 64 bytes: the Ed25519 signature over the exact bytes of `manifest.json` (absent: an unsigned bundle) |
//! | `model.tflite` | the model |
//! | `labels.txt` | the labels, one per line (optional) |
//!
//! Only the manifest is signed; it pins the model and labels by SHA-256, so
//! changing any byte of any member is caught. A bundle starts with the ZIP
//! local-header magic `PK\x03\x04`, a `.tflite` with `TFL3` at offset 4
//! ([`is_bundle`]); a `.tflite` with embedded metadata also contains a ZIP,
//! but at its end, so the two are never confused.
//!
//! Keys are Ed25519 in PKCS#8 (private) and SPKI (public), PEM or DER, as
//! `openssl genpkey -algorithm ed25519` / `openssl pkey -pubout` and
//! `spotter model keygen` write them. A key is named by its fingerprint: the
//! first 16 bytes of the SHA-256 of its 32 raw bytes, in hex.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Seek, Write};
use std::path::Path;

use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::signing::SigningSettings;
use crate::config::ModelSettings;

/// The manifest member.
pub const MANIFEST: &str = "manifest.json";
/// The signature member.
pub const SIGNATURE: &str = "manifest.sig";
/// The model member.
pub const MODEL: &str = "model.tflite";
/// The labels member.
pub const LABELS: &str = "labels.txt";
/// The manifest format this Spotter writes and reads.
pub const FORMAT: u32 = 1;

const MAX_MANIFEST_BYTES: u64 = 64 * 1024;
const MAX_LABELS_BYTES: u64 = 4 * 1024 * 1024;
/// Largest model member accepted (well above any model a Pi-class board runs).
pub const MAX_MODEL_BYTES: u64 = 1024 * 1024 * 1024;

/// Why a bundle was refused, or a key could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// The bundle is refused; the reason says why.
    #[error("{0}")]
    Refused(String),
    #[error("{path}: {reason}")]
    Key { path: String, reason: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

fn refused(reason: impl Into<String>) -> BundleError {
    BundleError::Refused(reason.into())
}

/// The model's own settings carried by a bundle: when its version is active
/// each key given overrides the `[model]` key of the same name (a given
/// `min_score_by_label` replaces the whole table; a given `label_filter` or
/// `label_deny` replaces both lists). Same names, ranges and meaning as in
/// `[model]`; label names are matched ignoring case.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_score: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_score_by_label: Option<BTreeMap<String, f32>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_filter: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_deny: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_box_area: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_detections: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iou_threshold: Option<f32>,
}

impl BundleSettings {
    /// Read settings from TOML: the keys at the top level or under `[model]`
    /// (so a `[model]` excerpt of a config file works).
    pub fn from_toml(text: &str) -> Result<BundleSettings, String> {
        let v: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
        let table = match v.get("model") {
            Some(toml::Value::Table(t)) if v.len() == 1 => t.clone(),
            _ => v,
        };
        let s: BundleSettings = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| e.to_string())?;
        s.validate()?;
        Ok(s)
    }

    /// The same ranges as `[model]`; the reason names the key.
    pub fn validate(&self) -> Result<(), String> {
        let unit = |v: Option<f32>, key: &str| match v {
            Some(v) if !(0.0..=1.0).contains(&v) => {
                Err(format!("settings.{key} must be between 0.0 and 1.0"))
            }
            _ => Ok(()),
        };
        unit(self.min_score, "min_score")?;
        unit(self.min_box_area, "min_box_area")?;
        if let Some(k) = self.top_k {
            if !(1..=100).contains(&k) {
                return Err("settings.top_k must be between 1 and 100".into());
            }
        }
        if let Some(m) = self.max_detections {
            if !(1..=10_000).contains(&m) {
                return Err("settings.max_detections must be between 1 and 10000".into());
            }
        }
        if let Some(i) = self.iou_threshold {
            if !(i > 0.0 && i <= 1.0) {
                return Err("settings.iou_threshold must be > 0.0 and at most 1.0".into());
            }
        }
        let mut lower = BTreeSet::new();
        for (label, score) in self.min_score_by_label.iter().flatten() {
            if label.trim().is_empty() || !lower.insert(label.to_lowercase()) {
                return Err(format!(
                    "settings.min_score_by_label: `{label}` is empty or repeated (labels match ignoring case)"
                ));
            }
            unit(Some(*score), &format!("min_score_by_label.{label}"))?;
        }
        for (key, list) in [
            ("label_filter", &self.label_filter),
            ("label_deny", &self.label_deny),
        ] {
            if list.iter().flatten().any(|l| l.trim().is_empty()) {
                return Err(format!("settings.{key}: labels must not be empty"));
            }
        }
        if self.label_filter.as_ref().is_some_and(|v| !v.is_empty())
            && self.label_deny.as_ref().is_some_and(|v| !v.is_empty())
        {
            return Err("settings.label_filter and settings.label_deny cannot both be set".into());
        }
        Ok(())
    }

    /// Override `m`'s keys with the ones given here.
    pub fn apply(&self, m: &mut ModelSettings) {
        let lower = |v: &Vec<String>| v.iter().map(|l| l.to_lowercase()).collect::<Vec<_>>();
        if let Some(s) = self.min_score {
            m.min_score = Some(s);
        }
        if let Some(k) = self.top_k {
            m.top_k = k;
        }
        if let Some(t) = &self.min_score_by_label {
            m.rules.min_score_by_label = t.iter().map(|(k, v)| (k.to_lowercase(), *v)).collect();
        }
        if self.label_filter.is_some() || self.label_deny.is_some() {
            m.rules.allow = self.label_filter.as_ref().map(lower).unwrap_or_default();
            m.rules.deny = self.label_deny.as_ref().map(lower).unwrap_or_default();
        }
        if let Some(a) = self.min_box_area {
            m.rules.min_box_area = a;
        }
        if let Some(d) = self.max_detections {
            m.rules.max_detections = d;
        }
        if let Some(i) = self.iou_threshold {
            m.rules.iou_threshold = i;
        }
    }

    pub fn is_empty(&self) -> bool {
        *self == BundleSettings::default()
    }
}

/// `manifest.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`FORMAT`].
    pub format: u32,
    pub name: String,
    pub version: String,
    /// SHA-256 of `model.tflite`, lower-case hex.
    pub model_sha256: String,
    /// SHA-256 of `labels.txt`; absent when the bundle has no labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels_sha256: Option<String>,
    #[serde(default)]
    pub settings: BundleSettings,
    /// The oldest Spotter version that may install it (`X.Y.Z`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_spotter_version: Option<String>,
}

/// What an installed version records about the bundle it came from (shown
/// in `GET /api/v1/model` and `spotter model list`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BundleInfo {
    pub name: String,
    pub version: String,
    /// The fingerprint of the trusted key that signed it; `None`: unsigned
    /// (accepted because unsigned models were allowed).
    pub signer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_spotter_version: Option<String>,
    #[serde(default, skip_serializing_if = "BundleSettings::is_empty")]
    pub settings: BundleSettings,
}

/// The keys a bundle must be signed by, and whether an unsigned model (a
/// bare `.tflite` or a bundle without `manifest.sig`) is accepted.
#[derive(Debug, Clone)]
pub struct Trust {
    keys: Vec<(VerifyingKey, String)>,
    allow_unsigned: bool,
}

impl Trust {
    /// The keys of `[signing] trusted_keys`, read now; `allow_unsigned`:
    /// the caller's policy (the local API and CLI pass
    /// `signing.allow_unsigned_local`, a remote rollout `false`).
    pub fn from_settings(s: &SigningSettings, allow_unsigned: bool) -> Result<Trust, BundleError> {
        let keys = s
            .trusted_keys
            .iter()
            .map(|p| read_public_key(p))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Trust::new(keys, allow_unsigned))
    }

    pub fn new(keys: Vec<VerifyingKey>, allow_unsigned: bool) -> Trust {
        Trust {
            keys: keys.into_iter().map(|k| (k, fingerprint(&k))).collect(),
            allow_unsigned,
        }
    }

    pub fn allows_unsigned(&self) -> bool {
        self.allow_unsigned
    }

    /// The fingerprint of the trusted key whose signature `sig` is over
    /// `manifest`.
    fn signer(&self, manifest: &[u8], sig: &Signature) -> Result<String, BundleError> {
        if self.keys.is_empty() {
            return Err(refused(
                "signed, but no trusted keys are configured ([signing] trusted_keys)",
            ));
        }
        self.keys
            .iter()
            .find(|(k, _)| k.verify_strict(manifest, sig).is_ok())
            .map(|(_, f)| f.clone())
            .ok_or_else(|| {
                refused(format!(
                    "bad signature: manifest.sig is not a signature of manifest.json by any of the {} trusted key(s)",
                    self.keys.len()
                ))
            })
    }
}

/// A key's fingerprint (see the module doc).
pub fn fingerprint(k: &VerifyingKey) -> String {
    hex::encode(&Sha256::digest(k.as_bytes())[..16])
}

fn read_key_file(path: &Path) -> Result<Vec<u8>, BundleError> {
    std::fs::read(path).map_err(|source| BundleError::Io {
        path: path.display().to_string(),
        source,
    })
}

fn key_err(path: &Path, what: &str, e: impl std::fmt::Display) -> BundleError {
    BundleError::Key {
        path: path.display().to_string(),
        reason: format!("not an Ed25519 {what} key (PEM or DER): {e}"),
    }
}

/// An Ed25519 public key (SPKI, PEM or DER).
pub fn read_public_key(path: &Path) -> Result<VerifyingKey, BundleError> {
    let b = read_key_file(path)?;
    match std::str::from_utf8(&b) {
        Ok(t) if t.contains("-----BEGIN") => VerifyingKey::from_public_key_pem(t.trim()),
        _ => VerifyingKey::from_public_key_der(&b),
    }
    .map_err(|e| key_err(path, "public", e))
}

/// An Ed25519 private key (PKCS#8, PEM or DER).
pub fn read_private_key(path: &Path) -> Result<SigningKey, BundleError> {
    let b = read_key_file(path)?;
    match std::str::from_utf8(&b) {
        Ok(t) if t.contains("-----BEGIN") => SigningKey::from_pkcs8_pem(t.trim()),
        _ => SigningKey::from_pkcs8_der(&b),
    }
    .map_err(|e| key_err(path, "private", e))
}

/// Whether `head` (the first bytes of a file) starts a bundle.
pub fn is_bundle(head: &[u8]) -> bool {
    head.starts_with(b"PK\x03\x04")
}

/// What goes into a bundle.
pub struct BundleSpec<'a> {
    pub name: &'a str,
    pub version: &'a str,
    pub model: &'a [u8],
    pub labels: Option<&'a [u8]>,
    pub settings: BundleSettings,
    pub min_spotter_version: Option<String>,
}

fn sha_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// Write a bundle of `spec` to `out`, signed with `key` (`None`: unsigned,
/// for tests and `allow_unsigned_local` devices).
pub fn write_bundle<W: Write + Seek>(
    out: W,
    spec: &BundleSpec<'_>,
    key: Option<&SigningKey>,
) -> Result<Manifest, BundleError> {
    spec.settings.validate().map_err(refused)?;
    if let Some(v) = &spec.min_spotter_version {
        parse_version(v).map_err(refused)?;
    }
    if spec.name.trim().is_empty() || spec.version.trim().is_empty() {
        return Err(refused("name and version must not be empty"));
    }
    let manifest = Manifest {
        format: FORMAT,
        name: spec.name.to_string(),
        version: spec.version.to_string(),
        model_sha256: sha_hex(spec.model),
        labels_sha256: spec.labels.map(sha_hex),
        settings: spec.settings.clone(),
        min_spotter_version: spec.min_spotter_version.clone(),
    };
    // Plain strings, numbers and maps serialize infallibly.
    let bytes = serde_json::to_vec_pretty(&manifest).unwrap_or_default();
    let mut z = zip::ZipWriter::new(out);
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .large_file(spec.model.len() as u64 >= u32::MAX as u64);
    let mut put = |name: &str, data: &[u8]| -> Result<(), BundleError> {
        let io = |e: std::io::Error| BundleError::Io {
            path: name.to_string(),
            source: e,
        };
        z.start_file(name, opts).map_err(|e| io(e.into()))?;
        z.write_all(data).map_err(io)
    };
    put(MANIFEST, &bytes)?;
    if let Some(k) = key {
        put(SIGNATURE, &k.sign(&bytes).to_bytes())?;
    }
    put(MODEL, spec.model)?;
    if let Some(l) = spec.labels {
        put(LABELS, l)?;
    }
    z.finish().map_err(|e| BundleError::Io {
        path: "bundle".into(),
        source: e.into(),
    })?;
    Ok(manifest)
}

/// A verified bundle's contents.
#[derive(Debug)]
pub struct Opened {
    pub manifest: Manifest,
    pub manifest_bytes: Vec<u8>,
    pub signature: Option<Vec<u8>>,
    /// The signer's fingerprint; `None`: unsigned (and allowed).
    pub signer: Option<String>,
    pub model: Vec<u8>,
    pub labels: Option<Vec<u8>>,
}

impl Opened {
    pub fn info(&self) -> BundleInfo {
        BundleInfo {
            name: self.manifest.name.clone(),
            version: self.manifest.version.clone(),
            signer: self.signer.clone(),
            min_spotter_version: self.manifest.min_spotter_version.clone(),
            settings: self.manifest.settings.clone(),
        }
    }
}

fn member<R: Read + Seek>(
    z: &mut zip::ZipArchive<R>,
    name: &str,
    max: u64,
) -> Result<Option<Vec<u8>>, BundleError> {
    let mut f = match z.by_name(name) {
        Ok(f) => f,
        Err(zip::result::ZipError::FileNotFound) => return Ok(None),
        Err(e) => return Err(refused(format!("malformed bundle: {name}: {e}"))),
    };
    if f.size() > max {
        return Err(refused(format!(
            "malformed bundle: {name} is {} bytes, more than {max}",
            f.size()
        )));
    }
    let mut out = Vec::with_capacity(f.size() as usize);
    (&mut f)
        .take(max + 1)
        .read_to_end(&mut out)
        .map_err(|e| refused(format!("malformed bundle: {name}: {e}")))?;
    if out.len() as u64 > max {
        return Err(refused(format!(
            "malformed bundle: {name} is more than {max} bytes"
        )));
    }
    Ok(Some(out))
}

/// `X.Y.Z` (a `-pre` suffix is ignored) as numbers.
fn parse_version(v: &str) -> Result<(u64, u64, u64), String> {
    let core = v.split(['-', '+']).next().unwrap_or("");
    let parts: Vec<&str> = core.split('.').collect();
    let num = |i: usize| -> Result<u64, String> {
        parts
            .get(i)
            .map_or(Ok(0), |p| p.parse::<u64>())
            .map_err(|_| format!("min_spotter_version `{v}` is not a version (X.Y.Z)"))
    };
    if parts.is_empty() || parts.len() > 3 {
        return Err(format!(
            "min_spotter_version `{v}` is not a version (X.Y.Z)"
        ));
    }
    Ok((num(0)?, num(1)?, num(2)?))
}

/// Check that this Spotter (`running`, e.g. `CARGO_PKG_VERSION`) is at
/// least `min`.
pub fn check_min_version(min: &str, running: &str) -> Result<(), BundleError> {
    let want = parse_version(min).map_err(refused)?;
    let have = parse_version(running).map_err(refused)?;
    if have < want {
        return Err(refused(format!(
            "the bundle needs Spotter {min} or newer; this is {running}"
        )));
    }
    Ok(())
}

/// Open and verify a bundle: members, signature (against `trust`), manifest,
/// Spotter version, SHA-256 of the model and labels, settings. Reads
/// everything into memory; writes nothing.
pub fn open<R: Read + Seek>(reader: R, trust: &Trust) -> Result<Opened, BundleError> {
    let mut z = zip::ZipArchive::new(reader)
        .map_err(|e| refused(format!("malformed bundle: not a readable ZIP archive: {e}")))?;
    let mut seen = BTreeSet::new();
    for name in z.file_names() {
        if ![MANIFEST, SIGNATURE, MODEL, LABELS].contains(&name) || !seen.insert(name) {
            return Err(refused(format!(
                "malformed bundle: unexpected or repeated member `{name}`"
            )));
        }
    }
    let manifest_bytes = member(&mut z, MANIFEST, MAX_MANIFEST_BYTES)?
        .ok_or_else(|| refused("malformed bundle: no manifest.json"))?;
    let signature = member(&mut z, SIGNATURE, 64)?;
    let signer = match &signature {
        Some(s) => {
            let sig = Signature::from_slice(s).map_err(|_| {
                refused("bad signature: manifest.sig is not a 64-byte Ed25519 signature")
            })?;
            Some(trust.signer(&manifest_bytes, &sig)?)
        }
        None if trust.allow_unsigned => None,
        None => {
            return Err(refused(
                "unsigned bundle (no manifest.sig), and unsigned models are not accepted here",
            ))
        }
    };
    // Only signed (or allowed unsigned) bytes are parsed.
    let raw: serde_json::Value = serde_json::from_slice(&manifest_bytes)
        .map_err(|e| refused(format!("malformed manifest.json: {e}")))?;
    if let Some(min) = raw.get("min_spotter_version").and_then(|v| v.as_str()) {
        // Before the rest: a newer format says so rather than "malformed".
        check_min_version(min, env!("CARGO_PKG_VERSION"))?;
    }
    let manifest: Manifest = serde_json::from_value(raw)
        .map_err(|e| refused(format!("malformed manifest.json: {e}")))?;
    if manifest.format != FORMAT {
        return Err(refused(format!(
            "manifest.json format {} is not supported (this Spotter reads {FORMAT})",
            manifest.format
        )));
    }
    manifest
        .settings
        .validate()
        .map_err(|e| refused(format!("manifest.json: {e}")))?;
    let model = member(&mut z, MODEL, MAX_MODEL_BYTES)?
        .ok_or_else(|| refused("malformed bundle: no model.tflite"))?;
    let got = sha_hex(&model);
    if !got.eq_ignore_ascii_case(&manifest.model_sha256) {
        return Err(refused(format!(
            "model.tflite has SHA-256 {got}, the manifest says {}",
            manifest.model_sha256
        )));
    }
    let labels = member(&mut z, LABELS, MAX_LABELS_BYTES)?;
    match (&labels, &manifest.labels_sha256) {
        (Some(l), Some(want)) => {
            let got = sha_hex(l);
            if !got.eq_ignore_ascii_case(want) {
                return Err(refused(format!(
                    "labels.txt has SHA-256 {got}, the manifest says {want}"
                )));
            }
        }
        (None, None) => {}
        (Some(_), None) => return Err(refused("labels.txt is not in the manifest")),
        (None, Some(_)) => {
            return Err(refused(
                "malformed bundle: the manifest names labels but there is no labels.txt",
            ))
        }
    }
    Ok(Opened {
        manifest,
        manifest_bytes,
        signature,
        signer,
        model,
        labels,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Cursor;

    pub(crate) fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    pub(crate) fn spec<'a>(model: &'a [u8], labels: Option<&'a [u8]>) -> BundleSpec<'a> {
        BundleSpec {
            name: "birds",
            version: "1.2.0",
            model,
            labels,
            settings: BundleSettings {
                min_score: Some(0.5),
                top_k: Some(2),
                ..Default::default()
            },
            min_spotter_version: None,
        }
    }

    pub(crate) fn bundle(spec: &BundleSpec<'_>, k: Option<&SigningKey>) -> Vec<u8> {
        let mut c = Cursor::new(Vec::new());
        write_bundle(&mut c, spec, k).unwrap();
        c.into_inner()
    }

    /// A ZIP of exactly these members (to forge bundles).
    pub(crate) fn zip_of(members: &[(&str, &[u8])]) -> Vec<u8> {
        let mut z = zip::ZipWriter::new(Cursor::new(Vec::new()));
        for (n, b) in members {
            z.start_file(*n, zip::write::SimpleFileOptions::default())
                .unwrap();
            z.write_all(b).unwrap();
        }
        z.finish().unwrap().into_inner()
    }

    /// The members of a bundle, in order.
    pub(crate) fn members(b: &[u8]) -> Vec<(String, Vec<u8>)> {
        let mut z = zip::ZipArchive::new(Cursor::new(b)).unwrap();
        (0..z.len())
            .map(|i| {
                let mut f = z.by_index(i).unwrap();
                let mut v = Vec::new();
                f.read_to_end(&mut v).unwrap();
                (f.name().to_string(), v)
            })
            .collect()
    }

    fn reason(r: Result<Opened, BundleError>) -> String {
        match r {
            Err(BundleError::Refused(r)) => r,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    // Would catch signing and verification disagreeing on the signed bytes,
    // or the manifest losing its settings, labels or signer on the way.
    #[test]
    fn sign_verify_round_trip() {
        let k = key(1);
        let b = bundle(&spec(b"model-bytes", Some(b"a\nb\n")), Some(&k));
        assert!(is_bundle(&b));
        let trust = Trust::new(vec![key(9).verifying_key(), k.verifying_key()], false);
        let o = open(Cursor::new(&b), &trust).unwrap();
        assert_eq!(
            o.signer.as_deref(),
            Some(fingerprint(&k.verifying_key()).as_str())
        );
        assert_eq!(o.model, b"model-bytes");
        assert_eq!(o.labels.as_deref(), Some(&b"a\nb\n"[..]));
        assert_eq!(o.manifest.name, "birds");
        assert_eq!(o.manifest.settings.min_score, Some(0.5));
        assert_eq!(o.manifest.settings.top_k, Some(2));
        assert_eq!(o.manifest.model_sha256, sha_hex(b"model-bytes"));
    }

    // Would catch a signature by an untrusted key, a forged signature, or a
    // missing one being accepted.
    #[test]
    fn wrong_key_bad_or_missing_signature_are_refused() {
        let trust = Trust::new(vec![key(1).verifying_key()], false);
        let other = bundle(&spec(b"m", None), Some(&key(2)));
        assert!(reason(open(Cursor::new(&other), &trust)).contains("bad signature"));
        let m = members(&bundle(&spec(b"m", None), Some(&key(1))));
        let mut sig = m[1].1.clone();
        sig[10] ^= 1;
        let forged = zip_of(&[(MANIFEST, &m[0].1), (SIGNATURE, &sig), (MODEL, &m[2].1)]);
        assert!(reason(open(Cursor::new(&forged), &trust)).contains("bad signature"));
        let short = zip_of(&[
            (MANIFEST, &m[0].1),
            (SIGNATURE, &sig[..20]),
            (MODEL, &m[2].1),
        ]);
        assert!(reason(open(Cursor::new(&short), &trust)).contains("64-byte"));
        let unsigned = bundle(&spec(b"m", None), None);
        assert!(reason(open(Cursor::new(&unsigned), &trust)).contains("unsigned"));
        // Allowed unsigned: accepted, no signer.
        let lax = Trust::new(vec![], true);
        assert_eq!(open(Cursor::new(&unsigned), &lax).unwrap().signer, None);
        // Signed, but this device trusts no key at all.
        let none = Trust::new(vec![], true);
        assert!(reason(open(Cursor::new(&other), &none)).contains("no trusted keys"));
    }

    // Would catch a model, labels or manifest changed after signing being
    // accepted (only the manifest is signed; it pins the rest by SHA-256).
    #[test]
    fn changed_bytes_are_refused() {
        let k = key(1);
        let trust = Trust::new(vec![k.verifying_key()], false);
        let m = members(&bundle(&spec(b"model", Some(b"x\n")), Some(&k)));
        let (man, sig, model, labels) = (&m[0].1, &m[1].1, &m[2].1, &m[3].1);
        let mut model2 = model.clone();
        model2[0] ^= 1;
        let b = zip_of(&[
            (MANIFEST, man),
            (SIGNATURE, sig),
            (MODEL, &model2),
            (LABELS, labels),
        ]);
        assert!(reason(open(Cursor::new(&b), &trust)).contains("model.tflite has SHA-256"));
        let b = zip_of(&[
            (MANIFEST, man),
            (SIGNATURE, sig),
            (MODEL, model),
            (LABELS, b"y\n"),
        ]);
        assert!(reason(open(Cursor::new(&b), &trust)).contains("labels.txt has SHA-256"));
        let b = zip_of(&[(MANIFEST, man), (SIGNATURE, sig), (MODEL, model)]);
        assert!(reason(open(Cursor::new(&b), &trust)).contains("no labels.txt"));
        let mut man2 = man.clone();
        let at = man2.iter().position(|&c| c == b'1').unwrap();
        man2[at] = b'9';
        let b = zip_of(&[
            (MANIFEST, &man2),
            (SIGNATURE, sig),
            (MODEL, model),
            (LABELS, labels),
        ]);
        assert!(reason(open(Cursor::new(&b), &trust)).contains("bad signature"));
        // A byte flipped in the file itself (the ZIP's CRC catches it).
        let mut raw = bundle(&spec(b"model-model-model", None), Some(&k));
        let at = raw.windows(5).position(|w| w == b"model").unwrap();
        let body = raw[at..]
            .windows(17)
            .position(|w| w == b"model-model-model")
            .unwrap();
        raw[at + body + 3] ^= 0x20;
        assert!(open(Cursor::new(&raw), &trust).is_err());
    }

    // Would catch a bundle made for a newer Spotter being installed, or the
    // version comparison being textual ("0.10" < "0.9").
    #[test]
    fn newer_min_spotter_version_is_refused() {
        let k = key(1);
        let trust = Trust::new(vec![k.verifying_key()], false);
        let mut s = spec(b"m", None);
        s.min_spotter_version = Some("999.0.0".into());
        let r = reason(open(Cursor::new(&bundle(&s, Some(&k))), &trust));
        assert!(
            r.contains("999.0.0") && r.contains(env!("CARGO_PKG_VERSION")),
            "{r}"
        );
        s.min_spotter_version = Some("0.0.1".into());
        assert!(open(Cursor::new(&bundle(&s, Some(&k))), &trust).is_ok());
        assert!(check_min_version("0.10.0", "0.9.5").is_err());
        assert!(check_min_version("0.9.5", "0.10.0").is_ok());
        assert!(check_min_version("1.2", "1.2.0").is_ok());
        assert!(check_min_version("x.y", "1.2.0").is_err());
    }

    // Would catch a truncated download, random bytes, extra members or a
    // manifest that is not JSON being treated as a bundle.
    #[test]
    fn malformed_bundles_are_refused() {
        let k = key(1);
        let trust = Trust::new(vec![k.verifying_key()], true);
        let good = bundle(&spec(b"model-bytes", None), Some(&k));
        for cut in [4, good.len() / 2, good.len() - 1] {
            assert!(
                open(Cursor::new(&good[..cut]), &trust).is_err(),
                "cut {cut}"
            );
        }
        let garbage: Vec<u8> = (0..4096u32).map(|i| (i * 7919 % 251) as u8).collect();
        assert!(reason(open(Cursor::new(&garbage), &trust)).contains("malformed"));
        let m = members(&good);
        let extra = zip_of(&[
            (MANIFEST, &m[0].1),
            (SIGNATURE, &m[1].1),
            (MODEL, &m[2].1),
            ("run.sh", b"x"),
        ]);
        assert!(reason(open(Cursor::new(&extra), &trust)).contains("run.sh"));
        let notjson = zip_of(&[(MANIFEST, b"{nope"), (MODEL, &m[2].1)]);
        assert!(reason(open(Cursor::new(&notjson), &trust)).contains("malformed manifest"));
    }

    // Would catch out-of-range settings being signed or applied, or
    // applying a bundle's settings not overriding `[model]`'s.
    #[test]
    fn settings_validate_and_apply() {
        let s = BundleSettings::from_toml(
            "[model]\nmin_score = 0.7\ntop_k = 1\nlabel_deny = [\"Cat\"]\n[model.min_score_by_label]\nDog = 0.9\n",
        )
        .unwrap();
        let mut m = crate::config::from_sources(vec![("t.toml".into(), String::new())])
            .unwrap()
            .model;
        m.rules.allow = vec!["bird".into()];
        s.apply(&mut m);
        assert_eq!(m.min_score, Some(0.7));
        assert_eq!(m.top_k, 1);
        assert!(m.rules.allow.is_empty());
        assert_eq!(m.rules.deny, vec!["cat".to_string()]);
        assert_eq!(m.rules.min_score_by_label.get("dog"), Some(&0.9));
        assert!(BundleSettings::from_toml("min_score = 1.5")
            .unwrap_err()
            .contains("min_score"));
        assert!(BundleSettings::from_toml("top_k = 0")
            .unwrap_err()
            .contains("top_k"));
        assert!(BundleSettings::from_toml("threads = 4").is_err());
        let mut bad = spec(b"m", None);
        bad.settings.iou_threshold = Some(0.0);
        assert!(write_bundle(Cursor::new(Vec::new()), &bad, None).is_err());
    }

    // Would catch keys written as PEM (openssl's and keygen's format) not
    // reading back, or a private key file accepted as a public one.
    #[test]
    fn pem_keys_read_back() {
        use ed25519_dalek::pkcs8::{EncodePrivateKey, EncodePublicKey};
        let tmp = tempfile::tempdir().unwrap();
        let k = key(3);
        let sk = tmp.path().join("k.pem");
        let pk = tmp.path().join("k.pub.pem");
        std::fs::write(&sk, k.to_pkcs8_pem(Default::default()).unwrap().as_bytes()).unwrap();
        std::fs::write(
            &pk,
            k.verifying_key()
                .to_public_key_pem(Default::default())
                .unwrap(),
        )
        .unwrap();
        assert_eq!(read_private_key(&sk).unwrap().to_bytes(), k.to_bytes());
        assert_eq!(read_public_key(&pk).unwrap(), k.verifying_key());
        assert!(read_public_key(&sk).is_err());
        let s = SigningSettings {
            trusted_keys: vec![pk],
            allow_unsigned_local: true,
        };
        assert!(Trust::from_settings(&s, false).is_ok());
    }
}
