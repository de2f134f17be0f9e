//! The sightings keys (issue 18): `[sightings]` with its `[[sightings.rule]]`
//! per-label rules, `[[zone]]`, `[motion]`, and the storage policy keys of
//! `[store]` (`keep_frames`, `frame_sample_s`) and the classifier region
//! `model.roi`; raw keys and their validation. Zones are checked here
//! (polygon in range, not self-intersecting, source configured), so a bad
//! one names its file, line and key at load.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::raw::{Layers, Origin};
use super::{in_range, invalid, val, ConfigError};
use crate::core::zone::{Anchor, Polygon};

type Field<T> = Option<Spanned<T>>;

/// Default `sightings.min_frames`, `window`, `end_after_ms`.
pub const DEFAULT_MIN_FRAMES: u32 = 2;
pub const DEFAULT_WINDOW: u32 = 3;
pub const DEFAULT_END_AFTER_MS: u64 = 3_000;
/// Default `sightings.max_age_s`: 90 days.
pub const DEFAULT_SIGHTINGS_MAX_AGE_S: u64 = 90 * 86_400;
/// Default `sightings.max_records`.
pub const DEFAULT_SIGHTINGS_MAX_RECORDS: usize = 100_000;
/// Default `motion.max_idle_s`.
pub const DEFAULT_MAX_IDLE_S: u64 = 10;
/// Default `store.frame_sample_s`.
pub const DEFAULT_FRAME_SAMPLE_S: u64 = 60;
/// Classifier top-1 score a label needs for a sighting when neither
/// `sightings.min_score` nor a rule says.
pub const DEFAULT_CLASSIFIER_MIN_SCORE: f32 = 0.5;
/// At most this many `[[zone]]` and `[[sightings.rule]]` entries.
const MAX_ZONES: usize = 64;
const MAX_RULES: usize = 256;

/// One label's rule: when its presence is a sighting.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SightingRule {
    /// Passing frames needed among the last `window` inferred frames.
    pub min_frames: u32,
    pub window: u32,
    /// Closes after this long without the label passing.
    pub end_after_ms: u64,
    /// The score a frame's label needs to pass; `None`: any reported
    /// detection, a classifier's top-1 at [`DEFAULT_CLASSIFIER_MIN_SCORE`].
    pub min_score: Option<f32>,
}

/// `[sightings]`, validated.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SightingsSettings {
    /// Track sightings at all (`false`: no sightings, every frame stored as
    /// `store.keep_frames` says without an open sighting).
    pub enabled: bool,
    /// The rule of labels without a `[[sightings.rule]]`.
    #[serde(flatten)]
    pub default_rule: SightingRule,
    /// Only these labels make sightings (empty: every label).
    pub labels: Vec<String>,
    /// Per-label rules, by label (written back as `[[sightings.rule]]`).
    #[serde(rename = "rule", serialize_with = "rules_as_tables")]
    pub rules: BTreeMap<String, SightingRule>,
    /// Closed sightings older than this are pruned (0: no age limit).
    pub max_age_s: u64,
    /// At most this many sightings are kept, oldest pruned first (0: no limit).
    pub max_records: usize,
}

impl SightingsSettings {
    /// The rule of `label`.
    pub fn rule(&self, label: &str) -> &SightingRule {
        self.rules.get(label).unwrap_or(&self.default_rule)
    }

    /// Whether `label` may make sightings.
    pub fn tracks(&self, label: &str) -> bool {
        self.labels.is_empty() || self.labels.iter().any(|l| l == label)
    }
}

impl Default for SightingsSettings {
    fn default() -> SightingsSettings {
        SightingsSettings {
            enabled: true,
            default_rule: SightingRule {
                min_frames: DEFAULT_MIN_FRAMES,
                window: DEFAULT_WINDOW,
                end_after_ms: DEFAULT_END_AFTER_MS,
                min_score: None,
            },
            labels: Vec::new(),
            rules: BTreeMap::new(),
            max_age_s: DEFAULT_SIGHTINGS_MAX_AGE_S,
            max_records: DEFAULT_SIGHTINGS_MAX_RECORDS,
        }
    }
}

