//! `[rollout]` (issue 22): whether the device takes model rollout commands
//! from the broker (`spotter/<device_id>/cmd/model` and
//! `spotter/group/<group>/cmd/model`), the groups it belongs to, how bundles
//! are downloaded (CA file, size bound, timeout) and the health window that
//! decides whether a new model stays or is rolled back.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::raw::Layers;
use super::{in_range, invalid, val, ConfigError};

type Field<T> = Option<Spanned<T>>;

/// Default `rollout.max_bundle_bytes` (64 MiB: the largest models a Pi runs
/// are a few tens of MiB).
pub const DEFAULT_MAX_BUNDLE_BYTES: u64 = 64 << 20;

/// `[rollout]`, validated.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RolloutSettings {
    /// Subscribe to the command topics (needs `[mqtt]` enabled).
    pub enabled: bool,
    /// Groups: `spotter/group/<group>/cmd/model` is subscribed for each.
    pub groups: Vec<String>,
    /// CA certificates (PEM) the bundle server's certificate must chain to;
    /// none: the system's roots.
    pub ca_file: Option<PathBuf>,
    /// Bundles larger than this are refused (from Content-Length and while
    /// reading).
    pub max_bundle_bytes: u64,
    /// Bound on one download attempt (connect + transfer).
    pub download_timeout_s: u64,
    /// Seconds the new model is watched after activation.
    pub health_window_s: u64,
    /// The window fails when more inference errors than this occur in it.
    pub max_inference_errors: u64,
    /// The window fails when the mean top score per inferred frame moves by
    /// more than this (absolute, 0-1) against the previous model's.
    pub max_score_drift: f64,
}

impl Default for RolloutSettings {
    fn default() -> RolloutSettings {
        RolloutSettings {
            enabled: false,
            groups: Vec::new(),
            ca_file: None,
            max_bundle_bytes: DEFAULT_MAX_BUNDLE_BYTES,
            download_timeout_s: 300,
            health_window_s: 60,
            max_inference_errors: 3,
            max_score_drift: 0.5,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRollout {
    pub enabled: Field<bool>,
    pub groups: Field<Vec<String>>,
    pub ca_file: Field<PathBuf>,
    pub max_bundle_bytes: Field<u64>,
    pub download_timeout_s: Field<u64>,
    pub health_window_s: Field<u64>,
    pub max_inference_errors: Field<u64>,
    pub max_score_drift: Field<f64>,
}

/// A group name that is one topic level.
fn valid_group(g: &str) -> bool {
    !g.is_empty()
        && g.len() <= 64
        && g.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

pub(super) fn build_rollout(l: &Layers) -> Result<RolloutSettings, ConfigError> {
    macro_rules! get {
        ($f:ident) => {
            l.get(|r| r.rollout.as_ref()?.$f.as_ref())
        };
    }
    let d = RolloutSettings::default();
    let groups = get!(groups);
    if let Some(o) = &groups {
        if let Some(bad) = o.value.iter().find(|g| !valid_group(g)) {
            return Err(invalid(
                o,
                "rollout.groups",
                format!("`{bad}`: a group is 1-64 letters, digits, '-', '_' or '.'"),
            ));
        }
    }
    let max_bytes = get!(max_bundle_bytes);
    in_range(
        &max_bytes,
        "rollout.max_bundle_bytes",
        |v| (1024..=(1 << 32)).contains(v),
        "must be between 1024 and 4294967296",
    )?;
    let timeout = get!(download_timeout_s);
    in_range(
        &timeout,
        "rollout.download_timeout_s",
        |v| (1..=86_400).contains(v),
        "must be between 1 and 86400",
    )?;
    let window = get!(health_window_s);
    in_range(
        &window,
        "rollout.health_window_s",
        |v| (1..=86_400).contains(v),
        "must be between 1 and 86400",
    )?;
    let drift = get!(max_score_drift);
    in_range(
        &drift,
        "rollout.max_score_drift",
        |v| (0.0..=1.0).contains(v),
        "must be between 0 and 1",
    )?;
    Ok(RolloutSettings {
        enabled: val(&get!(enabled), d.enabled),
        groups: val(&groups, d.groups),
        ca_file: get!(ca_file).map(|o| o.value),
        max_bundle_bytes: val(&max_bytes, d.max_bundle_bytes),
        download_timeout_s: val(&timeout, d.download_timeout_s),
        health_window_s: val(&window, d.health_window_s),
        max_inference_errors: val(&get!(max_inference_errors), d.max_inference_errors),
        max_score_drift: val(&drift, d.max_score_drift),
    })
}
