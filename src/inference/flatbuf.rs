//! The one reader of a `.tflite` file's flatbuffers: the model (TF Lite's
//! `schema.fbs`) and the TFLite metadata inside it (`metadata_schema.fbs`).
//!
//! This module owns the parts of both schemas Spotter reads, as typed views
//! over the `flatbuffers` crate's tables, each verified by that crate's
//! verifier before a field is read:
//! - the input and output tensors of subgraph 0 ([`subgraph_io`], in the order
//!   TF Lite's interpreter uses) and of signature 0 ([`signature_io`], the
//!   order LiteRT uses; subgraph 0's when the model has no signature): name,
//!   shape, element type and quantization, which neither runtime's API exposes;
//! - the `TFLITE_METADATA` buffer ([`metadata_buffer`]) and in it
//!   ([`parse_metadata`]) the model name, the input `NormalizationOptions` and
//!   the name of the output's `TENSOR_AXIS_LABELS` file.
//!
//! Each reader verifies only the fields it reads (the model's root table has
//! one view per reader), so a part of the file one reader does not use cannot
//! make it fail. Verification here is not TF Lite's full `VerifyModelBuffer`,
//! which [`ModelFile`](super::modelfile::ModelFile) runs before any runtime
//! sees the bytes.

use flatbuffers::{
    Follow, ForwardsUOffset, InvalidFlatbuffer, Table, VOffsetT, Vector, Verifiable, Verifier,
};

use super::modelfile::{DeclaredQuant, ModelMetadata};
use super::preprocess::Normalization;
use super::DType;

/// What the flatbuffer says about one input or output tensor.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TensorInfo {
    /// Position in its subgraph's tensor list.
    pub index: usize,
    pub name: String,
    /// As stored; empty when the shape is computed when the model is
    /// prepared (e.g. SSD post-processing outputs).
    pub shape: Vec<i32>,
    /// `None` for element types Spotter does not handle.
    pub dtype: Option<DType>,
    /// The tensor's quantization table, `None` when it has none.
    pub quant: Option<DeclaredQuant>,
}

/// The input and output tensors of a subgraph or signature, in its order.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct IoTensors {
    pub inputs: Vec<TensorInfo>,
    pub outputs: Vec<TensorInfo>,
}

/// Field slot of the `index`-th field of a table.
const fn slot(index: u16) -> VOffsetT {
    4 + 2 * index
}

/// Declares a typed view over a flatbuffer table (its `Follow` impl).
macro_rules! view {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy)]
        struct $name<'a>(Table<'a>);
        impl<'a> Follow<'a> for $name<'a> {
            type Inner = Self;
            unsafe fn follow(buf: &'a [u8], loc: usize) -> Self {
                // SAFETY: forwarded contract of `Follow::follow`.
                Self(unsafe { Table::new(buf, loc) })
            }
        }
    };
}

