//! Fuzz target: MJPEG frames from a camera, before decoding. The marker
//! walk of `with_huffman_tables` (which inserts the standard Huffman tables
//! into frames without them) must end on any bytes, and either copy the
//! frame unchanged or insert exactly one DHT segment before its first scan.

use rand::rngs::StdRng;
use rand::Rng;

use super::{mutated_seed, Fuzz, Verdict};
use crate::image::mjpeg::tests::{strip_dht, test_jpeg};
use crate::image::mjpeg::with_huffman_tables;

fn seeds() -> Vec<Vec<u8>> {
    let (jpeg, _) = test_jpeg();
    let stripped = strip_dht(&jpeg);
    // A frame with fill bytes and stand-alone markers before its scan.
    let mut padded = stripped[..2].to_vec();
    padded.extend_from_slice(&[0xFF, 0xFF, 0xFF, 0x01, 0xFF, 0xD0]);
    padded.extend_from_slice(&stripped[2..]);
    vec![jpeg, stripped, padded]
}

fn generate(rng: &mut StdRng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut data = mutated_seed(rng, seeds);
    // Camera buffers often end early or carry garbage after the frame.
    if rng.gen_range(0..4) == 0 {
        let n = rng.gen_range(0..4096);
        data.extend((0..n).map(|_| rng.gen::<u8>()));
    }
    data
}

fn check(bytes: &[u8]) -> Verdict {
    let out = with_huffman_tables(bytes);
    if out == bytes {
        return Ok(false);
    }
    // Inserted: the frame's bytes around one DHT segment.
    let extra = out.len().checked_sub(bytes.len()).ok_or("output shorter")?;
    // The segment starts with 0xFF like the marker it precedes, so the
    // first difference is one byte into it.
    let diff = out
        .iter()
        .zip(bytes)
        .position(|(a, b)| a != b)
        .unwrap_or(bytes.len());
    let at = diff.checked_sub(1).ok_or("output differs at byte 0")?;
    if out.get(at..at + 2) != Some(&[0xFF, 0xC4][..]) || out[at + extra..] != bytes[at..] {
        return Err(format!(
            "{extra} bytes inserted at {at} are not one DHT segment"
        ));
    }
    // Before a start-of-scan marker (after its fill bytes).
    let marker = bytes[at..].iter().find(|&&b| b != 0xFF);
    if marker != Some(&0xDA) {
        return Err(format!("tables inserted at {at}, not before a scan"));
    }
    Ok(true)
}

/// Catches the MJPEG marker walk panicking, looping or writing tables
/// anywhere but before the first scan on a truncated or garbled frame.
#[test]
fn mjpeg() {
    let seeds = seeds();
    assert_eq!(
        check(&seeds[1]),
        Ok(true),
        "a frame without tables gets them"
    );
    let f = Fuzz::new("mjpeg", 16 << 20);
    f.run(|rng| generate(rng, &seeds), check);
}
