//! YUYV (packed YUV 4:2:2) → packed RGB8 conversion.
//!
//! This module owns the colour conversion for frames a camera delivers as
//! `YUYV` (byte order Y0 U Y1 V, one U/V pair shared by two horizontal
//! pixels). Webcams send BT.601 limited ("studio") range: Y in 16..=235,
//! U/V in 16..=240 centred on 128. The conversion uses the usual 8-bit
//! fixed-point BT.601 coefficients (scaled by 256) so it is exact integer
//! arithmetic with no floating point, and every length is checked up front so
//! malformed input gives an error instead of a panic.

/// Errors from a YUYV conversion: the geometry or a buffer length is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum YuyvError {
    #[error("YUYV: width {width} is odd; YUYV packs pixels in pairs")]
    OddWidth { width: u32 },
    #[error("YUYV: empty image {width}x{height}")]
    Empty { width: u32, height: u32 },
    #[error("YUYV: stride {stride} is smaller than the {min} bytes a {width}-pixel row needs")]
    StrideTooSmall { stride: u32, width: u32, min: u64 },
    #[error("YUYV: source holds {len} bytes, a {width}x{height} image with stride {stride} needs {need}")]
    SourceTooShort {
        len: usize,
        need: u64,
        width: u32,
        height: u32,
        stride: u32,
    },
    #[error("YUYV: destination holds {len} bytes, {width}x{height} RGB8 needs exactly {need}")]
    DestinationSize {
        len: usize,
        need: u64,
        width: u32,
        height: u32,
    },
}

/// Number of bytes a packed RGB8 image of `width` x `height` occupies.
pub(crate) fn rgb_len(width: u32, height: u32) -> u64 {
    u64::from(width) * u64::from(height) * 3
}

/// Convert a packed YUYV image into packed RGB8.
///
/// `src` holds `height` rows of `stride` bytes each (the last row may stop
/// right after its `width * 2` pixel bytes); `dst` must be exactly
/// `width * height * 3` bytes. `width` must be even and non-zero.
pub(crate) fn yuyv_to_rgb(
    src: &[u8],
    width: u32,
    height: u32,
    stride: u32,
    dst: &mut [u8],
) -> Result<(), YuyvError> {
    check_geometry(src.len(), width, height, stride)?;
    let need_dst = rgb_len(width, height);
    if dst.len() as u64 != need_dst {
        return Err(YuyvError::DestinationSize {
            len: dst.len(),
            need: need_dst,
            width,
            height,
        });
    }

    // All lengths were checked above against u64 products, so these usize
    // values fit (they are bounded by the slice lengths).
    let row_bytes = width as usize * 2;
    let stride = stride as usize;
    let dst_row_bytes = width as usize * 3;
    for (y, dst_row) in dst.chunks_exact_mut(dst_row_bytes).enumerate() {
        let start = y * stride;
        convert_row(&src[start..start + row_bytes], dst_row);
    }
    Ok(())
}

/// Check that a YUYV image of `width` x `height` with `stride` bytes per row
/// fits in `src_len` bytes: width even and non-zero, stride at least
/// `width * 2`, and every row present (the last may stop right after its
/// pixel bytes). Products are computed in `u64`, so huge sizes cannot wrap.
pub(crate) fn check_geometry(
    src_len: usize,
    width: u32,
    height: u32,
    stride: u32,
) -> Result<(), YuyvError> {
    if width == 0 || height == 0 {
        return Err(YuyvError::Empty { width, height });
    }
    if width % 2 != 0 {
        return Err(YuyvError::OddWidth { width });
    }
    let row_bytes = u64::from(width) * 2;
    if u64::from(stride) < row_bytes {
        return Err(YuyvError::StrideTooSmall {
            stride,
            width,
            min: row_bytes,
        });
    }
    let need_src = u64::from(stride) * u64::from(height - 1) + row_bytes;
    if (src_len as u64) < need_src {
        return Err(YuyvError::SourceTooShort {
            len: src_len,
            need: need_src,
            width,
            height,
            stride,
        });
    }
    Ok(())
}

