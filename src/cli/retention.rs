//! `spotter retention`: how long results, sightings, snapshots and audit
//! records are kept and how much space they take at the current rate
//! (issue 23; see `store::statement`). From the store itself, or, while the
//! daemon holds its lock, from the `retention` object of its
//! `GET /api/v1/status` (the pruner's last statement, with the live
//! settings).

use std::path::Path;

use anyhow::Context;

use super::{fail, load_settings, Failure, EXIT_FAILURE};
use crate::logging;
use crate::store::{AuditLimits, Retention, RetentionStatement, Store, StoreError};

pub(super) fn retention(path: &Path, key_file: Option<&Path>, json: bool) -> Result<(), Failure> {
    let _ = logging::init(log::LevelFilter::Warn);
    let settings = load_settings(path)?;
    let value = statement(&settings, key_file).map_err(fail(EXIT_FAILURE))?;
    if json {
        println!("{value}");
        return Ok(());
    }
    let s: RetentionStatementView =
        serde_json::from_value(value).map_err(|e| fail(EXIT_FAILURE)(anyhow::anyhow!("{e}")))?;
    for (name, k) in [
        ("results", &s.results),
        ("sightings", &s.sightings),
        ("snapshots", &s.snapshots),
        ("audit records", &s.audit),
    ] {
        println!("{}", describe(name, k));
    }
    Ok(())
}

/// The statement as JSON: computed on the store, or the daemon's.
fn statement(
    settings: &crate::config::Settings,
    key_file: Option<&Path>,
) -> anyhow::Result<serde_json::Value> {
    if !settings.store.dir.exists() {
        anyhow::bail!(
            "no result store at {} yet: nothing is stored",
            settings.store.dir.display()
        );
    }
    match Store::open_with(&settings.store.dir, 0) {
        Ok(store) => {
            store.set_audit_limits(AuditLimits::from_settings(&settings.audit));
            let policy =
                Retention::from_settings(&settings.store).with_sightings(&settings.sightings);
            let s: RetentionStatement = store.retention_statement(&policy)?;
            Ok(serde_json::to_value(s)?)
        }
        Err(StoreError::Locked { path }) => {
            eprintln!(
                "{} is held by the running daemon; asking its API",
                path.display()
            );
            let api = crate::tools::localapi::LocalApi::new(settings, key_file)
                .context("the daemon's API")?;
            let status: serde_json::Value = serde_json::from_reader(api.get("/api/v1/status")?)
                .context("reading the daemon's status")?;
            match status.get("retention") {
                Some(r) => Ok(r.clone()),
                None => anyhow::bail!(
                    "the daemon has no retention statement yet (its pruner runs within a minute of start); try again"
                ),
            }
        }
        Err(e) => Err(anyhow::Error::new(e).context("opening the result store")),
    }
}

/// The statement as read back (from the store or the daemon).
#[derive(serde::Deserialize)]
struct RetentionStatementView {
    results: KeptView,
    sightings: KeptView,
    snapshots: KeptView,
    audit: KeptView,
}

#[derive(serde::Deserialize)]
struct KeptView {
    stored: u64,
    bytes: u64,
    per_day: Option<f64>,
    kept_for_s: Option<u64>,
    bounded_by: String,
    bytes_at_limit: Option<u64>,
}

/// One line a person can read out.
fn describe(name: &str, k: &KeptView) -> String {
    let rate = k.per_day.map_or("rate not measured yet".to_string(), |r| {
        format!("{r} a day")
    });
    let kept = match (k.kept_for_s, k.bounded_by.as_str()) {
        (Some(s), by) => format!("kept {} (limit: {by})", human_time(s)),
        (None, _) => "kept until the disk floor (no limit binds)".to_string(),
    };
    let space = k.bytes_at_limit.map_or(String::new(), |b| {
        format!(", about {} at that rate", human_bytes(b))
    });
    format!(
        "{name}: {} stored ({}); {rate}; {kept}{space}",
        k.stored,
        human_bytes(k.bytes)
    )
}

fn human_time(s: u64) -> String {
    match s {
        s if s >= 2 * 86_400 => format!("{:.0} days", s as f64 / 86_400.0),
        s if s >= 2 * 3600 => format!("{:.0} hours", s as f64 / 3600.0),
        s => format!("{s} s"),
    }
}

fn human_bytes(b: u64) -> String {
    match b {
        b if b >= 1 << 30 => format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{b} B"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Catches: a statement whose fields the command cannot read back (the
    // store's and the view's names drifting apart), or a line that does not
    // say the binding limit.
    #[test]
    fn statements_read_back_and_read_out() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let s = store.retention_statement(&Retention::unlimited()).unwrap();
        let v: RetentionStatementView =
            serde_json::from_value(serde_json::to_value(&s).unwrap()).unwrap();
        assert_eq!(v.results.stored, 0);
        let line = describe(
            "results",
            &KeptView {
                stored: 10,
                bytes: 4096,
                per_day: Some(100.0),
                kept_for_s: Some(30 * 86_400),
                bounded_by: "age".into(),
                bytes_at_limit: Some(3 << 20),
            },
        );
        assert_eq!(
            line,
            "results: 10 stored (4.0 KiB); 100 a day; kept 30 days (limit: age), about 3.0 MiB at that rate"
        );
    }
}
