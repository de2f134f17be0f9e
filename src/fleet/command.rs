//! The rollout command (the JSON published, usually retained, on
//! `spotter/<device_id>/cmd/model` or `spotter/group/<group>/cmd/model`):
//! parsing, the stage filter, and the handled rollout ids kept in the state
//! directory so a retained command is applied once.
//!
//! ```json
//! {"id": "2026-12-06-a", "url": "https://models.example/m.spotter",
//!  "sha256": "<sha256 of the bundle file>",
//!  "devices": ["cam-01", "cam-02"], "percent": 25,
//!  "shadow_s": 600, "shadow_share": 0.25, "min_agreement": 0.9}
//! ```
//!
//! `devices` and `percent` are optional: with neither every device
//! subscribed applies it; with either, a device applies it when its id is in
//! `devices` or its bucket (a stable hash of device id and rollout id,
//! 0-99) is below `percent`. Growing `percent` under the same `id` therefore
//! adds devices and never drops one; devices that already handled the id
//! ignore it. With `shadow_s` the verified model first runs in shadow
//! ([`crate::pipeline::Shadow`]) on `shadow_share` (default 0.25) of the
//! frames for that long, and is activated only when its agreement with the
//! active model is at least `min_agreement` (default 0: any).

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::FleetError;

/// Rollout ids remembered as handled (oldest forgotten first).
pub(crate) const HANDLED_MAX: usize = 256;
/// Largest command payload taken.
pub(crate) const MAX_COMMAND_BYTES: usize = 16 * 1024;

/// A rollout command, validated.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Command {
    pub id: String,
    pub url: String,
    pub sha256: String,
    #[serde(default)]
    pub devices: Option<Vec<String>>,
    #[serde(default)]
    pub percent: Option<u8>,
    #[serde(default)]
    pub shadow_s: Option<u64>,
    #[serde(default)]
    pub shadow_share: Option<f64>,
    #[serde(default)]
    pub min_agreement: Option<f64>,
}

/// Default share of the frames a rollout's shadow period samples.
pub(crate) const DEFAULT_SHADOW_SHARE: f64 = 0.25;
/// Longest shadow period a command may ask for (a day).
pub(crate) const MAX_SHADOW_S: u64 = 86_400;

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
}

impl Command {
    /// Parse and check a payload; Err names what is wrong. The id is
    /// returned with the error when it could be read, so the refusal can
    /// name the rollout.
    pub(crate) fn parse(payload: &[u8]) -> Result<Command, (Option<String>, String)> {
        if payload.len() > MAX_COMMAND_BYTES {
            return Err((None, format!("command over {MAX_COMMAND_BYTES} bytes")));
        }
        let c: Command = serde_json::from_slice(payload).map_err(|e| {
            let id = serde_json::from_slice::<serde_json::Value>(payload)
                .ok()
                .and_then(|v| v.get("id")?.as_str().map(str::to_owned))
                .filter(|id| valid_id(id));
            (id, format!("malformed command: {e}"))
        })?;
        let id = Some(c.id.clone()).filter(|id| valid_id(id));
        let fail = |m: &str| Err((id.clone(), m.to_string()));
        if id.is_none() {
            return fail("`id`: 1-64 letters, digits, '-', '_', '.' or ':'");
        }
        if !c.url.to_ascii_lowercase().starts_with("https://") {
            return fail("`url` must be https://");
        }
        if c.sha256.len() != 64 || !c.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return fail("`sha256` must be 64 hexadecimal digits");
        }
        if c.percent.is_some_and(|p| p > 100) {
            return fail("`percent` must be 0-100");
        }
        if c.min_agreement.is_some_and(|a| !(0.0..=1.0).contains(&a)) {
            return fail("`min_agreement` must be between 0 and 1");
        }
        if c.shadow_share.is_some_and(|a| !(a > 0.0 && a <= 1.0)) {
            return fail("`shadow_share` must be above 0 and at most 1");
        }
        if c.shadow_s.is_some_and(|s| s == 0 || s > MAX_SHADOW_S) {
            return fail("`shadow_s` must be 1-86400");
        }
        if c.shadow_s.is_none() && (c.shadow_share.is_some() || c.min_agreement.is_some()) {
            return fail("`shadow_share` and `min_agreement` need `shadow_s`");
        }
        Ok(Command {
            sha256: c.sha256.to_ascii_lowercase(),
            ..c
        })
    }

    /// Whether this device is in the command's stage (see the module doc).
    pub(crate) fn selects(&self, device_id: &str) -> bool {
        if self.devices.is_none() && self.percent.is_none() {
            return true;
        }
        let listed = self
            .devices
            .as_ref()
            .is_some_and(|d| d.iter().any(|x| x == device_id));
        listed
            || self
                .percent
                .is_some_and(|p| bucket(device_id, &self.id) < u32::from(p))
    }
}