/// Declares a typed view with its fields (name, type, index in the schema):
/// a verifier that checks exactly those fields, and one accessor per field
/// (`None` when the field is absent).
macro_rules! table {
    ($(#[$doc:meta])* $name:ident { $($field:ident: $ty:ty = $index:literal),* $(,)? }) => {
        view!($(#[$doc])* $name);
        impl<'a> Verifiable for $name<'a> {
            fn run_verifier(v: &mut Verifier, pos: usize) -> Result<(), InvalidFlatbuffer> {
                v.visit_table(pos)?
                    $(.visit_field::<$ty>(stringify!($field), slot($index), false)?)*
                    .finish();
                Ok(())
            }
        }
        impl<'a> $name<'a> {
            $(
                fn $field(&self) -> Option<<$ty as Follow<'a>>::Inner> {
                    // SAFETY: views are only obtained from `flatbuffers::root`
                    // or from fields of verified views, so this table was
                    // verified by the impl above, which checks this field
                    // with this type.
                    unsafe { self.0.get::<$ty>(slot($index), None) }
                }
            )*
        }
    };
}

type Tables<'a, T> = Vector<'a, ForwardsUOffset<T>>;

/// A little-endian `i64` vector element read bytewise. Quantization zero
/// points are `[long]`, and older converters did not always 8-byte align
/// that vector (MNISTnet_uint8_quant.tflite has one at an offset of 4
/// mod 8), which the `flatbuffers` verifier rejects for `Vector<i64>`.
/// TF Lite itself accepts such files, so read them without the alignment
/// requirement; bounds are still verified.
#[repr(transparent)]
struct UnalignedI64([u8; 8]);
impl flatbuffers::SimpleToVerifyInSlice for UnalignedI64 {}
impl<'a> Follow<'a> for UnalignedI64 {
    type Inner = i64;
    unsafe fn follow(buf: &'a [u8], loc: usize) -> i64 {
        // `Vector::get` only calls this for verified, in-range elements;
        // fall back to 0 rather than panic if that ever did not hold.
        buf.get(loc..loc + 8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map_or(0, i64::from_le_bytes)
    }
}

// schema.fbs. The root `Model` has one view per reader.
table!(
    /// `Model`, verified for its subgraphs: [`subgraph_io`]'s view.
    ModelSubgraphs {
        subgraphs: ForwardsUOffset<Tables<'a, SubGraph<'a>>> = 2,
    }
);
table!(
    /// `Model`, verified for its subgraphs and signatures: [`signature_io`]'s view.
    ModelSignatures {
        subgraphs: ForwardsUOffset<Tables<'a, SubGraph<'a>>> = 2,
        signature_defs: ForwardsUOffset<Tables<'a, SignatureDef<'a>>> = 7,
    }
);
table!(
    /// `Model`, verified for its buffers and metadata entries: [`metadata_buffer`]'s view.
    ModelBuffers {
        buffers: ForwardsUOffset<Tables<'a, Buffer<'a>>> = 4,
        metadata: ForwardsUOffset<Tables<'a, Metadata<'a>>> = 6,
    }
);
table!(SubGraph {
    tensors: ForwardsUOffset<Tables<'a, Tensor<'a>>> = 0,
    inputs: ForwardsUOffset<Vector<'a, i32>> = 1,
    outputs: ForwardsUOffset<Vector<'a, i32>> = 2,
});
table!(Tensor {
    shape: ForwardsUOffset<Vector<'a, i32>> = 0,
    type_: i8 = 1,
    name: ForwardsUOffset<&'a str> = 3,
    quantization: ForwardsUOffset<QuantParams<'a>> = 4,
});
table!(QuantParams {
    scale: ForwardsUOffset<Vector<'a, f32>> = 2,
    zero_point: ForwardsUOffset<Vector<'a, UnalignedI64>> = 3,
});
table!(SignatureDef {
    inputs: ForwardsUOffset<Tables<'a, TensorMap<'a>>> = 0,
    outputs: ForwardsUOffset<Tables<'a, TensorMap<'a>>> = 1,
    subgraph_index: u32 = 4,
});
table!(TensorMap {
    tensor_index: u32 = 1,
});
table!(Buffer {
    data: ForwardsUOffset<Vector<'a, u8>> = 0,
});
table!(Metadata {
    name: ForwardsUOffset<&'a str> = 0,
    buffer: u32 = 1,
});

// metadata_schema.fbs.
table!(
    /// `ModelMetadata`, the root of the `TFLITE_METADATA` buffer.
    MetadataRoot {
        name: ForwardsUOffset<&'a str> = 0,
        subgraph_metadata: ForwardsUOffset<Tables<'a, SubGraphMetadata<'a>>> = 3,
    }
);
table!(SubGraphMetadata {
    input_tensor_metadata: ForwardsUOffset<Tables<'a, TensorMetadata<'a>>> = 2,
    output_tensor_metadata: ForwardsUOffset<Tables<'a, TensorMetadata<'a>>> = 3,
});
table!(TensorMetadata {
    process_units: ForwardsUOffset<Tables<'a, ProcessUnit<'a>>> = 4,
    associated_files: ForwardsUOffset<Tables<'a, AssociatedFile<'a>>> = 6,
});
table!(NormalizationOptions {
    mean: ForwardsUOffset<Vector<'a, f32>> = 0,
    std: ForwardsUOffset<Vector<'a, f32>> = 1,
});
table!(AssociatedFile {
    name: ForwardsUOffset<&'a str> = 0,
    type_: i8 = 2,
});
view!(
    /// `ProcessUnit`: a union of option tables (type in slot 0, table in slot 1).
    ProcessUnit
);

/// `ProcessUnitOptions` type of `NormalizationOptions`.
const NORMALIZATION_OPTIONS: u8 = 1;
/// `AssociatedFileType` of a labels file for an output's axis.
const TENSOR_AXIS_LABELS: i8 = 2;

impl Verifiable for ProcessUnit<'_> {
    fn run_verifier(v: &mut Verifier, pos: usize) -> Result<(), InvalidFlatbuffer> {
        v.visit_table(pos)?
            .visit_union::<u8, _>(
                "options_type",
                slot(0),
                "options",
                slot(1),
                false,
                |key, v, pos| match key {
                    NORMALIZATION_OPTIONS => v
                        .verify_union_variant::<ForwardsUOffset<NormalizationOptions>>(
                            "NormalizationOptions",
                            pos,
                        ),
                    _ => Ok(()),
                },
            )?
            .finish();
        Ok(())
    }
}

impl<'a> ProcessUnit<'a> {
    fn options_type(&self) -> Option<u8> {
        // SAFETY: verified as the union's key by the impl above.
        unsafe { self.0.get::<u8>(slot(0), None) }
    }

    /// The options table, when it is `NormalizationOptions`.
    fn normalization_options(&self) -> Option<NormalizationOptions<'a>> {
        if self.options_type() != Some(NORMALIZATION_OPTIONS) {
            return None;
        }
        // SAFETY: the union verifier above checked the value as
        // `NormalizationOptions` for this key.
        unsafe {
            self.0
                .get::<ForwardsUOffset<NormalizationOptions>>(slot(1), None)
        }
    }
}

/// Schema `TensorType` → Spotter's element types.
fn dtype(t: i8) -> Option<DType> {
    match t {
        0 => Some(DType::F32),
        3 => Some(DType::U8),
        9 => Some(DType::I8),
        _ => None,
    }
}

fn tensor_info(tensors: &Tables<'_, Tensor<'_>>, index: i64) -> Result<TensorInfo, String> {
    let i = usize::try_from(index)
        .ok()
        .filter(|&i| i < tensors.len())
        .ok_or_else(|| {
            format!(
                "tensor index {index} out of range ({} tensors)",
                tensors.len()
            )
        })?;
    let t = tensors.get(i);
    let quant = t.quantization().map(|q| DeclaredQuant {
        scale: q.scale().map(|s| s.iter().collect()).unwrap_or_default(),
        zero_point: q
            .zero_point()
            .map(|z| z.iter().collect())
            .unwrap_or_default(),
    });
    Ok(TensorInfo {
        index: i,
        name: t.name().unwrap_or_default().to_string(),
        shape: t.shape().map(|s| s.iter().collect()).unwrap_or_default(),
        dtype: dtype(t.type_().unwrap_or(0)),
        quant,
    })
}

/// `buf`'s root table as the view `T`, once the file identifier is checked
/// and the fields `T` reads are verified.
fn model_root<'a, T: 'a + Follow<'a> + Verifiable>(buf: &'a [u8]) -> Result<T::Inner, String> {
    if buf.get(4..8) != Some(b"TFL3".as_slice()) {
        return Err("missing the TFL3 file identifier".into());
    }
    flatbuffers::root::<T>(buf).map_err(|e| format!("invalid flatbuffer: {e}"))
}

