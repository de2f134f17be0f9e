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
//! - the TFLite metadata: the `TFLITE_METADATA` buffer (read with a small
//!   bounds-checked flatbuffer reader, for the input `NormalizationOptions` and
//!   the name of the labels file) and the zip archive appended after the
//!   flatbuffer that holds associated files such as labels.

use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::preprocess::Normalization;
use super::InferenceError;

/// Largest model file accepted (bytes). Larger files are refused before reading.
pub const MAX_MODEL_BYTES: u64 = 512 * 1024 * 1024;
/// Largest associated file (e.g. labels) read from the embedded archive.
const MAX_ASSOCIATED_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// Quantization declared in the model for one input or output tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct DeclaredQuant {
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
    pub fn from_bytes(path: &Path, bytes: Vec<u8>) -> Result<ModelFile, InferenceError> {
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
        let model = tflite::model::Model::from_buffer(&bytes).ok_or_else(|| {
            not("flatbuffer verification failed (truncated or corrupt file)".into())
        })?;
        if model.subgraphs.is_empty() {
            return Err(not("model has no subgraph".into()));
        }
        let subgraph = &model.subgraphs[0];
        let declared = |indices: &[i32]| -> Vec<Option<DeclaredQuant>> {
            indices
                .iter()
                .map(|&i| {
                    let t = usize::try_from(i)
                        .ok()
                        .and_then(|i| subgraph.tensors.get(i))?;
                    if !t.quantization.is_valid() {
                        return None;
                    }
                    let q = &*t.quantization;
                    Some(DeclaredQuant {
                        scale: q.scale.to_vec(),
                        zero_point: q.zero_point.to_vec(),
                    })
                })
                .collect()
        };
        let inputs = declared(&subgraph.inputs);
        let outputs = declared(&subgraph.outputs);
        drop(model);

        let sha256 = hex::encode(Sha256::digest(&bytes));
        let metadata = metadata_buffer(&bytes)
            .and_then(parse_metadata)
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

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Lower-case hex SHA-256 of the whole file.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// Declared quantization of subgraph input `i` (`None` if not quantized).
    pub fn input_quant(&self, i: usize) -> Option<&DeclaredQuant> {
        self.inputs.get(i).and_then(Option::as_ref)
    }

    /// Declared quantization of subgraph output `i` (`None` if not quantized).
    pub fn output_quant(&self, i: usize) -> Option<&DeclaredQuant> {
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

/// The bytes of the `TFLITE_METADATA` buffer, if the model has one.
fn metadata_buffer(bytes: &[u8]) -> Option<&[u8]> {
    let fb = Fb(bytes);
    let model = fb.root()?;
    let buffers = fb.field_vector(model, 4)?;
    let metadata = fb.field_vector(model, 6)?;
    for i in 0..metadata.len {
        let entry = fb.vector_table(&metadata, i)?;
        if fb.field_str(entry, 0) == Some("TFLITE_METADATA") {
            let buffer_index = fb.field_u32(entry, 1).unwrap_or(0) as usize;
            if buffer_index >= buffers.len {
                return None;
            }
            let buffer = fb.vector_table(&buffers, buffer_index)?;
            let data = fb.field_vector(buffer, 0)?;
            return fb.0.get(data.start..data.start.checked_add(data.len)?);
        }
    }
    None
}

/// Parse the metadata flatbuffer (schema `tflite_metadata` `ModelMetadata`).
fn parse_metadata(bytes: &[u8]) -> Option<ModelMetadata> {
    const NORMALIZATION_OPTIONS: u8 = 1;
    const TENSOR_AXIS_LABELS: i8 = 2;
    let fb = Fb(bytes);
    let root = fb.root()?;
    let mut meta = ModelMetadata {
        name: fb.field_str(root, 0).map(str::to_string),
        ..Default::default()
    };
    let subgraphs = fb.field_vector(root, 3)?;
    if subgraphs.len == 0 {
        return Some(meta);
    }
    let subgraph = fb.vector_table(&subgraphs, 0)?;
    if let Some(inputs) = fb.field_vector(subgraph, 2).filter(|v| v.len > 0) {
        let input = fb.vector_table(&inputs, 0)?;
        if let Some(units) = fb.field_vector(input, 4) {
            for u in 0..units.len {
                let unit = fb.vector_table(&units, u)?;
                if fb.field_u8(unit, 0) != Some(NORMALIZATION_OPTIONS) {
                    continue;
                }
                let options = fb.field_table(unit, 1)?;
                let mean = fb.field_f32s(options, 0)?;
                let std = fb.field_f32s(options, 1)?;
                meta.input_normalization = Normalization::from_lists(&mean, &std);
            }
        }
    }
    if let Some(outputs) = fb.field_vector(subgraph, 3).filter(|v| v.len > 0) {
        let output = fb.vector_table(&outputs, 0)?;
        if let Some(files) = fb.field_vector(output, 6) {
            for f in 0..files.len {
                let file = fb.vector_table(&files, f)?;
                if fb.field_u8(file, 2).map(|b| b as i8) == Some(TENSOR_AXIS_LABELS) {
                    meta.labels_file = fb.field_str(file, 0).map(str::to_string);
                    break;
                }
            }
        }
    }
    Some(meta)
}

/// A minimal flatbuffer reader. Every access is bounds-checked and returns
/// `None` on malformed input; it never panics or reads out of bounds.
struct Fb<'a>(&'a [u8]);

/// A vector: position of its first element and element count.
struct FbVec {
    start: usize,
    len: usize,
}

impl<'a> Fb<'a> {
    fn u8_at(&self, pos: usize) -> Option<u8> {
        self.0.get(pos).copied()
    }
    fn u16_at(&self, pos: usize) -> Option<u16> {
        Some(u16::from_le_bytes(
            self.0.get(pos..pos.checked_add(2)?)?.try_into().ok()?,
        ))
    }
    fn u32_at(&self, pos: usize) -> Option<u32> {
        Some(u32::from_le_bytes(
            self.0.get(pos..pos.checked_add(4)?)?.try_into().ok()?,
        ))
    }
    /// Follow a uoffset stored at `pos`.
    fn follow(&self, pos: usize) -> Option<usize> {
        pos.checked_add(self.u32_at(pos)? as usize)
            .filter(|&p| p < self.0.len())
    }
    fn root(&self) -> Option<usize> {
        self.follow(0)
    }
    /// Position of field `index` of the table at `table`, if present.
    fn field(&self, table: usize, index: usize) -> Option<usize> {
        let soffset = self.u32_at(table)? as i32;
        let vtable = usize::try_from(table as i64 - i64::from(soffset)).ok()?;
        let vtable_len = usize::from(self.u16_at(vtable)?);
        let slot = 4 + 2 * index;
        if slot + 2 > vtable_len {
            return None;
        }
        let off = usize::from(self.u16_at(vtable + slot)?);
        if off == 0 {
            return None;
        }
        table.checked_add(off)
    }
    fn field_u8(&self, table: usize, index: usize) -> Option<u8> {
        self.u8_at(self.field(table, index)?)
    }
    fn field_u32(&self, table: usize, index: usize) -> Option<u32> {
        self.u32_at(self.field(table, index)?)
    }
    fn field_table(&self, table: usize, index: usize) -> Option<usize> {
        self.follow(self.field(table, index)?)
    }
    fn field_vector(&self, table: usize, index: usize) -> Option<FbVec> {
        let pos = self.follow(self.field(table, index)?)?;
        let len = self.u32_at(pos)? as usize;
        let start = pos + 4;
        // Every element is at least one byte: reject lengths past the buffer.
        if start.checked_add(len)? > self.0.len() {
            return None;
        }
        Some(FbVec { start, len })
    }
    fn field_str(&self, table: usize, index: usize) -> Option<&'a str> {
        let v = self.field_vector(table, index)?;
        std::str::from_utf8(self.0.get(v.start..v.start + v.len)?).ok()
    }
    fn field_f32s(&self, table: usize, index: usize) -> Option<Vec<f32>> {
        let v = self.field_vector(table, index)?;
        let raw = self
            .0
            .get(v.start..v.start.checked_add(v.len.checked_mul(4)?)?)?;
        Some(
            raw.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        )
    }
    /// Element `i` of a vector of tables.
    fn vector_table(&self, v: &FbVec, i: usize) -> Option<usize> {
        if i >= v.len {
            return None;
        }
        self.follow(v.start.checked_add(i.checked_mul(4)?)?)
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

    #[test]
    fn fb_reader_survives_garbage() {
        // Catches a panic or out-of-bounds read in the metadata reader on hostile input.
        let mut state = 0x1234_5678u32;
        for len in [0usize, 3, 8, 17, 64, 300] {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    state = state.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    (state >> 16) as u8
                })
                .collect();
            let _ = metadata_buffer(&bytes);
            let _ = parse_metadata(&bytes);
        }
    }
}