/// One `[[zone]]`, validated.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ZoneSettings {
    pub name: String,
    /// The source whose frames it divides.
    pub source: String,
    /// Normalized (0–1) points, at least three, not self-intersecting.
    #[serde(serialize_with = "polygon_points")]
    pub polygon: Polygon,
    /// The point of a detection's box that must be inside.
    pub anchor: Anchor,
    /// Only these labels are tracked in the zone (empty: every label).
    pub labels: Vec<String>,
}

/// `[[sightings.rule]]` tables, each with its `label`, as the loader reads them.
fn rules_as_tables<S: serde::Serializer>(
    rules: &BTreeMap<String, SightingRule>,
    s: S,
) -> Result<S::Ok, S::Error> {
    #[derive(Serialize)]
    struct Table<'a> {
        label: &'a str,
        #[serde(flatten)]
        rule: &'a SightingRule,
    }
    s.collect_seq(rules.iter().map(|(label, rule)| Table { label, rule }))
}

fn polygon_points<S: serde::Serializer>(p: &Polygon, s: S) -> Result<S::Ok, S::Error> {
    p.points().serialize(s)
}

/// `[motion]`, validated.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MotionConfig {
    /// `None` (the default): on for detectors, off for classifiers (which
    /// must see every frame); decided when the model is loaded.
    pub enabled: Option<bool>,
    /// A static scene is still inferred once every this many seconds.
    pub max_idle_s: u64,
    /// Levels (0–255) a pixel of the small luma image must change by.
    pub pixel_threshold: u8,
    /// Fraction of the pixels that must change for a frame to be moving.
    pub min_area: f64,
    /// The background follows each frame by 1/`adapt_frames`.
    pub adapt_frames: u32,
}

impl MotionConfig {
    /// Whether motion gating is on for a model that is (or is not) a
    /// detector.
    pub fn enabled_for(&self, detector: bool) -> bool {
        self.enabled.unwrap_or(detector)
    }
}

impl Default for MotionConfig {
    fn default() -> MotionConfig {
        MotionConfig {
            enabled: None,
            max_idle_s: DEFAULT_MAX_IDLE_S,
            pixel_threshold: 20,
            min_area: 0.005,
            adapt_frames: 20,
        }
    }
}

/// `store.keep_frames`: which per-frame results are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeepFrames {
    /// Every inferred frame (the behaviour before sightings).
    All,
    /// Every frame while a sighting of its source is open, plus one every
    /// `store.frame_sample_s`.
    #[default]
    Sightings,
    /// One frame every `store.frame_sample_s`, sightings or not.
    Sampled,
}

/// `model.roi`: the part of the frame a classifier sees, normalized
/// `[x, y, width, height]` (written back in that form).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Roi {
    pub x: f64,
    pub y: f64,
    pub width: f64,
    pub height: f64,
}

impl Serialize for Roi {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        [self.x, self.y, self.width, self.height].serialize(s)
    }
}