/// A model's subgraphs, refused when there are none.
fn non_empty<'a>(
    subgraphs: Option<Tables<'a, SubGraph<'a>>>,
) -> Result<Tables<'a, SubGraph<'a>>, String> {
    subgraphs
        .filter(|s| !s.is_empty())
        .ok_or_else(|| "model has no subgraphs".into())
}

/// The inputs and outputs a subgraph lists.
fn subgraph_tensors(sg: SubGraph<'_>, which: usize) -> Result<IoTensors, String> {
    let tensors = sg
        .tensors()
        .ok_or_else(|| format!("subgraph {which} has no tensors"))?;
    let list = |idx: Option<Vector<'_, i32>>| -> Result<Vec<TensorInfo>, String> {
        idx.map(|v| {
            v.iter()
                .map(|i| tensor_info(&tensors, i64::from(i)))
                .collect()
        })
        .unwrap_or_else(|| Ok(Vec::new()))
    };
    Ok(IoTensors {
        inputs: list(sg.inputs())?,
        outputs: list(sg.outputs())?,
    })
}

/// Subgraph 0's input and output tensors: the ones TF Lite's interpreter
/// exposes, in its order.
pub(crate) fn subgraph_io(buf: &[u8]) -> Result<IoTensors, String> {
    let subgraphs = non_empty(model_root::<ModelSubgraphs>(buf)?.subgraphs())?;
    subgraph_tensors(subgraphs.get(0), 0)
}

