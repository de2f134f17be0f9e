//! The privacy keys (issue 23): `[[privacy_mask]]` (per source, a polygon
//! in normalized coordinates like `[[zone]]`, and the `fill` colour its
//! pixels are replaced with) and `[privacy]` (`blur_labels`: the boxes of
//! these labels are blurred, or filled with `label_fill`, in stored
//! snapshots; `mask_inference`: whether the model sees the masked frame).
//! Raw keys and their validation; a mask's source and polygon are checked
//! by the zone validator ([`super::sightings::check_polygon`]), so a bad one
//! names its file, line and key at load. What is done with them is
//! [`crate::image::mask`]'s.

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::raw::{Layers, Origin};
use super::sightings::{check_labels, check_polygon, check_source};
use super::{invalid, val, ConfigError};
use crate::core::zone::Polygon;

type Field<T> = Option<Spanned<T>>;

/// At most this many `[[privacy_mask]]` entries.
const MAX_MASKS: usize = 64;
/// The fill of a mask without `fill`: black.
pub const DEFAULT_FILL: [u8; 3] = [0, 0, 0];

/// One `[[privacy_mask]]`, validated.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PrivacyMaskSettings {
    /// The source whose frames it covers.
    pub source: String,
    /// Normalized (0–1) points, at least three, not self-intersecting.
    #[serde(serialize_with = "polygon_points")]
    pub polygon: Polygon,
    /// The colour the covered pixels become (written back as `#rrggbb`).
    #[serde(serialize_with = "colour")]
    pub fill: [u8; 3],
}

/// `[privacy]`, validated.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PrivacySettings {
    /// Boxes of these labels are obscured in stored snapshots (the result
    /// keeps the box).
    pub blur_labels: Vec<String>,
    /// `None`: those boxes are blurred (pixelated); a colour: filled with it.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "opt_colour")]
    pub label_fill: Option<[u8; 3]>,
    /// The model sees the masked frame (default) or the full one.
    pub mask_inference: bool,
}

impl Default for PrivacySettings {
    fn default() -> Self {
        PrivacySettings {
            blur_labels: Vec::new(),
            label_fill: None,
            mask_inference: true,
        }
    }
}

fn polygon_points<S: serde::Serializer>(p: &Polygon, s: S) -> Result<S::Ok, S::Error> {
    p.points().serialize(s)
}

fn colour<S: serde::Serializer>(c: &[u8; 3], s: S) -> Result<S::Ok, S::Error> {
    format!("#{:02x}{:02x}{:02x}", c[0], c[1], c[2]).serialize(s)
}

fn opt_colour<S: serde::Serializer>(c: &Option<[u8; 3]>, s: S) -> Result<S::Ok, S::Error> {
    match c {
        Some(c) => colour(c, s),
        None => s.serialize_none(),
    }
}

/// `#rrggbb` (or `rrggbb`) as RGB.
fn parse_colour(v: &str) -> Option<[u8; 3]> {
    let hex = v.strip_prefix('#').unwrap_or(v);
    if hex.len() != 6 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let byte = |i: usize| u8::from_str_radix(&hex[i..i + 2], 16).ok();
    Some([byte(0)?, byte(2)?, byte(4)?])
}

fn check_colour(o: &Origin<String>, key: &str) -> Result<[u8; 3], ConfigError> {
    parse_colour(&o.value).ok_or_else(|| {
        invalid(
            o,
            key,
            format!(
                "\"{}\" is not a colour: write it as \"#rrggbb\" (e.g. \"#000000\", black)",
                o.value
            ),
        )
    })
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPrivacyMask {
    pub source: Field<String>,
    pub polygon: Field<Vec<Vec<f64>>>,
    pub fill: Field<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPrivacy {
    pub blur_labels: Field<Vec<String>>,
    pub label_fill: Field<String>,
    pub mask_inference: Field<bool>,
}

/// `[[privacy_mask]]` across the layered files (the last file with the
/// array wins, as for every array of tables); `sources` are the configured
/// source names.
pub(super) fn build_privacy_masks(
    l: &Layers,
    sources: &[String],
) -> Result<Vec<PrivacyMaskSettings>, ConfigError> {
    let Some((raw, at)) = l.get_tables(|r| r.privacy_mask.as_ref()) else {
        return Ok(Vec::new());
    };
    if raw.len() > MAX_MASKS {
        return Err(ConfigError::Invalid {
            path: at.path(),
            line: 0,
            column: 0,
            key: "privacy_mask".into(),
            message: format!("at most {MAX_MASKS} privacy masks"),
        });
    }
    let mut masks = Vec::with_capacity(raw.len());
    for (i, m) in raw.iter().enumerate() {
        let key = |k: &str| format!("privacy_mask[{i}].{k}");
        let missing = |k: &str, why: &str| ConfigError::Missing {
            path: at.path(),
            key: key(k),
            message: why.into(),
        };
        let source = check_source(at.at(&m.source), &key("source"), sources, &missing)?;
        let polygon = check_polygon(
            at.at(&m.polygon),
            &key("polygon"),
            "[[privacy_mask]]",
            &missing,
        )?;
        let fill = match at.at(&m.fill) {
            Some(o) => check_colour(&o, &key("fill"))?,
            None => DEFAULT_FILL,
        };
        masks.push(PrivacyMaskSettings {
            source,
            polygon,
            fill,
        });
    }
    Ok(masks)
}

/// `[privacy]` across the layered files.
pub(super) fn build_privacy(l: &Layers) -> Result<PrivacySettings, ConfigError> {
    macro_rules! get {
        ($f:ident) => {
            l.get(|r| r.privacy.as_ref()?.$f.as_ref())
        };
    }
    let labels = get!(blur_labels);
    check_labels(&labels, "privacy.blur_labels")?;
    let label_fill = match get!(label_fill) {
        Some(o) => Some(check_colour(&o, "privacy.label_fill")?),
        None => None,
    };
    Ok(PrivacySettings {
        blur_labels: val(&labels, Vec::new()),
        label_fill,
        mask_inference: val(&get!(mask_inference), true),
    })
}

#[cfg(test)]
mod tests {
    use super::parse_colour;

    // Would catch a colour parsed with its channels swapped or a malformed
    // one accepted as black.
    #[test]
    fn colours_parse_as_rgb() {
        assert_eq!(parse_colour("#ff8000"), Some([255, 128, 0]));
        assert_eq!(parse_colour("0000Ff"), Some([0, 0, 255]));
        for bad in ["", "#fff", "#gg0000", "#ff00000", "black", "#ff 000"] {
            assert_eq!(parse_colour(bad), None, "{bad}");
        }
    }
}
