//! Sightings in the store (issue 18): tree `sightings` (id → the sighting's
//! JSON), tree `sighting_snapshots` (id → the best frame, JPEG), each write
//! in one sled transaction with its MQTT outbox entry; listing, the
//! per-bucket summary, closing what a crash left open, retention and the
//! backup's sightings.
//!
//! SKELETON: the signatures are the contract between the pipeline, the API
//! and MQTT; the bodies are being written.

use super::{Snapshot, Store, StoreError};
use crate::core::sighting::{Sighting, SightingChange};

/// `GET /api/v1/sightings` filters (all optional but `limit`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SightingQuery {
    /// Sightings that were present at or after this time (end, or still
    /// open, ≥ since), ns since the Unix epoch.
    pub since_ns: Option<i64>,
    /// Sightings that started at or before this time.
    pub until_ns: Option<i64>,
    pub label: Option<String>,
    pub source: Option<String>,
    pub zone: Option<String>,
    /// `Some(true)`: only open ones; `Some(false)`: only closed ones.
    pub open: Option<bool>,
    pub limit: usize,
    /// Continue below this id (from the previous page's `next_cursor`).
    pub cursor: Option<u64>,
}

/// One page of sightings, newest (largest id) first.
#[derive(Debug, Clone, PartialEq)]
pub struct SightingPage {
    pub sightings: Vec<Sighting>,
    /// Pass as `cursor` for the next page; `None` on the last one.
    pub next_cursor: Option<u64>,
}

/// `bucket=` of the summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    Minute,
    Hour,
    Day,
}

/// One row of the summary: per bucket (UTC) and label, how many sightings
/// started in it and the seconds of presence inside it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SummaryRow {
    pub bucket_start_ns: i64,
    pub label: String,
    pub count: u64,
    pub seconds: f64,
}

impl Store {
    /// Write `s` (insert or replace by id) with `snapshot` (the best frame;
    /// `None` keeps the stored one) and, when `change` is given and MQTT is
    /// on, its outbox entry, in one transaction.
    pub fn put_sighting(
        &self,
        s: &Sighting,
        snapshot: Option<&Snapshot>,
        change: Option<SightingChange>,
    ) -> Result<(), StoreError> {
        let _ = (s, snapshot, change);
        todo!("issue 18 store")
    }

    /// The sighting `id`.
    pub fn sighting(&self, id: u64) -> Result<Option<Sighting>, StoreError> {
        let _ = id;
        todo!("issue 18 store")
    }

    /// The best-frame snapshot of sighting `id`.
    pub fn sighting_snapshot(&self, id: u64) -> Result<Option<Snapshot>, StoreError> {
        let _ = id;
        todo!("issue 18 store")
    }

    /// A page of sightings matching `q`, newest first.
    pub fn sightings(&self, q: &SightingQuery) -> Result<SightingPage, StoreError> {
        let _ = q;
        todo!("issue 18 store")
    }

    /// Counts and seconds per label per bucket over `[since_ns, until_ns)`.
    pub fn sighting_summary(
        &self,
        bucket: Bucket,
        since_ns: i64,
        until_ns: i64,
    ) -> Result<Vec<SummaryRow>, StoreError> {
        let _ = (bucket, since_ns, until_ns);
        todo!("issue 18 store")
    }

    /// Close every stored sighting still open (a crash or kill left it):
    /// `end_ns = last_seen_ns`; each gets an `ended` outbox entry. Returns
    /// them. Called once at start-up, before the pipeline runs.
    pub fn close_open_sightings(&self) -> Result<Vec<Sighting>, StoreError> {
        todo!("issue 18 store")
    }

    /// The largest sighting id ever stored (0 for none), so ids stay unique
    /// across restarts.
    pub fn last_sighting_id(&self) -> Result<u64, StoreError> {
        todo!("issue 18 store")
    }
}