/// The input and output tensors LiteRT's default signature exposes, in its
/// order: the first SignatureDef's tensor maps when the model has one, else
/// subgraph 0's inputs and outputs.
pub(crate) fn signature_io(buf: &[u8]) -> Result<IoTensors, String> {
    let model = model_root::<ModelSignatures>(buf)?;
    let subgraphs = non_empty(model.subgraphs())?;

    let Some(sig) = model
        .signature_defs()
        .filter(|s| !s.is_empty())
        .map(|s| s.get(0))
    else {
        return subgraph_tensors(subgraphs.get(0), 0);
    };
    let sg_index = sig.subgraph_index().unwrap_or(0) as usize;
    if sg_index >= subgraphs.len() {
        return Err(format!(
            "signature refers to subgraph {sg_index} of {}",
            subgraphs.len()
        ));
    }
    let tensors = subgraphs
        .get(sg_index)
        .tensors()
        .ok_or("subgraph has no tensors")?;
    let map = |maps: Option<Tables<'_, TensorMap<'_>>>| -> Result<Vec<TensorInfo>, String> {
        maps.map(|m| {
            m.iter()
                .map(|tm| tensor_info(&tensors, i64::from(tm.tensor_index().unwrap_or(0))))
                .collect()
        })
        .unwrap_or_else(|| Ok(Vec::new()))
    };
    Ok(IoTensors {
        inputs: map(sig.inputs())?,
        outputs: map(sig.outputs())?,
    })
}

/// The bytes of the `TFLITE_METADATA` buffer, if the model has one.
pub(crate) fn metadata_buffer(buf: &[u8]) -> Option<&[u8]> {
    let model = flatbuffers::root::<ModelBuffers>(buf).ok()?;
    let buffers = model.buffers()?;
    let metadata = model.metadata()?;
    let entry = metadata
        .iter()
        .find(|m| m.name() == Some("TFLITE_METADATA"))?;
    let buffer_index = entry.buffer().unwrap_or(0) as usize;
    if buffer_index >= buffers.len() {
        return None;
    }
    Some(buffers.get(buffer_index).data()?.bytes())
}