/// The device's stable bucket (0-99) for a rollout: the first 8 bytes of
/// SHA-256(`device_id` "/" `rollout_id`), modulo 100.
pub(crate) fn bucket(device_id: &str, rollout_id: &str) -> u32 {
    let d = Sha256::digest(format!("{device_id}/{rollout_id}").as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    (u64::from_be_bytes(b) % 100) as u32
}

/// The rollout ids this device has handled (applied, refused or rolled
/// back), kept in `<state_dir>/rollout/handled.json`.
#[derive(Debug)]
pub(crate) struct Handled {
    path: PathBuf,
    ids: VecDeque<String>,
}

impl Handled {
    /// Read the file (missing: none handled yet).
    pub(crate) fn open(dir: &Path) -> Result<Handled, FleetError> {
        let path = dir.join("handled.json");
        let ids = match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| FleetError::State {
                path: path.clone(),
                reason: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => VecDeque::new(),
            Err(e) => {
                return Err(FleetError::State {
                    path,
                    reason: e.to_string(),
                })
            }
        };
        Ok(Handled { path, ids })
    }

    pub(crate) fn contains(&self, id: &str) -> bool {
        self.ids.iter().any(|x| x == id)
    }

    /// Remember `id` (written through, atomically).
    pub(crate) fn add(&mut self, id: &str) -> Result<(), FleetError> {
        if self.contains(id) {
            return Ok(());
        }
        self.ids.push_back(id.to_string());
        while self.ids.len() > HANDLED_MAX {
            self.ids.pop_front();
        }
        // A list of strings serializes infallibly.
        let bytes = serde_json::to_vec(&self.ids).unwrap_or_default();
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| FleetError::State {
                path: dir.to_path_buf(),
                reason: e.to_string(),
            })?;
        }
        crate::core::fsutil::write_atomic(&self.path, &bytes, 0o600).map_err(|e| {
            FleetError::State {
                path: self.path.clone(),
                reason: e.to_string(),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "ab0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcd";

    fn cmd(extra: &str) -> Vec<u8> {
        format!(r#"{{"id":"r1","url":"https://h/b","sha256":"{SHA}"{extra}}}"#).into_bytes()
    }

    // Would catch a command with a plain-HTTP URL, a short sha256 or an
    // unknown field being acted on instead of refused with the reason.
    #[test]
    fn commands_are_checked() {
        assert!(Command::parse(&cmd("")).is_ok());
        let bad = Command::parse(
            format!(r#"{{"id":"r1","url":"http://h/b","sha256":"{SHA}"}}"#).as_bytes(),
        )
        .unwrap_err();
        assert_eq!(bad.0.as_deref(), Some("r1"));
        assert!(bad.1.contains("https"), "{}", bad.1);
        let bad = Command::parse(br#"{"id":"r2","url":"https://h/b","sha256":"ab"}"#).unwrap_err();
        assert!(bad.1.contains("sha256"), "{}", bad.1);
        let bad = Command::parse(&cmd(r#","colour":1"#)).unwrap_err();
        assert_eq!(bad.0.as_deref(), Some("r1"));
        assert!(Command::parse(&cmd(r#","percent":101"#)).is_err());
        assert!(Command::parse(b"not json").unwrap_err().0.is_none());
    }

    // Would catch a shadow period that could never end (0 or days long), a
    // share the shadow thread refuses only after the download, or a minimum
    // agreement silently ignored because no shadow period was asked for.
    #[test]
    fn shadow_fields_are_checked() {
        let ok = Command::parse(&cmd(
            r#","shadow_s":60,"shadow_share":0.5,"min_agreement":0.9"#,
        ))
        .unwrap();
        assert_eq!(
            (ok.shadow_s, ok.shadow_share, ok.min_agreement),
            (Some(60), Some(0.5), Some(0.9))
        );
        for (extra, what) in [
            (r#","shadow_s":0"#, "shadow_s"),
            (r#","shadow_s":86401"#, "shadow_s"),
            (r#","shadow_s":5,"shadow_share":0"#, "shadow_share"),
            (r#","shadow_s":5,"shadow_share":1.5"#, "shadow_share"),
            (r#","shadow_s":5,"min_agreement":1.1"#, "min_agreement"),
            (r#","min_agreement":0.5"#, "need `shadow_s`"),
        ] {
            let e = Command::parse(&cmd(extra)).unwrap_err().1;
            assert!(e.contains(what), "{extra}: {e}");
        }
    }

    // Would catch a percent stage that picks different devices each time the
    // retained command is delivered, or a growing percent dropping a device
    // an earlier stage already chose.
    #[test]
    fn stages_are_stable_and_grow() {
        let at = |p: u8| {
            let c = Command::parse(&cmd(&format!(r#","percent":{p}"#))).unwrap();
            (0..200)
                .filter(|i| c.selects(&format!("cam-{i}")))
                .collect::<Vec<_>>()
        };
        let (none, quarter, half, all) = (at(0), at(25), at(50), at(100));
        assert!(none.is_empty());
        assert_eq!(all.len(), 200);
        assert!(quarter.iter().all(|d| half.contains(d)));
        // A fair hash puts roughly a quarter of 200 devices below 25.
        assert!((20..=80).contains(&quarter.len()), "{}", quarter.len());
        assert_eq!(at(25), quarter);
        let listed = Command::parse(&cmd(r#","devices":["cam-7"]"#)).unwrap();
        assert!(listed.selects("cam-7"));
        assert!(!listed.selects("cam-8"));
        assert!(Command::parse(&cmd("")).unwrap().selects("anything"));
    }

    // Would catch handled ids not surviving a restart (a retained command
    // applied again after every reboot).
    #[test]
    fn handled_ids_persist() {
        let dir = tempfile::tempdir().unwrap();
        let mut h = Handled::open(dir.path()).unwrap();
        assert!(!h.contains("r1"));
        h.add("r1").unwrap();
        let h = Handled::open(dir.path()).unwrap();
        assert!(h.contains("r1"));
        assert!(!h.contains("r2"));
    }
}
