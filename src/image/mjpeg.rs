//! MJPEG header repair: the standard Huffman tables inserted into frames
//! that lack them.
//!
//! This module owns following a frame's markers up to its first scan to see
//! whether it defines Huffman tables, and the one DHT segment holding the
//! four tables of ITU-T T.81 Annex K.3 (built at compile time) that
//! `with_huffman_tables` inserts when it does not.

/// Copy an MJPEG frame, inserting the standard Huffman tables if it has none.
///
/// Many UVC cameras omit the DHT segment from MJPEG frames and rely on the
/// default tables of ITU-T T.81 Annex K.3 (as Motion-JPEG in AVI does); plain
/// JPEG decoders reject such frames. The tables are inserted before the first
/// start-of-scan marker. Frames that already define tables, or whose marker
/// structure cannot be followed, are copied unchanged (the decoder reports the
/// latter).
pub(crate) fn with_huffman_tables(jpeg: &[u8]) -> Vec<u8> {
    match scan_for_dht(jpeg) {
        Some(sos) => {
            let mut out = Vec::with_capacity(jpeg.len() + DHT_SEGMENT.len());
            out.extend_from_slice(&jpeg[..sos]);
            out.extend_from_slice(&DHT_SEGMENT);
            out.extend_from_slice(&jpeg[sos..]);
            out
        }
        None => jpeg.to_vec(),
    }
}

/// Offset of the first SOS marker if no DHT segment precedes it; `None` if a
/// DHT is present or the header is malformed.
fn scan_for_dht(jpeg: &[u8]) -> Option<usize> {
    let mut pos = 2; // after SOI
    loop {
        if *jpeg.get(pos)? != 0xFF {
            return None;
        }
        let marker_at = pos;
        pos += 1;
        // Markers may be preceded by any number of 0xFF fill bytes.
        while *jpeg.get(pos)? == 0xFF {
            pos += 1;
        }
        let marker = *jpeg.get(pos)?;
        pos += 1;
        match marker {
            0xC4 => return None,
            0xDA => return Some(marker_at),
            // Stand-alone markers without a length field.
            0x01 | 0xD0..=0xD7 => {}
            _ => {
                let len = u16::from_be_bytes([*jpeg.get(pos)?, *jpeg.get(pos + 1)?]) as usize;
                if len < 2 {
                    return None;
                }
                pos += len;
            }
        }
    }
}

/// Huffman table definitions of ITU-T T.81 Annex K.3: for each table the
/// number of codes of each length 1..=16, then the symbols.
const DC_LUMA_BITS: [u8; 16] = [0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0];
const DC_CHROMA_BITS: [u8; 16] = [0, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0];
const DC_SYMBOLS: [u8; 12] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11];
const AC_LUMA_BITS: [u8; 16] = [0, 2, 1, 3, 3, 2, 4, 3, 5, 5, 4, 4, 0, 0, 1, 0x7d];
const AC_LUMA_SYMBOLS: [u8; 162] = [
    0x01, 0x02, 0x03, 0x00, 0x04, 0x11, 0x05, 0x12, 0x21, 0x31, 0x41, 0x06, 0x13, 0x51, 0x61, 0x07,
    0x22, 0x71, 0x14, 0x32, 0x81, 0x91, 0xa1, 0x08, 0x23, 0x42, 0xb1, 0xc1, 0x15, 0x52, 0xd1, 0xf0,
    0x24, 0x33, 0x62, 0x72, 0x82, 0x09, 0x0a, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x25, 0x26, 0x27, 0x28,
    0x29, 0x2a, 0x34, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3a, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48, 0x49,
    0x4a, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5a, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69,
    0x6a, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7a, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89,
    0x8a, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9a, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7,
    0xa8, 0xa9, 0xaa, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6, 0xb7, 0xb8, 0xb9, 0xba, 0xc2, 0xc3, 0xc4, 0xc5,
    0xc6, 0xc7, 0xc8, 0xc9, 0xca, 0xd2, 0xd3, 0xd4, 0xd5, 0xd6, 0xd7, 0xd8, 0xd9, 0xda, 0xe1, 0xe2,
    0xe3, 0xe4, 0xe5, 0xe6, 0xe7, 0xe8, 0xe9, 0xea, 0xf1, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8,
    0xf9, 0xfa,
];
const AC_CHROMA_BITS: [u8; 16] = [0, 2, 1, 2, 4, 4, 3, 4, 7, 5, 4, 4, 0, 1, 2, 0x77];
const AC_CHROMA_SYMBOLS: [u8; 162] = [
    0x00, 0x01, 0x02, 0x03, 0x11, 0x04, 0x05, 0x21, 0x31, 0x06, 0x12, 0x41, 0x51, 0x07, 0x61, 0x71,
    0x13, 0x22, 0x32, 0x81, 0x08, 0x14, 0x42, 0x91, 0xa1, 0xb1, 0xc1, 0x09, 0x23, 0x33, 0x52, 0xf0,
    0x15, 0x62, 0x72, 0xd1, 0x0a, 0x16, 0x24, 0x34, 0xe1, 0x25, 0xf1, 0x17, 0x18, 0x19, 0x1a, 0x26,
    0x27, 0x28, 0x29, 0x2a, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3a, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48,
    0x49, 0x4a, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5a, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68,
    0x69, 0x6a, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7a, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87,
    0x88, 0x89, 0x8a, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9a, 0xa2, 0xa3, 0xa4, 0xa5,
    0xa6, 0xa7, 0xa8, 0xa9, 0xaa, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6, 0xb7, 0xb8, 0xb9, 0xba, 0xc2, 0xc3,
    0xc4, 0xc5, 0xc6, 0xc7, 0xc8, 0xc9, 0xca, 0xd2, 0xd3, 0xd4, 0xd5, 0xd6, 0xd7, 0xd8, 0xd9, 0xda,
    0xe2, 0xe3, 0xe4, 0xe5, 0xe6, 0xe7, 0xe8, 0xe9, 0xea, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8,
    0xf9, 0xfa,
];

