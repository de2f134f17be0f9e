//! A model file read once: bytes, SHA-256, structural checks and metadata.
//!
//! This module owns everything learned from the `.tflite` file itself, before
//! any runtime sees it:
//! - the TFLite flatbuffer identifier (`TFL3` at byte 4); anything else is
//!   [`InferenceError::NotTflite`];
//! - a full flatbuffer verification (TF Lite's own `VerifyModelBuffer`, through
//!   the `tflite` crate). TF Lite 1.15's `BuildFromBuffer` does *not* verify, so
//!   a truncated file would otherwise be read out of bounds by the runtime;
//! - the declared quantization of the subgraph's input and output tensors;
//! - the TFLite metadata: the `TFLITE_METADATA` buffer (the input
//!   `NormalizationOptions` and the name of the labels file) and the zip
//!   archive appended after the flatbuffer that holds associated files such
//!   as labels;
//! - the metadata Ultralytics exports append in that archive (class names,
//!   task, input size, version: `modelfile/ultralytics.rs`, with the reader
//!   of the Python literal older versions write in `modelfile/pyliteral.rs`).
//!   Unreadable metadata never fails a load: it is ignored with one warning.
//!
//! The flatbuffer itself is read by `inference::flatbuf`, the one reader both
//! runtimes use. A runtime loads from a [`ModelFile`], so a model is read
//! from disk once per load.

use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::flatbuf;
use super::preprocess::Normalization;
use super::InferenceError;
pub(crate) use bytes::ModelBytes;

mod bytes;
mod pyliteral;
mod ultralytics;

pub use ultralytics::UltralyticsMeta;

/// Largest model file accepted (bytes). Larger files are refused before reading.
pub(crate) const MAX_MODEL_BYTES: u64 = 512 * 1024 * 1024;
/// Largest associated file (e.g. labels) read from the embedded archive.
const MAX_ASSOCIATED_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// Quantization declared in the model for one input or output tensor.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct DeclaredQuant {
    pub scale: Vec<f32>,
    pub zero_point: Vec<i64>,
}

/// What the TFLite metadata says about the model, where present.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModelMetadata {
    pub name: Option<String>,
    /// `NormalizationOptions` of the first input tensor.
    pub input_normalization: Option<Normalization>,
    /// Where [`ModelFile::embedded_labels`] reads the labels: the
    /// `TENSOR_AXIS_LABELS` associated file of the first output, else the
    /// Ultralytics metadata member (`metadata.json`, `temp_meta.txt`) whose
    /// class names are used.
    pub labels_file: Option<String>,
    /// The metadata of an Ultralytics export, where present and readable.
    pub ultralytics: Option<UltralyticsMeta>,
}

/// A model file, read and checked once.
#[derive(Debug, Clone)]
pub struct ModelFile {
    path: PathBuf,
    /// Mapped from the file (`modelfile/bytes.rs`), shared with the runtime
    /// that parses them in place.
    bytes: Arc<ModelBytes>,
    sha256: String,
    inputs: Vec<Option<DeclaredQuant>>,
    outputs: Vec<Option<DeclaredQuant>>,
    metadata: ModelMetadata,
    /// The archive member holding Ultralytics metadata (read or not): never
    /// taken for a labels file.
    ultralytics_member: Option<String>,
}

