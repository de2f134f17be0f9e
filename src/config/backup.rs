//! `[backup]` (issue 23): whom backups are encrypted to. `recipients` are
//! age X25519 public keys (`age1…`); the device holds no private key, so it
//! can write backups it cannot read back. With recipients set,
//! `GET /api/v1/backup` (and `spotter export` without `--recipient`) encrypt
//! to them; `require_encryption = true` refuses every plain backup, through
//! the API and the CLI. Validated here, so a bad key names its file, line
//! and key at load.

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::raw::Layers;
use super::{invalid, val, ConfigError};

type Field<T> = Option<Spanned<T>>;

/// At most this many `backup.recipients`.
pub const MAX_RECIPIENTS: usize = 64;

/// The effective `[backup]` settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct BackupSettings {
    /// age X25519 public keys, each valid ([`parse_recipient`]).
    pub recipients: Vec<String>,
    /// Refuse plain (unencrypted) backups.
    pub require_encryption: bool,
}

impl BackupSettings {
    /// The recipients as age keys (validated at load, so none is dropped).
    pub fn age_recipients(&self) -> Vec<age::x25519::Recipient> {
        self.recipients
            .iter()
            .filter_map(|r| parse_recipient(r).ok())
            .collect()
    }
}

/// An age X25519 public key (`age1…`, surrounding spaces ignored), or why
/// it is not one.
pub fn parse_recipient(s: &str) -> Result<age::x25519::Recipient, String> {
    let s = s.trim();
    if s.starts_with("AGE-SECRET-KEY-") {
        return Err(
            "this is an age PRIVATE key; give the public key (`age-keygen -y KEYFILE` prints it) \
             and keep the private key off the device"
                .into(),
        );
    }
    s.parse::<age::x25519::Recipient>()
        .map_err(|e| format!("{s:?} is not an age X25519 public key (age1…): {e}"))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBackup {
    pub recipients: Field<Vec<String>>,
    pub require_encryption: Field<bool>,
}

/// `[backup]` across the layered files.
pub(super) fn build_backup(l: &Layers) -> Result<BackupSettings, ConfigError> {
    let recipients = l.get(|r| r.backup.as_ref()?.recipients.as_ref());
    let require = l.get(|r| r.backup.as_ref()?.require_encryption.as_ref());
    if let Some(o) = &recipients {
        if o.value.len() > MAX_RECIPIENTS {
            return Err(invalid(
                o,
                "backup.recipients",
                format!("at most {MAX_RECIPIENTS} recipients"),
            ));
        }
        for (i, r) in o.value.iter().enumerate() {
            parse_recipient(r).map_err(|m| invalid(o, &format!("backup.recipients[{i}]"), m))?;
        }
    }
    Ok(BackupSettings {
        recipients: val(&recipients, Vec::new())
            .iter()
            .map(|r| r.trim().to_string())
            .collect(),
        require_encryption: val(&require, false),
    })
}
