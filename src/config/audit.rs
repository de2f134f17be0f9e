//! `[audit]` (issue 23): how long the audit trail of administrative actions
//! is kept (`max_age_s`, `max_records`; 0 = no limit of that kind).

use serde::{Deserialize, Serialize};

use super::raw::Layers;
use super::{in_range, val, ConfigError};

type Field<T> = Option<toml::Spanned<T>>;

/// Default `[audit] max_age_s`: a year.
pub const DEFAULT_AUDIT_MAX_AGE_S: u64 = 365 * 86_400;
/// Default `[audit] max_records`.
pub const DEFAULT_AUDIT_MAX_RECORDS: usize = 10_000;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAudit {
    pub max_age_s: Field<u64>,
    pub max_records: Field<usize>,
}

/// `[audit]`, validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditSettings {
    /// Records older than this are deleted (0: kept whatever their age).
    pub max_age_s: u64,
    /// At most this many records are kept, the oldest deleted first (0: no
    /// count limit).
    pub max_records: usize,
}

impl Default for AuditSettings {
    fn default() -> AuditSettings {
        AuditSettings {
            max_age_s: DEFAULT_AUDIT_MAX_AGE_S,
            max_records: DEFAULT_AUDIT_MAX_RECORDS,
        }
    }
}

pub(super) fn build_audit(l: &Layers) -> Result<AuditSettings, ConfigError> {
    let age = l.get(|r| r.audit.as_ref()?.max_age_s.as_ref());
    let records = l.get(|r| r.audit.as_ref()?.max_records.as_ref());
    in_range(
        &age,
        "audit.max_age_s",
        |v| *v <= 100 * 365 * 86_400,
        "must be at most 3153600000 (100 years); 0 means no age limit",
    )?;
    in_range(
        &records,
        "audit.max_records",
        |v| *v <= 10_000_000,
        "must be at most 10000000; 0 means no count limit",
    )?;
    let d = AuditSettings::default();
    Ok(AuditSettings {
        max_age_s: val(&age, d.max_age_s),
        max_records: val(&records, d.max_records),
    })
}
