//! Retention people can state (issue 23): from the limits in force and the
//! rates measured on what is stored, how long results, sightings, snapshots
//! and audit records are kept and how much space they take at that rate.
//!
//! The rate of a kind is measured on the store itself: its items over the
//! time between its oldest and newest one (so it works the same for the
//! daemon and for `spotter retention` on a stopped daemon's store). An item
//! is kept for the shortest of: the age limit, the count limit over the rate,
//! the byte limit over the rate times the average size. No limit binding
//! means "until the disk floor" (`kept_for_s` null). The statement is
//! computed by the pruner after each pass (with the policy it enforces) and
//! served in `GET /api/v1/status` as `retention`.

use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;

use super::{AuditLimits, Retention, Store, StoreError};

/// Below this many items, or this span between the oldest and newest, no
/// rate is stated (too little to measure).
const MIN_ITEMS: u64 = 2;
const MIN_SPAN_NS: u64 = 1_000_000_000;

/// What is kept of one kind, and for how long.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Kept {
    /// Items stored now, and their logical size (keys plus values).
    pub stored: u64,
    pub bytes: u64,
    /// The limits in force (`null`: none of that kind).
    pub max_age_s: Option<u64>,
    pub max_count: Option<u64>,
    pub max_bytes: Option<u64>,
    /// Items per day, measured on what is stored (`null`: too few yet).
    pub per_day: Option<f64>,
    /// How long an item is kept at this rate (`null`: no limit binds: kept
    /// until the disk floor, or no rate to tell).
    pub kept_for_s: Option<u64>,
    /// Which limit binds: `age`, `count`, `bytes` or `none`.
    pub bounded_by: &'static str,
    /// The space they take once the binding limit holds, at this rate.
    pub bytes_at_limit: Option<u64>,
}

/// The four kinds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RetentionStatement {
    pub results: Kept,
    pub sightings: Kept,
    pub snapshots: Kept,
    pub audit: Kept,
}

/// Figures and limits of one kind.
struct Figures {
    count: u64,
    bytes: u64,
    /// Oldest and newest timestamps (ns), when known.
    span: Option<(u64, u64)>,
    max_age: Option<Duration>,
    max_count: Option<u64>,
    max_bytes: Option<u64>,
}

fn kept(f: Figures) -> Kept {
    let rate_per_s = f.span.and_then(|(old, new)| {
        let span = new.saturating_sub(old);
        (f.count >= MIN_ITEMS && span >= MIN_SPAN_NS)
            .then(|| (f.count - 1) as f64 / (span as f64 / 1e9))
    });
    let avg = if f.count > 0 {
        f.bytes as f64 / f.count as f64
    } else {
        0.0
    };
    let mut bound: Option<(f64, &'static str)> = f.max_age.map(|a| (a.as_secs_f64(), "age"));
    let mut take = |secs: f64, by: &'static str| {
        if secs.is_finite() && bound.is_none_or(|(b, _)| secs < b) {
            bound = Some((secs, by));
        }
    };
    if let Some(rate) = rate_per_s.filter(|r| *r > 0.0) {
        if let Some(m) = f.max_count {
            take(m as f64 / rate, "count");
        }
        if let (Some(m), true) = (f.max_bytes, avg > 0.0) {
            take(m as f64 / (rate * avg), "bytes");
        }
    }
    let bytes_at_limit = match (rate_per_s, bound) {
        (Some(rate), Some((secs, _))) => {
            let b = rate * secs * avg;
            Some(f.max_bytes.map_or(b, |m| b.min(m as f64)) as u64)
        }
        _ => None,
    };
    Kept {
        stored: f.count,
        bytes: f.bytes,
        max_age_s: f.max_age.map(|a| a.as_secs()),
        max_count: f.max_count,
        max_bytes: f.max_bytes,
        per_day: rate_per_s.map(|r| (r * 86_400.0 * 10.0).round() / 10.0),
        kept_for_s: bound.map(|(s, _)| s as u64),
        bounded_by: bound.map_or("none", |(_, b)| b),
        bytes_at_limit,
    }
}

/// The time (ns) in the first 8 bytes of a tree's first and last keys
/// (results' and their snapshots' keys start with `ts_ns`).
fn key_span(tree: &sled::Tree) -> Result<Option<(u64, u64)>, sled::Error> {
    let ts = |k: &[u8]| Some(u64::from_be_bytes(k.get(..8)?.try_into().ok()?));
    let (Some((a, _)), Some((b, _))) = (tree.first()?, tree.last()?) else {
        return Ok(None);
    };
    Ok(ts(&a).zip(ts(&b)))
}

/// The last statement computed, as served (see the module doc).
#[derive(Debug, Default)]
pub(super) struct Said(Mutex<Option<Bytes>>);