/// Convert one row of YUYV pixels into RGB8.
///
/// The pixel count is `dst.len() / 3`; it must be even, `dst.len()` must be a
/// multiple of 3 and `src` must hold at least `pixels * 2` bytes (extra
/// padding bytes are ignored). Useful for converting straight into a model
/// input row by row.
pub(crate) fn yuyv_to_rgb_row(src: &[u8], dst: &mut [u8]) -> Result<(), YuyvError> {
    let pixels = dst.len() / 3;
    let width = u32::try_from(pixels).unwrap_or(u32::MAX);
    if dst.len() % 3 != 0 || pixels == 0 {
        return Err(YuyvError::DestinationSize {
            len: dst.len(),
            need: rgb_len(width.max(1), 1),
            width,
            height: 1,
        });
    }
    if pixels % 2 != 0 {
        return Err(YuyvError::OddWidth { width });
    }
    let need = pixels as u64 * 2;
    if (src.len() as u64) < need {
        return Err(YuyvError::SourceTooShort {
            len: src.len(),
            need,
            width,
            height: 1,
            stride: width.saturating_mul(2),
        });
    }
    convert_row(&src[..pixels * 2], dst);
    Ok(())
}

/// Convert a row whose lengths were already validated: `src.len() == 2 * n`,
/// `dst.len() == 3 * n`, `n` even.
#[inline]
fn convert_row(src: &[u8], dst: &mut [u8]) {
    for (yuyv, rgb) in src.chunks_exact(4).zip(dst.chunks_exact_mut(6)) {
        let c = chroma(yuyv[1], yuyv[3]);
        pixel(yuyv[0], c, &mut rgb[..3]);
        pixel(yuyv[2], c, &mut rgb[3..]);
    }
}

/// The chroma terms of one U/V pair, shared by the pixels that use it
/// (BT.601 limited range, coefficients scaled by 256, rounding included):
/// red, green and blue contributions.
#[inline]
pub(crate) fn chroma(u: u8, v: u8) -> [i32; 3] {
    let d = i32::from(u) - 128;
    let e = i32::from(v) - 128;
    [409 * e + 128, -100 * d - 208 * e + 128, 516 * d + 128]
}

/// One RGB pixel from its luma and the chroma terms of its U/V pair.
#[inline]
pub(crate) fn pixel(y: u8, c: [i32; 3], rgb: &mut [u8]) {
    let l = 298 * (i32::from(y) - 16);
    rgb[0] = clamp8((l + c[0]) >> 8);
    rgb[1] = clamp8((l + c[1]) >> 8);
    rgb[2] = clamp8((l + c[2]) >> 8);
}