/// Parse a metadata flatbuffer (schema `tflite_metadata` `ModelMetadata`).
pub(crate) fn parse_metadata(buf: &[u8]) -> Option<ModelMetadata> {
    let root = flatbuffers::root::<MetadataRoot>(buf).ok()?;
    let mut meta = ModelMetadata {
        name: root.name().map(str::to_string),
        ..Default::default()
    };
    let subgraphs = root.subgraph_metadata()?;
    if subgraphs.is_empty() {
        return Some(meta);
    }
    let subgraph = subgraphs.get(0);
    if let Some(input) = subgraph
        .input_tensor_metadata()
        .filter(|v| !v.is_empty())
        .map(|v| v.get(0))
    {
        for unit in input.process_units().into_iter().flatten() {
            if unit.options_type() != Some(NORMALIZATION_OPTIONS) {
                continue;
            }
            let options = unit.normalization_options()?;
            let mean: Vec<f32> = options.mean()?.iter().collect();
            let std: Vec<f32> = options.std()?.iter().collect();
            meta.input_normalization = Normalization::from_lists(&mean, &std);
        }
    }
    if let Some(output) = subgraph
        .output_tensor_metadata()
        .filter(|v| !v.is_empty())
        .map(|v| v.get(0))
    {
        if let Some(file) = output
            .associated_files()
            .into_iter()
            .flatten()
            .find(|f| f.type_() == Some(TENSOR_AXIS_LABELS))
        {
            meta.labels_file = file.name().map(str::to_string);
        }
    }
    Some(meta)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn testdata() -> PathBuf {
        std::env::var_os("SPOTTER_TESTDATA")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/testdata"))
            })
    }

    // Catches wrong field slots or type codes in the flatbuffer reader (wrong
    // quantization would skew every score).
    #[test]
    fn flatbuffer_reader_matches_model_details() {
        let td = testdata();
        let details: serde_json::Value = serde_json::from_slice(
            &std::fs::read(td.join("golden/model_details.json")).expect("model_details.json"),
        )
        .expect("valid json");
        let models = details.as_object().expect("object of models");
        assert!(models.len() >= 4, "expected the classifiers at least");
        for (rel, d) in models {
            if d.get("error").is_some() {
                continue; // a model TF Lite refuses (models/invalid): no tensor list
            }
            let bytes = std::fs::read(td.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
            let io = signature_io(&bytes).unwrap_or_else(|e| panic!("{rel}: {e}"));
            for (role, got, want) in [
                ("inputs", &io.inputs, &d["inputs"]),
                ("outputs", &io.outputs, &d["outputs"]),
            ] {
                let want = want.as_array().expect("tensor list");
                assert_eq!(got.len(), want.len(), "{rel} {role}");
                for (g, w) in got.iter().zip(want) {
                    assert_eq!(g.name, w["name"].as_str().unwrap(), "{rel} {role} name");
                    let shape: Vec<i32> = w["shape"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|x| x.as_u64().unwrap() as i32)
                        .collect();
                    if g.shape.is_empty() && role == "outputs" {
                        // Shape computed by the op at prepare time (SSD
                        // post-processing); the flatbuffer has none.
                        assert!(!shape.is_empty(), "{rel} {role} {}: scalar", g.name);
                    } else {
                        assert_eq!(g.shape, shape, "{rel} {role} {} shape", g.name);
                    }
                    let dtype = match w["dtype"].as_str().unwrap() {
                        "uint8" => Some(DType::U8),
                        "int8" => Some(DType::I8),
                        "float32" => Some(DType::F32),
                        _ => None,
                    };
                    assert_eq!(g.dtype, dtype, "{rel} {role} {} dtype", g.name);
                    let q = g.quant.as_ref();
                    let scale = w["scale"].as_f64().unwrap_or(0.0) as f32;
                    let got_scale = q.and_then(|q| q.scale.first()).copied().unwrap_or(0.0);
                    assert_eq!(got_scale, scale, "{rel} {role} {} scale", g.name);
                    assert_eq!(
                        q.and_then(|q| q.zero_point.first()).copied().unwrap_or(0),
                        w["zero_point"].as_i64().unwrap_or(0),
                        "{rel} {role} {} zp",
                        g.name
                    );
                }
            }
        }
    }

    // Catches the reader accepting arbitrary bytes (or panicking on them)
    // instead of reporting "not a TFLite model".
    #[test]
    fn flatbuffer_reader_rejects_garbage() {
        for read in [signature_io, subgraph_io] {
            assert!(read(b"").is_err());
            assert!(read(b"hello, this is not a model at all").is_err());
            let mut fake = vec![0u8; 64];
            fake[4..8].copy_from_slice(b"TFL3");
            fake[0] = 60; // root offset pointing near the end: no valid table there
            assert!(read(&fake).is_err());
            // A real model truncated in the middle must fail verification, not panic.
            let bytes = std::fs::read(
                testdata().join("models/classification/mobilenet_v1_0.25_128_quant.tflite"),
            )
            .expect("mobilenet v1 0.25");
            assert!(read(&bytes[..bytes.len() / 3]).is_err());
        }
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