impl Store {
    /// The statement for `policy` and the audit limits in force, from what
    /// is stored now.
    pub fn retention_statement(
        &self,
        policy: &Retention,
    ) -> Result<RetentionStatement, StoreError> {
        let db = |source| StoreError::Db {
            path: self.dir.clone(),
            source,
        };
        let results = kept(Figures {
            count: self.len() as u64,
            bytes: self.data_bytes(),
            span: key_span(&self.results).map_err(db)?,
            max_age: policy.max_age,
            max_count: policy.max_records.map(|n| n as u64),
            max_bytes: policy.max_bytes,
        });
        // Sightings: by start time of the oldest and newest id.
        let first = self.iter_sightings().next().transpose()?;
        let last = self.sightings(&super::SightingQuery {
            limit: 1,
            ..Default::default()
        })?;
        let span = first.zip(last.sightings.first().cloned()).map(|(a, b)| {
            (
                u64::try_from(a.start_ns).unwrap_or(0),
                u64::try_from(b.start_ns).unwrap_or(0),
            )
        });
        let sightings = kept(Figures {
            count: self.sighting_count() as u64,
            bytes: self.sighting_bytes(),
            span,
            max_age: policy.sightings_max_age,
            max_count: policy.sightings_max_records.map(|n| n as u64),
            max_bytes: None,
        });
        // Snapshots: both kinds count toward the same budgets; the rate is
        // the results' snapshots' (their keys carry the time).
        let snaps = self.snapshot_count() as u64 + self.sighting_snapshot_count() as u64;
        let snap_bytes = self.snapshot_bytes() + self.sighting_snapshot_bytes();
        let snapshots = kept(Figures {
            count: snaps,
            bytes: snap_bytes,
            span: key_span(&self.snapshots).map_err(db)?,
            // A snapshot goes with its result at the latest.
            max_age: policy.max_age,
            max_count: policy.snapshot_max_count.map(|n| n as u64),
            max_bytes: policy.snapshot_max_bytes,
        });
        let limits: AuditLimits = self.audit_limits();
        let (n, b) = self.audit_figures();
        let oldest = self.audit_oldest_ns()?;
        let newest = self.audit_page(None, 1)?.records.first().map(|r| r.ts_ns);
        let audit = kept(Figures {
            count: n as u64,
            bytes: b,
            span: oldest
                .zip(newest)
                .map(|(a, b)| (u64::try_from(a).unwrap_or(0), u64::try_from(b).unwrap_or(0))),
            max_age: limits.max_age,
            max_count: limits.max_records.map(|n| n as u64),
            max_bytes: None,
        });
        Ok(RetentionStatement {
            results,
            sightings,
            snapshots,
            audit,
        })
    }

    /// Compute the statement for `policy` and keep it for the status
    /// (called by the pruner after each pass).
    pub fn refresh_statement(&self, policy: &Retention) {
        match self.retention_statement(policy) {
            Ok(s) => match serde_json::to_vec(&s) {
                Ok(v) => *self.said.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(v.into()),
                Err(e) => log::debug!("retention statement: {e}"),
            },
            Err(e) => log::debug!("retention statement: {e}"),
        }
    }

    /// The last statement, as JSON (`None` before the first pruner pass).
    pub fn retention_json(&self) -> Option<Bytes> {
        self.said
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = 86_400_000_000_000;

    fn fig(count: u64, days: u64) -> Figures {
        Figures {
            count,
            bytes: count * 1000,
            span: Some((0, days * DAY)),
            max_age: None,
            max_count: None,
            max_bytes: None,
        }
    }

    // Catches: the wrong limit said to bind (a count limit reached long
    // before the age limit reported as the age), a rate off by the span, or
    // the space at the limit not following the rate.
    #[test]
    fn the_binding_limit_and_its_space() {
        // 1001 items over 10 days: 100 a day, 1000 bytes each.
        let k = kept(Figures {
            max_age: Some(Duration::from_secs(30 * 86_400)),
            max_count: Some(500),
            ..fig(1001, 10)
        });
        assert_eq!(k.per_day, Some(100.0));
        assert_eq!(k.bounded_by, "count");
        assert_eq!(k.kept_for_s, Some(5 * 86_400));
        assert_eq!(k.bytes_at_limit, Some(500_000));
        // A byte limit of 200 items' worth binds first.
        let k = kept(Figures {
            max_count: Some(500),
            max_bytes: Some(200_000),
            ..fig(1001, 10)
        });
        assert_eq!((k.bounded_by, k.kept_for_s), ("bytes", Some(2 * 86_400)));
        // Only an age limit: it binds, whatever the rate.
        let k = kept(Figures {
            max_age: Some(Duration::from_secs(3600)),
            ..fig(1001, 10)
        });
        assert_eq!((k.bounded_by, k.kept_for_s), ("age", Some(3600)));
    }

    // Catches: a rate stated from one item, or "kept for" claimed with no
    // limit at all.
    #[test]
    fn no_rate_or_no_limit_says_so() {
        let k = kept(Figures {
            max_count: Some(10),
            ..fig(1, 0)
        });
        assert_eq!(k.per_day, None);
        assert_eq!((k.bounded_by, k.kept_for_s), ("none", None));
        let k = kept(fig(100, 1));
        assert_eq!(
            (k.bounded_by, k.kept_for_s, k.bytes_at_limit),
            ("none", None, None)
        );
    }
}