impl Roi {
    /// The ROI in pixels of a `w`×`h` frame: (x, y, width, height), at least
    /// one pixel each way and inside the frame.
    pub fn pixels(&self, w: u32, h: u32) -> (u32, u32, u32, u32) {
        let fx = |v: f64, n: u32| ((v * f64::from(n)).round() as u32).min(n.saturating_sub(1));
        let (x, y) = (fx(self.x, w), fx(self.y, h));
        let cw = ((self.width * f64::from(w)).round() as u32).clamp(1, w.saturating_sub(x).max(1));
        let ch = ((self.height * f64::from(h)).round() as u32).clamp(1, h.saturating_sub(y).max(1));
        (x, y, cw, ch)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSightings {
    pub enabled: Field<bool>,
    pub min_frames: Field<u32>,
    pub window: Field<u32>,
    pub end_after_ms: Field<u64>,
    pub min_score: Field<f32>,
    pub labels: Field<Vec<String>>,
    pub max_age_s: Field<u64>,
    pub max_records: Field<usize>,
    pub rule: Option<Vec<RawSightingRule>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSightingRule {
    pub label: Field<String>,
    pub min_frames: Field<u32>,
    pub window: Field<u32>,
    pub end_after_ms: Field<u64>,
    pub min_score: Field<f32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawZone {
    pub name: Field<String>,
    pub source: Field<String>,
    pub polygon: Field<Vec<Vec<f64>>>,
    pub anchor: Field<Anchor>,
    pub labels: Field<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMotion {
    pub enabled: Field<bool>,
    pub max_idle_s: Field<u64>,
    pub pixel_threshold: Field<u8>,
    pub min_area: Field<f64>,
    pub adapt_frames: Field<u32>,
}

fn check_rule(
    min_frames: &Option<Origin<u32>>,
    window: &Option<Origin<u32>>,
    end_after: &Option<Origin<u64>>,
    min_score: &Option<Origin<f32>>,
    key: &dyn Fn(&str) -> String,
    base: &SightingRule,
) -> Result<SightingRule, ConfigError> {
    in_range(
        window,
        &key("window"),
        |v| (1..=1000).contains(v),
        "must be between 1 and 1000 frames",
    )?;
    let w = val(window, base.window);
    in_range(
        min_frames,
        &key("min_frames"),
        |v| *v >= 1 && *v <= w,
        &format!("must be between 1 and the window ({w} frames)"),
    )?;
    let mf = val(min_frames, base.min_frames);
    if mf > w {
        // The window was lowered below the inherited min_frames.
        if let Some(o) = window {
            return Err(invalid(
                o,
                &key("window"),
                format!("must be at least min_frames ({mf})"),
            ));
        }
    }
    in_range(
        end_after,
        &key("end_after_ms"),
        |v| (100..=86_400_000).contains(v),
        "must be between 100 and 86400000",
    )?;
    in_range(
        min_score,
        &key("min_score"),
        |v: &f32| (0.0..=1.0).contains(v),
        "must be between 0.0 and 1.0",
    )?;
    Ok(SightingRule {
        min_frames: mf,
        window: w,
        end_after_ms: val(end_after, base.end_after_ms),
        min_score: min_score.as_ref().map(|o| o.value).or(base.min_score),
    })
}

pub(super) fn check_labels(o: &Option<Origin<Vec<String>>>, key: &str) -> Result<(), ConfigError> {
    in_range(
        o,
        key,
        |v: &Vec<String>| v.len() <= 1000 && v.iter().all(|l| !l.is_empty() && l.len() <= 200),
        "must be a list of non-empty labels (at most 1000)",
    )
}

/// `[sightings]` across the layered files.
pub(super) fn build_sightings(l: &Layers) -> Result<SightingsSettings, ConfigError> {
    macro_rules! get {
        ($f:ident) => {
            l.get(|r| r.sightings.as_ref()?.$f.as_ref())
        };
    }
    let d = SightingsSettings::default();
    let top = |k: &str| format!("sightings.{k}");
    let default_rule = check_rule(
        &get!(min_frames),
        &get!(window),
        &get!(end_after_ms),
        &get!(min_score),
        &top,
        &d.default_rule,
    )?;
    let labels = get!(labels);
    check_labels(&labels, "sightings.labels")?;
    let max_age = get!(max_age_s);
    in_range(
        &max_age,
        "sightings.max_age_s",
        |v| *v <= 100 * 365 * 86_400,
        "must be at most 3153600000 (100 years); 0 means no age limit",
    )?;
    let mut rules = BTreeMap::new();
    if let Some((raw, at)) = l.get_tables(|r| r.sightings.as_ref()?.rule.as_ref()) {
        if raw.len() > MAX_RULES {
            return Err(ConfigError::Invalid {
                path: at.path(),
                line: 0,
                column: 0,
                key: "sightings.rule".into(),
                message: format!("at most {MAX_RULES} rules"),
            });
        }
        for (i, r) in raw.iter().enumerate() {
            let key = |k: &str| format!("sightings.rule[{i}].{k}");
            let label = at.at(&r.label).ok_or_else(|| ConfigError::Missing {
                path: at.path(),
                key: key("label"),
                message: "required in every [[sightings.rule]]".into(),
            })?;
            if label.value.is_empty() || label.value.len() > 200 {
                return Err(invalid(&label, &key("label"), "must be a non-empty label"));
            }
            if rules.contains_key(&label.value) {
                return Err(invalid(
                    &label,
                    &key("label"),
                    format!("\"{}\" has a rule already", label.value),
                ));
            }
            let rule = check_rule(
                &at.at(&r.min_frames),
                &at.at(&r.window),
                &at.at(&r.end_after_ms),
                &at.at(&r.min_score),
                &key,
                &default_rule,
            )?;
            rules.insert(label.value, rule);
        }
    }
    Ok(SightingsSettings {
        enabled: val(&get!(enabled), true),
        default_rule,
        labels: val(&labels, Vec::new()),
        rules,
        max_age_s: val(&max_age, d.max_age_s),
        max_records: val(&get!(max_records), d.max_records),
    })
}

/// `[[zone]]` across the layered files (the last file with the array wins,
/// as for every array of tables); `sources` are the configured source names.
pub(super) fn build_zones(
    l: &Layers,
    sources: &[String],
) -> Result<Vec<ZoneSettings>, ConfigError> {
    let Some((raw, at)) = l.get_tables(|r| r.zone.as_ref()) else {
        return Ok(Vec::new());
    };
    if raw.len() > MAX_ZONES {
        return Err(ConfigError::Invalid {
            path: at.path(),
            line: 0,
            column: 0,
            key: "zone".into(),
            message: format!("at most {MAX_ZONES} zones"),
        });
    }
    let mut zones: Vec<ZoneSettings> = Vec::with_capacity(raw.len());
    for (i, z) in raw.iter().enumerate() {
        let key = |k: &str| format!("zone[{i}].{k}");
        let missing = |k: &str, why: &str| ConfigError::Missing {
            path: at.path(),
            key: key(k),
            message: why.into(),
        };
        let name = at
            .at(&z.name)
            .ok_or_else(|| missing("name", "required in every [[zone]]"))?;
        if !crate::core::zone::is_valid_zone_name(&name.value) {
            return Err(invalid(
                &name,
                &key("name"),
                "must be 1 to 64 characters of letters, digits, '_', '-' or '.'",
            ));
        }
        let source = check_source(at.at(&z.source), &key("source"), sources, &missing)?;
        if let Some(other) = zones
            .iter()
            .find(|o| o.name == name.value && o.source == source)
        {
            return Err(invalid(
                &name,
                &key("name"),
                format!(
                    "zone \"{}\" of source \"{}\" is defined twice",
                    other.name, other.source
                ),
            ));
        }
        let polygon = check_polygon(at.at(&z.polygon), &key("polygon"), "[[zone]]", &missing)?;
        let labels = at.at(&z.labels);
        check_labels(&labels, &key("labels"))?;
        zones.push(ZoneSettings {
            name: name.value,
            source,
            polygon,
            anchor: at.at(&z.anchor).map(|o| o.value).unwrap_or_default(),
            labels: val(&labels, Vec::new()),
        });
    }
    Ok(zones)
}

/// The `source` key of a `[[zone]]` or `[[privacy_mask]]` (issue 23): a
/// configured source's name; may be left out when there is one source.
pub(super) fn check_source(
    o: Option<Origin<String>>,
    key: &str,
    sources: &[String],
    missing: &dyn Fn(&str, &str) -> ConfigError,
) -> Result<String, ConfigError> {
    match o {
        Some(o) if sources.contains(&o.value) => Ok(o.value),
        Some(o) => Err(invalid(
            &o,
            key,
            format!(
                "no source is named \"{}\" (configured: {})",
                o.value,
                sources.join(", ")
            ),
        )),
        None if sources.len() == 1 => Ok(sources[0].clone()),
        None => Err(missing(
            "source",
            "required when several sources are configured",
        )),
    }
}

/// The `polygon` key of a `[[zone]]` or `[[privacy_mask]]` (`table` names
/// it in the message): `[[x, y], ...]`, normalized, a simple polygon.
pub(super) fn check_polygon(
    poly: Option<Origin<Vec<Vec<f64>>>>,
    key: &str,
    table: &str,
    missing: &dyn Fn(&str, &str) -> ConfigError,
) -> Result<Polygon, ConfigError> {
    let poly = poly.ok_or_else(|| {
        missing(
            "polygon",
            &format!("required in every {table}: [[x, y], ...] in 0.0-1.0 of the frame"),
        )
    })?;
    let mut points = Vec::with_capacity(poly.value.len());
    for (j, p) in poly.value.iter().enumerate() {
        match p.as_slice() {
            [x, y] => points.push([*x, *y]),
            _ => return Err(invalid(&poly, key, format!("point {j} must be [x, y]"))),
        }
    }
    Polygon::new(points).map_err(|e| invalid(&poly, key, e.to_string()))
}

/// `[motion]` across the layered files.
pub(super) fn build_motion(l: &Layers) -> Result<MotionConfig, ConfigError> {
    macro_rules! get {
        ($f:ident) => {
            l.get(|r| r.motion.as_ref()?.$f.as_ref())
        };
    }
    let d = MotionConfig::default();
    let (idle, px, area, adapt) = (
        get!(max_idle_s),
        get!(pixel_threshold),
        get!(min_area),
        get!(adapt_frames),
    );
    in_range(
        &idle,
        "motion.max_idle_s",
        |v| (1..=86_400).contains(v),
        "must be between 1 and 86400",
    )?;
    in_range(
        &px,
        "motion.pixel_threshold",
        |v| *v >= 1,
        "must be between 1 and 255",
    )?;
    in_range(
        &area,
        "motion.min_area",
        |v: &f64| *v > 0.0 && *v < 1.0,
        "must be a fraction above 0.0 and below 1.0",
    )?;
    in_range(
        &adapt,
        "motion.adapt_frames",
        |v| (1..=10_000).contains(v),
        "must be between 1 and 10000",
    )?;
    Ok(MotionConfig {
        enabled: get!(enabled).map(|o| o.value),
        max_idle_s: val(&idle, d.max_idle_s),
        pixel_threshold: val(&px, d.pixel_threshold),
        min_area: val(&area, d.min_area),
        adapt_frames: val(&adapt, d.adapt_frames),
    })
}

/// `store.keep_frames` and `store.frame_sample_s`.
pub(super) fn build_keep(l: &Layers) -> Result<(KeepFrames, u64), ConfigError> {
    let keep = l.get(|r| r.store.as_ref()?.keep_frames.as_ref());
    let sample = l.get(|r| r.store.as_ref()?.frame_sample_s.as_ref());
    in_range(
        &sample,
        "store.frame_sample_s",
        |v| (1..=86_400).contains(v),
        "must be between 1 and 86400",
    )?;
    Ok((
        val(&keep, KeepFrames::default()),
        val(&sample, DEFAULT_FRAME_SAMPLE_S),
    ))
}

/// `model.roi`: `[x, y, width, height]`, normalized, inside the frame.
pub(super) fn build_roi(l: &Layers) -> Result<Option<Roi>, ConfigError> {
    let Some(o) = l.get(|r| r.model.as_ref()?.roi.as_ref()) else {
        return Ok(None);
    };
    let bad = || {
        invalid(
            &o,
            "model.roi",
            "must be [x, y, width, height] in 0.0-1.0 of the frame, width and height above 0, inside the frame",
        )
    };
    let [x, y, w, h] = o.value.as_slice() else {
        return Err(bad());
    };
    let ok = [*x, *y, *w, *h].iter().all(|v| v.is_finite())
        && *x >= 0.0
        && *y >= 0.0
        && *w > 0.0
        && *h > 0.0
        && x + w <= 1.0 + 1e-9
        && y + h <= 1.0 + 1e-9;
    if !ok {
        return Err(bad());
    }
    Ok(Some(Roi {
        x: *x,
        y: *y,
        width: *w,
        height: *h,
    }))
}
