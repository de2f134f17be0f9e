//! Sources: the single `[source]` table or several `[[source]]` entries
//! (issue 19), their names and the defaults that depend on the frame rate.
//!
//! - `[source]` keeps working as before: its keys merge across files key by
//!   key, and it is named [`DEFAULT_SOURCE_NAME`] unless it sets `name`.
//! - `[[source]]` entries come from the last file that has the array (arrays
//!   replace, as `[[gpio.rule]]` does); each entry is read with the same
//!   checks as `[source]` (`config::build_source`), and errors about its keys
//!   say which entry (`source[1] "yard"`).
//! - `[source]` in one file and `[[source]]` in another is refused: which
//!   one wins would be a guess.
//! - Names: 1 to 32 of `A-Z a-z 0-9 _ -`, unique, and not `upload` (the
//!   name results of uploaded images carry).
//! - The stall timeout, unless set, is [`STALL_FRAMES`] frame intervals and
//!   at least [`STALL_FLOOR_MS`]: at 15 fps a stalled camera is noticed in
//!   534 ms plus the supervisor's 250 ms tick, under the 1 s issue 19 asks.

use super::raw::Layers;
use super::{build_source, ConfigError, SourceSettings};

/// The name of a single `[source]` without `name`.
pub const DEFAULT_SOURCE_NAME: &str = "default";
/// The name results of images uploaded to the API carry.
pub(crate) const UPLOAD_SOURCE_NAME: &str = "upload";
/// Frame intervals without a frame that make a source stalled.
pub(crate) const STALL_FRAMES: f64 = 8.0;
/// The shortest default stall timeout (fast cameras jitter too).
pub(crate) const STALL_FLOOR_MS: u64 = 500;
/// Longest source name.
const MAX_NAME_LEN: usize = 32;

/// The stall timeout for a source at `fps` when none is set.
pub(crate) fn default_stall_ms(fps: f64) -> u64 {
    let interval_ms = 1000.0 / fps.max(f64::MIN_POSITIVE);
    ((interval_ms * STALL_FRAMES).ceil() as u64).clamp(STALL_FLOOR_MS, 600_000)
}

/// Why `name` is not a valid source name, if it is not.
fn name_problem(name: &str) -> Option<String> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Some(format!("must be 1 to {MAX_NAME_LEN} characters"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Some("may only hold A-Z, a-z, 0-9, `_` and `-`".into());
    }
    if name == UPLOAD_SOURCE_NAME {
        return Some(format!(
            "`{UPLOAD_SOURCE_NAME}` is what uploaded images' results carry; choose another"
        ));
    }
    None
}

/// The first source and all of them (see the module documentation).
pub(super) fn build_sources(
    l: &Layers,
) -> Result<(SourceSettings, Vec<SourceSettings>), ConfigError> {
    let (tables, arrays) = l.source_forms();
    if let (Some(&t), Some(&a)) = (tables.first(), arrays.first()) {
        return Err(ConfigError::Missing {
            path: l.layer_path(a),
            key: "source".into(),
            message: format!(
                "[[source]] here and [source] in {}: use one form (several cameras: [[source]] entries with a name each)",
                l.layer_path(t)
            ),
        });
    }
    let Some(&layer) = arrays.last() else {
        let mut one = build_source(l)?;
        let name = l.get(|r| r.source.as_ref()?.name.as_ref());
        one.name = match name {
            Some(o) => {
                if let Some(p) = name_problem(&o.value) {
                    return Err(super::invalid(&o, "source.name", p));
                }
                o.value
            }
            None => DEFAULT_SOURCE_NAME.to_string(),
        };
        return Ok((one.clone(), vec![one]));
    };
    let entries = l.source_entries(layer);
    let path = l.layer_path(layer);
    let mut out: Vec<SourceSettings> = Vec::with_capacity(entries.len());
    for (i, entry) in entries.iter().enumerate() {
        let what = |name: Option<&str>| match name {
            Some(n) => format!("source[{i}] \"{n}\""),
            None => format!("source[{i}]"),
        };
        let one = l.source_entry(layer, entry);
        let name = one.get(|r| r.source.as_ref()?.name.as_ref());
        let Some(name) = name else {
            return Err(ConfigError::Missing {
                path,
                key: format!("{}.name", what(None)),
                message: "every [[source]] entry needs a name".into(),
            });
        };
        if let Some(p) = name_problem(&name.value) {
            return Err(super::invalid(&name, &format!("{}.name", what(None)), p));
        }
        if out.iter().any(|s| s.name == name.value) {
            return Err(super::invalid(
                &name,
                &format!("{}.name", what(Some(&name.value))),
                "another [[source]] entry has this name; names must be unique",
            ));
        }
        let mut s = build_source(&one).map_err(|e| in_entry(e, &what(Some(&name.value))))?;
        s.name = name.value;
        out.push(s);
    }
    match out.first() {
        Some(first) => Ok((first.clone(), out)),
        None => Err(ConfigError::Missing {
            path,
            key: "source".into(),
            message: "[[source]] has no entries".into(),
        }),
    }
}

/// An error about `[source]` keys, said of the `[[source]]` entry `what`.
fn in_entry(e: ConfigError, what: &str) -> ConfigError {
    let rename = |key: String| match key.strip_prefix("source.") {
        Some(rest) => format!("{what}.{rest}"),
        None => key,
    };
    match e {
        ConfigError::Invalid {
            path,
            line,
            column,
            key,
            message,
        } => ConfigError::Invalid {
            path,
            line,
            column,
            key: rename(key),
            message,
        },
        ConfigError::Missing { path, key, message } => ConfigError::Missing {
            path,
            key: rename(key),
            message,
        },
        other => other,
    }
}

/// `sources` as the configuration writes them: one `[source]` table, or
/// `[[source]]` entries.
pub(super) fn serialize<S: serde::Serializer>(
    sources: &[SourceSettings],
    s: S,
) -> Result<S::Ok, S::Error> {
    use serde::Serialize;
    match sources {
        [one] => one.serialize(s),
        many => many.serialize(s),
    }
}
