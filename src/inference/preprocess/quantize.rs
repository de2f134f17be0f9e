//! Normalization and quantization: from pixel values to tensor elements.
//!
//! A pixel value `p ∈ [0, 255]` becomes a real value and then a tensor element:
//!
//! ```text
//! real = (p - mean[c]) / std[c]                      (Normalization, per channel)
//! q    = clamp(round(real / scale) + zero_point)     (the tensor's own quantization)
//! ```
//!
//! For float32 inputs `real` is stored as is. [`Normalization`] is explicit and
//! can be set per model. Its default ([`Normalization::default_for`]) is derived
//! from the input tensor: for a quantized input `mean` is the zero point
//! expressed in the uint8 pixel domain (`zp` for uint8, `zp + 128` for int8) and
//! `std = 1 / scale`, so raw pixels map onto the tensor's range exactly (uint8
//! models take raw pixels, as TFLite image models expect; int8 models take
//! `p - 128`). Float inputs default to the model metadata's
//! `NormalizationOptions`, else `mean = std = 127.5` (range [-1, 1]). Nothing is
//! hard-coded to 1/128 and 128.
//!
//! Because the mapping depends only on `(channel, p)`, it is precomputed as a
//! 256-entry table per channel ([`InputLut`]), and when the table is the
//! identity (uint8) or a sign flip (int8) the copy takes a fast path. `round`
//! is half away from zero.

use serde::{Deserialize, Serialize};

use crate::inference::{DType, InferenceError, Quant, TensorSpec};

/// Per-channel `real = (p - mean) / std` applied to pixel values in [0, 255].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Normalization {
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl Normalization {
    /// The same mean and std for every channel.
    pub(crate) fn uniform(mean: f32, std: f32) -> Normalization {
        Normalization {
            mean: [mean; 3],
            std: [std; 3],
        }
    }

    /// From metadata lists of length 1 (all channels) or 3; `None` otherwise or
    /// when a std is zero or a value is not finite.
    pub(crate) fn from_lists(mean: &[f32], std: &[f32]) -> Option<Normalization> {
        let pick = |v: &[f32]| -> Option<[f32; 3]> {
            match v {
                [a] => Some([*a; 3]),
                [a, b, c] => Some([*a, *b, *c]),
                _ => None,
            }
        };
        let n = Normalization {
            mean: pick(mean)?,
            std: pick(std)?,
        };
        n.validate().ok().map(|()| n)
    }

    /// Check that every std is non-zero and every value finite.
    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.mean.iter().chain(&self.std).any(|v| !v.is_finite()) || self.std.contains(&0.0) {
            return Err(format!(
                "invalid normalization {self:?}: values must be finite and std non-zero"
            ));
        }
        Ok(())
    }

    /// The default for an input tensor (see the module documentation).
    pub fn default_for(spec: &TensorSpec, metadata: Option<Normalization>) -> Normalization {
        match spec.dtype {
            DType::F32 => metadata.unwrap_or_else(|| Normalization::uniform(127.5, 127.5)),
            DType::U8 | DType::I8 => {
                let q = effective_quant(spec);
                let shift = if spec.dtype == DType::I8 { 128.0 } else { 0.0 };
                Normalization::uniform(q.zero_point as f32 + shift, 1.0 / q.scale)
            }
        }
    }
}

/// The quantization used for an integer tensor: its own, or scale 1 / zero
/// point 0 when the model declares none (the tensor then holds raw values).
pub fn effective_quant(spec: &TensorSpec) -> Quant {
    match spec.quant {
        Some(q) if q.scale > 0.0 && q.scale.is_finite() => q,
        _ => Quant {
            scale: 1.0,
            zero_point: 0,
        },
    }
}

/// Per-channel lookup table from pixel value to tensor element.
#[derive(Clone)]
pub enum InputLut {
    /// uint8/int8 elements (int8 stored as its two's-complement byte).
    Bytes(Box<[[u8; 256]; 3]>),
    Floats(Box<[[f32; 256]; 3]>),
}

impl std::fmt::Debug for InputLut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            InputLut::Bytes(_) => "InputLut::Bytes",
            InputLut::Floats(_) => "InputLut::Floats",
        })
    }
}

/// Which shortcut applies to a byte table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FastPath {
    None,
    /// q == p for every channel: copy.
    Copy,
    /// q == p - 128 as int8 for every channel: flip the top bit.
    FlipSign,
}

