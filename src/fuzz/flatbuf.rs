//! Fuzz target: TFLite model files. Every input goes through
//! `ModelFile::from_bytes` (TF Lite's verifier, then Spotter's reader),
//! the embedded labels and associated files when it is accepted, and
//! Spotter's own flatbuffer readers (`subgraph_io`, `signature_io`, the
//! metadata) whatever the verifier said. Seeds are the real models of
//! `$SPOTTER_TESTDATA` and the metadata flatbuffer inside one.

use std::path::Path;

use rand::rngs::StdRng;
use rand::Rng;

use super::{mutate_bytes, testdata, Fuzz, Verdict};
use crate::inference::flatbuf::{metadata_buffer, parse_metadata, signature_io, subgraph_io};
use crate::inference::modelfile::ModelFile;

/// A model may be held a few times over (the file, TF Lite's unpacked copy,
/// the labels): far below this for the seeds' 5 MiB at most.
const MAX_ALLOC: usize = 128 << 20;

fn seeds() -> Vec<Vec<u8>> {
    let td = testdata().join("models");
    let mut seeds: Vec<Vec<u8>> = [
        "golden/MNISTnet_uint8_quant.tflite",
        "golden/MNISTnet_v2_uint8_quant.tflite",
        "classification/mobilenet_v1_0.25_128_quant.tflite",
        "classification/efficientnet_lite0_int8_2.tflite",
        "invalid/person_detect_tflm_only.tflite",
    ]
    .iter()
    .map(|rel| std::fs::read(td.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}")))
    .collect();
    let meta = metadata_buffer(&seeds[3])
        .expect("efficientnet carries TFLite metadata")
        .to_vec();
    seeds.push(meta);
    seeds
}

/// Mutations that keep most of a model intact: a few byte mutations,
/// biased to the tables at the start and end of the file (weights sit in
/// between), and sometimes a 4-aligned offset pointed at another table.
fn generate(rng: &mut StdRng, seeds: &[Vec<u8>]) -> Vec<u8> {
    // Small seeds (and the metadata) more often: they run faster.
    let pick = match rng.gen_range(0..10) {
        0..=2 => 0,
        3 | 4 => 1,
        5 | 6 => 2,
        7 => 3,
        8 => 4,
        _ => 5,
    };
    let mut data = seeds[pick.min(seeds.len() - 1)].clone();
    for _ in 0..rng.gen_range(1..=4) {
        if rng.gen_range(0..3) == 0 && data.len() >= 8 {
            // An offset field somewhere in the first 64 KiB, re-aimed.
            let i = rng.gen_range(0..(data.len().min(65536) / 4)) * 4;
            let target = rng.gen_range(0..data.len() as u32 + 64);
            let v = target.wrapping_sub(i as u32);
            if let Some(d) = data.get_mut(i..i + 4) {
                d.copy_from_slice(&v.to_le_bytes());
            }
        } else {
            mutate_bytes(rng, &mut data, &[]);
        }
    }
    data
}

fn check(bytes: &[u8]) -> Verdict {
    let mut accepted = false;
    if let Ok(model) = ModelFile::from_bytes(Path::new("fuzz.tflite"), bytes.to_vec()) {
        accepted = true;
        let _ = model.associated_files();
        if let Some(labels) = model.embedded_labels() {
            if labels.is_empty() {
                return Err("embedded labels accepted but empty".into());
            }
        }
    }
    let io = subgraph_io(bytes);
    let sig = signature_io(bytes);
    if let Ok(io) = io.as_ref().or(sig.as_ref()) {
        for t in io.inputs.iter().chain(&io.outputs) {
            // Shapes and lists come from the file: nothing may have been
            // expanded beyond what the bytes can hold.
            if t.shape.len() > bytes.len() / 4 || t.name.len() > bytes.len() {
                return Err(format!("tensor {} larger than the file", t.name));
            }
        }
    }
    let _ = metadata_buffer(bytes).map(parse_metadata);
    let _ = parse_metadata(bytes);
    Ok(accepted)
}

/// Catches a panic, a hang or an unbounded allocation when a corrupt or
/// hostile `.tflite` file is read (a bad model must be an error).
#[test]
fn flatbuf() {
    let seeds = seeds();
    for s in &seeds[..4] {
        assert!(
            ModelFile::from_bytes(Path::new("seed"), s.clone()).is_ok(),
            "seed refused"
        );
    }
    let f = Fuzz::new("flatbuf", MAX_ALLOC);
    f.run(|rng| generate(rng, &seeds), check);
}