/// Marker, length, and four tables of (class/id byte, 16 counts, symbols).
const DHT_LEN: usize = 4 + 4 * 17 + 12 + 12 + 162 + 162;
/// One DHT segment holding all four standard tables.
static DHT_SEGMENT: [u8; DHT_LEN] = build_dht();

const fn build_dht() -> [u8; DHT_LEN] {
    let mut out = [0u8; DHT_LEN];
    out[0] = 0xFF;
    out[1] = 0xC4;
    let len = (DHT_LEN - 2) as u16;
    out[2] = (len >> 8) as u8;
    out[3] = (len & 0xFF) as u8;
    let mut at = 4;
    at = put_table(&mut out, at, 0x00, &DC_LUMA_BITS, &DC_SYMBOLS);
    at = put_table(&mut out, at, 0x10, &AC_LUMA_BITS, &AC_LUMA_SYMBOLS);
    at = put_table(&mut out, at, 0x01, &DC_CHROMA_BITS, &DC_SYMBOLS);
    at = put_table(&mut out, at, 0x11, &AC_CHROMA_BITS, &AC_CHROMA_SYMBOLS);
    assert!(at == DHT_LEN, "DHT segment length mismatch");
    out
}

const fn put_table(
    out: &mut [u8; DHT_LEN],
    mut at: usize,
    class_id: u8,
    bits: &[u8; 16],
    symbols: &[u8],
) -> usize {
    out[at] = class_id;
    at += 1;
    let mut count = 0usize;
    let mut i = 0;
    while i < 16 {
        out[at] = bits[i];
        count += bits[i] as usize;
        at += 1;
        i += 1;
    }
    assert!(
        count == symbols.len(),
        "Huffman code counts do not match the symbol list"
    );
    let mut j = 0;
    while j < symbols.len() {
        out[at] = symbols[j];
        at += 1;
        j += 1;
    }
    at
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Remove every DHT segment from a JPEG (as many UVC cameras send it).
    pub(crate) fn strip_dht(jpeg: &[u8]) -> Vec<u8> {
        let mut out = jpeg[..2].to_vec();
        let mut pos = 2;
        loop {
            assert_eq!(jpeg[pos], 0xFF);
            let marker = jpeg[pos + 1];
            if marker == 0xDA {
                out.extend_from_slice(&jpeg[pos..]);
                return out;
            }
            let len = u16::from_be_bytes([jpeg[pos + 2], jpeg[pos + 3]]) as usize;
            if marker != 0xC4 {
                out.extend_from_slice(&jpeg[pos..pos + 2 + len]);
            }
            pos += 2 + len;
        }
    }

    pub(crate) fn test_jpeg() -> (Vec<u8>, ::image::RgbImage) {
        let img = ::image::RgbImage::from_fn(64, 48, |x, y| {
            ::image::Rgb([(x * 4) as u8, (y * 5) as u8, ((x * y) % 256) as u8])
        });
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, ::image::ImageFormat::Jpeg).unwrap();
        (out.into_inner(), img)
    }

    // Catches MJPEG frames without Huffman tables (common on UVC webcams) being passed
    // on undecodable, and wrong table data (the decode would differ or fail).
    #[test]
    fn mjpeg_without_dht_gets_standard_tables() {
        let (jpeg, _) = test_jpeg();
        let reference = ::image::load_from_memory(&jpeg).unwrap().to_rgb8();
        let stripped = strip_dht(&jpeg);
        assert!(stripped.len() < jpeg.len(), "test JPEG had no DHT to strip");
        assert!(
            ::image::load_from_memory(&stripped).is_err(),
            "decoder accepts a JPEG without tables"
        );
        let fixed = with_huffman_tables(&stripped);
        let decoded = ::image::load_from_memory(&fixed).unwrap().to_rgb8();
        assert_eq!(decoded.as_raw(), reference.as_raw());
        // A frame that has its tables is passed through byte for byte.
        let copied = with_huffman_tables(&jpeg);
        assert_eq!(copied, jpeg);
    }
}