impl InputLut {
    /// Build the table for a tensor of `dtype`/`quant` under `norm`.
    pub(crate) fn new(dtype: DType, quant: Quant, norm: &Normalization) -> InputLut {
        let real =
            |c: usize, p: usize| (p as f64 - f64::from(norm.mean[c])) / f64::from(norm.std[c]);
        match dtype {
            DType::F32 => {
                let mut t = Box::new([[0f32; 256]; 3]);
                for (c, row) in t.iter_mut().enumerate() {
                    for (p, v) in row.iter_mut().enumerate() {
                        *v = real(c, p) as f32;
                    }
                }
                InputLut::Floats(t)
            }
            DType::U8 | DType::I8 => {
                let (lo, hi) = if dtype == DType::U8 {
                    (0.0, 255.0)
                } else {
                    (-128.0, 127.0)
                };
                let mut t = Box::new([[0u8; 256]; 3]);
                for (c, row) in t.iter_mut().enumerate() {
                    for (p, v) in row.iter_mut().enumerate() {
                        let q = (real(c, p) / f64::from(quant.scale)).round()
                            + f64::from(quant.zero_point);
                        *v = (q.clamp(lo, hi) as i32) as u8;
                    }
                }
                InputLut::Bytes(t)
            }
        }
    }

    pub(super) fn fast_path(&self, channels: usize) -> FastPath {
        let InputLut::Bytes(t) = self else {
            return FastPath::None;
        };
        let rows = &t[..channels];
        if rows
            .iter()
            .all(|r| r.iter().enumerate().all(|(p, &q)| q as usize == p))
        {
            FastPath::Copy
        } else if rows
            .iter()
            .all(|r| r.iter().enumerate().all(|(p, &q)| q == (p as u8) ^ 0x80))
        {
            FastPath::FlipSign
        } else {
            FastPath::None
        }
    }

    #[cfg(test)]
    /// Element value of pixel `p` in channel `c`, dequantized for byte tables.
    pub(crate) fn lookup(&self, c: usize, p: u8) -> f32 {
        match self {
            InputLut::Bytes(t) => f32::from(t[c][p as usize]),
            InputLut::Floats(t) => t[c][p as usize],
        }
    }
}

/// Quantize interleaved pixels `src` (`channels` per pixel) into tensor bytes `dst`.
/// `dst` must hold exactly `src.len()` elements of the table's type.
pub fn quantize_into(
    src: &[u8],
    channels: usize,
    lut: &InputLut,
    dst: &mut [u8],
) -> Result<(), InferenceError> {
    quantize_with(src, channels, lut, lut.fast_path(channels.min(3)), dst)
}

/// [`quantize_into`] with the table's [`FastPath`] computed once by the caller.
pub(super) fn quantize_with(
    src: &[u8],
    channels: usize,
    lut: &InputLut,
    fast: FastPath,
    dst: &mut [u8],
) -> Result<(), InferenceError> {
    let elem = if matches!(lut, InputLut::Floats(_)) {
        4
    } else {
        1
    };
    if dst.len() != src.len() * elem || channels == 0 || channels > 3 {
        return Err(InferenceError::Image(format!(
            "quantize: {} pixel bytes with {channels} channels do not fill a {}-byte tensor",
            src.len(),
            dst.len()
        )));
    }
    match (lut, fast) {
        (_, FastPath::Copy) => dst.copy_from_slice(src),
        (_, FastPath::FlipSign) => {
            // Eight bytes at a time: this crate is built at opt-level 1 in
            // the dev profile, which does not vectorise the byte loop.
            let mut d8 = dst.chunks_exact_mut(8);
            let mut s8 = src.chunks_exact(8);
            for (d, s) in (&mut d8).zip(&mut s8) {
                let mut word = [0u8; 8];
                word.copy_from_slice(s);
                let v = u64::from_ne_bytes(word) ^ 0x8080_8080_8080_8080;
                d.copy_from_slice(&v.to_ne_bytes());
            }
            for (d, s) in d8.into_remainder().iter_mut().zip(s8.remainder()) {
                *d = s ^ 0x80;
            }
        }
        (InputLut::Bytes(t), FastPath::None) => {
            for (d, s) in dst
                .chunks_exact_mut(channels)
                .zip(src.chunks_exact(channels))
            {
                for c in 0..channels {
                    d[c] = t[c][s[c] as usize];
                }
            }
        }
        (InputLut::Floats(t), FastPath::None) => {
            for (i, (d, s)) in dst.chunks_exact_mut(4).zip(src).enumerate() {
                d.copy_from_slice(&t[i % channels][*s as usize].to_ne_bytes());
            }
        }
    }
    Ok(())
}