#[inline]
fn clamp8(v: i32) -> u8 {
    v.clamp(0, 255) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference BT.601 limited-range encoder (floating point, independent of
    /// the decoder's fixed-point coefficients).
    fn encode(r: u8, g: u8, b: u8) -> (u8, u8, u8) {
        let (r, g, b) = (f64::from(r), f64::from(g), f64::from(b));
        let y = 16.0 + (65.481 * r + 128.553 * g + 24.966 * b) / 255.0;
        let u = 128.0 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255.0;
        let v = 128.0 + (112.0 * r - 93.786 * g - 18.214 * b) / 255.0;
        (y.round() as u8, u.round() as u8, v.round() as u8)
    }

    fn assert_close(got: &[u8], want: [u8; 3], tol: i32, what: &str) {
        for (i, (&g, &w)) in got.iter().zip(want.iter()).enumerate() {
            assert!(
                (i32::from(g) - i32::from(w)).abs() <= tol,
                "{what}: channel {i}: got {got:?}, want {want:?} ±{tol}"
            );
        }
    }

    // Catches wrong coefficients, swapped U/V or wrong byte order: hand-encoded
    // BT.601 limited-range bars must decode to the pure colours.
    #[test]
    fn bars_decode_to_known_colours() {
        // (Y, U, V) from the BT.601 studio-range table, and the expected RGB.
        type Bar = ((u8, u8, u8), [u8; 3], &'static str);
        let bars: [Bar; 7] = [
            ((16, 128, 128), [0, 0, 0], "black"),
            ((235, 128, 128), [255, 255, 255], "white"),
            ((81, 90, 240), [255, 0, 0], "red"),
            ((145, 54, 34), [0, 255, 0], "green"),
            ((41, 240, 110), [0, 0, 255], "blue"),
            ((210, 16, 146), [255, 255, 0], "yellow"),
            ((126, 128, 128), [128, 128, 128], "grey"),
        ];
        let width = (bars.len() * 2) as u32;
        let mut src = Vec::new();
        for &((y, u, v), _, _) in &bars {
            src.extend_from_slice(&[y, u, y, v]);
        }
        // Two identical rows with 8 bytes of padding per row.
        let stride = width * 2 + 8;
        let mut img = Vec::new();
        for _ in 0..2 {
            img.extend_from_slice(&src);
            img.extend_from_slice(&[0xAA; 8]);
        }
        let mut dst = vec![0u8; (width * 2 * 3) as usize];
        yuyv_to_rgb(&img, width, 2, stride, &mut dst).unwrap();
        for row in 0..2 {
            for (i, &(_, want, name)) in bars.iter().enumerate() {
                for px in 0..2 {
                    let off = (row * width as usize + i * 2 + px) * 3;
                    assert_close(&dst[off..off + 3], want, 2, name);
                }
            }
        }
    }

    // Catches a decoder that is not the inverse of BT.601 limited range (e.g.
    // full-range or BT.709 coefficients) on arbitrary colours, and a luma
    // mix-up between the two pixels of a pair.
    #[test]
    fn round_trip_through_reference_encoder() {
        let mut worst = 0;
        let mut colours = Vec::new();
        for r in (0..=255u16).step_by(17) {
            for g in (0..=255u16).step_by(51) {
                for b in (0..=255u16).step_by(85) {
                    colours.push([r as u8, g as u8, b as u8]);
                }
            }
        }
        let width = (colours.len() * 2) as u32;
        let mut src = Vec::new();
        for c in &colours {
            let (y, u, v) = encode(c[0], c[1], c[2]);
            // Second pixel of the pair: same chroma, black luma, to check the
            // two Y samples are used for their own pixels.
            src.extend_from_slice(&[y, u, 16, v]);
        }
        let mut dst = vec![0u8; rgb_len(width, 1) as usize];
        yuyv_to_rgb(&src, width, 1, width * 2, &mut dst).unwrap();
        for (i, c) in colours.iter().enumerate() {
            let got = &dst[i * 6..i * 6 + 3];
            for ch in 0..3 {
                worst = worst.max((i32::from(got[ch]) - i32::from(c[ch])).abs());
            }
            assert_close(got, *c, 3, "round trip");
        }
        assert!(worst <= 3, "worst channel error {worst}");
        // The same result through the row API.
        let mut row = vec![0u8; dst.len()];
        yuyv_to_rgb_row(&src, &mut row).unwrap();
        assert_eq!(row, dst);
    }

    // Catches missing validation: malformed geometry must be an error, never a panic.
    #[test]
    fn rejects_bad_geometry() {
        let src = vec![128u8; 64];
        let mut dst = vec![0u8; 3 * 3 * 2];
        assert_eq!(
            yuyv_to_rgb(&src, 3, 2, 8, &mut dst),
            Err(YuyvError::OddWidth { width: 3 })
        );
        let mut dst = vec![0u8; 4 * 2 * 3];
        assert!(matches!(
            yuyv_to_rgb(&src, 4, 2, 6, &mut dst),
            Err(YuyvError::StrideTooSmall { .. })
        ));
        // 4x2 with stride 40 needs 40 + 8 = 48 bytes; give 47.
        assert!(matches!(
            yuyv_to_rgb(&src[..47], 4, 2, 40, &mut dst),
            Err(YuyvError::SourceTooShort { need: 48, .. })
        ));
        // Exactly 48 is enough: the last row needs no padding.
        assert!(yuyv_to_rgb(&src[..48], 4, 2, 40, &mut dst).is_ok());
        let mut short = vec![0u8; 4 * 2 * 3 - 1];
        assert!(matches!(
            yuyv_to_rgb(&src, 4, 2, 8, &mut short),
            Err(YuyvError::DestinationSize { .. })
        ));
        assert!(matches!(
            yuyv_to_rgb(&src, 0, 2, 8, &mut dst),
            Err(YuyvError::Empty { .. })
        ));
        // Huge dimensions must not overflow into an accepted length.
        assert!(yuyv_to_rgb(&src, u32::MAX - 1, u32::MAX, u32::MAX, &mut dst).is_err());
        // Row API: odd pixel count, short source, non-multiple-of-3 destination.
        let mut odd = vec![0u8; 9];
        assert!(matches!(
            yuyv_to_rgb_row(&src, &mut odd),
            Err(YuyvError::OddWidth { .. })
        ));
        let mut two = vec![0u8; 6];
        assert!(matches!(
            yuyv_to_rgb_row(&src[..3], &mut two),
            Err(YuyvError::SourceTooShort { .. })
        ));
        let mut ragged = vec![0u8; 7];
        assert!(matches!(
            yuyv_to_rgb_row(&src, &mut ragged),
            Err(YuyvError::DestinationSize { .. })
        ));
    }
}
