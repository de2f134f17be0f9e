//! The resampler pre-processing uses: the `spotter-resample` crate (Pillow's
//! bilinear arithmetic, byte for byte; why a crate of its own: its
//! Cargo.toml). This module holds its tests, which run with Spotter's.

pub(crate) use spotter_resample::Resampler;
#[cfg(test)]
use spotter_resample::SourceBox;

#[cfg(test)]
mod tests {
    use super::*;

    fn full(w: u32, h: u32) -> SourceBox {
        [0.0, 0.0, w as f32, h as f32]
    }

    fn resize(src: &[u8], s: (u32, u32), area: SourceBox, d: (u32, u32)) -> Vec<u8> {
        let mut out = vec![0; d.0 as usize * d.1 as usize * 3];
        Resampler::new().resize(src, s, area, d, &mut out);
        out
    }

    // Would catch weights that do not sum to one (a brightness drift) or a
    // rounding that is not Pillow's: a flat image stays exactly flat through
    // up- and downscaling on both axes.
    #[test]
    fn flat_images_stay_flat() {
        for &(sw, sh, dw, dh) in &[
            (7, 5, 3, 2),
            (3, 2, 11, 9),
            (64, 48, 640, 480),
            (50, 50, 7, 3),
        ] {
            let src: Vec<u8> = [17u8, 128, 250].repeat(sw * sh);
            let out = resize(
                &src,
                (sw as u32, sh as u32),
                full(sw as u32, sh as u32),
                (dw, dh),
            );
            assert!(
                out.chunks_exact(3).all(|p| p == [17, 128, 250]),
                "{sw}x{sh}->{dw}x{dh}"
            );
        }
    }

    // Would catch a pass that runs when its axis keeps its size (Pillow
    // skips it; running it would still be the identity but costs a pass) or
    // a copy of the wrong rows: the same size is a byte-exact copy.
    #[test]
    fn same_size_is_a_copy() {
        let src: Vec<u8> = (0..5 * 4 * 3).map(|i| (i * 37 % 251) as u8).collect();
        assert_eq!(resize(&src, (5, 4), full(5, 4), (5, 4)), src);
        // Only the height changes: each column is resampled on its own, the
        // width untouched.
        let out = resize(&src, (5, 4), full(5, 4), (5, 2));
        assert_eq!(out.len(), 5 * 2 * 3);
    }

    // Values computed with Pillow 13 (`Image.frombytes("RGB", (4, 1), …)
    // .resize((2, 1), Image.BILINEAR)` and `.resize((7, 1), …)`): would catch
    // coefficients or bounds that differ from Pillow's (antialiased
    // downscaling, edge handling when upscaling).
    #[test]
    fn matches_pillow_on_known_rows() {
        let row: Vec<u8> = [0u8, 100, 200, 255]
            .iter()
            .flat_map(|&v| [v, 255 - v, v / 2])
            .collect();
        let down = resize(&row, (4, 1), full(4, 1), (2, 1));
        let r: Vec<u8> = down.chunks_exact(3).map(|p| p[0]).collect();
        assert_eq!(r, [71, 209]);
        let up = resize(&row, (4, 1), full(4, 1), (7, 1));
        let r: Vec<u8> = up.chunks_exact(3).map(|p| p[0]).collect();
        assert_eq!(r, [0, 36, 93, 150, 204, 235, 255]);
    }
}