impl ModelFile {
    /// Read `path`, hash it and check that it is a well-formed TFLite model.
    pub fn read(path: &Path) -> Result<ModelFile, InferenceError> {
        let p = path.display().to_string();
        let io = |source| InferenceError::Io {
            path: p.clone(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        if len > MAX_MODEL_BYTES {
            return Err(InferenceError::NotTflite {
                path: p,
                reason: format!("file is {len} bytes, more than the {MAX_MODEL_BYTES} accepted"),
            });
        }
        // `len` is at most MAX_MODEL_BYTES, so it fits a usize.
        let bytes = ModelBytes::map(&file, len as usize).map_err(io)?;
        ModelFile::from_model_bytes(path, bytes)
    }

    /// Check bytes already in memory; `path` is used for messages (the
    /// tests and fuzz targets; files are mapped by [`ModelFile::read`]).
    #[cfg(test)]
    pub(crate) fn from_bytes(path: &Path, bytes: Vec<u8>) -> Result<ModelFile, InferenceError> {
        ModelFile::from_model_bytes(path, ModelBytes::from(bytes))
    }

    fn from_model_bytes(path: &Path, bytes: ModelBytes) -> Result<ModelFile, InferenceError> {
        let p = path.display().to_string();
        let not = |reason: String| InferenceError::NotTflite {
            path: p.clone(),
            reason,
        };
        if bytes.len() < 8 {
            return Err(not(format!("file is only {} bytes", bytes.len())));
        }
        if &bytes[4..8] != b"TFL3" {
            return Err(not(format!(
                "no TFL3 flatbuffer identifier (bytes 4..8 are {:02x?})",
                &bytes[4..8]
            )));
        }
        // TF Lite's own verifier (it also unpacks the model, which is dropped).
        let model = tflite::model::Model::from_buffer(&bytes[..]).ok_or_else(|| {
            not("flatbuffer verification failed (truncated or corrupt file)".into())
        })?;
        if model.subgraphs.is_empty() {
            return Err(not("model has no subgraph".into()));
        }
        drop(model);
        let io = flatbuf::subgraph_io(&bytes[..]).map_err(not)?;
        let declared =
            |tensors: Vec<flatbuf::TensorInfo>| tensors.into_iter().map(|t| t.quant).collect();
        let inputs = declared(io.inputs);
        let outputs = declared(io.outputs);

        let sha256 = hex::encode(Sha256::digest(&bytes[..]));
        let mut metadata = flatbuf::metadata_buffer(&bytes[..])
            .and_then(flatbuf::parse_metadata)
            .unwrap_or_default();
        let UltralyticsRead {
            meta: ultralytics,
            member: ultralytics_member,
            warning,
        } = read_ultralytics(path, &bytes[..]);
        if let Some(w) = warning {
            log::warn!(model = p.as_str(); "{w}");
        }
        if let (Some(u), Some(member)) = (&ultralytics, &ultralytics_member) {
            // Older exports name their metadata as the output's labels file;
            // a real labels file the TFLite metadata names still wins.
            let named_elsewhere = metadata.labels_file.as_ref().is_some_and(|f| f != member);
            if !u.names.is_empty() && !named_elsewhere {
                metadata.labels_file = Some(member.clone());
            }
        }
        if metadata.labels_file.is_some()
            && metadata.labels_file == ultralytics_member
            && ultralytics.as_ref().is_none_or(|u| u.names.is_empty())
        {
            // The metadata names a file that holds no usable labels.
            metadata.labels_file = None;
        }
        metadata.ultralytics = ultralytics;
        Ok(ModelFile {
            path: path.to_path_buf(),
            bytes: Arc::new(bytes),
            sha256,
            inputs,
            outputs,
            metadata,
            ultralytics_member,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The bytes themselves, for a runtime that parses them in place and
    /// keeps them for the model's lifetime.
    pub(crate) fn shared_bytes(&self) -> Arc<ModelBytes> {
        self.bytes.clone()
    }

    /// Drop the model's pages from RSS once the runtime has packed the
    /// weights (see `modelfile/bytes.rs`); the bytes stay readable.
    pub(crate) fn release_pages(&self) {
        self.bytes.release_pages();
    }

    /// Lower-case hex SHA-256 of the whole file.
    pub(crate) fn sha256(&self) -> &str {
        &self.sha256
    }

    /// Declared quantization of subgraph input `i` (`None` if not quantized).
    pub(crate) fn input_quant(&self, i: usize) -> Option<&DeclaredQuant> {
        self.inputs.get(i).and_then(Option::as_ref)
    }

    /// Declared quantization of subgraph output `i` (`None` if not quantized).
    pub(crate) fn output_quant(&self, i: usize) -> Option<&DeclaredQuant> {
        self.outputs.get(i).and_then(Option::as_ref)
    }

    pub fn metadata(&self) -> &ModelMetadata {
        &self.metadata
    }

    /// Names of the files in the zip archive appended to the flatbuffer.
    pub fn associated_files(&self) -> Vec<String> {
        match zip::ZipArchive::new(Cursor::new(&self.bytes[..])) {
            Ok(a) => a.file_names().map(str::to_string).collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Labels embedded in the model: the file the TFLite metadata names as
    /// the output's `TENSOR_AXIS_LABELS`; else the class names of Ultralytics
    /// metadata; else the archive's only `.txt` entry (not Ultralytics'
    /// metadata). `None` when the model carries no readable labels.
    pub fn embedded_labels(&self) -> Option<Vec<String>> {
        if let Some(u) = &self.metadata.ultralytics {
            if !u.names.is_empty() && self.metadata.labels_file == self.ultralytics_member {
                return Some(u.names.clone());
            }
        }
        let mut archive = zip::ZipArchive::new(Cursor::new(&self.bytes[..])).ok()?;
        let name = match &self.metadata.labels_file {
            Some(name) => name.clone(),
            None => {
                let txt: Vec<&str> = archive
                    .file_names()
                    .filter(|n| n.ends_with(".txt"))
                    .filter(|n| Some(*n) != self.ultralytics_member.as_deref())
                    .collect();
                match txt.as_slice() {
                    [one] => one.to_string(),
                    _ => return None,
                }
            }
        };
        let entry = archive.by_name(&name).ok()?;
        if entry.size() > MAX_ASSOCIATED_FILE_BYTES {
            let model = self.path.display().to_string();
            log::warn!(model = model.as_str(); "embedded labels file {name} is too large, ignored");
            return None;
        }
        let mut text = String::new();
        entry
            .take(MAX_ASSOCIATED_FILE_BYTES)
            .read_to_string(&mut text)
            .ok()?;
        let labels = super::labels::Labels::parse(&text, &format!("embedded:{name}")).ok()?;
        Some(labels.names().to_vec())
    }
}

/// What the archive says about an Ultralytics export.
#[derive(Debug, Default)]
struct UltralyticsRead {
    meta: Option<UltralyticsMeta>,
    /// The member that holds (or should hold) the metadata.
    member: Option<String>,
    /// Why the metadata, or its class names, were ignored: logged once.
    warning: Option<String>,
}

/// The Ultralytics metadata in the archive appended to `bytes` (of the
/// model at `path`, for the warning).
fn read_ultralytics(path: &Path, bytes: &[u8]) -> UltralyticsRead {
    let Ok(mut archive) = zip::ZipArchive::new(Cursor::new(bytes)) else {
        return UltralyticsRead::default();
    };
    let Some(member) = ultralytics::MEMBERS
        .into_iter()
        .find(|m| archive.index_for_name(m).is_some())
    else {
        return UltralyticsRead::default();
    };
    let ignored = |why: &dyn std::fmt::Display| UltralyticsRead {
        meta: None,
        member: Some(member.to_string()),
        warning: Some(format!(
            "{}: Ultralytics metadata {member} ignored: {why}",
            path.display()
        )),
    };
    let text = match read_member(&mut archive, member) {
        Ok(t) => t,
        Err(why) => return ignored(&why),
    };
    if !ultralytics::looks_like_metadata(member, &text) {
        return UltralyticsRead::default();
    }
    match ultralytics::read(member, &text) {
        Ok(Some(read)) => UltralyticsRead {
            meta: Some(read.meta),
            member: Some(member.to_string()),
            warning: read.names_problem.map(|why| {
                format!(
                    "{}: class names in Ultralytics metadata {member} ignored ({why}); give the labels with `labels =` or --labels",
                    path.display()
                )
            }),
        },
        Ok(None) => UltralyticsRead::default(),
        Err(why) => ignored(&why),
    }
}

/// The text of archive member `name`, at most [`MAX_ASSOCIATED_FILE_BYTES`].
fn read_member(archive: &mut zip::ZipArchive<Cursor<&[u8]>>, name: &str) -> Result<String, String> {
    let entry = archive.by_name(name).map_err(|e| e.to_string())?;
    if entry.size() > MAX_ASSOCIATED_FILE_BYTES {
        return Err(format!(
            "{} bytes, more than the {MAX_ASSOCIATED_FILE_BYTES} read",
            entry.size()
        ));
    }
    let mut raw = Vec::new();
    // The declared size may lie; `take` bounds what is inflated.
    entry
        .take(MAX_ASSOCIATED_FILE_BYTES + 1)
        .read_to_end(&mut raw)
        .map_err(|e| e.to_string())?;
    if raw.len() as u64 > MAX_ASSOCIATED_FILE_BYTES {
        return Err(format!(
            "more than the {MAX_ASSOCIATED_FILE_BYTES} bytes read"
        ));
    }
    String::from_utf8(raw).map_err(|e| format!("not UTF-8: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_non_tflite_and_short_files() {
        // Catches non-model files reaching the runtime.
        let e = ModelFile::from_bytes(Path::new("x.jpg"), b"\xff\xd8\xff\xe0JFIF....".to_vec())
            .unwrap_err();
        assert!(matches!(e, InferenceError::NotTflite { .. }), "{e}");
        let e = ModelFile::from_bytes(Path::new("x"), b"abc".to_vec()).unwrap_err();
        assert!(matches!(e, InferenceError::NotTflite { .. }), "{e}");
    }

    #[test]
    fn identifier_alone_is_not_enough() {
        // Catches a truncated/garbage flatbuffer with a valid identifier being passed to TF Lite.
        let mut bytes = vec![0u8; 64];
        bytes[0] = 200; // root offset past the end
        bytes[4..8].copy_from_slice(b"TFL3");
        let e = ModelFile::from_bytes(Path::new("bad.tflite"), bytes).unwrap_err();
        assert!(e.to_string().contains("verification"), "{e}");
    }

    /// A small valid model from the test data, without any archive.
    fn plain_model() -> Vec<u8> {
        let p = crate::core::testdata().join("models/golden/MNISTnet_uint8_quant.tflite");
        let bytes = std::fs::read(&p).unwrap();
        assert!(zip::ZipArchive::new(Cursor::new(bytes.as_slice())).is_err());
        bytes
    }

    /// `model` with a zip of `members` (name, text, deflated?) appended, as
    /// Ultralytics' `zipfile.ZipFile(file, "a")` does.
    fn with_archive(mut model: Vec<u8>, members: &[(&str, &str, bool)]) -> Vec<u8> {
        use std::io::Write;
        let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
        for (name, text, deflate) in members {
            let method = if *deflate {
                zip::CompressionMethod::Deflated
            } else {
                zip::CompressionMethod::Stored
            };
            let opts = zip::write::SimpleFileOptions::default().compression_method(method);
            w.start_file(*name, opts).unwrap();
            w.write_all(text.as_bytes()).unwrap();
        }
        model.extend_from_slice(&w.finish().unwrap().into_inner());
        model
    }

    fn load(bytes: Vec<u8>) -> ModelFile {
        ModelFile::from_bytes(Path::new("m.tflite"), bytes).unwrap()
    }

    const PY_META: &str = "{'description': 'Ultralytics model', 'version': '8.1.0', 'task': 'detect', 'imgsz': [320, 480], 'names': {0: 'fox', 1: \"fox's den\", 2: 'owl'}}";
    const JSON_META: &str = r#"{"version": "8.3.1", "task": "detect", "imgsz": [320, 480], "names": {"0": "fox", "1": "fox's den", "2": "owl"}}"#;

    // Would catch either Ultralytics format not read (a YOLO export running
    // unlabelled), the dict taken as a one-line labels file, or the source
    // of the labels not named.
    #[test]
    fn ultralytics_names_are_the_embedded_labels() {
        for (member, text, deflate) in [
            ("temp_meta.txt", PY_META, false),
            ("metadata.json", JSON_META, true),
        ] {
            let f = load(with_archive(plain_model(), &[(member, text, deflate)]));
            let u = f.metadata().ultralytics.as_ref().expect(member);
            assert_eq!(u.names, ["fox", "fox's den", "owl"], "{member}");
            assert_eq!(u.task.as_deref(), Some("detect"));
            assert_eq!(u.imgsz, Some([320, 480]));
            assert!(u.version.as_deref().is_some_and(|v| v.starts_with("8.")));
            assert_eq!(f.metadata().labels_file.as_deref(), Some(member));
            assert_eq!(f.embedded_labels().unwrap(), u.names, "{member}");
        }
        // Both present: the newer format is read.
        let f = load(with_archive(
            plain_model(),
            &[
                ("temp_meta.txt", PY_META, false),
                ("metadata.json", JSON_META, true),
            ],
        ));
        assert_eq!(f.metadata().labels_file.as_deref(), Some("metadata.json"));
    }

    // Would catch malformed metadata failing the load (a model that runs
    // fine refused for a cosmetic file), more than one warning, a warning
    // that does not name the model and member, or the broken dict or
    // names used as labels anyway.
    #[test]
    fn malformed_metadata_is_ignored_with_one_warning() {
        for (member, text, names_only) in [
            ("temp_meta.txt", "{'names': {0: 'fox', 1: 'owl'", false),
            ("metadata.json", "{\"names\": ", false),
            ("metadata.json", "[\"fox\"]", false),
            (
                "temp_meta.txt",
                "{'task': 'detect', 'names': {0: 'fox', 2: 'owl'}}",
                true,
            ),
            (
                "metadata.json",
                r#"{"names": {"0": "fox", "x": "owl"}}"#,
                true,
            ),
        ] {
            let bytes = with_archive(plain_model(), &[(member, text, true)]);
            let r = read_ultralytics(Path::new("/m/yolo.tflite"), &bytes);
            let w = r.warning.expect(text);
            assert!(
                w.starts_with("/m/yolo.tflite: ") && w.contains(member),
                "{w}"
            );
            assert_eq!(r.meta.is_some(), names_only, "{text}");
            let f = load(bytes);
            assert_eq!(f.embedded_labels(), None, "{text}");
            assert_eq!(f.metadata().labels_file, None, "{text}");
            if names_only {
                let u = f.metadata().ultralytics.as_ref().unwrap();
                assert!(u.names.is_empty());
                assert_eq!(
                    u.task.as_deref(),
                    Some("detect").filter(|_| member == "temp_meta.txt")
                );
            }
        }
        // Readable metadata warns about nothing.
        let ok = with_archive(plain_model(), &[("metadata.json", JSON_META, true)]);
        assert!(read_ultralytics(Path::new("m"), &ok).warning.is_none());
    }

    // Would catch a plain labels file that happens to be called
    // temp_meta.txt (not a dict) no longer used as the archive's labels, or
    // a dict that is not Ultralytics' taken for it.
    #[test]
    fn other_archives_keep_their_labels() {
        let f = load(with_archive(
            plain_model(),
            &[("temp_meta.txt", "fox\nowl\n", false)],
        ));
        assert!(f.metadata().ultralytics.is_none());
        assert_eq!(f.embedded_labels().unwrap(), ["fox", "owl"]);
        let f = load(with_archive(
            plain_model(),
            &[
                ("metadata.json", r#"{"author": "me"}"#, true),
                ("labels.txt", "a\nb\n", false),
            ],
        ));
        assert!(f.metadata().ultralytics.is_none());
        assert_eq!(f.embedded_labels().unwrap(), ["a", "b"]);
        assert!(read_ultralytics(Path::new("m"), &plain_model())
            .warning
            .is_none());
    }

    // Would catch Ultralytics names overriding the labels file the TFLite
    // metadata names (EfficientNet-Lite's archive, rebuilt with a
    // metadata.json beside its labels).
    #[test]
    fn tflite_metadata_labels_file_wins() {
        let p =
            crate::core::testdata().join("models/classification/efficientnet_lite0_int8_2.tflite");
        let bytes = std::fs::read(&p).unwrap();
        let mut archive = zip::ZipArchive::new(Cursor::new(bytes.as_slice())).unwrap();
        // Its offsets count from the file's start: the archive starts at
        // the first member's local header.
        let start = (0..archive.len())
            .map(|i| archive.by_index_raw(i).unwrap().header_start())
            .min()
            .unwrap();
        let start = usize::try_from(start).unwrap();
        let name = archive.file_names().next().unwrap().to_string();
        let mut labels = String::new();
        archive
            .by_name(&name)
            .unwrap()
            .read_to_string(&mut labels)
            .unwrap();
        let rebuilt = with_archive(
            bytes[..start].to_vec(),
            &[(&name, &labels, true), ("metadata.json", JSON_META, true)],
        );
        let f = load(rebuilt);
        assert_eq!(f.metadata().labels_file.as_deref(), Some(name.as_str()));
        assert!(f.metadata().ultralytics.is_some());
        let embedded = f.embedded_labels().unwrap();
        assert_eq!(embedded.len(), labels.lines().count());
        assert_ne!(embedded[0], "fox");
    }

    // Would catch the real Ultralytics 8.1 exports in the test data (Python
    // dict in temp_meta.txt, named by the TFLite metadata as the output's
    // labels) read wrongly: their names must be the COCO-80 labels file.
    #[test]
    fn real_yolov8n_exports_carry_their_names() {
        let td = crate::core::testdata();
        let coco = std::fs::read_to_string(td.join("labels/coco80_labels.txt")).unwrap();
        let coco: Vec<&str> = coco
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        let dir = td.join("models/detection/yolov8n");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "tflite") {
                continue;
            }
            let f = ModelFile::read(&path).unwrap();
            let u = f
                .metadata()
                .ultralytics
                .as_ref()
                .expect("Ultralytics metadata");
            assert_eq!(u.names.len(), 80, "{}", path.display());
            assert_eq!(u.names[0], "person");
            assert_eq!(u.names, coco);
            assert_eq!(u.task.as_deref(), Some("detect"));
            assert!(u.imgsz.is_some() && u.version.is_some());
            assert_eq!(f.metadata().labels_file.as_deref(), Some("temp_meta.txt"));
            assert_eq!(f.embedded_labels().unwrap(), coco);
            seen += 1;
        }
        assert!(seen >= 2, "no YOLO models in {}", dir.display());
    }
}