/// Map RGB pixels through a byte table in place (the pixels already sit in the tensor).
pub(super) fn quantize_bytes_in_place(rgb: &mut [u8], table: &[[u8; 256]; 3], fast: FastPath) {
    match fast {
        FastPath::Copy => {}
        FastPath::FlipSign => rgb.iter_mut().for_each(|v| *v ^= 0x80),
        FastPath::None => {
            for px in rgb.chunks_exact_mut(3) {
                for c in 0..3 {
                    px[c] = table[c][px[c] as usize];
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{q, spec};
    use super::*;

    #[test]
    fn uint8_default_is_raw_pixels_for_any_quantization() {
        // Catches hard-coded 1/128, 128 normalization: uint8 models must receive raw pixels.
        for (scale, zp) in [(1.0 / 128.0, 128), (0.012_566_017, 131), (1.0 / 127.0, 128)] {
            let s = spec(DType::U8, q(scale, zp), 1, 1, 3);
            let n = Normalization::default_for(&s, None);
            let lut = InputLut::new(DType::U8, effective_quant(&s), &n);
            for p in 0..=255u8 {
                assert_eq!(
                    lut.lookup(1, p),
                    f32::from(p),
                    "scale {scale} zp {zp} p {p}"
                );
            }
            assert_eq!(lut.fast_path(3), FastPath::Copy);
        }
    }

    #[test]
    fn int8_default_is_pixel_minus_128() {
        // Catches int8 inputs fed raw uint8 bytes (wraps 200 to -56 instead of 72).
        let s = spec(DType::I8, q(0.0078, -3), 1, 1, 3);
        let n = Normalization::default_for(&s, None);
        let lut = InputLut::new(DType::I8, effective_quant(&s), &n);
        assert_eq!(lut.lookup(0, 200) as u8 as i8, 72);
        assert_eq!(lut.lookup(0, 0) as u8 as i8, -128);
        assert_eq!(lut.fast_path(3), FastPath::FlipSign);
        let mut dst = [0u8; 3];
        quantize_into(&[0, 128, 255], 3, &lut, &mut dst).unwrap();
        assert_eq!(dst.map(|b| b as i8), [-128, 0, 127]);
    }

    #[test]
    fn explicit_normalization_is_quantized_with_tensor_params() {
        // Catches normalization applied without the tensor's scale/zero point.
        // real = (p - 127.5) / 127.5; tensor scale 1/128, zp 128 -> q = round(real * 128) + 128.
        let s = spec(DType::U8, q(1.0 / 128.0, 128), 1, 1, 3);
        let n = Normalization::uniform(127.5, 127.5);
        let lut = InputLut::new(DType::U8, effective_quant(&s), &n);
        assert_eq!(lut.lookup(0, 0), 0.0);
        assert_eq!(lut.lookup(0, 255), 255.0); // 1.0 * 128 + 128 = 256, clamped
        assert_eq!(
            lut.lookup(0, 64),
            ((64.0f64 - 127.5) / 127.5 * 128.0).round() as f32 + 128.0
        );
        assert_eq!(lut.fast_path(3), FastPath::None);
    }

    #[test]
    fn float_input_default_and_metadata() {
        // Catches float models getting raw 0..255 instead of [-1, 1], or metadata being ignored.
        let s = spec(DType::F32, None, 1, 1, 3);
        let n = Normalization::default_for(&s, None);
        let lut = InputLut::new(DType::F32, effective_quant(&s), &n);
        assert_eq!(lut.lookup(0, 0), -1.0);
        assert_eq!(lut.lookup(0, 255), 1.0);
        let meta = Normalization {
            mean: [0.0; 3],
            std: [255.0; 3],
        };
        assert_eq!(Normalization::default_for(&s, Some(meta)), meta);
        let mut dst = [0u8; 12];
        quantize_into(&[0, 255, 0], 3, &lut, &mut dst).unwrap();
        assert_eq!(f32::from_ne_bytes(dst[4..8].try_into().unwrap()), 1.0);
    }

    #[test]
    fn per_channel_normalization() {
        // Catches channel order mix-ups (R mean applied to B).
        let n = Normalization::from_lists(&[10.0, 20.0, 30.0], &[1.0, 1.0, 1.0]).unwrap();
        let lut = InputLut::new(
            DType::U8,
            Quant {
                scale: 1.0,
                zero_point: 0,
            },
            &n,
        );
        let mut dst = [0u8; 3];
        quantize_into(&[40, 40, 40], 3, &lut, &mut dst).unwrap();
        assert_eq!(dst, [30, 20, 10]);
        assert!(Normalization::from_lists(&[1.0, 2.0], &[1.0]).is_none());
        assert!(Normalization::from_lists(&[1.0], &[0.0]).is_none());
    }
}
