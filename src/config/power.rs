//! `[power]` (issue 22): whether and how often the monitor reads the SoC
//! temperature and the firmware's throttling flags, and the sysfs tree it
//! reads them from.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::raw::Layers;
use super::{in_range, val, ConfigError};

type Field<T> = Option<Spanned<T>>;

/// Default `power.poll_s`.
pub const DEFAULT_POLL_S: u64 = 5;

/// Lower the inference rate while the SoC is hot: from `hot_above_c` on,
/// until it has cooled below `resume_below_c` (hysteresis, so a temperature
/// hovering at the limit does not switch it on and off every poll).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct HeatLimit {
    /// `power.hot_above_c`: degrees Celsius at which inference slows down.
    pub above_c: f64,
    /// `power.hot_resume_below_c` (default 5 °C under `hot_above_c`).
    pub resume_below_c: f64,
    /// `power.hot_max_fps`: inferred frames per second, all sources
    /// together, while hot.
    pub max_fps: f64,
}

/// Default `power.hot_max_fps`.
pub const DEFAULT_HOT_MAX_FPS: f64 = 1.0;
/// Default gap between `power.hot_above_c` and `hot_resume_below_c`.
pub const DEFAULT_HOT_HYSTERESIS_C: f64 = 5.0;

/// `[power]`, validated.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PowerSettings {
    /// Read the sensors at all (a board without them just reports none).
    pub enabled: bool,
    /// The sysfs tree (`/sys`; tests point it at a fake one).
    pub sysfs_root: PathBuf,
    /// Seconds between two readings.
    pub poll_s: u64,
    /// Slowing down when hot; `None` (the default) never does.
    pub heat: Option<HeatLimit>,
}

impl Default for PowerSettings {
    fn default() -> PowerSettings {
        PowerSettings {
            enabled: true,
            sysfs_root: PathBuf::from("/sys"),
            poll_s: DEFAULT_POLL_S,
            heat: None,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPower {
    pub enabled: Field<bool>,
    pub sysfs_root: Field<PathBuf>,
    pub poll_s: Field<u64>,
    pub hot_above_c: Field<f64>,
    pub hot_resume_below_c: Field<f64>,
    pub hot_max_fps: Field<f64>,
}

pub(super) fn build_power(l: &Layers) -> Result<PowerSettings, ConfigError> {
    macro_rules! get {
        ($f:ident) => {
            l.get(|r| r.power.as_ref()?.$f.as_ref())
        };
    }
    let d = PowerSettings::default();
    let poll = get!(poll_s);
    in_range(
        &poll,
        "power.poll_s",
        |v| (1..=3600).contains(v),
        "must be between 1 and 3600",
    )?;
    Ok(PowerSettings {
        enabled: val(&get!(enabled), d.enabled),
        sysfs_root: val(&get!(sysfs_root), d.sysfs_root),
        poll_s: val(&poll, d.poll_s),
        heat: build_heat(l)?,
    })
}

fn build_heat(l: &Layers) -> Result<Option<HeatLimit>, ConfigError> {
    macro_rules! get {
        ($f:ident) => {
            l.get(|r| r.power.as_ref()?.$f.as_ref())
        };
    }
    let (above, resume, fps) = (
        get!(hot_above_c),
        get!(hot_resume_below_c),
        get!(hot_max_fps),
    );
    in_range(
        &above,
        "power.hot_above_c",
        |v| (30.0..=125.0).contains(v),
        "must be between 30 and 125 (degrees Celsius)",
    )?;
    in_range(
        &fps,
        "power.hot_max_fps",
        |v| (0.01..=1000.0).contains(v),
        "must be between 0.01 and 1000 (frames per second)",
    )?;
    let Some(above_c) = above.as_ref().map(|o| o.value) else {
        // The other two mean nothing without the limit: say so rather than ignore them.
        for (f, key) in [
            (&resume, "power.hot_resume_below_c"),
            (&fps, "power.hot_max_fps"),
        ] {
            in_range(f, key, |_| false, "needs power.hot_above_c")?;
        }
        return Ok(None);
    };
    in_range(
        &resume,
        "power.hot_resume_below_c",
        |v| v.is_finite() && *v < above_c,
        "must be below power.hot_above_c",
    )?;
    Ok(Some(HeatLimit {
        above_c,
        resume_below_c: val(&resume, above_c - DEFAULT_HOT_HYSTERESIS_C),
        max_fps: val(&fps, DEFAULT_HOT_MAX_FPS),
    }))
}
