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
//!   as labels.
//!
//! The flatbuffer itself is read by `inference::flatbuf`, the one reader both
//! runtimes use. A runtime loads from a [`ModelFile`], so a model is read
//! from disk once per load.

use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::flatbuf;
use super::preprocess::Normalization;
use super::InferenceError;

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
    /// Name of the `TENSOR_AXIS_LABELS` associated file of the first output.
    pub labels_file: Option<String>,
    /// The Ultralytics export metadata, when the file carries it.
    // Stub of the interface the `rules` branch fills in (issue 17); never set here.
    pub ultralytics: Option<UltralyticsMeta>,
}

/// What an Ultralytics export says about itself (issue 17 interface).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UltralyticsMeta {
    pub names: Vec<String>,
    pub task: Option<String>,
    pub imgsz: Option<[u32; 2]>,
    pub version: Option<String>,
}

/// A model file, read and checked once.
#[derive(Debug, Clone)]
pub struct ModelFile {
    path: PathBuf,
    bytes: Vec<u8>,
    sha256: String,
    inputs: Vec<Option<DeclaredQuant>>,
    outputs: Vec<Option<DeclaredQuant>>,
    metadata: ModelMetadata,
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
        let mut bytes = Vec::with_capacity(len as usize);
        file.take(MAX_MODEL_BYTES)
            .read_to_end(&mut bytes)
            .map_err(io)?;
        ModelFile::from_bytes(path, bytes)
    }

    /// Check bytes already in memory; `path` is used for messages.
    pub(crate) fn from_bytes(path: &Path, bytes: Vec<u8>) -> Result<ModelFile, InferenceError> {
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
        let model = tflite::model::Model::from_buffer(&bytes).ok_or_else(|| {
            not("flatbuffer verification failed (truncated or corrupt file)".into())
        })?;
        if model.subgraphs.is_empty() {
            return Err(not("model has no subgraph".into()));
        }
        drop(model);
        let io = flatbuf::subgraph_io(&bytes).map_err(not)?;
        let declared =
            |tensors: Vec<flatbuf::TensorInfo>| tensors.into_iter().map(|t| t.quant).collect();
        let inputs = declared(io.inputs);
        let outputs = declared(io.outputs);

        let sha256 = hex::encode(Sha256::digest(&bytes));
        let metadata = flatbuf::metadata_buffer(&bytes)
            .and_then(flatbuf::parse_metadata)
            .unwrap_or_default();
        Ok(ModelFile {
            path: path.to_path_buf(),
            bytes,
            sha256,
            inputs,
            outputs,
            metadata,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        &self.bytes
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
        match zip::ZipArchive::new(Cursor::new(self.bytes.as_slice())) {
            Ok(a) => a.file_names().map(str::to_string).collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Labels embedded in the model: the file the metadata names as the output's
    /// `TENSOR_AXIS_LABELS`, or else the archive's only `.txt` entry. `None`
    /// when the model carries no readable labels.
    pub fn embedded_labels(&self) -> Option<Vec<String>> {
        let mut archive = zip::ZipArchive::new(Cursor::new(self.bytes.as_slice())).ok()?;
        let name = match &self.metadata.labels_file {
            Some(name) => name.clone(),
            None => {
                let txt: Vec<&str> = archive
                    .file_names()
                    .filter(|n| n.ends_with(".txt"))
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
}
