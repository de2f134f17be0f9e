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

/// `[power]`, validated.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PowerSettings {
    /// Read the sensors at all (a board without them just reports none).
    pub enabled: bool,
    /// The sysfs tree (`/sys`; tests point it at a fake one).
    pub sysfs_root: PathBuf,
    /// Seconds between two readings.
    pub poll_s: u64,
}

impl Default for PowerSettings {
    fn default() -> PowerSettings {
        PowerSettings {
            enabled: true,
            sysfs_root: PathBuf::from("/sys"),
            poll_s: DEFAULT_POLL_S,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPower {
    pub enabled: Field<bool>,
    pub sysfs_root: Field<PathBuf>,
    pub poll_s: Field<u64>,
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
    })
}
