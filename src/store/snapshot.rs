//! Snapshots: the encoded frame (JPEG, PNG or BMP) kept with some results.
//!
//! Whether a frame is kept is decided by a [`SnapshotRule`] (off by default;
//! a label list, a minimum score and at most N per minute) applied by a
//! [`SnapshotGate`] in the pipeline. Kept frames are stored in the
//! `snapshots` tree under their record's key, in the record's transaction,
//! count toward the store's size budget, are deleted with their record by
//! retention, and are additionally bounded by `snapshot_max_count` and
//! `snapshot_max_bytes` (the oldest snapshots go first; their records stay).
//!
//! Stored value: `[SNAPSHOT_FORMAT, image bytes...]`. The content type is
//! sniffed from the image's magic bytes when it is served.

use std::time::{Duration, Instant};

use super::{parse_id, Store, StoreError};
use crate::core::result::ResultRecord;

/// First byte of a stored snapshot: the rest is the encoded image as captured.
const SNAPSHOT_FORMAT: u8 = 1;

/// An encoded image to keep with a result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub bytes: Vec<u8>,
}

impl Snapshot {
    pub(super) fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(1 + self.bytes.len());
        v.push(SNAPSHOT_FORMAT);
        v.extend_from_slice(&self.bytes);
        v
    }
}

/// The HTTP content type of an encoded image, from its magic bytes; `None`
/// for anything that is not JPEG, PNG or BMP.
pub fn snapshot_content_type(bytes: &[u8]) -> Option<&'static str> {
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some("image/jpeg")
    } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("image/png")
    } else if bytes.starts_with(b"BM") {
        Some("image/bmp")
    } else {
        None
    }
}

/// Which results keep their frame.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotRule {
    pub enabled: bool,
    /// Keep only when one of these labels is in the result (empty: any).
    pub labels: Vec<String>,
    /// ... with at least this score (the label's, or the best one).
    pub min_score: f32,
    /// At most this many snapshots per rolling minute (0: no limit).
    pub max_per_minute: u32,
}

impl Default for SnapshotRule {
    fn default() -> Self {
        SnapshotRule::off()
    }
}

impl SnapshotRule {
    /// The rule configured in `[store]`.
    pub(crate) fn from_settings(s: &crate::config::StoreSettings) -> SnapshotRule {
        SnapshotRule {
            enabled: s.snapshots,
            labels: s.snapshot_labels.clone(),
            min_score: s.snapshot_min_score,
            max_per_minute: s.snapshot_max_per_minute,
        }
    }

    /// No snapshots.
    pub(crate) fn off() -> SnapshotRule {
        SnapshotRule {
            enabled: false,
            labels: Vec::new(),
            min_score: 0.0,
            max_per_minute: 0,
        }
    }

    /// Whether `rec` matches the label and score part of the rule.
    pub(crate) fn matches(&self, rec: &ResultRecord) -> bool {
        if !self.enabled {
            return false;
        }
        let scored = rec
            .classes
            .iter()
            .map(|c| (c.label.as_str(), c.score))
            .chain(rec.detections.iter().map(|d| (d.label.as_str(), d.score)));
        let mut any = false;
        for (label, score) in scored {
            any = true;
            let label_ok = self.labels.is_empty() || self.labels.iter().any(|l| l == label);
            if label_ok && score >= self.min_score {
                return true;
            }
        }
        // A result without classes or detections matches only a rule that
        // asks for nothing.
        !any && self.labels.is_empty() && self.min_score <= 0.0
    }
}

/// Applies a [`SnapshotRule`] including its per-minute rate. Owned by the
/// one thread that stores results.
#[derive(Debug)]
pub struct SnapshotGate {
    rule: SnapshotRule,
    /// When the snapshots of the last minute were taken (bounded by
    /// `max_per_minute`).
    taken: std::collections::VecDeque<Instant>,
}

impl SnapshotGate {
    pub(crate) fn new(rule: SnapshotRule) -> SnapshotGate {
        SnapshotGate {
            rule,
            taken: std::collections::VecDeque::new(),
        }
    }

    /// Whether to keep the frame of `rec` at `now`; a `true` answer counts
    /// toward the rate limit.
    pub(crate) fn admit(&mut self, rec: &ResultRecord, now: Instant) -> bool {
        if !self.rule.matches(rec) {
            return false;
        }
        let max = self.rule.max_per_minute as usize;
        if max == 0 {
            return true;
        }
        while self
            .taken
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= Duration::from_secs(60))
        {
            self.taken.pop_front();
        }
        if self.taken.len() >= max {
            return false;
        }
        self.taken.push_back(now);
        true
    }
}

impl Store {
    /// The snapshot kept for the result with this id: `(content type,
    /// image bytes)`; `None` when the result has none (or does not exist).
    pub(crate) fn snapshot(&self, id: &str) -> Result<Option<(&'static str, Vec<u8>)>, StoreError> {
        let key = parse_id(id)?;
        let Some(v) = self.snapshots.get(key).map_err(|e| self.db_err(e))? else {
            return Ok(None);
        };
        let corrupt = |reason: &str| StoreError::Corrupt {
            path: self.dir.clone(),
            key: hex::encode(key),
            reason: format!("snapshot: {reason}"),
        };
        match v.split_first() {
            Some((&SNAPSHOT_FORMAT, img)) => {
                let ct = snapshot_content_type(img)
                    .ok_or_else(|| corrupt("not a JPEG, PNG or BMP image"))?;
                Ok(Some((ct, img.to_vec())))
            }
            Some((other, _)) => Err(corrupt(&format!("unknown format {other}"))),
            None => Err(corrupt("empty")),
        }
    }

    /// Number of snapshots stored.
    pub(crate) fn snapshot_count(&self) -> usize {
        self.snap_count.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Logical size of the stored snapshots (keys plus values).
    pub(crate) fn snapshot_bytes(&self) -> u64 {
        self.snap_bytes.load(std::sync::atomic::Ordering::Relaxed)
    }
}
